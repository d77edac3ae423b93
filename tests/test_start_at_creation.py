"""A process that runs both the API and a worker (`agentstream dev`, on SQLite or on PostgreSQL
+ Redis) creates a run already started for its own worker when the worker has a free slot and
a claim would pick the run now; otherwise the run is queued and claimed in its turn. With one
slot, the slot accounting shows: a run created while the slot is taken waits, whatever made it
wait (another thread's run, a run ahead on its own thread), and the slot is never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import running_cluster, start_server

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
