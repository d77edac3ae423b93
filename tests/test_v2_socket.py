"""Protocol v2 over the WebSocket on /threads/{t}/stream/events (issue 13): the Python SDK's
transport (commands over HTTP, one socket per subscription), and the JS client's way (one socket
carrying commands and events both), on both deployments; and RemoteGraph's v3 events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk.client import LangGraphClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess
from tests.servers import running_cluster, start_server
from tests.test_v2 import _contents, _is_root_end, _same, _texts, _values_until_paused


def socket_url(server_url: str, thread_id: str) -> str:
    return server_url.replace("http://", "ws://") + f"/threads/{thread_id}/stream/events"


async def _send(ws: ClientConnection, command_id: int, method: str, **params: Any) -> None:
    await ws.send(orjson.dumps({"id": command_id, "method": method, "params": params}).decode())


async def _answer(ws: ClientConnection, command_id: int) -> tuple[dict[str, Any], list[Any]]:
    """The answer to a command, and the events that came before it."""
    before = []
    while True:
        frame = orjson.loads(await ws.recv())
        if frame.get("id") == command_id and frame["type"] in ("success", "error"):
            return frame, before
        before.append(frame)


async def _until_end(ws: ClientConnection, seen: list[Any] | None = None) -> list[Any]:
    seen = [] if seen is None else seen
    while not seen or not _is_root_end(seen[-1]):
        seen.append(orjson.loads(await ws.recv()))
    return seen


async def test_v2_sdk_over_websocket_reply_interrupt_and_second_turn(
    client: LangGraphClient,
) -> None:
    async with client.threads.stream(assistant_id="agent", transport="websocket") as thread:
        await thread.run.start(input={"messages": [{"role": "user", "content": "hi over ws"}]})
        assert await _texts(thread) == [["echo:", " hi", " over", " ws"]]
        assert _contents(await thread.output)[2] == "bye"
    async with client.threads.stream(
        thread.thread_id, assistant_id="agent", transport="websocket"
    ) as again:
        await again.run.start(input={"messages": [{"role": "user", "content": "more"}]})
        assert await _texts(again) == [["echo:", " more"]]
    async with client.threads.stream(assistant_id="hitl", transport="websocket") as hitl:
        await hitl.run.start(input={"question": "ok?"})
        await _values_until_paused(hitl, client, {"question": "ok?"})
        await hitl.run.respond("yes")
        assert await hitl.output == {"question": "ok?", "answer": "yes!"}


async def test_v2_one_socket_carries_commands_and_events(server: ServerProcess) -> None:
    thread_id = str(uuid.uuid4())
    async with connect(socket_url(server.url, thread_id)) as ws:
        # As the JS client does: run.start on the socket, then its subscriptions.
        await _send(ws, 1, "run.start", assistant_id="ticker", input={"n": 3})
        started, _ = await _answer(ws, 1)
        assert started["type"] == "success"
        # Without `since`, a subscription starts at the thread's latest run: the one just started.
        await _send(ws, 2, "subscription.subscribe", channels=["lifecycle", "custom"])
        subscribed, early = await _answer(ws, 2)
        first_id = subscribed["result"]["subscription_id"]
        events = await _until_end(ws, early)
        ticks = [e["params"]["data"]["payload"]["tick"] for e in events if e["method"] == "custom"]
        assert ticks == [0, 1, 2]
        assert [e["params"]["data"]["event"] for e in events if e["method"] == "lifecycle"] == [
            "running",
            "completed",
        ]
        # The socket stays open through every kind of error, each answered by id.
        junk_frames = (b'{"channels": ["values"]}', b"\xff\x00", "[1, 2]", '{"id": true}')
        for junk in junk_frames:
            await ws.send(junk)
            not_a_command = orjson.loads(await ws.recv())
            assert (not_a_command["id"], not_a_command["error"]) == (None, "invalid_argument")
        errors = [
            ("state.inject", {}, "unknown_command"),
            ("subscription.subscribe", {"channels": ["bogus"]}, "invalid_argument"),
            ("subscription.subscribe", {"channels": ["custom"], "since": "x"}, "invalid_argument"),
            ("subscription.unsubscribe", {"subscription_id": "nope"}, "no_such_subscription"),
            ("subscription.unsubscribe", {"subscription_id": ["x"]}, "no_such_subscription"),
            ("subscription.subscribe", {"channels": ["custom"], "depth": "x"}, "invalid_argument"),
        ]
        for n, (method, params, code) in enumerate(errors, start=10):
            await _send(ws, n, method, **params)
            answer, _ = await _answer(ws, n)
            assert (answer["type"], answer["error"]) == ("error", code), method
        await _send(ws, 20, "subscription.unsubscribe", subscription_id=first_id)
        assert (await _answer(ws, 20))[0]["type"] == "success"
        # A reconnect from any seq gives the rest of the same events: same seq and event_id.
        whole = [e for e in events if e["method"] == "custom"]
        await _send(ws, 21, "subscription.reconnect", channels=["custom"], since=whole[0]["seq"])
        answer, replay = await _answer(ws, 21)
        replay += [orjson.loads(await ws.recv()) for _ in range(2 - len(replay))]
        assert _same(replay, whole[1:])
        await _send(ws, 22, "agent.getTree")
        tree, _ = await _answer(ws, 22)
        assert tree["result"]["tree"]["status"] == "completed"
        assert tree["meta"]["applied_through_seq"] >= whole[-1]["seq"]


async def test_v2_socket_sends_a_live_event_once_and_replays_it_to_a_new_subscription(
    server: ServerProcess,
) -> None:
    async with connect(socket_url(server.url, str(uuid.uuid4()))) as ws:
        await _send(ws, 1, "subscription.subscribe", channels=["lifecycle"])
        await _send(ws, 2, "subscription.subscribe", channels=["lifecycle", "custom"])
        await _send(ws, 3, "run.start", assistant_id="ticker", input={"n": 2})
        answers = [await _answer(ws, n) for n in (1, 2, 3)]
        events = await _until_end(ws, [e for _, before in answers for e in before])
        # Both subscriptions match the lifecycle events; each comes once on the socket.
        assert [e["method"] for e in events] == ["lifecycle", "custom", "custom", "lifecycle"]
        await _send(ws, 4, "subscription.subscribe", channels=["lifecycle"], since=0)
        _, early = await _answer(ws, 4)
        replay = await _until_end(ws, early)
    assert _same(replay, [e for e in events if e["method"] == "lifecycle"])


async def test_v2_socket_refuses_a_bad_thread_id(server: ServerProcess) -> None:
    async with connect(socket_url(server.url, "not-a-uuid")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4422


async def test_v2_remote_graph_astream_events_v3(server: ServerProcess) -> None:
    """RemoteGraph's v3 event stream is protocol v2 on the wire (SSE)."""
    remote = RemoteGraph("agent", url=server.url)
    hi = {"messages": [{"role": "user", "content": "remote v3"}]}
    async with await remote.astream_events(hi, version="v3") as run:
        assert await _texts(run) == [["echo:", " remote", " v3"]]
        assert _contents(await run.output())[-1] == "bye"


