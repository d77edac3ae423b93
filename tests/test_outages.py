"""Outages lose nothing (issue 11, point 2): Redis servers this suite started itself are killed
(a restart without persistence empties them) and started again under publishers, readers and
streamed runs. Every event reaches every reader exactly once, or the reader is told
explicitly; ids a reader has seen are never given to another event; no run is left unfinished."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from agentstream.eventbus import EventsEvicted
from agentstream.eventbus.redis import RedisEventBus
from tests.cluster import running_cluster
from tests.conftest import ServerProcess
from tests.services import PostgresServer, RedisServer

DOWN_SECONDS = 2.0  # how long each outage lasts: part of the scenario, not a synchronisation


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisEventBus]:
    made = RedisEventBus(redis_server.url, outage_seconds=30)
    yield made
    await made.aclose()


def item(i: int) -> tuple[str, str, bytes]:
    return ("custom", "custom", b'{"i":%d}' % i)


async def restart_later(server: RedisServer) -> None:
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(server.start)


async def test_a_redis_restart_mid_log_loses_no_event_and_reuses_no_id(
    bus: RedisEventBus, redis_server: RedisServer
) -> None:
    run_id = uuid.uuid4().hex
    for i in (1, 2, 3):
        await bus.publish(run_id, [item(i)])
    seen: list[int] = []
    three = asyncio.Event()

    async def read() -> None:
        async for batch in bus.subscribe(run_id, 0):
            seen.extend(e.seq for e in batch)
            if len(seen) >= 3:
                three.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(three.wait(), 10)
    redis_server.kill()  # events 1-3 are gone with it
    restart = asyncio.create_task(restart_later(redis_server))
    assert await bus.publish(run_id, [item(4)]) == 4  # rode out the outage
    assert await bus.publish(run_id, [item(5)]) == 5
    await bus.close(run_id)
    await restart
    await asyncio.wait_for(reader, 30)
    assert seen == [1, 2, 3, 4, 5]
    # A reader that had not seen what the restart lost is told so, never handed a gap.
    with pytest.raises(EventsEvicted) as evicted:
        async for _ in bus.subscribe(run_id, 1):
            pass
    assert evicted.value.first_kept == 4


async def test_a_reader_is_told_when_a_log_begins_again_below_it(
    bus: RedisEventBus, redis_server: RedisServer
) -> None:
    run_id = uuid.uuid4().hex
    for i in (1, 2, 3):
        await bus.publish(run_id, [item(i)])
    reader_bus = RedisEventBus(redis_server.url, outage_seconds=30, block_seconds=0.2)
    other = RedisEventBus(redis_server.url)  # another process: it knows no floor for this log
    try:

        async def read() -> list[int]:
            return [e.seq async for batch in reader_bus.subscribe(run_id, 3) for e in batch]

        reader = asyncio.create_task(read())
        redis_server.kill()
        await restart_later(redis_server)
        await other.publish(run_id, [item(1)])  # begins the log again at id 1
        with pytest.raises(EventsEvicted):
            await asyncio.wait_for(reader, 30)
    finally:
        await reader_bus.aclose()
        await other.aclose()


async def test_a_publish_rides_out_an_outage_but_not_forever(redis_server: RedisServer) -> None:
    from agentstream.eventbus import BusUnavailable

    short = RedisEventBus(redis_server.url, outage_seconds=0.5)
    try:
        redis_server.kill()
        with pytest.raises(BusUnavailable):
            await short.publish(uuid.uuid4().hex, [item(1)])
    finally:
        await short.aclose()


# --- the distributed deployment -----------------------------------------------------------------


@pytest.fixture
def cluster_on_own_redis(redis_server: RedisServer) -> Iterator[str]:
    with running_cluster(apis=1, workers=2, env={"REDIS_URI": redis_server.url}) as cluster:
        yield cluster.apis[0].url


async def _follow(
    url: str, thread_id: str, run_id: str, first: asyncio.Event
) -> tuple[list[int], dict[str, Any] | None]:
    """Reads a run's stream from its start to its end: the ticks in order, and the error event
    that ended it, if one did."""
    ticks: list[int] = []
    client = get_client(url=url)
    try:
        async for part in client.runs.join_stream(thread_id, run_id, last_event_id="0"):
            if part.event == "custom":
                ticks.append(part.data["tick"])
                first.set()
            if part.event == "error":
                return ticks, part.data
    finally:
        await client.http.client.aclose()
    return ticks, None


async def test_runs_streamed_across_a_redis_restart_deliver_every_event_once(
    cluster_on_own_redis: str, redis_server: RedisServer
) -> None:
    url = cluster_on_own_redis
    client = get_client(url=url)
    runs = []
    for _ in range(3):
        thread = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread, "ticker", input={"n": 80, "delay": 0.04}, stream_mode="custom"
        )
        runs.append((thread, run["run_id"]))
    started = [asyncio.Event() for _ in runs]
    readers = [
        asyncio.create_task(_follow(url, t, r, first))
        for (t, r), first in zip(runs, started, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
    redis_server.kill()
    await restart_later(redis_server)
    results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    for ticks, error in results:
        # Exactly once and in order, as far as the reader got.
        assert ticks == list(range(len(ticks)))
        if error is None:
            assert len(ticks) == 80
        else:
            # Redis came back empty and the reader had not yet read what it lost (events the
            # executor had been told were stored): it is told so, explicitly.
            assert error["error"] == "EventsEvicted", error
    for thread, run_id in runs:
        # A reader told EventsEvicted stops before its run ends: wait for the run itself.
        await asyncio.wait_for(client.runs.join(thread, run_id), 60)
        assert (await client.runs.get(thread, run_id))["status"] == "success"
    # New runs work at once, through connections that were pooled before the restart.
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"assistant_id": "ticker", "input": {"n": 3}}
        answer = await http.post("/runs/wait", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["count"] == 3
    await client.http.client.aclose()


async def test_a_run_created_while_redis_is_down_is_answered_created_and_runs_once(
    cluster_on_own_redis: str, redis_server: RedisServer
) -> None:
    url = cluster_on_own_redis
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        redis_server.kill()
        restart = asyncio.create_task(restart_later(redis_server))
        body = {"assistant_id": "ticker", "input": {"n": 2}}
        answer = await http.post(f"/threads/{thread}/runs", json=body)
        # Stored, so answered as created: an error here would make a client run it twice.
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["run_id"]
        await restart
        joined = await http.get(f"/threads/{thread}/runs/{run_id}/join", timeout=60)
        assert joined.json()["count"] == 2
        runs = (await http.get(f"/threads/{thread}/runs")).json()
        assert [(r["run_id"], r["status"]) for r in runs] == [(run_id, "success")]


async def test_a_cancel_while_redis_is_down_is_accepted_and_ends_the_run(
    cluster_on_own_redis: str, redis_server: RedisServer
) -> None:
    """Redis is down when a running run is cancelled: the cancel is kept on the run's row but
    its message cannot be sent. The worker finds it when its listener is back (or at its next
    lease renewal), so the cancel is answered as accepted and the run ends interrupted."""
    url = cluster_on_own_redis
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {
            "assistant_id": "ticker",
            "input": {"n": 3000, "delay": 0.02},  # a minute
            "stream_mode": ["custom"],
        }
        run_id = (await http.post(f"/threads/{thread}/runs", json=body)).json()["run_id"]
        path = f"/threads/{thread}/runs/{run_id}"
        async with http.stream("GET", f"{path}/stream") as stream:  # until its first tick
            async for line in stream.aiter_lines():
                if line == "event: custom":
                    break
        redis_server.kill()
        restart = asyncio.create_task(restart_later(redis_server))
        answer = await http.post(f"{path}/cancel")
        # Kept on the run's row, so accepted: a 503 told the client it had failed, and the
        # run then ended cancelled all the same.
        assert answer.status_code == 202, answer.text
        await restart
        await http.get(f"{path}/join", timeout=45)  # the run alone takes a minute
        assert (await http.get(path)).json()["status"] == "interrupted"


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    server.stop()
    server.remove()


async def _ids_of(url: str, thread_id: str, run_id: str, first: asyncio.Event) -> list[str]:
    """A run's stream from its start to its end, as (event id, event) in order."""
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        path = f"/threads/{thread_id}/runs/{run_id}/stream"
        async with http.stream("GET", path, headers={"Last-Event-ID": "0"}) as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    seen.append(f"{line[4:]} {event}")
                    first.set()
    return seen


