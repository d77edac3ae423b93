"""Request size: a body over the limit gets 413 {"detail"} before any route holds it all, and
headers over theirs 431."""

from __future__ import annotations

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream.api.errors import response_for

# A refused connection carries no other request.
_CLOSE = {"connection": "close"}
# Before answering, the rest of a refused body is read and dropped, up to this much and this long:
# a server that closes with an upload still arriving makes the client's TCP stack reset the
# connection, and the client may then see the reset instead of its 413. Past either bound the
# client gets the close.
_DRAIN_BYTES = 4 * 1024 * 1024
_DRAIN_SECONDS = 5.0


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        detail = f"Request body is larger than the limit of {max_bytes} bytes"
        super().__init__(413, detail, headers=_CLOSE)


class HeadersTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        detail = f"Request headers are larger than the limit of {max_bytes} bytes"
        super().__init__(431, detail, headers=_CLOSE)


class BodyLimit:
    """Refuses a declared Content-Length over the limit at once, and counts chunked bodies as
    they arrive, so a client cannot make the server buffer more than `max_bytes`. Refuses
    headers over `max_header_bytes` before anything (auth handlers included) reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_header_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _header_bytes(scope) > self.max_header_bytes:
            await _refuse(scope, receive, send, HeadersTooLarge(self.max_header_bytes))
            return
        declared = _declared_length(scope)
        if declared > self.max_bytes:
            await _drain(receive)
            await _refuse(scope, receive, send, BodyTooLarge(self.max_bytes))
            return
        if declared >= 0:
            # A body of a declared length (the server holds the client to it) or none at all:
            # nothing to count, and the response's messages go straight through.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive)
                    # A route's body reader lets HTTPException through to the error handlers.
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(scope, receive, send, exc)


def _header_bytes(scope: Scope) -> int:
    return sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length; 0 without a body; -1 for a body sent in chunks."""
    length = 0
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1  # the server refuses it before us; count it if it does not
        elif name == b"transfer-encoding":
            return -1
    return length


async def _drain(receive: Receive) -> None:
    dropped = 0
    with anyio.move_on_after(_DRAIN_SECONDS):
        while dropped <= _DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    response = response_for(exc)
    assert response is not None  # an HTTPException always has its answer
    await response(scope, receive, send)
