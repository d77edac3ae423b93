"""The run service: create (with multitask strategies), cancel, wait for a run's result, and
delete a thread with the runs still on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from agentstream import serde
from agentstream.eventbus import EventBus, EventsEvicted
from agentstream.execution.control import Control
from agentstream.execution.v3events import cancelled_before_start, is_v2
from agentstream.execution.worker import Worker
from agentstream.protocol import RESULT_MODE, result_item
from agentstream.storage.base import (
    Filter,
    NewRun,
    NotFound,
    Queued,
    Run,
    Storage,
    utcnow,
)

log = logging.getLogger("agentstream.runs")

# How long a request waits for the event bus after its run is stored, before answering anyway.
AFTER_COMMIT_SECONDS = 2.0


class RunService:
    def __init__(
        self, storage: Storage, bus: EventBus, control: Control, worker: Worker | None = None
    ) -> None:
        self.storage = storage
        self.bus = bus
        self.control = control
        # This process's own worker, if it has one (the embedded server, `dev`): a run due now
        # on a thread with nothing in flight is created started for it while it has a slot.
        self.worker = worker
        self._background: set[asyncio.Future[Any]] = set()

    async def create(self, new: NewRun, *, start_here: bool = True) -> Queued:
        """Queues the run, or creates it started for this process's worker (see
        Worker.reserve), with the assistant the create read (NewRun.with_assistant) sparing
        the executor a read. A run started here begins at the caller's next suspension:
        a caller whose answer must reach its client before the run's first event (a v2
        command, whose client reads the events on another stream) passes start_here=False."""
        worker = self.worker
        slot = None
        if worker is not None and start_here and not new.run["kwargs"].get("after_seconds"):
            slot = await worker.reserve()
        if worker is None or slot is None:
            queued = await self.storage.create_run(new)
        else:
            queued = await self._create_started(worker, replace(new, start_for=slot))
        # Nobody to wake for a run started here, nor for one the database told the workers of.
        wake = queued.started is None and not queued.notified
        await self.announce(new, queued.preempted, wake=wake)
        return queued

    async def _create_started(self, worker: Worker, new: NewRun) -> Queued:
        try:
            queued = await self.storage.create_run(new)
        except asyncio.CancelledError:
            # Cancelled while the create was under way (a shutdown): it may yet be stored
            # started, under a lease nobody would renew. Handed back, it is claimed at once.
            worker.unreserve()
            worker.hand_back(new.run["run_id"])
            raise
        except BaseException:
            worker.unreserve()
            raise
        if queued.started is None:
            worker.unreserve()  # a run in flight on its thread, or an older one, goes first
            return queued
        # No suspension from the create to here: the run's task starts after this request
        # has gone on to open its stream, which then sends the run's first event at once.
        worker.take(queued.started)
        return queued

    async def announce(self, new: NewRun, preempted: list[str], *, wake: bool = True) -> None:
        """What follows a queued run: its thread's log names it, the runs it preempts are
        cancelled, the workers are woken (unless it was started at creation: there is then
        nothing new to claim)."""
        run = new.run
        # The run is stored: from here on nothing fails the request, or a client would retry
        # and run its input twice. A step the event bus cannot take now finishes in the
        # background once it is back (see _after_commit).
        if not new.temporary:
            # The thread's own log lists its runs in order, for thread streams to follow.
            await self._after_commit(list_run(self.storage, self.bus, run))
        action = "rollback" if run["multitask_strategy"] == "rollback" else "interrupt"
        for run_id in preempted:
            previous = await self.storage.get_run(run["thread_id"], run_id)
            await self._after_commit(self.cancel(previous, action))
        if wake:
            await self._after_commit(self.control.wake())

    async def _after_commit(self, step: Awaitable[Any]) -> None:
        """Awaits step for up to AFTER_COMMIT_SECONDS; past that it goes on in the background
        (the bus and control ride out an outage themselves), and the request is answered."""
        if self.bus.instant:  # in-process bus and control: nothing to wait for, no task
            await step
            return
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=AFTER_COMMIT_SECONDS)
        if not done:
            log.warning("a run's post-creation step waits for Redis; it finishes in background")
            self._background.add(task)
            task.add_done_callback(self._finished_in_background)
            return
        if task.exception() is not None:
            log.error("a run's post-creation step failed: %r", task.exception())

    def _finished_in_background(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a run's post-creation step failed: %r", task.exception())

    async def cancel(self, run: Run, action: str) -> None:
        run_id = run["run_id"]
        if run["status"] == "pending" and await self.storage.cancel_pending(
            run_id, status="interrupted"
        ):
            if action == "rollback":
                await self.storage.rollback_run(run_id, run["thread_id"])
            await self._end_log(run)
            await self.control.wake()
            return
        # Kept on the run's row first: its worker finds it at its next renewal should the
        # message miss it (the cancel was lost when no worker listened, and one started later,
        # or this server restarted, ran the run to its end).
        try:
            await self.storage.ask_cancel(run_id, action)
        except Exception as exc:  # the message may still reach its worker
            log.warning("run %s: keeping its cancel failed: %r", run_id, exc)
            await self.control.cancel(run_id, action)
            return
        try:
            await self.control.cancel(run_id, action)
        except Exception as exc:
            # Kept, so it is done: its worker finds it at its next lease renewal, or at once
            # when its listener is back from the same outage. A 503 here told the client its
            # cancel had failed while the run went on to end cancelled.
            log.warning("run %s: its cancel is kept, but its message failed: %r", run_id, exc)

    async def _end_log(self, run: Run) -> None:
        """Ends the log of a run that no worker will end, as cancelled."""
        ending = [result_item(None, None, "interrupted", [])]
        if is_v2(run["kwargs"]):  # its v2 readers wait for a root terminal
            ending.insert(0, cancelled_before_start(run["run_id"], await self._graph(run)))
        await self.bus.close(run["run_id"], ending)

    async def _graph(self, run: Run) -> str:
        try:
            return (await self.storage.get_assistant(run["assistant_id"]))["graph_id"]
        except NotFound:
            return ""  # its assistant deleted since

    async def wait_closed(self, run_id: str) -> None:
        """Return when the run's log is complete (the run has ended and been settled)."""
        await self.result(run_id)

    async def delete_thread(self, thread_id: str, filters: Filter | None) -> None:
        """Cancel what still runs on the thread, wait until each run has stopped, then delete
        it: a run being cancelled may still have a checkpoint write in flight, and if that
        lands after the delete, a new thread with the same id starts from the old one's state.
        A run that does not stop in SETTLE_SECONDS (its worker died: it holds the run until
        the lease runs out; its graph is slow to stop) does not hold the delete up longer, and
        its log is ended here: with its row gone no worker takes it over to end it, and its
        readers waited for good."""
        inflight = await self.storage.inflight_runs(
            thread_id=thread_id, run_ids=None, status=None, filters=filters
        )
        for run in inflight:
            await self.cancel(run, "interrupt")
        unsettled = list(inflight)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS):
                while unsettled:
                    await self.wait_closed(unsettled[0]["run_id"])
                    unsettled.pop(0)
        await self.storage.delete_thread(thread_id, filters=filters)
        for run in unsettled:
            log.warning("run %s did not stop within %.0f s of its thread's delete; its stream "
                        "is ended", run["run_id"], SETTLE_SECONDS)  # fmt: skip
            await self._end_log(run)

    async def result(self, run_id: str, *, wait: bool = True) -> dict[str, Any] | None:
        """The run's final result event, waiting for it; None if the log ends without one.

        The result is the last event of a log (published just before it closes), so reading
        starts at the newest event there is, not at the first: a /wait on a finished run reads
        one event, not all of them (on Redis, all of them over the network).
        wait=False only reads what the log holds (a finished run whose log may have expired).
        """
        after = max(await self.bus.last_seq(run_id) - 1, 0)
        found: dict[str, Any] | None = None
        while True:
            try:
                async for batch in self.bus.subscribe(run_id, after, wait=wait):
                    for event in batch:
                        after = event.seq
                        if event.mode == RESULT_MODE:
                            found = serde.loads(event.data)
                return found
            except EventsEvicted as evicted:
                after = evicted.first_kept - 1


