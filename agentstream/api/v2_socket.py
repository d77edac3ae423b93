"""The WebSocket on /threads/{thread_id}/stream/events: protocol v2 commands and events on one
socket.

Commands are the HTTP route's (v2_commands.dispatch) but for the subscription ones, which
live here: each subscription is a reader of the thread's tape (v2_stream.ThreadTape), with the
same durable seq, `since` and resume_gap as the SSE route, whose events go out as text frames.
`subscription.subscribe` honours `since` as `subscription.reconnect` does (the Python client
sends its cursor there). An event goes out once per socket however many of its subscriptions
match it, except that a new subscription replays what went by before it was made (the JS
client hands an event only to the subscriptions it has when the event arrives). The
subscriptions' events go out in the order of their seqs, as one stream's would: a subscription
holds an event until every other one has sent what it had before it (the JS client ends a run's
projections at its terminal event, so a values event sent after it would be lost). For the
same reason a run started on the socket ends on it (its root terminal event goes out) no sooner
than START_GRACE after the start was answered: the JS client opens a run's values projection
when it reads that answer, and one made after the terminal went by would get nothing.

Authentication happens on the handshake (api/auth.py); here the caller's read of the thread is
authorised once, before the first command is read. A socket refused after its accept closes
with 4000 + the HTTP status the SSE route would answer, which the JS client reads as final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import OrderedDict
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from agentstream import serde
from agentstream.api.context import ApiContext
from agentstream.api.deployment import cors_options
from agentstream.api.errors import storage_answer
from agentstream.api.socket_writes import send_texts
from agentstream.api.v2_commands import dispatch, error_envelope, well_formed
from agentstream.api.v2_stream import (
    Out,
    Subscription,
    ThreadTape,
    authorize_read,
    open_tape,
    parse_since,
)
from agentstream.ids import is_uuid
from agentstream.storage.base import NotFound

router = APIRouter()
log = logging.getLogger("agentstream.api")

SENT_KEPT = 100_000  # events a socket remembers having sent, to send each once
# How long after answering run.start or input.respond a socket holds a run's root terminal, so
# that the subscriptions the client makes on reading the answer are made before the run ends
# (the reference server takes about a second to start a run; ours can end within milliseconds).
START_GRACE = 0.2
_STARTS = ("run.start", "input.respond")

Params = dict[str, Any]


def _handshake(websocket: WebSocket) -> Request:
    """The handshake as a request, for what reads one: auth handlers, header passthrough.
    It shares the scope's state, where authentication left the user."""
    return Request({**websocket.scope, "type": "http", "method": "GET"})


