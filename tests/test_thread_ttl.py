"""Threads' time to live and pruning (issue 15, point 4): `ttl` on create and update, a default
in langgraph.json's checkpointer.ttl, a sweep on both deployments that prunes expired threads
and leaves busy ones, and `POST /threads/prune`. The sweep's clock is driven through
AGENTSTREAM_CLOCK_FILE, as in test_crons.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.servers import serving, start_server
from tests.test_crons import START, Deployment
from tests.test_webhooks import write_config

HI = {"messages": [{"role": "human", "content": "hi"}]}


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("ttl")
    clock = tmp / "clock"
    clock.write_text(START.isoformat())
    config = write_config(tmp, None)
    raw = json.loads(config.read_text())
    raw["checkpointer"] = {"ttl": {"strategy": "delete", "default_ttl": 60}}
    config.write_text(json.dumps(raw))
    env = {"AGENTSTREAM_CLOCK_FILE": str(clock)}
    with serving(request.param, config, tmp / "db.sqlite", env=env) as urls:
        yield Deployment(urls, clock)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[LangGraphClient]:
    deployment.set_clock(START)
    c = get_client(url=deployment.urls[0])
    yield c
    await c.http.client.aclose()


async def _exists(client: LangGraphClient, thread_id: str) -> bool:
    return bool(await client.threads.search(ids=[thread_id]))


async def _gone(client: LangGraphClient, thread_id: str) -> None:
    for _ in range(300):
        if not await _exists(client, thread_id):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"thread {thread_id} outlived its ttl")


async def test_expired_threads_are_deleted_and_a_busy_one_waits_until_idle(
    deployment: Deployment, client: LangGraphClient
) -> None:
    # The busy one expires first, so the sweep that removes `idle` has looked at it already.
    busy = await client.threads.create(ttl={"ttl": 10, "strategy": "delete"})
    idle = await client.threads.create(ttl=10)
    defaulted = await client.threads.create()  # langgraph.json: 60 minutes
    extended = await client.threads.create(ttl=10)
    await client.threads.update(extended["thread_id"], metadata={"a": 1}, ttl=30)
    pending = await client.runs.create(busy["thread_id"], "agent", input=HI, after_seconds=3600)

    deployment.set_clock(START + timedelta(minutes=11))
    await _gone(client, idle["thread_id"])
    assert await _exists(client, busy["thread_id"])
    assert await _exists(client, defaulted["thread_id"])
    assert await _exists(client, extended["thread_id"])

    await client.runs.cancel(busy["thread_id"], pending["run_id"])
    await _gone(client, busy["thread_id"])
    assert await _exists(client, extended["thread_id"])

    deployment.set_clock(START + timedelta(minutes=61))
    await _gone(client, defaulted["thread_id"])
    await _gone(client, extended["thread_id"])


async def test_prune_deletes_idle_threads_and_keeps_the_latest_checkpoint(
    deployment: Deployment, client: LangGraphClient
) -> None:
    kept, deleted, busy = [await client.threads.create() for _ in range(3)]
    for _ in range(2):
        await client.runs.wait(kept["thread_id"], "agent", input=HI)
    assert len(await client.threads.get_history(kept["thread_id"], limit=100)) > 1
    before = (await client.threads.get_state(kept["thread_id"]))["values"]
    pending = await client.runs.create(busy["thread_id"], "agent", input=HI, after_seconds=3600)

    answer = await client.threads.prune([kept["thread_id"]], strategy="keep_latest")
    assert answer == {"pruned_count": 1}
    (latest,) = await client.threads.get_history(kept["thread_id"], limit=100)
    assert latest["values"] == before  # both runs' messages, in the one checkpoint left
    await client.runs.wait(kept["thread_id"], "agent", input=HI)  # it still runs on

    answer = await client.threads.prune([deleted["thread_id"], busy["thread_id"]])
    assert answer == {"pruned_count": 1}
    assert not await _exists(client, deleted["thread_id"])
    assert await _exists(client, busy["thread_id"])
    await client.runs.cancel(busy["thread_id"], pending["run_id"])

    async with httpx.AsyncClient(base_url=deployment.urls[0]) as http:
        bad = await http.post("/threads/prune", json={"thread_ids": [], "strategy": "shred"})
        assert bad.status_code == 422
        bad = await http.post("/threads", json={"ttl": -1})
        assert bad.status_code == 422


def test_a_malformed_checkpointer_ttl_stops_the_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    raw = json.loads(config.read_text())
    raw["checkpointer"] = {"ttl": {"strategy": "shred"}}
    config.write_text(json.dumps(raw))
    with pytest.raises(RuntimeError, match=r"checkpointer\.ttl\.strategy"):
        start_server(tmp_path / "db.sqlite", config=config)
