"""Small helpers several test modules share."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import httpx
import pytest
from langgraph_sdk.schema import StreamPart

from tests.servers import serving


def once_per_run(where: Path, step: Callable[[], None]) -> None:
    """Runs `step` (an npm install or build in `where`) once per test run, in whichever test
    process comes first; under pytest-xdist the others wait for it here, so none of them
    installs into, or rebuilds, a folder another one is installing into or reading. Without
    xdist, once per process."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid {os.getpid()}"
    key = hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:16]
    marker = Path(tempfile.gettempdir()) / f"agentstream-tests-{key}"
    with marker.open("a+") as done:
        fcntl.flock(done, fcntl.LOCK_EX)  # held until closed
        done.seek(0)
        if done.read() == run:
            return
        step()
        done.seek(0)
        done.truncate()
        done.write(run)


def npm_built(where: Path, npm: str) -> None:
    """A page's npm folder (`where`) with its pinned packages installed if missing and its bundle
    built, once per test run (once_per_run)."""

    def build() -> None:
        if not (where / "node_modules" / "playwright-core").is_dir():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=where, check=True, timeout=300
            )
        subprocess.run([npm, "run", "build"], cwd=where, check=True, timeout=120)

    once_per_run(where, build)


def url_on_each_deployment(name: str, config: Path) -> Any:
    """A module-scoped fixture named `name`: the URL of `config` served on each deployment in
    turn (embedded, then API and worker on PostgreSQL and Redis)."""

    @pytest.fixture(scope="module", params=["embedded", "distributed"], name=name)
    def url(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[str]:
        database = tmp_path_factory.mktemp(name) / "agentstream.sqlite"
        with serving(request.param, config, database) as urls:
            yield urls[0]

    return url


def import_file(path: Path, name: str, *, beside: Path) -> ModuleType:
    """Imports a graph file the way a server would: by its path, with `beside` importable for
    the while (the examples import their siblings, fake_model, by plain name, as with
    "dependencies": ["."])."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(beside))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(beside))
    return module


def summary(values: Any) -> list[tuple[str, str]]:
    """A state's messages as (type, content) pairs."""
    return [(m["type"], m["content"]) for m in values["messages"]]


async def new_thread(http: httpx.AsyncClient) -> str:
    response = await http.post("/threads", json={})
    assert response.status_code == 200
    return str(response.json()["thread_id"])


def ticks(parts: list[StreamPart]) -> list[int]:
    """The `ticker` example's ticks among a stream's parts."""
    return [p.data["tick"] for p in parts if p.event == "custom"]


async def read_until(
    stream: AsyncIterator[StreamPart], done: Callable[[list[StreamPart]], bool]
) -> list[StreamPart]:
    """Read a stream until `done` says so, then hang up at once."""
    parts: list[StreamPart] = []
    async with aclosing(cast(AsyncGenerator[StreamPart, None], stream)) as opened:
        async for part in opened:
            parts.append(part)
            if done(parts):
                break
    return parts


def ticked(count: int) -> Callable[[list[StreamPart]], bool]:
    return lambda parts: len(ticks(parts)) >= count
