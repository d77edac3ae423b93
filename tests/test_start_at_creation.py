"""A process that runs both the API and a worker (`agentstream dev`, on SQLite or on PostgreSQL
+ Redis) creates a run already started for its own worker when the worker has a free slot and
a claim would pick the run now; otherwise the run is queued and claimed in its turn. With one
slot, the slot accounting shows: a run created while the slot is taken waits, whatever made it
wait (another thread's run, a run ahead on its own thread), and the slot is never lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstream.app import ensure_default_assistants
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.control import LocalControl
from agentstream.execution.executor import Executor
from agentstream.execution.runs import RunService, new_run
from agentstream.execution.worker import Worker
from agentstream.graphs import GraphRegistry, default_assistant_id, read_config
from agentstream.ids import uuid7
from agentstream.storage.base import NewRun, Run
from agentstream.storage.sqlite import SqliteStorage
from tests.servers import EXAMPLES, running_cluster, start_server

ONE_SLOT = {"AGENTSTREAM_MAX_CONCURRENCY": "1"}
SLOW = {"assistant_id": "ticker", "input": {"n": 4, "delay": 0.3}, "stream_mode": ["custom"]}
QUICK = {"assistant_id": "ticker", "input": {"n": 1}, "stream_mode": ["custom"]}


@pytest.fixture(params=["embedded", "dev on postgres and redis"])
def one_slot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "embedded":
        proc = start_server(tmp_path / "agentstream.sqlite", env=ONE_SLOT)
        yield proc.url
        proc.stop()
        return
    with running_cluster(apis=0, workers=0, dev=1, env=ONE_SLOT) as cluster:
        yield cluster.apis[0].url


async def _status(http: httpx.AsyncClient, thread_id: str, run_id: str) -> str:
    answer = await http.get(f"/threads/{thread_id}/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["status"]
    return status


async def test_with_its_one_slot_taken_a_new_run_waits_and_every_run_ends(one_slot: str) -> None:
    async with httpx.AsyncClient(base_url=one_slot, timeout=30) as http:
        threads = [(await http.post("/threads", json={})).json()["thread_id"] for _ in range(2)]
        first = (await http.post(f"/threads/{threads[0]}/runs", json=SLOW)).json()
        # The slot is taken (about 0.9 s more): a run on another thread is queued...
        other = (await http.post(f"/threads/{threads[1]}/runs", json=QUICK)).json()
        # ...and so is one behind the first on its own thread (its slot, reserved while it
        # was created, is given back: the runs below could not run otherwise).
        behind = (await http.post(f"/threads/{threads[0]}/runs", json=QUICK)).json()
        assert await _status(http, threads[0], first["run_id"]) == "running"
        assert await _status(http, threads[1], other["run_id"]) == "pending"
        assert await _status(http, threads[0], behind["run_id"]) == "pending"
        # A stateless run waits its turn too, and then streams in full.
        stateless = await http.post("/runs/stream", json=QUICK)
        assert stateless.status_code == 200
        names = [line for line in stateless.text.splitlines() if line.startswith("event: ")]
        assert names == ["event: metadata", "event: custom"]
        for thread_id, run in ((threads[0], first), (threads[1], other), (threads[0], behind)):
            joined = await http.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
            assert joined.status_code == 200, joined.text
            assert await _status(http, thread_id, run["run_id"]) == "success"
        # Runs created one after another on a free slot each start and end, many times over.
        streams = await asyncio.gather(*(http.post("/runs/stream", json=QUICK) for _ in range(20)))
        assert all(s.text.count("event: custom") == 1 for s in streams)


# --- a create cancelled midway (in process: the cancel must land while the store works) -------


class WatchedControl(LocalControl):
    """The in-process control plane, saying when the claim loop is parked (holding no slot)
    with no wake-up pending (a woken loop is about to claim, with every free slot)."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = asyncio.Event()

    async def wake(self) -> None:
        self.parked.clear()
        await super().wake()

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        if not self._event.is_set():
            self.parked.set()
        try:
            await super().wait(timeout)
        finally:
            self.parked.clear()


@asynccontextmanager
async def on_sqlite(
    path: Path, control: LocalControl, slots: int
) -> AsyncIterator[tuple[SqliteStorage, MemoryEventBus, Worker]]:
    """Storage, bus and a worker (not started: a test may queue runs first) in this process,
    stopped and closed after."""
    storage = SqliteStorage(path)
    await storage.setup()
    graphs = GraphRegistry(read_config(EXAMPLES))
    await ensure_default_assistants(storage, graphs)
    bus = MemoryEventBus()
    executor = Executor(storage, bus, graphs, "http://127.0.0.1")
    worker = Worker(storage, control, executor, max_concurrency=slots, lease_seconds=30)
    try:
        yield storage, bus, worker
    finally:
        await worker.stop()
        await storage.aclose()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[RunService, Worker, WatchedControl]]:
    control = WatchedControl()
    async with on_sqlite(tmp_path / "agentstream.sqlite", control, 2) as (storage, bus, worker):
        await worker.start()
        yield RunService(storage, bus, control, worker), worker, control


