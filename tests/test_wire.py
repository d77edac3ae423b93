"""The bytes on the socket (PROTOCOL §0, §2): CRLF framing, one-line data, ids, headers, no
`end` frame, heartbeats, and the README's curl commands run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, ServerProcess

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
FRAME = re.compile(rb"event: ([^\r\n]+)\r\ndata: ([^\r\n]*)\r\nid: (\d+)\r\n\r\n")
HEARTBEAT = b": heartbeat\r\n\r\n"


def frames(body: bytes) -> list[tuple[str, Any, int]]:
    """Every frame of a body as (event, data, id); fails on any byte that is not a whole frame
    or a heartbeat, so stray `\\n` line ends, multi-line data or trailers are caught."""
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(body):
        if body.startswith(HEARTBEAT, pos):
            pos += len(HEARTBEAT)
            continue
        match = FRAME.match(body, pos)
        assert match is not None, f"not an SSE frame at byte {pos}: {body[pos : pos + 120]!r}"
        out.append((match[1].decode(), json.loads(match[2]), int(match[3])))
        pos = match.end()
    return out


def _reply(got: list[tuple[str, Any, int]]) -> str:
    """The streamed model reply: the `think` node's message chunks, joined."""
    return "".join(
        data[0]["content"]
        for event, data, _ in got
        if event == "messages" and data[1]["langgraph_node"] == "think"
    )


async def test_stream_frames_are_crlf_one_line_with_increasing_ids_and_no_end(
    http: httpx.AsyncClient,
) -> None:
    body = {
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": "hi there"}]},
        "stream_mode": ["messages-tuple", "updates", "custom"],
    }
    async with http.stream("POST", "/runs/stream", json=body) as response:
        assert response.status_code == 200
        headers = response.headers
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"
    # A stateless run is named without a thread, as the real server names it.
    location = re.fullmatch(rf"/runs/({UUID})/stream", headers["location"])
    assert location is not None, headers["location"]
    assert headers["content-location"] == headers["location"].removesuffix("/stream")

    got = frames(raw)
    events = [event for event, _, _ in got]
    assert events[0] == "metadata"
    assert got[0][1] == {"run_id": location[1], "attempt": 1}
    assert "end" not in events, "the SDKs would hand an `end` frame to user code"
    assert [i for _, _, i in got] == list(range(1, len(got) + 1))
    assert _reply(got) == "echo: hi there"
    assert {"updates", "custom"} <= set(events)
    assert events[-1] == "updates", "the stream closes after the last data event"


async def test_error_frame_carries_the_exception_class_and_its_own_message(
    http: httpx.AsyncClient,
) -> None:
    body = {"assistant_id": "failing", "input": {}, "stream_mode": "updates"}
    async with http.stream("POST", "/runs/stream", json=body) as response:
        assert response.status_code == 200
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    got = frames(raw)
    assert [e for e, _, _ in got] == ["metadata", "updates", "error"]
    assert got[-1][1] == {"error": "ValueError", "message": "boom: intentional failure"}


async def test_idle_streams_send_heartbeat_comments(
    server_factory: Any,
) -> None:
    srv: ServerProcess = server_factory(env={"AGENTSTREAM_HEARTBEAT_SECONDS": "0.05"})
    body = {"assistant_id": "ticker", "input": {"n": 3, "delay": 0.5}, "stream_mode": "custom"}
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=30) as http,
        http.stream("POST", "/runs/stream", json=body) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    # A second between the first and last tick, a heartbeat every 50 ms: many between frames.
    assert raw.count(HEARTBEAT) >= 3
    assert [d for e, d, _ in frames(raw) if e == "custom"] == [{"tick": i} for i in range(3)]


def _readme_curls() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"or curl:\n\n```bash\n(.*?)```", text, re.S)
    assert block is not None, "the README's curl block moved"
    commands = block[1].replace("\\\n", " ").strip().splitlines()
    assert len(commands) == 2 and all(c.startswith("curl ") for c in commands)
    return commands


def _curl(command: str, url: str, **ids: str) -> bytes:
    command = command.replace("http://127.0.0.1:2024", url)
    for name, value in ids.items():
        command = command.replace(f"<{name}>", value)
    done = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=True)
    return done.stdout


def test_readme_curl_commands_work_as_written(server: ServerProcess, tmp_path: Path) -> None:
    stream_cmd, join_cmd = _readme_curls()
    got = frames(_curl(stream_cmd, server.url))
    assert got[0][0] == "metadata"
    assert _reply(got) == "echo: hi"

    # The join command on a finished background run: 200, an empty stream that ends.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        run = http.post(
            f"/threads/{thread_id}/runs", json={"assistant_id": "ticker", "input": {"n": 2}}
        ).json()
        http.get(f"/threads/{thread_id}/runs/{run['run_id']}/join").raise_for_status()
    assert _curl(join_cmd, server.url, thread_id=thread_id, run_id=run["run_id"]) == b""


@pytest.mark.parametrize("mode", ["values", "nonsense"])
async def test_stream_mode_is_checked_before_the_stream_starts(
    http: httpx.AsyncClient, mode: str
) -> None:
    body = {"assistant_id": "ticker", "input": {"n": 1}, "stream_mode": mode}
    response = await http.post("/runs/stream", json=body)
    if mode == "values":
        assert response.status_code == 200
        assert [e for e, _, _ in frames(response.content)] == ["metadata", "values", "values"]
    else:
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/json")
        assert "nonsense" in response.json()["detail"]
