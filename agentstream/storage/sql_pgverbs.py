"""The queue's verbs of several steps as PostgreSQL functions: create, claim and finish a run.

Each step of a verb on PostgreSQL costs a round trip (and a statement the server parses and
plans); as one function a verb is one statement. The bodies are made of the dialect's own named
queries, their parameters bound to the function's arguments, so each rule is still written
once; queue.py runs a verb as its function where the dialect has one. Every statement of a
plpgsql function takes a fresh snapshot, as the steps did, so a claim that waited for a
thread's lock still sees what the claimer before it started.

The functions are defined again at every start (under the migration lock): they follow the
queries of the running code, never a migration's frozen copy.
"""

from __future__ import annotations

from collections.abc import Mapping

# What the create function notifies when it queued a run (PostgresConnector.queued_notices).
QUEUED_CHANNEL = "agentstream_runs_queued"
# What a run's end notifies when its worker asked (the event bus's notice of it, see
# EventBus.end_notice): PostgresConnector.ended_notices.
ENDED_CHANNEL = "agentstream_runs_ended"


def _bind(sql: str, **args: str) -> str:
    """A named query with each %(name)s placeholder replaced by an expression of the function."""
    return sql % args


def _create_run(q: Mapping[str, str], assistant_columns: str) -> str:
    run = {name: f"p_{name}" for name in (
        "run_id", "thread_id", "assistant_id", "run_metadata", "kwargs", "strategy",
        "created_at", "updated_at", "temporary", "auth_user", "after"
    )}  # fmt: skip
    # The thread's metadata merged with the run's, as a dict update: jsonb's ||.
    merged = "thread.metadata || p_metadata"
    takes = _bind(q["thread_takes_run"], thread_id="p_thread_id", metadata=merged)
    start = _bind(q["start_new_run"], run_id="p_run_id", worker_id="p_worker_id", lease="p_lease")
    assistant = _bind(q["get_assistant"].format(cond="TRUE"), assistant_id="p_assistant_id")
    into = ", ".join(f"a_{column.strip()}" for column in assistant_columns.split(","))
    # (The functions of thirteen and of fifteen arguments, before runs could start at creation
    # and before the create read the assistant, stay for processes of the older code still
    # running against this database.)
    return f"""
CREATE OR REPLACE FUNCTION agentstream_create_run(
    p_insert boolean, p_thread_id text, p_metadata jsonb, p_run_id text, p_assistant_id text,
    p_run_metadata jsonb, p_kwargs jsonb, p_strategy text, p_created_at timestamptz,
    p_updated_at timestamptz, p_temporary boolean, p_auth_user jsonb, p_after float8,
    p_worker_id text, p_lease float8, p_with_assistant boolean)
RETURNS TABLE (outcome text, metadata jsonb, inflight text[],
    a_assistant_id text, a_graph_id text, a_config jsonb, a_context jsonb, a_metadata jsonb,
    a_name text, a_description text, a_version integer, a_created_at timestamptz,
    a_updated_at timestamptz) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    thread record;
    made bigint;
BEGIN
    IF p_with_assistant THEN
        SELECT * INTO {into} FROM ({assistant}) found;
        IF NOT FOUND THEN
            outcome := 'no assistant';
            RETURN NEXT;
            RETURN;
        END IF;
        p_metadata := p_metadata
            || jsonb_build_object('graph_id', a_graph_id, 'assistant_id', a_assistant_id);
    END IF;
    IF p_insert THEN
        WITH new AS ({_bind(q["insert_thread"], thread_id="p_thread_id", metadata="p_metadata")})
        SELECT count(*) INTO made FROM new;
    END IF;
    SELECT * INTO thread FROM ({_bind(q["lock_thread"], thread_id="p_thread_id")}) locked;
    IF NOT FOUND THEN
        outcome := 'missing';
        RETURN NEXT;
        RETURN;
    END IF;
    metadata := thread.metadata;
    inflight := ARRAY({_bind(q["thread_inflight"], thread_id="p_thread_id")});
    IF cardinality(inflight) > 0 AND p_strategy = 'reject' THEN
        outcome := 'busy';
        RETURN NEXT;
        RETURN;
    END IF;
    {_bind(q["insert_run"], **run)};
    {takes};
    outcome := 'queued';
    IF p_worker_id IS NOT NULL AND cardinality(inflight) = 0 THEN
        {start};
        IF FOUND THEN
            outcome := 'started';
        END IF;
    END IF;
    IF outcome = 'queued' THEN  -- every listening worker hears of it at commit
        PERFORM pg_notify('{QUEUED_CHANNEL}', p_run_id);
    END IF;
    RETURN NEXT;
END $fn$
"""


