"""The PostgreSQL dialect: the schema's migrations and every query of the run store, by name.

Each query has a one-line description. Placeholders are named (%(name)s); the run store passes
the same parameters to both dialects, and each query takes the ones it needs (times come from
the database's clock here, not from the parameters). Queries with {cond} (an owner filter),
{where} or {order} are templates the store fills in.

Over 400 lines of SQL text, by design: every query of the dialect in one place, beside its
twin in sql_sqlite.py.
"""

from __future__ import annotations

from agentstream.storage.dialect import CLAIM_TRIES, Dialect
from agentstream.storage.pgfilters import contains, equals
from agentstream.storage.sql_crons import cron_queries
from agentstream.storage.sql_pgverbs import CALLS, functions

# Advisory lock keys. Migrations use the one-bigint key space, threads the two-int4 space, so
# a thread's hash can never collide with the migration lock.
MIGRATE_LOCK = 0x6167_656E_7473_7472  # "agentstr"
SAVER_SETUP_LOCK = MIGRATE_LOCK + 1
_THREAD_LOCK_SPACE = 0x6167_6E74  # "agnt"

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
    # 2: crons
    """
    CREATE TABLE IF NOT EXISTS crons (
        cron_id TEXT PRIMARY KEY,
        assistant_id TEXT NOT NULL,
        thread_id TEXT,
        user_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT,
        end_time TIMESTAMPTZ,
        payload JSONB NOT NULL,
        metadata JSONB NOT NULL,
        on_run_completed TEXT,
        enabled BOOLEAN NOT NULL,
        next_run_date TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        auth_user JSONB
    );
    CREATE INDEX IF NOT EXISTS crons_due ON crons (next_run_date);
    CREATE INDEX IF NOT EXISTS crons_metadata ON crons USING gin (metadata jsonb_path_ops);
    """,
    # 3: threads' time to live
    """
    CREATE TABLE IF NOT EXISTS thread_ttl (
        thread_id TEXT PRIMARY KEY,
        strategy TEXT NOT NULL,
        ttl_minutes DOUBLE PRECISION NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX IF NOT EXISTS thread_ttl_expires ON thread_ttl (expires_at);
    """,
    # 4: a run's number on its thread (see the SQLite dialect's migration 4)
    """
    ALTER TABLE threads ADD COLUMN IF NOT EXISTS run_count BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS number BIGINT;
    UPDATE runs SET number = o.n FROM (
        SELECT seq, row_number() OVER (PARTITION BY thread_id ORDER BY seq) AS n FROM runs
    ) o WHERE o.seq = runs.seq;
    UPDATE threads SET run_count = coalesce(
        (SELECT max(number) FROM runs WHERE runs.thread_id = threads.thread_id), 0);
    """,
    # 5: a search's page in the default order walks an index and stops at its limit
    """
    CREATE INDEX IF NOT EXISTS threads_created ON threads (created_at, thread_id);
    """,
    # 6: whether a run is first in line on its thread, one probe of the runs in flight there:
    # runs_thread and runs_inflight together (a bitmap of every run in flight, dead ones too,
    # for each run looked at) made a claim among 200 queued runs take 40 ms of the database
    """
    CREATE INDEX IF NOT EXISTS runs_thread_inflight ON runs (thread_id, seq)
        WHERE status IN ('pending', 'running');
    """,
    # 7: a cancel asked of a running run, kept on its row (see the SQLite dialect's migration 8)
    """
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS cancel_action TEXT;
    """,
]

# Which migrations this database has had.
SCHEMA_VERSION = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)"

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
# An idle thread, unless its id is taken (insert_thread and create_thread return different
# columns of it).
_INSERT_THREAD = f"""
INSERT INTO threads ({_THREAD}) VALUES (%(thread_id)s, now(), now(), now(), %(metadata)s,
    'idle', '{{"configurable": {{}}}}', NULL, '{{}}', NULL)
ON CONFLICT (thread_id) DO NOTHING"""
_RUN = (
    "run_id, thread_id, assistant_id, metadata, status, kwargs, multitask_strategy, "
    "created_at, updated_at"
)
_R_RUN = ", ".join("r." + c.strip() for c in _RUN.split(","))
_INFLIGHT = "status IN ('pending', 'running')"
# A run is runnable when it is due and first in line on its thread, or when its lease ran out.
_RUNNABLE = f"""(
    (r.status = 'pending' AND r.due_at <= now() AND NOT EXISTS (
        SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.seq <> r.seq
        AND (o.status = 'running' OR (o.status = 'pending' AND o.seq < r.seq))))
    OR (r.status = 'running' AND r.lease_expires_at < now())
) AND r.{_INFLIGHT}"""
_CHECKPOINT_TABLES = (
    ("checkpoints", "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
     "metadata"),
    ("checkpoint_blobs", "checkpoint_ns, channel, version, type, blob"),
    ("checkpoint_writes", "checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, "
     "type, blob"),
)  # fmt: skip

