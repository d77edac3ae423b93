"""The SQLite dialect: the schema's migrations and every query of the run store, by name.

Each query has a one-line description. Placeholders are named (:name); the run store passes
the same parameters to both dialects, and each query takes the ones it needs. Queries with
{cond} (an owner filter), {where} or {order} are templates the store fills in.
"""

from __future__ import annotations

from agentstream.storage.dialect import Dialect
from agentstream.storage.sql_crons import cron_queries
from agentstream.storage.sqlfilters import contains, equals, key_rows

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
    # 2: crons (times as ISO 8601 text in UTC, which sorts as time does)
    """
    CREATE TABLE IF NOT EXISTS crons (
        cron_id TEXT PRIMARY KEY,
        assistant_id TEXT NOT NULL,
        thread_id TEXT,
        user_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT,
        end_time TEXT,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        on_run_completed TEXT,
        enabled INTEGER NOT NULL,
        next_run_date TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        auth_user TEXT
    );
    CREATE INDEX IF NOT EXISTS crons_due ON crons(next_run_date);
    """,
    # 3: threads' time to live
    """
    CREATE TABLE IF NOT EXISTS thread_ttl (
        thread_id TEXT PRIMARY KEY,
        strategy TEXT NOT NULL,
        ttl_minutes REAL NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS thread_ttl_expires ON thread_ttl(expires_at);
    """,
    # 4: a run's number on its thread, given once and never again (a deleted run keeps its own):
    # the run's place in the thread's log, and so in every seq of its protocol v2 events, after
    # a restart of the embedded deployment too. Existing runs are numbered in creation order.
    """
    ALTER TABLE threads ADD COLUMN run_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN number INTEGER;
    UPDATE runs SET number = (
        SELECT count(*) FROM runs o WHERE o.thread_id = runs.thread_id AND o.seq <= runs.seq);
    UPDATE threads SET run_count = coalesce(
        (SELECT max(number) FROM runs WHERE runs.thread_id = threads.thread_id), 0);
    """,
    # 5: a search's page in the default order walks an index and stops at its limit, instead
    # of sorting every thread (benchmarks.scale: 19 ms at 10,000 threads, growing with them)
    """
    CREATE INDEX IF NOT EXISTS threads_created ON threads(created_at, thread_id);
    """,
    # 6: each thread's top-level scalar metadata as rows of (key, value), kept by triggers: a
    # search by metadata (a user's threads; every search under an owner filter) finds its
    # threads and counts them through an index instead of reading every thread's JSON
    # (benchmarks.scale: 39 ms at 100,000 threads, growing with them). A stateless run's
    # thread, made and deleted with its run, is not kept there (3 % of such a run's cost).
    """
    ALTER TABLE threads ADD COLUMN temporary INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS thread_keys (key TEXT NOT NULL, value, thread_id TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS thread_keys_match ON thread_keys(key, value, thread_id);
    CREATE INDEX IF NOT EXISTS thread_keys_thread ON thread_keys(thread_id);
    CREATE TRIGGER IF NOT EXISTS thread_keys_insert AFTER INSERT ON threads
    WHEN NOT NEW.temporary BEGIN
        INSERT INTO thread_keys SELECT key, value, NEW.thread_id FROM json_each(NEW.metadata)
        WHERE type NOT IN ('object', 'array', 'null');
    END;
    CREATE TRIGGER IF NOT EXISTS thread_keys_update AFTER UPDATE OF metadata ON threads
    WHEN OLD.metadata IS NOT NEW.metadata AND NOT NEW.temporary BEGIN
        DELETE FROM thread_keys WHERE thread_id = OLD.thread_id;
        INSERT INTO thread_keys SELECT key, value, NEW.thread_id FROM json_each(NEW.metadata)
        WHERE type NOT IN ('object', 'array', 'null');
    END;
    CREATE TRIGGER IF NOT EXISTS thread_keys_delete AFTER DELETE ON threads
    WHEN NOT OLD.temporary BEGIN
        DELETE FROM thread_keys WHERE thread_id = OLD.thread_id;
    END;
    INSERT INTO thread_keys SELECT j.key, j.value, t.thread_id
    FROM threads t, json_each(t.metadata) j WHERE j.type NOT IN ('object', 'array', 'null');
    """,
    # 7: thread_keys keeps each thread's created_at, indexed after the key and value: a search
    # by one key in the default order reads its page off the index and stops at the page's end,
    # instead of reading every matching thread to sort them (benchmarks.scale: 2.4 ms for the
    # page of a user with 1,000 threads, growing with them).
    """
    ALTER TABLE thread_keys ADD COLUMN created_at TEXT;
    UPDATE thread_keys SET created_at = (
        SELECT t.created_at FROM threads t WHERE t.thread_id = thread_keys.thread_id);
    DROP INDEX IF EXISTS thread_keys_match;
    CREATE INDEX IF NOT EXISTS thread_keys_page ON thread_keys(key, value, created_at, thread_id);
    DROP TRIGGER IF EXISTS thread_keys_insert;
    DROP TRIGGER IF EXISTS thread_keys_update;
    CREATE TRIGGER thread_keys_insert AFTER INSERT ON threads
    WHEN NOT NEW.temporary BEGIN
        INSERT INTO thread_keys SELECT key, value, NEW.thread_id, NEW.created_at
        FROM json_each(NEW.metadata) WHERE type NOT IN ('object', 'array', 'null');
    END;
    CREATE TRIGGER thread_keys_update AFTER UPDATE OF metadata ON threads
    WHEN OLD.metadata IS NOT NEW.metadata AND NOT NEW.temporary BEGIN
        DELETE FROM thread_keys WHERE thread_id = OLD.thread_id;
        INSERT INTO thread_keys SELECT key, value, NEW.thread_id, NEW.created_at
        FROM json_each(NEW.metadata) WHERE type NOT IN ('object', 'array', 'null');
    END;
    """,
    # 8: a cancel asked of a running run, kept on its row: a worker that missed the message
    # (none listened, its listener was reconnecting) finds it when it next renews the lease
    """
    ALTER TABLE runs ADD COLUMN cancel_action TEXT;
    """,
]

