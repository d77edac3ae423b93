"""An event stream's frames go to the server's own send; its start and its end still pass every
middleware (responses.ServerSend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream.api.responses import EventStreamResponse, ServerSend


class _Watching:
    """A middleware that notes every message its send wrapper sees."""

    def __init__(self, app: ASGIApp, seen: list[Message]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            self.seen.append(message)
            await send(message)

        await self.app(scope, receive, watched)


async def _frames() -> AsyncIterator[bytes]:
    for i in range(3):
        yield b"event: custom\r\ndata: %d\r\n\r\n" % i


async def _stream(scope: Scope, receive: Receive, send: Send) -> None:
    response = EventStreamResponse(_frames(), headers={}, heartbeat_seconds=0)
    await response(scope, receive, send)


async def _serve(app: ASGIApp) -> list[Message]:
    """What the server was sent for one GET, its client staying."""
    sent: list[Message] = []

    async def receive() -> Message:
        await _never()
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await app(scope, receive, send)
    return sent


async def _never() -> None:
    await asyncio.Event().wait()


async def test_frames_pass_no_middleware_but_start_and_end_do() -> None:
    seen: list[Message] = []
    sent = await _serve(ServerSend(_Watching(_stream, seen)))
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies == [b"event: custom\r\ndata: %d\r\n\r\n" % i for i in range(3)] + [b""]
    assert sent[0]["type"] == "http.response.start"
    # The middleware saw the start and the last message, none of the frames.
    assert [m["type"] for m in seen] == ["http.response.start", "http.response.body"]
    assert seen[1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_without_server_send_frames_pass_the_middlewares() -> None:
    seen: list[Message] = []
    sent = await _serve(_Watching(_stream, seen))
    assert len(seen) == len(sent) == 5  # start, three frames, the end: all through the wrapper
