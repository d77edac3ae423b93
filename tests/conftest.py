"""The fixtures: real servers (tests/servers.py) on both deployments, and clients for them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentstream.app import create_app
from agentstream.settings import Settings

# Test modules import these from here too.
from tests.servers import EXAMPLES, LIVE, ROOT, ServerProcess, running_cluster, start_server
from tests.services import RedisServer

__all__ = ["EXAMPLES", "ROOT", "ServerProcess", "start_server"]


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
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, on its own port: stopped, restarted or paused (CLIENT PAUSE)
    without touching anyone else's."""
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=server.url)
    yield c
    await c.http.client.aclose()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as h:
        yield h


@pytest.fixture(scope="session")
async def app_http(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process tier: one embedded app in the test's own event loop, under its lifespan,
    reached through httpx's ASGI transport. For API-only suites (wording, validation): a
    failure there raises with the server's traceback instead of a status from a subprocess.
    Responses are read whole, so it suits no stream that stays open."""
    database = tmp_path_factory.mktemp("asgi") / "agentstream.sqlite"
    app = create_app(Settings(config=EXAMPLES, database=str(database)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as h:
            yield h


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report ends with the last lines each running server logged: in CI,
    where a hang or a flake happened is otherwise lost with the processes."""
    report = yield
    if report.failed:
        for server in list(LIVE):
            tail = "".join(server.output[-40:])
            report.sections.append((f"log of {server.url} (pid {server.pid})", tail))
    return report
