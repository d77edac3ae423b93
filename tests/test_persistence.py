"""What a restart keeps: threads, state, history and runs survive a stop, runs caught by a
kill -9 are taken over by the next server on the same database instead of hanging, and a cancel
answered before the kill still ends its run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.helpers import read_until, summary, ticked, ticks

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

HI = {"messages": [{"role": "human", "content": "hi there"}]}
AGAIN = {"messages": [{"role": "human", "content": "again"}]}


@asynccontextmanager
async def connect(server: ServerProcess) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=server.url)
    try:
        yield client
    finally:
        await client.http.client.aclose()


async def test_a_stopped_server_keeps_threads_state_history_and_runs(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    database = tmp_path / "kept.sqlite"
    first = server_factory(database=database)
    async with connect(first) as client:
        thread = await client.threads.create(metadata={"owner": "persistence"})
        thread_id = thread["thread_id"]
        await client.runs.wait(thread_id, "agent", input=HI)
        state = await client.threads.get_state(thread_id)
        history = await client.threads.get_history(thread_id)
        [run] = await client.runs.list(thread_id)
    first.stop()
    assert first.proc.returncode is not None

    second = server_factory(database=database)
    async with connect(second) as client:
        kept = await client.threads.get(thread_id)
        assert kept["status"] == "idle"
        assert kept["metadata"]["owner"] == "persistence"
        assert kept["metadata"]["graph_id"] == "agent"
        assert summary(kept["values"]) == [
            ("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye"),
        ]  # fmt: skip
        kept_state = await client.threads.get_state(thread_id)
        assert kept_state["values"] == state["values"]
        assert kept_state["checkpoint"] == state["checkpoint"]
        assert kept_state["next"] == []
        kept_history = await client.threads.get_history(thread_id)
        assert len(kept_history) == len(history) >= 3
        assert [h["checkpoint"] for h in kept_history] == [h["checkpoint"] for h in history]
        kept_run = await client.runs.get(thread_id, run["run_id"])
        assert kept_run["status"] == "success"
        assert kept_run["kwargs"]["input"] == HI
        # A finished run joins to the thread's values without waiting for anything.
        assert summary(await client.runs.join(thread_id, run["run_id"])) == summary(kept["values"])

        values = await client.runs.wait(thread_id, "agent", input=AGAIN)
        # "bye" has a fixed id, so the second one replaces the first: five messages.
        assert summary(values) == [
            ("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye"),
            ("human", "again"), ("ai", "echo: again"),
        ]  # fmt: skip
        runs = await client.runs.list(thread_id)
        assert [r["status"] for r in runs] == ["success", "success"]
        assert runs[1]["run_id"] == run["run_id"]


async def test_runs_caught_by_a_kill_are_taken_over_after_a_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    database = tmp_path / "killed.sqlite"
    first = server_factory(database=database)
    async with connect(first) as client:
        thread_id = (await client.threads.create())["thread_id"]
        running = await client.runs.create(
            thread_id, "ticker", input={"n": 40, "delay": 0.05}, stream_mode=["custom"]
        )
        queued = await client.runs.create(thread_id, "ticker", input={"n": 3, "delay": 0.0})
        parts = await read_until(client.runs.join_stream(thread_id, running["run_id"]), ticked(1))
        assert ticks(parts)
        assert (await client.runs.get(thread_id, running["run_id"]))["status"] == "running"
        assert (await client.runs.get(thread_id, queued["run_id"]))["status"] == "pending"
        first.kill()
    assert first.proc.returncode == -9

    second = server_factory(database=database)
    async with connect(second) as client:
        values = await client.runs.join(thread_id, running["run_id"])
        # The interrupted run was run again from its last checkpoint, to the end.
        assert values == {"n": 40, "delay": 0.05, "count": 40}
        assert (await client.runs.get(thread_id, running["run_id"]))["status"] == "success"
        # The run queued behind it ran next, on top of its result.
        values = await client.runs.join(thread_id, queued["run_id"])
        assert values == {"n": 3, "delay": 0.0, "count": 43}
        runs = await client.runs.list(thread_id)
        assert [(r["run_id"], r["status"]) for r in runs] == [
            (queued["run_id"], "success"),
            (running["run_id"], "success"),
        ]
        assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_a_run_cancelled_before_a_kill_ends_cancelled_after_the_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A cancel answered before a kill -9, while the run (a graph slow to stop) still cleaned
    up: the next server takes the run over and finds the cancel kept on its row, so the run
    ends interrupted. It ran the graph again from its start before (this one waits for good)."""
    database = tmp_path / "cancelled.sqlite"
    stubborn = Path(__file__).parent / "stubborn_app" / "langgraph.json"
    first = server_factory(database=database, config=stubborn)
    async with connect(first) as client:
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id, "stubborn", input={"cleanup": 600}, stream_mode=["custom"]
        )
        stream = client.runs.join_stream(thread_id, run["run_id"], last_event_id="0")
        await read_until(stream, lambda parts: any(p.event == "custom" for p in parts))
        await client.runs.cancel(thread_id, run["run_id"])  # it cleans up for 600 s
        assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "running"
        first.kill()

    second = server_factory(database=database, config=stubborn)
    async with connect(second) as client:
        async with asyncio.timeout(30):  # before: forever
            await client.runs.join(thread_id, run["run_id"])
        assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
        assert (await client.threads.get(thread_id))["status"] == "interrupted"
    assert any("kept on its row" in line for line in second.output)
