"""What a threaded run leaves its thread: status, values, next, after it ran to its end, stopped
at a breakpoint, or ran a graph whose output schema leaves part of its state out. (The server
reads the thread's state back only when the run's stream does not already say it.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.servers import ServerProcess, running_cluster

SCHEMA_APP = Path(__file__).parent / "schema_app" / "langgraph.json"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def _contents(values: dict[str, Any]) -> list[str]:
    return [m["content"] for m in values["messages"]]


async def test_a_run_to_the_end_leaves_the_thread_idle_with_its_values(
    client: LangGraphClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(thread_id, "agent", input=HELLO)
    thread = await client.threads.get(thread_id)
    assert (thread["status"], thread["interrupts"]) == ("idle", {})
    assert thread["values"] == result
    assert _contents(thread["values"]) == ["hello", "echo: hello", "bye"]
    state = await client.threads.get_state(thread_id)
    assert (state["values"], state["next"], state["tasks"]) == (thread["values"], [], [])


@pytest.mark.parametrize(
    "breakpoint", [{"interrupt_before": ["finish"]}, {"interrupt_after": ["think"]}]
)
async def test_a_breakpoint_leaves_the_thread_interrupted_and_the_next_run_goes_on(
    client: LangGraphClient, breakpoint: dict[str, list[str]]
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(thread_id, "agent", input=HELLO, **breakpoint)  # type: ignore[arg-type]
    [run] = await client.runs.list(thread_id)
    assert run["status"] == "success"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    assert _contents(thread["values"]) == _contents(result) == ["hello", "echo: hello"]
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["finish"]

    # Going on from the breakpoint: the rest of the graph runs, and the thread is idle.
    done = await client.runs.wait(thread_id, "agent", input=None)
    assert _contents(done) == ["hello", "echo: hello", "bye"]
    thread = await client.threads.get(thread_id)
    assert (thread["status"], _contents(thread["values"])) == ("idle", _contents(done))
    assert (await client.threads.get_state(thread_id))["next"] == []


@pytest.fixture(params=["embedded", "distributed"])
def schema_server(
    request: pytest.FixtureRequest, server_factory: Callable[..., ServerProcess]
) -> Iterator[ServerProcess]:
    if request.param == "embedded":
        yield server_factory(config=SCHEMA_APP)
        return
    with running_cluster(config=SCHEMA_APP, apis=1, workers=1) as cluster:
        yield cluster.apis[0]


async def test_a_narrower_output_schema_still_leaves_the_whole_state_on_the_thread(
    schema_server: ServerProcess,
) -> None:
    client = get_client(url=schema_server.url)
    try:
        thread_id = (await client.threads.create())["thread_id"]
        streamed = [
            part.data
            async for part in client.runs.stream(
                thread_id, "narrow", input={"n": 1}, stream_mode="values"
            )
            if part.event == "values"
        ]
        whole = {"n": 2, "secret": "kept 2"}
        assert streamed[-1] == whole  # `values` streams the whole state, as LangGraph does
        assert (await client.threads.get(thread_id))["values"] == whole
        assert (await client.threads.get_state(thread_id))["values"] == whole
        assert await client.runs.wait(thread_id, "narrow", input=None) == {
            "n": 2,
            "secret": "kept 2",
        }
    finally:
        await client.http.client.aclose()
