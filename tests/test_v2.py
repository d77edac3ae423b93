"""Protocol v2 (issue 13): the thread-centric commands and event stream, through the official
Python SDK's `client.threads.stream(...)` and raw HTTP, on both deployments."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from langgraph_sdk.client import LangGraphClient
from websockets.asyncio.client import connect

from agentstream.protocol import SEQ_BASE
from tests.cluster import running_cluster
from tests.conftest import ServerProcess

ALL = ["values", "updates", "messages", "tools", "lifecycle", "input", "custom", "tasks"]


async def _texts(thread: Any) -> list[list[str]]:
    """Each streamed message's text deltas, read while they arrive."""
    readers = []
    async for message in thread.messages:

        async def read(m: Any = message) -> list[str]:
            return [delta async for delta in m.text]

        readers.append(asyncio.create_task(read()))
    return list(await asyncio.gather(*readers))


def _contents(values: dict[str, Any]) -> list[Any]:
    return [m["content"] for m in values["messages"]]


async def _values_until_paused(thread: Any, client: LangGraphClient, paused: Any) -> None:
    """Reads `thread.values` up to an interrupt, and checks what the SDK can promise of it.

    The SDK ends the projection when its lifecycle stream (a connection of its own) reports the
    interrupt, and the projection's events come on another: on a fast server the run's values
    events may arrive after that end, and then the projection held only its first snapshot, read
    over REST (perhaps before the run's first checkpoint). So each snapshot is the empty state
    or the paused one, and the thread's state is the paused one."""
    snapshots = [v async for v in thread.values]
    assert snapshots and all(s in ({}, paused) for s in snapshots), snapshots
    assert thread.interrupted
    assert (await client.threads.get_state(thread.thread_id))["values"] == paused


async def test_v2_sdk_streams_a_reply_token_by_token_then_a_second_turn(
    client: LangGraphClient,
) -> None:
    async with client.threads.stream(assistant_id="agent") as thread:
        thread_id = thread.thread_id
        await thread.run.start(input={"messages": [{"role": "user", "content": "hi v2 world"}]})
        assert await _texts(thread) == [["echo:", " hi", " v2", " world"]]
        out = await thread.output
    assert _contents(out)[0] == "hi v2 world"
    assert _contents(out)[2] == "bye"
    # A second turn on the same thread streams only its own reply, not the first one's again.
    async with client.threads.stream(thread_id, assistant_id="agent") as thread:
        await thread.run.start(input={"messages": [{"role": "user", "content": "again"}]})
        assert await _texts(thread) == [["echo:", " again"]]
    state = await client.threads.get_state(thread_id)
    # The second `bye` has the first one's id, so it takes its place.
    assert _contents(state["values"])[2:] == [
        "bye",
        "again",
        [{"type": "text", "text": "echo: again", "index": 0}],
    ]
    runs = await client.runs.list(thread_id)
    assert {r["status"] for r in runs} == {"success"}
    assert all(r["multitask_strategy"] == "enqueue" for r in runs)


async def test_v2_sdk_interrupt_answered_with_input_respond(client: LangGraphClient) -> None:
    async with client.threads.stream(assistant_id="hitl") as thread:
        await thread.run.start(input={"question": "proceed?"})
        await _values_until_paused(thread, client, {"question": "proceed?"})
        [pending] = thread.interrupts
        assert pending["value"] == {"question": "proceed?"}
        # The v1 state the v2 clients also read names the same interrupt.
        state = await client.threads.get_state(thread.thread_id)
        assert [i["id"] for t in state["tasks"] for i in t["interrupts"]] == [
            pending["interrupt_id"]
        ]
        await thread.run.respond("yes")
        out = await thread.output
    assert out == {"question": "proceed?", "answer": "yes!"}
    history = await client.threads.get_history(thread.thread_id)
    assert history[0]["values"] == out


