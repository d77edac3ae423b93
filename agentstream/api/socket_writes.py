"""Several WebSocket text messages in one write: an ASGI extension of ours on uvicorn's sans-I/O
WebSocket protocol.

ASGI sends one message a `websocket.send`, and uvicorn writes each to its socket as it comes: a
v2 subscription's token events went out a system call, an ASGI send through every middleware
and a frame each, 10,900 tokens a second where the same events over SSE (one write a batch)
went at 14,300. The servers `agentstream dev` and `serve` start use `Protocol` below, which
puts EXTENSION in each socket's scope and takes a `websocket.send` carrying EXTENSION (a list
of texts, UTF-8 encoded) as that many text messages, framed in order (compressed, where the
client asked for it, as any other) and written at once. Under another ASGI server or protocol
the scope has no EXTENSION and the app sends one message at a time (`send_texts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

EXTENSION = "agentstream.websocket.send_many"


class Protocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O protocol, which also sends a batch of text messages in one write."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][EXTENSION] = {}

    async def send(self, message: Any) -> None:
        texts = message.get(EXTENSION) if message["type"] == "websocket.send" else None
        if texts is None:
            await super().send(message)
            return
        await self.writable.wait()  # the client's reading behind: wait as a single send does
        if self.disconnected:
            raise ClientDisconnected()
        if self.close_sent:  # as a single send after the close: nothing goes out
            return
        try:
            for text in texts:
                self.conn.send_text(text)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))


async def send_texts(websocket: WebSocket, texts: Sequence[bytes]) -> None:
    """Sends each of `texts` (UTF-8) as a text message, in order: in one write where the
    server's protocol takes EXTENSION, else one send each."""
    if not texts:
        return
    if EXTENSION in websocket.scope.get("extensions", {}):
        await websocket.send({"type": "websocket.send", EXTENSION: texts})
        return
    for text in texts:
        await websocket.send_text(text.decode())
