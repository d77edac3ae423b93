"""An idle keep-alive connection stays open longer than clients keep theirs (httpx, so the
Python SDK, 5 s), so a client never reuses one the server is closing: at uvicorn's 5 s, a
request sent as the server closed the connection got a reset instead of an answer. The time is
a setting (AGENTSTREAM_KEEP_ALIVE_SECONDS); both deployments' API processes take it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import ServerProcess, running_cluster, start_server

CLIENT_KEEPS = 5.0  # httpx's keep-alive expiry: what the Python SDK and RemoteGraph use
SHORT = {"AGENTSTREAM_KEEP_ALIVE_SECONDS": "1"}


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 response's status line (its headers and body read past)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def _idle(url: str, idle: float) -> tuple[bool, list[bytes]]:
    """A request, then `idle` seconds with nothing sent: whether the server closed the
    connection meanwhile, and the status lines of the request and (if still open) a second
    one on the same connection."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    request = b"GET /ok HTTP/1.1\r\nhost: test\r\n\r\n"
    try:
        writer.write(request)
        statuses = [await _answer(reader)]
        try:
            closed = await asyncio.wait_for(reader.read(1), idle) == b""
        except TimeoutError:
            closed = False
        if not closed:
            writer.write(request)
            statuses.append(await _answer(reader))
        return closed, statuses
    finally:
        writer.close()


def _api(stack: contextlib.ExitStack, deployment: str, db: Path, env: dict[str, str]) -> str:
    if deployment == "embedded":
        proc: ServerProcess = start_server(db, env=env)
        stack.callback(proc.stop)
        return proc.url
    return stack.enter_context(running_cluster(apis=1, workers=0, env=env)).apis[0].url


@pytest.mark.parametrize("deployment", ["embedded", "distributed"])
async def test_an_idle_connection_outlives_the_clients_keep_alive(
    deployment: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        default = _api(stack, deployment, tmp_path / "default.sqlite", {})
        short = _api(stack, deployment, tmp_path / "short.sqlite", SHORT)
        (kept, answered), (cut, before) = await asyncio.gather(
            _idle(default, CLIENT_KEEPS + 1), _idle(short, 10.0)
        )
    # Past the client's own expiry the connection is still open, and answers again.
    assert not kept
    assert answered == [b"HTTP/1.1 200 OK"] * 2
    # With the setting at one second, the server closes it well within ten.
    assert cut
    assert before == [b"HTTP/1.1 200 OK"]
