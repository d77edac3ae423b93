"""Two ways to talk to a server: the official `langgraph_sdk` client and raw httpx streaming.

Both yield `(event name, decoded data)` pairs, so every scenario runs unchanged on either.
"""

from __future__ import annotations

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
    ) -> AsyncIterator[Part]:
        """A stateless streaming run (`POST /runs/stream`)."""
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
    """The official Python client, as an application would use it."""

    name = "sdk"

    def __init__(self, url: str) -> None:
        # get_client() with a wider connection pool: its default (100 connections, 5 s pool
        # timeout) would make 200 concurrent streams fail on the client, not on the server.
        transport = httpx.AsyncHTTPTransport(retries=5, limits=_LIMITS)
        http = httpx.AsyncClient(base_url=url, transport=transport, timeout=_TIMEOUT)
        self.client = LangGraphClient(http)

    async def stream(
        self,
        assistant_id: str,
        input: Any,
        stream_mode: Sequence[str],
        config: dict[str, Any] | None = None,
    ) -> AsyncIterator[Part]:
        parts = self.client.runs.stream(
            None,
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
        await self.client.http.client.aclose()


class RawClient:
    """httpx streaming and a minimal SSE parser: what the wire delivers, with little client cost."""

    name = "http"

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, limits=_LIMITS, timeout=_TIMEOUT)

    async def stream(
        self,
        assistant_id: str,
        input: Any,
        stream_mode: Sequence[str],
        config: dict[str, Any] | None = None,
    ) -> AsyncIterator[Part]:
        body: dict[str, Any] = {
            "assistant_id": assistant_id,
            "input": input,
            "stream_mode": list(stream_mode),
        }
        if config is not None:
            body["config"] = config
        headers = {"accept": "text/event-stream"}
        async with self.http.stream("POST", "/runs/stream", json=body, headers=headers) as resp:
            resp.raise_for_status()
            async for part in sse_parts(resp.aiter_bytes()):
                yield part

    async def create_thread(self) -> str:
        resp = await self.http.post("/threads", json={})
        resp.raise_for_status()
        return str(resp.json()["thread_id"])

    async def create_run(
        self, thread_id: str, assistant_id: str, input: Any, stream_mode: Sequence[str]
    ) -> str:
        body = {
            "assistant_id": assistant_id,
            "input": input,
            "stream_mode": list(stream_mode),
            "multitask_strategy": "enqueue",
        }
        resp = await self.http.post(f"/threads/{thread_id}/runs", json=body)
        resp.raise_for_status()
        return str(resp.json()["run_id"])

    async def join(self, thread_id: str, run_id: str) -> AsyncIterator[Part]:
        path = f"/threads/{thread_id}/runs/{run_id}/stream"
        headers = {"accept": "text/event-stream"}
        async with self.http.stream("GET", path, headers=headers) as resp:
            resp.raise_for_status()
            async for part in sse_parts(resp.aiter_bytes()):
                yield part

    async def aclose(self) -> None:
        await self.http.aclose()


async def sse_parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[Part]:
    """Frames separated by a blank line; `event:` and `data:` fields; comments skipped.

    Accepts CRLF and LF line ends (agentstream sends CRLF; other servers may send LF).
    """
    pending = b""
    async for chunk in chunks:
        data = pending + chunk
        if data.endswith(b"\r"):  # a CRLF may be split across two chunks
            data, held = data[:-1], b"\r"
        else:
            held = b""
        data = data.replace(b"\r\n", b"\n")
        frames = data.split(b"\n\n")
        pending = frames.pop() + held
        for frame in frames:
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
