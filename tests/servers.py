"""Real servers for the tests and the benchmarks: `agentstream dev`, `serve` and `worker`
processes on free loopback ports, and a distributed cluster of them on PostgreSQL and Redis.

Plain helpers, no pytest: tests/conftest.py wraps them in fixtures, benchmarks/harness.py
pins them to a core.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "langgraph.json"
ADMIN_URI = os.environ.get(
    "AGENTSTREAM_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URI = os.environ.get("AGENTSTREAM_TEST_REDIS_URI", "redis://127.0.0.1:6379/0")


@dataclass(eq=False)
class ServerProcess:
    url: str
    proc: subprocess.Popen[str]
    database: Path
    output: list[str] = field(default_factory=list)

    drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        LIVE.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipe()

    def kill(self) -> None:
        LIVE.discard(self)
        self.proc.kill()
        self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.drain is not None:
            self.drain.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# The server processes running now: a failed test's report shows the end of their logs.
LIVE: set[ServerProcess] = set()


def start_server(
    database: Path | None,
    *,
    config: Path = EXAMPLES,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    command: str = "dev",
    cpus: set[int] | None = None,
    cwd: Path = ROOT,
) -> ServerProcess:
    """`dev` and `serve` print the URL they listen on; `worker` prints when it is ready. With
    `cpus`, the process is pinned to them from its first instruction (its threads too). `cwd`
    is first on the server's path: the checkout whose `agentstream` it runs."""
    cmd = [sys.executable, "-m", "agentstream", command, "--config", str(config)]
    if command != "worker":
        cmd += ["--port", "0"]
    if database is not None:
        cmd += ["--database", str(database)]
    cmd += list(extra_args)
    preexec: Callable[[], None] | None = None
    if cpus is not None:
        pinned = set(cpus)

        def preexec() -> None:
            os.sched_setaffinity(0, pinned)

    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        # A stopped test server hands its runs back within a second unless a test says otherwise.
        env={**os.environ, "AGENTSTREAM_SHUTDOWN_GRACE_SECONDS": "1", **(env or {})},
        preexec_fn=preexec,
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
        proc.wait(10)
        raise RuntimeError(f"{command} did not start:\n" + "".join(output))
    server = ServerProcess(url, proc, database or Path(), output)
    LIVE.add(server)
    # Keep draining the log so the process never blocks on a full pipe.
    stdout = proc.stdout
    server.drain = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
    server.drain.start()
    if command != "worker":
        wait_ready(url)
    return server


def wait_ready(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(url + "/ok").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} never answered /ok")


@dataclass
class Cluster:
    apis: list[ServerProcess]
    workers: list[ServerProcess]
    database_uri: str

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_uri) as conn:
            return list(conn.execute(sql, params).fetchall())


@contextmanager
def running_cluster(
    config: Path = EXAMPLES,
    apis: int = 2,
    workers: int = 2,
    env: dict[str, str] | None = None,
    admin_uri: str = ADMIN_URI,
    dev: int = 0,
) -> Iterator[Cluster]:
    """API and worker processes on a fresh PostgreSQL database and the shared Redis; fails
    (never skips) when either service is missing. `env` adds to (or overrides) every process's
    environment. `dev` more processes run both (`agentstream dev`), listed among the APIs."""
    name = f"agentstream_dist_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_uri, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database_uri = admin_uri.rsplit("/", 1)[0] + f"/{name}"
    env = {
        "DATABASE_URI": database_uri,
        "REDIS_URI": REDIS_URI,
        "AGENTSTREAM_LEASE_SECONDS": "2",
        # Each process's pool grows to 20 under load, and keeps what it opened for ten idle
        # minutes: with two test processes each holding clusters, the suite reached 97 of
        # PostgreSQL's default 100 connections, and once ran out ("too many clients").
        "LANGGRAPH_POSTGRES_POOL_MAX_SIZE": "8",
        **(env or {}),
    }
    started: list[ServerProcess] = []
    try:
        # All at once: each process sets the schema up under a lock and makes the default
        # assistants if missing, and a Python process's start is mostly its imports.
        commands = ["worker"] * workers + ["serve"] * apis + ["dev"] * dev
        with ThreadPoolExecutor(len(commands)) as pool:
            starting = [
                pool.submit(start_server, None, config=config, command=command, env=env)
                for command in commands
            ]
            for future in starting:
                with contextlib.suppress(Exception):  # re-raised below, once all are known
                    started.append(future.result())
        for future in starting:
            future.result()  # the first that did not start fails the test
        cluster = Cluster(started[workers:], started[:workers], database_uri)
        yield cluster
        started += cluster.workers  # a test may have replaced a worker it killed
    finally:
        for proc in started:
            proc.stop()
        with psycopg.connect(admin_uri, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def serving(
    kind: str,
    config: Path,
    database: Path,
    *,
    env: dict[str, str] | None = None,
    apis: int = 1,
    workers: int = 1,
) -> Iterator[list[str]]:
    """The API URLs of one deployment of `config`: an `agentstream dev` on SQLite at
    `database` ("embedded"), or API and worker processes on PostgreSQL and Redis."""
    if kind == "embedded":
        proc = start_server(database, config=config, env=env)
        try:
            yield [proc.url]
        finally:
            proc.stop()
        return
    with running_cluster(config=config, apis=apis, workers=workers, env=env) as cluster:
        yield [p.url for p in cluster.apis]
