"""A batch of WebSocket text messages in one write (api/socket_writes.py): on the protocol our
servers use, a batch goes out in order in one system call; on uvicorn's own protocol (another
server, say) the app sends one message at a time, the same messages."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

from agentstream.api import socket_writes

TEXTS = [f'{{"n":{n},"text":"é{"x" * n}"}}'.encode() for n in range(100)]


WRITES: list[int] = []  # each write's bytes, of every socket served here


class _Counted:
    """A protocol whose transport's writes are counted in WRITES."""

    def connection_made(self, transport: Any) -> None:
        write = transport.write

        def counted(data: bytes) -> None:
            WRITES.append(len(data))
            write(data)

        transport.write = counted
        super().connection_made(transport)  # type: ignore[misc]


class Ours(_Counted, socket_writes.Protocol):
    pass


class Plain(_Counted, WebSocketsSansIOProtocol):
    pass


async def _serve_and_read(ws_protocol: Any) -> tuple[list[str | bytes], bool, int]:
    """What a client reads of TEXTS sent by send_texts, whether the scope offered the
    extension, and how many writes the send took."""
    seen: dict[str, Any] = {}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen["extension"] = socket_writes.EXTENSION in websocket.scope["extensions"]
        before = len(WRITES)
        await socket_writes.send_texts(websocket, TEXTS)
        seen["writes"] = len(WRITES) - before
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, ws=ws_protocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:  # listening already: the handshake waits in the backlog until the server is up
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            received = [message async for message in ws]
    finally:
        server.should_exit = True
        await serving
        sock.close()
    return received, seen["extension"], seen["writes"]


async def test_a_batch_goes_out_in_order_in_one_write() -> None:
    received, extension, writes = await _serve_and_read(Ours)
    assert extension
    assert received == [text.decode() for text in TEXTS]  # text frames, in order
    assert writes == 1


async def test_without_the_extension_each_message_is_sent_alone() -> None:
    received, extension, writes = await _serve_and_read(Plain)
    assert not extension
    assert received == [text.decode() for text in TEXTS]
    assert writes == len(TEXTS)
