"""Responses: JSON through our encoder, SSE event streams, and /wait's held-back JSON."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentstream import serde

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


class EventStreamResponse(Response):
    """Sends headers at once, then frames as they come, heartbeats on a fixed timer, and stops
    when the body ends or the client goes away (then `on_disconnect` runs)."""

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
        lock = anyio.Lock()
        gone = False

        async def write(chunk: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def stream(tg: anyio.abc.TaskGroup) -> None:
            nonlocal gone
            try:
                async for chunk in self.body_iterator:
                    await write(chunk)
            except OSError:
                gone = True
            tg.cancel_scope.cancel()

        async def heartbeat() -> None:
            nonlocal gone
            with contextlib.suppress(OSError):
                while True:
                    await anyio.sleep(self.heartbeat_seconds)
                    await write(HEARTBEAT)
            gone = True

        async def listen(tg: anyio.abc.TaskGroup) -> None:
            nonlocal gone
            await _wait_disconnect(receive)
            gone = True
            tg.cancel_scope.cancel()

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _raw_headers(self.extra_headers),
            }
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream, tg)
            tg.start_soon(heartbeat)
            tg.start_soon(listen, tg)
        await _close(self.body_iterator)
        if gone:
            if self.on_disconnect is not None:
                with anyio.CancelScope(shield=True):
                    await self.on_disconnect()
            return
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


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
