"""The storage contract: records, errors and the one interface every backend implements.

Over 400 lines because the interface is one Protocol with every verb's signature and its rule
in a docstring (runs, threads, assistants, crons, TTL, the queue): split, a backend's reader
would have to hold several files to see what it must do."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver

from agentstream.protocol import MultitaskStrategy, RunStatus, ThreadStatus

IfExists = Literal["raise", "do_nothing"]

TERMINAL: frozenset[str] = frozenset({"success", "error", "timeout", "interrupted"})

# An owner filter from auth: {"owner": "alice"}, {"owner": {"$eq": "alice"}},
# {"tags": {"$contains": "x"}}.
# Every read and write takes one and applies it inside its query, never to results afterwards.
Filter = Mapping[str, Any]


class Assistant(TypedDict):
    assistant_id: str
    graph_id: str
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    name: str
    description: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class Thread(TypedDict):
    thread_id: str
    created_at: datetime
    updated_at: datetime
    state_updated_at: datetime
    metadata: dict[str, Any]
    status: ThreadStatus
    config: dict[str, Any]
    values: Any
    interrupts: dict[str, Any]
    error: Any


class Run(TypedDict):
    run_id: str
    thread_id: str
    assistant_id: str
    metadata: dict[str, Any]
    status: RunStatus
    kwargs: dict[str, Any]
    multitask_strategy: MultitaskStrategy
    created_at: datetime
    updated_at: datetime


class Cron(TypedDict):
    cron_id: str
    assistant_id: str
    thread_id: str | None
    user_id: str | None
    schedule: str
    timezone: str | None
    end_time: datetime | None
    payload: dict[str, Any]  # the run's fields (input, config, webhook, ...)
    metadata: dict[str, Any]
    on_run_completed: str | None
    enabled: bool
    next_run_date: datetime | None
    created_at: datetime
    updated_at: datetime
    auth_user: dict[str, Any] | None  # whose runs it creates; the API never shows it


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to queue, and how: on which terms it may create its thread, and for whom."""

    run: Run
    temporary: bool  # a stateless run's thread, removed when the run ends
    if_not_exists: Literal["create", "reject"]
    auth_user: dict[str, Any] | None
    thread_metadata: Mapping[str, Any]  # merged into the thread's metadata
    filters: Filter | None = None
    # (worker_id, lease seconds): start the run at once for that worker, the creating
    # process's own with a free slot, when it is due now and nothing is in flight on its thread
    # (RunService.create). It is then running under that worker's lease, never pending.
    start_for: tuple[str, float] | None = None
    # Read the run's assistant in the same step (the API's create: a round trip less than
    # reading it first): NotFound("assistant") when there is none, the thread's metadata gets
    # its graph_id and assistant_id, and Queued.assistant is it.
    with_assistant: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """What create_run did: the runs the new one preempts, its claim if it was started at
    once for NewRun.start_for (its first attempt; the claim a worker would have got, with its
    assistant when it was read), and its assistant if NewRun.with_assistant."""

    preempted: list[str]
    started: RunClaim | None = None
    assistant: Assistant | None = None
    # The store told every process's workers of the queued run itself (PostgreSQL, at
    # commit: see RunQueue.queued_notices), so nobody needs to wake them.
    notified: bool = False
    # Runs were in flight on its thread when it was created: it waits for them (enqueued) or
    # for their cancel (interrupt, rollback) before a worker may take it.
    ahead: bool = False


@dataclass
class CronFiring:
    """A claimed cron slot: the run it queued (in the same transaction), or why it queued none."""

    cron: Cron
    new: NewRun | None
    preempted: list[str]  # runs the new one interrupts (its multitask strategy)
    skipped: str | None = None


class RunClaim(TypedDict):
    """What a worker gets when it claims a run: the run plus what the API never shows."""

    run: Run
    attempt: int
    temporary: bool
    auth_user: dict[str, Any] | None
    # Its assistant, where the claim reads it in the same statement (PostgreSQL); None where
    # it does not, or the assistant is gone: the executor then looks it up.
    assistant: Assistant | None


class QueueStats(TypedDict):
    pending: int
    running: int
    # Seconds since each due pending run fell due, and whether its thread is free to run it.
    waits: list[float]
    unblocked_waits: list[float]


# The kinds of storage errors: what was missing, what was taken ("busy": a thread's turn).
Missing = Literal["assistant", "version", "thread", "run", "cron"]
Taken = Literal["assistant", "thread", "busy"]


class StorageError(Exception):
    """What went wrong, as data: which kind of record and its key. The API words it for clients
    (api/errors.py); str() is for logs and generic error events."""

    def __init__(self, what: str, *key: object) -> None:
        super().__init__(what, *key)
        self.what = what
        self.key = key


class NotFound(StorageError):
    """No such record, or one the caller's owner filter hides (the same thing to the caller)."""

    def __init__(self, what: Missing, *key: object) -> None:
        super().__init__(what, *key)

    def __str__(self) -> str:
        return f"{self.what.capitalize()} {' '.join(map(repr, self.key))} not found"


