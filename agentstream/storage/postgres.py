"""The distributed backend: assistants, threads, runs and the run queue in PostgreSQL."""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection, AsyncCursor, OperationalError
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from agentstream import serde
from agentstream.storage.base import (
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
)
from agentstream.storage.pgfilters import jsonb, match

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

CHANNEL = "agentstream_runs"
# Advisory lock keys. Migrations use the one-bigint key space, threads the two-int4 space, so
# a thread's hash can never collide with the migration lock.
_MIGRATE_LOCK = 0x6167_656E_7473_7472  # "agentstr"
_SAVER_SETUP_LOCK = _MIGRATE_LOCK + 1
_THREAD_LOCK_SPACE = 0x6167_6E74  # "agnt"
_CLAIM_TRIES = 8

MIGRATIONS = [
    # 1: the initial schema
    """
    CREATE TABLE IF NOT EXISTS assistants (
        assistant_id TEXT PRIMARY KEY,
        graph_id TEXT NOT NULL,
        config JSONB NOT NULL,
        context JSONB NOT NULL,
        metadata JSONB NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        version INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE IF NOT EXISTS assistant_versions (
        assistant_id TEXT NOT NULL REFERENCES assistants(assistant_id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        graph_id TEXT NOT NULL,
        config JSONB NOT NULL,
        context JSONB NOT NULL,
        metadata JSONB NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (assistant_id, version)
    );
    CREATE TABLE IF NOT EXISTS threads (
        thread_id TEXT PRIMARY KEY,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        state_updated_at TIMESTAMPTZ NOT NULL,
        metadata JSONB NOT NULL,
        status TEXT NOT NULL,
        config JSONB NOT NULL,
        "values" JSONB,
        interrupts JSONB NOT NULL,
        error JSONB
    );
    CREATE TABLE IF NOT EXISTS runs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        thread_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        metadata JSONB NOT NULL,
        status TEXT NOT NULL,
        kwargs JSONB NOT NULL,
        multitask_strategy TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        temporary BOOLEAN NOT NULL DEFAULT FALSE,
        auth_user JSONB,
        worker_id TEXT,
        lease_expires_at TIMESTAMPTZ,
        due_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS assistants_metadata
        ON assistants USING gin (metadata jsonb_path_ops);
    CREATE INDEX IF NOT EXISTS threads_metadata ON threads USING gin (metadata jsonb_path_ops);
    CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, seq);
    CREATE INDEX IF NOT EXISTS runs_inflight ON runs (seq) WHERE status IN ('pending', 'running');
    """,
]

_ASSISTANT_COLS = (
    "assistant_id, graph_id, config, context, metadata, name, description, version, "
    "created_at, updated_at"
)
_VERSION_COLS = (
    "assistant_id, version, graph_id, config, context, metadata, name, description, created_at"
)
_THREAD_COLS = (
    'thread_id, created_at, updated_at, state_updated_at, metadata, status, config, "values", '
    "interrupts, error"
)
_RUN_COLS = (
    "run_id, thread_id, assistant_id, metadata, status, kwargs, multitask_strategy, "
    "created_at, updated_at"
)
_R_RUN_COLS = ", ".join("r." + c.strip() for c in _RUN_COLS.split(","))
_SORTABLE = {
    "assistants": {"created_at", "updated_at", "assistant_id", "graph_id", "name"},
    "threads": {"created_at", "updated_at", "thread_id", "status"},
}
_INFLIGHT = "status IN ('pending', 'running')"

