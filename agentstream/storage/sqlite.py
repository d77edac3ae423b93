"""The embedded backend: assistants, threads, runs and the run queue in one SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agentstream import serde
from agentstream.storage.base import (
    LATEST_DUE,
    Assistant,
    Conflict,
    Filter,
    IfExists,
    NotFound,
    QueueStats,
    Run,
    RunClaim,
    RunStatus,
    Thread,
    ThreadBusy,
    ThreadStatus,
    UnreadableRun,
    utcnow,
)
from agentstream.storage.sqlfilters import match

T = TypeVar("T")

MIGRATIONS = [
    # 1: the initial schema
    """
    CREATE TABLE IF NOT EXISTS assistants (
        assistant_id TEXT PRIMARY KEY,
        graph_id TEXT NOT NULL,
        config TEXT NOT NULL,
        context TEXT NOT NULL,
        metadata TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS assistant_versions (
        assistant_id TEXT NOT NULL REFERENCES assistants(assistant_id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        graph_id TEXT NOT NULL,
        config TEXT NOT NULL,
        context TEXT NOT NULL,
        metadata TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (assistant_id, version)
    );
    CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        state_updated_at TEXT NOT NULL,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        config TEXT NOT NULL,
        "values" TEXT,
        interrupts TEXT NOT NULL,
        error TEXT
    );
    CREATE TABLE IF NOT EXISTS runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL UNIQUE,
        thread_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        multitask_strategy TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        temporary INTEGER NOT NULL DEFAULT 0,
        auth_user TEXT,
        worker_id TEXT,
        lease_expires_at REAL,
        due_at REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS runs_thread ON runs(thread_id, seq);
    CREATE INDEX IF NOT EXISTS runs_status ON runs(status, seq);
    """,
]

_ASSISTANT_COLS = (
    "assistant_id, graph_id, config, context, metadata, name, description, version, "
    "created_at, updated_at"
)
_THREAD_COLS = (
    'thread_id, created_at, updated_at, state_updated_at, metadata, status, config, "values", '
    "interrupts, error"
)
_RUN_COLS = (
    "run_id, thread_id, assistant_id, metadata, status, kwargs, multitask_strategy, "
    "created_at, updated_at"
)
_SORTABLE = {"created_at", "updated_at", "assistant_id", "thread_id", "graph_id", "name", "status"}


def _j(value: Any) -> str:
    return serde.dumps(value).decode()


def _uj(value: str | None) -> Any:
    return None if value is None else serde.loads(value)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _assistant(row: aiosqlite.Row) -> Assistant:
    return Assistant(
        assistant_id=row[0],
        graph_id=row[1],
        config=_uj(row[2]),
        context=_uj(row[3]),
        metadata=_uj(row[4]),
        name=row[5],
        description=row[6],
        version=row[7],
        created_at=_ts(row[8]),
        updated_at=_ts(row[9]),
    )


def _thread(row: aiosqlite.Row) -> Thread:
    return Thread(
        thread_id=row[0],
        created_at=_ts(row[1]),
        updated_at=_ts(row[2]),
        state_updated_at=_ts(row[3]),
        metadata=_uj(row[4]),
        status=row[5],
        config=_uj(row[6]),
        values=_uj(row[7]),
        interrupts=_uj(row[8]),
        error=_uj(row[9]),
    )


def _run(row: aiosqlite.Row) -> Run:
    return Run(
        run_id=row[0],
        thread_id=row[1],
        assistant_id=row[2],
        metadata=_uj(row[3]),
        status=row[4],
        kwargs=_uj(row[5]),
        multitask_strategy=row[6],
        created_at=_ts(row[7]),
        updated_at=_ts(row[8]),
    )


# The claim's two candidates: the oldest pending run whose thread has nothing running or
# queued before it, and the oldest running run whose lease ran out. Each query walks the status
# index in order and stops at its first match; as one query with an OR, SQLite checked every
# pending run and sorted them, on every claim (quadratic in the queue).
_NEXT_PENDING = (
    "SELECT r.seq, r.attempt FROM runs r WHERE r.status = 'pending' AND r.due_at <= ? AND "
    "NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.seq != r.seq AND "
    "(o.status = 'running' OR (o.status = 'pending' AND o.seq < r.seq))) ORDER BY r.seq LIMIT 1"
)
_NEXT_EXPIRED = (
    "SELECT seq, attempt FROM runs WHERE status = 'running' AND lease_expires_at < ? "
    "ORDER BY seq LIMIT 1"
)


# How many runs wait and run (for /metrics).
_QUEUE_COUNTS = (
    "SELECT status, count(*) FROM runs WHERE status IN ('pending', 'running') GROUP BY status"
)
# Each due pending run: seconds since it fell due, and whether no run of its thread is running.
_PENDING_WAITS = """
SELECT ? - max(r.due_at, (julianday(r.created_at) - 2440587.5) * 86400.0),
    NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.status = 'running')
