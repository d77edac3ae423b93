"""A batch of WebSocket text messages in one write (api/socket_writes.py): on the protocol our
servers use, a batch goes out in order in one system call; on uvicorn's own protocol (another
server, say) the app sends one message at a time, the same messages. And an HTTP connection's
writes of one loop turn go out in one, none held past the turn after."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

from agentstream.api import socket_writes
from agentstream.api.responses import EventStreamResponse

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


# --- an HTTP connection's writes of a loop turn in one (socket_writes.HttpProtocol) ----------

CHUNKS = [b"data: %d\n\n" % n for n in range(3)] + [b"x" * socket_writes.HOLD_AT_MOST, b"end\n"]


class CountedHttp(_Counted, socket_writes.HttpProtocol):
    pass


class PlainHttp(_Counted, HttpToolsProtocol):
    pass


def _turn_app(read: asyncio.Event) -> Any:
    """Headers and CHUNKS (one past the hold's limit among them) in one turn; then, for
    ?after=1, one more chunk in a later turn, once the client has `read` the first ones."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in CHUNKS:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if scope["query_string"] == b"after=1":
            await read.wait()
            await send({"type": "http.response.body", "body": b"later\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _get(protocol: Any, query: str = "") -> tuple[bytes, int]:
    """The body a client reads from _turn_app, and how many writes its socket took."""
    read = asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(_turn_app(read), http=protocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        before = len(WRITES)
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/{query}"
            async with client.stream("GET", url) as response:
                body = b""
                async for part in response.aiter_raw():
                    body += part
                    if body == b"".join(CHUNKS):
                        read.set()  # everything of the first turn came without waiting
        return body, len(WRITES) - before
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def test_an_http_response_of_one_turn_goes_out_in_one_write() -> None:
    body, writes = await _get(CountedHttp)
    assert body == b"".join(CHUNKS)  # in order, the held ones before the one past the limit
    # The headers and the three small frames held; the big one sends them and itself; the
    # last frame and the closing chunk held again.
    assert writes == 2
    plain_body, plain_writes = await _get(PlainHttp)
    assert plain_body == body
    assert plain_writes == len(CHUNKS) + 2  # the headers and the closing chunk too


async def test_what_a_turn_held_goes_out_without_waiting_for_the_next_write() -> None:
    # The app writes "later" only once the client has read all of the first turn's: held
    # until a next write or the end, the first turn's last chunk would never come.
    body, _ = await asyncio.wait_for(_get(CountedHttp, "?after=1"), 30)
    assert body == b"".join(CHUNKS) + b"later\n"


async def test_an_event_streams_first_chunk_goes_out_at_once_and_the_rest_together() -> None:
    """Its headers and first chunk (a run's metadata) are sent at once, not a turn later; the
    chunks after it are held for the turn, so a run's last events go with the closing chunk.
    The body looks at the connection's transport after each chunk is written."""
    seen: dict[str, Any] = {}

    async def body(turn: socket_writes.TurnWrites) -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        seen["after the first"] = turn.held
        yield b"data: second\n\n"
        seen["after the second"] = None if turn.held is None else list(turn.held)
        seen["held"] = turn.held  # what is appended to it later in the turn goes out with it

    async def app(scope: Any, receive: Any, send: Any) -> None:
        flush = socket_writes.flusher(scope)
        assert flush is not None
        turn = flush.__self__  # type: ignore[attr-defined]
        response = EventStreamResponse(body(turn), headers={}, heartbeat_seconds=0)
        await response(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=socket_writes.HttpProtocol, log_level="warning")
    config.lifespan = "off"
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
    finally:
        server.should_exit = True
        await serving
        sock.close()
    assert response.text == "data: first\n\ndata: second\n\n"
    assert seen["after the first"] is None  # nothing held: sent with the headers
    assert seen["after the second"] == [b"e\r\ndata: second\n\n\r\n"]  # a chunk, held
    assert seen["held"] == seen["after the second"] + [b"0\r\n\r\n"]  # with the closing chunk
