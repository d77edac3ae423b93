"""A worker past its share of its slots takes another run only while its event loop has time to
spare (worker.LoopLoad, BUSY_LAG / BUSY_CPU, BUSY_SHARE): runs that wait (on a model, a timer)
take every slot; while the loop computes flat out, the worker holds at a quarter, while it is only
late (another process has the core) at half, and takes more once it calms."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.execution.control import LocalControl
from agentstream.execution.runs import RunService, new_run
from agentstream.execution.worker import BUSY_CPU, BUSY_LAG, BUSY_SHARE, LoopLoad, Worker
from agentstream.graphs import default_assistant_id
from agentstream.ids import uuid7
from agentstream.storage.base import NewRun
from tests.test_start_at_creation import on_sqlite

# An idle loop reads busy when other processes take its core (its timers fire late): these
# tests run after the rest, with no other test process beside them (scripts/test.sh).
pytestmark = pytest.mark.alone


@pytest.fixture(autouse=True)
def _a_workers_heap() -> Iterator[None]:
    """The heap frozen, as a worker's process freezes it at startup (app.tune_gc): late in the
    suite, this process's heap holds every earlier test's leftovers, and a full collection of
    it took 0.2 s, a stall that reads as a busy loop."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _compute(seconds: float, rest: float = 0.0) -> None:
    """Keeps this loop's thread computing for `seconds`, handing the loop over every 5 ms (and
    idling `rest` seconds then)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        chunk = time.perf_counter() + 0.005
        while time.perf_counter() < chunk:
            pass
        await asyncio.sleep(rest)


async def test_loop_load_is_busy_only_while_the_loop_computes() -> None:
    load = LoopLoad()
    try:
        assert not load.busy()  # first asked: nothing measured yet
        await asyncio.sleep(0.3)  # an idle loop, watched
        assert not load.busy()
        await _compute(0.5)
        # Busy by both signs when this process has its core; by its timers' lateness alone
        # when other processes take the core from it (its thread then computes less of the
        # time: another process has the rest).
        assert load.busy() and (load.cpu > BUSY_CPU or load.lag > BUSY_LAG)
    finally:
        load.stop()


def test_loop_load_counts_only_the_lateness_beyond_an_idle_loops() -> None:
    # A KVM guest's timers woke 0.6 ms late on an idle loop: read as late, its worker held at
    # half its slots with nothing to do. What counts is the lateness beyond the least watched.
    class Loop:  # what LoopLoad's ticks ask of a loop: its time, and the next tick booked
        now = 0.0

        def time(self) -> float:
            return self.now

        def call_at(self, when: float, *_: object) -> None:
            return None

    loop, load = Loop(), LoopLoad()

    def ticks(count: int, late: float) -> None:
        for _ in range(count):
            loop.now = load._due + late
            load._tick(loop)  # type: ignore[arg-type]

    load._until = 3600.0  # watched all along (as if asked: busy())
    load._arm(loop)  # type: ignore[arg-type]
    ticks(LoopLoad.SETTLED - 1, 0.0015)  # not settled yet: no floor
    assert load.floor is None and load.lag > BUSY_LAG
    ticks(50, 0.0006)
    assert load.floor == pytest.approx(0.0006, abs=2e-5) and load.lag <= BUSY_LAG
    ticks(50, 0.0006 + 2 * BUSY_LAG)  # another process takes the core
    assert load.lag == pytest.approx(2 * BUSY_LAG, abs=2e-5) and load.lag > BUSY_LAG
    assert load.floor == pytest.approx(0.0006, abs=2e-5)


async def test_a_worker_takes_every_slot_for_waiting_runs_and_its_share_while_computing(
    tmp_path: Path,
) -> None:
    control = LocalControl()
    slots = 2 * BUSY_SHARE
    async with on_sqlite(tmp_path / "agentstream.sqlite", control, slots) as (storage, bus, worker):
        runs = RunService(storage, bus, control)  # no worker of its own: every run is queued
        ticker = default_assistant_id("ticker")
        peaks: list[int] = []
        spawn = worker._spawn

        def spawned(claim: object) -> None:
            spawn(claim)  # type: ignore[arg-type]
            peaks[-1] = max(peaks[-1], worker.active)

        worker._spawn = spawned  # type: ignore[method-assign]
        await worker.start()

        async def round_of(n: int) -> None:
            peaks.append(0)
            kwargs = {"input": {"n": 3, "delay": 0.1}}  # waiting runs: the loop stays idle
            made = [new_run(uuid7(), uuid7(), ticker, kwargs, {}, "enqueue") for _ in range(n)]
            for run in made:
                await runs.create(NewRun(run, True, "create", None, {}))
            for run in made:
                async with asyncio.timeout(20):
                    result = await runs.result(run["run_id"])
                assert result is not None and result["status"] == "success"

        async def calm() -> None:
            # Its average decays over tenths of a second: on a slow machine a round could
            # start and end before it had.
            async with asyncio.timeout(10):
                while worker.load.busy():  # noqa: ASYNC110 - a moving average sets no event
                    await asyncio.sleep(LoopLoad.INTERVAL)

        async def every_slot() -> None:
            # A calm loop takes every slot. On a slow, jittery host (a KVM guest whose Python
            # ran three times slower than the last) the round's own creates and starts can
            # make the loop late enough to close the gate halfway, once: up to three rounds.
            for _ in range(3):
                await calm()
                await round_of(slots)
                if peaks[-1] == slots:
                    return
            raise AssertionError(f"no round took every slot: {peaks}")

        await round_of(1)  # a first run's one-off work (the graph's first use) out of the way
        await every_slot()
        # The loop computing most of the time: its timers late, its thread busy.
        computing = asyncio.create_task(_compute(30))
        try:
            worker.load.busy()  # watched from now: measured over the next tenths of a second
            await asyncio.sleep(0.3)
            assert worker.load.busy()
            await round_of(slots)
            assert peaks[-1] == 2  # a quarter of its slots, all the while
        finally:
            computing.cancel()
        # Once it calms, every slot again.
        await every_slot()


def _loaded(lag: float, cpu: float) -> LoopLoad:
    """A LoopLoad that last measured `lag` and `cpu`: read at once (no await lets its timer
    tick), it reports them as a loop that computes, or one that is only late."""
    load = LoopLoad()
    load.lag, load.cpu = lag, cpu
    return load


def _holds_at(worker: Worker, load: LoopLoad) -> int:
    """How many runs the worker, running none, would take at once under `load`."""
    worker.load = load
    try:
        return next(n for n in range(worker.max_concurrency + 1) if worker._crowded(n))
    finally:
        load.stop()


async def test_a_busy_worker_holds_at_a_quarter_while_computing_and_half_while_only_late(
    tmp_path: Path,
) -> None:
    slots = 4 * BUSY_SHARE
    async with on_sqlite(tmp_path / "agentstream.sqlite", LocalControl(), slots) as (_, _, worker):
        computing = _holds_at(worker, _loaded(lag=0.0, cpu=BUSY_CPU + 0.1))
        late = _holds_at(worker, _loaded(lag=2 * BUSY_LAG, cpu=BUSY_CPU - 0.2))
        both = _holds_at(worker, _loaded(lag=2 * BUSY_LAG, cpu=BUSY_CPU + 0.1))
        assert (computing, late, both) == (slots // BUSY_SHARE, slots // 2, slots // BUSY_SHARE)
        worker.load = idle = _loaded(lag=0.0001, cpu=0.05)
        try:
            assert not worker._crowded(slots)  # a calm loop: every slot
        finally:
            idle.stop()