async def _command(http: httpx.AsyncClient, thread_id: str, method: str, **params: Any) -> Any:
    response = await http.post(
        f"/threads/{thread_id}/commands", json={"id": 7, "method": method, "params": params}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _events(
    http: httpx.AsyncClient, thread_id: str, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    async with http.stream("POST", f"/threads/{thread_id}/stream/events", json=body) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        async for line in s.aiter_lines():
            if line.startswith("data: "):
                yield orjson.loads(line[6:])


async def _until_runs_end(
    http: httpx.AsyncClient, thread_id: str, body: dict[str, Any], runs: int
) -> list[dict[str, Any]]:
    """Events until `runs` root terminals went by."""
    seen: list[dict[str, Any]] = []
    async for event in _events(http, thread_id, body):
        seen.append(event)
        if _is_root_end(event):
            runs -= 1
            if runs == 0:
                break
    return seen


def _is_root_end(event: dict[str, Any]) -> bool:
    if event["type"] != "event":
        return False
    params = event["params"]
    return (
        event["method"] == "lifecycle"
        and params["namespace"] == []
        and params["data"]["event"] in ("completed", "failed", "interrupted")
    )


async def test_v2_events_have_the_protocol_channels_and_shapes(
    http: httpx.AsyncClient,
) -> None:
    thread_id = str(uuid.uuid4())
    started = await _command(
        http, thread_id, "run.start", assistant_id="agent", input={"messages": ["hey there"]}
    )
    assert started["type"] == "success"
    run_id = started["result"]["run_id"]
    events = await _until_runs_end(http, thread_id, {"channels": ALL}, 1)
    assert events[0]["params"]["data"] == {
        "event": "running",
        "graph_name": "agent",
        "run_id": run_id,
    }
    assert events[-1]["params"]["data"] == {
        "event": "completed",
        "graph_name": "agent",
        "run_id": run_id,
    }
    by_method: dict[str, list[Any]] = {}
    for event in events:
        assert event["type"] == "event"
        by_method.setdefault(event["method"], []).append(event["params"]["data"])
    deltas = [
        d["delta"]["text"] for d in by_method["messages"] if d["event"] == "content-block-delta"
    ]
    assert deltas == ["echo:", " hey", " there"]
    assert by_method["messages"][0]["event"] == "message-start"
    assert by_method["messages"][-1] == {"event": "message-finish"}
    # What the real server drops arrives in the protocol's shapes.
    assert [u["node"] for u in by_method["updates"]] == ["think", "finish"]
    assert by_method["custom"] == [
        {"payload": {"progress": "thinking", "step": 1}},
        {"payload": {"progress": "done", "step": 2}},
    ]
    assert by_method["values"][-1]["messages"][-1]["content"] == "bye"
    assert "tasks" in by_method
    assert "checkpoints" not in by_method  # not asked for
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len({e["event_id"] for e in events}) == len(events)


async def test_v2_since_resumes_exactly_across_runs(http: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    for n in (3, 2):
        await _command(http, thread_id, "run.start", assistant_id="ticker", input={"n": n})
    body = {"channels": ["lifecycle", "custom"]}
    whole = await _until_runs_end(http, thread_id, {**body, "since": 0}, 2)
    assert [e["params"]["data"].get("event") for e in whole if e["method"] == "lifecycle"] == [
        "running",
        "completed",
        "running",
        "completed",
    ]
    assert [e["params"]["data"]["payload"]["tick"] for e in whole if e["method"] == "custom"] == [
        0, 1, 2, 0, 1,
    ]  # fmt: skip
    # From any event on, the rest is the same events with the same seq and event_id, on a
    # new connection: inside the first run, at its end, and inside the second.
    for cut in (2, 4, 6):
        rest = await _until_runs_end(
            http, thread_id, {**body, "since": whole[cut]["seq"]}, 1 if cut >= 4 else 2
        )
        assert rest == whole[cut + 1 :] or _same(rest, whole[cut + 1 :])
    # The Last-Event-ID header works as `since` for SSE reconnects.
    headers = {"last-event-id": str(whole[4]["seq"])}
    async with http.stream(
        "POST", f"/threads/{thread_id}/stream/events", json=body, headers=headers
    ) as s:
        async for line in s.aiter_lines():
            if line.startswith("data: "):
                assert orjson.loads(line[6:])["seq"] == whole[5]["seq"]
                break


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    # Everything but the timestamps the server stamps on synthesized events.
    def key(e: dict[str, Any]) -> Any:
        return (e["seq"], e["event_id"], e["method"], e["params"]["namespace"], e["params"]["data"])

    return [key(e) for e in a] == [key(e) for e in b]


async def _drop_and_resume(first: str, second: str) -> None:
    """Reads a slow run on `first`, drops mid-run, resumes with `since` on `second`; the
    joined events equal an uninterrupted read."""
    thread_id = str(uuid.uuid4())
    body = {"channels": ["lifecycle", "custom", "values"]}
    async with (
        httpx.AsyncClient(base_url=first, timeout=30) as one,
        httpx.AsyncClient(base_url=second, timeout=30) as two,
    ):
        started = await _command(
            one, thread_id, "run.start", assistant_id="ticker", input={"n": 8, "delay": 0.05}
        )
        since = started["meta"]["applied_through_seq"]
        head: list[dict[str, Any]] = []
        async for event in _events(one, thread_id, {**body, "since": since}):
            head.append(event)
            if event["method"] == "custom" and event["params"]["data"]["payload"]["tick"] == 2:
                break  # the connection drops mid-run
        tail = await _until_runs_end(two, thread_id, {**body, "since": head[-1]["seq"]}, 1)
        whole = await _until_runs_end(one, thread_id, {**body, "since": since}, 1)
    ticks = [e["params"]["data"]["payload"]["tick"] for e in head + tail if e["method"] == "custom"]
    assert ticks == list(range(8))
    assert _same(head + tail, whole)


async def test_v2_dropped_stream_resumes_with_since(server: ServerProcess) -> None:
    await _drop_and_resume(server.url, server.url)


async def _drop_and_resume_over_sockets(first: str, second: str) -> None:
    """The same over WebSockets: the socket on `first` closes mid-run, a new one on `second`
    reconnects from the last seq it got."""
    thread_id = str(uuid.uuid4())
    body = {"channels": ["lifecycle", "custom", "values"]}

    def url(base: str) -> str:
        return base.replace("http://", "ws://") + f"/threads/{thread_id}/stream/events"

    async def read(ws: Any, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not seen or not until(seen[-1]):
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "event":
                seen.append(frame)
        return seen

    def tick(event: dict[str, Any]) -> bool:
        return event["method"] == "custom" and event["params"]["data"]["payload"]["tick"] == 2

    start = {"assistant_id": "ticker", "input": {"n": 8, "delay": 0.05}}
    async with connect(url(first)) as ws:
        await ws.send(orjson.dumps({"id": 1, "method": "run.start", "params": start}))
        since = orjson.loads(await ws.recv())["meta"]["applied_through_seq"]
        sub = {"id": 2, "method": "subscription.subscribe", "params": {**body, "since": since}}
        await ws.send(orjson.dumps(sub))
        head = await read(ws, tick)
    async with connect(url(second)) as ws:
        params = {**body, "since": head[-1]["seq"]}
        await ws.send(orjson.dumps({"id": 1, "method": "subscription.reconnect", "params": params}))
        tail = await read(ws, _is_root_end)
        await ws.send(orjson.dumps({**sub, "id": 3}))
        whole = await read(ws, _is_root_end)
    assert _same(head + tail, whole)
    ticks = [e["params"]["data"]["payload"]["tick"] for e in whole if e["method"] == "custom"]
    assert ticks == list(range(8))


async def test_v2_resume_on_another_api_process() -> None:
    with running_cluster(apis=2, workers=1) as cluster:
        await _drop_and_resume(cluster.apis[0].url, cluster.apis[1].url)
        await _drop_and_resume_over_sockets(cluster.apis[0].url, cluster.apis[1].url)


async def test_v2_command_errors(http: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    unknown = await _command(http, thread_id, "input.inject", namespace=[], message={})
    assert unknown == {
        "type": "error",
        "id": 7,
        "error": "unknown_command",
        "message": "Unknown command: input.inject",
    }
    missing = await _command(http, thread_id, "run.start", input={})
    assert missing["error"] == "invalid_argument"
    ghost = await _command(
        http, thread_id, "run.start", assistant_id=str(uuid.uuid4()), input={"messages": []}
    )
    assert ghost["error"] == "unknown_error"
    assert ghost["message"] == "404: Thread or assistant not found."
    await _command(http, thread_id, "run.start", assistant_id="hitl", input={"question": "q"})
    await _until_runs_end(http, thread_id, {"channels": ["lifecycle"], "since": 0}, 1)
    wrong = await _command(
        http, thread_id, "input.respond", interrupt_id="nope", namespace=[], response=1
    )
    assert wrong["error"] == "no_such_interrupt"
    tree = await _command(http, thread_id, "agent.getTree")
    assert tree["result"] == {
        "tree": {"namespace": [], "status": "interrupted", "graph_name": "hitl"}
    }
    state = await _command(http, thread_id, "state.get", namespace=[])
    assert state["result"] == {"values": {"question": "q"}}
    # Malformed envelopes and bodies are HTTP 400s.
    no_id = await http.post(f"/threads/{thread_id}/commands", json={"method": "run.start"})
    assert no_id.status_code == 400
    assert no_id.json()["type"] == "error" and no_id.json()["id"] is None
    not_json = await http.post(f"/threads/{thread_id}/commands", content=b"{nope")
    assert (not_json.status_code, not_json.json()) == (400, {"detail": "Invalid JSON body"})
    for body in ({}, {"channels": []}, {"channels": ["nonsense"]}):
        bad = await http.post(f"/threads/{thread_id}/stream/events", json=body)
        assert bad.status_code == 400, body


async def test_v2_namespace_filters_and_subgraph_lifecycle(http: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    await _command(http, thread_id, "run.start", assistant_id="subgraphs", input={"items": []})
    everything = await _until_runs_end(
        http, thread_id, {"channels": ["lifecycle", "values"], "since": 0}, 1
    )
    children = {tuple(e["params"]["namespace"]) for e in everything} - {()}
    assert children and all(ns[0].startswith("child:") for ns in children)
    child_lifecycle = [
        e["params"]["data"]["event"]
        for e in everything
        if e["method"] == "lifecycle" and e["params"]["namespace"]
    ]
    assert child_lifecycle == ["started", "completed"]
    root_only = await _until_runs_end(
        http,
        thread_id,
        {"channels": ["lifecycle", "values"], "namespaces": [[]], "depth": 0, "since": 0},
        1,
    )
    assert root_only == [e for e in everything if not e["params"]["namespace"]] or _same(
        root_only, [e for e in everything if not e["params"]["namespace"]]
    )
    # A prefix without a task id matches the child by name; its root terminal is filtered out,
    # so the read stops at the child's own end.
    async for event in _events(
        http, thread_id, {"channels": ["lifecycle"], "namespaces": [["child"]], "since": 0}
    ):
        assert event["params"]["namespace"][0].startswith("child:")
        if event["params"]["data"]["event"] == "completed":
            break


async def test_v2_failed_run_ends_with_one_failed_terminal(client: LangGraphClient) -> None:
    async with client.threads.stream(assistant_id="failing") as thread:
        await thread.run.start(input={})
        with pytest.raises(RuntimeError, match="boom: intentional failure"):
            await thread.output
    async with httpx.AsyncClient(base_url=client.http.client.base_url, timeout=30) as http:
        events = await _until_runs_end(
            http, thread.thread_id, {"channels": ["lifecycle", "tasks"], "since": 0}, 1
        )
    ends = [e["params"]["data"] for e in events if _is_root_end(e)]
    assert ends == [
        {
            "event": "failed",
            "graph_name": "failing",
            "run_id": ends[0]["run_id"],
            "error": "boom: intentional failure",
        }
    ]
    # The failing node's own task events come before the end, its error included.
    results = [e["params"]["data"] for e in events if e["method"] == "tasks"]
    assert [r["name"] for r in results if "result" in r or "error" in r][-1] == "second"


async def test_v2_since_older_than_kept_is_an_explicit_resume_gap(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory(env={"AGENTSTREAM_EVENT_LOG_MAX_EVENTS": "20"})
    thread_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        started = await _command(
            http, thread_id, "run.start", assistant_id="ticker", input={"n": 40}
        )
        run_id = started["result"]["run_id"]
        joined = await http.get(f"/threads/{thread_id}/runs/{run_id}/join")
        assert joined.json()["count"] == 40
        # The run's log keeps only its last 20 events: reading from the start says so.
        body = {"channels": ["lifecycle", "custom"], "since": 0}
        events = await _until_runs_end(http, thread_id, body, 1)
    gap = events[0]
    assert gap["type"] == "error" and gap["error"] == "resume_gap"
    oldest = gap["meta"]["oldest_seq"]
    assert gap["meta"]["since"] < oldest
    kept = events[1:]
    assert kept[0]["seq"] >= oldest
    ticks = [e["params"]["data"]["payload"]["tick"] for e in kept if e["method"] == "custom"]
    assert ticks == list(range(ticks[0], 40)) and ticks[0] > 0
    assert kept[-1]["params"]["data"]["event"] == "completed"
    # The socket says so the same way, then gives the same events.
    url = srv.url.replace("http://", "ws://") + f"/threads/{thread_id}/stream/events"
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"id": 1, "method": "subscription.subscribe", "params": body}))
        frames = [orjson.loads(await ws.recv()) for _ in range(len(events) + 1)]
    assert frames[0]["type"] == "success"
    assert frames[1] == gap
    assert _same(frames[2:], kept)


async def test_v2_multitask_reject_and_v1_cancel_of_a_v2_run(http: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    slow = {"n": 200, "delay": 0.05}
    started = await _command(http, thread_id, "run.start", assistant_id="ticker", input=slow)
    run_id = started["result"]["run_id"]
    body = {"channels": ["lifecycle", "custom"], "since": started["meta"]["applied_through_seq"]}
    seen: list[dict[str, Any]] = []
    async for event in _events(http, thread_id, body):
        seen.append(event)
        if event["method"] == "custom":
            break  # running
    rejected = await _command(
        http,
        thread_id,
        "run.start",
        assistant_id="ticker",
        input={"n": 1},
        multitask_strategy="reject",
    )
    assert rejected["type"] == "error" and rejected["message"].startswith("409")
    # The v1 cancel route stops a v2 run; its stream ends with one failed terminal.
    cancelled = await http.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
    assert cancelled.status_code in (200, 202, 204)
    rest = await _until_runs_end(http, thread_id, {**body, "since": seen[-1]["seq"]}, 1)
    assert rest[-1]["params"]["data"]["event"] == "failed"
    ticks = [e for e in rest if e["method"] == "custom"]
    assert len(ticks) < 199
    run = (await http.get(f"/threads/{thread_id}/runs/{run_id}")).json()
    assert run["status"] == "interrupted"


async def test_v2_run_start_input_on_a_waiting_thread_answers_it(http: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    await _command(http, thread_id, "run.start", assistant_id="hitl", input={"question": "q"})
    first = await _until_runs_end(
        http, thread_id, {"channels": ["lifecycle", "input"], "since": 0}, 1
    )
    asked = [e["params"]["data"] for e in first if e["method"] == "input.requested"]
    assert [a["payload"] for a in asked] == [{"question": "q"}]
    assert first[-1]["params"]["data"]["event"] == "interrupted"
    resumed = await _command(http, thread_id, "run.start", assistant_id="hitl", input="sure")
    body = {"channels": ["values", "lifecycle"], "since": resumed["meta"]["applied_through_seq"]}
    second = await _until_runs_end(http, thread_id, body, 1)
    assert second[-1]["params"]["data"]["event"] == "completed"
    values = [e["params"]["data"] for e in second if e["method"] == "values"]
    assert values[-1] == {"question": "q", "answer": "sure!"}
    again = await _command(
        http, thread_id, "input.respond", interrupt_id=asked[0]["interrupt_id"], response=1
    )
    assert again["error"] == "no_such_interrupt"


async def test_v2_seq_survives_an_embedded_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The embedded deployment's logs live in its process, its runs in SQLite: after a restart
    the thread's runs keep their numbers, so no seq given out before means another event."""
    database, thread_id = tmp_path / "restart.sqlite", str(uuid.uuid4())
    body = {"channels": ["lifecycle", "custom"], "since": 0}
    srv = server_factory(database=database)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        first = await _command(http, thread_id, "run.start", assistant_id="ticker", input={"n": 2})
        before = await _until_runs_end(http, thread_id, body, 1)
    srv.stop()
    srv = server_factory(database=database)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        second = await _command(http, thread_id, "run.start", assistant_id="ticker", input={"n": 2})
        after = await _until_runs_end(http, thread_id, body, 1)
    assert first["meta"]["applied_through_seq"] == SEQ_BASE
    assert second["meta"]["applied_through_seq"] == 2 * SEQ_BASE
    # The first run's events went with the process, and the reader is told so.
    gap, *rest = after
    assert gap["error"] == "resume_gap" and gap["meta"]["oldest_seq"] == 2 * SEQ_BASE + 1
    assert {e["seq"] // SEQ_BASE for e in before} == {1}
    assert {e["seq"] // SEQ_BASE for e in rest} == {2}
    assert [e["params"]["data"].get("run_id") for e in rest if e["method"] == "lifecycle"] == [
        second["result"]["run_id"]
    ] * 2


async def test_v2_seq_keeps_a_deleted_runs_place_across_an_embedded_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A run deleted (or rolled back) leaves its number behind: the thread's later runs keep
    theirs after a restart, so a cursor given out before still means the same event."""
    database, thread_id = tmp_path / "deleted.sqlite", str(uuid.uuid4())
    body = {"channels": ["lifecycle", "custom"], "since": 0}
    srv = server_factory(database=database)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        runs = []
        for _ in range(3):
            runs.append(
                await _command(http, thread_id, "run.start", assistant_id="ticker", input={"n": 1})
            )
        before = await _until_runs_end(http, thread_id, body, 3)
        first = runs[0]["result"]["run_id"]
        assert (await http.delete(f"/threads/{thread_id}/runs/{first}")).status_code == 204
        # The thread's later runs keep their seqs meanwhile.
        after_first = max(e["seq"] for e in before if e["seq"] < 2 * SEQ_BASE)
        live = await _until_runs_end(http, thread_id, {**body, "since": after_first}, 2)
    kept = [e for e in before if e["seq"] > 3 * SEQ_BASE]
    later = [e for e in before if e["seq"] > 2 * SEQ_BASE]
    assert [e for e in live if e["type"] == "event"] == later
    srv.stop()
    srv = server_factory(database=database)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        fourth = await _command(http, thread_id, "run.start", assistant_id="ticker", input={"n": 1})
        # After the third run's last event: exactly the fourth run, at the fourth number.
        after = await _until_runs_end(http, thread_id, {**body, "since": kept[-1]["seq"]}, 1)
    assert [r["meta"]["applied_through_seq"] for r in runs] == [n * SEQ_BASE for n in (1, 2, 3)]
    assert fourth["meta"]["applied_through_seq"] == 4 * SEQ_BASE
    # The third run's log went with the process: whether it said more after the cursor is not
    # known, so the reader is told where what is kept starts.
    gap, *rest = after
    assert gap["error"] == "resume_gap" and gap["meta"]["oldest_seq"] == 4 * SEQ_BASE + 1
    assert {e["seq"] // SEQ_BASE for e in rest} == {4}
    assert [e["params"]["data"].get("run_id") for e in rest if e["method"] == "lifecycle"] == [
        fourth["result"]["run_id"]
    ] * 2