FROM runs r WHERE r.status = 'pending' AND r.due_at <= ?
"""


def _order(sort_by: str | None, sort_order: str | None, default: str) -> str:
    column = sort_by if sort_by in _SORTABLE else default
    direction = "ASC" if (sort_order or "").lower() == "asc" else "DESC"
    return f"{column} {direction}"


# One storage call waiting for its turn on the connection: fn(connection, *args), whether it
# writes (then it runs inside a write transaction), and the future its caller awaits.
_Call = tuple[Callable[..., Any], tuple[Any, ...], bool, "asyncio.Future[Any]"]
# What became of one call of a batch: (True, result) or (False, exception).
_Outcome = tuple[bool, Any]


def _run_batch(
    conn: sqlite3.Connection, calls: list[tuple[Callable[..., Any], tuple[Any, ...], bool]]
) -> list[_Outcome]:
    """Run the calls in order, on the connection's thread, in one hand-off (group commit).

    The writes of a batch share one transaction and one commit; each write call runs under its
    own savepoint, so a call that raises leaves nothing behind and fails alone. Reads after the
    first write see the batch's earlier writes, as they would have one by one. If the commit
    itself fails, every call of the batch fails with it (none of their writes happened).
    """
    if len(calls) == 1:
        fn, args, writes = calls[0]
        try:
            return [(True, _in_tx(conn, fn, *args) if writes else fn(conn, *args))]
        except Exception as exc:
            return [(False, exc)]
    outcomes: list[_Outcome] = []
    in_tx = False
    try:
        for fn, args, writes in calls:
            if writes and not in_tx:
                conn.execute("BEGIN IMMEDIATE")
                in_tx = True
            if in_tx:
                conn.execute("SAVEPOINT call")
            try:
                outcomes.append((True, fn(conn, *args)))
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


def _in_tx(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _fetchone(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    return conn.execute(sql, params).fetchone()


def _fetchall(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _insert_thread(db: sqlite3.Connection, thread_id: str, metadata: Mapping[str, Any]) -> bool:
    now = utcnow().isoformat()
    cur = db.execute(
        f"INSERT OR IGNORE INTO threads ({_THREAD_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (thread_id, now, now, now, _j(dict(metadata)), "idle", _j({"configurable": {}}),
         None, "{}", None),
    )  # fmt: skip
    return cur.rowcount > 0


def _delete_thread_rows(db: sqlite3.Connection, thread_id: str, *, checkpoints: bool) -> None:
    db.execute("DELETE FROM runs WHERE thread_id = ?", (thread_id,))
    db.execute("DELETE FROM threads WHERE thread_id = ?", (thread_id,))
    if checkpoints:
        # The saver's tables live in the same file: gone in the same transaction. Only for a run
        # that has ended (it writes no more); see delete_thread.
        db.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
        db.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))


Settled = tuple[ThreadStatus, str, str, str | None]


def _settled(
    status: ThreadStatus, values: Any, interrupts: Mapping[str, Any], error: Any
) -> Settled:
    """A thread's new status and cached state, encoded before the trip to the SQLite thread."""
    return status, _j(values), _j(dict(interrupts)), _j(error) if error is not None else None


