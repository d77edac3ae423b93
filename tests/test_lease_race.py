"""A run that ends while its worker renews leases ends normally: the renewal finds its row no
longer running (its end is stored), which must not read as "taken over by another worker"
and stop the run between storing its end and closing its stream (the stream then never
ended). Nor must a rolled-back run's, whose row is deleted before it settles. A lease of a
second renews many times while hundreds of runs end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from tests.servers import ServerProcess, running_cluster, start_server
from tests.sse import sse_events
from tests.test_runs_api import LiveTicker

SHORT_LEASE = {"AGENTSTREAM_LEASE_SECONDS": "1"}  # renewed every third of a second


@pytest.fixture(params=["embedded", "distributed"])
def short_lease(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """(the server to call, every process of the deployment)."""
    if request.param == "embedded":
        proc = start_server(tmp_path / "agentstream.sqlite", env=SHORT_LEASE)
        yield [proc]
        proc.stop()
        return
    with running_cluster(apis=1, workers=1, env=SHORT_LEASE) as cluster:
        yield [*cluster.apis, *cluster.workers]


async def test_runs_ending_during_lease_renewals_all_end_their_streams(
    short_lease: list[ServerProcess],
) -> None:
    api = short_lease[0]
    body = {"assistant_id": "ticker", "input": {"n": 5}, "stream_mode": ["custom"]}
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as http:

        async def one() -> list[str]:
            response = await http.post("/runs/stream", json=body)
            return [name for name, _ in sse_events(response.text)]

        for _ in range(12):
            streams = await asyncio.gather(*(one() for _ in range(30)))
            for names in streams:
                assert names == ["metadata"] + ["custom"] * 5
    logs = "".join(line for proc in short_lease for line in proc.output)
    assert "taken over" not in logs
    assert "Traceback" not in logs


async def test_runs_rolled_back_during_lease_renewals_all_end_their_streams(
    short_lease: list[ServerProcess],
) -> None:
    """A rollback deletes the run's row before the run settles: a renewal in between found it
    gone, read that as "taken over", and stopped the run unsettled (its stream never ended)."""
    api = short_lease[0]
    client = get_client(url=api.url)

    async def rolled_back() -> list[str]:
        thread_id = (await client.threads.create())["thread_id"]
        live = await LiveTicker(client, thread_id, n=200, delay=0.05).running()
        second = await client.runs.create(
            thread_id, "ticker", input={"n": 2}, multitask_strategy="rollback"
        )
        async with asyncio.timeout(30):  # on the bug: forever
            await live.closed()
            assert await client.runs.join(thread_id, second["run_id"]) == {"n": 2, "count": 2}
        return live.events

    try:
        for _ in range(6):
            for events in await asyncio.gather(*(rolled_back() for _ in range(20))):
                assert events[:2] == ["metadata", "custom"]
                assert len(events) < 201
    finally:
        await client.http.client.aclose()
    logs = "".join(line for proc in short_lease for line in proc.output)
    assert "taken over" not in logs
    assert "Traceback" not in logs
