"""The distributed deployment: two API processes and two workers on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from redis.asyncio import Redis

from tests.cluster import REDIS_URI, Cluster, running_cluster
from tests.conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as made:
        yield made


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[list[LangGraphClient]]:
    made = [get_client(url=api.url) for api in cluster.apis]
    yield made
    for client in made:
        await client.http.client.aclose()


async def test_stream_on_one_api_joined_resumed_and_cancelled_on_the_other(
    cluster: Cluster, clients: list[LangGraphClient]
) -> None:
    first, second = clients
    thread = await first.threads.create()
    t = thread["thread_id"]
    ticks: list[int] = []
    run_id = last_id = None
    async for part in first.runs.stream(
        t, "ticker", input={"n": 200, "delay": 0.02}, stream_mode="custom"
    ):
        if part.event == "metadata":
            run_id = part.data["run_id"]
        elif part.event == "custom":
            ticks.append(part.data["tick"])
        last_id = part.id
        if len(ticks) == 5:
            break
    assert run_id is not None and last_id is not None
    cancelled = False
    async for part in second.runs.join_stream(t, run_id, last_event_id=last_id):
        if part.event == "custom":
            ticks.append(part.data["tick"])
            if len(ticks) == 20 and not cancelled:
                await second.runs.cancel(t, run_id)
                cancelled = True
    assert cancelled
    assert ticks == list(range(len(ticks))), "resumed on another process with no gap"
    assert 20 <= len(ticks) < 200, "the cancel from the other API stopped the run"
    run = await first.runs.get(t, run_id)
    assert run["status"] == "interrupted"


async def test_hundred_runs_spread_over_both_workers_complete(
    cluster: Cluster, clients: list[LangGraphClient]
) -> None:
    gate = asyncio.Semaphore(25)

    async def one(i: int) -> tuple[str, list[int]]:
        client = clients[i % 2]
        run_id, ticks = "", []
        async with gate:
            async for part in client.runs.stream(
                None,
                "ticker",
                input={"n": 5, "delay": 0.01},
                stream_mode="custom",
                on_completion="keep",
            ):
                if part.event == "metadata":
                    run_id = part.data["run_id"]
                elif part.event == "custom":
                    ticks.append(part.data["tick"])
        return run_id, ticks

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(100))), 120)
    assert all(ticks == [0, 1, 2, 3, 4] for _, ticks in results), "every stream complete"
    run_ids = [run_id for run_id, _ in results]
    rows = cluster.rows(
        "SELECT worker_id, status, count(*) FROM runs WHERE run_id = ANY(%s) "
        "GROUP BY worker_id, status",
        run_ids,
    )
    assert {status for _, status, _ in rows} == {"success"}
    assert sum(count for *_, count in rows) == 100
    workers = {worker for worker, _, _ in rows}
    assert workers == {w.url for w in cluster.workers}, "both workers took runs"


async def test_a_run_longer_than_its_lease_stays_with_its_worker(
    clients: list[LangGraphClient],
) -> None:
    """Leases are 2 s here; a 4.5 s run lives on renewals. Without them the other worker
    would take it over (a second attempt, a second metadata event)."""
    client = clients[0]
    t = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        t, "ticker", input={"n": 150, "delay": 0.03}, stream_mode=["custom"]
    )
    attempts: list[int] = []
    ticks = 0
    async for part in clients[1].runs.join_stream(t, run["run_id"], last_event_id="0"):
        if part.event == "metadata":
            attempts.append(part.data["attempt"])
        ticks += part.event == "custom"
    assert attempts == [1]
    assert ticks == 150
    assert (await client.runs.get(t, run["run_id"]))["status"] == "success"


async def test_killed_worker_run_is_taken_over_and_finishes(
    cluster: Cluster, clients: list[LangGraphClient]
) -> None:
    client = clients[0]
    thread = await client.threads.create()
    t = thread["thread_id"]
    run = await client.runs.create(
        t, "ticker", input={"n": 100, "delay": 0.02}, stream_mode=["custom", "values"]
    )
    attempts: list[int] = []
    killed: ServerProcess | None = None
    async for part in clients[1].runs.join_stream(t, run["run_id"], last_event_id="0"):
        if part.event == "metadata":
            attempts.append(part.data["attempt"])
        if part.event == "custom" and part.data["tick"] == 10 and killed is None:
            killed = _kill_the_worker_of(cluster, run["run_id"])
    assert killed is not None
    assert attempts == [1, 2], "the other worker took the run over after its lease expired"
    final = await client.runs.get(t, run["run_id"])
    assert final["status"] == "success"
    state = await client.threads.get_state(t)
    assert state["values"]["count"] == 100
    left = cluster.rows("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')")
    assert left == [(0,)]
    _replace_worker(cluster, killed)


async def test_a_run_cancelled_while_its_worker_is_dead_ends_when_taken_over(
    cluster: Cluster, clients: list[LangGraphClient]
) -> None:
    """Its worker killed, the run is cancelled: nobody runs it, so the surviving worker keeps
    the cancel, and the run, taken over once its lease ends, is cancelled as it begins. (It
    used to be cancelled before its task first ran, which then never ran: the run stayed
    running for good under a lease its new worker renewed, and its thread's next run waited.)"""
    client = clients[0]
    t = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        t, "ticker", input={"n": 300, "delay": 0.02}, stream_mode=["custom"]
    )
    killed: ServerProcess | None = None
    ticks = 0
    async with asyncio.timeout(60):
        async for part in clients[1].runs.join_stream(t, run["run_id"], last_event_id="0"):
            ticks += part.event == "custom"
            if part.event == "custom" and part.data["tick"] == 10 and killed is None:
                killed = _kill_the_worker_of(cluster, run["run_id"])
                await client.runs.cancel(t, run["run_id"])
    assert killed is not None
    assert ticks < 300
    assert (await client.runs.get(t, run["run_id"]))["status"] == "interrupted"
    # The thread is free: its next run runs.
    after = await client.runs.wait(t, "ticker", input={"n": 1})
    assert isinstance(after, dict) and after["n"] == 1
    left = cluster.rows("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')")
    assert left == [(0,)]
    _replace_worker(cluster, killed)


