"""Crons (issue 15, point 1 and 2): the SDK's cron client on both deployments, with the
scheduler's clock driven through AGENTSTREAM_CLOCK_FILE (every process of a deployment reads
it), so no test waits for a real minute to pass."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.servers import serving
from tests.test_webhooks import LOOPBACK_ALLOWED, Receiver, write_config

HI = {"messages": [{"role": "human", "content": "hi"}]}
START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)


@dataclass
class Deployment:
    urls: list[str]
    clock: Path

    def set_clock(self, when: datetime) -> None:
        # Replaced whole, so a process never reads half a time.
        partial = self.clock.with_suffix(".tmp")
        partial.write_text(when.isoformat())
        os.replace(partial, self.clock)


def _deployment(
    kind: str, tmp: Path, apis: int, workers: int, config: Path | None = None
) -> Iterator[Deployment]:
    clock = tmp / "clock"
    clock.write_text(START.isoformat())
    config = config or write_config(tmp, LOOPBACK_ALLOWED)
    env = {"AGENTSTREAM_CLOCK_FILE": str(clock)}
    database = tmp / "db.sqlite"
    with serving(kind, config, database, env=env, apis=apis, workers=workers) as urls:
        yield Deployment(urls, clock)


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    yield from _deployment(request.param, tmp_path_factory.mktemp("crons"), 1, 1)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[LangGraphClient]:
    deployment.set_clock(START)
    c = get_client(url=deployment.urls[0])
    yield c
    await c.http.client.aclose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


async def _runs(client: LangGraphClient, thread_id: str, count: int) -> list[dict[str, Any]]:
    """The thread's runs once `count` of them have succeeded."""
    for _ in range(300):
        runs = await client.runs.list(thread_id)
        if sum(r["status"] == "success" for r in runs) >= count:
            return list(runs)
        await asyncio.sleep(0.1)
    raise AssertionError(f"thread {thread_id}: fewer than {count} successful runs: {runs}")


async def _advanced(client: LangGraphClient, cron_id: str, past: datetime) -> dict[str, Any]:
    """The cron once the scheduler has moved it beyond `past` (or to no next slot)."""
    for _ in range(300):
        (cron,) = [c for c in await client.crons.search(limit=1000) if c["cron_id"] == cron_id]
        nxt = cron["next_run_date"]
        if nxt is None or datetime.fromisoformat(nxt) > past:
            return cron
        await asyncio.sleep(0.1)
    raise AssertionError(f"cron {cron_id} never moved past {past}")


async def test_a_thread_cron_fires_once_per_slot_and_its_runs_succeed(
    deployment: Deployment, client: LangGraphClient, receiver: Receiver
) -> None:
    thread = await client.threads.create()
    cron = await client.crons.create_for_thread(
        thread["thread_id"], "agent", schedule="* * * * *", input=HI, webhook=receiver.url,
        metadata={"suite": "crons"},
    )  # fmt: skip
    slot = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    assert datetime.fromisoformat(cron["next_run_date"]) == slot
    assert cron["thread_id"] == thread["thread_id"]
    assert cron["schedule"] == "* * * * *" and cron["enabled"] is True
    assert cron["payload"]["input"] == HI and cron["metadata"] == {"suite": "crons"}
    assert await client.runs.list(thread["thread_id"]) == []

    deployment.set_clock(slot + timedelta(seconds=1))
    (run,) = await _runs(client, thread["thread_id"], 1)
    moved = await _advanced(client, cron["cron_id"], slot)
    assert datetime.fromisoformat(moved["next_run_date"]) == slot + timedelta(minutes=1)
    (hook,) = receiver.wait_for(run["run_id"])
    assert hook["status"] == "success"
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["messages"][0]["content"] == "hi"

    # Downtime: five slots went by; the cron fires once, then waits for the next one.
    later = slot + timedelta(minutes=6, seconds=5)
    deployment.set_clock(later)
    await _runs(client, thread["thread_id"], 2)
    moved = await _advanced(client, cron["cron_id"], later)
    assert datetime.fromisoformat(moved["next_run_date"]) == slot + timedelta(minutes=7)
    assert len(await client.runs.list(thread["thread_id"])) == 2
    await client.crons.delete(cron["cron_id"])


async def test_a_stateless_cron_fires_on_a_thread_it_then_deletes(
    deployment: Deployment, client: LangGraphClient, receiver: Receiver
) -> None:
    cron = await client.crons.create("agent", schedule="*/5 * * * *", input=HI,
                                     webhook=receiver.url)  # fmt: skip
    assert cron["thread_id"] is None and cron["on_run_completed"] == "delete"
    slot = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    assert datetime.fromisoformat(cron["next_run_date"]) == slot
    deployment.set_clock(slot)
    (hook,) = receiver.wait_where(lambda body: body.get("status") == "success")
    assert hook["values"]["messages"][0]["content"] == "hi"
    await _advanced(client, cron["cron_id"], slot)
    assert await client.threads.search(ids=[hook["thread_id"]]) == []
    await client.crons.delete(cron["cron_id"])


