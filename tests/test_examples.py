"""Tests for the example graphs in examples/, run in process against langgraph itself."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command

from tests.helpers import import_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@functools.cache
def load(name: str) -> ModuleType:
    """Import examples/<name>.py the way a server would: by file path, its folder importable."""
    return import_file(EXAMPLES / f"{name}.py", f"examples_{name}", beside=EXAMPLES)


def graph_of(name: str) -> Pregel:
    graph = load(name).graph
    assert isinstance(graph, Pregel)
    return graph


def with_saver(name: str) -> Pregel:
    # Mirrors the server, which attaches its checkpointer to the exported graph.
    return graph_of(name).copy(update={"checkpointer": InMemorySaver()})


def thread(thread_id: str, **configurable: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **configurable}}


async def parts(
    graph: Pregel, input: Any, config: RunnableConfig | None = None, **kw: Any
) -> list[Any]:
    # Collected as Any: the v1 stream stubs type each part as a dict, whatever the stream mode.
    return [part async for part in graph.astream(input, config, **kw)]


def summary(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in messages]


def test_langgraph_json_lists_every_example_without_a_checkpointer() -> None:
    config = json.loads((EXAMPLES / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    assert set(config["graphs"]) == {
        "agent", "subgraphs", "ticker", "hitl", "failing", "nested", "memory"
    }  # fmt: skip
    for spec in config["graphs"].values():
        path, _, attr = spec.partition(":")
        assert attr == "graph"
        graph = graph_of(Path(path).stem)
        assert graph.checkpointer is None


def test_echo_model_streams_one_word_per_chunk() -> None:
    model = load("fake_model").EchoModel()
    chunks = [c.content for c in model.stream("hi there")]
    assert [c for c in chunks if c] == ["echo:", " hi", " there"]
    assert "".join(chunks) == model.invoke("hi there").text == "echo: hi there"


async def test_echo_model_repeats_and_keeps_spacing() -> None:
    model = load("fake_model").EchoModel(repeat=2)
    chunks = [c.content async for c in model.astream([HumanMessage("a  b")])]
    assert "".join(chunks) == "echo: a  b a  b"
    assert (await model.ainvoke("x")).text == "echo: x x"


async def test_agent_streams_tokens_progress_and_final_messages() -> None:
    seen = await parts(
        graph_of("agent"),
        {"messages": [HumanMessage("hi there")]},
        stream_mode=["messages", "custom", "values"],
    )
    streamed = [c for mode, c in seen if mode == "messages" and isinstance(c[0], AIMessageChunk)]
    assert {meta["langgraph_node"] for _, meta in streamed} == {"think"}
    tokens = [message.text for message, _ in streamed]
    custom = [c for mode, c in seen if mode == "custom"]
    final = [c for mode, c in seen if mode == "values"][-1]
    assert [t for t in tokens if t] == ["echo:", " hi", " there"]
    assert custom == [{"progress": "thinking", "step": 1}, {"progress": "done", "step": 2}]
    assert summary(final["messages"]) == [
        ("human", "hi there"),
        ("ai", "echo: hi there"),
        ("ai", "bye"),
    ]
    assert final["messages"][-1].id == "final-bye"


async def test_agent_repeat_comes_from_the_configurable() -> None:
    out = await with_saver("agent").ainvoke(
        {"messages": [HumanMessage("hi there")]}, thread("repeat", repeat=3)
    )
    assert out["messages"][1].text == "echo: hi there hi there hi there"


async def test_subgraphs_runs_the_child_after_the_parent() -> None:
    out = await graph_of("subgraphs").ainvoke({"items": []})
    assert out["items"] == ["start", "a", "b"]


async def test_subgraphs_namespaces_child_updates_and_events() -> None:
    seen = await parts(
        graph_of("subgraphs"), {"items": []}, stream_mode=["updates", "custom"], subgraphs=True
    )
    parent = [chunk for ns, _, chunk in seen if not ns]
    assert parent == [{"parent_start": {"items": ["start"]}}, {"child": {"items": ["a", "b"]}}]
    child = [(ns, mode, chunk) for ns, mode, chunk in seen if ns]
    assert {ns for ns, _, _ in child} == {child[0][0]}
    assert len(child[0][0]) == 1 and child[0][0][0].startswith("child:")
    assert [(mode, chunk) for _, mode, chunk in child] == [
        ("custom", {"child": "child_a"}),
        ("updates", {"child_a": {"items": ["a"]}}),
        ("custom", {"child": "child_b"}),
        ("updates", {"child_b": {"items": ["b"]}}),
    ]


async def test_subgraph_custom_events_need_subgraphs_true() -> None:
    # Pinned because the server must not surface them either when subgraphs is off.
    assert await parts(graph_of("subgraphs"), {"items": []}, stream_mode="custom") == []


async def test_ticker_emits_n_ticks_and_counts_across_runs() -> None:
    graph = with_saver("ticker")
    ticks = await parts(graph, {"n": 5, "delay": 0.0}, thread("t"), stream_mode="custom")
    assert ticks == [{"tick": i} for i in range(5)]
    assert (await graph.aget_state(thread("t"))).values["count"] == 5
    again = await graph.ainvoke({"n": 2, "delay": 0.001}, thread("t"))
    assert again["count"] == 7


async def test_ticker_defaults_to_no_ticks() -> None:
    assert await graph_of("ticker").ainvoke({}) == {"count": 0}


async def test_hitl_interrupts_with_the_question_then_resumes() -> None:
    graph = with_saver("hitl")
    updates = await parts(graph, {"question": "ship it?"}, thread("h"), stream_mode="updates")
    assert [i.value for i in updates[-1]["__interrupt__"]] == [{"question": "ship it?"}]
    state = await graph.aget_state(thread("h"))
    assert state.next == ("ask",)
    assert "answer" not in state.values

    out = await graph.ainvoke(Command(resume="yes"), thread("h"))
    assert "yes" in out["answer"]
    assert (await graph.aget_state(thread("h"))).next == ()


async def test_failing_raises_after_the_first_node() -> None:
    updates: list[Any] = []
    with pytest.raises(ValueError, match="boom: intentional failure"):
        async for chunk in graph_of("failing").astream({}, stream_mode="updates"):
            updates.append(chunk)
    assert updates == [{"first": {"x": 1}}]


async def test_nested_streams_tokens_two_levels_down() -> None:
    seen = await parts(
        graph_of("nested"),
        {"messages": [HumanMessage("deep")]},
        stream_mode="messages",
        subgraphs=True,
    )
    namespaces = {ns for ns, _ in seen}
    tokens = [message.text for _, (message, _) in seen]
    assert len(namespaces) == 1
    mid, inner = namespaces.pop()
    assert mid.startswith("mid:") and inner.startswith("inner:")
    assert [t for t in tokens if t] == ["echo:", " deep"]


async def test_nested_final_state_holds_the_reply() -> None:
    out = await graph_of("nested").ainvoke({"messages": [HumanMessage("deep")]})
    assert summary(out["messages"]) == [("human", "deep"), ("ai", "echo: deep")]


async def test_memory_remembers_across_threads_through_all_three_ways_to_the_store() -> None:
    graph = graph_of("memory").copy(update={"store": InMemoryStore()})
    first = await graph.ainvoke({"user": "ann", "remember": "likes tea"}, thread("one"))
    assert first["memories"] == ["likes tea"]
    second = await graph.ainvoke({"user": "ann"}, thread("two"))
    assert second["memories"] == second["recalled"] == second["runtime_saw"] == ["likes tea"]
    other = await graph.ainvoke({"user": "bob"}, thread("three"))
    assert other["memories"] == other["recalled"] == other["runtime_saw"] == []