async def test_a_run_whose_only_worker_died_ends_its_stream_when_its_thread_is_deleted() -> None:
    """Nobody takes the run over while the delete waits for it (its one worker is dead), and
    then its row is gone: no worker would ever end its log. The delete ends it: its stream
    (and every /join, /wait) waited for good before."""
    with running_cluster(apis=1, workers=1) as alone:
        client = get_client(url=alone.apis[0].url)
        t = (await client.threads.create())["thread_id"]
        killed = asyncio.Event()
        ticks = 0

        async def follow() -> None:
            nonlocal ticks
            body, run_id = {"n": 300, "delay": 0.02}, ""
            async for part in client.runs.stream(t, "ticker", input=body, stream_mode="custom"):
                if part.event == "metadata":
                    run_id = part.data["run_id"]
                ticks += part.event == "custom"
                if ticks == 10 and not killed.is_set():
                    _kill_the_worker_of(alone, run_id)
                    killed.set()

        follower = asyncio.create_task(follow())
        try:
            async with asyncio.timeout(30):
                await killed.wait()
            await client.threads.delete(t)  # waits SETTLE_SECONDS for the run, in vain
            async with asyncio.timeout(10):  # on the bug: forever
                await follower
            assert 10 <= ticks < 300
            assert alone.rows("SELECT count(*) FROM runs") == [(0,)]
        finally:
            follower.cancel()
            await client.http.client.aclose()
        assert any("did not stop" in line for line in alone.apis[0].output)


async def test_a_cancel_sent_while_no_worker_listens_still_ends_the_run() -> None:
    """Its only worker dead, the run is cancelled: the message reaches no worker. The worker
    started after it takes the run over and finds the cancel kept on the run's row before the
    graph runs again. It ran the run to its end before, a cancel answered 202 and lost."""
    with running_cluster(apis=1, workers=1) as alone:
        client = get_client(url=alone.apis[0].url)
        try:
            t = (await client.threads.create())["thread_id"]
            body = {"n": 500, "delay": 0.02}  # 10 s, from its start again when taken over
            run = await client.runs.create(t, "ticker", input=body, stream_mode=["custom"])
            attempts, ticks = [], []
            async with asyncio.timeout(60):
                async for part in client.runs.join_stream(t, run["run_id"], last_event_id="0"):
                    if part.event == "metadata":
                        attempts.append(part.data["attempt"])
                    elif part.event == "custom":
                        ticks.append(part.data["tick"])
                        if ticks == [*range(6)]:
                            killed = _kill_the_worker_of(alone, run["run_id"])
                            await client.runs.cancel(t, run["run_id"])
                            _replace_worker(alone, killed)
            assert (await client.runs.get(t, run["run_id"]))["status"] == "interrupted"
            # Not run again, not even until the new worker's first renewal.
            assert attempts == [1]
            assert ticks == [*range(len(ticks))]
        finally:
            await client.http.client.aclose()
        assert any("kept on its row" in line for line in alone.workers[0].output)


