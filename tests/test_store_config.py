"""`store` in langgraph.json, on both deployments: semantic search with the test app's own
embedding function (store.index.embed as "file.py:function"), TTL expiry by the sweeper and
refresh on read, a graph compiled with a store of its own, and store.path."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.cluster import running_cluster
from tests.conftest import ServerProcess, start_server

STORE_APP = Path(__file__).resolve().parent / "store_app"
PAST = "2000-01-01 00:00:00"


@dataclass
class StoreServer:
    """A server of tests/store_app and a way into its store's rows, to step the clock of an
    item's expiry instead of waiting minutes for it."""

    server: ServerProcess
    sql: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

    def expire_now(self, namespace: list[str], key: str) -> None:
        self.set_expiry(namespace, key, PAST)

    def set_expiry(self, namespace: list[str], key: str, when: Any) -> None:
        self.sql("UPDATE store SET expires_at = %s WHERE prefix = %s AND key = %s",
                 (when, ".".join(namespace), key))  # fmt: skip

    def expires_at(self, namespace: list[str], key: str) -> datetime:
        [(value,)] = self.sql(
            "SELECT expires_at FROM store WHERE prefix = %s AND key = %s",
            (".".join(namespace), key),
        )
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sqlite(path: Path) -> Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]:
    def run(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path, timeout=10) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

    return run


def _postgres(uri: str) -> Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]:
    def run(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(uri, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    return run


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def store_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreServer]:
    config = STORE_APP / "langgraph.json"
    if request.param == "embedded":
        folder = tmp_path_factory.mktemp("store")
        proc = start_server(folder / "agentstream.sqlite", config=config)
        yield StoreServer(proc, _sqlite(folder / "agentstream.store.sqlite"))
        proc.stop()
        return
    with running_cluster(config, apis=1, workers=1) as cluster:
        yield StoreServer(cluster.apis[0], _postgres(cluster.database_uri))


@pytest.fixture
async def client(store_server: StoreServer) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=store_server.server.url)
    yield c
    await c.http.client.aclose()


