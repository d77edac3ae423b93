"""Responses: JSON through our encoder, SSE event streams, and /wait's held-back JSON."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentstream import metrics, serde

HEARTBEAT = b": heartbeat\r\n\r\n"

SSE_HEADERS = {
    "cache-control": "no-store",
    "x-accel-buffering": "no",
    "content-type": "text/event-stream; charset=utf-8",
}


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return serde.dumps(content)


def _raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# The streams this process is writing, so a graceful stop can cut them (see abort_streams).
_LIVE: set[_Stream] = set()


def live_streams() -> int:
    return len(_LIVE)


def abort_streams() -> int:
    """Cuts every open SSE stream without its closing chunk, so clients see a broken stream and
    reconnect with Last-Event-ID (to another API process, or to this one restarted), rather
    than an end they would take for the run's. Their runs go on; on_disconnect does not run."""
    for stream in list(_LIVE):
        stream.abort()
    return len(_LIVE)


class EventStreamResponse(Response):
    """Sends headers at once, then frames as they come, heartbeats on a fixed timer, and stops
    when the body ends or the client goes away (then `on_disconnect` runs).

    Plain asyncio, one helper task per stream (the disconnect listener): the body is written
    from the request's own task, and a heartbeat task exists only while a heartbeat is being
    written. (An AnyIO task group of three tasks cost about a tenth of the server's CPU with
    200 short streams at once.)
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str],
        heartbeat_seconds: float,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.extra_headers = {**headers, **SSE_HEADERS}
        self.heartbeat_seconds = heartbeat_seconds
        self.on_disconnect = on_disconnect
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        if streaming is None:  # pragma: no cover - ASGI servers always run us in a task
            raise RuntimeError("EventStreamResponse must run in a task")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _raw_headers(self.extra_headers),
            }
        )
        stream = _Stream(streaming, send, self.heartbeat_seconds)
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        listener.add_done_callback(stream.listener_done)
        stream.arm()
        _LIVE.add(stream)
        written = 0.0  # when the last chunk of events was written
        try:
            async for chunk in self.body_iterator:
                await stream.write(chunk)
                written = time.perf_counter()
        except OSError:
            stream.gone = True
        except asyncio.CancelledError:
            # Our own cancel (the client went away) ends the stream; anyone else's goes on up.
            if not stream.gone or streaming.uncancel() > 0:
                stream.stop(listener)
                raise
        finally:
            _LIVE.discard(stream)
        stream.stop(listener)
        await _close(self.body_iterator)
        if stream.aborted:
            return  # the response stays incomplete: the server closes the connection
        if stream.gone:
            if self.on_disconnect is not None:
                # Shielded: the cancel-on-disconnect must happen even if we are cancelled now.
                await asyncio.shield(self.on_disconnect())
            return
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if written:  # how long a client waited for the end after the last event
                metrics.STREAM_CLOSE.observe(time.perf_counter() - written)


class _Stream:
    """One SSE response's writes (frames and heartbeats, never interleaved) and its hang-up."""

    def __init__(self, task: asyncio.Task[Any], send: Send, heartbeat_seconds: float) -> None:
        self.task = task
        self.send = send
        self.heartbeat_seconds = heartbeat_seconds
        self.gone = False
        self.done = False
        self.aborted = False
        self.lock = asyncio.Lock()
        self.timer: asyncio.TimerHandle | None = None
        self.beats: set[asyncio.Task[None]] = set()

    async def write(self, chunk: bytes) -> None:
        async with self.lock:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    def hang_up(self) -> None:
        """The client went away (or a write to it failed): stop the body where it waits."""
        if not self.gone and not self.done:
            self.gone = True
            self.task.cancel()

    def abort(self) -> None:
        if not self.gone and not self.done:
            self.aborted = True
            self.hang_up()

    def listener_done(self, listener: asyncio.Future[None]) -> None:
        if not listener.cancelled() and listener.exception() is None:
            self.hang_up()

    def arm(self) -> None:
        if self.heartbeat_seconds > 0 and not self.done:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.heartbeat_seconds, self._beat)

    def _beat(self) -> None:
        beat = asyncio.ensure_future(self._heartbeat())
        self.beats.add(beat)
        beat.add_done_callback(self.beats.discard)
        self.arm()

    async def _heartbeat(self) -> None:
        try:
            await self.write(HEARTBEAT)
        except OSError:
            self.hang_up()

    def stop(self, listener: asyncio.Future[None]) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        listener.cancel()
        for beat in list(self.beats):
            beat.cancel()


async def _close(iterator: AsyncIterator[bytes]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class HeldJsonResponse(Response):
    """/wait and /join: the status line goes out with the first byte; a newline every few
    seconds keeps proxies from timing out while the run goes on."""

    def __init__(
        self,
        result: Callable[[], Awaitable[Any]],
        *,
        headers: Mapping[str, str],
        keepalive_seconds: float,
    ) -> None:
        self.result = result
        self.status_code = 200
        self.extra_headers = {**headers, "content-type": "application/json"}
        self.keepalive_seconds = keepalive_seconds
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.ensure_future(self.result())
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        started = False
        try:
            while not task.done():
                await asyncio.wait(
                    {task, listener},
                    timeout=self.keepalive_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if listener.done():
                    return
                if not task.done():
                    if not started:
                        await self._start(send)
                        started = True
                    await send({"type": "http.response.body", "body": b"\n", "more_body": True})
            body = serde.dumps(task.result())
            if not started:
                await self._start(send)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except OSError:
            return
        finally:
            for pending in (task, listener):
                pending.cancel()

    async def _start(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": _raw_headers(self.extra_headers),
            }
        )