class Session:
    """One open socket on one thread: its commands in, its subscriptions' events out."""

    def __init__(self, c: ApiContext, websocket: WebSocket, thread_id: str) -> None:
        self.c = c
        self.websocket = websocket
        self.thread_id = thread_id
        self.request = _handshake(websocket)
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        # applied_through_seq: the last seq this socket has sent, or after which a run it
        # started begins, whichever is later
        self.sent_seq = 0
        self._send_lock = asyncio.Lock()
        # Each event sent, with how many subscriptions the socket had made by then (newest
        # SENT_KEPT): a subscription skips what was sent while it was open, as the client had
        # it for that one too, and replays what went by before it was made.
        self._made = 0
        self._sent: OrderedDict[int, int] = OrderedDict()
        # Per open subscription (by when it was made): the seq before which it has sent all it
        # will send; one holds an event until every other's has passed it (see _deliver).
        self._clear: dict[int, int] = {}
        self._moved: asyncio.Event | None = None
        self._graced_until = 0.0  # see START_GRACE

    async def serve(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text") or message.get("bytes") or b""
                await self._command(raw)
        except WebSocketDisconnect:
            return
        finally:
            for task in self.subscriptions.values():
                task.cancel()
            await asyncio.gather(*self.subscriptions.values(), return_exceptions=True)

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def _answer(self, envelope: Params) -> None:
        if envelope["type"] == "success" or envelope["error"] != "unknown_command":
            applied = (envelope.get("meta") or {}).get("applied_through_seq", 0)
            self.sent_seq = max(self.sent_seq, applied)
            envelope["meta"] = {"applied_through_seq": self.sent_seq}
        await self._send(serde.dumps(envelope).decode())

    async def _command(self, raw: str | bytes) -> None:
        try:
            command = serde.loads(raw)
        except ValueError:
            command = None
        if not well_formed(command):
            message = "a command needs an integer id and a string method"
            await self._send(
                serde.dumps(error_envelope(None, "invalid_argument", message)).decode()
            )
            return
        command_id = command["id"]
        params = command.get("params")
        params = params if isinstance(params, dict) else {}
        method = command["method"]
        try:
            if method in ("subscription.subscribe", "subscription.reconnect"):
                answer = await self._subscribe(command_id, params)
            elif method == "subscription.unsubscribe":
                answer = self._unsubscribe(command_id, params)
            else:
                answer = await dispatch(self.c, self.request, self.thread_id, command)
        except Exception as exc:  # a service down, say: the socket stays open
            log.exception("v2 command %s failed", method)
            message = f"{method} failed on the server ({type(exc).__name__})"
            answer = error_envelope(command_id, "unknown_error", message)
        if method in _STARTS and answer["type"] == "success":
            self._graced_until = asyncio.get_running_loop().time() + START_GRACE
        await self._answer(answer)

    async def _subscribe(self, command_id: int, params: Params) -> Params:
        try:
            sub = Subscription(params)
            since = parse_since(params.get("since"))
            tape = await open_tape(self.c, self.request, self.thread_id, sub)
        except HTTPException as exc:
            codes = {400: "invalid_argument", 422: "invalid_argument", 403: "forbidden"}
            return error_envelope(
                command_id, codes.get(exc.status_code, "no_such_run"), str(exc.detail)
            )
        except NotFound as exc:
            return error_envelope(command_id, "no_such_run", storage_answer(exc)[1])
        subscription_id = str(uuid4())
        self._made += 1
        pump = self._pump(tape, since, self._made)
        self.subscriptions[subscription_id] = asyncio.create_task(pump)
        # Its replay follows the answer, as events; how many is not known before they are read.
        result = {"subscription_id": subscription_id, "replayed_events": 0}
        return {"type": "success", "id": command_id, "result": result}

    def _unsubscribe(self, command_id: int, params: Params) -> Params:
        subscription_id = params.get("subscription_id")
        task = None
        if isinstance(subscription_id, str):
            task = self.subscriptions.pop(subscription_id, None)
        if task is None:
            message = f"Unknown subscription: {subscription_id}"
            return error_envelope(command_id, "no_such_subscription", message)
        task.cancel()
        return {"type": "success", "id": command_id, "result": {}}

    async def _pump(self, tape: ThreadTape, since: int | None, made: int) -> None:
        self._clear[made] = 0
        try:
            # A socket closed under a send ends the session's receive too; nothing to report.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self._follow(tape, since, made)
        finally:
            del self._clear[made]
            self._wake()

    async def _follow(self, tape: ThreadTape, since: int | None, made: int) -> None:
        try:
            async for batch in tape.batches(since):
                if batch:
                    await self._deliver(batch, made)
                self._advance(made, tape.through + 1)
        except Exception as exc:  # storage down under a read: say so, as SSE would end
            if isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):
                raise
            log.exception("a v2 subscription's read failed")
            message = f"the subscription's read failed ({type(exc).__name__}); reconnect"
            await self._send(serde.dumps(error_envelope(None, "unavailable", message)).decode())

    async def _deliver(self, batch: list[Out], made: int) -> None:
        """Sends the subscription's batch, each event once every other subscription has sent
        what it had before it; as much of it at once as the others allow."""
        start = 0
        while start < len(batch):
            seq = batch[start][0]
            if seq:  # an error (seq 0) has no place in the order
                self._advance(made, seq)
            bound = self._bound(made)
            if seq > bound:
                await self._moved_on()
                continue
            end = len(batch)
            if bound != math.inf:
                end = next((n for n in range(start, end) if batch[n][0] > bound), end)
            held = self._held(batch, start, end)
            if held == start:  # a root terminal in its grace: others may subscribe meanwhile
                await asyncio.sleep(self._graced_until - asyncio.get_running_loop().time())
                continue
            end = held
            async with self._send_lock:
                texts = []
                for seq, _, envelope in batch[start:end]:
                    if seq and not self._first_time(seq, made):
                        continue
                    texts.append(envelope)
                    self.sent_seq = max(self.sent_seq, seq)
                await send_texts(self.websocket, texts)
            start = end

    def _held(self, batch: list[Out], start: int, end: int) -> int:
        """Where in batch[start:end] a root terminal waits out START_GRACE (end: nowhere)."""
        if asyncio.get_running_loop().time() >= self._graced_until:
            return end
        return next((n for n in range(start, end) if _is_root_terminal(batch[n])), end)

    def _bound(self, made: int) -> float:
        """The seq up to which subscription `made` may send: before it, the others sent all."""
        return min((clear for m, clear in self._clear.items() if m != made), default=math.inf)

    def _advance(self, made: int, clear: int) -> None:
        if clear > self._clear[made]:
            self._clear[made] = clear
            self._wake()

    def _wake(self) -> None:
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def _moved_on(self) -> None:
        if self._moved is None:
            self._moved = asyncio.Event()
        await self._moved.wait()

    def _first_time(self, seq: int, made: int) -> bool:
        """Whether the subscription made `made`-th is to send event `seq` (see _sent)."""
        when = self._sent.get(seq)
        if when is not None and when >= made:
            return False
        self._sent[seq] = self._made
        self._sent.move_to_end(seq)
        if len(self._sent) > SENT_KEPT:
            self._sent.popitem(last=False)
        return True