class Conflict(StorageError):
    """The record exists already (or its key is taken by a record the caller may not see)."""

    def __init__(self, what: Taken, *key: object) -> None:
        super().__init__(what, *key)

    def __str__(self) -> str:
        return f"{self.what.capitalize()} {' '.join(map(repr, self.key))} already exists"


class ThreadBusy(Conflict):
    """A run with multitask strategy "reject" came while its thread had one in flight."""

    def __init__(self, thread_id: str) -> None:
        super().__init__("busy", thread_id)

    def __str__(self) -> str:
        return f"Thread {self.key[0]!r} is busy"


class UnreadableRun(Exception):
    """A claimed run whose stored row cannot be decoded: the worker ends it as error instead of
    letting it fail every claim after it."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} cannot be read: {reason}")
        self.run_id = run_id
        self.reason = reason


# The latest due time next_due reports: a stored time beyond what datetime holds (a run created
# before after_seconds was bounded) must not crash the claim loop that asks.
LATEST_DUE = datetime(9999, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunQueue(Protocol):
    """The queue's face of storage: all that the worker and the run service's queue steps use."""

    async def create_run(self, new: NewRun) -> Queued:
        """Insert a pending run. Applies run.multitask_strategy atomically against the thread:
        raises ThreadBusy for reject; returns the in-flight run ids to cancel for interrupt and
        rollback (the new run waits behind them in the queue). With new.start_for, a run due
        now on a thread with nothing in flight is inserted started, in the same step."""
        ...

    async def claim_run(self, worker_id: str, lease_seconds: float) -> RunClaim | None:
        """Take the oldest runnable run: pending, due, and alone on its thread; or a running
        run whose lease has expired (a new attempt). Marks it running under a lease."""
        ...

    async def claim_runs(
        self, worker_id: str, lease_seconds: float, most: int
    ) -> list[RunClaim | UnreadableRun]:
        """Up to `most` claims in turn, as claim_run would make them one after another; a run
        whose row cannot be read comes as its UnreadableRun (the caller ends it) and the claims
        after it go on."""
        ...

    async def next_due(self) -> datetime | None:
        """When the earliest pending run scheduled in the future becomes due."""
        ...

    def queued_notices(self, on_queued: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """While entered, on_queued() is called for every create that queued a run and said so
        (Queued.notified), in any process, and once each time the notices (re)start, for what
        was queued while nobody listened. A store whose creates never notify calls it never."""
        ...

    def ended_notices(self, on_ended: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
        """While entered, on_ended(notice) is called, in any process, for every finish_run
        given a notice, once its end is committed. At most once each, and none is kept while
        nobody listens: a notice hastens what the event bus tells anyway. A store shared by no
        other process (SQLite) calls it never."""
        ...

    async def renew_lease(self, run_id: str, worker_id: str, lease_seconds: float) -> bool | str:
        """Extends the run's lease if this worker holds it (a lease of -1 hands it back): False
        when it does not (the run ended, was taken over or deleted); else the action of a
        cancel kept on the run's row (ask_cancel), or True when none was."""
        ...

    async def ask_cancel(self, run_id: str, action: str) -> bool:
        """Keeps a cancel of a running run on its row (whether the run was running), for its
        worker to find at its next renewal should the cancel's message miss it: none listened
        (its only worker was down, and one started later takes the run over), or its
        listener was reconnecting to Redis."""
        ...

    async def get_run(
        self, thread_id: str | None, run_id: str, *, filters: Filter | None = None
    ) -> Run:
        """The run (raises NotFound). The worker reads it when a renewal fails: a run whose row
        is gone was deleted with its thread, not taken over."""
        ...

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
        """Stores a run's end and settles its thread (or removes it). True when the backend
        itself tells the workers of a run left waiting on the thread (PostgreSQL notifies at
        commit, as for a queued run): the caller then wakes nobody. checkpointed=False: the
        thread it removes has no checkpoints to remove (the run kept none), so a backend may
        skip looking for them. A notice is told to ended_notices' listeners at the commit."""
        ...

    async def cancel_pending(self, run_id: str, *, status: RunStatus) -> bool:
        """Finish a run that has not started; False when a worker already took it."""
        ...

    async def rollback_run(self, run_id: str, thread_id: str) -> None:
        """Delete the run and the checkpoints it wrote, restoring its thread's state."""
        ...

    async def expire_leases(self) -> int:
        """Make every running run claimable again (the embedded server after a crash)."""
        ...


