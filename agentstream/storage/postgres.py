"""The distributed backend: the run store over PostgreSQL, through a psycopg connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection, AsyncCursor, OperationalError
from psycopg.pq import ExecStatus
from psycopg.rows import DictRow, TupleRow, dict_row, tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from agentstream import metrics, serde
from agentstream.storage.dialect import Verb
from agentstream.storage.pgfilters import jsonb
from agentstream.storage.pgsaver import LoopSaver
from agentstream.storage.queue import ENDS_CONNECTIONS, Row
from agentstream.storage.sql_pgverbs import ENDED_CHANNEL, QUEUED_CHANNEL
from agentstream.storage.sql_postgres import (
    DIALECT,
    FUNCTIONS,
    MIGRATE_LOCK,
    MIGRATIONS,
    SAVER_SETUP_LOCK,
    SCHEMA_VERSION,
)
from agentstream.storage.store import RunStore

log = logging.getLogger("agentstream.storage")

T = TypeVar("T")
Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

# Of the ENDS_CONNECTIONS, how many a process keeps open when idle: a deployment's processes
# each hold theirs whether or not they run anything (a test run holds several deployments).
ENDS_HELD = 1


def _json(value: Any) -> Any:
    return None if value is None else jsonb(value)


def _same(value: Any) -> Any:
    # psycopg hands JSON columns back decoded (by serde, see _cursor) and timestamps as datetimes.
    return value


class PostgresConnector:
    def __init__(self, uri: str, *, pool_min: int, pool_max: int) -> None:
        self.uri = uri
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: Pool | None = None
        self._apart: Pool | None = None

    json = staticmethod(_json)
    load = staticmethod(_same)
    ts = staticmethod(_same)
    load_ts = staticmethod(_same)

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        pool = self._new_pool(self.pool_min, self.pool_max)
        await pool.open(wait=True)
        self._pool = pool
        # The ends of runs, apart (Connector.write): under load every connection of the pool
        # can be busy with the checkpoint writes of the process's other runs, and a run's end
        # waited behind them while its stream stayed open (a threaded run's close after its
        # last event, 50 clients, serve + worker: p99 30-47 ms before, 15-31 after). One
        # opened at once (in the background), so that no early end waits for a connect; the
        # rest once ends wait for them, kept while they are used: an idle process holds no
        # more connections than it needs.
        self._apart = self._new_pool(ENDS_HELD, ENDS_CONNECTIONS)
        await self._apart.open()
        await self._migrate()
        await self._setup_saver()

    def _new_pool(self, least: int, most: int) -> Pool:
        # Autocommit: our own transactions are explicit, and the checkpoint saver shares the
        # pool (its setup builds indexes CONCURRENTLY, which no transaction may wrap; it also
        # wants dict rows, which our cursors do without).
        return AsyncConnectionPool(
            self.uri,
            min_size=least,
            max_size=most,
            open=False,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure,
            check=check_idle_connection,
        )

    async def _migrate(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            # Many processes may start at once: the first migrates, the rest wait and see it done.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            await conn.execute(SCHEMA_VERSION)
            cur = await conn.execute("SELECT max(version) AS v FROM schema_version")
            row = await cur.fetchone()
            current = (row["v"] if row else None) or 0
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > current:
                    await conn.execute(script)
                    await conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))
            for definition in FUNCTIONS:
                await conn.execute(definition)

    async def _setup_saver(self) -> None:
        # The saver's own migrations are not safe to run twice at once, and build indexes
        # CONCURRENTLY, which waits for every open transaction: a session that blocked on a
        # lock would deadlock with it, so the others poll for the lock instead.
        async with self.pool.connection() as conn:
            while True:
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s) AS ok", (SAVER_SETUP_LOCK,)
                )
                row = await cur.fetchone()
                if row is not None and row["ok"]:
                    break
                await asyncio.sleep(0.05)
            try:
                await AsyncPostgresSaver(conn).setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SAVER_SETUP_LOCK,))

    async def close(self) -> None:
        for pool in (self._apart, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._apart = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("storage is not set up")
        return self._pool

    def pool_stats(self) -> tuple[int, int, int]:
        """(max, size, idle) of the connection pool, for /metrics."""
        stats = self.pool.get_stats()
        return self.pool_max, stats.get("pool_size", 0), stats.get("pool_available", 0)

    @asynccontextmanager
    async def queued_notices(self, on_queued: Callable[[], None]) -> AsyncIterator[None]:
        """LISTENs, on a connection of its own, to what agentstream_create_run notifies when it
        queues a run: a worker hears of it at the create's commit, from the database, instead
        of from the API process a round trip to Redis later."""
        # Lost (a restart, a failover), creates meanwhile wake nobody through it, so once
        # listening again it looks for work (on_queued() at every start). The lease timeout
        # still bounds the wait.
        listen = self._listen(QUEUED_CHANNEL, lambda _: on_queued(), on_queued, "queued runs")
        async with _listening(listen, "agentstream-queued"):
            yield

    @asynccontextmanager
    async def ended_notices(self, on_ended: Callable[[str], None]) -> AsyncIterator[None]:
        """LISTENs, on a connection of its own, to the notices of runs' ends (finish_run's
        `notice`): told at the end's commit, by the database, instead of by the run's worker a
        round trip to Redis after it. Notices missed while reconnecting are not asked for
        again: each run's log tells its end anyway."""
        listen = self._listen(ENDED_CHANNEL, on_ended, lambda: None, "runs' ends")
        async with _listening(listen, "agentstream-ended"):
            yield

    async def _listen(
        self, channel: str, on_notice: Callable[[str], None], on_start: Callable[[], None],
        what: str,
    ) -> None:  # fmt: skip
        while True:
            try:
                async with await AsyncConnection.connect(self.uri, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {channel}")
                    on_start()
                    async for notice in conn.notifies():
                        on_notice(notice.payload)
            except Exception as exc:
                log.warning("listening for %s failed (%s); again in 1 s", what, exc)
            await asyncio.sleep(1.0)

    @asynccontextmanager
    async def checkpointer(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        # One saver per run: a saver serialises its queries behind its own lock, so sharing one
        # would queue every run of the process behind it. Bound to the pool, it holds a
        # connection only while a query runs, so long runs never starve the pool.
        saver = LoopSaver(self.pool)
        try:
            yield saver
        except BaseException:
            try:
                await saver.flush()
            except Exception as exc:  # what the run raised says more
                log.warning("a run's last checkpoint writes were not stored: %r", exc)
            raise
        await saver.flush()

    # --- running verbs -----------------------------------------------------------------------
    async def write(self, verb: Verb[T], *, single: bool = False, apart: bool = False) -> T:
        if single:  # autocommit: the statement is its own transaction
            pool = self._apart if apart and self._apart is not None else self.pool
            async with pool.connection() as conn:
                return await _drive(conn, verb, single=True)
        async with self.pool.connection() as conn, conn.transaction():
            return await _drive(conn, verb)

    async def read(self, verb: Verb[T]) -> T:
        async with self.pool.connection() as conn:
            return await _drive(conn, verb)

    async def get(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        async with self.pool.connection() as conn, _cursor(conn) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()


@asynccontextmanager
async def _cursor(conn: AsyncConnection[DictRow]) -> AsyncIterator[AsyncCursor[TupleRow]]:
    async with conn.cursor(row_factory=tuple_row) as cur:
        set_json_loads(serde.loads, cur)
        yield cur


async def _drive(conn: AsyncConnection[DictRow], verb: Verb[T], single: bool = False) -> T:
    """Run a verb's statements one after the other, an await each (with single, only one: a
    verb said to be one statement that yields a second is a bug, never run half outside a
    transaction)."""
    async with _cursor(conn) as cur:
        result: Any = None
        sent = 0
        try:
            while True:
                sql, params = verb.send(result)
                sent += 1
                if single and sent > 1:
                    raise RuntimeError(f"a verb of one statement sent another: {sql[:80]!r}")
                await cur.execute(sql, params)
                result = (await cur.fetchall() if _has_rows(cur) else [], cur.rowcount)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _has_rows(cur: AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (a SELECT, a RETURNING): what `cur.description`
    says, without building its Column objects (a sixtieth of the API's CPU at 200 runs at
    once, a create returning thirteen columns)."""
    result = cur.pgresult
    return result is not None and result.status == ExecStatus.TUPLES_OK


@asynccontextmanager
async def _listening(listen: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Runs a listener (PostgresConnector._listen) while entered."""
    listener = asyncio.create_task(listen, name=name)
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def check_idle_connection(conn: AsyncConnection[Any]) -> None:
    """The pool's check on every checkout, one poll(2) with no wait: an idle connection has
    nothing to read unless the server closed it (a restart, a failover), and such a one is
    discarded here instead of failing the request that would have used it. (The pool's own
    check, a round trip to the server, cost more than this per run.)"""
    if conn.closed or conn.broken:
        raise OperationalError("connection closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        await conn.close()  # so the pool discards it rather than taking it back
        raise OperationalError("the server closed this idle connection")


class _CountedCursor(AsyncCursor[Any]):
    """Counts the statements it sends (metrics.POSTGRES_STATEMENTS): every cursor of the pool's
    connections is one, the checkpointer's too."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        metrics.POSTGRES_STATEMENTS.inc()
        return await super().execute(query, params, **kwargs)

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        rows = list(params_seq)  # a statement a row, for PostgreSQL as for psycopg
        metrics.POSTGRES_STATEMENTS.inc(len(rows))
        await super().executemany(query, rows, **kwargs)


async def _configure(conn: AsyncConnection[DictRow]) -> None:
    conn.cursor_factory = _CountedCursor
    # Timestamps come back as UTC datetimes whatever the server's time zone.
    await conn.execute("SET TIME ZONE 'UTC'")


class PostgresStorage(RunStore):
    def __init__(self, uri: str, *, pool_min: int = 2, pool_max: int = 20) -> None:
        self.connector = PostgresConnector(uri, pool_min=pool_min, pool_max=pool_max)
        super().__init__(self.connector, DIALECT)
        self.uri = uri

    @property
    def pool(self) -> Pool:
        """The connection pool, which the long-term memory store shares (memstore.py)."""
        return self.connector.pool

    def pool_stats(self) -> tuple[int, int, int]:
        """(max, size, idle) of the connection pool, for /metrics."""
        return self.connector.pool_stats()
