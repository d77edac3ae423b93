"""The SDK's own reconnect: a proxy cuts the first connection mid-stream; the official client
reconnects to the Location header with Last-Event-ID by itself, and the user's loop sees the
run's whole stream, nothing lost, nothing repeated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from langgraph_sdk import get_client

from tests.conftest import ServerProcess

N = 30


class CuttingProxy:
    """Forwards loopback TCP to the server; the first connection is cut once the server has
    sent `cut_after` custom frames, every later one passes untouched."""

    def __init__(self, target: str, cut_after: int) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cut = self.connections == 1
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        up = asyncio.create_task(self._pipe(reader, upstream_writer, cut=False))
        down = asyncio.create_task(self._pipe(upstream_reader, writer, cut=cut))
        self._tasks |= {up, down}
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        # Closing is enough: the sockets go with the transports, nobody waits on them.
        writer.close()
        upstream_writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, cut: bool
    ) -> None:
        seen = b""
        while data := await reader.read(65536):
            if cut:
                seen += data
                if seen.count(b"event: custom") >= self.cut_after:
                    # Forward up to the end of the last whole frame, then drop the socket.
                    end = seen.rfind(b"\r\n\r\n") + 4
                    already = len(seen) - len(data)
                    writer.write(data[: max(0, end - already)])
                    await writer.drain()
                    self.cuts += 1
                    writer.transport.abort()
                    return
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[tuple[CuttingProxy, str]]:
    p = CuttingProxy(server.url, cut_after=N // 3)
    url = await p.start()
    yield p, url
    await p.aclose()


async def test_sdk_reconnects_by_itself_and_the_stream_is_complete(
    proxy: tuple[CuttingProxy, str],
) -> None:
    cutter, url = proxy
    client = get_client(url=url)
    try:
        parts = [
            part
            async for part in client.runs.stream(
                None,
                "ticker",
                input={"n": N, "delay": 0.02},
                stream_mode=["custom", "values"],
            )
        ]
    finally:
        await client.http.client.aclose()
    assert cutter.cuts == 1 and cutter.connections >= 2, "the stream was cut and reopened"
    events = [p.event for p in parts]
    assert events.count("metadata") == 1, "the reconnect replays nothing already seen"
    ticks = [p.data["tick"] for p in parts if p.event == "custom"]
    assert ticks == list(range(N)), "every tick exactly once, in order, across the cut"
    assert parts[-1].event == "values" and parts[-1].data["count"] == N


async def test_sdk_join_stream_resumes_with_last_event_id_after_a_cut(
    server: ServerProcess, proxy: tuple[CuttingProxy, str]
) -> None:
    cutter, url = proxy
    direct = get_client(url=server.url)
    client = get_client(url=url)
    try:
        thread = await direct.threads.create()
        run = await direct.runs.create(
            thread["thread_id"], "ticker", input={"n": N, "delay": 0.02}, stream_mode="custom"
        )
        # From the first event on, so the whole run is there to compare with.
        parts = [
            part
            async for part in client.runs.join_stream(
                thread["thread_id"], run["run_id"], stream_mode="custom", last_event_id="-1"
            )
        ]
    finally:
        await client.http.client.aclose()
        await direct.http.client.aclose()
    assert cutter.cuts == 1
    ticks = [p.data["tick"] for p in parts if p.event == "custom"]
    assert ticks == list(range(N))


async def test_issue_11_a_stateless_stream_rejoined_without_an_id_replays_from_its_start(
    server: ServerProcess,
) -> None:
    # The SDK's reconnect after a cut before the first event: no Last-Event-ID to send.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = {"assistant_id": "ticker", "input": {"n": 5}, "stream_mode": ["custom"]}
        run = (await http.post("/runs", json=body)).json()
        response = await http.get(f"/runs/{run['run_id']}/stream")
    assert response.status_code == 200
    lines = response.text.splitlines()
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1))
    assert lines[0] == "event: metadata"
    ticks = [line for line in lines if line.startswith('data: {"tick"')]
    assert len(ticks) == 5
