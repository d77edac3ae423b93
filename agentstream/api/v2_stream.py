"""POST /threads/{thread_id}/stream/events: protocol v2, a thread's event history then live.

A second reader of the logs every run already has: the thread's own log lists its runs in
order, and each run started by run.start holds its protocol events (execution/v3events.py).
So an event's `seq` is durable, the same on every connection and every API process: the run's
number in the thread's log and the event's id in the run's log (protocol.v2_seq), and `since`
(or Last-Event-ID) resumes exactly, across runs; `since: 0` reads the whole history. Without a
cursor a connection starts at the thread's latest run (the one its client just started), not at
the thread's first run.
Each run's events start with its root `running` and end with one root terminal, both naming
the run, which delimits history from the run in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from agentstream import serde
from agentstream.api.context import ApiContext, ctx
from agentstream.api.errors import ApiError
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import EventStreamResponse, JsonResponse
from agentstream.eventbus import BusUnavailable, Event, EventsEvicted
from agentstream.execution.runs import thread_log, thread_seq
from agentstream.execution.v3events import is_v2
from agentstream.ids import is_uuid
from agentstream.protocol import RESULT_MODE, V2_MODE, v2_position, v2_seq
from agentstream.storage.base import TERMINAL, Filter, NotFound

router = APIRouter(route_class=JsonRoute)

SETTLE_SECONDS = 30.0  # how long a run stored as ended may take to close its log
CHANNELS = frozenset(
    ["values", "updates", "messages", "tools", "lifecycle", "input", "checkpoints", "tasks",
     "custom"]
)  # fmt: skip


def valid_channel(channel: Any) -> bool:
    return isinstance(channel, str) and (
        channel in CHANNELS or (channel.startswith("custom:") and len(channel) > 7)
    )


class Subscription:
    """Which events a connection wants: channels, namespace prefixes and a depth below them."""

    def __init__(self, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise ApiError(400, "channels must be a non-empty list")
        for channel in channels:
            if not valid_channel(channel):
                raise ApiError(400, f"unknown channel: {channel!r}")
        self.channels = frozenset(channels)
        namespaces = params.get("namespaces")
        if namespaces is not None and not (
            isinstance(namespaces, list)
            and all(isinstance(n, list) and all(isinstance(s, str) for s in n) for n in namespaces)
        ):
            raise ApiError(400, "namespaces must be a list of lists of strings")
        self.namespaces: list[list[str]] | None = namespaces or None
        depth = params.get("depth")
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool)):
            raise ApiError(400, "depth must be an integer")
        self.depth: int | None = depth
        self._seen: dict[str, bool] = {}

    def matches(self, name: str) -> bool:
        """`name` is the log item's: the channel, then the namespace, joined by "|"."""
        known = self._seen.get(name)
        if known is None:
            known = self._match(name)
            if len(self._seen) < 4096:  # a run has few names: its channels times its namespaces
                self._seen[name] = known
        return known

    def _match(self, name: str) -> bool:
        channel, *namespace = name.split("|")
        if channel not in self.channels and not (
            channel.startswith("custom:") and "custom" in self.channels
        ):
            return False
        if self.namespaces is None:
            return True
        return any(self._within(namespace, prefix) for prefix in self.namespaces)

    def _within(self, namespace: Sequence[str], prefix: Sequence[str]) -> bool:
        if len(prefix) > len(namespace):
            return False
        for want, seg in zip(prefix, namespace, strict=False):
            if want != seg and (":" in want or seg.partition(":")[0] != want):
                return False
        return self.depth is None or len(namespace) - len(prefix) <= self.depth


def _method(channel: str) -> bytes:
    if channel.startswith("custom:"):
        return b"custom"
    return b"input.requested" if channel == "input" else channel.encode()


# One envelope as the tape gives it: its seq (0 for an error), its method, its JSON. The SSE
# route frames it; the WebSocket sends the JSON as one text frame.
Out = tuple[int, bytes, bytes]


def _event(seq: int, event_id: str, name: str, params: bytes) -> Out:
    method = _method(name.partition("|")[0])
    head = b'{"type":"event","event_id":"%s","seq":%d,"method":"%s","params":' % (
        event_id.encode(),
        seq,
        method,
    )
    return seq, method, head + params + b"}"


