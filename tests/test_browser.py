"""A real frontend against a real server: a React page on LangChain's `useStream`
(@langchain/langgraph-sdk/react), served from another origin, in headless Chromium (Debian's,
driven by playwright-core; tests/browser/). No CORS settings: a default server must work with
it, as LangGraph's does (issue 11)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.helpers import npm_built

BROWSER = Path(__file__).resolve().parent / "browser"


@pytest.fixture(scope="session")
def page_bundle() -> Path:
    """The page, built with esbuild from tests/browser/src (npm installs the pinned packages)."""
    npm = shutil.which("npm")
    assert npm is not None, "the browser tests need node and npm"
    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "the browser tests need Debian's chromium (scripts/test.sh)"
    npm_built(BROWSER, npm)
    return BROWSER / "dist" / "use_stream.js"


@pytest.fixture(scope="session")
def page_origin(page_bundle: Path) -> Iterator[str]:
    """tests/browser served by a static server of its own: another origin than the API's."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(BROWSER))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    # localhost, not 127.0.0.1: another host as well as another port.
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def chat(page_origin: str, api: str, *texts: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, str(BROWSER / "chat.mjs"), f"{page_origin}/index.html?api={api}", *texts],
        cwd=BROWSER,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_use_stream_page_on_another_origin_chats_with_a_default_server(
    server: ServerProcess, page_origin: str
) -> None:
    result = chat(page_origin, server.url, "hello", "again")
    assert result["error"] == ""
    assert result["failures"] == []
    assert result["messages"] == [
        ["human", "hello"], ["ai", "echo: hello"], ["ai", "bye"],
        ["human", "again"], ["ai", "echo: again"],
    ]  # fmt: skip