async def test_a_cancel_missed_while_the_worker_s_listener_was_away_ends_the_run_at_once() -> None:
    """A cancel whose message reached no worker (sent while the worker's control listener had
    lost Redis) is kept on the run's row; the listener subscribing again brings a lease
    renewal at once, which finds it. Before, it waited for the next round of renewals, a third
    of a lease later (200 s here): the run, a minute long, ran to its end. The cancel is kept
    here as `RunService.cancel` keeps it, without its message (whether a real one arrives
    before or after the listener is back is a race), then the listener's connection killed."""
    with running_cluster(apis=1, workers=1, env={"AGENTSTREAM_LEASE_SECONDS": "600"}) as made:
        worker = made.workers[0]
        client = get_client(url=made.apis[0].url)
        redis = Redis.from_url(REDIS_URI)
        try:
            t = (await client.threads.create())["thread_id"]
            body = {"n": 3000, "delay": 0.02}  # a minute
            run = await client.runs.create(t, "ticker", input=body, stream_mode=["custom"])
            ticks = []
            async with asyncio.timeout(45):
                async for part in client.runs.join_stream(t, run["run_id"], last_event_id="0"):
                    if part.event == "custom":
                        ticks.append(part.data["tick"])
                        if len(ticks) == 5:
                            kept = "UPDATE runs SET cancel_action = 'interrupt' WHERE run_id = %s"
                            made.rows(kept + " RETURNING run_id", run["run_id"])
                            [listener] = await _control_listeners(redis, worker.pid)
                            await redis.execute_command("CLIENT", "KILL", "ID", listener)
            assert (await client.runs.get(t, run["run_id"]))["status"] == "interrupted"
            assert 5 <= len(ticks) < 3000
            assert len(await _control_listeners(redis, worker.pid)) == 1  # subscribed again
        finally:
            await redis.aclose()
            await client.http.client.aclose()
        assert any("kept on its row" in line for line in worker.output)


async def _control_listeners(redis: Redis, pid: int) -> list[str]:
    """The ids of the Redis connections subscribed to the control channels from process `pid`."""
    return [
        c["id"]
        for c in await redis.client_list()
        if c.get("name") == f"agentstream-control:{pid}" and int(c["sub"]) > 0
    ]


def _kill_the_worker_of(cluster: Cluster, run_id: str) -> ServerProcess:
    """Kills (SIGKILL) the worker that holds the run's lease."""
    [(worker_id,)] = cluster.rows("SELECT worker_id FROM runs WHERE run_id = %s", run_id)
    killed = next(w for w in cluster.workers if w.url == worker_id)
    killed.kill()
    return killed


def _replace_worker(cluster: Cluster, killed: ServerProcess) -> None:
    """Brings the cluster back to two workers for whatever runs next."""
    env = {"DATABASE_URI": cluster.database_uri, "REDIS_URI": REDIS_URI}
    replacement = start_server(
        None, command="worker", env={**env, "AGENTSTREAM_LEASE_SECONDS": "2"}
    )
    cluster.workers[cluster.workers.index(killed)] = replacement


def test_workers_run_on_uvloop_as_the_api_does(cluster: Cluster) -> None:
    """`serve` and `dev` run on uvloop (uvicorn picks it); a worker, started with asyncio's own
    loop, spent about a tenth more CPU on each token it published."""
    for worker in cluster.workers:
        ready = [line for line in worker.output if " ready" in line]
        assert ready and ready[0].rstrip().endswith("(event loop: uvloop)"), worker.output