async def test_v2_socket_sends_its_subscriptions_events_in_one_order(
    server: ServerProcess,
) -> None:
    """Each subscription reads the thread on its own; the socket still sends their events in
    the order of their seqs, as one stream would: the JS client ends a run's projections at its
    terminal lifecycle event, so a values or custom event sent after it would be lost."""
    thread_id = str(uuid.uuid4())
    channels = ["lifecycle", "custom", "values", "updates", "tasks"]
    async with connect(socket_url(server.url, thread_id)) as ws:
        for n, channel in enumerate(channels, start=1):
            await _send(ws, n, "subscription.subscribe", channels=[channel], since=0)
            assert (await _answer(ws, n))[0]["type"] == "success"
        seen: list[Any] = []
        for turn in range(3):
            command_id = 10 + turn
            await _send(ws, command_id, "run.start", assistant_id="ticker", input={"n": 200})
            answer, early = await _answer(ws, command_id)
            assert answer["type"] == "success"
            seen += await _until_end(ws, early)
            # Wait out the end's followers: the terminal is its run's last event.
            seen = [e for e in seen if e.get("type") == "event"]
        seqs = [e["seq"] for e in seen]
        assert seqs == sorted(set(seqs))
        assert [e["method"] for e in seen].count("custom") == 600
        ends = [n for n, e in enumerate(seen) if _is_root_end(e)]
        assert len(ends) == 3 and ends[-1] == len(seen) - 1


async def test_v2_socket_ends_a_run_it_started_after_the_subscriptions_its_answer_prompted(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    """The JS client opens a run's values projection when it reads run.start's answer and ends
    its projections one macrotask after the run's terminal: a run that ended before that
    subscription was made would leave its output empty. A client slow to subscribe (here: it
    first waits, over HTTP, for the run to end) still gets the values before the end."""
    thread_id = str(uuid.uuid4())
    async with connect(socket_url(server.url, thread_id)) as ws:
        await _send(ws, 1, "subscription.subscribe", channels=["lifecycle", "messages"])
        _, seen = await _answer(ws, 1)
        await _send(ws, 2, "run.start", assistant_id="ticker", input={"n": 1})
        started, early = await _answer(ws, 2)
        seen += early
        joined = await http.get(f"/threads/{thread_id}/runs/{started['result']['run_id']}/join")
        assert joined.status_code == 200
        await _send(ws, 3, "subscription.subscribe", channels=["values", "lifecycle"])
        _, early = await _answer(ws, 3)
        seen = await _until_end(ws, seen + early)
    assert "values" in [e["method"] for e in seen if e.get("type") == "event"]


async def _ticks_over_socket(url: str) -> tuple[str | None, list[Any]]:
    """The extensions a socket's handshake agreed (the client offers permessage-deflate) and
    the events of a two-tick run started on it."""
    async with connect(socket_url(url, str(uuid.uuid4()))) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        await _send(ws, 1, "subscription.subscribe", channels=["custom", "lifecycle"])
        await _send(ws, 2, "run.start", assistant_id="ticker", input={"n": 2})
        answers = [await _answer(ws, n) for n in (1, 2)]
        events = await _until_end(ws, [e for _, before in answers for e in before])
    return agreed, [e["params"]["data"]["payload"] for e in events if e["method"] == "custom"]


async def test_v2_socket_is_uncompressed_unless_configured(server: ServerProcess) -> None:
    agreed, ticks = await _ticks_over_socket(server.url)
    assert agreed is None
    assert [t["tick"] for t in ticks] == [0, 1]


@pytest.mark.parametrize("deployment", ["embedded", "distributed"])
async def test_v2_socket_compresses_when_configured(deployment: str, tmp_path: Path) -> None:
    env = {"AGENTSTREAM_WS_DEFLATE": "1"}
    with contextlib.ExitStack() as stack:
        if deployment == "embedded":
            proc = start_server(tmp_path / "deflate.sqlite", env=env)
            stack.callback(proc.stop)
        else:
            proc = stack.enter_context(running_cluster(apis=1, workers=1, env=env)).apis[0]
        agreed, ticks = await _ticks_over_socket(proc.url)
    assert agreed is not None and agreed.startswith("permessage-deflate")
    assert [t["tick"] for t in ticks] == [0, 1]
