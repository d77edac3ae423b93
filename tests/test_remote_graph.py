"""`RemoteGraph` (langgraph's own client graph) against a real server: stream, invoke, threads
it creates, state, history, interrupts, errors, and a RemoteGraph used as a node."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.pregel.remote import RemoteException, RemoteGraph
from langgraph.types import Command

from tests.conftest import ServerProcess

HI = {"messages": [{"role": "user", "content": "hi there"}]}


def _contents(state: dict[str, Any]) -> list[str]:
    return [m["content"] if isinstance(m, dict) else m.content for m in state["messages"]]


def _thread(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


async def test_astream_updates_names_each_node(server: ServerProcess) -> None:
    remote = RemoteGraph("agent", url=server.url)
    chunks = [chunk async for chunk in remote.astream(HI, stream_mode="updates")]
    assert [next(iter(c)) for c in chunks] == ["think", "finish"]
    assert _contents(chunks[1]["finish"]) == ["bye"]


async def test_astream_messages_gives_token_chunks(server: ServerProcess) -> None:
    remote = RemoteGraph("agent", url=server.url)
    tokens = []
    async for message, metadata in remote.astream(HI, stream_mode="messages"):
        if metadata["langgraph_node"] == "think":
            # RemoteGraph hands on the server's JSON as it is: a serialised chunk.
            assert message["type"] == "AIMessageChunk"
            tokens.append(message["content"])
    assert "".join(tokens) == "echo: hi there"


def test_sync_invoke_on_a_new_thread_creates_it_and_keeps_state(server: ServerProcess) -> None:
    remote = RemoteGraph("agent", url=server.url)
    config = _thread(str(uuid.uuid4()))
    first = remote.invoke(HI, config)
    assert _contents(first) == ["hi there", "echo: hi there", "bye"]
    second = remote.invoke({"messages": [{"role": "user", "content": "again"}]}, config)
    # "bye" has a fixed id, so the second run's goodbye replaces the first in place.
    assert _contents(second) == ["hi there", "echo: hi there", "bye", "again", "echo: again"]

    state = remote.get_state(config)
    assert _contents(state.values) == _contents(second)
    assert state.next == ()
    history = list(remote.get_state_history(config))
    assert len(history) >= 6, "two runs of input, think, finish leave at least six checkpoints"
    assert _contents(history[0].values) == _contents(second)


async def test_interrupt_then_resume_with_command(server: ServerProcess) -> None:
    remote = RemoteGraph("hitl", url=server.url)
    config = _thread(str(uuid.uuid4()))
    updates = [c async for c in remote.astream({"messages": []}, config, stream_mode="updates")]
    [interrupt] = updates[-1]["__interrupt__"]
    assert interrupt["value"] == {"question": "proceed?"}
    state = await remote.aget_state(config)
    assert state.next, "the interrupted node is still to run"
    done = await remote.ainvoke(Command(resume="yes"), config)
    assert done == {"answer": "yes!"}
    assert (await remote.aget_state(config)).next == ()


async def test_a_failing_run_raises_remote_exception_with_the_message(
    server: ServerProcess,
) -> None:
    remote = RemoteGraph("failing", url=server.url)
    with pytest.raises(RemoteException, match="boom: intentional failure"):
        await remote.ainvoke({})


async def test_remote_graph_as_a_node_of_a_local_graph(server: ServerProcess) -> None:
    remote = RemoteGraph("ticker", url=server.url)

    builder: StateGraph[dict[str, Any]] = StateGraph(dict)
    builder.add_node("remote", remote)
    builder.add_edge(START, "remote")
    local = builder.compile()
    custom = [
        chunk
        async for ns, mode, chunk in local.astream(
            {"n": 3}, stream_mode=["custom", "values"], subgraphs=True
        )
        if mode == "custom"
    ]
    assert custom == [{"tick": 0}, {"tick": 1}, {"tick": 2}]


def test_get_graph_draws_the_remote_nodes(server: ServerProcess) -> None:
    drawn = RemoteGraph("agent", url=server.url).get_graph()
    assert {"think", "finish"} <= set(drawn.nodes)
