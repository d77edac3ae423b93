"""The run routes end to end through the official Python SDK: wait, create and join, get, list,
delete, cancel, multitask strategies, concurrency and if_not_exists (PROTOCOL §1.2, §5.5, §6 to §9).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.helpers import summary

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

HI = {"messages": [{"role": "human", "content": "hi there"}]}
FINAL = [("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye")]
# Default assistants are uuid5(graph name) in this namespace (PROTOCOL §3).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
AGENT_ASSISTANT = "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
BUSY = (
    "Thread is already running a task. Wait for it to finish or choose a different "
    "multitask strategy."
)
NOT_CANCELLABLE = (
    "No matching runs to cancel. Please verify the thread ID and run IDs are correct, and the "
    "runs haven't been deleted or completed."
)


async def new_thread(client: LangGraphClient) -> str:
    thread = await client.threads.create()
    return str(thread["thread_id"])


class LiveTicker:
    """A threaded ticker run streamed by a background task, so a test can act while it runs."""

    def __init__(self, client: LangGraphClient, thread_id: str, n: int, delay: float) -> None:
        self.thread_id = thread_id
        self.run_id = ""
        self.ticks: list[int] = []
        self.events: list[str] = []
        self._ticked = asyncio.Event()
        stream = client.runs.stream(
            thread_id, "ticker", input={"n": n, "delay": delay}, stream_mode="custom"
        )
        self._task = asyncio.create_task(self._consume(stream))

    async def _consume(self, stream: AsyncIterator[Any]) -> None:
        async for part in stream:
            self.events.append(part.event)
            if part.event == "metadata":
                self.run_id = part.data["run_id"]
            elif part.event == "custom":
                self.ticks.append(part.data["tick"])
                self._ticked.set()

    async def running(self) -> LiveTicker:
        """Return once the run has ticked at least once (so it is running, not queued)."""
        ticked = asyncio.create_task(self._ticked.wait())
        await asyncio.wait({ticked, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ticked.done():
            ticked.cancel()
            await self._task  # raises if the stream failed
            raise AssertionError(f"the run ended without ticking: {self.events}")
        return self

    async def closed(self) -> LiveTicker:
        await self._task
        return self


# --- wait ----------------------------------------------------------------------------------


async def test_stateless_wait_returns_the_final_messages(client: LangGraphClient) -> None:
    values = await client.runs.wait(None, "agent", input=HI)
    assert isinstance(values, dict)
    assert summary(values) == FINAL


async def test_threaded_wait_leaves_the_conversation_on_the_thread(
    client: LangGraphClient,
) -> None:
    thread_id = await new_thread(client)
    values = await client.runs.wait(thread_id, "agent", input=HI)
    assert isinstance(values, dict)
    assert summary(values) == FINAL
    state = await client.threads.get_state(thread_id)
    assert summary(state["values"]) == FINAL
    assert state["next"] == []
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "idle"
    runs = await client.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["success"]


async def test_wait_on_a_failing_graph_returns_the_error_in_the_body(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/runs/wait", json={"assistant_id": "failing", "input": {}})
    assert response.status_code == 200
    assert response.json() == {
        "__error__": {"error": "ValueError", "message": "boom: intentional failure"}
    }


async def test_sdk_wait_raises_on_a_failed_run_unless_told_not_to(
    client: LangGraphClient,
) -> None:
    with pytest.raises(Exception, match=r"^ValueError: boom: intentional failure$"):
        await client.runs.wait(None, "failing", input={})
    values = await client.runs.wait(None, "failing", input={}, raise_error=False)
    assert values == {"__error__": {"error": "ValueError", "message": "boom: intentional failure"}}


async def test_threaded_failure_marks_run_and_thread_as_error(client: LangGraphClient) -> None:
    thread_id = await new_thread(client)
    await client.runs.wait(thread_id, "failing", input={}, raise_error=False)
    [run] = await client.runs.list(thread_id)
    assert run["status"] == "error"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "error"
    assert thread["values"] == {"x": 1}


async def test_join_on_a_run_that_already_finished_reads_its_result(
    client: LangGraphClient,
) -> None:
    # A finished run's result is the last event of its log, read from there: it must come
    # back the same after hundreds of events, and for a failed run too.
    thread_id = await new_thread(client)
    run = await client.runs.create(
        thread_id, "ticker", input={"n": 300, "delay": 0.0}, stream_mode="custom"
    )
    live = await client.runs.join(thread_id, run["run_id"])
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "success"
    finished = await client.runs.join(thread_id, run["run_id"])
    assert live == finished == {"n": 300, "delay": 0.0, "count": 300}

    failed = await client.runs.create(thread_id, "failing", input={})
    await client.runs.join(thread_id, failed["run_id"])
    assert (await client.runs.get(thread_id, failed["run_id"]))["status"] == "error"
    error = {"error": "ValueError", "message": "boom: intentional failure"}
    assert await client.runs.join(thread_id, failed["run_id"]) == {"__error__": error}


# --- background runs -----------------------------------------------------------------------


async def test_background_run_is_pending_with_the_default_assistant_and_joins_to_values(
    client: LangGraphClient,
) -> None:
    assert str(uuid.uuid5(ASSISTANT_NAMESPACE, "agent")) == AGENT_ASSISTANT
    thread_id = await new_thread(client)
    run = await client.runs.create(thread_id, "agent", input=HI)
    assert run["status"] == "pending"
    assert run["assistant_id"] == AGENT_ASSISTANT
    assert run["thread_id"] == thread_id
    assert run["multitask_strategy"] == "enqueue"
    assert run["kwargs"]["input"] == HI
    assert run["kwargs"]["stream_mode"] == ["values"]
    uuid.UUID(run["run_id"])

    values = await client.runs.join(thread_id, run["run_id"])
    assert summary(values) == FINAL
    fetched = await client.runs.get(thread_id, run["run_id"])
    assert fetched["status"] == "success"
    assert fetched["run_id"] == run["run_id"]
    assert fetched["assistant_id"] == AGENT_ASSISTANT


async def test_stateless_background_run_kept_on_completion_joins_to_values(
    client: LangGraphClient,
) -> None:
    # With the default on_completion="delete" its temporary thread (and the run) may be gone
    # before a join arrives; "keep" makes joining it deterministic.
    run = await client.runs.create(
        None, "ticker", input={"n": 3, "delay": 0.0}, on_completion="keep"
    )
    assert run["status"] == "pending"
    assert run["assistant_id"] == str(uuid.uuid5(ASSISTANT_NAMESPACE, "ticker"))
    values = await client.runs.join(run["thread_id"], run["run_id"])
    assert values == {"n": 3, "delay": 0.0, "count": 3}
    thread = await client.threads.get(run["thread_id"])
    assert thread["values"] == values
    assert (await client.runs.get(run["thread_id"], run["run_id"]))["status"] == "success"


async def test_list_runs_is_newest_first_and_pages(client: LangGraphClient) -> None:
    thread_id = await new_thread(client)
    created = []
    for n in (1, 2, 3):
        run = await client.runs.create(thread_id, "ticker", input={"n": n, "delay": 0.0})
        created.append(run["run_id"])
    assert await client.runs.join(thread_id, created[-1]) == {"n": 3, "delay": 0.0, "count": 6}
    runs = await client.runs.list(thread_id)
    assert [r["run_id"] for r in runs] == created[::-1]
    assert {r["status"] for r in runs} == {"success"}
    page = await client.runs.list(thread_id, limit=1, offset=1)
    assert [r["run_id"] for r in page] == [created[1]]


async def test_delete_a_finished_run(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(client)
    await client.runs.wait(thread_id, "agent", input=HI)
    await client.runs.wait(thread_id, "agent", input=HI)
    newer, older = await client.runs.list(thread_id)
    before = await client.threads.get_state(thread_id)
    assert len(before["values"]["messages"]) == 5
    response = await http.delete(f"/threads/{thread_id}/runs/{older['run_id']}")
    assert response.status_code == 204
    assert response.content == b""
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, older["run_id"])
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [newer["run_id"]]
    await client.runs.delete(thread_id, newer["run_id"])
    assert await client.runs.list(thread_id) == []
    # The thread's conversation is not the run's to take away.
    assert await client.threads.get_state(thread_id) == before


# --- cancel --------------------------------------------------------------------------------


async def test_cancel_interrupts_a_running_run_and_the_thread(client: LangGraphClient) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
    await client.runs.cancel(thread_id, live.run_id)
    values = await client.runs.join(thread_id, live.run_id)
    # The tick node never finished, so the thread holds only the input.
    assert values == {"n": 200, "delay": 0.05}
    await live.closed()
    assert 0 < len(live.ticks) < 200
    assert live.ticks == list(range(len(live.ticks)))
    run = await client.runs.get(thread_id, live.run_id)
    assert run["status"] == "interrupted"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted"


async def test_cancel_with_wait_returns_once_the_run_has_ended(client: LangGraphClient) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
    await client.runs.cancel(thread_id, live.run_id, wait=True)
    run = await client.runs.get(thread_id, live.run_id)
    assert run["status"] == "interrupted"
    assert (await client.threads.get(thread_id))["status"] == "interrupted"
    await live.closed()
    assert len(live.ticks) < 200


async def test_cancel_with_rollback_deletes_the_run_and_restores_the_thread(
    client: LangGraphClient,
) -> None:
    thread_id = await new_thread(client)
    before = await client.runs.wait(thread_id, "ticker", input={"n": 3, "delay": 0.0})
    assert before == {"n": 3, "delay": 0.0, "count": 3}
    [kept] = await client.runs.list(thread_id)

    live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
    await client.runs.cancel(thread_id, live.run_id, wait=True, action="rollback")
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, live.run_id)
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [kept["run_id"]]
    state = await client.threads.get_state(thread_id)
    assert state["values"] == before
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "idle"
    assert thread["values"] == before
    await live.closed()
    assert len(live.ticks) < 200


async def test_cancel_of_a_finished_run_is_404(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread_id = await new_thread(client)
    run = await client.runs.create(thread_id, "ticker", input={"n": 1, "delay": 0.0})
    await client.runs.join(thread_id, run["run_id"])
    response = await http.post(f"/threads/{thread_id}/runs/{run['run_id']}/cancel")
    assert response.status_code == 404
    assert response.json() == {"detail": NOT_CANCELLABLE}
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "success"


# --- multitask strategies (PROTOCOL §8) ----------------------------------------------------


@pytest.mark.parametrize("route", ["/runs/stream", "/runs/wait", "/runs"])
async def test_reject_on_a_busy_thread_is_409_and_the_first_run_finishes(
    client: LangGraphClient, http: httpx.AsyncClient, route: str
) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=20, delay=0.05).running()
    body = {"assistant_id": "ticker", "input": {"n": 1}, "multitask_strategy": "reject"}
    response = await http.post(f"/threads/{thread_id}{route}", json=body)
    assert response.status_code == 409
    assert response.json() == {"detail": BUSY}
    await live.closed()
    assert live.ticks == list(range(20))
    assert (await client.runs.get(thread_id, live.run_id))["status"] == "success"
    runs = await client.runs.list(thread_id)
    assert [r["run_id"] for r in runs] == [live.run_id]
    state = await client.threads.get_state(thread_id)
    assert state["values"] == {"n": 20, "delay": 0.05, "count": 20}


async def test_the_next_turn_may_start_the_moment_a_stream_closes(
    client: LangGraphClient,
) -> None:
    # A script's conversation loop: each turn streamed to its end, the next sent at once under
    # `reject`. The run is stored as ended before its stream ends, so no turn is refused.
    thread_id = await new_thread(client)
    for turn in range(25):
        parts = client.runs.stream(
            thread_id,
            "ticker",
            input={"n": 1},
            stream_mode="values",
            multitask_strategy="reject",
        )
        events = [part.event async for part in parts]
        assert "error" not in events, (turn, events)
    runs = await client.runs.list(thread_id, limit=100)
    assert len(runs) == 25 and {r["status"] for r in runs} == {"success"}


async def test_interrupt_stops_the_first_run_and_the_second_completes(
    client: LangGraphClient,
) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
    second = await client.runs.create(
        thread_id, "ticker", input={"n": 2, "delay": 0.0}, multitask_strategy="interrupt"
    )
    values = await client.runs.join(thread_id, second["run_id"])
    # The interrupted run's node never finished, so only the second run's ticks are counted.
    assert values == {"n": 2, "delay": 0.0, "count": 2}
    await live.closed()
    assert len(live.ticks) < 200
    assert "error" not in live.events
    first = await client.runs.get(thread_id, live.run_id)
    assert first["status"] == "interrupted"
    assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "success"
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_rollback_deletes_the_first_run_and_the_second_completes(
    client: LangGraphClient,
) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
    second = await client.runs.create(
        thread_id, "ticker", input={"n": 2, "delay": 0.0}, multitask_strategy="rollback"
    )
    values = await client.runs.join(thread_id, second["run_id"])
    assert values == {"n": 2, "delay": 0.0, "count": 2}
    await live.closed()
    assert len(live.ticks) < 200
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, live.run_id)
    runs = await client.runs.list(thread_id)
    assert [(r["run_id"], r["status"]) for r in runs] == [(second["run_id"], "success")]


async def test_enqueue_runs_the_second_after_the_first_on_its_final_state(
    client: LangGraphClient,
) -> None:
    thread_id = await new_thread(client)
    live = await LiveTicker(client, thread_id, n=10, delay=0.05).running()
    # No strategy given: enqueue is the default.
    second_values: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        thread_id, "ticker", input={"n": 3, "delay": 0.0}, stream_mode="values"
    ):
        if part.event == "values":
            second_values.append(part.data)
    await live.closed()
    assert live.ticks == list(range(10))
    # It started only once the first run had finished: its first state is the first run's
    # final state merged with its own input.
    assert second_values[0] == {"n": 3, "delay": 0.0, "count": 10}
    assert second_values[-1] == {"n": 3, "delay": 0.0, "count": 13}
    runs = await client.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["success", "success"]
    assert [r["multitask_strategy"] for r in runs] == ["enqueue", "enqueue"]
    assert runs[1]["run_id"] == live.run_id


async def test_enqueued_background_runs_accumulate_in_order(client: LangGraphClient) -> None:
    thread_id = await new_thread(client)
    runs = [
        await client.runs.create(thread_id, "ticker", input={"n": n, "delay": 0.01})
        for n in (5, 6, 7)
    ]
    results = [await client.runs.join(thread_id, r["run_id"]) for r in runs]
    assert [r["count"] for r in results] == [5, 11, 18]


# --- concurrency ---------------------------------------------------------------------------


async def test_many_stateless_runs_execute_concurrently(client: LangGraphClient) -> None:
    # Each run would tick for minutes; a client leaves its stream once every run has ticked.
    # Run one after another, the first would never make room for the twentieth, and the wait
    # below times out; no run's pace decides the outcome.
    runs = 20
    ticking: set[int] = set()
    all_ticking = asyncio.Event()

    async def one(index: int) -> None:
        stream = client.runs.stream(
            None,
            "ticker",
            input={"n": 10_000, "delay": 0.02},
            stream_mode="custom",
            on_disconnect="cancel",
        )
        async with aclosing(stream):
            async for part in stream:
                if part.event == "custom":
                    assert part.data["tick"] == 0
                    ticking.add(index)
                    if len(ticking) == runs:
                        all_ticking.set()
                    await asyncio.wait_for(all_ticking.wait(), 60)
                    return
        raise AssertionError(f"run {index}'s stream ended before every run had ticked")

    await asyncio.gather(*(one(i) for i in range(runs)))
    assert ticking == set(range(runs))


# --- if_not_exists -------------------------------------------------------------------------


async def test_if_not_exists_create_makes_the_thread(client: LangGraphClient) -> None:
    thread_id = str(uuid.uuid4())
    values = await client.runs.wait(thread_id, "agent", input=HI, if_not_exists="create")
    assert summary(values) == FINAL
    thread = await client.threads.get(thread_id)
    assert thread["thread_id"] == thread_id
    assert thread["metadata"]["graph_id"] == "agent"
    state = await client.threads.get_state(thread_id)
    assert summary(state["values"]) == FINAL


@pytest.mark.parametrize("route", ["/runs/stream", "/runs/wait", "/runs"])
async def test_a_run_on_an_unknown_thread_is_404_and_creates_nothing(
    http: httpx.AsyncClient, route: str
) -> None:
    thread_id = str(uuid.uuid4())
    body = {"assistant_id": "agent", "input": HI}
    response = await http.post(f"/threads/{thread_id}{route}", json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": "Thread or assistant not found."}
    explicit = await http.post(
        f"/threads/{thread_id}{route}", json={**body, "if_not_exists": "reject"}
    )
    assert explicit.status_code == 404
    assert (await http.get(f"/threads/{thread_id}")).status_code == 404


# --- the sync client -----------------------------------------------------------------------


def test_sync_client_streams_and_waits(server: ServerProcess) -> None:
    client = get_sync_client(url=server.url)
    try:
        parts = list(client.runs.stream(None, "agent", input=HI, stream_mode="updates"))
        assert [p.event for p in parts] == ["metadata", "updates", "updates"]
        uuid.UUID(parts[0].data["run_id"])
        assert parts[0].data["attempt"] == 1
        think, finish = parts[1].data, parts[2].data
        assert [m["content"] for m in think["think"]["messages"]] == ["echo: hi there"]
        assert [m["content"] for m in finish["finish"]["messages"]] == ["bye"]

        thread = client.threads.create()
        values = client.runs.wait(thread["thread_id"], "agent", input=HI)
        assert isinstance(values, dict)
        assert summary(values) == FINAL
        assert [r["status"] for r in client.runs.list(thread["thread_id"])] == ["success"]
    finally:
        client.http.client.close()
