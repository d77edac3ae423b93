"""The store backends in process, one contract for both (storage/memstore.py): SQLite in a
file, PostgreSQL on a pool like the storage's, semantic search and the sweeper; and processes
that set the PostgreSQL store up at the same moment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.store.base import BaseStore
from langgraph.store.postgres.aio import AsyncPostgresStore
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agentstream.storage.memstore import StoreOptions, postgres_store, sqlite_store
from tests.cluster import ADMIN_URI
from tests.store_app.embed import DIMS, embed

OPTIONS = StoreOptions(
    index={"dims": DIMS, "embed": embed, "fields": ["text"]},
    ttl={"refresh_on_read": True},
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"agentstream_store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URI, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URI.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URI, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def pool(uri: str) -> AsyncIterator[Any]:
    # As PostgresStorage makes its pool: autocommit, dict rows.
    async with AsyncConnectionPool(
        uri,
        min_size=1,
        max_size=4,
        open=False,
        connection_class=AsyncConnection,
        kwargs={"autocommit": True, "row_factory": dict_row},
    ) as opened:
        yield opened


@asynccontextmanager
async def backend(kind: str, tmp_path: Path, uri: str) -> AsyncIterator[BaseStore]:
    if kind == "sqlite":
        async with sqlite_store(str(tmp_path / "store.sqlite"), OPTIONS) as store:
            yield store
        return
    async with pool(uri) as shared, postgres_store(shared, OPTIONS) as store:
        yield store


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_each_backend_keeps_searches_and_sweeps(
    kind: str, tmp_path: Path, database: str
) -> None:
    top = uuid.uuid4().hex
    async with backend(kind, tmp_path, database) as store:
        await store.aput((top, "a"), "cats", {"text": "cats purr softly"})
        await store.aput((top, "a"), "rockets", {"text": "rockets fly high"})
        await store.aput((top, "b"), "gone", {"text": "markets rise"}, ttl=60)
        found = await store.asearch((top,), query="rockets fly")
        assert [i.key for i in found][:1] == ["rockets"]
        assert await store.alist_namespaces(prefix=(top,)) == [(top, "a"), (top, "b")]
        assert await store.aget((top, "a"), "cats") is not None
        assert await store.aget((top, "b"), "gone") is not None
        await _expire(store, kind, (top, "b"), "gone")
        assert await store.sweep_ttl() == 1  # type: ignore[attr-defined]
        assert await store.aget((top, "b"), "gone") is None
        assert await store.aget((top, "a"), "cats") is not None


async def _expire(store: Any, kind: str, namespace: tuple[str, ...], key: str) -> None:
    sql = "UPDATE store SET expires_at = '2000-01-01 00:00:00' WHERE prefix = {p} AND key = {p}"
    if kind == "sqlite":
        await store.conn.execute(sql.format(p="?"), (".".join(namespace), key))
        return
    async with store.conn.connection() as conn:
        await conn.execute(sql.format(p="%s"), (".".join(namespace), key))


async def test_processes_that_start_together_set_the_store_up_once() -> None:
    # A fresh database: every migration, pgvector's included, raced by four "processes".
    fresh = f"agentstream_store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URI, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {fresh}")
    uri = ADMIN_URI.rsplit("/", 1)[0] + f"/{fresh}"
    try:

        async def start(n: int) -> None:
            async with pool(uri) as shared:
                opening: AbstractAsyncContextManager[BaseStore] = postgres_store(shared, OPTIONS)
                async with opening as store:
                    await store.aput(("p",), f"k{n}", {"text": f"cats {n}"})

        await asyncio.gather(*(start(n) for n in range(4)))
        with psycopg.connect(uri) as conn:
            keys = conn.execute("SELECT key FROM store ORDER BY key").fetchall()
            versions = conn.execute("SELECT count(*) FROM vector_migrations").fetchone()
        assert [k for (k,) in keys] == ["k0", "k1", "k2", "k3"]
        assert versions is not None and versions[0] == len(AsyncPostgresStore.VECTOR_MIGRATIONS)
    finally:
        with psycopg.connect(ADMIN_URI, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)")
