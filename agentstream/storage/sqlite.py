"""The embedded backend: the run store over one SQLite file, on one writing connection.

The connection is aiosqlite's, shared with LangGraph's checkpoint saver. Its connector batches
the verbs that wait together into one transaction (group commit) and runs the batch on the
event loop's thread while aiosqlite's thread has nothing of the connection's to do (no saver
call in flight), else in one hand-off to that thread, behind the saver's calls. Point reads by
key run on the event loop, on a connection of their own. WAL checkpoints run on aiosqlite's
thread, never in a commit on the loop (`_Tracked`, `SqliteConnector._checkpoint`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agentstream import serde
from agentstream.storage.dialect import Verb
from agentstream.storage.queue import Row, rows
from agentstream.storage.sql_sqlite import DIALECT, MIGRATIONS
from agentstream.storage.store import RunStore

T = TypeVar("T")

# One verb waiting for its turn on the connection: the verb, whether it writes (then it runs
# inside a write transaction), and the future its caller awaits.
_Call = tuple[Verb[Any], bool, "asyncio.Future[Any]"]
# What became of one verb of a batch: (True, result) or (False, exception).
_Outcome = tuple[bool, Any]

# Rows written (the connection's total_changes) between two WAL checkpoints, ours: SQLite's
# own (at 1,000 pages) would run inside a commit, some on the event loop. 200 stateless runs at
# once log about 500 pages in 1,000 rows, checkpointed in 3-7 ms; 50 threaded runs, whose
# checkpoints are larger, 2,200 in 8-9 ms. Every 2,000 rows cost 4 % more of the server's CPU
# a run (stateless), and every 500 5 % more: the log's pages stay in the cache between two.
CHECKPOINT_AFTER = 1000


def _drive(conn: sqlite3.Connection, verb: Verb[T]) -> T:
    """Run a verb's statements one after the other, on the connection's thread."""
    result: Any = None
    try:
        while True:
            sql, params = verb.send(result)
            cursor = conn.execute(sql, params)
            # Only statements that return rows have any to fetch (a fetch costs ~3 us anyway).
            result = (cursor.fetchall() if cursor.description else (), cursor.rowcount)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _run_batch(conn: sqlite3.Connection, calls: list[tuple[Verb[Any], bool]]) -> list[_Outcome]:
    """Run the verbs in order, on the connection's thread, in one hand-off (group commit).

    The writes of a batch share one transaction and one commit; each write runs under its own
    savepoint, so a verb that raises leaves nothing behind and fails alone. Reads after the
    first write see the batch's earlier writes, as they would have one by one. If the commit
    itself fails, every verb of the batch fails with it (none of their writes happened).
    """
    if len(calls) == 1:
        verb, writes = calls[0]
        try:
            return [(True, _in_tx(conn, verb) if writes else _drive(conn, verb))]
        except Exception as exc:
            return [(False, exc)]
    outcomes: list[_Outcome] = []
    in_tx = False
    try:
        for verb, writes in calls:
            if writes and not in_tx:
                conn.execute("BEGIN IMMEDIATE")
                in_tx = True
            if in_tx:
                conn.execute("SAVEPOINT call")
            try:
                outcomes.append((True, _drive(conn, verb)))
            except Exception as exc:
                if in_tx:
                    conn.execute("ROLLBACK TO call")
                outcomes.append((False, exc))
            if in_tx:
                conn.execute("RELEASE call")
        if in_tx:
            conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(False, exc)] * len(calls)
    return outcomes


def _in_tx(conn: sqlite3.Connection, verb: Verb[T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = _drive(conn, verb)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _text(value: Any) -> str | None:
    return None if value is None else serde.dumps(value).decode()


def _load(value: str | None) -> Any:
    return None if value is None else serde.loads(value)


def _checkpoint_now(conn: sqlite3.Connection) -> None:
    """A PASSIVE checkpoint: past nobody's read, blocking no one."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _iso(value: datetime) -> str:
    # orjson writes a UTC datetime exactly as isoformat() does (which formats it printf-style
    # in C: about 15,000 instructions a call, 1.2 us; orjson 0.44 us). Each run stores several.
    if value.tzinfo is UTC:
        return orjson.dumps(value)[1:-1].decode()
    return value.isoformat()


