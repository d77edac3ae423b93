"""The store through the official SDK's `client.store` (async and sync) and raw HTTP, on both
deployments: every route and parameter, and graphs that remember across threads."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import LangGraphClient

from tests.conftest import ServerProcess


def root() -> str:
    """A namespace root no other test writes under."""
    return f"t{uuid.uuid4().hex[:12]}"


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment


async def test_put_get_update_delete(client: LangGraphClient) -> None:
    ns = [root(), "prefs"]
    await client.store.put_item(ns, "theme", {"color": "dark", "size": 3})
    item = await client.store.get_item(ns, "theme")
    assert list(item) == ["namespace", "key", "value", "created_at", "updated_at"]
    assert item["namespace"] == ns
    assert item["key"] == "theme"
    assert item["value"] == {"color": "dark", "size": 3}
    assert _moment(item["updated_at"]) >= _moment(item["created_at"])

    await client.store.put_item(ns, "theme", {"color": "light"})
    again = await client.store.get_item(ns, "theme")
    assert again["value"] == {"color": "light"}
    assert _moment(again["updated_at"]) >= _moment(item["updated_at"])

    await client.store.delete_item(ns, "theme")
    assert await client.store.get_item(ns, "theme") is None
    await client.store.delete_item(ns, "theme")  # deleting what is gone changes nothing


async def test_a_missing_item_is_200_null(http: httpx.AsyncClient) -> None:
    response = await http.get("/store/items", params={"namespace": f"{root()}.x", "key": "k"})
    assert response.status_code == 200
    assert response.content == b"null"


async def test_put_and_delete_answer_204(http: httpx.AsyncClient) -> None:
    ns = [root()]
    put = await http.put("/store/items", json={"namespace": ns, "key": "k", "value": {"a": 1}})
    assert (put.status_code, put.content) == (204, b"")
    gone = await http.request("DELETE", "/store/items", json={"namespace": ns, "key": "k"})
    assert (gone.status_code, gone.content) == (204, b"")


async def test_put_takes_index_and_ttl(client: LangGraphClient) -> None:
    ns = [root()]
    await client.store.put_item(ns, "a", {"text": "kept"}, index=False, ttl=30)
    await client.store.put_item(ns, "b", {"text": "kept", "other": "x"}, index=["other"])
    found = await client.store.search_items(ns, refresh_ttl=False)
    assert sorted(i["key"] for i in found["items"]) == ["a", "b"]
    assert (await client.store.get_item(ns, "a", refresh_ttl=True))["value"] == {"text": "kept"}


async def test_search_filters(client: LangGraphClient) -> None:
    top = root()
    for n in range(6):
        kind = "even" if n % 2 == 0 else "odd"
        await client.store.put_item([top, kind], f"k{n}", {"n": n, "kind": kind, "tag": "x"})
    await client.store.put_item([f"{top}other"], "k", {"n": 0, "kind": "even"})

    everything = await client.store.search_items([top], limit=100)
    assert sorted(i["key"] for i in everything["items"]) == [f"k{n}" for n in range(6)]
    assert all("score" not in i for i in everything["items"])

    even = await client.store.search_items([top], filter={"kind": "even"})
    assert sorted(i["value"]["n"] for i in even["items"]) == [0, 2, 4]
    big = await client.store.search_items([top], filter={"n": {"$gt": 3}})
    assert sorted(i["value"]["n"] for i in big["items"]) == [4, 5]
    both = await client.store.search_items([top], filter={"kind": "odd", "n": {"$lte": 3}})
    assert sorted(i["value"]["n"] for i in both["items"]) == [1, 3]
    not_two = await client.store.search_items([top, "even"], filter={"n": {"$ne": 2}})
    assert sorted(i["value"]["n"] for i in not_two["items"]) == [0, 4]
    assert (await client.store.search_items([top], filter={"kind": "none"}))["items"] == []


async def test_search_pages_with_limit_and_offset(client: LangGraphClient) -> None:
    ns = [root(), "pages"]
    for n in range(7):
        await client.store.put_item(ns, f"k{n}", {"n": n})
    pages = [await client.store.search_items(ns, limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    keys = [[i["key"] for i in page["items"]] for page in pages]
    assert [len(k) for k in keys] == [3, 3, 1, 0]
    assert sorted(k for page in keys for k in page) == [f"k{n}" for n in range(7)]
    assert (await client.store.search_items(ns, limit=0))["items"] == []


async def test_namespaces_by_prefix_suffix_and_depth(client: LangGraphClient) -> None:
    top = root()
    for ns in ([top, "a", "x"], [top, "a", "y"], [top, "b", "x"], [top, "b", "z", "x"]):
        await client.store.put_item(ns, "k", {"v": 1})

    def listed(found: dict[str, Any]) -> list[list[str]]:
        return sorted(found["namespaces"])

    every = await client.store.list_namespaces(prefix=[top])
    all_four = [[top, "a", "x"], [top, "a", "y"], [top, "b", "x"], [top, "b", "z", "x"]]
    assert listed(every) == all_four
    under_a = await client.store.list_namespaces(prefix=[top, "a"])
    assert listed(under_a) == [[top, "a", "x"], [top, "a", "y"]]
    ending_x = await client.store.list_namespaces(prefix=[top], suffix=["x"])
    assert listed(ending_x) == [[top, "a", "x"], [top, "b", "x"], [top, "b", "z", "x"]]
    wildcard = await client.store.list_namespaces(prefix=[top, "*", "x"])
    assert listed(wildcard) == [[top, "a", "x"], [top, "b", "x"]]
    shallow = await client.store.list_namespaces(prefix=[top], max_depth=2)
    assert listed(shallow) == [[top, "a"], [top, "b"]]
    first = await client.store.list_namespaces(prefix=[top], limit=3)
    rest = await client.store.list_namespaces(prefix=[top], limit=3, offset=3)
    assert len(first["namespaces"]) == 3 and len(rest["namespaces"]) == 1
    assert sorted(first["namespaces"] + rest["namespaces"]) == listed(every)


def test_the_sync_client_does_the_same(server: ServerProcess) -> None:
    client = get_sync_client(url=server.url)
    try:
        ns = [root(), "sync"]
        client.store.put_item(ns, "a", {"n": 1})
        client.store.put_item(ns, "b", {"n": 2})
        assert client.store.get_item(ns, "a")["value"] == {"n": 1}
        found = client.store.search_items(ns, filter={"n": 2})
        assert [i["key"] for i in found["items"]] == ["b"]
        assert client.store.list_namespaces(prefix=ns[:1])["namespaces"] == [ns]
        client.store.delete_item(ns, "a")
        assert client.store.get_item(ns, "a") is None
    finally:
        client.http.client.close()


BAD_PUTS = [
    ({"namespace": [], "key": "k", "value": {}}, "namespace must not be empty"),
    ({"namespace": ["a.b"], "key": "k", "value": {}}, "contains a period"),
    ({"namespace": ["a", ""], "key": "k", "value": {}}, "non-empty string"),
    ({"namespace": ["x"] * 65, "key": "k", "value": {}}, "at most 64"),
    ({"namespace": ["x" * 600, "y" * 600], "key": "k", "value": {}}, "longer than 1024"),
    ({"namespace": ["a"], "key": "k", "value": [1, 2]}, "value: Input should be a valid dict"),
    ({"namespace": ["a"], "key": "k", "value": "text"}, "value: Input should be a valid dict"),
    ({"namespace": ["a"], "key": "", "value": {}}, "key must be a non-empty string"),
    ({"namespace": ["a"], "value": {}}, '"key" is a required property'),
    ({"namespace": ["a"], "key": "k", "value": {}, "ttl": -1}, "ttl: Input should be greater"),
    ({"namespace": ["a"], "key": "k", "value": {}, "index": True}, "index"),
    ({"namespace": ["a"], "key": "k\x00", "value": {}}, "key contains a NUL character"),
    ({"namespace": ["a"], "key": "k", "value": {"t": ["\x00"]}}, "value contains a NUL"),
]


@pytest.mark.parametrize(("body", "detail"), BAD_PUTS)
async def test_a_bad_put_is_a_422_that_says_why(
    http: httpx.AsyncClient, body: dict[str, Any], detail: str
) -> None:
    response = await http.put("/store/items", json=body)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


BAD_READS = [
    ("POST", "/store/items/search", {"limit": -1}, "limit: Input should be greater than"),
    ("POST", "/store/items/search", {"offset": -1}, "offset: Input should be greater than"),
    ("POST", "/store/items/search", {"limit": 5000}, "limit: Input should be less than"),
    ("POST", "/store/items/search", {"namespace_prefix": ["a.b"]}, "contains a period"),
    ("POST", "/store/items/search", {"filter": [1]}, "filter: Input should be a valid dict"),
    ("POST", "/store/items/search", {"filter": {"a": "\x00"}}, "contains a NUL character"),
    ("POST", "/store/namespaces", {"limit": -1}, "limit: Input should be greater than"),
    ("POST", "/store/namespaces", {"max_depth": 0}, "max_depth: Input should be greater"),
    ("POST", "/store/namespaces", {"prefix": ["a.b"]}, "contains a period"),
    ("DELETE", "/store/items", {"namespace": [], "key": "k"}, "namespace must not be empty"),
    ("DELETE", "/store/items", {"namespace": ["a"]}, '"key" is a required property'),
]


@pytest.mark.parametrize(("method", "path", "body", "detail"), BAD_READS)
async def test_a_bad_read_is_a_422_that_says_why(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any], detail: str
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"namespace": "a..b", "key": "k"}, "non-empty string"),
        ({"namespace": "", "key": "k"}, "namespace must not be empty"),
        ({"key": "k"}, '"namespace" is a required property'),
        ({"namespace": "a"}, '"key" is a required property'),
    ],
)
async def test_a_bad_get_is_a_422_that_says_why(
    http: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await http.get("/store/items", params=params)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


async def test_info_reports_the_store(http: httpx.AsyncClient) -> None:
    flags = (await http.get("/info")).json()["flags"]
    assert flags["store"] is True
    assert flags["store_ttl"] is True
    assert flags["store_semantic_search"] is False  # examples/langgraph.json has no store.index


# --- graphs that remember ----------------------------------------------------------------------


async def test_a_memory_written_on_one_thread_is_read_on_another(
    client: LangGraphClient,
) -> None:
    user = root()
    first = await client.threads.create()
    out = await client.runs.wait(
        first["thread_id"], "memory", input={"user": user, "remember": "likes tea"}
    )
    assert isinstance(out, dict) and out["memories"] == ["likes tea"]
    second = await client.threads.create()
    later = await client.runs.wait(second["thread_id"], "memory", input={"user": user})
    assert isinstance(later, dict)
    # The node's `store` argument, get_store() and runtime.store all see it.
    assert later["memories"] == later["recalled"] == later["runtime_saw"] == ["likes tea"]
    found = await client.store.search_items([user, "memories"])
    assert [i["value"] for i in found["items"]] == [{"text": "likes tea"}]


async def test_stateless_and_background_runs_have_the_store(client: LangGraphClient) -> None:
    user = root()
    stateless = await client.runs.wait(None, "memory", input={"user": user, "remember": "one"})
    assert isinstance(stateless, dict) and stateless["recalled"] == ["one"]
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], "memory", input={"user": user, "remember": "two"}
    )
    joined = await client.runs.join(thread["thread_id"], run["run_id"])
    assert isinstance(joined, dict) and joined["runtime_saw"] == ["one", "two"]
    item = await client.store.search_items([user], filter={"text": "two"})
    assert [i["namespace"] for i in item["items"]] == [[user, "memories"]]


async def test_a_graph_reads_what_the_api_wrote(client: LangGraphClient) -> None:
    user = root()
    await client.store.put_item([user, "memories"], "m", {"text": "from the api"})
    out = await client.runs.wait(None, "memory", input={"user": user})
    assert isinstance(out, dict) and out["recalled"] == ["from the api"]


async def test_many_calls_at_once_all_land(client: LangGraphClient) -> None:
    ns = [root(), "busy"]
    await asyncio.gather(*(client.store.put_item(ns, f"k{n}", {"n": n}) for n in range(50)))
    got = await asyncio.gather(*(client.store.get_item(ns, f"k{n}") for n in range(50)))
    assert [item["value"]["n"] for item in got] == list(range(50))
    found = await client.store.search_items(ns, limit=100)
    assert len(found["items"]) == 50
