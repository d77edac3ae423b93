"""The long-term memory store beside the checkpointer: LangGraph's own BaseStore on SQLite
(embedded) or PostgreSQL (distributed), with semantic search and the TTL sweeper.

The same store object is bound to every graph (nodes see it as `store`, `runtime.store` and
`get_store()`) and answers the /store routes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite
from langgraph.store.base import BaseStore, IndexConfig, TTLConfig

log = logging.getLogger("agentstream.store")

# Session advisory lock for the store's migrations; beside postgres.py's keys ("agentstr" + 1,
# + 2), never equal to them.
_STORE_SETUP_LOCK = 0x6167_656E_7473_7472 + 16


@dataclass(frozen=True)
class StoreOptions:
    """`store` in langgraph.json, with `index.embed` already made callable."""

    index: IndexConfig | None = None
    ttl: TTLConfig | None = None


def _sqlite_module() -> Any:
    """A sqlite3 that can load sqlite-vec: the standard library's when it was built with
    extension loading, else pysqlite3 (the Python of many distributions was not)."""
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import pysqlite3.dbapi2 as module  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return module


def vector_search_on_sqlite() -> bool:
    return _sqlite_module() is not None


@asynccontextmanager
async def sqlite_store(path: str, options: StoreOptions) -> AsyncIterator[BaseStore]:
    """AsyncSqliteStore in its own file beside the embedded database, on its own connection:
    a store batch that reads and then writes could otherwise fail at once (SQLITE_BUSY) when
    a run commits in between."""
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    module = _sqlite_module() if options.index else sqlite3
    if module is None:
        raise RuntimeError(
            "store.index needs SQLite extension loading (sqlite-vec); this Python's sqlite3 "
            "has none: pip install pysqlite3-binary"
        )

    def connect() -> sqlite3.Connection:
        conn: sqlite3.Connection = module.connect(
            path, isolation_level=None, check_same_thread=False
        )
        return conn

    index: Any = options.index
    if index and "fields" in index:
        # langgraph-checkpoint-sqlite 3.1 reads the paths to embed from `text_fields`, not
        # `fields` as its docs and the PostgreSQL store do; without this it embeds whole values.
        index = {**index, "text_fields": index["fields"]}
    conn = aiosqlite.Connection(connect, 64)
    await conn
    try:
        if path != ":memory:":
            await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=10000")
        store = AsyncSqliteStore(conn, index=index, ttl=options.ttl)
        await store.setup()
        async with swept(store, options.ttl):
            yield store
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_store(pool: Any, options: StoreOptions) -> AsyncIterator[BaseStore]:
    """AsyncPostgresStore on the storage's connection pool (each batch takes a connection of
    its own, so concurrent runs never queue behind one lock); pgvector for semantic search."""
    from langgraph.store.postgres.aio import AsyncPostgresStore

    store = AsyncPostgresStore(pool, index=options.index, ttl=options.ttl)  # type: ignore[arg-type]
    await _setup_once(pool, store)
    async with swept(store, options.ttl):
        yield store


async def _setup_once(pool: Any, store: Any) -> None:
    # The store's migrations are not safe to run twice at once and build indexes CONCURRENTLY
    # (which waits for every open transaction), so processes take turns by polling a session
    # lock, never by blocking inside a transaction.
    async with pool.connection() as conn:
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_STORE_SETUP_LOCK,))
            row = await cur.fetchone()
            if row is not None and row["ok"]:
                break
            await asyncio.sleep(0.05)
        try:
            await store.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_STORE_SETUP_LOCK,))


@asynccontextmanager
async def swept(store: Any, ttl: TTLConfig | None) -> AsyncIterator[None]:
    """Expired items are deleted every `sweep_interval_minutes` while the store is open."""
    interval = (ttl or {}).get("sweep_interval_minutes")
    if not ttl or not interval or not hasattr(store, "start_ttl_sweeper"):
        yield
        return
    await store.start_ttl_sweeper(interval)
    try:
        yield
    finally:
        await store.stop_ttl_sweeper(timeout=5)