def test_a_threads_next_run_starts_as_the_one_before_it_ends() -> None:
    """With a lease of ten minutes, a run queued behind another on its thread starts when that
    one ends, not when a lease check comes: PostgreSQL tells the workers at the end's commit
    (the worker that ran it no longer wakes them through Redis)."""
    env = {"AGENTSTREAM_LEASE_SECONDS": "600"}
    with running_cluster(apis=1, workers=1, env=env) as made:
        with httpx.Client(base_url=made.apis[0].url, timeout=20) as http:
            thread = http.post("/threads", json={}).json()["thread_id"]
            runs = [
                http.post(
                    f"/threads/{thread}/runs",
                    json={"assistant_id": "ticker", "input": {"n": n, "delay": 0.05},
                          "multitask_strategy": "enqueue"},
                ).json()["run_id"]
                for n in (5, 2, 3)
            ]  # fmt: skip
            # Each joined in turn: the second and third wait for the one before them.
            counts = [http.get(f"/threads/{thread}/runs/{r}/join").json()["count"] for r in runs]
            assert counts == [5, 7, 10]  # the thread's count, each run adding its ticks
            statuses = [http.get(f"/threads/{thread}/runs/{r}").json()["status"] for r in runs]
            assert statuses == ["success"] * 3


def test_an_idle_worker_hears_of_a_queued_run_from_the_database() -> None:
    """With a lease of ten minutes an idle worker sleeps that long unless told of a run: each
    run queued through `serve` (which wakes nobody for it) reaches it at once, from the notice
    PostgreSQL sends at the create's commit. Stateless runs: their ends wake nobody either."""
    env = {"AGENTSTREAM_LEASE_SECONDS": "600"}
    with running_cluster(apis=1, workers=1, env=env) as made:
        with httpx.Client(base_url=made.apis[0].url, timeout=20) as http:
            for n in range(1, 4):
                body = {"assistant_id": "ticker", "input": {"n": n}}
                assert http.post("/runs/wait", json=body).json()["count"] == n


def _frames(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each SSE frame, as the lines come."""
    event, data, event_id = "", "", None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif not line and event:
            yield event, data, event_id
            event, data, event_id = "", "", None


def test_a_streamed_run_says_its_metadata_before_a_worker_takes_it() -> None:
    """The API publishes a streamed run's first event itself, so its client hears of the run
    without waiting for a worker's claim (a notice and a statement away); the worker that
    takes it publishes none of its own, and the log holds the one, at id 1."""
    with running_cluster(apis=1, workers=0) as made:
        with httpx.Client(base_url=made.apis[0].url, timeout=30) as http:
            body = {"assistant_id": "ticker", "input": {"n": 3}, "stream_mode": ["custom"]}
            with http.stream("POST", "/runs/stream", json=body) as response:
                frames = _frames(response.iter_lines())
                event, data, event_id = next(frames)
                run_id = response.headers["content-location"].rsplit("/", 1)[-1]
                # No worker yet: the run is still queued, and its stream has begun.
                assert made.rows("SELECT status FROM runs WHERE run_id = %s", run_id) == [
                    ("pending",)
                ]
                assert (event, event_id) == ("metadata", "1")
                assert json.loads(data) == {"run_id": run_id, "attempt": 1}
                env = {"DATABASE_URI": made.database_uri, "REDIS_URI": REDIS_URI}
                made.workers.append(start_server(None, command="worker", env=env))
                rest = list(frames)
    assert [(e, i) for e, _, i in rest] == [("custom", "2"), ("custom", "3"), ("custom", "4")]


@pytest.mark.parametrize("strategy", ["enqueue", "interrupt"])
def test_a_run_waiting_its_turn_says_nothing_until_it_starts(
    server: ServerProcess, strategy: str
) -> None:
    """As on the real server, the stream of a run queued behind another on its thread begins
    (metadata first) when the run starts, not when it is created."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        first = {"assistant_id": "ticker", "input": {"n": 4, "delay": 0.1}}
        before = http.post(f"/threads/{thread}/runs", json=first).json()["run_id"]
        body = {"assistant_id": "ticker", "input": {"n": 1}, "multitask_strategy": strategy}
        path = f"/threads/{thread}/runs/stream"
        with http.stream("POST", path, json=body) as response:
            event, _, event_id = next(_frames(response.iter_lines()))
            status = http.get(f"/threads/{thread}/runs/{before}").json()["status"]
    assert (event, event_id) == ("metadata", "1")
    assert status == ("success" if strategy == "enqueue" else "interrupted")
