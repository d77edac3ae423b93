"""Two ways to talk to a server: the official `langgraph_sdk` client and raw HTTP/1.1.

Both yield `(event name, decoded data)` pairs, so every scenario runs unchanged on either.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, cast

import httpx
import orjson
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamMode

# Wide enough that 200 concurrent streams never wait for a pooled connection on the client side.
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
_TIMEOUT = httpx.Timeout(connect=10, read=300, write=300, pool=60)

Part = tuple[str, Any]


class BenchClient(Protocol):
    name: str

    def stream(
        self,
        assistant_id: str,
        input: Any,
        stream_mode: Sequence[str],
        config: dict[str, Any] | None = None,
        thread_id: str | None = None,
    ) -> AsyncIterator[Part]:
        """A streaming run: stateless (`POST /runs/stream`) or on a thread."""
        ...

    async def create_thread(self) -> str: ...

    async def create_run(
        self, thread_id: str, assistant_id: str, input: Any, stream_mode: Sequence[str]
    ) -> str:
        """A background run on a thread, queued behind any run already there; its id."""
        ...

    def join(self, thread_id: str, run_id: str) -> AsyncIterator[Part]:
        """`GET /threads/{thread_id}/runs/{run_id}/stream`."""
        ...

    async def aclose(self) -> None: ...


class SdkClient:
    """The official Python client, as an application would use it, over a few httpx pools.

    One `LangGraphClient` per `SHARDS`-th of the streams: httpcore's pool scans all of its
    connections for every request, so 200 streams through one pool would measure that scan
    (the client's core saturates long before the server's). Each shard is get_client() with a
    wider pool: its default (100 connections, 5 s pool timeout) would fail on the client side.
    """

    name = "sdk"
    SHARDS = 16

    def __init__(self, url: str) -> None:
        self.clients = [_sdk(url) for _ in range(self.SHARDS)]
        self._next = 0

    @property
    def client(self) -> LangGraphClient:
        self._next = (self._next + 1) % len(self.clients)
        return self.clients[self._next]

    async def stream(
        self,
        assistant_id: str,
        input: Any,
        stream_mode: Sequence[str],
        config: dict[str, Any] | None = None,
        thread_id: str | None = None,
    ) -> AsyncIterator[Part]:
        parts = self.client.runs.stream(
            thread_id,  # type: ignore[arg-type]  # None: stateless, as the SDK's overload says
            assistant_id,
            input=input,
            stream_mode=_modes(stream_mode),
            config=config,  # type: ignore[arg-type]
        )
        async for part in parts:
            yield part.event, part.data

    async def create_thread(self) -> str:
        thread = await self.client.threads.create()
        return str(thread["thread_id"])

    async def create_run(
        self, thread_id: str, assistant_id: str, input: Any, stream_mode: Sequence[str]
    ) -> str:
        run = await self.client.runs.create(
            thread_id,
            assistant_id,
            input=input,
            stream_mode=_modes(stream_mode),
            multitask_strategy="enqueue",
        )
        return str(run["run_id"])

    async def join(self, thread_id: str, run_id: str) -> AsyncIterator[Part]:
        async for part in self.client.runs.join_stream(thread_id, run_id):
            yield part.event, part.data

    async def aclose(self) -> None:
        for client in self.clients:
            await client.http.client.aclose()


def _sdk(url: str) -> LangGraphClient:
    transport = httpx.AsyncHTTPTransport(retries=5, limits=_LIMITS)
    return LangGraphClient(httpx.AsyncClient(base_url=url, transport=transport, timeout=_TIMEOUT))


class RawClient:
    """HTTP/1.1 on asyncio streams and a minimal SSE parser: what the wire delivers, with as
    little client cost as possible.

    httpx is not used here: its connection pool scans every open connection for each request
    (httpcore `_assign_requests_to_connections`), so at 200 concurrent streams the client, not
    the server, saturates its core. This client keeps idle keep-alive connections on a stack.
    """

    name = "http"
    IDLE_SECONDS = 2.0

    def __init__(self, url: str) -> None:
        parts = httpx.URL(url)
        self.host = parts.host
        self.port = parts.port or 80
        self._idle: list[_Conn] = []

    async def _request(
        self, method: str, path: str, body: Any = None, *, sse: bool = False
    ) -> AsyncIterator[bytes]:
        """Sends one request on an idle or new connection; yields the response body's chunks."""
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            + ("accept: text/event-stream\r\n" if sse else "")
            + "\r\n"
        ).encode()
        conn = await self._connection()
        reusable = False
        try:
            conn.writer.write(head + payload)
            status, length, chunked, keep = await conn.read_head()
            if status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {status}")
            if chunked:
                async for chunk in conn.read_chunked():
                    yield chunk
            else:
                yield await conn.reader.readexactly(length)
            reusable = keep
        finally:
            if reusable:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.writer.close()

    async def _connection(self) -> _Conn:
        # The server closes a connection idle for 5 s (uvicorn's keep-alive timeout); one idle
        # for IDLE_SECONDS is dropped here rather than raced against that close.
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self.IDLE_SECONDS and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return await _Conn.open(self.host, self.port)

    async def stream(
        self,
        assistant_id: str,
        input: Any,
        stream_mode: Sequence[str],
        config: dict[str, Any] | None = None,
        thread_id: str | None = None,
    ) -> AsyncIterator[Part]:
        body: dict[str, Any] = {
            "assistant_id": assistant_id,
            "input": input,
            "stream_mode": list(stream_mode),
        }
        if config is not None:
            body["config"] = config
        path = f"/threads/{thread_id}/runs/stream" if thread_id else "/runs/stream"
        async for part in sse_parts(self._request("POST", path, body, sse=True)):
            yield part

    async def _json(self, method: str, path: str, body: Any) -> Any:
        chunks = [chunk async for chunk in self._request(method, path, body)]
        return orjson.loads(b"".join(chunks))

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any JSON request; its decoded body, None when it has none (a 202, a 204)."""
        data = b"".join([chunk async for chunk in self._request(method, path, body)])
        return orjson.loads(data) if data else None

    async def create_thread(self) -> str:
        return str((await self._json("POST", "/threads", {}))["thread_id"])

    async def create_run(
        self, thread_id: str, assistant_id: str, input: Any, stream_mode: Sequence[str]
    ) -> str:
        body = {
            "assistant_id": assistant_id,
            "input": input,
            "stream_mode": list(stream_mode),
            "multitask_strategy": "enqueue",
        }
        return str((await self._json("POST", f"/threads/{thread_id}/runs", body))["run_id"])

    async def join(self, thread_id: str, run_id: str) -> AsyncIterator[Part]:
        path = f"/threads/{thread_id}/runs/{run_id}/stream"
        async for part in sse_parts(self._request("GET", path, sse=True)):
            yield part

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().writer.close()


class _Conn:
    """One keep-alive HTTP/1.1 connection: response heads, fixed-length and chunked bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> _Conn:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def read_head(self) -> tuple[int, int, bool, bool]:
        """(status, content length, chunked, keep-alive)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked, keep = 0, False, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep = value != b"close"
        return status, length, chunked, keep

    async def read_chunked(self) -> AsyncIterator[bytes]:
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            chunk = await self.reader.readexactly(size + 2)
            yield chunk[:-2]


# A frame as agentstream sends them (CRLFs made LFs): an event line, one data line, an id line.
_FRAME = re.compile(rb"event: ([^\n]*)\ndata: ([^\n]*)\n(?:id: [^\n]*\n)?\n")


async def sse_parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[Part]:
    """Frames separated by a blank line; `event:` and `data:` fields; comments skipped.

    Accepts CRLF and LF line ends (agentstream sends CRLF; other servers may send LF). Where
    every frame a chunk completes is an event line, one data line and at most an id line
    (agentstream's), they are found in one pass in C (_FRAME), each data line decoded alone:
    the client must read a burst faster than a server sends it, or the figure is the client's
    (line by line, 1.1 us an event against the server's 0.9, a 20,000-event burst).
    """
    pending = b""
    names: dict[bytes, str] = {}
    loads = orjson.loads
    async for chunk in chunks:
        data = pending + chunk
        if data.endswith(b"\r"):  # a CRLF may be split across two chunks
            data, held = data[:-1], b"\r"
        else:
            held = b""
        data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            pending = data + held
            continue
        whole, pending = data[: cut + 2], data[cut + 2 :] + held
        found = _FRAME.findall(whole)
        if len(found) == whole.count(b"\n\n"):
            for name, line in found:
                event = names.get(name)
                if event is None:
                    event = names[name] = name.strip().decode()
                yield event, loads(line)
            continue
        for frame in whole.split(b"\n\n")[:-1]:
            part = _parse_frame(frame)
            if part is not None:
                yield part
    tail = pending.replace(b"\r\n", b"\n").strip(b"\n")
    if tail:
        part = _parse_frame(tail)
        if part is not None:
            yield part


def _parse_frame(frame: bytes) -> Part | None:
    event = "message"
    data: list[bytes] = []
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    if not data:
        return None
    return event, orjson.loads(b"\n".join(data))


def _modes(stream_mode: Sequence[str]) -> list[StreamMode]:
    return cast(list[StreamMode], list(stream_mode))


def make_client(kind: str, url: str) -> BenchClient:
    if kind == "sdk":
        return SdkClient(url)
    if kind == "http":
        return RawClient(url)
    raise ValueError(f"unknown client kind {kind!r}")