async def test_a_postgres_restart_leaves_no_run_unfinished_and_new_runs_work(
    postgres_server: PostgresServer,
) -> None:
    with running_cluster(apis=1, workers=2, admin_uri=postgres_server.url) as cluster:
        url = cluster.apis[0].url
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            runs = []
            for _ in range(3):
                thread = (await http.post("/threads", json={})).json()["thread_id"]
                body = {"assistant_id": "agent", "input": {"messages": [{"role": "user",
                        "content": "hi"}]}, "stream_mode": ["updates", "custom"]}  # fmt: skip
                body = {"assistant_id": "ticker", "input": {"n": 60, "delay": 0.04},
                        "stream_mode": ["custom"]}  # fmt: skip
                run = (await http.post(f"/threads/{thread}/runs", json=body)).json()
                runs.append((thread, run["run_id"]))
            started = [asyncio.Event() for _ in runs]
            readers = [
                asyncio.create_task(_ids_of(url, t, r, first))
                for (t, r), first in zip(runs, started, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
            await asyncio.to_thread(postgres_server.stop)
            await asyncio.sleep(DOWN_SECONDS)  # the outage
            await asyncio.to_thread(postgres_server.start)
            try:
                streams = await asyncio.wait_for(asyncio.gather(*readers), 90)
            except TimeoutError:
                for proc in cluster.workers + cluster.apis:
                    print("".join(proc.output[-60:]))
                raise
            for seen in streams:
                ids = [int(entry.split()[0]) for entry in seen]
                assert ids == list(range(1, len(ids) + 1)), " ".join(seen)  # no gap, no repeat
            # Every run ends, and within seconds of the database's return, not a lease later.
            final = cluster.rows("SELECT status FROM runs WHERE status NOT IN ('success')")
            assert final == []
            # The first requests after the restart go through connections pooled before it.
            for _ in range(3):
                answer = await http.post("/runs/wait", json={"assistant_id": "ticker",
                                                             "input": {"n": 2}})  # fmt: skip
                assert answer.status_code == 200, answer.text
                assert answer.json()["count"] == 2


# --- SQLite --------------------------------------------------------------------------------------


def test_a_locked_sqlite_file_is_503_then_the_server_goes_on(
    server_factory: Callable[..., ServerProcess],
) -> None:
    proc = server_factory()
    holder = sqlite3.connect(proc.database, timeout=30, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the file (a backup, say)
        with httpx.Client(base_url=proc.url, timeout=60) as http:
            locked = http.post("/threads", json={})
            assert locked.status_code == 503, locked.text
            assert "database is locked" in locked.json()["detail"]
            holder.execute("ROLLBACK")
            assert http.post("/threads", json={}).status_code == 200
            answer = http.post("/runs/wait", json={"assistant_id": "ticker", "input": {"n": 2}})
            assert answer.json()["count"] == 2
    finally:
        holder.close()


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MB tmpfs of this test's own (the suite runs as root, as CI does)."""
    mount = Path(tempfile.mkdtemp(prefix="agentstream-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_a_full_disk_is_503_then_the_server_goes_on(
    server_factory: Callable[..., ServerProcess], small_disk: Path
) -> None:
    proc = server_factory(database=small_disk / "agentstream.sqlite")
    filler = small_disk / "filler"
    with httpx.Client(base_url=proc.url, timeout=60) as http:
        assert http.post("/threads", json={}).status_code == 200
        with filler.open("wb") as out:  # take every byte left
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
        big = {"metadata": {"blob": "x" * 200_000}}
        full = http.post("/threads", json=big)
        assert full.status_code == 503, full.text
        assert "full" in full.json()["detail"]
        filler.unlink()
        assert http.post("/threads", json=big).status_code == 200
        answer = http.post("/runs/wait", json={"assistant_id": "ticker", "input": {"n": 2}})
        assert answer.json()["count"] == 2