_ASSISTANT = (
    "assistant_id, graph_id, config, context, metadata, name, description, version, "
    "created_at, updated_at"
)
_VERSION = (
    "assistant_id, version, graph_id, config, context, metadata, name, description, created_at"
)
_THREAD = (
    'thread_id, created_at, updated_at, state_updated_at, metadata, status, config, "values", '
    "interrupts, error"
)
_RUN = (
    "run_id, thread_id, assistant_id, metadata, status, kwargs, multitask_strategy, "
    "created_at, updated_at"
)
_R_RUN = ", ".join("r." + c.strip() for c in _RUN.split(","))
_INFLIGHT = "status IN ('pending', 'running')"
# The claim's candidates: the oldest pending run whose thread has nothing running or queued
# before it, and the oldest running run whose lease ran out. Each walks the status index in
# order and stops at its first match; as one query with an OR, SQLite checked every pending
# run and sorted them, on every claim (quadratic in the queue).
_PENDING_RUNNABLE = """r.status = 'pending' AND r.due_at <= :now AND NOT EXISTS (
    SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.seq != r.seq
    AND (o.status = 'running' OR (o.status = 'pending' AND o.seq < r.seq)))"""
_EXPIRED = "status = 'running' AND lease_expires_at < :now"
_NEXT_PENDING = f"SELECT r.seq FROM runs r WHERE {_PENDING_RUNNABLE} ORDER BY r.seq LIMIT 1"
_NEXT_EXPIRED = f"SELECT seq FROM runs WHERE {_EXPIRED} ORDER BY seq LIMIT 1"
_CHECKPOINT_TABLES = (
    ("checkpoints", "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
     "metadata"),
    ("writes", "checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value"),
)  # fmt: skip