async def test_a_disabled_cron_and_one_past_its_end_time_do_not_fire(
    deployment: Deployment, client: LangGraphClient
) -> None:
    slot = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    quiet, ending, control = [await client.threads.create() for _ in range(3)]
    disabled = await client.crons.create_for_thread(
        quiet["thread_id"], "agent", schedule="* * * * *", input=HI, enabled=False
    )
    ends = await client.crons.create_for_thread(
        ending["thread_id"], "agent", schedule="* * * * *", input=HI,
        end_time=slot + timedelta(seconds=30),
    )  # fmt: skip
    ticking = await client.crons.create_for_thread(
        control["thread_id"], "agent", schedule="* * * * *", input=HI
    )
    deployment.set_clock(slot)
    await _runs(client, ending["thread_id"], 1)
    assert (await _advanced(client, ends["cron_id"], slot))["next_run_date"] is None
    deployment.set_clock(slot + timedelta(minutes=1))
    await _advanced(client, ticking["cron_id"], slot + timedelta(minutes=1))
    await _runs(client, control["thread_id"], 2)
    assert await client.runs.list(quiet["thread_id"]) == []
    assert len(await client.runs.list(ending["thread_id"])) == 1
    assert (await client.crons.search(thread_id=quiet["thread_id"]))[0]["enabled"] is False
    for cron in (disabled, ends, ticking):
        await client.crons.delete(cron["cron_id"])


async def test_crons_are_searched_counted_updated_and_deleted(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tag = {"suite": os.urandom(4).hex()}
    made = [
        await client.crons.create_for_thread(
            thread["thread_id"], "agent", schedule=f"{i} 9 * * *", input=HI, metadata=tag,
            timezone="America/New_York",
        )
        for i in range(3)
    ]  # fmt: skip
    # 09:00 in New York on 1 January is 14:00 UTC.
    assert datetime.fromisoformat(made[0]["next_run_date"]) == datetime(
        2030, 1, 1, 14, 0, tzinfo=UTC
    )
    found = await client.crons.search(thread_id=thread["thread_id"], sort_by="cron_id",
                                      sort_order="asc")  # fmt: skip
    assert [c["cron_id"] for c in found] == sorted(c["cron_id"] for c in made)
    assert await client.crons.count(thread_id=thread["thread_id"]) == 3
    assert await client.crons.count(metadata=tag) == 3
    picked = await client.crons.search(metadata=tag, limit=1, offset=1, select=["cron_id"])
    assert len(picked) == 1 and set(picked[0]) == {"cron_id"}

    changed = await client.crons.update(made[0]["cron_id"], schedule="30 10 * * *",
                                        enabled=False, input={"messages": []})  # fmt: skip
    assert changed["schedule"] == "30 10 * * *" and changed["enabled"] is False
    assert changed["payload"]["input"] == {"messages": []}
    assert datetime.fromisoformat(changed["next_run_date"]) == datetime(
        2030, 1, 1, 15, 30, tzinfo=UTC
    )
    assert [c["cron_id"] for c in await client.crons.search(metadata=tag, enabled=False)] == [
        made[0]["cron_id"]
    ]
    await client.crons.delete(made[0]["cron_id"])
    assert await client.crons.count(metadata=tag) == 2
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.crons.delete(made[0]["cron_id"])
    assert missing.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as invalid:
        await client.crons.create("agent", schedule="every minute")
    assert invalid.value.response.status_code == 422


def test_info_says_crons(deployment: Deployment) -> None:
    info = httpx.get(f"{deployment.urls[0]}/info").json()
    assert info["flags"]["crons"] is True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Deployment]:
    yield from _deployment("distributed", tmp_path, 2, 2)


async def test_with_two_workers_and_two_api_processes_each_slot_fires_once(
    cluster: Deployment,
) -> None:
    clients = [get_client(url=url) for url in cluster.urls]
    try:
        threads = [await clients[i % 2].threads.create() for i in range(8)]
        crons = [
            await clients[i % 2].crons.create_for_thread(
                t["thread_id"], "agent", schedule="* * * * *", input=HI
            )
            for i, t in enumerate(threads)
        ]
        for minute in (1, 2, 5):  # 5: two slots missed, one run
            slot = datetime(2030, 1, 1, 0, minute, tzinfo=UTC)
            cluster.set_clock(slot)
            for cron in crons:
                await _advanced(clients[0], cron["cron_id"], slot)
        for i, thread in enumerate(threads):
            runs = await _runs(clients[i % 2], thread["thread_id"], 3)
            assert len(runs) == 3, runs
    finally:
        for c in clients:
            await c.http.client.aclose()


AUTH_APP = Path(__file__).parent / "auth_app" / "langgraph.json"


@pytest.fixture(params=["embedded", "distributed"])
def guarded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    yield from _deployment(request.param, tmp_path, 2, 1, AUTH_APP)


async def test_a_cron_is_its_owners_and_its_runs_run_as_its_owner(guarded: Deployment) -> None:
    alice = get_client(url=guarded.urls[0], api_key="alice-token")
    bob = get_client(url=guarded.urls[-1], api_key="bob-token")
    try:
        thread = await alice.threads.create()
        with pytest.raises(httpx.HTTPStatusError) as foreign:  # bob may not use alice's thread
            await bob.crons.create_for_thread(thread["thread_id"], "whoami", schedule="* * * * *")
        assert foreign.value.response.status_code == 404
        cron = await alice.crons.create_for_thread(
            thread["thread_id"], "whoami", schedule="* * * * *", input={}
        )
        assert cron["user_id"] == "alice" and cron["metadata"]["owner"] == "alice"
        assert await bob.crons.search() == [] and await bob.crons.count() == 0
        for call in (bob.crons.delete(cron["cron_id"]),
                     bob.crons.update(cron["cron_id"], enabled=False)):  # fmt: skip
            with pytest.raises(httpx.HTTPStatusError) as hidden:
                await call
            assert hidden.value.response.status_code == 404
        assert [c["cron_id"] for c in await alice.crons.search()] == [cron["cron_id"]]

        guarded.set_clock(datetime(2030, 1, 1, 0, 1, tzinfo=UTC))
        await _runs(alice, thread["thread_id"], 1)
        values = (await alice.threads.get_state(thread["thread_id"]))["values"]
        assert values["user_id"] == "alice"
    finally:
        for c in (alice, bob):
            await c.http.client.aclose()
