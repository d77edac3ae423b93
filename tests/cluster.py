"""A distributed deployment for tests: API and worker processes on a fresh PostgreSQL
database and the shared Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import EXAMPLES, ServerProcess, start_server

ADMIN_URI = os.environ.get(
    "AGENTSTREAM_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URI = os.environ.get("AGENTSTREAM_TEST_REDIS_URI", "redis://127.0.0.1:6379/0")


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
) -> Iterator[Cluster]:
    """API and worker processes on a fresh PostgreSQL database and the shared Redis; fails
    (never skips) when either service is missing. `env` adds to (or overrides) every process's
    environment."""
    name = f"agentstream_dist_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_uri, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database_uri = admin_uri.rsplit("/", 1)[0] + f"/{name}"
    env = {
        "DATABASE_URI": database_uri,
        "REDIS_URI": REDIS_URI,
        "AGENTSTREAM_LEASE_SECONDS": "2",
        **(env or {}),
    }
    started: list[ServerProcess] = []
    try:
        # Workers first: they create the schema and the default assistants.
        for _ in range(workers):
            started.append(start_server(None, config=config, command="worker", env=env))
        for _ in range(apis):
            started.append(start_server(None, config=config, command="serve", env=env))
        cluster = Cluster(started[workers:], started[:workers], database_uri)
        yield cluster
        started += cluster.workers  # a test may have replaced a worker it killed
    finally:
        for proc in started:
            proc.stop()
        with psycopg.connect(admin_uri, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