async def test_a_run_stored_started_by_a_cancelled_create_is_handed_back_and_runs(
    service: tuple[RunService, Worker, WatchedControl],
) -> None:
    """The create's request is cancelled (a shutdown) after its run went to the store started
    for this worker, before the worker took it: the run would sit `running` under a lease
    nobody renews (30 s here). Handed back, it is claimed at once and runs to its end."""
    runs, worker, control = service
    await control.parked.wait()  # the claim loop holds no slot: the create may start the run
    assistant = default_assistant_id("ticker")
    run = new_run(uuid7(), uuid7(), assistant, {"input": {"n": 2}}, {}, "enqueue")
    creating = asyncio.ensure_future(runs.create(NewRun(run, True, "create", None, {})))
    await asyncio.sleep(0)  # the create has reserved a slot and waits for the store
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    async with asyncio.timeout(10):  # far within the 30 s lease
        result = await runs.result(run["run_id"])
    assert result is not None and result["status"] == "success"
    # It was stored started (attempt 1), handed back, and claimed again: its second attempt.
    events = [e async for batch in runs.bus.subscribe(run["run_id"], 0, wait=False) for e in batch]
    starts = [json.loads(e.data) for e in events if e.mode == "metadata"]
    assert starts == [{"run_id": run["run_id"], "attempt": 2}]
    assert worker.active == 0
    # Both slots are free again: two runs created at once are both started at creation. (Once
    # the claim loop woken by the run's end has looked and parked again: claiming, it holds
    # every free slot. The loop's load gate is told the loop is idle: a loaded test machine
    # must not queue one.)
    await control.parked.wait()
    worker.load.busy = lambda: False  # type: ignore[method-assign]
    again = [new_run(uuid7(), uuid7(), assistant, {}, {}, "enqueue") for _ in range(2)]
    created = await asyncio.gather(
        *(runs.create(NewRun(r, True, "create", None, {})) for r in again)
    )
    assert all(queued.started is not None for queued in created)
    for r in again:
        async with asyncio.timeout(10):
            await runs.result(r["run_id"])


async def test_queued_runs_are_claimed_together_up_to_the_free_slots(tmp_path: Path) -> None:
    """Runs queued while the worker was away are claimed several at a time (one hand-off on
    SQLite), never more at once than the worker's slots, and all of them run."""
    control = LocalControl()
    batches: list[int] = []
    peak = 0
    async with on_sqlite(tmp_path / "agentstream.sqlite", control, 4) as (storage, bus, worker):
        runs = RunService(storage, bus, control)  # no worker of its own: every run is queued
        ticker, kwargs = default_assistant_id("ticker"), {"input": {"n": 3}}
        queued = [new_run(uuid7(), uuid7(), ticker, kwargs, {}, "enqueue") for _ in range(10)]
        for run in queued:
            await runs.create(NewRun(run, True, "create", None, {}))
        claim_runs, spawn = storage.claim_runs, worker._spawn

        async def counted(worker_id: str, lease: float, most: int) -> list[Any]:
            taken = await claim_runs(worker_id, lease, most)
            batches.append(len(taken))
            return taken

        def spawned(claim: Any) -> None:
            nonlocal peak
            spawn(claim)
            peak = max(peak, worker.active)

        storage.claim_runs = counted  # type: ignore[method-assign]
        worker._spawn = spawned  # type: ignore[method-assign]
        await worker.start()
        for run in queued:
            async with asyncio.timeout(10):
                result = await runs.result(run["run_id"])
            assert result is not None and result["status"] == "success"
    assert batches[0] == 4  # every slot was free: one claim took four
    assert sum(batches) == 10 and peak == 4