QUERIES = {
    # --- assistants ---
    # Insert an assistant unless its id is taken; returns nothing when it is.
    "insert_assistant": f"""
INSERT OR IGNORE INTO assistants ({_ASSISTANT}) VALUES (:assistant_id, :graph_id, :config,
    :context, :metadata, :name, :description, :version, :created_at, :updated_at)
RETURNING assistant_id
""",
    # Record one version of an assistant.
    "insert_version": f"""
INSERT INTO assistant_versions ({_VERSION}) VALUES (:assistant_id, :version, :graph_id, :config,
    :context, :metadata, :name, :description, :at)
""",
    # An assistant the caller may see.
    "get_assistant": f"SELECT {_ASSISTANT} FROM assistants WHERE assistant_id = :assistant_id "
    "AND {cond}",
    # The same, to change it (the write transaction already excludes every other writer).
    "lock_assistant": f"SELECT {_ASSISTANT} FROM assistants WHERE assistant_id = :assistant_id "
    "AND {cond}",
    # The newest version number of an assistant.
    "latest_version": "SELECT max(version) FROM assistant_versions "
    "WHERE assistant_id = :assistant_id",
    # One version's contents.
    "get_version": """
SELECT graph_id, config, context, metadata, name, description FROM assistant_versions
WHERE assistant_id = :assistant_id AND version = :version
""",
    # Point an assistant at new contents (a new or an old version).
    "update_assistant": """
UPDATE assistants SET graph_id = :graph_id, config = :config, context = :context,
    metadata = :metadata, name = :name, description = :description, version = :version,
    updated_at = :at
WHERE assistant_id = :assistant_id
""",
    # Delete an assistant the caller may see (its versions go with it).
    "delete_assistant": "DELETE FROM assistants WHERE assistant_id = :assistant_id AND {cond}",
    # A page of matching assistants.
    "search_assistants": f"SELECT {_ASSISTANT} FROM assistants WHERE {{where}} "
    "ORDER BY {order} LIMIT :limit OFFSET :offset",
    # How many assistants match.
    "count_assistants": "SELECT count(*) FROM assistants WHERE {where}",
    # Assistants of one graph.
    "graph_is": "graph_id = :graph_id",
    # Assistants whose name holds a string, ignoring case.
    "name_like": "name LIKE :name",
    # A page of an assistant's versions, newest first.
    "assistant_versions": f"SELECT {_VERSION} FROM assistant_versions "
    "WHERE assistant_id = :assistant_id AND {cond} "
    "ORDER BY version DESC LIMIT :limit OFFSET :offset",
    # --- threads ---
    # Insert an idle thread unless its id is taken; returns nothing when it is. A temporary
    # one (a stateless run's) is left out of thread_keys.
    "insert_thread": f"""
INSERT OR IGNORE INTO threads ({_THREAD}, temporary) VALUES (:thread_id, :at, :at, :at,
    :metadata, 'idle', '{{"configurable": {{}}}}', NULL, '{{}}', NULL, :temporary)
RETURNING thread_id
""",
    # A stateless run's thread, made busy with its one run counted (no thread_takes_run).
    "insert_temporary_thread": f"""
INSERT OR IGNORE INTO threads ({_THREAD}, temporary, run_count) VALUES (:thread_id, :at, :at,
    :at, :metadata, 'busy', '{{"configurable": {{}}}}', NULL, '{{}}', NULL, 1, 1)
RETURNING thread_id
""",
    # A thread the caller may see.
    "get_thread": f"SELECT {_THREAD} FROM threads WHERE thread_id = :thread_id AND {{cond}}",
    # A thread the caller may see, to change it or its runs (the write transaction already
    # excludes every other writer).
    "lock_thread": 'SELECT metadata, "values", interrupts, status FROM threads '
    "WHERE thread_id = :thread_id AND {cond}",
    # Replace a thread's metadata.
    "set_thread_metadata": f"""
UPDATE threads SET metadata = :metadata, updated_at = :at WHERE thread_id = :thread_id
RETURNING {_THREAD}
""",
    # Copy a thread's row to a new id, idle, unless the id is taken.
    "copy_thread": f"""
INSERT OR IGNORE INTO threads ({_THREAD})
SELECT :new_thread_id, :at, :at, :at, metadata, 'idle', config, "values", interrupts, NULL
FROM threads WHERE thread_id = :thread_id
RETURNING {_THREAD}
""",
    # Cache a thread's latest state; it stays busy while another run of it is queued or running.
    "settle_thread": f"""
UPDATE threads SET
    status = CASE
        WHEN :status IS NULL THEN status
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND {_INFLIGHT}) THEN 'busy'
        ELSE :status END,
    "values" = :values, interrupts = :interrupts, error = :error, updated_at = :at,
    state_updated_at = :at
WHERE thread_id = :thread_id
""",
    # Delete a thread's row.
    "delete_thread": "DELETE FROM threads WHERE thread_id = :thread_id",
    # Delete every run of a thread.
    "delete_thread_runs": "DELETE FROM runs WHERE thread_id = :thread_id",
    # Delete every run of a run's thread (a stateless run's end: no lock_thread_of_run first).
    "delete_runs_of_thread_of_run": "DELETE FROM runs WHERE thread_id = "
    "(SELECT thread_id FROM runs WHERE run_id = :run_id) RETURNING thread_id",
    # A page of matching threads.
    "search_threads": f"SELECT {_THREAD} FROM threads WHERE {{where}} "
    "ORDER BY {order} LIMIT :limit OFFSET :offset",
    # Threads with a metadata key equal to a scalar ({key}: thread_keys' rows of it).
    "thread_with_key": "thread_id IN (SELECT thread_id FROM thread_keys WHERE {key})",
    # A page of them, in creation order: read off thread_keys' index up to the page's end.
    "search_threads_by_key": f"SELECT {_THREAD} FROM threads WHERE thread_id IN ("
    "SELECT thread_id FROM thread_keys WHERE {key} ORDER BY {order} LIMIT :limit OFFSET :offset) "
    "ORDER BY {order}",
    # How many threads have that key equal to that scalar (a thread has a key once).
    "count_threads_by_key": "SELECT count(*) FROM thread_keys WHERE {key}",
    # How many threads match.
    "count_threads": "SELECT count(*) FROM threads WHERE {where}",
    # Threads among some ids.
    "ids_in": "thread_id IN (SELECT value FROM json_each(:ids))",
    # Threads with one status.
    "status_is": "status = :status",
    # --- runs ---
    # The runs of a thread that are queued or running, oldest first.
    "thread_inflight": f"SELECT run_id FROM runs WHERE thread_id = :thread_id AND {_INFLIGHT} "
    "ORDER BY seq",
    # Queue a run; it becomes due after its kwargs' after_seconds. Its number on the thread:
    # :number, or one more than the thread's count of runs (thread_takes_run counts it).
    "insert_run": f"""
INSERT INTO runs ({_RUN}, temporary, auth_user, due_at, number) VALUES (:run_id, :thread_id,
    :assistant_id, :run_metadata, 'pending', :kwargs, :strategy, :created_at, :updated_at,
    :temporary, :auth_user, :now + :after,
    coalesce(:number, (SELECT run_count + 1 FROM threads WHERE thread_id = :thread_id)))
""",
    # Mark a thread busy with a new run, with its metadata merged, and count the run.
    "thread_takes_run": """
UPDATE threads SET status = 'busy', metadata = :metadata, updated_at = :at,
    run_count = run_count + 1
WHERE thread_id = :thread_id
""",
    # A run the caller may see, on a given thread or any.
    "get_run": f"""
SELECT {_R_RUN} FROM runs r JOIN threads t ON t.thread_id = r.thread_id
WHERE r.run_id = :run_id AND (:thread_id IS NULL OR r.thread_id = :thread_id) AND {{cond}}
""",
    # A page of a thread's runs, newest first, of one status or all.
    "list_runs": f"""
SELECT {_RUN} FROM runs WHERE thread_id = :thread_id AND (:status IS NULL OR status = :status)
ORDER BY seq DESC LIMIT :limit OFFSET :offset
""",
    # The numbers of a thread's newest runs, newest first (NULL: none given).
    "run_numbers": """
SELECT number, run_id FROM runs WHERE thread_id = :thread_id ORDER BY seq DESC LIMIT :limit
""",
    # Delete a run of a thread the caller may see.
    "delete_run": """
DELETE FROM runs WHERE run_id = :run_id AND thread_id = :thread_id
AND EXISTS (SELECT 1 FROM threads t WHERE t.thread_id = runs.thread_id AND {cond})
""",
    # The queued and running runs the caller may see, oldest first.
    "inflight_runs": f"""
SELECT {_R_RUN} FROM runs r JOIN threads t ON t.thread_id = r.thread_id
WHERE r.{_INFLIGHT} AND {{where}} ORDER BY r.seq
""",
    # Runs of one thread.
    "run_on_thread": "r.thread_id = :thread_id",
    # Runs among some ids.
    "run_ids_in": "r.run_id IN (SELECT value FROM json_each(:run_ids))",
    # Runs with one status.
    "run_status_is": "r.status = :status",
    # --- the queue ---
    # Start (or restart) under a lease the older of the claim's two candidates (see
    # _NEXT_PENDING), if any. One statement where a pick and a start were two: the write
    # transaction excludes every other claimer, so nothing can come between them anyway.
    "start_next_run": f"""
UPDATE runs SET status = 'running', attempt = attempt + 1, worker_id = :worker_id,
    lease_expires_at = :now + :lease, updated_at = :at
WHERE seq = (SELECT min(seq) FROM (
    SELECT * FROM ({_NEXT_PENDING}) UNION ALL SELECT * FROM ({_NEXT_EXPIRED})))
RETURNING {_RUN}, attempt, temporary, auth_user
""",
    # The assistant of a run just started, read in the claim's own transaction and hand-off:
    # the executor needs it at once (asked for on its own, a read on the event loop's thread
    # for every claimed run: about 12,000 instructions a run of 50 at once).
    "claimed_assistant": f"SELECT {_ASSISTANT} FROM assistants WHERE assistant_id = :assistant_id",
    # Start a run just queued (alone on its thread) for the creating process's own worker
    # (RunService.create), when a claim now would pick it: it is due, and no older run is
    # runnable (pending and first on its thread, or running with its lease run out).
    "start_new_run": f"""
UPDATE runs SET status = 'running', attempt = 1, worker_id = :worker_id,
    lease_expires_at = :now + :lease, updated_at = :at
WHERE run_id = :run_id AND status = 'pending' AND attempt = 0 AND due_at <= :now
AND NOT EXISTS (SELECT 1 FROM runs r WHERE {_PENDING_RUNNABLE} AND r.seq < runs.seq)
AND NOT EXISTS (SELECT 1 FROM runs WHERE {_EXPIRED})
""",
    # When the next delayed run falls due, no later than base.LATEST_DUE (a due time stored
    # before after_seconds was bounded may lie beyond what a datetime holds).
    "next_due": """
SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', min(min(due_at), 253370764800.0), 'unixepoch')
FROM runs WHERE status = 'pending' AND due_at > :now
""",
    # Extend a lease, only for the worker holding it, and say what cancel was asked meanwhile.
    "renew_lease": """
UPDATE runs SET lease_expires_at = :now + :lease
WHERE run_id = :run_id AND worker_id = :worker_id AND status = 'running'
RETURNING cancel_action
""",
    # Keep a cancel asked of a running run on its row.
    "ask_cancel": """
UPDATE runs SET cancel_action = :action WHERE run_id = :run_id AND status = 'running'
""",
    # The thread of a run and its state (NULLs when the thread is gone), to change both (the
    # write transaction already excludes every other writer).
    "lock_thread_of_run": """
SELECT r.thread_id, t.metadata, t."values", t.interrupts, t.status
FROM runs r LEFT JOIN threads t ON t.thread_id = r.thread_id WHERE r.run_id = :run_id
""",
    # Record how a run ended.
    "end_run": "UPDATE runs SET status = :status, updated_at = :at, lease_expires_at = NULL "
    "WHERE run_id = :run_id",
    # End a run that no worker has taken.
    "cancel_pending": "UPDATE runs SET status = :status, updated_at = :at "
    "WHERE run_id = :run_id AND status = 'pending'",
    # Delete one run.
    "delete_run_row": "DELETE FROM runs WHERE run_id = :run_id",
    # Let every running run be claimed again at once.
    "expire_leases": "UPDATE runs SET lease_expires_at = 0 WHERE status = 'running'",
    # How many runs wait and run (for /metrics).
    "queue_counts": "SELECT status, count(*) FROM runs WHERE status IN ('pending', 'running') "
    "GROUP BY status",
    # Each due pending run: seconds since it fell due, and whether no run of its thread is
    # running.
    "pending_waits": """
SELECT :now - max(r.due_at, (julianday(r.created_at) - 2440587.5) * 86400.0),
    NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.status = 'running')
FROM runs r WHERE r.status = 'pending' AND r.due_at <= :now
""",
}