class _Tracked(aiosqlite.Connection):
    """aiosqlite's connection, counting the calls handed to its thread and the calls its thread
    has finished (each count written by one thread only). When they are equal its thread is
    waiting for work, and since every call comes from the event loop's thread (the saver's
    too), the loop may use the connection itself meanwhile. A caller cancelled while its call
    runs does not make them equal early: the thread counts what it finished."""

    handed = 0
    finished = 0

    def idle(self) -> bool:
        return self.handed == self.finished

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self.finished += 1

        self.handed += 1
        return await super()._execute(call)  # type: ignore[no-untyped-call]


def _tracked(path: str) -> _Tracked:
    # Not the thread that made it: the loop's thread uses it too, never at once with the
    # other (see _Tracked).
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    return _Tracked(connect, iter_chunk_size=64)


class SplitSaver(AsyncSqliteSaver):
    """LangGraph's SQLite saver, its reads on a connection of their own. The saver serialises
    every call on its connection behind one lock, so a run's state read (when it ends, or a
    client's GET of a thread's state) waited behind every other run's checkpoint writes: with
    50 threaded runs at once, a stream closed tens of milliseconds after its last event. WAL
    lets the second connection read what the writer committed (the saver writes in autocommit)."""

    def __init__(self, conn: aiosqlite.Connection, reads: AsyncSqliteSaver) -> None:
        super().__init__(conn)
        self.is_setup = True
        self.reads = reads

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.reads.aget_tuple(config)

    def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        return self.reads.alist(config, filter=filter, before=before, limit=limit)