async def test_an_unreadable_run_among_those_claimed_together_ends_as_error_alone(
    tmp_path: Path,
) -> None:
    """A row that cannot be decoded, claimed together with good ones: the good ones run, it
    ends as error (its readers are told), and its slot is free again."""
    path, control = tmp_path / "agentstream.sqlite", LocalControl()
    async with on_sqlite(path, control, 3) as (storage, bus, worker):
        runs = RunService(storage, bus, control)  # every run is queued
        ticker, kwargs = default_assistant_id("ticker"), {"input": {"n": 2}}
        queued = [new_run(uuid7(), uuid7(), ticker, kwargs, {}, "enqueue") for _ in range(3)]
        for run in queued:
            await runs.create(NewRun(run, True, "create", None, {}))
        broken = queued[1]["run_id"]
        with sqlite3.connect(path) as db:
            db.execute("UPDATE runs SET kwargs = '{broken' WHERE run_id = ?", (broken,))
        await worker.start()
        async with asyncio.timeout(10):
            results = [await runs.result(run["run_id"]) for run in queued]
        statuses = [r["status"] if r else None for r in results]
        assert statuses == ["success", "error", "success"]
        after = [new_run(uuid7(), uuid7(), ticker, kwargs, {}, "enqueue") for _ in range(3)]
        for run in after:
            await runs.create(NewRun(run, True, "create", None, {}))
        async with asyncio.timeout(10):
            for run in after:  # three slots free again: all three run
                assert (await runs.result(run["run_id"]) or {}).get("status") == "success"


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_a_cancel_that_reaches_the_worker_before_its_claim_ends_the_run(
    tmp_path: Path, action: str
) -> None:
    """A cancel can reach the worker while its claim of the run is in flight (the run was
    pending when the cancel was sent): the worker keeps it, and the run is cancelled as it
    starts (a rollback deletes it). A task cancelled before it first runs never runs at all,
    its `finally` neither: the run stayed `running` under a lease its worker renewed forever,
    its slot taken, and its thread's next run waited behind it."""
    path, control = tmp_path / "agentstream.sqlite", LocalControl()
    async with on_sqlite(path, control, 1) as (storage, bus, worker):
        runs = RunService(storage, bus, control)  # every run is queued
        ticker, thread_id = default_assistant_id("ticker"), uuid7()
        kwargs = {"input": {"n": 3}, "stream_mode": ["custom"]}
        first, second = (new_run(uuid7(), thread_id, ticker, kwargs, {}, "enqueue") for _ in "ab")
        for run in (first, second):
            await runs.create(NewRun(run, False, "create", None, {}))
        # Sent now, it finds no task of the run: the worker keeps it for the run's start.
        await control.cancel(first["run_id"], action)
        await worker.start()
        async with asyncio.timeout(10):
            ended = await runs.result(first["run_id"])
            after = await runs.result(second["run_id"])
        assert ended is not None and ended["status"] == "interrupted"
        assert after is not None and after["status"] == "success"
        listed = await storage.list_runs(thread_id, limit=9, offset=0, status=None)
        stored = {r["run_id"]: r["status"] for r in listed}
        kept = {} if action == "rollback" else {first["run_id"]: "interrupted"}
        assert stored == {**kept, second["run_id"]: "success"}
        assert worker.active == 0


async def test_a_run_cancelled_as_its_create_returns_ends_interrupted(
    service: tuple[RunService, Worker, WatchedControl],
) -> None:
    """Started at creation, a stateless run's task has not run yet when the create returns
    (nothing after the store suspends): a cancel sent at once reaches a task that has not
    begun. It ends the run as interrupted, as a cancel of a running run does."""
    runs, worker, control = service
    run = await _created_started(service, {"n": 3, "delay": 0.05}, temporary=True)
    await control.cancel(run["run_id"], "interrupt")  # no suspension since the create
    async with asyncio.timeout(10):
        ended = await runs.result(run["run_id"])
    assert ended is not None and ended["status"] == "interrupted"
    assert worker.active == 0


async def test_a_run_cancelled_again_while_it_handles_its_cancel_ends_interrupted(
    service: tuple[RunService, Worker, WatchedControl],
) -> None:
    """A stop clicked twice: a cancel at every turn of the loop until the run has ended, so
    that some land while the run reads its state to settle as interrupted. One that stopped
    it there left it unsettled (its stream open, its row running until a lease later another
    worker ran it again)."""
    runs, worker, control = service
    run = await _created_started(service, {"n": 100, "delay": 0.05}, temporary=False)
    ticking = runs.bus.subscribe(run["run_id"], 0)
    async for batch in ticking:  # once it ticks, it runs its node
        if any(e.mode == "custom" for e in batch):
            break
    await ticking.aclose()
    result = asyncio.ensure_future(runs.result(run["run_id"]))
    async with asyncio.timeout(10):
        while not result.done():
            await control.cancel(run["run_id"], "interrupt")
            await asyncio.sleep(0)  # a turn of the loop: the run goes on to its next step
    ended = result.result()
    assert ended is not None and ended["status"] == "interrupted"
    assert (await runs.storage.get_run(run["thread_id"], run["run_id"]))["status"] == "interrupted"
    assert worker.active == 0


async def _created_started(
    service: tuple[RunService, Worker, WatchedControl],
    graph_input: dict[str, Any],
    *,
    temporary: bool,
) -> Run:
    """A ticker run created started for the service's idle worker (its claim loop parked,
    its load gate told the loop is idle), on a new thread."""
    runs, worker, control = service
    await control.parked.wait()
    worker.load.busy = lambda: False  # type: ignore[method-assign]
    kwargs = {"input": graph_input, "stream_mode": ["custom"]}
    run = new_run(uuid7(), uuid7(), default_assistant_id("ticker"), kwargs, {}, "enqueue")
    created = await runs.create(NewRun(run, temporary, "create", None, {}))
    assert created.started is not None
    return run
