"""Real servers for the tests: `agentstream dev` processes on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "langgraph.json"


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[str]
    database: Path
    output: list[str] = field(default_factory=list)

    drain: threading.Thread | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipe()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.drain is not None:
            self.drain.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(
    database: Path | None,
    *,
    config: Path = EXAMPLES,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    command: str = "dev",
) -> ServerProcess:
    """`dev` and `serve` print the URL they listen on; `worker` prints when it is ready."""
    cmd = [sys.executable, "-m", "agentstream", command, "--config", str(config)]
    if command != "worker":
        cmd += ["--port", "0"]
    if database is not None:
        cmd += ["--database", str(database)]
    cmd += list(extra_args)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A stopped test server hands its runs back within a second unless a test says otherwise.
        env={**os.environ, "AGENTSTREAM_SHUTDOWN_GRACE_SECONDS": "1", **(env or {})},
    )
    assert proc.stdout is not None
    output: list[str] = []
    url = None
    for line in proc.stdout:
        output.append(line)
        if "serving on " in line:
            url = line.split("serving on ", 1)[1].strip()
            break
        if command == "worker" and line.startswith("agentstream: worker "):
            url = line.split()[2]  # the worker id stands where a URL would
            break
    if url is None:
        raise RuntimeError(f"{command} did not start:\n" + "".join(output))
    server = ServerProcess(url, proc, database or Path(), output)
    # Keep draining the log so the process never blocks on a full pipe.
    server.drain = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    server.drain.start()
    if command != "worker":
        _wait_ready(url)
    return server


def _wait_ready(url: str) -> None:
    with httpx.Client(timeout=30) as http:
        for _ in range(300):
            try:
                if http.get(url + "/ok").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.05)
    raise RuntimeError(f"server at {url} never answered /ok")


# The agent example's `finish` update, as LangGraph serialises an AIMessage on the wire.
BYE = {
    "content": "bye",
    "additional_kwargs": {},
    "response_metadata": {},
    "type": "ai",
    "name": None,
    "id": "final-bye",
    "tool_calls": [],
    "invalid_tool_calls": [],
    "usage_metadata": None,
}


def tag() -> dict[str, str]:
    """Metadata no other test's rows carry, so a search sees only this test's."""
    return {"test": uuid.uuid4().hex}


def assert_detail(response: httpx.Response, status: int, detail: str) -> None:
    """An error as LangGraph Server sends it: that status, a JSON `{"detail": ...}`."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": detail}


@pytest.fixture(scope="session", params=["embedded", "distributed"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Every end-to-end test runs twice: on `agentstream dev` with SQLite, and on an API
    process whose runs execute in a separate worker process on PostgreSQL and Redis."""
    if request.param == "embedded":
        proc = start_server(tmp_path_factory.mktemp("db") / "agentstream.sqlite")
        yield proc
        proc.stop()
        return
    from tests.cluster import running_cluster

    with running_cluster(apis=1, workers=1) as cluster:
        yield cluster.apis[0]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def factory(**kwargs: object) -> ServerProcess:
        database = kwargs.pop("database", None) or tmp_path / f"db{len(started)}.sqlite"
        proc = start_server(database, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=server.url)
    yield c
    await c.http.client.aclose()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as h:
        yield h