class SqliteConnector:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: _Tracked | None = None
        self._saver: AsyncSqliteSaver | None = None
        self._saver_reads: aiosqlite.Connection | None = None
        self._pending: list[_Call] = []
        self._flusher: asyncio.Future[None] | None = None
        self._checkpointed = 0  # total_changes at the last checkpoint
        self._checkpointing: asyncio.Future[None] | None = None
        # Point reads by key run here, on the event loop's thread: a few microseconds of SQLite
        # instead of a hand-off to aiosqlite's thread and back (about 80 us of CPU each).
        self._reader: sqlite3.Connection | None = None

    def queued_notices(self, on_queued: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """None: one process owns the database, and wakes its own worker."""
        return nullcontext()

    def ended_notices(self, on_ended: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
        """None: one process owns the database, and its runs' streams."""
        return nullcontext()

    json = staticmethod(_text)
    load = staticmethod(_load)
    ts = staticmethod(_iso)
    load_ts = staticmethod(datetime.fromisoformat)

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        memory = self.path == ":memory:"
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = db = _tracked(self.path)
        await db
        # No checkpoint in a commit: a commit may run on the event loop, and a checkpoint of
        # SQLite's default 1,000 pages took about 4 ms here, with its fsync (see _checkpoint).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=10000", "wal_autocheckpoint=0"):  # fmt: skip
            await self._db.execute(f"PRAGMA {pragma}")
        await self._migrate(self._db)
        # One connection writes, ours, for the verbs and the checkpoints alike, never two calls
        # at once (the loop takes a batch only while its thread is idle). A second writing
        # connection (as before) raced ours for SQLite's write lock, and the loser slept in
        # SQLite's busy handler (1, 2, 5, 10... ms): with 50 threaded runs at once, 50 runs/s
        # and a stream closing 27 / 82 ms (p50 / p99) after its last event; with one writer 79
        # runs/s and 11 / 33 ms (A/B, alternating, a loaded machine).
        if not memory:
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=ON")
            self._reader.execute("PRAGMA busy_timeout=1000")
        self._saver = AsyncSqliteSaver(self._db)
        await self._saver.setup()
        if not memory:
            self._saver_reads = await aiosqlite.connect(self.path, isolation_level=None)
            await self._saver_reads.execute("PRAGMA query_only=ON")
            reads = AsyncSqliteSaver(self._saver_reads)
            reads.is_setup = True  # the tables exist: its setup would write
            self._saver = SplitSaver(self._db, reads)

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > current:
                await db.executescript(
                    f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
                )

    async def close(self) -> None:
        if self._checkpointing is not None:
            with suppress(Exception):
                await self._checkpointing
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        opened = (self._saver_reads, self._db)
        for conn in {id(c): c for c in opened if c is not None}.values():
            await conn.close()
        self._db = self._saver = self._saver_reads = None

    @asynccontextmanager
    async def checkpointer(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        if self._saver is None:
            raise RuntimeError("storage is not set up")
        yield self._saver

    # --- running verbs -----------------------------------------------------------------------
    async def write(self, verb: Verb[T], *, single: bool = False, apart: bool = False) -> T:
        # Every write joins a group-committed batch here, one statement or many: one writer,
        # nothing to keep apart.
        return await self._enqueue(verb, True)

    async def read(self, verb: Verb[T]) -> T:
        return await self._enqueue(verb, False)

    async def get(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        """One row by key, read at once on this thread (WAL: it sees every committed write and
        never waits for a writer). Only for reads that touch a row or two, never a scan."""
        if self._reader is None:
            found = await self.read(rows(sql, params))
            return found[0] if found else None
        cursor = self._reader.execute(sql, params)
        try:
            row: Row | None = cursor.fetchone()
            return row
        finally:
            cursor.close()  # ends the read at once: an open read would hold back checkpoints

    async def _enqueue(self, verb: Verb[T], writes: bool) -> T:
        """Verbs are batched: whatever verbs are waiting when the connection frees up go to
        aiosqlite's thread in one hand-off, their writes in one transaction (`_run_batch`).
        With 200 runs at once, one by one cost a thread hand-off and a commit (a dozen WAL
        page writes) per verb; a stateless run makes five."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((verb, writes, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[_Call] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                outcomes = await self._hand_off([(verb, writes) for verb, writes, _ in batch])
                for (*_, future), outcome in zip(batch, outcomes, strict=True):
                    _settle(future, outcome)
                batch = []
                self._checkpoint_if_due()
        except BaseException:
            # Cancelled (the loop is shutting down): nobody may wait forever on a verb.
            for *_, future in batch + self._pending:
                if not future.done():
                    future.set_exception(RuntimeError("storage is closing"))
            self._pending = []
            raise
        finally:
            self._flusher = None

    async def _hand_off(self, calls: list[tuple[Verb[Any], bool]]) -> list[_Outcome]:
        if self._db is None:
            return [(False, RuntimeError("storage is not set up"))] * len(calls)
        db = self._db
        try:
            if db.idle():
                # Its thread is idle: here and now, without two thread switches and a wake-up
                # of the loop (6 % of the server's CPU a run, 200 stateless runs at once).
                return _run_batch(db._conn, calls)
            outcomes: list[_Outcome] = await db._execute(_run_batch, db._conn, calls)
        except Exception as exc:  # the connection is gone, and the verbs with it
            outcomes = [(False, exc)] * len(calls)
        return outcomes

    def _checkpoint_if_due(self) -> None:
        db = self._db
        if db is None or self._checkpointing is not None or self.path == ":memory:":
            return
        try:
            changes = db._conn.total_changes
        except ValueError:  # closed meanwhile
            return
        if changes - self._checkpointed >= CHECKPOINT_AFTER:
            self._checkpointed = changes
            self._checkpointing = asyncio.ensure_future(self._checkpoint(db))

    async def _checkpoint(self, db: _Tracked) -> None:
        """What the WAL holds, copied into the database on aiosqlite's thread; the verbs
        meanwhile wait there behind it, as they did behind a commit's own checkpoint."""
        try:
            # In one call, its row read: a statement left in progress between two calls would
            # keep the loop's next batch from its savepoint and commit.
            await db._execute(_checkpoint_now, db._conn)
        except Exception:  # closed meanwhile; the close checkpoints
            pass
        finally:
            self._checkpointing = None


def _settle(future: asyncio.Future[Any], outcome: _Outcome) -> None:
    if future.done():  # its caller was cancelled; the verb still ran
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class SqliteStorage(RunStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(SqliteConnector(path), DIALECT)
        self.path = str(path)
