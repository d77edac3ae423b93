"""The worker: claims queued runs up to a concurrency limit, runs them, renews their leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from agentstream.execution.control import Control
from agentstream.execution.executor import Cancellation, Executor
from agentstream.storage.base import RunClaim, RunQueue

log = logging.getLogger("agentstream.worker")


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
        self._slots = asyncio.Semaphore(max_concurrency)
        self._running: dict[str, tuple[asyncio.Task[None], Cancellation]] = {}
        # Cancels that arrived between a claim's commit and its task starting.
        self._early_cancels: dict[str, tuple[str, float]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        control.on_cancel(self.cancel)

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="agentstream-claim-loop")
        self._renew_task = asyncio.create_task(self._renew_loop(), name="agentstream-renew")

    async def stop(self) -> None:
        for background in (self._loop_task, self._renew_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        tasks = [task for task, _ in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def active(self) -> int:
        return len(self._running)

    async def _claim_loop(self) -> None:
        while True:
            await self._slots.acquire()
            self.control.clear()
            try:
                claim = await self.storage.claim_run(self.worker_id, self.lease_seconds)
            except Exception:
                log.exception("claiming a run failed")
                claim = None
            if claim is None:
                self._slots.release()
                await self.control.wait(await self._idle_timeout())
                continue
            self._spawn(claim)

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
        cancellation = Cancellation()
        task = asyncio.create_task(self._execute(claim, cancellation), name=f"run-{run_id}")
        self._running[run_id] = (task, cancellation)
        early = self._early_cancels.pop(run_id, None)
        if early is not None:
            cancellation.action = early[0]
            task.cancel()

    async def _execute(self, claim: RunClaim, cancellation: Cancellation) -> None:
        run_id = claim["run"]["run_id"]
        try:
            await self.executor.run(claim, cancellation)
        except Exception:
            log.exception("run %s crashed the executor", run_id)
        finally:
            self._running.pop(run_id, None)
            self._slots.release()
            await self.control.wake()

    async def _renew_loop(self) -> None:
        """Every third of a lease, renew the lease of every run this worker holds: one task
        per worker, not one per run. A run claimed just after a round waits at most a third of
        its lease for its first renewal, as it would have with a timer of its own."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = list(self._running)
            results = await asyncio.gather(
                *(self.storage.renew_lease(r, self.worker_id, self.lease_seconds) for r in held),
                return_exceptions=True,
            )
            for run_id, result in zip(held, results, strict=True):
                if isinstance(result, Exception):
                    log.error("renewing the lease of run %s failed: %r", run_id, result)

    async def cancel(self, run_id: str, action: str) -> bool:
        entry = self._running.get(run_id)
        if entry is None:
            now = time.monotonic()
            self._early_cancels = {k: v for k, v in self._early_cancels.items() if now - v[1] < 60}
            self._early_cancels[run_id] = (action, now)
            return False
        task, cancellation = entry
        cancellation.action = action
        task.cancel()
        return True