QUERIES = {
    # --- assistants ---
    # Insert an assistant unless its id is taken; returns nothing when it is.
    "insert_assistant": f"""
INSERT INTO assistants ({_ASSISTANT}) VALUES (%(assistant_id)s, %(graph_id)s, %(config)s,
    %(context)s, %(metadata)s, %(name)s, %(description)s, %(version)s, %(created_at)s,
    %(updated_at)s)
ON CONFLICT (assistant_id) DO NOTHING RETURNING assistant_id
""",
    # Record one version of an assistant.
    "insert_version": f"""
INSERT INTO assistant_versions ({_VERSION}) VALUES (%(assistant_id)s, %(version)s, %(graph_id)s,
    %(config)s, %(context)s, %(metadata)s, %(name)s, %(description)s, %(at)s)
""",
    # An assistant the caller may see.
    "get_assistant": f"SELECT {_ASSISTANT} FROM assistants WHERE assistant_id = %(assistant_id)s "
    "AND {cond}",
    # The same, locked until commit, to change it.
    "lock_assistant": f"SELECT {_ASSISTANT} FROM assistants "
    "WHERE assistant_id = %(assistant_id)s AND {cond} FOR UPDATE",
    # The newest version number of an assistant.
    "latest_version": "SELECT max(version) FROM assistant_versions "
    "WHERE assistant_id = %(assistant_id)s",
    # One version's contents.
    "get_version": """
SELECT graph_id, config, context, metadata, name, description FROM assistant_versions
WHERE assistant_id = %(assistant_id)s AND version = %(version)s
""",
    # Point an assistant at new contents (a new or an old version).
    "update_assistant": """
UPDATE assistants SET graph_id = %(graph_id)s, config = %(config)s, context = %(context)s,
    metadata = %(metadata)s, name = %(name)s, description = %(description)s,
    version = %(version)s, updated_at = now()
WHERE assistant_id = %(assistant_id)s
""",
    # Delete an assistant the caller may see (its versions go with it).
    "delete_assistant": "DELETE FROM assistants WHERE assistant_id = %(assistant_id)s AND {cond}",
    # A page of matching assistants.
    "search_assistants": f"SELECT {_ASSISTANT} FROM assistants WHERE {{where}} "
    "ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s",
    # How many assistants match.
    "count_assistants": "SELECT count(*) FROM assistants WHERE {where}",
    # Assistants of one graph.
    "graph_is": "graph_id = %(graph_id)s",
    # Assistants whose name holds a string, ignoring case (as SQLite's LIKE does).
    "name_like": "name ILIKE %(name)s",
    # A page of an assistant's versions, newest first.
    "assistant_versions": f"SELECT {_VERSION} FROM assistant_versions "
    "WHERE assistant_id = %(assistant_id)s AND {cond} "
    "ORDER BY version DESC LIMIT %(limit)s OFFSET %(offset)s",
    # --- threads ---
    # Insert an idle thread unless its id is taken; returns nothing when it is.
    "insert_thread": f"{_INSERT_THREAD} RETURNING thread_id\n",
    # A thread the caller may see.
    "get_thread": f"SELECT {_THREAD} FROM threads WHERE thread_id = %(thread_id)s AND {{cond}}",
    # Insert an idle thread unless its id is taken, and return it (made) or the one that had
    # the id (not made), if the caller may see it: insert_thread and get_thread in one step.
    "create_thread": f"""
WITH new AS ({_INSERT_THREAD.replace("{", "{{").replace("}", "}}")} RETURNING {_THREAD})
SELECT TRUE AS made, {_THREAD} FROM new WHERE {{cond}}
UNION ALL
SELECT FALSE, {_THREAD} FROM threads
WHERE thread_id = %(thread_id)s AND {{cond}} AND NOT EXISTS (SELECT FROM new)
""",
    # Lock a thread the caller may see: every change of a thread's runs or status takes this
    # first.
    "lock_thread": 'SELECT metadata, "values", interrupts, status FROM threads '
    "WHERE thread_id = %(thread_id)s AND {cond} FOR UPDATE",
    # Replace a thread's metadata.
    "set_thread_metadata": f"""
UPDATE threads SET metadata = %(metadata)s, updated_at = now() WHERE thread_id = %(thread_id)s
RETURNING {_THREAD}
""",
    # Copy a thread's row to a new id, idle, unless the id is taken.
    "copy_thread": f"""
INSERT INTO threads ({_THREAD})
SELECT %(new_thread_id)s, now(), now(), now(), metadata, 'idle', config, "values", interrupts,
    NULL
FROM threads WHERE thread_id = %(thread_id)s
ON CONFLICT (thread_id) DO NOTHING RETURNING {_THREAD}
""",
    # Cache a thread's latest state; it stays busy while another run of it is queued or running.
    "settle_thread": f"""
UPDATE threads SET
    status = CASE
        WHEN %(status)s::text IS NULL THEN status
        WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = %(thread_id)s AND {_INFLIGHT})
            THEN 'busy'
        ELSE %(status)s::text END,
    "values" = %(values)s, interrupts = %(interrupts)s, error = %(error)s,
    updated_at = now(), state_updated_at = now()
WHERE thread_id = %(thread_id)s
""",
    # Delete a thread's row.
    "delete_thread": "DELETE FROM threads WHERE thread_id = %(thread_id)s",
    # Delete every run of a thread.
    "delete_thread_runs": "DELETE FROM runs WHERE thread_id = %(thread_id)s",
    # A page of matching threads.
    "search_threads": f"SELECT {_THREAD} FROM threads WHERE {{where}} "
    "ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s",
    # How many threads match.
    "count_threads": "SELECT count(*) FROM threads WHERE {where}",
    # Threads among some ids.
    "ids_in": "thread_id IN (SELECT jsonb_array_elements_text(%(ids)s))",
    # Threads with one status.
    "status_is": "status = %(status)s",
    # --- runs ---
    # The runs of a thread that are queued or running, oldest first.
    "thread_inflight": f"SELECT run_id FROM runs WHERE thread_id = %(thread_id)s AND {_INFLIGHT} "
    "ORDER BY seq",
    # Queue a run; it becomes due after its kwargs' after_seconds.
    "insert_run": f"""
INSERT INTO runs ({_RUN}, temporary, auth_user, due_at, number) VALUES (%(run_id)s,
    %(thread_id)s, %(assistant_id)s, %(run_metadata)s, 'pending', %(kwargs)s, %(strategy)s,
    %(created_at)s, %(updated_at)s, %(temporary)s, %(auth_user)s,
    now() + make_interval(secs => %(after)s),
    (SELECT run_count + 1 FROM threads WHERE thread_id = %(thread_id)s))
""",
    # Mark a thread busy with a new run, with its metadata merged, and count the run.
    "thread_takes_run": """
UPDATE threads SET status = 'busy', metadata = %(metadata)s, updated_at = now(),
    run_count = run_count + 1
WHERE thread_id = %(thread_id)s
""",
    # A run the caller may see, on a given thread or any.
    "get_run": f"""
SELECT {_R_RUN} FROM runs r JOIN threads t ON t.thread_id = r.thread_id
WHERE r.run_id = %(run_id)s AND (%(thread_id)s::text IS NULL OR r.thread_id = %(thread_id)s)
    AND {{cond}}
""",
    # A page of a thread's runs, newest first, of one status or all.
    "list_runs": f"""
SELECT {_RUN} FROM runs
WHERE thread_id = %(thread_id)s AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY seq DESC LIMIT %(limit)s OFFSET %(offset)s
""",
    # The numbers of a thread's newest runs, newest first (NULL: none given).
    "run_numbers": """
SELECT number, run_id FROM runs WHERE thread_id = %(thread_id)s ORDER BY seq DESC
LIMIT %(limit)s
""",
    # Delete a run of a thread the caller may see.
    "delete_run": """
DELETE FROM runs r USING threads t WHERE r.run_id = %(run_id)s AND r.thread_id = %(thread_id)s
AND t.thread_id = r.thread_id AND {cond}
""",
    # The queued and running runs the caller may see, oldest first.
    "inflight_runs": f"""
SELECT {_R_RUN} FROM runs r JOIN threads t ON t.thread_id = r.thread_id
WHERE r.{_INFLIGHT} AND {{where}} ORDER BY r.seq
""",
    # Runs of one thread.
    "run_on_thread": "r.thread_id = %(thread_id)s",
    # Runs among some ids.
    "run_ids_in": "r.run_id IN (SELECT jsonb_array_elements_text(%(run_ids)s))",
    # Runs with one status.
    "run_status_is": "r.status = %(status)s",
    # --- the queue ---
    # The oldest runnable run nobody else is claiming right now, and its thread's claim lock:
    # claims of one thread then run one after the other until commit, each seeing what the
    # last started.
    "pick_run": f"""
SELECT p.seq, pg_advisory_xact_lock({_THREAD_LOCK_SPACE}, hashtext(p.thread_id)) FROM (
    SELECT r.seq, r.thread_id FROM runs r WHERE {_RUNNABLE}
    ORDER BY r.seq LIMIT 1 FOR UPDATE OF r SKIP LOCKED
) p
""",
    # Start (or restart) the picked run under a lease, if it is still runnable.
    "start_run": f"""
UPDATE runs r SET status = 'running', attempt = r.attempt + 1, worker_id = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
WHERE r.seq = %(seq)s AND {_RUNNABLE}
RETURNING {_R_RUN}, r.attempt, r.temporary, r.auth_user
""",
    # Start a run just queued (alone on its thread) for the creating process's own worker
    # (RunService.create), when a claim now would pick it: it is due, and no older run is
    # runnable (one being claimed elsewhere counts: the new run then waits for a claim too).
    "start_new_run": f"""
UPDATE runs n SET status = 'running', attempt = 1, worker_id = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
WHERE n.run_id = %(run_id)s AND n.status = 'pending' AND n.attempt = 0 AND n.due_at <= now()
AND NOT EXISTS (SELECT 1 FROM runs r WHERE {_RUNNABLE} AND r.seq < n.seq)
""",
    # When the next delayed run falls due, no later than base.LATEST_DUE (a due time stored
    # before after_seconds was bounded, or 'infinity', does not load as a datetime).
    "next_due": """
SELECT min(least(due_at, '9999-01-01Z')) FROM runs
WHERE status = 'pending' AND due_at > now()
""",
    # Extend a lease, only for the worker holding it, and say what cancel was asked meanwhile.
    "renew_lease": """
UPDATE runs SET lease_expires_at = now() + make_interval(secs => %(lease)s)
WHERE run_id = %(run_id)s AND worker_id = %(worker_id)s AND status = 'running'
RETURNING cancel_action
""",
    # Keep a cancel asked of a running run on its row.
    "ask_cancel": """
UPDATE runs SET cancel_action = %(action)s WHERE run_id = %(run_id)s AND status = 'running'
""",
    # The thread of a run and its state (NULLs when the thread is gone), the thread locked
    # until commit: threads before runs, always.
    "lock_thread_of_run": """
SELECT r.thread_id, t.metadata, t."values", t.interrupts, t.status
FROM runs r LEFT JOIN LATERAL (
    SELECT * FROM threads WHERE thread_id = r.thread_id FOR UPDATE
) t ON TRUE
WHERE r.run_id = %(run_id)s
""",
    # Record how a run ended.
    "end_run": "UPDATE runs SET status = %(status)s, updated_at = now(), lease_expires_at = NULL "
    "WHERE run_id = %(run_id)s",
    # End a run that no worker has taken.
    "cancel_pending": "UPDATE runs SET status = %(status)s, updated_at = now() "
    "WHERE run_id = %(run_id)s AND status = 'pending'",
    # Delete one run.
    "delete_run_row": "DELETE FROM runs WHERE run_id = %(run_id)s",
    # Let every running run be claimed again at once.
    "expire_leases": "UPDATE runs SET lease_expires_at = '-infinity' WHERE status = 'running'",
    # How many runs wait and run (for /metrics).
    "queue_counts": "SELECT status, count(*) FROM runs WHERE status IN ('pending', 'running') "
    "GROUP BY status",
    # Each due pending run: seconds since it fell due, and whether no run of its thread is
    # running.
    "pending_waits": """
SELECT extract(epoch FROM now() - greatest(r.due_at, r.created_at))::float8,
    NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.status = 'running')
FROM runs r WHERE r.status = 'pending' AND r.due_at <= now()
""",
}

