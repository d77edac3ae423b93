"""A run that ends while its worker renews leases ends normally: the renewal finds its row no
longer running (its end is stored), which must not read as "taken over by another worker"
and stop the run between storing its end and closing its stream (the stream then never
ended). Nor must a rolled-back run's, whose row is deleted before it settles, nor a run's
whose thread was deleted while it still cleaned up after its cancel. A lease of a second
renews many times while hundreds of runs end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from agentstream.execution.runs import SETTLE_SECONDS
from tests.servers import EXAMPLES, ServerProcess, running_cluster, start_server
from tests.sse import sse_events
from tests.test_runs_api import LiveTicker

SHORT_LEASE = {"AGENTSTREAM_LEASE_SECONDS": "1"}  # renewed every third of a second
STUBBORN = Path(__file__).parent / "stubborn_app" / "langgraph.json"


def _deployment(kind: str, tmp_path: Path, config: Path) -> Iterator[list[ServerProcess]]:
    """(the server to call, every process of the deployment), on a short lease."""
    if kind == "embedded":
        proc = start_server(tmp_path / "agentstream.sqlite", config=config, env=SHORT_LEASE)
        yield [proc]
        proc.stop()
        return
    with running_cluster(config=config, apis=1, workers=1, env=SHORT_LEASE) as cluster:
        yield [*cluster.apis, *cluster.workers]


@pytest.fixture(params=["embedded", "distributed"])
def short_lease(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    yield from _deployment(request.param, tmp_path, EXAMPLES)


@pytest.fixture(params=["embedded", "distributed"])
def stubborn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    yield from _deployment(request.param, tmp_path, STUBBORN)


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
    _assert_none_taken_over(short_lease)


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
    _assert_none_taken_over(short_lease)


async def test_a_run_outliving_its_thread_s_delete_ends_its_stream(
    stubborn: list[ServerProcess],
) -> None:
    """A thread's delete cancels its runs and waits SETTLE_SECONDS for them to stop, then
    deletes their rows and ends the streams of those still going. A graph still cleaning up
    after its cancel then had a renewal find its row gone, read that as "taken over", and was
    stopped unsettled, its cleanup cut short; its stream never ended."""
    api = stubborn[0]
    client = get_client(url=api.url)
    thread_id = (await client.threads.create())["thread_id"]
    waiting = asyncio.Event()
    events: list[str] = []

    async def follow() -> None:
        body = {"cleanup": SETTLE_SECONDS + 2}
        async for part in client.runs.stream(
            thread_id, "stubborn", input=body, stream_mode="custom"
        ):
            events.append(part.event)
            if part.event == "custom":
                waiting.set()

    follower = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(30):
            await waiting.wait()
        await client.threads.delete(thread_id)  # waits SETTLE_SECONDS, then deletes the rows
        async with asyncio.timeout(30):  # on the bug: forever
            await follower
        assert events == ["metadata", "custom"]
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await client.threads.get(thread_id)  # the run's end did not bring its thread back
        assert gone.value.response.status_code == 404
    finally:
        follower.cancel()
        await client.http.client.aclose()
    logs = _logs(stubborn)
    assert "did not stop" in logs  # the delete ended its stream: its graph had not stopped yet
    _assert_none_taken_over(stubborn)


def _logs(procs: list[ServerProcess]) -> str:
    return "".join(line for proc in procs for line in proc.output)


def _assert_none_taken_over(procs: list[ServerProcess]) -> None:
    """No run of the deployment was stopped as another worker's, nor did anything crash."""
    logs = _logs(procs)
    assert "taken over" not in logs
    assert "Traceback" not in logs