def root() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def sweeps_until(done: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """The sweeper is a timer (every 0.3 s in store_app); read until its effect shows."""
    deadline = time.monotonic() + within
    while not await done():
        assert time.monotonic() < deadline, "the sweeper never removed the item"
        await asyncio.sleep(0.05)


async def test_semantic_search_puts_the_most_similar_first(client: LangGraphClient) -> None:
    ns = [root(), "docs"]
    await client.store.put_item(ns, "cats", {"text": "cats purr softly"})
    await client.store.put_item(ns, "rockets", {"text": "rockets fly high"})
    await client.store.put_item(ns, "markets", {"text": "markets rise today"})
    for query, best in (("rockets fly", "rockets"), ("purr cats purr", "cats")):
        found = (await client.store.search_items(ns, query=query, limit=3))["items"]
        assert found[0]["key"] == best
        scores = [i["score"] for i in found]
        assert all(isinstance(s, float) for s in scores)
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    # The same words as an item's text: the same vector, a cosine similarity of 1.
    exact = (await client.store.search_items(ns, query="markets rise today", limit=1))["items"]
    assert exact[0]["key"] == "markets" and exact[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # A query with a filter searches only what the filter admits.
    only = await client.store.search_items(ns, query="rockets", filter={"text": "cats purr softly"})
    assert [i["key"] for i in only["items"]] == ["cats"]


async def test_index_fields_choose_what_is_embedded(client: LangGraphClient) -> None:
    ns = [root()]
    # Only `text` is embedded (store.index.fields); `index` on a put overrides it.
    await client.store.put_item(ns, "a", {"text": "markets rise", "note": "rockets fly high"})
    await client.store.put_item(
        ns, "b", {"text": "cats", "note": "rockets fly high"}, index=["note"]
    )
    found = (await client.store.search_items(ns, query="rockets fly high"))["items"]
    scores = {i["key"]: i["score"] for i in found}
    assert scores["b"] == pytest.approx(1.0, abs=1e-4)  # its note, exactly
    assert scores["a"] == pytest.approx(0.0, abs=1e-4)  # its text only: no word in common


async def test_info_says_semantic_search_and_ttl(store_server: StoreServer) -> None:
    async with httpx.AsyncClient(base_url=store_server.server.url) as http:
        flags = (await http.get("/info")).json()["flags"]
    assert flags["store_semantic_search"] is True and flags["store_ttl"] is True


async def test_an_expired_item_is_swept(client: LangGraphClient, store_server: StoreServer) -> None:
    ns = [root()]
    await client.store.put_item(ns, "short", {"v": 1}, ttl=60)
    await client.store.put_item(ns, "kept", {"v": 2})
    store_server.expire_now(ns, "short")  # an hour passes

    async def swept() -> bool:
        return await client.store.get_item(ns, "short", refresh_ttl=False) is None

    await sweeps_until(swept)
    assert (await client.store.get_item(ns, "kept"))["value"] == {"v": 2}
    listed = await client.store.search_items(ns)
    assert [i["key"] for i in listed["items"]] == ["kept"]


async def test_an_item_put_without_a_ttl_gets_the_default_ttl(
    client: LangGraphClient, store_server: StoreServer
) -> None:
    ns = [root()]
    await client.store.put_item(ns, "default", {"v": 1})
    await client.store.put_item(ns, "own", {"v": 2}, ttl=10)
    left = {
        key: (store_server.expires_at(ns, key) - datetime.now(UTC)).total_seconds() / 60
        for key in ("default", "own")
    }
    assert 1430 < left["default"] <= 1441  # store_app's default_ttl: a day
    assert 9 < left["own"] <= 11


async def test_a_read_refreshes_the_ttl_unless_told_not_to(
    client: LangGraphClient, store_server: StoreServer
) -> None:
    ns = [root()]
    await client.store.put_item(ns, "k", {"v": 1}, ttl=60)
    before = store_server.expires_at(ns, "k")
    assert 55 * 60 < (before - datetime.now(UTC)).total_seconds() <= 60 * 60 + 5
    # A minute from now: not expired (a sweeper, every 0.3 s on one of these servers, would take an
    # expired item away under the test), yet far short of the hour a refresh gives.
    soon = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    store_server.set_expiry(ns, "k", soon.isoformat())
    assert await client.store.get_item(ns, "k", refresh_ttl=False) is not None
    assert store_server.expires_at(ns, "k") == soon
    # refresh_on_read is on in store_app/langgraph.json: a plain read pushes expiry an hour on.
    assert (await client.store.get_item(ns, "k"))["value"] == {"v": 1}
    assert store_server.expires_at(ns, "k") > soon + timedelta(minutes=30)
    store_server.set_expiry(ns, "k", soon.isoformat())
    await client.store.search_items(ns, refresh_ttl=True)
    assert store_server.expires_at(ns, "k") > soon + timedelta(minutes=30)


async def test_a_graph_with_a_store_of_its_own_gets_the_servers(
    client: LangGraphClient, store_server: StoreServer
) -> None:
    ns = [root(), "notes"]
    await client.runs.wait(None, "own_store", input={"note": "hello", "namespace": ns})
    item = await client.store.get_item(ns, "note")
    assert item is not None and item["value"] == {"text": "hello"}
    # Said at startup by every process that loads the graph.
    assert any("compiled with a store of its own" in line for line in store_server.server.output)


async def test_store_path_serves_a_users_own_store(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory(config=STORE_APP / "custom.json")
    client = get_client(url=srv.url)
    try:
        seeded = await client.store.get_item(["seeded"], "by")
        assert seeded is not None and seeded["value"] == {"who": "custom_store.py"}
        out = await client.runs.wait(None, "memory", input={"user": "u", "remember": "x"})
        assert isinstance(out, dict) and out["recalled"] == ["x"]
        found = await client.store.search_items(["u", "memories"])
        assert [i["value"] for i in found["items"]] == [{"text": "x"}]
    finally:
        await client.http.client.aclose()


@pytest.mark.parametrize(
    ("store", "said"),
    [
        ({"index": {"embed": "./nope.py:embed", "dims": 3}}, "store.index.embed './nope.py:embed'"),
        ({"index": {"embed": "./embed.py:embed", "dims": 0}}, "dims must be a positive integer"),
        ({"index": {"embed": "openai:text-embedding-3-small", "dims": 3}}, "pip install"),
        ({"index": {"embed": "./embed.py:DIMS", "dims": 10}}, "is not callable"),
        ({"ttl": {"sweep_interval_minutes": -1}}, "sweep_interval_minutes must be a positive"),
        ({"ttl": {"default_tll": 5}}, "unknown keys ['default_tll']"),
        ({"path": 5}, "store.path must be"),
    ],
)
def test_a_mistake_in_store_config_stops_the_start_and_says_where(
    tmp_path: Path, store: dict[str, Any], said: str
) -> None:
    config = tmp_path / "langgraph.json"
    shutil.copy(STORE_APP / "embed.py", tmp_path / "embed.py")
    graphs = {"memory": str(STORE_APP.parent.parent / "examples" / "memory.py") + ":graph"}
    config.write_text(json.dumps({"graphs": graphs, "store": store}))
    with pytest.raises(RuntimeError) as failed:
        start_server(tmp_path / "db.sqlite", config=config)
    assert said in str(failed.value)


async def test_http_disable_store_switches_the_routes_off(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "langgraph.json"
    graphs = {"memory": str(STORE_APP.parent.parent / "examples" / "memory.py") + ":graph"}
    config.write_text(json.dumps({"graphs": graphs, "http": {"disable_store": True}}))
    srv = server_factory(config=config)
    async with httpx.AsyncClient(base_url=srv.url) as http:
        response = await http.post("/store/items/search", json={})
        assert response.status_code == 404
        # The graphs keep their store: it is the routes that are off.
        body = {"assistant_id": "memory", "input": {"remember": "x"}}
        run = await http.post("/runs/wait", json=body)
        assert run.json()["recalled"] == ["x"]
