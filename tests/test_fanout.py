"""Many readers on one run, and readers too slow to keep up: nobody loses or slows others."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentstream.execution.executor import YIELD_EVERY
from tests.conftest import ServerProcess

JOINERS = 50
TICKS = 600


async def _ticks_from(client: LangGraphClient, thread_id: str, run_id: str) -> list[int]:
    ticks: list[int] = []
    async for part in client.runs.join_stream(thread_id, run_id, stream_mode="custom"):
        if part.event == "custom":
            ticks.append(part.data["tick"])
    return ticks


async def test_fifty_joiners_at_random_moments_get_exact_suffixes(server: ServerProcess) -> None:
    client = get_client(url=server.url)
    try:
        thread = await client.threads.create()
        t = thread["thread_id"]
        run = await client.runs.create(
            t, "ticker", input={"n": TICKS, "delay": 0.005}, stream_mode=["custom"]
        )
        # All join in the first third: two thirds of the run (2 s) are left for the last
        # joiner's request to arrive, however busy the machine, before the run has ended.
        join_at = sorted(random.sample(range(TICKS // 3), JOINERS))
        joiners: list[tuple[int, asyncio.Task[list[int]]]] = []
        # A pacer follows the run and starts each joiner once a chosen tick has gone by.
        async for part in client.runs.join_stream(t, run["run_id"], stream_mode="custom"):
            if part.event != "custom":
                continue
            while join_at and part.data["tick"] >= join_at[0]:
                task = asyncio.create_task(_ticks_from(client, t, run["run_id"]))
                joiners.append((join_at.pop(0), task))
            if not join_at:
                break
        results = await asyncio.wait_for(asyncio.gather(*(task for _, task in joiners)), 90)
    finally:
        await client.http.client.aclose()
    assert len(results) == JOINERS
    for (joined_after, _), ticks in zip(joiners, results, strict=True):
        assert ticks, "every joiner receives the rest of the run"
        assert ticks[0] > joined_after, "no replay of what came before the join"
        assert ticks == list(range(ticks[0], TICKS)), "contiguous, ordered, no duplicates"


def _raw_stream_request(server: ServerProcess, path: str) -> socket.socket:
    """A reader that connects and then reads nothing, with a tiny receive window."""
    url = urlparse(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.hostname, url.port))
    # Connection: close, so that the end of the response is the end of the connection (kept
    # alive, _read_all waited out the server's keep-alive timeout: 75 s of the suite's time).
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n"
        "Connection: close\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_slow_reader_is_cut_off_with_a_reason_and_never_slows_the_run(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(env={"AGENTSTREAM_EVENT_LOG_MAX_EVENTS": "500"})
    client = get_client(url=server.url)
    try:
        thread = await client.threads.create()
        t = thread["thread_id"]
        # ~8,000 message chunks of about 1 KB: far more than socket buffers can hide.
        config: dict[str, Any] = {"configurable": {"repeat": 4000, "delay": 0.0002}}
        run = await client.runs.create(
            t,
            "agent",
            input={"messages": [{"role": "user", "content": "hi there"}]},
            stream_mode=["messages-tuple"],
            config=config,
            # Both readers are there before the first event: the run makes about 10 events a
            # millisecond, and a fast reader that took 50 ms to connect found its start evicted.
            after_seconds=1,
        )
        path = f"/threads/{t}/runs/{run['run_id']}/stream"
        slow = await asyncio.to_thread(_raw_stream_request, server, path)
        fast_ids: list[int] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            async with http.stream("GET", path, headers={"Last-Event-ID": "0"}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        fast_ids.append(int(line[4:]))
        # The run finished while the slow reader read nothing at all.
        final = await client.runs.get(t, run["run_id"])
        assert final["status"] == "success"
        assert fast_ids == list(range(1, len(fast_ids) + 1)) and len(fast_ids) > 8000
        raw = await asyncio.to_thread(_read_all, slow)
        slow.close()
    finally:
        await client.http.client.aclose()
    assert b"event: error" in raw and b"EventsEvicted" in raw, "cut off with a clear reason"
    tail = raw[raw.rindex(b"event: error") :]
    assert b"Read the thread state" in tail
    kept_after = fast_ids[-1] - 400  # well inside the 500 events the log keeps
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        resumed = await http.get(path, headers={"Last-Event-ID": str(kept_after)})
    ids = [int(x[4:]) for x in resumed.text.splitlines() if x.startswith("id: ")]
    assert ids == list(range(kept_after + 1, fast_ids[-1] + 1)), "resume by id still works"


async def test_a_burst_longer_than_the_log_reaches_a_reader_there_from_the_start(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A node that writes 20,000 events without awaiting: the executor drains them from
    LangGraph's buffer in one go. A reader attached before the run got none of them and an
    EventsEvicted error (the log keeps 4,000 here) until the executor handed the loop over
    every YIELD_EVERY events (benchmarks.scale, one run of many events, burst)."""
    assert YIELD_EVERY * 2 < 4000
    server = server_factory(env={"AGENTSTREAM_EVENT_LOG_MAX_EVENTS": "4000"})
    client = get_client(url=server.url)
    ticks = 20_000
    try:
        thread = await client.threads.create()
        t = thread["thread_id"]
        run = await client.runs.create(
            t, "ticker", input={"n": ticks, "delay": 0.0}, stream_mode=["custom"], after_seconds=1
        )
        got = await asyncio.wait_for(_ticks_from(client, t, run["run_id"]), 60)
        state = await client.runs.join(t, run["run_id"])
    finally:
        await client.http.client.aclose()
    assert got == list(range(ticks))
    assert state["count"] == ticks