QUERIES.update(cron_queries(lambda name: f"%({name})s", " FOR UPDATE SKIP LOCKED"))
QUERIES.update(
    {
        # Give a thread a time to live, replacing any it had.
        "set_thread_ttl": """
INSERT INTO thread_ttl VALUES (%(thread_id)s, %(strategy)s, %(ttl_minutes)s, %(expires_at)s)
ON CONFLICT (thread_id) DO UPDATE SET strategy = excluded.strategy,
    ttl_minutes = excluded.ttl_minutes, expires_at = excluded.expires_at
""",
        # Threads whose time ran out, the longest expired first.
        "expired_threads": "SELECT thread_id, strategy FROM thread_ttl "
        "WHERE expires_at <= %(clock)s ORDER BY expires_at LIMIT %(limit)s",
        # Whether a thread's time has run out.
        "thread_expired": "SELECT 1 FROM thread_ttl WHERE thread_id = %(thread_id)s "
        "AND expires_at <= %(clock)s",
        # Forget a thread's time to live.
        "drop_thread_ttl": "DELETE FROM thread_ttl WHERE thread_id = %(thread_id)s",
    }
)

# Statements on the checkpoint saver's tables.
SCRIPTS = {
    # Copy a thread's checkpoints, blobs and pending writes to another thread id.
    "copy_checkpoints": tuple(
        f"INSERT INTO {table} (thread_id, {cols}) SELECT %(new_thread_id)s, {cols} FROM {table} "
        "WHERE thread_id = %(thread_id)s"
        for table, cols in _CHECKPOINT_TABLES
    ),
    # Delete a thread's checkpoints, blobs and pending writes.
    "delete_checkpoints": tuple(
        f"DELETE FROM {table} WHERE thread_id = %(thread_id)s" for table, _ in _CHECKPOINT_TABLES
    ),
    # Delete every checkpoint of a thread but the latest of each namespace, their writes, and
    # the blobs no remaining checkpoint refers to.
    "keep_latest_checkpoint": (
        *(
            f"DELETE FROM {table} WHERE thread_id = %(thread_id)s AND checkpoint_id NOT IN ("
            "SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = %(thread_id)s "
            "GROUP BY checkpoint_ns)"
            for table in ("checkpoint_writes", "checkpoints")
        ),
        """
DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(thread_id)s AND NOT EXISTS (
    SELECT 1 FROM checkpoints c WHERE c.thread_id = %(thread_id)s
        AND c.checkpoint_ns = b.checkpoint_ns
        AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)
""",
    ),
    # Remove a run's checkpoints and their pending writes; returns the channel versions they
    # held.
    "delete_run_checkpoints": (
        """
WITH gone AS (
    DELETE FROM checkpoints WHERE thread_id = %(thread_id)s AND metadata->>'run_id' = %(run_id)s
    RETURNING checkpoint_ns, checkpoint_id, checkpoint
), writes AS (
    DELETE FROM checkpoint_writes w USING gone g
    WHERE w.thread_id = %(thread_id)s AND w.checkpoint_ns = g.checkpoint_ns
        AND w.checkpoint_id = g.checkpoint_id
)
SELECT DISTINCT g.checkpoint_ns, v.key, v.value
FROM gone g, jsonb_each_text(g.checkpoint -> 'channel_versions') v
""",
    ),
    # Remove the blobs of those versions that no remaining checkpoint refers to.
    "delete_orphan_blobs": (
        """
DELETE FROM checkpoint_blobs b
USING unnest(%(ns)s::text[], %(channel)s::text[], %(version)s::text[]) AS d(ns, channel, version)
WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = d.ns AND b.channel = d.channel
    AND b.version = d.version
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints c WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = d.ns
            AND c.checkpoint -> 'channel_versions' ->> d.channel = d.version)
""",
    ),
}


def _mark(name: str) -> str:
    return f"%({name})s"


# The queue's verbs of several steps as functions (sql_pgverbs.py), defined at every start.
FUNCTIONS = functions(QUERIES, SCRIPTS, _ASSISTANT, CLAIM_TRIES)

DIALECT = Dialect({**QUERIES, **CALLS}, SCRIPTS, _mark, equals, contains, "TRUE")