# How long a thread's delete waits for its cancelled runs to stop before deleting anyway.
SETTLE_SECONDS = 10.0


def thread_log(thread_id: str) -> str:
    return f"thread:{thread_id}"


# The most runs of a thread listed again in its log by a new process (see thread_seq).
RELIST_MAX = 10_000


async def list_run(storage: Storage, bus: EventBus, run: Run) -> None:
    """Adds a new run to its thread's log (its number there is part of every v2 seq)."""
    log = thread_log(run["thread_id"])
    marker = run["run_id"].encode()
    if not bus.instant:
        await bus.publish(log, [("run", "run", marker)])
        return
    last = await bus.last_seq(log)
    if last == 0:
        await _relist(storage, bus, run["thread_id"])  # this run included: it is stored
    elif marker not in await _listed(bus, log, max(last - 64, 0)):
        # (A reader's relist since this run was stored lists it at the end.) Runs of the thread
        # deleted since the log was listed keep their places, empty (see _relist).
        numbers = await storage.run_numbers(run["thread_id"], limit=1)
        number = numbers[0][0] if numbers and numbers[0][1] == run["run_id"] else None
        gap = (number or 0) - last - 1
        await bus.publish(log, [*_holes(max(gap, 0)), ("run", "run", marker)])


def _holes(n: int) -> list[tuple[str, str, bytes]]:
    """Places in a thread's log of runs deleted since: their numbers are never given again."""
    return [("run", "run", b"")] * n