class Storage(RunQueue, Protocol):
    """Every persistence verb: the queue's, and the records' (assistants, threads, runs)."""

    # --- lifecycle -------------------------------------------------------------------------
    async def setup(self) -> None: ...

    async def aclose(self) -> None: ...

    def checkpointer(self) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
        """A saver for one run; backends decide whether savers are pooled."""
        ...

    # --- assistants ------------------------------------------------------------------------
    async def put_assistant(
        self, assistant: Assistant, *, if_exists: IfExists, filters: Filter | None = None
    ) -> Assistant: ...

    async def get_assistant(
        self, assistant_id: str, *, filters: Filter | None = None
    ) -> Assistant: ...

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
    ) -> tuple[list[Assistant], int]: ...

    async def patch_assistant(
        self, assistant_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Assistant: ...

    async def delete_assistant(
        self, assistant_id: str, *, filters: Filter | None = None
    ) -> None: ...

    async def assistant_versions(
        self,
        assistant_id: str,
        *,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        filters: Filter | None = None,
    ) -> list[dict[str, Any]]: ...

    async def set_latest_assistant(
        self, assistant_id: str, version: int, *, filters: Filter | None = None
    ) -> Assistant: ...

    # --- threads ---------------------------------------------------------------------------
    async def create_thread(
        self,
        thread_id: str,
        *,
        metadata: Mapping[str, Any],
        if_exists: IfExists,
        filters: Filter | None = None,
    ) -> Thread: ...

    async def get_thread(self, thread_id: str, *, filters: Filter | None = None) -> Thread: ...

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
    ) -> tuple[list[Thread], int]: ...

    async def patch_thread(
        self, thread_id: str, metadata: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Thread: ...

    async def delete_thread(self, thread_id: str, *, filters: Filter | None = None) -> list[str]:
        """Delete a thread, its runs and checkpoints; returns the ids of runs still in flight."""
        ...

    async def copy_thread(
        self, thread_id: str, new_thread_id: str, *, filters: Filter | None = None
    ) -> Thread: ...

    async def set_thread_state(
        self,
        thread_id: str,
        *,
        values: Any,
        interrupts: Mapping[str, Any],
        status: ThreadStatus | None = None,
        error: Any = None,
    ) -> None:
        """Cache the latest state values on the thread row (after a run or a state update)."""
        ...

    # --- runs ------------------------------------------------------------------------------
    async def list_runs(
        self,
        thread_id: str,
        *,
        limit: int,
        offset: int,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]: ...

    async def run_numbers(self, thread_id: str, *, limit: int) -> list[tuple[int | None, str]]:
        """(number, run_id) of the thread's newest runs, newest first: each run's number on its
        thread, given once (a deleted run's is never given again); None for none given."""
        ...

    async def delete_run(
        self, thread_id: str, run_id: str, *, filters: Filter | None = None
    ) -> None: ...

    async def inflight_runs(
        self,
        *,
        thread_id: str | None,
        run_ids: Sequence[str] | None,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        """Pending and running runs matching the selection (for cancel)."""
        ...

    # --- crons -----------------------------------------------------------------------------
    async def create_cron(self, cron: Cron) -> None: ...

    async def get_cron(self, cron_id: str, *, filters: Filter | None = None) -> Cron: ...

    async def update_cron(
        self, cron_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Cron:
        """Set the given columns of a cron (and its updated_at), nothing else."""
        ...

    async def delete_cron(self, cron_id: str, *, filters: Filter | None = None) -> None: ...

    async def search_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> list[Cron]: ...

    async def count_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        metadata: Mapping[str, Any] | None,
        filters: Filter | None = None,
    ) -> int: ...

    async def claim_cron(
        self,
        now: datetime,
        advance: Callable[[Cron], datetime | None],
        make_run: Callable[[Cron, str], NewRun],
    ) -> CronFiring | None:
        """Take the most overdue live cron due at `now`, move it to advance(cron) and queue the
        run make_run(cron, its assistant's graph id) gives, in one transaction: of many
        processes claiming at once, exactly one gets each slot, and a slot is never taken
        without its run. A run that cannot be queued (its thread busy under `reject`) skips
        the slot."""
        ...

    async def next_cron_due(self) -> datetime | None:
        """When the earliest live cron is due."""
        ...

    # --- threads' time to live and pruning -------------------------------------------------
    async def set_thread_ttl(
        self,
        thread_id: str,
        *,
        strategy: Literal["delete", "keep_latest"],
        minutes: float,
        expires_at: datetime,
    ) -> None: ...

    async def expired_threads(
        self, now: datetime, limit: int
    ) -> list[tuple[str, Literal["delete", "keep_latest"]]]: ...

    async def prune_thread(
        self,
        thread_id: str,
        strategy: Literal["delete", "keep_latest"],
        *,
        expired_by: datetime | None = None,
        filters: Filter | None = None,
    ) -> bool:
        """Delete an idle thread (or all its checkpoints but the latest); False when it is busy,
        gone, hidden by the filter, or (with expired_by) no longer expired at that time."""
        ...

    # --- metrics ---------------------------------------------------------------------------
    async def queue_stats(self) -> QueueStats:
        """How many runs wait and run, and how long the due pending ones have waited."""
        ...
