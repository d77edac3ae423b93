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

An HTTP connection's writes of one loop turn go out in one system call too (`HttpProtocol`):
uvloop writes to the socket at each `transport.write`, and an SSE response wrote its headers,
its first frame, each later batch of frames and its closing chunk each in a call of its own,
most of them in the same turn (a short run's headers and metadata; its last events and its
end). Each write to a loopback socket costs the sender the receiver's TCP work too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
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


# Past this much held, what is held goes out at once: held writes stay bounded, and the
# transport's flow control (pausing the protocol at its high-water mark) sees them.
HOLD_AT_MOST = 64 * 1024

# In an HTTP scope served by HttpProtocol: {"flush": a callable sending what is held now}.
FLUSH = "agentstream.http.flush"


class TurnWrites(asyncio.Transport):
    """A transport that holds its writes and sends them in one `writelines` (a single
    `writev` on uvloop) at the start of the loop's next turn: sooner when told to (`flush`),
    before a close or an end of writing, and past HOLD_AT_MOST."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(None)
        self.transport = transport
        self.loop = loop
        self.held: list[bytes | bytearray | memoryview] | None = None
        self.held_size = 0
        self.turn_ends: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.held is not None:
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size >= HOLD_AT_MOST:
                self.flush()
        elif len(data) >= HOLD_AT_MOST or self.transport.is_closing():
            self.transport.write(data)  # nothing gained by holding it, or as a write after close
        elif data:
            self.held, self.held_size = [data], len(data)
            if self.turn_ends is None:
                self.turn_ends = self.loop.call_soon(self._turn_ended)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def _turn_ended(self) -> None:
        self.turn_ends = None
        self.flush()

    def flush(self) -> None:
        held, self.held = self.held, None
        if held is not None and not self.transport.is_closing():  # else the peer is gone
            self.transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.held = None
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        held = self.held_size if self.held is not None else 0
        return self.transport.get_write_buffer_size() + held

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on TurnWrites, which the app may flush (FLUSH in the
    scope). A WebSocket, once the connection is upgraded, writes to the socket itself: its
    protocol sends its own batches."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(TurnWrites(transport, self.loop))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        turn = cast(TurnWrites, self.transport)
        self.scope["extensions"] = {FLUSH: {"flush": turn.flush}}

    def handle_websocket_upgrade(self) -> None:
        turn = cast(TurnWrites, self.transport)
        turn.flush()
        self.transport = turn.transport
        super().handle_websocket_upgrade()


def flusher(scope: Mapping[str, Any]) -> Callable[[], None] | None:
    """FLUSH's callable in an HTTP scope, where the server offers it."""
    offered = scope.get("extensions", {}).get(FLUSH)
    return None if offered is None else cast(Callable[[], None], offered["flush"])
