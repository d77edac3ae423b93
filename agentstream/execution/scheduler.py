"""The cron scheduler: claims each due cron, advancing it and queueing an ordinary run for it
under its owner's identity in one storage step (a crash never takes a slot without its run).

It sleeps until the earliest due cron, and wakes at each minute's start besides: a cron made
or changed by any process has its slots on minutes, so no wake-up message is needed. A cron
claimed after downtime moves to its first slot after now: a missed slot fires once.

The clock can be driven: AGENTSTREAM_CLOCK_FILE names a file holding an ISO 8601 time, which
is then "now" for crons (empty or absent: the real time). Tests write it; every process of a
deployment reads the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

from agentstream.execution.expiry import TtlPolicy, sweep
from agentstream.execution.runs import RunService, new_run
from agentstream.ids import uuid7
from agentstream.storage.base import Cron, NewRun, Storage, StorageError, utcnow

log = logging.getLogger("agentstream.scheduler")

CLOCK_FILE = "AGENTSTREAM_CLOCK_FILE"
# How often a driven clock is read: tests move it and expect a cron to fire promptly.
_DRIVEN_POLL_SECONDS = 0.2


class Clock:
    def __init__(self, path: str | None = None) -> None:
        self.path = Path(path) if path else None

    @classmethod
    def from_env(cls) -> Clock:
        return cls(os.environ.get(CLOCK_FILE) or None)

    @property
    def driven(self) -> bool:
        return self.path is not None

    def now(self) -> datetime:
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                text = self.path.read_text().strip()
                if text:
                    return datetime.fromisoformat(text).astimezone(UTC)
        return utcnow()


def valid_schedule(schedule: str) -> bool:
    return len(schedule.split()) == 5 and croniter.is_valid(schedule)


def zone(name: str | None) -> ZoneInfo:
    """An IANA time zone; raises ValueError for an unknown one."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Invalid timezone: {name!r}") from None


def next_slot(schedule: str, timezone: str | None, after: datetime) -> datetime:
    """The schedule's first slot strictly after `after`, read in the cron's time zone."""
    local = after.astimezone(zone(timezone))
    slot: datetime = croniter(schedule, local).get_next(datetime)
    return slot.astimezone(UTC)


def first_slot(cron: Cron, now: datetime) -> datetime | None:
    """The slot a cron fires next, or None when it has none before its end_time."""
    slot = next_slot(cron["schedule"], cron["timezone"], now)
    end = cron["end_time"]
    return None if end is not None and slot > end else slot


def run_kwargs(payload: dict[str, Any], temporary: bool, on_completion: str) -> dict[str, Any]:
    """A run's kwargs from a cron's payload: the fields a run-creating request would send."""
    stream_mode = payload.get("stream_mode") or ["values"]
    return {
        "input": payload.get("input"),
        "command": None,
        "config": payload.get("config") or {},
        "context": payload.get("context") or {},
        "stream_mode": [stream_mode] if isinstance(stream_mode, str) else list(stream_mode),
        "interrupt_before": payload.get("interrupt_before"),
        "interrupt_after": payload.get("interrupt_after"),
        "webhook": payload.get("webhook"),
        "feedback_keys": None,
        "temporary": temporary,
        "subgraphs": bool(payload.get("stream_subgraphs")),
        "resumable": bool(payload.get("stream_resumable")),
        "checkpoint_during": payload.get("checkpoint_during"),
        "durability": payload.get("durability"),
        "checkpoint_id": None,
        "checkpoint": None,
        "after_seconds": None,
        "on_completion": on_completion,
    }


class Scheduler:
    """Fires due crons and, every sweep interval, prunes expired threads (expiry.py)."""

    def __init__(
        self,
        storage: Storage,
        runs: RunService,
        clock: Clock | None = None,
        ttl: TtlPolicy | None = None,
    ) -> None:
        self.storage = storage
        self.runs = runs
        self.clock = clock or Clock.from_env()
        self.ttl = ttl or TtlPolicy()
        self._next_sweep = 0.0
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Look again at once (minute wake-ups make this optional)."""
        self._poked.set()

    async def _loop(self) -> None:
        while True:
            self._poked.clear()
            try:
                while await self.fire_one():
                    pass
                await self._sweep_if_due()
                delay = min(await self._delay(), self._next_sweep - time.monotonic())
            except (StorageError, OSError, ConnectionError) as exc:
                log.warning("cron scheduler: storage unavailable (%r); trying again", exc)
                delay = 5.0
            except Exception:
                log.exception("cron scheduler failed; trying again")
                delay = 5.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.0)):
                    await self._poked.wait()

    async def _sweep_if_due(self) -> None:
        if self.clock.driven or time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.ttl.sweep_seconds
            await sweep(self.storage, self.clock.now())

    async def _delay(self) -> float:
        now = self.clock.now()
        due = await self.storage.next_cron_due()
        # A cron another process makes is first due on a minute's start: look then too.
        to_minute = 60.0 - (now.second + now.microsecond / 1e6) + 0.05
        delay = min(to_minute, (due - now).total_seconds() if due else to_minute)
        if self.clock.driven:
            delay = min(delay, _DRIVEN_POLL_SECONDS)
        return max(delay, 0.0)

    async def fire_one(self) -> bool:
        """Claim one due cron, queueing its run in the same step; False when none is due."""
        now = self.clock.now()
        firing = await self.storage.claim_cron(now, lambda c: first_slot(c, now), cron_run)
        if firing is None:
            return False
        cron_id = firing.cron["cron_id"]
        if firing.new is None:
            log.warning("cron %s skipped a slot: %s", cron_id, firing.skipped)
            return True
        await self.runs.announce(firing.new, firing.preempted)
        log.info("cron %s queued run %s", cron_id, firing.new.run["run_id"])
        return True


def cron_run(cron: Cron, graph_id: str) -> NewRun:
    """The run a cron's slot queues, under its owner's identity."""
    payload = cron["payload"]
    stateless = cron["thread_id"] is None
    thread_id = cron["thread_id"] or uuid7()
    on_completion = (cron["on_run_completed"] or "delete") if stateless else "keep"
    kwargs = run_kwargs(payload, stateless, on_completion)
    strategy = "enqueue" if stateless else payload.get("multitask_strategy") or "enqueue"
    metadata = dict(payload.get("metadata") or {})
    run = new_run(uuid7(), thread_id, cron["assistant_id"], kwargs, metadata, strategy)
    thread_metadata = {**metadata, "graph_id": graph_id, "assistant_id": cron["assistant_id"]}
    if_not_exists: Literal["create", "reject"] = "create" if stateless else "reject"
    return NewRun(run, stateless, if_not_exists, cron["auth_user"], thread_metadata)