def _error(error: str, message: str, meta: dict[str, Any] | None = None) -> Out:
    body: dict[str, Any] = {"type": "error", "id": None, "error": error, "message": message}
    if meta is not None:
        body["meta"] = meta
    return 0, b"error", serde.dumps(body)


def sse(batch: Sequence[Out]) -> bytes:
    return b"".join(
        b"event: %s\r\ndata: %s\r\nid: %d\r\n\r\n" % (method, data, seq)
        if seq
        else b"event: %s\r\ndata: %s\r\n\r\n" % (method, data)
        for seq, method, data in batch
    )


async def sse_frames(batches: AsyncIterator[list[Out]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        if batch:
            yield sse(batch)


def resume_gap(requested: int, oldest: int) -> Out:
    return _error(
        "resume_gap",
        f"events after seq {requested} are no longer kept; the oldest kept is {oldest}",
        {"since": requested, "oldest_seq": oldest},
    )


class ThreadTape:
    """Reads a thread's runs in order, from a seq on, then follows new runs.

    It yields after each read of a log, an empty batch if nothing read matched, and `through`
    is then the seq it has read through: a reader of several tapes can order their events."""

    def __init__(
        self, c: ApiContext, thread_id: str, sub: Subscription, check: Filter | None
    ) -> None:
        self.c = c
        self.thread_id = thread_id
        self.sub = sub
        self.check = check  # the caller's filter, while the thread did not exist yet
        self.through = 0

    async def batches(self, since: int | None) -> AsyncIterator[list[Out]]:
        latest = await thread_seq(self.c.storage, self.c.bus, self.thread_id)
        if since is None:  # from the thread's latest run: the one a client just started
            run_seq, after = latest, 0
            since = v2_seq(max(run_seq - 1, 0), 0)
        else:
            run_seq, after = v2_position(since)
        start = max(run_seq - 1, 0)
        self.through = max(since, v2_seq(start + 1, 0))
        yield []
        while True:
            try:
                async for batch in self.c.bus.subscribe(thread_log(self.thread_id), start):
                    for entry in batch:
                        start = entry.seq
                        if not entry.data:
                            continue  # the place of a run deleted since
                        if not await self._visible():
                            return
                        run_after = after if entry.seq == run_seq else 0
                        async for chunk in self._run(entry.seq, entry.data.decode(), run_after):
                            yield chunk
                        self.through = v2_seq(entry.seq + 1, 0)
                        yield []
                return
            except EventsEvicted as exc:
                self.through = v2_seq(exc.first_kept, 0)
                yield [resume_gap(since, v2_seq(exc.first_kept, 1))]
                start, after = exc.first_kept - 1, 0
            except BusUnavailable as exc:
                yield [_error("unavailable", f"{exc}. Reconnect with since later.")]
                return

    async def _visible(self) -> bool:
        if self.check is None:
            return True
        try:
            await self.c.storage.get_thread(self.thread_id, filters=self.check)
        except NotFound:
            return False  # created since by someone this caller may not see
        self.check = None
        return True

    async def _run(self, run_seq: int, run_id: str, after: int) -> AsyncIterator[list[Out]]:
        base = v2_seq(run_seq, 0)
        pos = after
        ended = root_ended = False
        wait = False  # first what the log holds: a finished run's log may have expired
        limit: float | None = None
        while not ended:
            try:
                async with asyncio.timeout(limit):
                    async for batch in self.c.bus.subscribe(run_id, pos, wait=wait):
                        chunk: list[Out] = []
                        for e in batch:
                            pos = e.seq
                            if e.mode == RESULT_MODE:
                                ended = True
                                if not root_ended and (end := await self._end(run_id, e, base)):
                                    chunk.append(end)
                            elif e.mode == V2_MODE:
                                root_ended = root_ended or _is_root_end(e)
                                if self.sub.matches(e.name):
                                    chunk.append(
                                        _event(base + e.seq, f"{run_id}:{e.seq}", e.name, e.data)
                                    )
                        self.through = base + pos
                        yield chunk
            except EventsEvicted as exc:
                gap = resume_gap(base + pos, base + exc.first_kept)
                pos = exc.first_kept - 1
                self.through = base + pos
                yield [gap]
                continue
            except TimeoutError:
                return  # its worker stopped between storing the end and publishing it
            if ended or wait:
                return
            if await self._finished(run_id):
                if pos == after and await self.c.bus.last_seq(run_id) < max(after, 1):
                    # Finished, and its log is gone: what it said is lost.
                    yield [resume_gap(base + after, v2_seq(run_seq + 1, 1))]
                    return
                # Stored as ended, and its log still there: a v2 run's worker stores its status
                # before it publishes the terminal event and closes the log, so wait for those.
                limit = SETTLE_SECONDS
            wait = True

    async def _end(self, run_id: str, result: Event, base: int) -> Out | None:
        """The root terminal of a v2 run that ended without one (cancelled while pending, or
        abandoned by its worker), made from its result, at the result's seq: every reader gets
        the same one, once. None if the run had its own (before where this reader started)."""
        if not self.sub.matches("lifecycle"):
            return None
        try:
            async for batch in self.c.bus.subscribe(run_id, max(result.seq - 256, 0), wait=False):
                if any(e.mode == V2_MODE and _is_root_end(e) for e in batch):
                    return None
            run = await self.c.storage.get_run(self.thread_id, run_id)
        except (EventsEvicted, NotFound):
            return None
        if not is_v2(run["kwargs"]):
            return None
        try:
            graph = (await self.c.storage.get_assistant(run["assistant_id"]))["graph_id"]
        except NotFound:
            graph = ""  # its assistant deleted since
        outcome = serde.loads(result.data)
        status, error = outcome.get("status"), outcome.get("error") or {}
        data: dict[str, Any] = {"event": "failed", "graph_name": graph, "run_id": run_id}
        if status == "success":
            data["event"] = "interrupted" if outcome.get("interrupts") else "completed"
        else:
            data["error"] = error.get("message") or ("cancelled" if status != "error" else "")
        params = serde.dumps({"namespace": [], "timestamp": int(time.time() * 1000), "data": data})
        return _event(base + result.seq, f"{run_id}:{result.seq}", "lifecycle", params)

    async def _finished(self, run_id: str) -> bool:
        try:
            run = await self.c.storage.get_run(self.thread_id, run_id)
        except NotFound:
            return True  # rolled back or deleted
        return run["status"] in TERMINAL


def _is_root_end(e: Event) -> bool:
    if e.name != "lifecycle":  # a root lifecycle event's name has no namespace after it
        return False
    return serde.loads(e.data)["data"].get("event") in ("completed", "failed", "interrupted")


def parse_since(since: Any) -> int | None:
    if since is None or since == "":
        return None
    if isinstance(since, bool):
        raise ApiError(400, "since must be an integer seq")
    try:
        return max(int(since), 0)
    except (TypeError, ValueError):
        raise ApiError(400, "since must be an integer seq") from None


async def authorize_read(c: ApiContext, request: Request, thread_id: str) -> Filter | None:
    """Whether the caller may read the thread's events: NotFound if not. A thread not
    created yet is accepted; the filter returned is checked again when its first run comes."""
    filters = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
    if filters is None:
        return None
    try:
        await c.storage.get_thread(thread_id, filters=filters)
        return None
    except NotFound:
        try:
            await c.storage.get_thread(thread_id)
        except NotFound:
            return filters
    raise NotFound("thread", thread_id)  # another caller's


async def open_tape(
    c: ApiContext, request: Request, thread_id: str, sub: Subscription
) -> ThreadTape:
    """The caller's tape of the thread, once the caller may read it (NotFound if not)."""
    return ThreadTape(c, thread_id, sub, await authorize_read(c, request, thread_id))


@router.post("/threads/{thread_id}/stream/events")
async def stream_events(thread_id: str, request: Request, c: ApiContext = Depends(ctx)) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JsonResponse({"detail": "Invalid JSON body"}, status_code=400)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if not is_uuid(thread_id):
        raise ApiError(422, "Invalid thread ID: must be a UUID")
    sub = Subscription(body)
    since = body.get("since")
    since = parse_since(request.headers.get("last-event-id") if since is None else since)
    tape = await open_tape(c, request, thread_id, sub)
    return EventStreamResponse(
        sse_frames(tape.batches(since)),
        headers={},
        heartbeat_seconds=c.settings.heartbeat_seconds,
    )