# A pick walks the runs in flight in queue order and stops at the first runnable one. Without
# this the planner, which takes a handful of runs to be runnable, chose a bitmap of every run in
# flight, each one checked, then sorted: O(runs queued) a pick. With 200 runs queued (200
# streams on 32 slots) a claim of 16 took 5.9 ms of the database, 1.3-1.5 ms with this.
_IN_QUEUE_ORDER = "SET enable_bitmapscan = off"

_CLAIMED = """(run_id text, thread_id text, assistant_id text, metadata jsonb, status text,
    kwargs jsonb, multitask_strategy text, created_at timestamptz, updated_at timestamptz,
    attempt integer, temporary boolean, auth_user jsonb,
    a_assistant_id text, a_graph_id text, a_config jsonb, a_context jsonb, a_metadata jsonb,
    a_name text, a_description text, a_version integer, a_created_at timestamptz,
    a_updated_at timestamptz)"""


def _pick_and_start(q: Mapping[str, str], assistant_columns: str) -> str:
    """One claim's steps, as both claim functions take them: pick the oldest runnable run
    (none: return), then start it and return its row with its assistant's; FOUND says
    whether the start took (another claimer may have started the run meanwhile)."""
    start = _bind(q["start_run"], seq="picked.seq", worker_id="p_worker_id", lease="p_lease")
    assistant = ", ".join(f"a.{column.strip()}" for column in assistant_columns.split(","))
    return f"""SELECT * INTO picked FROM ({_bind(q["pick_run"])}) p;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY WITH started AS ({start})
    SELECT s.*, {assistant} FROM started s
    LEFT JOIN assistants a ON a.assistant_id = s.assistant_id;"""


def _claim_run(q: Mapping[str, str], assistant_columns: str) -> str:
    # (The one-claim function stays for processes of the older code still running against
    # this database; this code claims through agentstream_claim_runs.)
    return f"""
DROP FUNCTION IF EXISTS agentstream_claim_run(text, float8);
CREATE FUNCTION agentstream_claim_run(p_worker_id text, p_lease float8)
RETURNS TABLE {_CLAIMED} LANGUAGE plpgsql {_IN_QUEUE_ORDER} AS $fn$
#variable_conflict use_column
DECLARE
    picked record;
BEGIN
    {_pick_and_start(q, assistant_columns)}
    IF NOT FOUND THEN  -- started by another claimer meanwhile: a row of NULLs says so
        RETURN NEXT;
    END IF;
END $fn$
"""


def _claim_runs(q: Mapping[str, str], assistant_columns: str, tries: int) -> str:
    """Up to p_most claims in one statement, each as the one-claim function makes it: a fresh
    snapshot per pick and start (a plpgsql function is volatile), so each pick sees the runs
    this call started before it (their threads are then in flight) and what other claimers
    committed meanwhile. A picked run another claimer started first costs a try; after
    `tries` of those the call returns what it has (the caller asks again)."""
    return f"""
DROP FUNCTION IF EXISTS agentstream_claim_runs(text, float8, integer);
CREATE FUNCTION agentstream_claim_runs(p_worker_id text, p_lease float8, p_most integer)
RETURNS TABLE {_CLAIMED} LANGUAGE plpgsql {_IN_QUEUE_ORDER} AS $fn$
#variable_conflict use_column
DECLARE
    picked record;
    claimed integer := 0;
    missed integer := 0;
BEGIN
    WHILE claimed < p_most AND missed < {tries} LOOP
    {_pick_and_start(q, assistant_columns)}
        IF FOUND THEN
            claimed := claimed + 1;
        ELSE
            missed := missed + 1;
        END IF;
    END LOOP;
END $fn$
"""


def _finish_run(q: Mapping[str, str], delete_checkpoints: tuple[str, ...]) -> str:
    thread = "p_thread_id"
    deletes = [q["delete_thread_runs"], q["delete_thread"], *delete_checkpoints]
    remove = ";\n        ".join(_bind(sql, thread_id=thread) for sql in deletes)
    settle = _bind(
        q["settle_thread"], thread_id=thread, status="p_status", values="p_values",
        interrupts="p_interrupts", error="p_error",
    )  # fmt: skip
    return f"""
CREATE OR REPLACE FUNCTION agentstream_end_run(
    p_run_id text, p_run_status text, p_remove boolean, p_status text, p_values jsonb,
    p_interrupts jsonb, p_error jsonb)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    locked record;
    p_thread_id text;
    waiting text;
BEGIN
    SELECT * INTO locked FROM ({_bind(q["lock_thread_of_run"], run_id="p_run_id")}) t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    p_thread_id := locked.thread_id;
    {_bind(q["end_run"], run_id="p_run_id", status="p_run_status")};
    IF p_remove THEN
        {remove};
    ELSE
        {settle};
        -- The thread's next run, if one waits for this one: every listening worker hears of
        -- it at commit, as of a run queued (the worker that ran this one wakes nobody).
        SELECT run_id INTO waiting FROM runs
        WHERE thread_id = p_thread_id AND status = 'pending' LIMIT 1;
        IF FOUND THEN
            PERFORM pg_notify('{QUEUED_CHANNEL}', waiting);
        END IF;
    END IF;
END $fn$
"""


