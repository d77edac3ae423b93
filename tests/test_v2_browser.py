"""A React page on @langchain/react's useStream, which speaks only protocol v2, in headless
Chromium (tests/browser/v2.html, driven by tests/browser/v2_chat.mjs), over SSE and over the
WebSocket, on both deployments (issue 13)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil

import pytest

from tests.conftest import ServerProcess
from tests.test_browser import BROWSER, page_bundle, page_origin

__all__ = ["page_bundle", "page_origin"]


def _grows_token_by_token(seen: list[str], final: str) -> bool:
    """Each text shown is a longer prefix of the reply than the one before: nothing repeated,
    nothing out of order."""
    texts = [t for t in seen if t != "bye"]
    return all(final.startswith(t) for t in texts) and all(
        len(a) < len(b) for a, b in itertools.pairwise(texts)
    )


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_v2_use_stream_page(server: ServerProcess, page_origin: str, transport: str) -> None:
    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node, str(BROWSER / "v2_chat.mjs"), page_origin, server.url, transport,
        cwd=BROWSER, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["failures"] == [], result  # its `step` names where it stopped
    # The reply streamed in token by token, then a second turn on the same thread.
    assert len([t for t in result["seen"] if t != "bye"]) >= 3
    assert _grows_token_by_token(result["seen"], "echo: one two three four")
    assert result["turns"] == [
        ["human", "one two three four"], ["ai", "echo: one two three four"], ["ai", "bye"],
        ["human", "again"], ["ai", "echo: again"],
    ]  # fmt: skip
    assert result["error"] == ""
    # A reload mid-reply rejoined the run: every token once, in order, none lost.
    assert result["beforeReload"][-1].startswith("echo: a b")
    assert result["reloaded"] == [
        ["human", "a b c d e f g"], ["ai", "echo: a b c d e f g"], ["ai", "bye"],
    ]  # fmt: skip
    assert _grows_token_by_token(result["seenAfterReload"], "echo: a b c d e f g")
    # An interrupt shown on the page and answered from it.
    assert result["asked"] == {"question": "proceed?"}
    assert result["answer"] == "yes!"
