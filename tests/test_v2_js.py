"""Protocol v2 through the official JS client's `client.threads.stream` (tests/js/v2_stream.mjs)
over SSE and over the WebSocket, on both deployments."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.test_js_sdk import JS, node

__all__ = ["node"]


def _content(message: dict[str, Any]) -> Any:
    # The client hands values back with LangChain's own message classes, serialised.
    return message.get("kwargs", message)["content"]


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_v2_js_threads_stream(node: str, server: ServerProcess, transport: str) -> None:
    # Node 20 has a WebSocket behind a flag; the client uses the global one.
    proc = await asyncio.create_subprocess_exec(
        node, "--experimental-websocket", str(JS / "v2_stream.mjs"), server.url, transport,
        cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    records = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0 and not any("failed" in r for r in records), (
        records,
        stderr.decode()[-2000:],
    )
    first, first_out, second_out, asked, resumed = records
    assert first == {"deltas": [["echo:", " hi", " from", " js"]]}
    assert [_content(m) for m in first_out["output"]["messages"]][-1] == "bye"
    reply = [{"type": "text", "text": "echo: second turn", "index": 0}]
    assert [_content(m) for m in second_out["output"]["messages"]][3:] == ["second turn", reply]
    assert asked == {"asked": {"question": "js?"}}
    assert resumed == {"output": {"question": "js?", "answer": "yes!"}}
