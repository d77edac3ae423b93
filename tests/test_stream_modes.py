"""Every stream mode through the official SDK, stateless and threaded: event names, data shapes,
order, subgraph namespaces, interrupts and errors (PROTOCOL §0, §4, §12.1)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import RunCreateMetadata, StreamPart

from tests.conftest import BYE
from tests.helpers import summary

HI = {"messages": [{"role": "human", "content": "hi there"}]}
FINAL = [("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye")]
PROGRESS = [{"progress": "thinking", "step": 1}, {"progress": "done", "step": 2}]
BOOM = {"error": "ValueError", "message": "boom: intentional failure"}
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INTERRUPT_ID = re.compile(r"^[0-9a-f]{32}$")


class Streamed:
    """One finished stream: its parts after `metadata`, and the ids the server gave the run."""

    def __init__(self, parts: list[StreamPart], created: RunCreateMetadata) -> None:
        assert parts, "a stream always carries at least its metadata event"
        first, *rest = parts
        assert first.event == "metadata"
        assert first.data == {"run_id": created["run_id"], "attempt": 1}
        assert "metadata" not in [p.event for p in rest], "metadata comes once, first"
        self.run_id: str = created["run_id"]
        self.thread_id: str | None = created["thread_id"]
        self.parts = rest

    @property
    def events(self) -> list[str]:
        return [p.event for p in self.parts]

    def data(self, event: str) -> list[Any]:
        return [p.data for p in self.parts if p.event == event]


async def stream(
    client: LangGraphClient, thread_id: str | None, assistant: str, **kwargs: Any
) -> Streamed:
    created: list[RunCreateMetadata] = []
    parts = [
        part
        async for part in client.runs.stream(
            thread_id, assistant, on_run_created=created.append, **kwargs
        )
    ]
    assert len(created) == 1
    assert created[0]["thread_id"] == thread_id
    return Streamed(parts, created[0])


@pytest.fixture(params=["stateless", "threaded"])
async def thread_id(request: pytest.FixtureRequest, client: LangGraphClient) -> str | None:
    if request.param == "stateless":
        return None
    thread = await client.threads.create()
    return str(thread["thread_id"])


# --- one mode at a time ----------------------------------------------------------------------


async def test_values_streams_the_state_after_each_step(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="values")
    assert s.events == ["values", "values", "values"]
    assert [summary(v) for v in s.data("values")] == [FINAL[:1], FINAL[:2], FINAL]


async def test_updates_streams_each_node_and_what_it_returned(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="updates")
    assert s.events == ["updates", "updates"]
    think, finish = s.data("updates")
    assert list(think) == ["think"]
    assert summary(think["think"]) == [("ai", "echo: hi there")]
    assert finish == {"finish": {"messages": [BYE]}}


async def test_messages_tuple_is_sent_as_messages_with_chunk_and_run_metadata(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="messages-tuple")
    assert set(s.events) == {"messages"}
    pairs = s.data("messages")
    assert all(isinstance(p, list) and len(p) == 2 for p in pairs)
    chunks = [(m, meta) for m, meta in pairs if m["type"] == "AIMessageChunk"]
    assert "".join(m["content"] for m, _ in chunks) == "echo: hi there"
    assert len(chunks) == 4, "one chunk per word, then an empty last one"
    assert [m["chunk_position"] for m, _ in chunks] == [None, None, None, "last"]
    assert len({m["id"] for m, _ in chunks}) == 1
    for _, meta in chunks:
        assert meta["langgraph_node"] == "think"
        assert meta["run_id"] == s.run_id
        assert meta["graph_id"] == "agent"
    thread_ids = {meta["thread_id"] for _, meta in pairs}
    assert len(thread_ids) == 1
    if thread_id is not None:
        assert thread_ids == {thread_id}
    else:
        assert all(TASK_ID.match(t) for t in thread_ids), "a stateless run has its own thread"
    # The goodbye is returned, not streamed: it comes once, whole.
    complete = [(m, meta) for m, meta in pairs if m["type"] != "AIMessageChunk"]
    assert [(m["type"], m["content"], m["id"]) for m, _ in complete] == [("ai", "bye", "final-bye")]
    assert complete[0][1]["langgraph_node"] == "finish"
    assert pairs[-1] == list(complete[0])


async def test_messages_old_format_sends_metadata_partials_and_complete(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="messages")
    assert s.events == [
        "messages/metadata",
        "messages/partial",
        "messages/partial",
        "messages/partial",
        "messages/partial",
        "messages/metadata",
        "messages/complete",
    ]
    streamed_meta, bye_meta = s.data("messages/metadata")
    [(streamed_id, meta)] = streamed_meta.items()
    assert meta["metadata"]["langgraph_node"] == "think"
    assert meta["metadata"]["run_id"] == s.run_id
    assert list(bye_meta) == ["final-bye"]
    assert bye_meta["final-bye"]["metadata"]["langgraph_node"] == "finish"
    partials = s.data("messages/partial")
    assert all(len(p) == 1 for p in partials)
    # Each partial holds the text so far, typed as a whole message, not a chunk.
    assert [p[0]["content"] for p in partials] == [
        "echo:",
        "echo: hi",
        "echo: hi there",
        "echo: hi there",
    ]
    assert {(p[0]["type"], p[0]["id"]) for p in partials} == {("ai", streamed_id)}
    [complete] = s.data("messages/complete")
    assert [(m["type"], m["content"], m["id"]) for m in complete] == [("ai", "bye", "final-bye")]


async def test_custom_streams_what_the_node_wrote(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="custom")
    assert s.events == ["custom", "custom"]
    assert s.data("custom") == PROGRESS


async def test_tasks_streams_a_start_and_a_result_per_node(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode="tasks")
    assert set(s.events) == {"tasks"}
    tasks = s.data("tasks")
    shape = [(t["name"], "input" in t, "result" in t) for t in tasks]
    assert shape == [
        ("think", True, False),
        ("think", False, True),
        ("finish", True, False),
        ("finish", False, True),
    ]
    think_start, think_result, finish_start, finish_result = tasks
    assert think_start["id"] == think_result["id"] != finish_start["id"] == finish_result["id"]
    assert summary(think_start["input"]) == FINAL[:1]
    assert think_start["triggers"] == ["branch:to:think"]
    assert think_result["error"] is None
    assert think_result["interrupts"] == []
    assert summary(think_result["result"]) == [("ai", "echo: hi there")]
    assert summary(finish_result["result"]) == [("ai", "bye")]


async def test_checkpoints_on_a_thread_follow_every_superstep(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    s = await stream(client, thread["thread_id"], "agent", input=HI, stream_mode="checkpoints")
    assert set(s.events) == {"checkpoints"}
    checkpoints = s.data("checkpoints")
    assert [c["next"] for c in checkpoints] == [["__start__"], ["think"], ["finish"], []]
    assert [c["metadata"]["source"] for c in checkpoints] == ["input", "loop", "loop", "loop"]
    assert [c["metadata"]["step"] for c in checkpoints] == [-1, 0, 1, 2]
    assert summary(checkpoints[-1]["values"]) == FINAL
    assert checkpoints[0]["parent_config"] is None
    for c in checkpoints:
        assert c["config"]["configurable"]["thread_id"] == thread["thread_id"]
    # Each checkpoint's parent is the one before it.
    for parent, child in itertools.pairwise(checkpoints):
        parent_id = parent["config"]["configurable"]["checkpoint_id"]
        assert child["parent_config"]["configurable"]["checkpoint_id"] == parent_id


async def test_checkpoints_on_a_stateless_run_are_empty(client: LangGraphClient) -> None:
    # PROTOCOL §4.4: stateless runs do not checkpoint, so there is nothing to stream.
    s = await stream(client, None, "agent", input=HI, stream_mode=["checkpoints", "updates"])
    assert s.events == ["updates", "updates"]


async def test_debug_on_a_thread_has_checkpoints_tasks_and_results(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    s = await stream(client, thread["thread_id"], "agent", input=HI, stream_mode="debug")
    assert set(s.events) == {"debug"}
    entries = s.data("debug")
    kinds = [(d["type"], d["payload"].get("name")) for d in entries]
    assert kinds == [
        ("checkpoint", None),
        ("checkpoint", None),
        ("task", "think"),
        ("task_result", "think"),
        ("checkpoint", None),
        ("task", "finish"),
        ("task_result", "finish"),
        ("checkpoint", None),
    ]
    assert entries[0]["step"] == -1
    assert entries[0]["payload"]["parent_checkpoint"] is None
    assert entries[-1]["payload"]["checkpoint"]["thread_id"] == thread["thread_id"]
    assert summary(entries[-1]["payload"]["values"]) == FINAL


async def test_debug_on_a_stateless_run_has_no_checkpoints(client: LangGraphClient) -> None:
    s = await stream(client, None, "agent", input=HI, stream_mode="debug")
    kinds = [(d["type"], d["payload"]["name"]) for d in s.data("debug")]
    assert kinds == [
        ("task", "think"),
        ("task_result", "think"),
        ("task", "finish"),
        ("task_result", "finish"),
    ]
    assert s.events == ["debug"] * 4


async def test_events_streams_langchain_records_rooted_at_the_run(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "agent", input=HI, stream_mode=["events", "custom"])
    records = s.data("events")
    assert [(r["event"], r["name"]) for r in records] == [
        ("on_chain_start", "LangGraph"),
        ("on_chain_start", "think"),
        ("on_chat_model_start", "EchoModel"),
        ("on_chat_model_stream", "EchoModel"),
        ("on_chat_model_stream", "EchoModel"),
        ("on_chat_model_stream", "EchoModel"),
        ("on_chat_model_stream", "EchoModel"),
        ("on_chat_model_end", "EchoModel"),
        ("on_chain_stream", "think"),
        ("on_chain_end", "think"),
        ("on_chain_start", "finish"),
        ("on_chain_stream", "finish"),
        ("on_chain_end", "finish"),
        ("on_chain_end", "LangGraph"),
    ]
    root = records[0]
    assert root["run_id"] == s.run_id
    assert root["parent_ids"] == []
    tokens = [
        r["data"]["chunk"]["content"] for r in records if r["event"] == "on_chat_model_stream"
    ]
    assert "".join(tokens) == "echo: hi there"
    assert summary(records[-1]["data"]["output"]) == FINAL
    # Custom writes go to the custom stream, never inside an events record.
    assert s.data("custom") == PROGRESS
    assert not [r for r in records if "progress" in str(r.get("data"))]


async def test_several_modes_interleave_in_the_order_they_were_produced(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(
        client,
        thread_id,
        "agent",
        input=HI,
        stream_mode=["values", "updates", "messages-tuple", "custom"],
    )
    assert s.events == [
        "values",
        "custom",
        "messages",
        "messages",
        "messages",
        "messages",
        "custom",
        "updates",
        "values",
        "messages",
        "updates",
        "values",
    ]
    parts = s.parts
    assert summary(parts[0].data) == FINAL[:1]
    assert [p.data for p in parts if p.event == "custom"] == PROGRESS
    assert "".join(p.data[0]["content"] for p in parts[2:6]) == "echo: hi there"
    assert list(parts[7].data) == ["think"]
    assert parts[9].data[0]["content"] == "bye"
    assert list(parts[10].data) == ["finish"]
    assert summary(parts[11].data) == FINAL


# --- subgraphs -------------------------------------------------------------------------------


async def test_subgraph_events_are_named_after_the_parent_task(client: LangGraphClient) -> None:
    s = await stream(
        client,
        None,
        "subgraphs",
        input={"items": []},
        stream_mode=["updates", "tasks", "custom"],
        stream_subgraphs=True,
    )
    root_tasks = s.data("tasks")
    [child_task_id] = {t["id"] for t in root_tasks if t["name"] == "child"}
    ns = f"child:{child_task_id}"
    assert s.data(f"updates|{ns}") == [{"child_a": {"items": ["a"]}}, {"child_b": {"items": ["b"]}}]
    assert s.data(f"custom|{ns}") == [{"child": "child_a"}, {"child": "child_b"}]
    inner_tasks = s.data(f"tasks|{ns}")
    assert [t["name"] for t in inner_tasks] == ["child_a", "child_a", "child_b", "child_b"]
    assert s.data("updates") == [
        {"parent_start": {"items": ["start"]}},
        {"child": {"items": ["a", "b"]}},
    ]
    assert set(s.events) == {"updates", "tasks", f"updates|{ns}", f"custom|{ns}", f"tasks|{ns}"}
    # The child's events come while the parent's child task runs, between its start and end.
    names = s.events
    child_events = [i for i, n in enumerate(names) if n.endswith(ns)]
    child_start = next(
        i for i, p in enumerate(s.parts) if p.event == "tasks" and p.data["id"] == child_task_id
    )
    assert child_start < min(child_events)
    assert max(child_events) < names.index("updates", child_start)


async def test_nested_subgraphs_get_a_two_level_namespace(client: LangGraphClient) -> None:
    s = await stream(
        client,
        None,
        "nested",
        input={"messages": [{"role": "human", "content": "deep"}]},
        stream_mode=["messages-tuple", "tasks"],
        stream_subgraphs=True,
    )
    [mid_id] = {t["id"] for t in s.data("tasks") if t["name"] == "mid"}
    [inner_id] = {t["id"] for t in s.data(f"tasks|mid:{mid_id}") if t["name"] == "inner"}
    ns = f"mid:{mid_id}|inner:{inner_id}"
    pairs = s.data(f"messages|{ns}")
    tokens = [m["content"] for m, _ in pairs if m["type"] == "AIMessageChunk"]
    assert "".join(tokens) == "echo: deep"
    assert {meta["langgraph_node"] for _, meta in pairs} == {"reply"}
    assert [t["name"] for t in s.data(f"tasks|{ns}")] == ["reply", "reply"]


async def test_without_stream_subgraphs_child_events_are_dropped_custom_included(
    client: LangGraphClient,
) -> None:
    s = await stream(
        client,
        None,
        "subgraphs",
        input={"items": []},
        stream_mode=["updates", "custom"],
        stream_subgraphs=False,
    )
    assert s.events == ["updates", "updates"]
    assert s.data("updates") == [
        {"parent_start": {"items": ["start"]}},
        {"child": {"items": ["a", "b"]}},
    ]


async def test_sdk_v2_stream_splits_the_namespace_and_lifts_interrupts(
    client: LangGraphClient,
) -> None:
    parts: list[Any] = [
        part
        async for part in client.runs.stream(
            None,
            "subgraphs",
            input={"items": []},
            stream_mode=["updates", "tasks"],
            stream_subgraphs=True,
            version="v2",
        )
    ]
    assert parts[0]["type"] == "metadata"
    [child_task_id] = {
        p["data"]["id"]
        for p in parts
        if p["type"] == "tasks" and p["ns"] == [] and p["data"]["name"] == "child"
    }
    child_updates = [p["data"] for p in parts if p["type"] == "updates" and p["ns"]]
    assert child_updates == [{"child_a": {"items": ["a"]}}, {"child_b": {"items": ["b"]}}]
    assert {tuple(p["ns"]) for p in parts if p["ns"]} == {(f"child:{child_task_id}",)}

    thread = await client.threads.create()
    parts = [
        part
        async for part in client.runs.stream(
            thread["thread_id"],
            "hitl",
            input={"question": "ship it?"},
            stream_mode="values",
            version="v2",
        )
    ]
    last = parts[-1]
    assert last["type"] == "values"
    assert last["data"] == {"question": "ship it?"}
    assert [i["value"] for i in last["interrupts"]] == [{"question": "ship it?"}]


# --- interrupts and errors -------------------------------------------------------------------


async def test_interrupt_is_a_successful_run_that_leaves_the_thread_interrupted(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    s = await stream(
        client, t, "hitl", input={"question": "ship it?"}, stream_mode=["values", "updates"]
    )
    assert s.events == ["values", "updates", "values"]
    [update] = s.data("updates")
    [interrupt] = update["__interrupt__"]
    assert list(update) == ["__interrupt__"]
    assert interrupt["value"] == {"question": "ship it?"}
    assert INTERRUPT_ID.match(interrupt["id"])
    first, last = s.data("values")
    assert first == {"question": "ship it?"}
    assert last == {"question": "ship it?", "__interrupt__": [interrupt]}
    assert (await client.runs.get(t, s.run_id))["status"] == "success"
    assert (await client.threads.get(t))["status"] == "interrupted"
    assert (await client.threads.get_state(t))["next"] == ["ask"]

    resumed = await stream(
        client, t, "hitl", command={"resume": "yes"}, stream_mode=["values", "updates"]
    )
    assert resumed.data("updates") == [{"ask": {"answer": "yes"}}, {"done": {"answer": "yes!"}}]
    assert resumed.data("values")[-1] == {"question": "ship it?", "answer": "yes!"}
    assert (await client.runs.get(t, resumed.run_id))["status"] == "success"
    assert (await client.threads.get(t))["status"] == "idle"


async def test_failure_sends_values_then_the_error_last(
    client: LangGraphClient, thread_id: str | None
) -> None:
    s = await stream(client, thread_id, "failing", input={}, stream_mode=["values", "updates"])
    assert s.events == ["updates", "values", "error"]
    assert s.data("updates") == [{"first": {"x": 1}}]
    assert s.data("values") == [{"x": 1}]
    assert s.parts[-1].data == BOOM
    if thread_id is not None:
        assert (await client.runs.get(thread_id, s.run_id))["status"] == "error"
        assert (await client.threads.get(thread_id))["status"] == "error"


async def test_missing_input_is_an_error_event(client: LangGraphClient) -> None:
    s = await stream(client, None, "agent", stream_mode="values")
    assert s.events == ["error"]
    assert s.parts[0].data == {
        "error": "EmptyInputError",
        "message": "Received no input for __start__",
    }


# --- stateless runs clean up -----------------------------------------------------------------


async def _thread_gone(client: LangGraphClient, http: httpx.AsyncClient, thread_id: str) -> None:
    assert await client.threads.search(ids=[thread_id]) == []
    response = await http.get(f"/threads/{thread_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Thread with ID {thread_id} not found"}


async def test_stateless_stream_leaves_no_thread_behind(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    s = await stream(client, None, "agent", input=HI, stream_mode="messages-tuple")
    assert s.thread_id is None, "a stateless stream names no thread in Content-Location"
    [thread_id] = {meta["thread_id"] for _, meta in s.data("messages")}
    await _thread_gone(client, http, thread_id)

    # The same lookups do find a threaded run's thread, so their emptiness above means gone.
    thread = await client.threads.create()
    await stream(client, thread["thread_id"], "agent", input=HI, stream_mode="values")
    assert [t["thread_id"] for t in await client.threads.search(ids=[thread["thread_id"]])] == [
        thread["thread_id"]
    ]
    assert (await http.get(f"/threads/{thread['thread_id']}")).status_code == 200


async def test_stateless_wait_names_a_thread_that_is_gone_after(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    response = await http.post("/runs/wait", json={"assistant_id": "agent", "input": HI})
    assert response.status_code == 200
    assert summary(response.json()) == FINAL
    match = re.fullmatch(
        r"/threads/([0-9a-f-]{36})/runs/([0-9a-f-]{36})/join", response.headers["location"]
    )
    assert match is not None
    await _thread_gone(client, http, match.group(1))