async def thread_seq(storage: Storage, bus: EventBus, thread_id: str) -> int:
    """The number of the thread's latest run in its log.

    The in-process bus starts every log empty in a new process, while the runs of the embedded
    deployment are kept in its database: so the first look at a thread's log in a process lists
    the thread's stored runs there again, each at its stored number (a deleted run's place stays,
    empty), so that each of its v2 events keeps its seq across a restart. What their logs held
    is gone; readers are told so (resume_gap)."""
    log = thread_log(thread_id)
    seq = await bus.last_seq(log)
    if seq == 0 and bus.instant:
        await _relist(storage, bus, thread_id)
        seq = await bus.last_seq(log)
    return seq


async def _relist(storage: Storage, bus: EventBus, thread_id: str) -> None:
    try:
        await storage.get_thread(thread_id)
        runs = await storage.run_numbers(thread_id, limit=RELIST_MAX)
    except NotFound:
        return  # not created yet
    # Nothing from here to the publish lets another task run (the in-process bus never waits
    # when asked not to), so no other relist or new run gets between: none is listed twice.
    log = thread_log(thread_id)
    listed = await _listed(bus, log, 0)
    items: list[tuple[str, str, bytes]] = []
    place = await bus.last_seq(log)
    for number, run_id in reversed(runs):  # oldest first
        marker = run_id.encode()
        if marker in listed:
            continue
        if number is not None and number > place + 1:
            items += _holes(number - place - 1)
        items.append(("run", "run", marker))
        place = max(place + 1, number or 0)
    if items:
        await bus.publish(log, items)


async def _listed(bus: EventBus, log: str, after: int) -> set[bytes]:
    listed: set[bytes] = set()
    async for batch in bus.subscribe(log, after, wait=False):
        listed.update(e.data for e in batch)
    return listed


def new_run(
    run_id: str,
    thread_id: str,
    assistant_id: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    strategy: str,
) -> Run:
    now = utcnow()
    return Run(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant_id,
        metadata=metadata,
        status="pending",
        kwargs=kwargs,
        multitask_strategy=strategy,  # type: ignore[typeddict-item]
        created_at=now,
        updated_at=now,
    )