QUERIES.update(cron_queries(lambda name: f":{name}", ""))
QUERIES.update(
    {
        # Give a thread a time to live, replacing any it had.
        "set_thread_ttl": "INSERT OR REPLACE INTO thread_ttl VALUES (:thread_id, :strategy, "
        ":ttl_minutes, :expires_at)",
        # Threads whose time ran out, the longest expired first.
        "expired_threads": "SELECT thread_id, strategy FROM thread_ttl WHERE expires_at <= :clock "
        "ORDER BY expires_at LIMIT :limit",
        # Whether a thread's time has run out.
        "thread_expired": "SELECT 1 FROM thread_ttl WHERE thread_id = :thread_id "
        "AND expires_at <= :clock",
        # Forget a thread's time to live.
        "drop_thread_ttl": "DELETE FROM thread_ttl WHERE thread_id = :thread_id",
    }
)

# Statements on the checkpoint saver's tables, which live in our file.
SCRIPTS = {
    # Copy a thread's checkpoints and pending writes to another thread id.
    "copy_checkpoints": tuple(
        f"INSERT INTO {table} (thread_id, {cols}) SELECT :new_thread_id, {cols} FROM {table} "
        "WHERE thread_id = :thread_id"
        for table, cols in _CHECKPOINT_TABLES
    ),
    # Delete a thread's checkpoints and pending writes.
    "delete_checkpoints": tuple(
        f"DELETE FROM {table} WHERE thread_id = :thread_id" for table, _ in _CHECKPOINT_TABLES
    ),
    # Delete the checkpoints a run wrote and their pending writes.
    "delete_run_checkpoints": tuple(
        f"DELETE FROM {table} WHERE thread_id = :thread_id AND checkpoint_id IN ("
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = :thread_id "
        "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = :run_id)"
        for table in ("writes", "checkpoints")
    ),
    # Delete every checkpoint of a thread but the latest of each namespace, and their writes.
    "keep_latest_checkpoint": tuple(
        f"DELETE FROM {table} WHERE thread_id = :thread_id AND checkpoint_id NOT IN ("
        "SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = :thread_id "
        "GROUP BY checkpoint_ns)"
        for table in ("writes", "checkpoints")
    ),
    # Blobs outlive their checkpoints only in PostgreSQL's saver.
    "delete_orphan_blobs": (),
}


def _mark(name: str) -> str:
    return f":{name}"


DIALECT = Dialect(QUERIES, SCRIPTS, _mark, equals, contains, "1", key_rows)
