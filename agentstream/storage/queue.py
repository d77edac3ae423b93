"""The run queue's verbs, once for every backend: create, claim, renew, finish, cancel, roll back.

Each multi-step verb is a generator of named statements (see dialect.Verb) that its connector
runs in one transaction: on SQLite inside one hand-off to the connection's thread, so that
concurrent calls still share a commit; on PostgreSQL with an await per statement. Where each
step costs a round trip, the dialect may give a verb as one statement (PostgreSQL's create,
claim and finish: sql_pgverbs.py), and the verb then sends that instead of its steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from agentstream import serde
from agentstream.protocol import RunStatus, ThreadStatus
from agentstream.storage.base import (
    Assistant,
    NewRun,
    NotFound,
    Queued,
    QueueStats,
    Run,
    RunClaim,
    ThreadBusy,
    UnreadableRun,
    utcnow,
)
from agentstream.storage.dialect import CLAIM_TRIES, Dialect, Params, Verb, match
from agentstream.storage.together import Together

T = TypeVar("T")
Row = Sequence[Any]

# Connections a backend keeps for statements written apart (Connector.write): the ends of
# runs, four in flight at most. With two, an end waited for one of them about as long as its
# own statement took (3.5 and 4.5 ms p50, 50 threaded runs at once on `serve` + `worker`).
ENDS_CONNECTIONS = 4

_GONE = object()  # the picked run was started by someone else meanwhile


class Connector(Protocol):
    """Runs statements on one backend and converts its values; knows no rule of ours."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def checkpointer(self) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]: ...

    def json(self, value: Any) -> Any:
        """A JSON parameter (None is SQL NULL)."""
        ...

    def load(self, value: Any) -> Any:
        """A JSON column's value."""
        ...

    def ts(self, value: datetime) -> Any:
        """A timestamp parameter."""
        ...

    def load_ts(self, value: Any) -> datetime: ...

    async def write(self, verb: Verb[T], *, single: bool = False, apart: bool = False) -> T:
        """Run the verb's statements in one write transaction, committed before this returns.

        single: the verb is one statement that is atomic by itself (a function of several
        steps, one UPDATE), so no transaction block is needed around it: on PostgreSQL its
        BEGIN and COMMIT were a round trip each, more than the statement's own.
        apart: a statement of one (single) that must not wait behind the others, on a
        connection kept apart for such (the ends of runs, see QueueStore._finishes), where
        the backend has connections to keep."""
        ...

    async def read(self, verb: Verb[T]) -> T:
        """Run the verb's statements (reads) outside a transaction."""
        ...

    async def get(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        """One row by key: the cheapest read there is."""
        ...

    def queued_notices(self, on_queued: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """See RunQueue.queued_notices: the backend's own channel, if it has one."""
        ...

    def ended_notices(self, on_ended: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
        """See RunQueue.ended_notices: the backend's own channel, if it has one."""
        ...


# finish_runs' parameters: a list each, one entry per run, in the function's order.
_FINISH_COLUMNS = (
    "run_id", "status", "remove", "thread_status", "thread_values", "thread_interrupts",
    "thread_error", "notice",
)  # fmt: skip


def rows(sql: str, params: Mapping[str, Any]) -> Verb[Sequence[Row]]:
    """A verb of one statement, returning its rows."""
    found, _ = yield sql, params
    return found


def count(sql: str, params: Mapping[str, Any]) -> Verb[int]:
    """A verb of one statement, returning how many rows it changed."""
    _, changed = yield sql, params
    return changed


class QueueStore:
    """The verbs the worker and the run service use; RunStore adds the records around them."""

    def __init__(self, connector: Connector, dialect: Dialect) -> None:
        self.c = connector
        self.d = dialect
        # Where a run's end is one statement (PostgreSQL), the ends of runs that finish
        # together share one; SQLite's writer thread already commits them together. Several
        # in flight: an end held up (its thread locked by a long delete) holds up no other.
        # On connections of their own (apart, ENDS_CONNECTIONS of them), never queued behind
        # the checkpoint writes of the process's other runs.
        self._finishes = (
            Together(self._finish_many, self._finish_one, flights=ENDS_CONNECTIONS)
            if "finish_runs" in dialect.queries
            else None
        )

    def _params(self, **fixed: Any) -> Params:
        # Both clocks: SQLite's queries take them, PostgreSQL's use the database's.
        return dict(now=time.time(), at=self.c.ts(utcnow()), **fixed)

    def _run(self, r: Row) -> Run:
        load, ts = self.c.load, self.c.load_ts
        return Run(
            run_id=r[0],
            thread_id=r[1],
            assistant_id=r[2],
            metadata=load(r[3]),
            status=r[4],
            kwargs=load(r[5]),
            multitask_strategy=r[6],
            created_at=ts(r[7]),
            updated_at=ts(r[8]),
        )

    def _assistant(self, r: Row) -> Assistant:
        load, ts = self.c.load, self.c.load_ts
        return Assistant(
            assistant_id=r[0],
            graph_id=r[1],
            config=load(r[2]),
            context=load(r[3]),
            metadata=load(r[4]),
            name=r[5],
            description=r[6],
            version=r[7],
            created_at=ts(r[8]),
            updated_at=ts(r[9]),
        )

    # --- creating a run ----------------------------------------------------------------------
    async def create_run(self, new: NewRun) -> Queued:
        # One statement where the dialect has one, atomic by itself unless an owner filter
        # must see the thread first (raising NotFound then rolls the run back).
        single = "create_run" in self.d.queries and not new.filters
        return await self.c.write(self._queue_run(new), single=single)

    def _queue_run(self, new: NewRun) -> Verb[Queued]:
        """Queue a run: the runs it preempts under its multitask strategy, and its claim if it
        was started at once (new.start_for)."""
        run, j = new.run, self.c.json
        worker_id, lease = new.start_for or (None, 0.0)
        p = self._params(
            run_id=run["run_id"],
            thread_id=run["thread_id"],
            assistant_id=run["assistant_id"],
            run_metadata=j(run["metadata"]),
            kwargs=j(run["kwargs"]),
            strategy=run["multitask_strategy"],
            created_at=self.c.ts(run["created_at"]),
            updated_at=self.c.ts(run["updated_at"]),
            temporary=new.temporary,
            auth_user=j(new.auth_user),
            after=float(run["kwargs"].get("after_seconds") or 0),
            metadata=j(dict(new.thread_metadata)),
            worker_id=worker_id,
            lease=float(lease),
            with_assistant=new.with_assistant,
        )
        cond = match(self.d, "metadata", new.filters, p)
        inflight, started, assistant = yield from self._create_run(new, cond, p)
        preempted = inflight if run["multitask_strategy"] in ("interrupt", "rollback") else []
        claim = _started(new, assistant) if started else None
        # A dialect's one-statement create tells the workers of a run it queued (at commit).
        notified = "create_run" in self.d.queries and not started
        return Queued(preempted, claim, assistant, notified, ahead=bool(inflight))

    def queued_notices(self, on_queued: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        return self.c.queued_notices(on_queued)

    def ended_notices(self, on_ended: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
        return self.c.ended_notices(on_ended)

    def _create_run(
        self, new: NewRun, cond: str, p: Params
    ) -> Verb[tuple[list[str], bool, Assistant | None]]:
        insert = new.temporary or new.if_not_exists == "create"
        if "create_run" in self.d.queries:  # the steps below in one statement (PostgreSQL)
            found, _ = yield self.d["create_run"].format(cond=cond), {**p, "insert": insert}
            outcome, visible, inflight = found[0][:3]
            if outcome == "no assistant":
                raise NotFound("assistant", p["assistant_id"])
            if outcome == "missing" or not visible:
                raise NotFound("thread", p["thread_id"])
            if outcome == "busy":
                raise ThreadBusy(p["thread_id"])
            assistant = self._assistant(found[0][3:]) if new.with_assistant else None
            return list(inflight), outcome == "started", assistant
        thread_metadata = new.thread_metadata
        assistant = None
        if new.with_assistant:
            found, _ = yield self.d["get_assistant"].format(cond=self.d.true), p
            if not found:
                raise NotFound("assistant", p["assistant_id"])
            assistant = self._assistant(found[0])
            graph = {"graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}
            thread_metadata = {**thread_metadata, **graph}
            p["metadata"] = self.c.json(dict(thread_metadata))
        created: Sequence[Row] = ()
        # A stateless run's own thread, where the dialect makes it busy with its run counted:
        # no thread_takes_run after the run's insert (SQLite; PostgreSQL creates in one
        # statement).
        made_busy = (
            new.temporary and not new.filters and "insert_temporary_thread" in self.d.queries
        )
        if made_busy:
            created, _ = yield self.d["insert_temporary_thread"], p
        elif insert:
            created, _ = yield self.d["insert_thread"], p
        counted = made_busy and bool(created)  # (an id already taken: the steps below, as ever)
        ahead: list[str] = []
        merged = thread_metadata
        if not (new.temporary and created and not new.filters):
            # The thread's lock makes the check below and the insert one step for every
            # process. (A stateless run's thread, made just now with its metadata and no owner
            # filter to pass, has no runs and nothing to merge: two statements of seven fewer.)
            thread, _ = yield self.d["lock_thread"].format(cond=cond), p
            if not thread:
                raise NotFound("thread", p["thread_id"])
            found, _ = yield self.d["thread_inflight"], p
            ahead = [r[0] for r in found]
            if ahead and p["strategy"] == "reject":
                raise ThreadBusy(p["thread_id"])
            merged = {**self.c.load(thread[0][0]), **thread_metadata}
        yield self.d["insert_run"], {**p, "number": 1 if counted else None}
        if not counted:
            yield self.d["thread_takes_run"], {**p, "metadata": self.c.json(dict(merged))}
        started = False
        if p["worker_id"] is not None and not ahead:
            _, changed = yield self.d["start_new_run"], p
            started = changed == 1
        return ahead, started, assistant

    # --- the queue ---------------------------------------------------------------------------
    async def claim_run(self, worker_id: str, lease_seconds: float) -> RunClaim | None:
        p = self._params(worker_id=worker_id, lease=float(lease_seconds))
        single = "claim_run" in self.d.queries
        for _ in range(CLAIM_TRIES):
            row = await self.c.write(self._claim(p, {}), single=single)
            if row is None:
                return None
            if row is not _GONE:
                return self._claim_of(row)
        return None

    async def claim_runs(
        self, worker_id: str, lease_seconds: float, most: int
    ) -> list[RunClaim | UnreadableRun]:
        # Claims in one verb: on SQLite they share one hand-off to the connection's thread and
        # one commit; where the dialect has them as one statement (PostgreSQL), one round trip.
        if most <= 1:
            try:
                claim = await self.claim_run(worker_id, lease_seconds)
            except UnreadableRun as exc:
                return [exc]
            return [] if claim is None else [claim]
        p = self._params(worker_id=worker_id, lease=float(lease_seconds), most=most)
        if "claim_runs" in self.d.queries:
            found = await self.c.write(rows(self.d["claim_runs"], p), single=True)
        else:
            found = await self.c.write(self._claim_many(p, most))
        claims: list[RunClaim | UnreadableRun] = []
        for row in found:
            try:
                claims.append(self._claim_of(row))
            except UnreadableRun as exc:
                claims.append(exc)
        return claims

    def _claim_many(self, p: Params, most: int) -> Verb[list[Row]]:
        found: list[Row] = []
        assistants: dict[str, Row] = {}  # read once a claim: its runs mostly share one
        for _ in range(most):
            row = yield from self._claim(p, assistants)
            if row is None:
                break
            if row is not _GONE:
                found.append(row)
        return found

    def _claim(self, p: Params, assistants: dict[str, Row]) -> Verb[Any]:
        # SKIP LOCKED lets PostgreSQL claimers pass over each other's picks. Should two of them
        # ever pick two runs of one thread, the thread's advisory lock orders them and the
        # second one's start, a new statement and so a fresh snapshot, sees what the first did.
        if "claim_run" in self.d.queries:  # pick and start in one statement (PostgreSQL)
            found, _ = yield self.d["claim_run"], p
            if not found:
                return None
            return found[0] if found[0][0] is not None else _GONE
        started, _ = yield self.d["start_next_run"], p  # its pick and start in one (SQLite)
        if not started:
            return None
        # With its assistant, as a one-statement claim has it (_claim_of); a run whose
        # assistant is gone claims without, and the executor's own read of it fails the run.
        # `assistants`: those this claim's transaction read already, which nothing else can
        # have changed since (SQLite's write transaction excludes every other writer).
        assistant_id = started[0][2]
        if assistant_id not in assistants:
            found, _ = yield self.d["claimed_assistant"], {"assistant_id": assistant_id}
            if not found:
                return started[0]
            assistants[assistant_id] = found[0]
        return (*started[0], *assistants[assistant_id])

    def _claim_of(self, r: Row) -> RunClaim:
        # Decoded after the claim commits: a row that fails to decode is then a running run of
        # this worker, which ends it as error, never a pending head of the queue that every
        # claim trips over.
        try:
            # A dialect's one-statement claim adds the run's assistant (NULLs when it is gone).
            assistant = self._assistant(r[12:]) if len(r) > 12 and r[12] is not None else None
            return RunClaim(
                run=self._run(r), attempt=r[9], temporary=bool(r[10]), auth_user=self.c.load(r[11]),
                assistant=assistant,
            )  # fmt: skip
        except ValueError as exc:  # orjson's decode error is a ValueError
            raise UnreadableRun(r[0], str(exc)) from exc

    async def next_due(self) -> datetime | None:
        found = await self.c.read(rows(self.d["next_due"], self._params()))
        due = found[0][0] if found else None
        return None if due is None else self.c.load_ts(due)

    async def renew_lease(self, run_id: str, worker_id: str, lease_seconds: float) -> bool | str:
        p = self._params(run_id=run_id, worker_id=worker_id, lease=float(lease_seconds))
        found = await self.c.write(rows(self.d["renew_lease"], p), single=True)
        return (found[0][0] or True) if found else False

    async def ask_cancel(self, run_id: str, action: str) -> bool:
        p = self._params(run_id=run_id, action=action)
        return await self.c.write(count(self.d["ask_cancel"], p), single=True) > 0

    async def expire_leases(self) -> int:
        return await self.c.write(count(self.d["expire_leases"], self._params()), single=True)

    async def queue_stats(self) -> QueueStats:
        counts, waits = await self.c.read(self._queue_stats(self._params()))
        by_status: dict[str, int] = {row[0]: row[1] for row in counts}
        return QueueStats(
            pending=by_status.get("pending", 0),
            running=by_status.get("running", 0),
            waits=[float(row[0]) for row in waits],
            unblocked_waits=[float(row[0]) for row in waits if row[1]],
        )

    def _queue_stats(self, p: Params) -> Verb[tuple[Sequence[Row], Sequence[Row]]]:
        counts, _ = yield self.d["queue_counts"], p
        waits, _ = yield self.d["pending_waits"], p
        return counts, waits

    # --- ending a run ------------------------------------------------------------------------
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
        checkpointed: bool = True,
        notice: str | None = None,
    ) -> bool:
        p = self._params(run_id=run_id, status=status, notice=notice)
        settle = None if delete_thread else self._settled(thread_status, values, interrupts, error)
        if self._finishes is not None:  # one statement, shared by the runs ending together
            cached = settle or {"status": None, "values": None, "interrupts": None, "error": None}
            state = {f"thread_{k}": v for k, v in cached.items()}
            await self._finishes({**p, **state, "remove": settle is None})
            return True  # the statement notifies of the thread's next run (sql_pgverbs)
        await self.c.write(self._finish(p, settle, checkpointed))
        return False

    async def _finish_one(self, call: Params) -> None:
        await self.c.write(rows(self.d["finish_run"], call), single=True, apart=True)

    async def _finish_many(self, calls: list[Params]) -> None:
        columns = {key: [call[key] for call in calls] for key in _FINISH_COLUMNS}
        await self.c.write(rows(self.d["finish_runs"], columns), single=True, apart=True)

    def _settled(
        self, status: ThreadStatus | None, values: Any, interrupts: Mapping[str, Any], error: Any
    ) -> dict[str, Any]:
        """A thread's new status and cached state, as settle_thread's parameters."""
        j = self.c.json
        return {"status": status, "values": j(values), "interrupts": j(dict(interrupts)),
                "error": j(error) if error else None}  # fmt: skip

    def _finish(
        self, p: Params, settle: dict[str, Any] | None, checkpointed: bool = True
    ) -> Verb[None]:
        """A run's end where it is not one statement (SQLite, whose write transaction excludes
        every other writer: its locks are plain reads)."""
        if settle is None and not checkpointed:
            # A stateless run's end: its thread goes, and the run with it, and the tables of
            # checkpoints hold nothing of it. Two statements where there were three.
            found, _ = yield self.d["delete_runs_of_thread_of_run"], p
            if found:
                yield self.d["delete_thread"], {**p, "thread_id": found[0][0]}
            return
        thread = yield from self._lock_thread_of(p)
        if thread is None:
            return
        if settle is None:  # its thread goes, and the run with it: no end to record first
            yield from self._delete_thread_rows(p)
            return
        yield self.d["end_run"], p
        yield self.d["settle_thread"], {**p, **settle}

    def _lock_thread_of(self, p: Params) -> Verb[Row | None]:
        """Lock the thread of a run and put its id in p; its (metadata, values, interrupts,
        status), or None when the run is gone, () when its thread is."""
        found, _ = yield self.d["lock_thread_of_run"], p
        if not found:
            return None
        p["thread_id"], *thread = found[0]
        return thread if thread[3] is not None else ()

    def _delete_thread_rows(self, p: Mapping[str, Any]) -> Verb[None]:
        yield self.d["delete_thread_runs"], p
        yield self.d["delete_thread"], p
        for sql in self.d.scripts["delete_checkpoints"]:
            yield sql, p

    async def cancel_pending(self, run_id: str, *, status: RunStatus) -> bool:
        return await self.c.write(self._cancel_pending(self._params(run_id=run_id, status=status)))

    def _cancel_pending(self, p: Params) -> Verb[bool]:
        thread = yield from self._lock_thread_of(p)
        if thread is None:
            return False
        _, cancelled = yield self.d["cancel_pending"], p
        if not cancelled:
            return False
        if thread:
            load = self.c.load
            status: ThreadStatus = "idle" if thread[3] == "busy" else thread[3]
            settle = self._settled(status, load(thread[1]), load(thread[2]), None)
            yield self.d["settle_thread"], {**p, **settle}
        return True

    async def rollback_run(self, run_id: str, thread_id: str) -> None:
        await self.c.write(self._rollback(self._params(run_id=run_id, thread_id=thread_id)))

    def _rollback(self, p: Params) -> Verb[None]:
        yield self.d["delete_run_row"], p
        versions: Sequence[Row] = ()
        for sql in self.d.scripts["delete_run_checkpoints"]:
            versions, _ = yield sql, p
        if versions:  # the channel versions the run's checkpoints held (PostgreSQL's blobs)
            ns, channel, version = (list(column) for column in zip(*versions, strict=True))
            for sql in self.d.scripts["delete_orphan_blobs"]:
                yield sql, {**p, "ns": ns, "channel": channel, "version": version}


def _started(new: NewRun, assistant: Assistant | None) -> RunClaim:
    """The claim of a run started at creation, as a claim would read it back: its JSON fields
    decoded from their encoding (what an auth handler put in them comes out as stored), and
    its assistant if the create read it."""
    run = new.run
    stored = serde.loads(serde.dumps([run["metadata"], run["kwargs"], new.auth_user]))
    return RunClaim(
        run=Run(
            run_id=run["run_id"],
            thread_id=run["thread_id"],
            assistant_id=run["assistant_id"],
            metadata=stored[0],
            status="running",
            kwargs=stored[1],
            multitask_strategy=run["multitask_strategy"],
            created_at=run["created_at"],
            updated_at=run["updated_at"],
        ),
        attempt=1,
        temporary=new.temporary,
        auth_user=stored[2],
        assistant=assistant,
    )