# --- named queries ---------------------------------------------------------------------------
# Which migrations this database has had.
_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY);
"""
# Insert an assistant unless its id is taken; returns nothing when it is.
_INSERT_ASSISTANT = f"""
INSERT INTO assistants ({_ASSISTANT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (assistant_id) DO NOTHING RETURNING assistant_id
"""
# Record one version of an assistant.
_INSERT_VERSION = f"""
INSERT INTO assistant_versions ({_VERSION_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
# Point an assistant at new contents (a new or an old version).
_UPDATE_ASSISTANT = """
UPDATE assistants SET graph_id = %s, config = %s, context = %s, metadata = %s, name = %s,
    description = %s, version = %s, updated_at = now()
WHERE assistant_id = %s
"""
# Insert an idle thread unless its id is taken; returns nothing when it is.
_INSERT_THREAD = f"""
INSERT INTO threads ({_THREAD_COLS})
VALUES (%s, now(), now(), now(), %s, 'idle', '{{"configurable": {{}}}}', NULL, '{{}}', NULL)
ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id
"""
# Lock a thread the caller may see: every change of a thread's runs or status takes this first.
_LOCK_THREAD = """
SELECT metadata, "values", interrupts, status FROM threads
WHERE thread_id = %s AND {cond} FOR UPDATE
"""
# The runs of a thread that are queued or running, oldest first.
_THREAD_INFLIGHT = f"""
SELECT run_id FROM runs WHERE thread_id = %s AND {_INFLIGHT} ORDER BY seq
"""
# Queue a run; it becomes due after its kwargs' after_seconds.
_INSERT_RUN = f"""
INSERT INTO runs ({_RUN_COLS}, temporary, auth_user, due_at)
VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))
"""
# Mark a thread busy with a new run and merge the run's thread metadata into it.
_THREAD_TAKES_RUN = """
UPDATE threads SET status = 'busy', metadata = metadata || %s, updated_at = now()
WHERE thread_id = %s
"""
# Wake every LISTENing worker (delivered when the transaction commits).
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', '')"
# Cache a thread's latest state; it stays busy while another run of it is queued or running.
_SETTLE_THREAD = f"""
UPDATE threads SET
    status = CASE
        WHEN %(status)s::text IS NULL THEN status
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = %(thread_id)s AND {_INFLIGHT})
            THEN 'busy'
        ELSE %(status)s::text END,
    "values" = %(values)s, interrupts = %(interrupts)s, error = %(error)s,
    updated_at = now(), state_updated_at = now()
WHERE thread_id = %(thread_id)s
"""
# A run is runnable when it is due and first in line on its thread, or when its lease ran out.
_RUNNABLE = f"""(
    (r.status = 'pending' AND r.due_at <= now() AND NOT EXISTS (
        SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.seq <> r.seq
        AND (o.status = 'running' OR (o.status = 'pending' AND o.seq < r.seq))))
    OR (r.status = 'running' AND r.lease_expires_at < now())
) AND r.{_INFLIGHT}"""
# The oldest runnable run nobody else is claiming right now, and its thread's claim lock: claims
# of one thread then run one after the other until commit, each seeing what the last started.
_PICK_RUN = f"""
SELECT p.seq, pg_advisory_xact_lock({_THREAD_LOCK_SPACE}, hashtext(p.thread_id)) FROM (
    SELECT r.seq, r.thread_id FROM runs r WHERE {_RUNNABLE}
    ORDER BY r.seq LIMIT 1 FOR UPDATE OF r SKIP LOCKED
) p
"""
# Start (or restart) the picked run under a lease, if it is still runnable.
_START_RUN = f"""
UPDATE runs r SET status = 'running', attempt = r.attempt + 1, worker_id = %s,
    lease_expires_at = now() + make_interval(secs => %s), updated_at = now()
WHERE r.seq = %s AND {_RUNNABLE}
RETURNING {_R_RUN_COLS}, r.attempt, r.temporary, r.auth_user
"""
# When the next delayed run falls due (capped: a later timestamptz does not load as a datetime).
_NEXT_DUE = """
SELECT CASE WHEN min(due_at) > '9999-01-01Z' THEN '9999-01-01Z' ELSE min(due_at) END AS due
FROM runs WHERE status = 'pending' AND due_at > now()
"""
# How many runs wait and run (for /metrics).
_QUEUE_COUNTS = """
SELECT status, count(*) AS n FROM runs WHERE status IN ('pending', 'running') GROUP BY status
"""
# Each due pending run: seconds since it fell due, and whether no run of its thread is running.
_PENDING_WAITS = """
SELECT extract(epoch FROM now() - greatest(r.due_at, r.created_at)) AS wait,
    NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.status = 'running')
    AS free
FROM runs r WHERE r.status = 'pending' AND r.due_at <= now()
"""
# Extend a lease, only for the worker holding it.
_RENEW_LEASE = """
UPDATE runs SET lease_expires_at = now() + make_interval(secs => %s)
WHERE run_id = %s AND worker_id = %s AND status = 'running'
"""
# Record how a run ended.
_END_RUN = (
    "UPDATE runs SET status = %s, updated_at = now(), lease_expires_at = NULL WHERE run_id = %s"
)
# End a run that no worker has taken.
_CANCEL_PENDING = """
UPDATE runs SET status = %s, updated_at = now() WHERE run_id = %s AND status = 'pending'
"""
# Let every running run be claimed again at once.
_EXPIRE_LEASES = "UPDATE runs SET lease_expires_at = '-infinity' WHERE status = 'running'"
# Remove a run's checkpoints and their pending writes; returns the channel versions they held.
_DELETE_RUN_CHECKPOINTS = """
WITH gone AS (
    DELETE FROM checkpoints WHERE thread_id = %(thread_id)s AND metadata->>'run_id' = %(run_id)s
    RETURNING checkpoint_ns, checkpoint_id, checkpoint
), writes AS (
    DELETE FROM checkpoint_writes w USING gone g
    WHERE w.thread_id = %(thread_id)s AND w.checkpoint_ns = g.checkpoint_ns
        AND w.checkpoint_id = g.checkpoint_id
)
SELECT DISTINCT g.checkpoint_ns AS ns, v.key AS channel, v.value AS version
FROM gone g, jsonb_each_text(g.checkpoint -> 'channel_versions') v
"""
# Remove the blobs of those versions that no remaining checkpoint refers to.
_DELETE_ORPHAN_BLOBS = """
DELETE FROM checkpoint_blobs b
USING unnest(%(ns)s::text[], %(channel)s::text[], %(version)s::text[]) AS d(ns, channel, version)
WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = d.ns AND b.channel = d.channel
    AND b.version = d.version
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints c WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = d.ns
            AND c.checkpoint -> 'channel_versions' ->> d.channel = d.version)
"""
# Copy a thread's checkpoints, blobs and pending writes to another thread id.
_COPY_CHECKPOINTS = [
    f"INSERT INTO {table} (thread_id, {cols}) SELECT %(new)s, {cols} FROM {table} "
    "WHERE thread_id = %(old)s"
    for table, cols in (
        ("checkpoints", "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
         "metadata"),
        ("checkpoint_blobs", "checkpoint_ns, channel, version, type, blob"),
        ("checkpoint_writes", "checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, "
         "type, blob"),
    )
]  # fmt: skip


def _order(table: str, sort_by: str | None, sort_order: str | None, key: str) -> str:
    column = sort_by if sort_by in _SORTABLE[table] else "created_at"
    direction = "ASC" if (sort_order or "").lower() == "asc" else "DESC"
    return f"{column} {direction}, {key} {direction}"


def _run(row: DictRow) -> Run:
    return cast(Run, {k: row[k] for k in Run.__annotations__})


def _json_or_null(value: Any) -> Any:
    return None if value is None else jsonb(value)


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


class PostgresStorage:
    def __init__(self, uri: str, *, pool_min: int = 2, pool_max: int = 20) -> None:
        self.uri = uri
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: Pool | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def setup(self) -> None:
        # Autocommit: our own transactions are explicit, and the checkpoint saver shares the
        # pool (its setup builds indexes CONCURRENTLY, which no transaction may wrap).
        pool: Pool = AsyncConnectionPool(
            self.uri,
            min_size=self.pool_min,
            max_size=self.pool_max,
            open=False,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure,
            check=check_idle_connection,
        )
        await pool.open(wait=True)
        self._pool = pool
        await self._migrate()
        await self._setup_saver()

    async def _migrate(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            # Many processes may start at once: the first migrates, the rest wait and see it done.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            await conn.execute(_SCHEMA_VERSION)
            cur = await conn.execute("SELECT max(version) AS v FROM schema_version")
            row = await cur.fetchone()
            current = (row["v"] if row else None) or 0
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > current:
                    await conn.execute(script)
                    await conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))

    async def _setup_saver(self) -> None:
        # The saver's own migrations are not safe to run twice at once, and build indexes
        # CONCURRENTLY, which waits for every open transaction: a session that blocked on a
        # lock would deadlock with it, so the others poll for the lock instead.
        async with self.pool.connection() as conn:
            while True:
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s) AS ok", (_SAVER_SETUP_LOCK,)
                )
                row = await cur.fetchone()
                if row is not None and row["ok"]:
                    break
                await asyncio.sleep(0.05)
            try:
                await AsyncPostgresSaver(conn).setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SAVER_SETUP_LOCK,))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("storage is not set up")
        return self._pool

    @asynccontextmanager
    async def checkpointer(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        # One saver per run: a saver serialises its queries behind its own lock, so sharing one
        # would queue every run of the process behind it. Bound to the pool, it holds a
        # connection only while a query runs, so long runs never starve the pool.
        yield AsyncPostgresSaver(self.pool)

    async def listen(self) -> AsyncIterator[None]:
        """Yield once for every notification that the run queue changed."""
        async with await AsyncConnection.connect(self.uri, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            async for _ in conn.notifies():
                yield None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            set_json_loads(serde.loads, cur)
            yield cur

    async def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> DictRow | None:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            set_json_loads(serde.loads, cur)
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[DictRow]:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            set_json_loads(serde.loads, cur)
            await cur.execute(sql, params)
            return await cur.fetchall()

    # --- assistants ------------------------------------------------------------------------
    async def put_assistant(
        self, assistant: Assistant, *, if_exists: IfExists, filters: Filter | None = None
    ) -> Assistant:
        a = assistant
        contents = (
            a["graph_id"], jsonb(a["config"]), jsonb(a["context"]), jsonb(a["metadata"]),
            a["name"], a["description"],
        )  # fmt: skip
        async with self._tx() as cur:
            await cur.execute(
                _INSERT_ASSISTANT,
                (a["assistant_id"], *contents, a["version"], a["created_at"], a["updated_at"]),
            )
            if await cur.fetchone() is not None:
                await cur.execute(
                    _INSERT_VERSION, (a["assistant_id"], a["version"], *contents, a["created_at"])
                )
            elif if_exists == "raise":
                raise Conflict(f"Assistant {a['assistant_id']} already exists")
        return await self.get_assistant(a["assistant_id"], filters=filters)

    async def get_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> Assistant:
        cond, params = match("metadata", filters)
        row = await self._one(
            f"SELECT {_ASSISTANT_COLS} FROM assistants WHERE assistant_id = %s AND {cond}",
            [assistant_id, *params],
        )
        if row is None:
            raise NotFound(f"Assistant '{assistant_id}' not found")
        return cast(Assistant, row)

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
        parts, params = [], []
        for cond, p in (match("metadata", metadata), match("metadata", filters)):
            parts.append(cond)
            params += p
        if graph_id is not None:
            parts.append("graph_id = %s")
            params.append(graph_id)
        if name is not None:
            # SQLite's LIKE ignores case; so does ours.
            parts.append("name ILIKE %s")
            params.append(f"%{name}%")
        where = " AND ".join(parts)
        order = _order("assistants", sort_by, sort_order, "assistant_id")
        rows = await self._all(
            f"SELECT {_ASSISTANT_COLS} FROM assistants WHERE {where} ORDER BY {order} "
            "LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        total = await self._one(f"SELECT count(*) AS n FROM assistants WHERE {where}", params)
        return [cast(Assistant, r) for r in rows], total["n"] if total else 0

    async def patch_assistant(
        self, assistant_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Assistant:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                f"SELECT {_ASSISTANT_COLS} FROM assistants WHERE assistant_id = %s AND {cond} "
                "FOR UPDATE",
                [assistant_id, *params],
            )
            current = await cur.fetchone()
            if current is None:
                raise NotFound(f"Assistant '{assistant_id}' not found")
            merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
            if changes.get("metadata") is not None:
                merged["metadata"] = {**current["metadata"], **changes["metadata"]}
            await cur.execute(
                "SELECT max(version) AS v FROM assistant_versions WHERE assistant_id = %s",
                (assistant_id,),
            )
            row = await cur.fetchone()
            version = ((row["v"] if row else None) or 0) + 1
            contents = (
                merged["graph_id"], jsonb(merged["config"]), jsonb(merged["context"]),
                jsonb(merged["metadata"]), merged["name"], merged["description"],
            )  # fmt: skip
            await cur.execute(
                f"INSERT INTO assistant_versions ({_VERSION_COLS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())",
                (assistant_id, version, *contents),
            )
            await cur.execute(_UPDATE_ASSISTANT, (*contents, version, assistant_id))
        return await self.get_assistant(assistant_id)

    async def delete_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> None:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                f"DELETE FROM assistants WHERE assistant_id = %s AND {cond}",
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
            f"SELECT {_VERSION_COLS} FROM assistant_versions WHERE assistant_id = %s AND {cond} "
            "ORDER BY version DESC LIMIT %s OFFSET %s",
            [assistant_id, *params, limit, offset],
        )
        return [dict(r) for r in rows]

    async def set_latest_assistant(
        self, assistant_id: str, version: int, *, filters: Filter | None = None
    ) -> Assistant:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                f"SELECT 1 FROM assistants WHERE assistant_id = %s AND {cond} FOR UPDATE",
                [assistant_id, *params],
            )
            if await cur.fetchone() is None:
                raise NotFound(f"Assistant '{assistant_id}' not found")
            await cur.execute(
                "SELECT graph_id, config, context, metadata, name, description "
                "FROM assistant_versions WHERE assistant_id = %s AND version = %s",
                (assistant_id, version),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"Version {version} of assistant '{assistant_id}' not found")
            contents = (
                row["graph_id"], jsonb(row["config"]), jsonb(row["context"]),
                jsonb(row["metadata"]), row["name"], row["description"],
            )  # fmt: skip
            await cur.execute(_UPDATE_ASSISTANT, (*contents, version, assistant_id))
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
        async with self._tx() as cur:
            await cur.execute(_INSERT_THREAD, (thread_id, jsonb(dict(metadata))))
            inserted = await cur.fetchone() is not None
        if not inserted and if_exists == "raise":
            raise Conflict(f"Thread with ID {thread_id} already exists")
        try:
            return await self.get_thread(thread_id, filters=filters)
        except NotFound:
            # Someone else's thread with this id: the caller may not see it, nor take its id.
            raise Conflict(f"Thread with ID {thread_id} already exists") from None

    async def get_thread(self, thread_id: str, *, filters: Filter | None = None) -> Thread:
        cond, params = match("metadata", filters)
        row = await self._one(
            f"SELECT {_THREAD_COLS} FROM threads WHERE thread_id = %s AND {cond}",
            [thread_id, *params],
        )
        if row is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return cast(Thread, row)

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
            parts.append("thread_id = ANY(%s)")
            params.append(list(ids))
        if status:
            parts.append("status = %s")
            params.append(status)
        where = " AND ".join(parts)
        order = _order("threads", sort_by, sort_order, "thread_id")
        rows = await self._all(
            f"SELECT {_THREAD_COLS} FROM threads WHERE {where} ORDER BY {order} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        total = await self._one(f"SELECT count(*) AS n FROM threads WHERE {where}", params)
        return [cast(Thread, r) for r in rows], total["n"] if total else 0

    async def patch_thread(
        self, thread_id: str, metadata: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Thread:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                f"UPDATE threads SET metadata = metadata || %s, updated_at = now() "
                f"WHERE thread_id = %s AND {cond} RETURNING {_THREAD_COLS}",
                [jsonb(dict(metadata)), thread_id, *params],
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return cast(Thread, row)

    async def delete_thread(self, thread_id: str, *, filters: Filter | None = None) -> list[str]:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(_LOCK_THREAD.format(cond=cond), [thread_id, *params])
            if await cur.fetchone() is None:
                raise NotFound(f"Thread with ID {thread_id} not found")
            await cur.execute(_THREAD_INFLIGHT, (thread_id,))
            inflight = [r["run_id"] for r in await cur.fetchall()]
            await _delete_thread_rows(cur, thread_id)
        await self._delete_checkpoints(thread_id)
        return inflight

    async def _delete_checkpoints(self, thread_id: str) -> None:
        await AsyncPostgresSaver(self.pool).adelete_thread(thread_id)

    async def copy_thread(
        self, thread_id: str, new_thread_id: str, *, filters: Filter | None = None
    ) -> Thread:
        cond, params = match("metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                f"SELECT 1 FROM threads WHERE thread_id = %s AND {cond}", [thread_id, *params]
            )
            if await cur.fetchone() is None:
                raise NotFound(f"Thread with ID {thread_id} not found")
            await cur.execute(
                f"INSERT INTO threads ({_THREAD_COLS}) "
                "SELECT %s, now(), now(), now(), metadata, 'idle', config, \"values\", "
                "interrupts, NULL FROM threads WHERE thread_id = %s "
                f"ON CONFLICT (thread_id) DO NOTHING RETURNING {_THREAD_COLS}",
                (new_thread_id, thread_id),
            )
            copied = await cur.fetchone()
            if copied is None:
                raise Conflict(f"Thread with ID {new_thread_id} already exists")
            for sql in _COPY_CHECKPOINTS:
                await cur.execute(sql, {"new": new_thread_id, "old": thread_id})
        return cast(Thread, copied)

    async def set_thread_state(
        self,
        thread_id: str,
        *,
        values: Any,
        interrupts: Mapping[str, Any],
        status: ThreadStatus | None = None,
        error: Any = None,
    ) -> None:
        async with self._tx() as cur:
            await cur.execute(_LOCK_THREAD.format(cond="TRUE"), (thread_id,))
            await cur.execute(
                _SETTLE_THREAD,
                {
                    "thread_id": thread_id,
                    "status": status,
                    "values": jsonb(values),
                    "interrupts": jsonb(dict(interrupts)),
                    "error": jsonb(error) if error else None,
                },
            )

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
        async with self._tx() as cur:
            if temporary or if_not_exists == "create":
                await cur.execute(_INSERT_THREAD, (thread_id, jsonb(dict(thread_metadata))))
            # The thread's lock makes the check below and the insert one step for every process.
            await cur.execute(_LOCK_THREAD.format(cond=cond), [thread_id, *params])
            if await cur.fetchone() is None:
                raise NotFound("Thread or assistant not found.")
            await cur.execute(_THREAD_INFLIGHT, (thread_id,))
            inflight = [r["run_id"] for r in await cur.fetchall()]
            if inflight and strategy == "reject":
                raise ThreadBusy(
                    "Thread is already running a task. Wait for it to finish or choose a "
                    "different multitask strategy."
                )
            await cur.execute(
                _INSERT_RUN,
                (run["run_id"], thread_id, run["assistant_id"], jsonb(run["metadata"]),
                 jsonb(run["kwargs"]), strategy, run["created_at"], run["updated_at"],
                 temporary, _json_or_null(auth_user),
                 float(run["kwargs"].get("after_seconds") or 0)),
            )  # fmt: skip
            await cur.execute(_THREAD_TAKES_RUN, (jsonb(dict(thread_metadata)), thread_id))
            await cur.execute(_NOTIFY)
        return inflight if strategy in ("interrupt", "rollback") else []

    async def get_run(
        self, thread_id: str | None, run_id: str, *, filters: Filter | None = None
    ) -> Run:
        cond, params = match("t.metadata", filters)
        sql = (
            f"SELECT {_R_RUN_COLS} FROM runs r JOIN threads t ON t.thread_id = r.thread_id "
            f"WHERE r.run_id = %s AND {cond}"
        )
        args: list[Any] = [run_id, *params]
        if thread_id is not None:
            sql += " AND r.thread_id = %s"
            args.append(thread_id)
        row = await self._one(sql, args)
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
        sql = f"SELECT {_RUN_COLS} FROM runs WHERE thread_id = %s"
        args: list[Any] = [thread_id]
        if status:
            sql += " AND status = %s"
            args.append(status)
        rows = await self._all(
            sql + " ORDER BY seq DESC LIMIT %s OFFSET %s", [*args, limit, offset]
        )
        return [_run(r) for r in rows]

    async def delete_run(
        self, thread_id: str, run_id: str, *, filters: Filter | None = None
    ) -> None:
        cond, params = match("t.metadata", filters)
        async with self._tx() as cur:
            await cur.execute(
                "DELETE FROM runs r USING threads t WHERE r.run_id = %s AND r.thread_id = %s "
                f"AND t.thread_id = r.thread_id AND {cond}",
                [run_id, thread_id, *params],
            )
            if cur.rowcount == 0:
                raise NotFound("Run not found")
            await cur.execute(_NOTIFY)  # the next run of its thread may go now

    async def inflight_runs(
        self,
        *,
        thread_id: str | None,
        run_ids: Sequence[str] | None,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        cond, params = match("t.metadata", filters)
        sql = (
            f"SELECT {_R_RUN_COLS} FROM runs r JOIN threads t ON t.thread_id = r.thread_id "
            f"WHERE r.{_INFLIGHT} AND {cond}"
        )
        args: list[Any] = list(params)
        if thread_id is not None:
            sql += " AND r.thread_id = %s"
            args.append(thread_id)
        if run_ids is not None:
            sql += " AND r.run_id = ANY(%s)"
            args.append(list(run_ids))
        if status in ("pending", "running"):
            sql += " AND r.status = %s"
            args.append(status)
        return [_run(r) for r in await self._all(sql + " ORDER BY r.seq", args)]

    # --- the queue -------------------------------------------------------------------------
    async def claim_run(self, worker_id: str, lease_seconds: float) -> RunClaim | None:
        # SKIP LOCKED lets claimers pass over each other's picks. Should two claimers ever pick
        # two runs of one thread, the thread's advisory lock orders them and the second one's
        # recheck, a new statement and so a fresh snapshot, sees what the first started.
        for _ in range(_CLAIM_TRIES):
            async with self._tx() as cur:
                await cur.execute(_PICK_RUN)
                picked = await cur.fetchone()
                if picked is None:
                    return None
                await cur.execute(_START_RUN, (worker_id, float(lease_seconds), picked["seq"]))
                row = await cur.fetchone()
            if row is not None:
                return RunClaim(
                    run=_run(row),
                    attempt=row["attempt"],
                    temporary=row["temporary"],
                    auth_user=row["auth_user"],
                )
        return None

    async def next_due(self) -> datetime | None:
        row = await self._one(_NEXT_DUE, ())
        return None if row is None else cast(datetime | None, row["due"])

    def pool_stats(self) -> tuple[int, int, int]:
        """(max, size, idle) of the connection pool, for /metrics."""
        stats = self.pool.get_stats()
        return self.pool_max, stats.get("pool_size", 0), stats.get("pool_available", 0)

    async def renew_lease(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        async with self._tx() as cur:
            await cur.execute(_RENEW_LEASE, (float(lease_seconds), run_id, worker_id))
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
        async with self._tx() as cur:
            found = await _lock_thread_of(cur, run_id)
            if found is None:
                return
            thread_id = found[0]
            await cur.execute(_END_RUN, (status, run_id))
            if delete_thread:
                await _delete_thread_rows(cur, thread_id)
            else:
                await cur.execute(
                    _SETTLE_THREAD,
                    {
                        "thread_id": thread_id,
                        "status": thread_status,
                        "values": jsonb(values),
                        "interrupts": jsonb(dict(interrupts)),
                        "error": _json_or_null(error),
                    },
                )
            await cur.execute(_NOTIFY)
        if delete_thread:
            await self._delete_checkpoints(thread_id)

    async def cancel_pending(self, run_id: str, *, status: RunStatus) -> bool:
        async with self._tx() as cur:
            found = await _lock_thread_of(cur, run_id)
            if found is None:
                return False
            thread_id, thread = found
            await cur.execute(_CANCEL_PENDING, (status, run_id))
            if cur.rowcount == 0:
                return False
            if thread is not None:
                settled = "idle" if thread["status"] == "busy" else thread["status"]
                await cur.execute(
                    _SETTLE_THREAD,
                    {
                        "thread_id": thread_id,
                        "status": settled,
                        "values": jsonb(thread["values"]),
                        "interrupts": jsonb(thread["interrupts"]),
                        "error": None,
                    },
                )
            await cur.execute(_NOTIFY)
        return True

    async def rollback_run(self, run_id: str, thread_id: str) -> None:
        async with self._tx() as cur:
            await cur.execute("DELETE FROM runs WHERE run_id = %s", (run_id,))
            await cur.execute(_NOTIFY)  # the next run of its thread may go now
            await cur.execute(_DELETE_RUN_CHECKPOINTS, {"thread_id": thread_id, "run_id": run_id})
            versions = await cur.fetchall()
            if versions:
                await cur.execute(
                    _DELETE_ORPHAN_BLOBS,
                    {
                        "thread_id": thread_id,
                        "ns": [v["ns"] for v in versions],
                        "channel": [v["channel"] for v in versions],
                        "version": [v["version"] for v in versions],
                    },
                )

    async def queue_stats(self) -> QueueStats:
        counts = {row["status"]: row["n"] for row in await self._all(_QUEUE_COUNTS, ())}
        waits = await self._all(_PENDING_WAITS, ())
        return QueueStats(
            pending=counts.get("pending", 0),
            running=counts.get("running", 0),
            waits=[float(row["wait"]) for row in waits],
            unblocked_waits=[float(row["wait"]) for row in waits if row["free"]],
        )

    async def expire_leases(self) -> int:
        async with self._tx() as cur:
            await cur.execute(_EXPIRE_LEASES)
            expired = cur.rowcount
            await cur.execute(_NOTIFY)
        return expired


async def _configure(conn: AsyncConnection[DictRow]) -> None:
    # Timestamps come back as UTC datetimes whatever the server's time zone.
    await conn.execute("SET TIME ZONE 'UTC'")


async def _lock_thread_of(
    cur: AsyncCursor[DictRow], run_id: str
) -> tuple[str, DictRow | None] | None:
    """Lock the thread of a run (threads before runs, always); None when the run is gone."""
    await cur.execute("SELECT thread_id FROM runs WHERE run_id = %s", (run_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    thread_id: str = row["thread_id"]
    await cur.execute(_LOCK_THREAD.format(cond="TRUE"), (thread_id,))
    return thread_id, await cur.fetchone()


async def _delete_thread_rows(cur: AsyncCursor[DictRow], thread_id: str) -> None:
    await cur.execute("DELETE FROM runs WHERE thread_id = %s", (thread_id,))
    await cur.execute("DELETE FROM threads WHERE thread_id = %s", (thread_id,))