def _is_root_terminal(out: Out) -> bool:
    _, method, envelope = out
    if method != b"lifecycle":
        return False
    params = serde.loads(envelope)["params"]
    return not params.get("namespace") and params["data"].get("event") in _TERMINALS


_TERMINALS = ("completed", "failed", "interrupted")


def _origin_allowed(c: ApiContext, websocket: WebSocket) -> bool:
    """With `http.cors`, a socket a browser opens from an origin it does not allow is refused:
    browsers apply no CORS to WebSockets, so a page elsewhere could use the user's cookies."""
    origin = websocket.headers.get("origin")
    if origin is None or not c.graphs.config.http.get("cors"):
        return True
    options = cors_options(c.graphs.config)
    if "*" in options["allow_origins"] or origin in options["allow_origins"]:
        return True
    regex = options.get("allow_origin_regex")
    return bool(regex and re.fullmatch(regex, origin))


@router.websocket("/threads/{thread_id}/stream/events")
async def stream_socket(websocket: WebSocket, thread_id: str) -> None:
    c: ApiContext = websocket.app.state.ctx
    if not _origin_allowed(c, websocket):
        await _refuse(websocket, 403, "Origin not allowed by http.cors")
        return
    if not is_uuid(thread_id):
        await _refuse(websocket, 422, "Invalid thread ID: must be a UUID")
        return
    try:
        # Authorised once, before any command: the read of the thread every subscription needs.
        await authorize_read(c, _handshake(websocket), thread_id)
    except HTTPException as exc:
        await _refuse(websocket, exc.status_code, str(exc.detail))
        return
    except NotFound as exc:
        await _refuse(websocket, *storage_answer(exc))
        return
    await websocket.accept()
    await Session(c, websocket, thread_id).serve()


async def _refuse(websocket: WebSocket, status: int, detail: str) -> None:
    await websocket.accept()
    await websocket.close(code=4000 + status, reason=detail[:120])