def functions(
    q: Mapping[str, str],
    scripts: Mapping[str, tuple[str, ...]],
    assistant_columns: str,
    claim_tries: int,
) -> tuple[str, ...]:
    """The definitions, from the dialect's queries (lock_thread without an owner filter: the
    caller applies it to the locked thread's metadata, see CALLS) and the columns of an
    assistant in the order the run store reads them."""
    q = {**q, "lock_thread": q["lock_thread"].format(cond="TRUE")}
    return (
        _create_run(q, assistant_columns),
        _claim_run(q, assistant_columns),
        _claim_runs(q, assistant_columns, claim_tries),
        _finish_run(q, scripts["delete_checkpoints"]),
    )


CALLS = {
    # Queue a run in one step, as queue.py's _create_run does in several: the outcome
    # (queued, started, busy, missing, or no assistant), whether the caller may see the thread,
    # the runs in flight on it, and the run's assistant when asked to read it. The caller
    # raises for busy, an unseen thread or no assistant, which rolls back everything.
    "create_run": "SELECT f.outcome, {cond}, f.inflight, f.a_assistant_id, f.a_graph_id, "
    "f.a_config, f.a_context, f.a_metadata, f.a_name, f.a_description, f.a_version, "
    "f.a_created_at, f.a_updated_at FROM agentstream_create_run("
    "%(insert)s, %(thread_id)s, %(metadata)s, %(run_id)s, %(assistant_id)s, %(run_metadata)s, "
    "%(kwargs)s, %(strategy)s, %(created_at)s, %(updated_at)s, %(temporary)s, %(auth_user)s, "
    "%(after)s, %(worker_id)s, %(lease)s, %(with_assistant)s) f",
    # Claim the oldest runnable run in one step (pick, then start): its row and its
    # assistant's (the executor's first read), none when there is nothing to claim, or a row
    # of NULLs when another claimer started the picked run first.
    "claim_run": "SELECT * FROM agentstream_claim_run(%(worker_id)s, %(lease)s)",
    # Up to %(most)s claims in one step, in the order one claim after another would make
    # them: their rows as claim_run gives them, none for a run another claimer took first.
    "claim_runs": "SELECT * FROM agentstream_claim_runs(%(worker_id)s, %(lease)s, %(most)s)",
    # End a run in one step: its status, then its thread's state, or the thread removed; the
    # thread's next run, if one waits, is notified at commit. (Named anew, from
    # agentstream_finish_run, when it began to notify: a process of the older version, started
    # during a rolling upgrade, recreates that one as it was, and the newer workers, which
    # wake nobody after a run, would not hear of the next one until a lease check.)
    # With a notice, the run's end is told on ENDED_CHANNEL at the same commit (in the
    # statement, not the function: its signature stays the older processes').
    "finish_run": "SELECT agentstream_end_run(%(run_id)s, %(status)s, %(remove)s, "
    "%(thread_status)s, %(thread_values)s, %(thread_interrupts)s, %(thread_error)s), "
    f"CASE WHEN %(notice)s::text IS NOT NULL THEN pg_notify('{ENDED_CHANNEL}', %(notice)s) END",
    # End several runs in one statement, each as finish_run does (one transaction: its
    # commit, the slowest part of a small write, is shared).
    "finish_runs": "SELECT agentstream_end_run(f.run_id, f.status, f.remove, f.thread_status, "
    "f.thread_values, f.thread_interrupts, f.thread_error), CASE WHEN f.notice IS NOT NULL "
    f"THEN pg_notify('{ENDED_CHANNEL}', f.notice) END FROM unnest(%(run_id)s::text[], "
    "%(status)s::text[], %(remove)s::boolean[], %(thread_status)s::text[], "
    "%(thread_values)s::jsonb[], %(thread_interrupts)s::jsonb[], %(thread_error)s::jsonb[], "
    "%(notice)s::text[]) AS f(run_id, status, remove, thread_status, thread_values, "
    "thread_interrupts, thread_error, notice)",
}
