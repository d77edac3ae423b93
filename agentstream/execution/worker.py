"""The worker: claims queued runs up to a concurrency limit, runs them, renews their leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Literal, cast

from agentstream import metrics
from agentstream.execution.control import Control
from agentstream.execution.executor import (
    Cancellation,
    Executor,
    ServiceLost,
    due,
    ride_out,
    stateless,
)
from agentstream.storage.base import NotFound, RunClaim, RunQueue, UnreadableRun

log = logging.getLogger("agentstream.worker")

# What one claim took: runs now executing, as many as it asked for (so more may be queued) or
# fewer (the queue had no more: the loop waits to be woken), an unreadable run ended as error,
# or nothing.
Took = Literal["spawned", "spawned all", "ended"] | None

# The longest a claim loop waits after failures in a row (an outage) before trying again.
_MAX_BACKOFF = 2.0
# The most runs one claim takes at once (each needs a free slot).
MOST_CLAIMS = 16
# Past its share of its slots, a worker takes another run only while its event loop has time to
# spare: a loop that runs its timers late (another process has the core) or keeps its thread busy
# (it has the core to itself) is saturated, and a run more would make every run slower without
# making the whole any faster. Measured (benchmarks.cpu --threaded --concurrent 50, serve +
# worker): 16 runs at once against 32, more runs a second and the stream's close after its last
# event p99 40 -> 17 ms. Runs that wait on a model (an idle loop) still take every slot. A
# saturated loop that has its core to itself (`dev`, embedded) computes 70-90 % of the time (the
# rest is the kernel's, and other threads'): at 0.9 its gate opened and shut by turns. Measured at
# 0.7 against 0.9 (the same benchmark, twice each): `dev` on PostgreSQL + Redis 156-158 against
# 141-148 runs/s, close p99 17-19 against 32 ms; serve + worker and embedded (threaded, and 200
# stateless at once) unchanged. A worker beside `serve` on one core computes about 0.6 of the time
# and its timers ran 0.99 ms late on the median: at 1 ms late its gate opened and shut by turns
# (shut at 61 % of its takes). At 0.5 ms against 1 (the same benchmark, six pairs): serve + worker
# 155-167 against 147-155 runs/s, close p99 14-18 against 17-22 ms; `dev` on PostgreSQL + Redis 172
# against 162; embedded 200 stateless at once the same (five pairs). An idle loop is 0.1 ms late or
# less.
# Its share: a quarter (BUSY_SHARE) while its loop computes most of the time (its own runs fill
# it), half while it is only late (another process has the core: a worker beside `serve`).
# Until the thirty-first session it was half either way. A busy loop's turns are as long as the
# work of the runs in them, and every await of a run waits a turn: the fewer runs at once, the
# shorter. Measured (benchmarks.cpu --threaded --concurrent 50, new / old alternating, three
# pairs): `dev` on PostgreSQL + Redis, close p99 6.9 / 17.4, 9.6 / 17.7, 8.7 / 23.0 ms at 156 /
# 155, 135 / 146, 150 / 129 runs/s; serve + worker 139 / 128, 138 / 106, 131 / 116 runs/s, close
# p99 17.3 / 20.1, 20.2 / 35.0, 16.2 / 20.5 ms; its 200 stateless at once the same (368 / 354,
# 347 / 425, 398 / 328 runs/s). A quarter either way cost serve + worker's 200 stateless at once
# about a tenth (305 / 391, 319 / 370, 367 / 341): its worker's loop, late because `serve` has
# the core, is not what its runs wait on.
BUSY_LAG = 0.0005  # seconds late, on average
BUSY_CPU = 0.7  # of the thread's time, on average
BUSY_SHARE = 4  # a worker whose loop computes holds at 1/BUSY_SHARE of its slots


class LoopLoad:
    """How late this event loop runs a timer and how much of the time its thread computes, on
    average over the last tenth of a second or so; watched for five seconds after each question
    (a timer every 10 ms; none while nobody asks). An idle loop is a tenth of a millisecond late
    or less and computes a few percent of the time; on some hosts its timers wake later
    however idle it is (a KVM guest's, 0.3-0.6 ms), and what counts is how much later than
    that they run: `lag` is beyond the least average lateness watched so far (`floor`)."""

    INTERVAL = 0.01
    SETTLED = 10  # ticks in a row before an average counts toward the floor

    def __init__(self) -> None:
        self.lag = 0.0
        self.cpu = 0.0
        self.floor: float | None = None  # the least average lateness watched (see above)
        self._late = 0.0  # the average lateness itself
        self._ticks = 0
        self._due = 0.0
        self._at = (0.0, 0.0)  # the loop's time and the thread's CPU time at the last tick
        self._until = 0.0
        self._fresh = True
        self._handle: asyncio.TimerHandle | None = None

    def busy(self) -> bool:
        loop = asyncio.get_running_loop()
        self._until = loop.time() + 5.0
        if self._handle is None:  # watched afresh: the first tick's figures stand alone
            self._at = (loop.time(), time.thread_time())
            self._fresh = True
            self._arm(loop)
        return self.lag > BUSY_LAG or self.computing

    @property
    def computing(self) -> bool:
        """Its thread computes most of the time (its own work fills the loop), as last measured."""
        return self.cpu > BUSY_CPU

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.INTERVAL
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now, cpu = loop.time(), time.thread_time()
        wall = now - self._at[0]
        share = min((cpu - self._at[1]) / wall, 1.0) if wall > 0 else self.cpu
        keep = 0.0 if self._fresh else 0.9
        self._ticks = 1 if self._fresh else self._ticks + 1
        self._late = keep * self._late + (1 - keep) * (now - self._due)
        if self._ticks >= self.SETTLED and (self.floor is None or self._late < self.floor):
            self.floor = self._late
        self.lag = max(self._late - (self.floor or 0.0), 0.0)
        self.cpu = keep * self.cpu + (1 - keep) * share
        self._at, self._fresh = (now, cpu), False
        if now < self._until:
            self._arm(loop)
        else:
            self._handle, self.lag, self.cpu, self._late = None, 0.0, 0.0, 0.0

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Worker:
    def __init__(
        self,
        storage: RunQueue,  # the worker only claims, renews and waits for due runs
        control: Control,
        executor: Executor,
        *,
        max_concurrency: int,
        lease_seconds: float = 30.0,
    ) -> None:
        self.storage = storage
        self.control = control
        self.executor = executor
        self.worker_id = f"worker-{uuid.uuid4()}"
        self.lease_seconds = lease_seconds
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        # What a busy worker holds at (see BUSY_SHARE): its loop computing, or only late.
        self._computing_floor = max(1, max_concurrency // BUSY_SHARE)
        self._late_floor = max(1, max_concurrency // 2)
        self.load = LoopLoad()
        self._ended = asyncio.Event()  # a run ended: room for another, maybe
        self._reserved = 0  # slots reserved for runs being created started (reserve)
        self._running: dict[str, tuple[asyncio.Task[None], Cancellation]] = {}
        # Cancels that arrived between a claim's commit and its task starting.
        self._early_cancels: dict[str, tuple[str, float]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._handbacks: set[asyncio.Future[None]] = set()
        # Set when the control listener subscribed again after losing Redis: a renewal round at
        # once, which finds the cancels sent meanwhile kept on their runs' rows.
        self._renew_now = asyncio.Event()
        control.on_cancel(self.cancel)
        control.on_missed(self._renew_now.set)

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="agentstream-claim-loop")
        self._renew_task = asyncio.create_task(self._renew_loop(), name="agentstream-renew")

    def stop_claiming(self) -> None:
        """The first step of a graceful stop (SIGTERM): no new runs; running ones go on."""
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def idle(self, grace: float) -> None:
        """Until the runs in flight have finished, for at most `grace` seconds."""
        running = [task for task, _ in self._running.values()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)

    async def stop(self, grace: float = 0.0) -> None:
        """Stops claiming, lets running runs finish for up to `grace` seconds, then hands the
        rest back: each is stopped without settling and its lease released, so another worker
        (or this server, restarted) resumes it from its last checkpoint at once."""
        self.stop_claiming()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.idle(grace)
        held = dict(self._running)
        for run_id in held:
            self._drop(run_id)
        await asyncio.gather(*(task for task, _ in held.values()), return_exceptions=True)
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
        self.load.stop()
        await self._release(list(held))
        for handback in list(self._handbacks):
            handback.cancel()
        if self.executor.webhooks is not None:
            await self.executor.webhooks.aclose()

    async def _release(self, run_ids: list[str]) -> None:
        released = 0
        for run_id in run_ids:
            try:
                released += bool(await self.storage.renew_lease(run_id, self.worker_id, -1.0))
            except Exception:
                log.exception("releasing run %s failed; it is resumed when its lease ends", run_id)
        if released:
            log.warning("handed back %d running run(s) to be resumed elsewhere", released)
            with contextlib.suppress(Exception):
                await self.control.wake()

    @property
    def active(self) -> int:
        return len(self._running)

    # --- runs started at creation (RunService.create) ----------------------------------------
    async def reserve(self) -> tuple[str, float] | None:
        """A slot for a run this process is about to create, so that it is created started
        (NewRun.start_for) instead of queued for a claim: (this worker's id, its lease), or None
        when every slot is taken or the worker no longer claims (stopping, draining). Never
        suspends. The caller gives the slot back (unreserve) unless the run was started (take).

        A free slot means this worker would claim the run itself next: waking it to claim was a
        hand-off (on the distributed deployment a round trip to Redis) and a statement more."""
        if self._loop_task is None or self._loop_task.done() or not await self._free_slot():
            return None
        self._reserved += 1
        return self.worker_id, self.lease_seconds

    async def _free_slot(self, pending: int = 0) -> bool:
        """Takes a slot if one is free now and there is room (see BUSY_LAG) beside the runs
        this worker runs and `pending` more it is about to, without ever waiting for one."""
        if self._slots.locked() or self._crowded(pending):
            return False
        await self._slots.acquire()  # not locked: returns at once
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._slots.release()

    def take(self, claim: RunClaim) -> None:
        """Runs a run started for this worker at its creation, in the slot reserved for it."""
        self._reserved -= 1
        self._spawn(claim)

    async def _claim_loop(self) -> None:
        """Supervised: whatever one round raises (a dropped connection, a row that cannot be
        read, a bug) is logged and the loop goes on, so no input and no outage can leave this
        worker alive but idle. Failures in a row back off up to _MAX_BACKOFF seconds, and a
        wake-up cuts the wait short."""
        failures = 0
        while True:
            await self._slots.acquire()
            await self._until_room()
            took: Took = None
            try:
                self.control.clear()
                took = await self._claim_one()
                failures = 0
            except Exception:
                failures += 1
                log.exception("worker %s: claiming a run failed", self.worker_id)
            if took == "spawned all":
                continue  # every slot it asked for was filled: more may be queued
            if took == "spawned":
                # Fewer runs than slots asked for: the queue had no more at that moment, and a
                # claim now would find nothing (a statement per run at low load). A run queued
                # since has woken the workers (clear() came before the claim), so the wait
                # below returns at once.
                await self._wait_for_work()
                continue
            self._slots.release()
            if took == "ended":  # an unreadable run was ended: the next one may be due now
                continue
            if failures:
                await self.control.wait(min(_MAX_BACKOFF, 0.05 * 2**failures))
                continue
            await self._wait_for_work()

    def _crowded(self, pending: int = 0) -> bool:
        """Past its share of its slots with its event loop saturated (BUSY_LAG, BUSY_SHARE)."""
        load = self.load
        if not load.busy():  # asked at every take, so it is watched while runs come
            return False
        floor = self._computing_floor if load.computing else self._late_floor
        return len(self._running) + self._reserved + pending >= floor

    async def _until_room(self) -> None:
        while self._crowded():
            self._ended.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):  # or the loop calms down
                    await self._ended.wait()

    async def _wait_for_work(self) -> None:
        """Until woken, a delayed run falls due, or a lease check is due (_idle_timeout)."""
        try:
            await self.control.wait(await self._idle_timeout())
        except Exception:
            log.exception("worker %s: waiting for work failed", self.worker_id)
            await asyncio.sleep(_MAX_BACKOFF)

    async def _claim_one(self) -> Took:
        """Claims with the slot the loop holds and every other one free now (at most
        MOST_CLAIMS), in one claim_runs: with many runs queued, slots free together as their
        runs end together, and on SQLite the claims then share one hand-off and one commit.
        Every slot taken here and left unused is given back, but the loop's own when nothing
        was claimed (the loop gives that back)."""
        extra = 0
        while extra < MOST_CLAIMS - 1 and await self._free_slot(pending=1 + extra):
            extra += 1
        try:
            taken = await self.storage.claim_runs(self.worker_id, self.lease_seconds, 1 + extra)
        except BaseException:
            for _ in range(extra):
                self._slots.release()
            raise
        unreadable = [claim for claim in taken if isinstance(claim, UnreadableRun)]
        spawned = 0
        for claim in taken:
            if not isinstance(claim, UnreadableRun):
                self._spawn(claim)  # first: ending an unreadable run may wait out an outage
                spawned += 1
        for _ in range(1 + extra - spawned - (0 if spawned else 1)):
            self._slots.release()
        for exc in unreadable:
            log.error("run %s cannot be read and is ended as error: %s", exc.run_id, exc.reason)
            await self.executor.abandon(exc.run_id, exc)
        if spawned:
            # (Unreadable runs count: the claim found that many runs queued.)
            return "spawned all" if len(taken) == 1 + extra else "spawned"
        return "ended" if unreadable else None

    async def _idle_timeout(self) -> float:
        # Sleep until woken; the only timers are a delayed run falling due and the lease check
        # that lets a crashed worker's run be taken over.
        timeout = self.lease_seconds
        due = await self.storage.next_due()
        if due is not None:
            timeout = min(timeout, max(due.timestamp() - time.time(), 0.0) + 0.001)
        return timeout

    def _spawn(self, claim: RunClaim) -> None:
        run_id = claim["run"]["run_id"]
        if claim["attempt"] == 1:
            _observe_queue_wait(claim)
        cancellation = Cancellation()
        task = asyncio.create_task(self._execute(claim, cancellation), name=f"run-{run_id}")
        self._running[run_id] = (task, cancellation)
        early = self._early_cancels.pop(run_id, None)
        if early is not None:
            cancellation.action = early[0]
            _cancel(task, cancellation)

    async def _execute(self, claim: RunClaim, cancellation: Cancellation) -> None:
        run_id = claim["run"]["run_id"]
        try:
            if claim["attempt"] > 1:  # taken over: it may have been cancelled meanwhile
                await self._kept_cancel(run_id, cancellation)
            cancellation.started = True
            if cancellation.asked:  # before this task first ran (see _cancel)
                cast(asyncio.Task[None], asyncio.current_task()).cancel()
            await self.executor.run(claim, cancellation)
        except ServiceLost as lost:
            log.warning("%s; it runs again once the service is back", lost)
            self.hand_back(run_id)
        except Exception as exc:
            log.exception("run %s crashed the executor; it is ended as error", run_id)
            await self.executor.abandon(run_id, exc, temporary=claim["temporary"])
        finally:
            self._running.pop(run_id, None)
            self._slots.release()
            self._ended.set()
            if not _thread_removed(claim, cancellation) and not cancellation.woken:
                await self.control.wake()

    def hand_back(self, run_id: str) -> None:
        """Releases the run's lease, if this worker holds it, as soon as the database answers,
        and wakes the workers: it is claimed again at once, not when its lease would have run
        out."""

        async def hand_back() -> None:
            try:
                await ride_out(
                    lambda: self.storage.renew_lease(run_id, self.worker_id, -1.0), seconds=300
                )
                await self.control.wake()
            except Exception:
                log.exception("run %s could not be handed back; its lease will", run_id)

        task = asyncio.ensure_future(hand_back())
        self._handbacks.add(task)
        task.add_done_callback(self._handbacks.discard)

    async def _renew_loop(self) -> None:
        """Every third of a lease, renew the lease of every run this worker holds: one task
        per worker, not one per run. A run claimed just after a round waits at most a third of
        its lease for its first renewal, as it would have with a timer of its own. A round also
        comes at once when the control listener subscribed again after losing Redis: a cancel
        sent meanwhile reached nobody, and the round finds it kept on its run's row.

        A run whose lease is lost stops here without settling: another worker has taken it
        over (the renewal found it no longer ours), or may have (renewals failed for a whole
        lease, a database outage, say). Two attempts of one run must never run side by side."""
        renewed: dict[str, float] = {}
        while True:
            try:
                async with asyncio.timeout(self.lease_seconds / 3):
                    await self._renew_now.wait()
            except TimeoutError:
                pass
            self._renew_now.clear()
            held = list(self._running)
            results = await asyncio.gather(
                *(self.storage.renew_lease(r, self.worker_id, self.lease_seconds) for r in held),
                return_exceptions=True,
            )
            now = time.monotonic()
            renewed = {run_id: renewed.get(run_id, now) for run_id in held}
            for run_id, result in zip(held, results, strict=True):
                if result is True:
                    renewed[run_id] = now
                elif isinstance(result, str):  # renewed, and a cancel is kept on its row
                    renewed[run_id] = now
                    self._cancel_unheard(run_id, result, f"a cancel ({result}) kept on its row")
                elif result is False:
                    if self._stoppable(run_id) is None:
                        continue  # it ended meanwhile: its row is no longer running
                    if await self._gone(run_id):
                        self._cancel_unheard(
                            run_id, "interrupt", "its row is deleted (its thread was)"
                        )
                        continue
                    log.warning("run %s was taken over by another worker; stopping it", run_id)
                    self._drop(run_id)
                elif now - renewed[run_id] >= self.lease_seconds:
                    log.error("run %s: its lease could not be renewed (%r); stopping it, to "
                              "run again once the database is back", run_id, result)  # fmt: skip
                    self._drop(run_id)
                    self.hand_back(run_id)
                else:
                    log.error("renewing the lease of run %s failed: %r", run_id, result)

    async def _kept_cancel(self, run_id: str, cancellation: Cancellation) -> None:
        """A run taken over starts cancelled if a cancel is kept on its row (a renewal says,
        Storage.ask_cancel): the renewals would find it too, but only after the graph had run
        for up to a third of a lease, its tools called again, after the user had stopped it.
        Before the task counts as started, so that a cancel meanwhile is only asked."""
        try:
            kept = await self.storage.renew_lease(run_id, self.worker_id, self.lease_seconds)
        except Exception as exc:  # the renewals look again
            log.warning("run %s: reading whether it was cancelled failed: %r", run_id, exc)
            return
        if isinstance(kept, str) and not cancellation.asked:
            log.warning("run %s: a cancel (%s) kept on its row; cancelling it", run_id, kept)
            cancellation.action = kept
            cancellation.asked = True

    async def _gone(self, run_id: str) -> bool:
        """Whether the run's row is deleted: its thread was deleted while it ran. That waits
        SETTLE_SECONDS for the thread's cancelled runs to stop, and a graph may take longer to
        clean up after its cancel. Read only when a renewal fails."""
        try:
            await self.storage.get_run(None, run_id)
        except NotFound:
            return True
        except Exception:  # the database is away: the renewal's failure decides
            return False
        return False

    def _cancel_unheard(self, run_id: str, action: str, why: str) -> None:
        """Cancels a run this worker heard no cancel of, unless one was asked already (a run
        still cleaning up after its cancel is left to finish that) or it is settling:
        - its row keeps a cancel (Storage.ask_cancel) whose message was sent while no worker
          listened (this one took the run over later) or while this one's listener was
          reconnecting;
        - its row is deleted (its thread was): there is nothing to hand back, and stopping it
          unsettled left its stream open for good (a renewal took the missing row for another
          worker's claim)."""
        entry = self._stoppable(run_id)
        if entry is not None and not entry[1].asked:
            log.warning("run %s: %s; cancelling it", run_id, why)
            entry[1].action = action
            _cancel(*entry)

    def _stoppable(self, run_id: str) -> tuple[asyncio.Task[None], Cancellation] | None:
        """The run's task and cancellation, unless it does not run here or is settling: once
        its end is being stored nothing may stop it before its stream is closed (a renewal
        then finds its row no longer running; a cancel, a stop, come too late)."""
        entry = self._running.get(run_id)
        return None if entry is None or entry[1].settling else entry

    def _drop(self, run_id: str) -> None:
        """Stops a run this worker no longer owns (or hands back at a stop), without settling
        it; a settling run goes on."""
        entry = self._stoppable(run_id)
        if entry is not None:
            task, cancellation = entry
            cancellation.action = "release"
            _cancel(task, cancellation)

    async def cancel(self, run_id: str, action: str) -> bool:
        entry = self._running.get(run_id)
        if entry is None:
            now = time.monotonic()
            self._early_cancels = {k: v for k, v in self._early_cancels.items() if now - v[1] < 60}
            self._early_cancels[run_id] = (action, now)
            return False
        task, cancellation = entry
        if cancellation.settling:  # too late: it has ended and is closing its stream
            return True
        cancellation.action = action
        _cancel(task, cancellation)
        return True


def _cancel(task: asyncio.Task[None], cancellation: Cancellation) -> None:
    """Cancels a run's task; one that has not run yet cancels itself as it starts, so that the
    executor settles the run (or hands it back). A task cancelled before it first runs never
    runs at all, nor its `finally`: the run stayed running, its lease renewed for good, its
    slot taken, and the runs queued behind it on its thread never ran."""
    cancellation.asked = True
    if cancellation.started:
        task.cancel()


def _thread_removed(claim: RunClaim, cancellation: Cancellation) -> bool:
    """Whether the run's end removed its thread (a stateless run's) and every run queued on
    it, as the executor settles it (a rolled-back run keeps its thread): then no run waits
    for this one, and waking the workers (a round trip to Redis on the distributed
    deployment) would find nothing new to claim."""
    return stateless(claim) and cancellation.action != "rollback"


def _observe_queue_wait(claim: RunClaim) -> None:
    metrics.QUEUE_WAIT.observe(max(0.0, time.time() - due(claim["run"])))