def _settle_thread(db: sqlite3.Connection, thread_id: str, settled: Settled) -> None:
    # A thread stays busy while another run of it is queued or running.
    status, values, interrupts, error = settled
    now = utcnow().isoformat()
    db.execute(
        "UPDATE threads SET status = CASE WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = ? "
        "AND status IN ('pending','running')) THEN 'busy' ELSE ? END, "
        '"values" = ?, interrupts = ?, error = ?, updated_at = ?, state_updated_at = ? '
        "WHERE thread_id = ?",
        (thread_id, status, values, interrupts, error, now, now, thread_id),
    )


class SqliteStorage:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._saver_conn: aiosqlite.Connection | None = None
        self._saver: AsyncSqliteSaver | None = None
        self._lock = asyncio.Lock()
        self._pending: list[_Call] = []
        self._flusher: asyncio.Future[None] | None = None
        # Point reads by key run here, on the event loop's thread: a few microseconds of SQLite
        # instead of a hand-off to aiosqlite's thread and back (about 80 us of CPU each).
        self._reader: sqlite3.Connection | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def setup(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=10000")
        await self._migrate()
        self._saver_conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self._saver_conn.execute("PRAGMA busy_timeout=10000")
        self._saver = AsyncSqliteSaver(self._saver_conn)
        await self._saver.setup()
        if self.path != ":memory:":  # another connection to ":memory:" is another database
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=ON")
            self._reader.execute("PRAGMA busy_timeout=1000")

    async def _migrate(self) -> None:
        db = self._conn
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > current:
                await db.executescript(
                    f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
                )

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for conn in (self._saver_conn, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._saver_conn = self._saver = None

    @property
    def _checkpoints_shared(self) -> bool:
        """Whether the saver's tables are in our file (not with ":memory:", one per connection)."""
        return self._saver is not None and self.path != ":memory:"

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("storage is not set up")
        return self._db

    @asynccontextmanager
    async def checkpointer(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        if self._saver is None:
            raise RuntimeError("storage is not set up")
        yield self._saver

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._conn
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) on the connection's thread.

        Calls are batched: whatever calls are waiting when the connection frees up go to
        aiosqlite's thread in one hand-off, their writes in one transaction (`_run_batch`).
        With 200 runs at once, one by one cost a thread hand-off and a commit (a dozen WAL
        page writes) per call; a stateless run makes five calls.
        """
        return await self._enqueue(fn, args, False)

    async def _call_tx(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) inside a write transaction, committed before this returns."""
        return await self._enqueue(fn, args, True)

    async def _enqueue(self, fn: Callable[..., T], args: tuple[Any, ...], writes: bool) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, writes, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[_Call] = []
        try:
            while self._pending:
                # The lock between batches, so that a multi-step `_tx()` gets its turn.
                async with self._lock:
                    batch, self._pending = self._pending, []
                    db = self._conn
                    calls = [(fn, args, writes) for fn, args, writes, _ in batch]
                    try:
                        outcomes: list[_Outcome] = await db._execute(  # type: ignore[no-untyped-call]
                            _run_batch, db._conn, calls
                        )
                    except Exception as exc:  # the connection is gone, and the calls with it
                        outcomes = [(False, exc)] * len(batch)
                    for (*_, future), (ok, value) in zip(batch, outcomes, strict=True):
                        if future.done():  # its caller was cancelled; the call still ran
                            continue
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value)
                    batch = []
        except BaseException:
            # Cancelled (the loop is shutting down): nobody may wait forever on a call.
            for *_, future in batch + self._pending:
                if not future.done():
                    future.set_exception(RuntimeError("storage is closing"))
            self._pending = []
            raise
        finally:
            self._flusher = None

    async def _one(self, sql: str, params: Sequence[Any]) -> aiosqlite.Row | None:
        return await self._call(_fetchone, sql, params)

    async def _get(self, sql: str, params: Sequence[Any]) -> Any:
        """One row by key, read at once on this thread (WAL: it sees every committed write and
        never waits for a writer). Only for reads that touch a row or two, never a scan."""
        if self._reader is None:
            return await self._one(sql, params)
        cursor = self._reader.execute(sql, params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()  # ends the read at once: an open read would hold back checkpoints

    async def _all(self, sql: str, params: Sequence[Any]) -> list[aiosqlite.Row]:
        return await self._call(_fetchall, sql, params)

    # --- assistants ------------------------------------------------------------------------
    async def put_assistant(
        self, assistant: Assistant, *, if_exists: IfExists, filters: Filter | None = None
    ) -> Assistant:
        a = assistant
        async with self._tx() as db:
            async with db.execute(
                "SELECT 1 FROM assistants WHERE assistant_id = ?", (a["assistant_id"],)
            ) as cur:
                exists = await cur.fetchone() is not None
            if exists:
                if if_exists == "raise":
                    raise Conflict(f"Assistant {a['assistant_id']} already exists")
            else:
                values = (
                    a["assistant_id"], a["graph_id"], _j(a["config"]), _j(a["context"]),
                    _j(a["metadata"]), a["name"], a["description"], a["version"],
                    a["created_at"].isoformat(), a["updated_at"].isoformat(),
                )  # fmt: skip
                await db.execute(f"INSERT INTO assistants ({_ASSISTANT_COLS}) VALUES "
                                 "(?,?,?,?,?,?,?,?,?,?)", values)  # fmt: skip
                await db.execute(
                    "INSERT INTO assistant_versions (assistant_id, version, graph_id, config, "
                    "context, metadata, name, description, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (values[0], values[7], *values[1:7], values[8]),
                )
        return await self.get_assistant(a["assistant_id"], filters=filters)

    async def get_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> Assistant:
        cond, params = match("metadata", filters)
        row = await self._get(
            f"SELECT {_ASSISTANT_COLS} FROM assistants WHERE assistant_id = ? AND {cond}",
            [assistant_id, *params],
        )
        if row is None:
            raise NotFound(f"Assistant '{assistant_id}' not found")
        return _assistant(row)

    async def search_assistants(
        self,
        *,
        graph_id: str | None,
        name: str | None,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> tuple[list[Assistant], int]:
        where, params = self._assistant_where(graph_id, name, metadata, filters)
        rows = await self._all(
            f"SELECT {_ASSISTANT_COLS} FROM assistants WHERE {where} "
            f"ORDER BY {_order(sort_by, sort_order, 'created_at')} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self._one(f"SELECT COUNT(*) FROM assistants WHERE {where}", params)
        return [_assistant(r) for r in rows], total[0] if total else 0

    @staticmethod
    def _assistant_where(
        graph_id: str | None,
        name: str | None,
        metadata: Mapping[str, Any] | None,
        filters: Filter | None,
    ) -> tuple[str, list[Any]]:
        parts, params = [], []
        for cond, p in (match("metadata", metadata), match("metadata", filters)):
            parts.append(cond)
            params += p
        if graph_id is not None:
            parts.append("graph_id = ?")
            params.append(graph_id)
        if name is not None:
            parts.append("name LIKE ?")
            params.append(f"%{name}%")
        return " AND ".join(parts), params

    async def patch_assistant(
        self, assistant_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Assistant:
        current = await self.get_assistant(assistant_id, filters=filters)
        now = utcnow().isoformat()
        merged: dict[str, Any] = {**current, **{k: v for k, v in changes.items() if v is not None}}
        if "metadata" in changes and changes["metadata"] is not None:
            merged["metadata"] = {**current["metadata"], **changes["metadata"]}
        async with self._tx() as db:
            async with db.execute(
                "SELECT MAX(version) FROM assistant_versions WHERE assistant_id = ?",
                (assistant_id,),
            ) as cur:
                row = await cur.fetchone()
            version = (row[0] if row else 0) + 1
            values = (
                merged["graph_id"], _j(merged["config"]), _j(merged["context"]),
                _j(merged["metadata"]), merged["name"], merged["description"],
            )  # fmt: skip
            await db.execute(
                "INSERT INTO assistant_versions (assistant_id, version, graph_id, config, context,"
                " metadata, name, description, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (assistant_id, version, *values, now),
            )
            await db.execute(
                "UPDATE assistants SET graph_id=?, config=?, context=?, metadata=?, name=?, "
                "description=?, version=?, updated_at=? WHERE assistant_id=?",
                (*values, version, now, assistant_id),
            )
        return await self.get_assistant(assistant_id)

    async def delete_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> None:
        cond, params = match("metadata", filters)
        async with self._tx() as db:
            cur = await db.execute(
                f"DELETE FROM assistants WHERE assistant_id = ? AND {cond}",
                [assistant_id, *params],
            )
            if cur.rowcount == 0:
                raise NotFound(f"Assistant '{assistant_id}' not found")

    async def assistant_versions(
        self,
        assistant_id: str,
        *,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        filters: Filter | None = None,
    ) -> list[dict[str, Any]]:
        await self.get_assistant(assistant_id, filters=filters)
        cond, params = match("metadata", metadata)
        rows = await self._all(
            "SELECT assistant_id, version, graph_id, config, context, metadata, name, "
            f"description, created_at FROM assistant_versions WHERE assistant_id = ? AND {cond} "
            "ORDER BY version DESC LIMIT ? OFFSET ?",
            [assistant_id, *params, limit, offset],
        )
        return [
            {
                "assistant_id": r[0],
                "version": r[1],
                "graph_id": r[2],
                "config": _uj(r[3]),
                "context": _uj(r[4]),
                "metadata": _uj(r[5]),
                "name": r[6],
                "description": r[7],
                "created_at": _ts(r[8]),
            }
            for r in rows
        ]

    async def set_latest_assistant(
        self, assistant_id: str, version: int, *, filters: Filter | None = None
    ) -> Assistant:
        await self.get_assistant(assistant_id, filters=filters)
        async with self._tx() as db:
            async with db.execute(
                "SELECT graph_id, config, context, metadata, name, description "
                "FROM assistant_versions WHERE assistant_id = ? AND version = ?",
                (assistant_id, version),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"Version {version} of assistant '{assistant_id}' not found")
            await db.execute(
                "UPDATE assistants SET graph_id=?, config=?, context=?, metadata=?, name=?, "
                "description=?, version=?, updated_at=? WHERE assistant_id=?",
                (*row, version, utcnow().isoformat(), assistant_id),
            )
        return await self.get_assistant(assistant_id)

    # --- threads ---------------------------------------------------------------------------
    async def create_thread(
        self,
        thread_id: str,
        *,
        metadata: Mapping[str, Any],
        if_exists: IfExists,
        filters: Filter | None = None,
    ) -> Thread:
        inserted = await self._call_tx(_insert_thread, thread_id, metadata)
        if not inserted:
            if if_exists == "raise":
                raise Conflict(f"Thread with ID {thread_id} already exists")
        try:
            return await self.get_thread(thread_id, filters=filters)
        except NotFound:
            # Someone else's thread with this id: the caller may not see it, nor take its id.
            raise Conflict(f"Thread with ID {thread_id} already exists") from None

    async def get_thread(self, thread_id: str, *, filters: Filter | None = None) -> Thread:
        cond, params = match("metadata", filters)
        row = await self._get(
            f"SELECT {_THREAD_COLS} FROM threads WHERE thread_id = ? AND {cond}",
            [thread_id, *params],
        )
        if row is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return _thread(row)

    async def search_threads(
        self,
        *,
        ids: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        values: Mapping[str, Any] | None,
        status: str | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> tuple[list[Thread], int]:
        parts, params = [], []
        for cond, p in (
            match("metadata", metadata),
            match('"values"', values),
            match("metadata", filters),
        ):
            parts.append(cond)
            params += p
        if ids:
            parts.append(f"thread_id IN ({','.join('?' * len(ids))})")
            params += list(ids)
        if status:
            parts.append("status = ?")
            params.append(status)
        where = " AND ".join(parts)
        rows = await self._all(
            f"SELECT {_THREAD_COLS} FROM threads WHERE {where} "
            f"ORDER BY {_order(sort_by, sort_order, 'created_at')} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self._one(f"SELECT COUNT(*) FROM threads WHERE {where}", params)
        return [_thread(r) for r in rows], total[0] if total else 0

    async def patch_thread(
        self, thread_id: str, metadata: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Thread:
        current = await self.get_thread(thread_id, filters=filters)
        async with self._tx() as db:
            await db.execute(
                "UPDATE threads SET metadata = ?, updated_at = ? WHERE thread_id = ?",
                (_j({**current["metadata"], **metadata}), utcnow().isoformat(), thread_id),
            )
        return await self.get_thread(thread_id)

    async def delete_thread(self, thread_id: str, *, filters: Filter | None = None) -> list[str]:
        cond, params = match("metadata", filters)

        def delete(db: sqlite3.Connection) -> list[str]:
            sql = f"SELECT 1 FROM threads WHERE thread_id = ? AND {cond}"
            if db.execute(sql, [thread_id, *params]).fetchone() is None:
                raise NotFound(f"Thread with ID {thread_id} not found")
            inflight = [r[0] for r in db.execute(
                "SELECT run_id FROM runs WHERE thread_id = ? AND status IN ('pending','running')",
                (thread_id,),
            )]  # fmt: skip
            _delete_thread_rows(db, thread_id, checkpoints=False)
            return inflight

        inflight = await self._call_tx(delete)
        # Through the saver, behind its lock: a run still in flight may be writing.
        await self._delete_checkpoints(thread_id)
        return inflight

    async def _delete_checkpoints(self, thread_id: str) -> None:
        if self._saver is not None:
            await self._saver.adelete_thread(thread_id)

    async def copy_thread(
        self, thread_id: str, new_thread_id: str, *, filters: Filter | None = None
    ) -> Thread:
        source = await self.get_thread(thread_id, filters=filters)
        now = utcnow().isoformat()
        async with self._tx() as db:
            await db.execute(
                f"INSERT INTO threads ({_THREAD_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (new_thread_id, now, now, now, _j(source["metadata"]), "idle",
                 _j(source["config"]), _j(source["values"]) if source["values"] is not None
                 else None, _j(source["interrupts"]), None),
            )  # fmt: skip
        await self._copy_checkpoints(thread_id, new_thread_id)
        return await self.get_thread(new_thread_id)

    async def _copy_checkpoints(self, thread_id: str, new_thread_id: str) -> None:
        saver = self._saver
        if saver is None:
            return
        async with saver.lock:
            conn = saver.conn
            for table, cols in (
                ("checkpoints", "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
                 "checkpoint, metadata"),
                ("writes", "checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value"),
            ):  # fmt: skip
                await conn.execute(
                    f"INSERT INTO {table} (thread_id, {cols}) "
                    f"SELECT ?, {cols} FROM {table} WHERE thread_id = ?",
                    (new_thread_id, thread_id),
                )
            await conn.commit()

    async def set_thread_state(
        self,
        thread_id: str,
        *,
        values: Any,
        interrupts: Mapping[str, Any],
        status: ThreadStatus | None = None,
        error: Any = None,
    ) -> None:
        now = utcnow().isoformat()
        async with self._tx() as db:
            await db.execute(
                'UPDATE threads SET "values" = ?, interrupts = ?, status = CASE '
                "WHEN ? IS NULL THEN status WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = ? "
                "AND status IN ('pending','running')) THEN 'busy' ELSE ? END, "
                "error = ?, updated_at = ?, state_updated_at = ? WHERE thread_id = ?",
                (_j(values), _j(dict(interrupts)), status, thread_id, status,
                 _j(error) if error else None, now, now, thread_id),
            )  # fmt: skip

    # --- runs ------------------------------------------------------------------------------
    async def create_run(
        self,
        run: Run,
        *,
        temporary: bool,
        if_not_exists: Literal["create", "reject"],
        auth_user: dict[str, Any] | None,
        thread_metadata: Mapping[str, Any],
        filters: Filter | None = None,
    ) -> list[str]:
        thread_id = run["thread_id"]
        cond, params = match("metadata", filters)
        strategy = run["multitask_strategy"]
        due = time.time() + float(run["kwargs"].get("after_seconds") or 0)
        values = (
            run["run_id"], thread_id, run["assistant_id"], _j(run["metadata"]), "pending",
            _j(run["kwargs"]), strategy, run["created_at"].isoformat(),
            run["updated_at"].isoformat(), int(temporary),
            _j(auth_user) if auth_user is not None else None, due,
        )  # fmt: skip

        def create(db: sqlite3.Connection) -> list[str]:
            if temporary or if_not_exists == "create":
                _insert_thread(db, thread_id, thread_metadata)
            row = db.execute(
                f"SELECT metadata FROM threads WHERE thread_id = ? AND {cond}",
                [thread_id, *params],
            ).fetchone()
            if row is None:
                raise NotFound("Thread or assistant not found.")
            inflight = [r[0] for r in db.execute(
                "SELECT run_id FROM runs WHERE thread_id = ? AND status IN ('pending','running') "
                "ORDER BY seq",
                (thread_id,),
            )]  # fmt: skip
            if inflight and strategy == "reject":
                raise ThreadBusy(
                    "Thread is already running a task. Wait for it to finish or choose a "
                    "different multitask strategy."
                )
            db.execute(
                f"INSERT INTO runs ({_RUN_COLS}, temporary, auth_user, due_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                values,
            )
            merged = {**_uj(row[0]), **thread_metadata}
            db.execute(
                "UPDATE threads SET status = 'busy', metadata = ?, updated_at = ? "
                "WHERE thread_id = ?",
                (_j(merged), utcnow().isoformat(), thread_id),
            )
            return inflight

        inflight = await self._call_tx(create)
        return inflight if strategy in ("interrupt", "rollback") else []

    async def get_run(
        self, thread_id: str | None, run_id: str, *, filters: Filter | None = None
    ) -> Run:
        cond, params = match("t.metadata", filters)
        sql = (
            f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLS.split(','))} FROM runs r "
            f"JOIN threads t ON t.thread_id = r.thread_id WHERE r.run_id = ? AND {cond}"
        )
        args: list[Any] = [run_id, *params]
        if thread_id is not None:
            sql += " AND r.thread_id = ?"
            args.append(thread_id)
        row = await self._get(sql, args)
        if row is None:
            raise NotFound("Run not found")
        return _run(row)

    async def list_runs(
        self,
        thread_id: str,
        *,
        limit: int,
        offset: int,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        await self.get_thread(thread_id, filters=filters)
        sql = f"SELECT {_RUN_COLS} FROM runs WHERE thread_id = ?"
        args: list[Any] = [thread_id]
        if status:
            sql += " AND status = ?"
            args.append(status)
        rows = await self._all(sql + " ORDER BY seq DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return [_run(r) for r in rows]

    async def delete_run(
        self, thread_id: str, run_id: str, *, filters: Filter | None = None
    ) -> None:
        await self.get_run(thread_id, run_id, filters=filters)
        async with self._tx() as db:
            await db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    async def inflight_runs(
        self,
        *,
        thread_id: str | None,
        run_ids: Sequence[str] | None,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        cond, params = match("t.metadata", filters)
        cols = ", ".join("r." + c.strip() for c in _RUN_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM runs r JOIN threads t ON t.thread_id = r.thread_id "
            f"WHERE r.status IN ('pending','running') AND {cond}"
        )
        args: list[Any] = list(params)
        if thread_id is not None:
            sql += " AND r.thread_id = ?"
            args.append(thread_id)
        if run_ids is not None:
            sql += f" AND r.run_id IN ({','.join('?' * len(run_ids))})"
            args += list(run_ids)
        if status in ("pending", "running"):
            sql += " AND r.status = ?"
            args.append(status)
        return [_run(r) for r in await self._all(sql + " ORDER BY r.seq", args)]

    # --- the queue -------------------------------------------------------------------------
    async def claim_run(self, worker_id: str, lease_seconds: float) -> RunClaim | None:
        now = time.time()

        def claim(db: sqlite3.Connection) -> tuple[Any, int] | None:
            # The oldest of the two; see _NEXT_PENDING for why they are two queries.
            pending = db.execute(_NEXT_PENDING, (now,)).fetchone()
            expired = db.execute(_NEXT_EXPIRED, (now,)).fetchone()
            candidates = [row for row in (pending, expired) if row is not None]
            if not candidates:
                return None
            seq, attempt = min(candidates)
            attempt += 1
            db.execute(
                "UPDATE runs SET status = 'running', attempt = ?, worker_id = ?, "
                "lease_expires_at = ?, updated_at = ? WHERE seq = ?",
                (attempt, worker_id, now + lease_seconds, utcnow().isoformat(), seq),
            )
            full = db.execute(
                f"SELECT {_RUN_COLS}, temporary, auth_user FROM runs WHERE seq = ?", (seq,)
            ).fetchone()
            return full, attempt

        claimed = await self._call_tx(claim)
        if claimed is None:
            return None
        full, attempt = claimed
        try:
            return RunClaim(
                run=_run(full), attempt=attempt, temporary=bool(full[9]), auth_user=_uj(full[10])
            )
        except ValueError as exc:  # orjson's decode error is a ValueError
            raise UnreadableRun(full[0], str(exc)) from exc

    async def next_due(self) -> datetime | None:
        row = await self._one(
            "SELECT MIN(due_at) FROM runs WHERE status = 'pending' AND due_at > ?", (time.time(),)
        )
        if row is None or row[0] is None:
            return None
        if row[0] >= LATEST_DUE.timestamp():
            return LATEST_DUE
        return datetime.fromtimestamp(row[0], tz=utcnow().tzinfo)

    async def renew_lease(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND worker_id = ? "
                "AND status = 'running'",
                (time.time() + lease_seconds, run_id, worker_id),
            )
            return cur.rowcount > 0

    async def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        thread_status: ThreadStatus,
        values: Any,
        interrupts: Mapping[str, Any],
        error: Any,
        delete_thread: bool,
    ) -> None:
        now = utcnow().isoformat()
        shared = self._checkpoints_shared
        settled = None if delete_thread else _settled(thread_status, values, interrupts, error)

        def finish(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT thread_id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            thread_id: str = row[0]
            db.execute(
                "UPDATE runs SET status = ?, updated_at = ?, lease_expires_at = NULL "
                "WHERE run_id = ?",
                (status, now, run_id),
            )
            if settled is None:
                _delete_thread_rows(db, thread_id, checkpoints=shared)
            else:
                _settle_thread(db, thread_id, settled)
            return thread_id

        thread_id = await self._call_tx(finish)
        if thread_id is not None and delete_thread and not shared:
            await self._delete_checkpoints(thread_id)

    async def cancel_pending(self, run_id: str, *, status: RunStatus) -> bool:
        def cancel(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE runs SET status = ?, updated_at = ? "
                "WHERE run_id = ? AND status = 'pending'",
                (status, utcnow().isoformat(), run_id),
            )
            if cur.rowcount == 0:
                return False
            row = db.execute(
                'SELECT r.thread_id, t."values", t.interrupts, t.status FROM runs r '
                "JOIN threads t ON t.thread_id = r.thread_id WHERE r.run_id = ?",
                (run_id,),
            ).fetchone()
            if row is not None:
                settled: ThreadStatus = "idle" if row[3] == "busy" else row[3]
                _settle_thread(db, row[0], _settled(settled, _uj(row[1]), _uj(row[2]), None))
            return True

        return await self._call_tx(cancel)

    async def rollback_run(self, run_id: str, thread_id: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        saver = self._saver
        if saver is None:
            return
        async with saver.lock:
            conn = saver.conn
            async with conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND "
                "json_extract(CAST(metadata AS TEXT), '$.run_id') = ?",
                (thread_id, run_id),
            ) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            if ids:
                marks = ",".join("?" * len(ids))
                for table in ("checkpoints", "writes"):
                    await conn.execute(
                        f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id IN ({marks})",
                        (thread_id, *ids),
                    )
                await conn.commit()

    async def queue_stats(self) -> QueueStats:
        now = time.time()
        counts: dict[str, int] = {row[0]: row[1] for row in await self._all(_QUEUE_COUNTS, ())}
        waits = await self._all(_PENDING_WAITS, (now, now))
        return QueueStats(
            pending=counts.get("pending", 0),
            running=counts.get("running", 0),
            waits=[row[0] for row in waits],
            unblocked_waits=[row[0] for row in waits if row[1]],
        )

    async def expire_leases(self) -> int:
        async with self._tx() as db:
            cur = await db.execute("UPDATE runs SET lease_expires_at = 0 WHERE status = 'running'")
            return cur.rowcount
