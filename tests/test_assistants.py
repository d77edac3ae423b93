"""Assistant routes end to end through the official SDK and raw HTTP: default assistants, search,
count, get, graph, schemas, subgraphs, create, update, versions, set_latest, delete
(PROTOCOL §1.1, §10, §11, §12.2; captures assistants.txt, errors.txt)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError

from tests.conftest import assert_detail, tag

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

GRAPHS = ("agent", "subgraphs", "ticker", "hitl", "failing", "nested", "memory")
# LangGraph Server names each graph's default assistant uuid5(graph id) in this namespace.
NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
AGENT = "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
SUBGRAPHS = "142ee432-e8aa-5ab4-a2a6-c0752e50bcb6"
SCHEMA_APP = Path(__file__).parent / "schema_app" / "langgraph.json"
KEYS = [
    "assistant_id", "graph_id", "config", "context", "metadata", "name", "created_at",
    "updated_at", "version", "description",
]  # fmt: skip
SCHEMA_KEYS = ["input_schema", "output_schema", "state_schema", "config_schema", "context_schema"]

# GET /assistants/{agent}/graph, with or without xray (assistants.txt).
AGENT_GRAPH = {
    "nodes": [
        {"id": "__start__", "type": "runnable", "data": {"name": "__start__"}},
        {"id": "think", "type": "runnable", "data": {"name": "think"}},
        {"id": "finish", "type": "runnable", "data": {"name": "finish"}},
        {"id": "__end__"},
    ],
    "edges": [
        {"source": "__start__", "target": "think"},
        {"source": "think", "target": "finish"},
        {"source": "finish", "target": "__end__"},
    ],
}
# GET /assistants/{subgraphs}/graph?xray=1 (assistants.txt): the child's nodes flattened.
SUBGRAPHS_XRAY = {
    "nodes": [
        {"id": "__start__", "type": "runnable", "data": {"name": "__start__"}},
        {"id": "parent_start", "type": "runnable", "data": {"name": "parent_start"}},
        {"id": "__end__"},
        {"id": "child:child_a", "type": "runnable", "data": {"name": "child:child_a"}},
        {"id": "child:child_b", "type": "runnable", "data": {"name": "child:child_b"}},
    ],
    "edges": [
        {"source": "__start__", "target": "parent_start"},
        {"source": "parent_start", "target": "child:child_a"},
        {"source": "child:child_b", "target": "__end__"},
        {"source": "child:child_a", "target": "child:child_b"},
    ],
}
SUBGRAPHS_FLAT = {
    "nodes": [
        {"id": "__start__", "type": "runnable", "data": {"name": "__start__"}},
        {"id": "parent_start", "type": "runnable", "data": {"name": "parent_start"}},
        {"id": "child", "type": "runnable", "data": {"name": "child"}},
        {"id": "__end__"},
    ],
    "edges": [
        {"source": "__start__", "target": "parent_start"},
        {"source": "parent_start", "target": "child"},
        {"source": "child", "target": "__end__"},
    ],
}
MESSAGE_TYPES = {
    "AIMessage", "HumanMessage", "ChatMessage", "SystemMessage", "FunctionMessage",
    "ToolMessage", "AIMessageChunk", "HumanMessageChunk", "ChatMessageChunk",
    "SystemMessageChunk", "FunctionMessageChunk", "ToolMessageChunk",
}  # fmt: skip


# --- default assistants ----------------------------------------------------------------------


async def test_each_graph_has_a_default_assistant_with_langgraphs_id(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # A fresh server, so the listing holds exactly the defaults.
    fresh = server_factory()
    async with httpx.AsyncClient(base_url=fresh.url, timeout=30) as http:
        response = await http.post("/assistants/search", json={})
        assert response.status_code == 200
        assert response.headers["x-pagination-total"] == str(len(GRAPHS))
        listed = response.json()
        count = await http.post("/assistants/count", json={})
        assert count.json() == len(GRAPHS)
    assert sorted(a["graph_id"] for a in listed) == sorted(GRAPHS)
    for assistant in listed:
        graph_id = assistant["graph_id"]
        assert list(assistant) == KEYS
        assert assistant["assistant_id"] == str(uuid.uuid5(NAMESPACE, graph_id))
        assert {k: assistant[k] for k in KEYS if not k.endswith("_at")} == {
            "assistant_id": str(uuid.uuid5(NAMESPACE, graph_id)),
            "graph_id": graph_id,
            "config": {},
            "context": {},
            "metadata": {"created_by": "system"},
            "name": graph_id,
            "version": 1,
            "description": None,
        }
        assert assistant["created_at"] == assistant["updated_at"]
    # Newest first, as the real server lists them.
    created = [a["created_at"] for a in listed]
    assert created == sorted(created, reverse=True)
    assert str(uuid.uuid5(NAMESPACE, "agent")) == AGENT


async def test_a_graph_id_names_its_default_assistant_where_the_real_server_allows(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    by_name = await client.assistants.get_graph("agent")
    assert by_name == await client.assistants.get_graph(AGENT) == AGENT_GRAPH
    assert await client.assistants.get_schemas("agent") == await client.assistants.get_schemas(
        AGENT
    )
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "ticker", input={"n": 1})
    [run] = await client.runs.list(thread["thread_id"])
    assert run["assistant_id"] == str(uuid.uuid5(NAMESPACE, "ticker"))
    # GET /assistants/{id} itself takes only a UUID (assistants.txt).
    assert_detail(await http.get("/assistants/agent"), 422, "Invalid assistant ID: must be a UUID")
    assert (await http.get(f"/assistants/{AGENT}")).json()["graph_id"] == "agent"


async def test_search_by_graph_id_finds_the_default_as_captured(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/assistants/search",
        json={"graph_id": "subgraphs", "metadata": {"created_by": "system"}, "limit": 5},
    )
    assert response.status_code == 200
    assert response.headers["x-pagination-total"] == "1"
    [assistant] = response.json()
    assert assistant["assistant_id"] == SUBGRAPHS


# --- graph introspection ---------------------------------------------------------------------


async def test_get_graph_matches_the_capture_with_and_without_xray(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    assert await client.assistants.get_graph(AGENT, xray=True) == AGENT_GRAPH
    assert await client.assistants.get_graph(SUBGRAPHS) == SUBGRAPHS_FLAT
    assert await client.assistants.get_graph(SUBGRAPHS, xray=True) == SUBGRAPHS_XRAY
    assert await client.assistants.get_graph(SUBGRAPHS, xray=1) == SUBGRAPHS_XRAY
    response = await http.get(f"/assistants/{SUBGRAPHS}/graph", params={"xray": "1"})
    assert response.json() == SUBGRAPHS_XRAY
    assert_detail(
        await http.get(f"/assistants/{SUBGRAPHS}/graph", params={"xray": "sideways"}),
        422,
        "Invalid xray value: 'sideways'",
    )


async def test_get_schemas_returns_json_schemas_of_the_graph(client: LangGraphClient) -> None:
    schemas = await client.assistants.get_schemas(AGENT)
    assert list(schemas) == ["graph_id", *SCHEMA_KEYS]
    assert schemas["graph_id"] == "agent"
    state = schemas["state_schema"]
    assert state["title"] == "agent_state"
    assert state["type"] == "object"
    assert list(state["properties"]) == ["messages"]
    assert set(state["$defs"]) >= MESSAGE_TYPES
    refs = {v["$ref"] for v in state["properties"]["messages"]["items"]["oneOf"]}
    assert refs == {f"#/$defs/{t}" for t in MESSAGE_TYPES}
    # Input and output are the graph's MessagesState, where messages are required.
    assert schemas["input_schema"] == schemas["output_schema"]
    assert schemas["input_schema"]["title"] == "MessagesState"
    assert schemas["input_schema"]["required"] == ["messages"]
    assert schemas["input_schema"]["properties"]["messages"]["type"] == "array"
    assert schemas["config_schema"] == {}
    assert schemas["context_schema"] is None

    ticker = await client.assistants.get_schemas("ticker")
    assert ticker["graph_id"] == "ticker"
    props = ticker["state_schema"]["properties"]
    assert {k: props[k]["type"] for k in props} == {
        "n": "integer",
        "delay": "number",
        "count": "integer",
    }


async def test_a_field_without_a_json_schema_does_not_cost_the_state_schema(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # The state holds a lock: LangGraph cannot describe its input, but the state schema still
    # lists every field, the lock as any value (as the real server does).
    locked = server_factory(config=SCHEMA_APP)
    async with httpx.AsyncClient(base_url=locked.url, timeout=30) as http:
        found = await http.post("/assistants/search", json={"graph_id": "locked"})
        [assistant] = found.json()
        response = await http.get(f"/assistants/{assistant['assistant_id']}/schemas")
    assert response.status_code == 200
    schemas = response.json()
    assert schemas["input_schema"] is None
    assert schemas["state_schema"]["properties"] == {
        "n": {"default": None, "title": "N", "type": "integer"},
        "lock": {"default": None, "title": "Lock"},
    }


async def test_get_subgraphs_lists_child_graphs_by_namespace(client: LangGraphClient) -> None:
    assert await client.assistants.get_subgraphs(AGENT) == {}
    assert await client.assistants.get_subgraphs(AGENT, recurse=True) == {}
    found = await client.assistants.get_subgraphs(SUBGRAPHS, recurse=True)
    assert list(found) == ["child"]
    assert list(found["child"]) == SCHEMA_KEYS
    child_state = found["child"]["state_schema"]
    assert list(child_state["properties"]) == ["items"]
    assert child_state["properties"]["items"]["type"] == "array"
    assert await client.assistants.get_subgraphs(SUBGRAPHS, namespace="child") == found
    assert await client.assistants.get_subgraphs(SUBGRAPHS, namespace="nope") == {}

    nested = await client.assistants.get_subgraphs("nested")
    deep = await client.assistants.get_subgraphs("nested", recurse=True)
    assert len(deep) > len(nested) >= 1
    assert set(nested) < set(deep)
    assert all(ns.startswith(tuple(nested)) for ns in deep)


# --- create ----------------------------------------------------------------------------------


async def test_create_mirrors_configurable_into_context(client: LangGraphClient) -> None:
    metadata = {"m": 1, **tag()}
    created = await client.assistants.create(
        "agent", config={"configurable": {"x": 1}}, metadata=metadata, name="my-agent"
    )
    assert list(created) == KEYS
    assert uuid.UUID(created["assistant_id"]).version == 4
    assert {k: created[k] for k in KEYS if not k.endswith("_at") and k != "assistant_id"} == {
        "graph_id": "agent",
        "config": {"configurable": {"x": 1}},
        "context": {"x": 1},
        "metadata": metadata,
        "name": "my-agent",
        "version": 1,
        "description": None,
    }
    assert created["created_at"] == created["updated_at"]
    assert await client.assistants.get(created["assistant_id"]) == created


async def test_create_with_an_id_and_if_exists(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    assistant_id = str(uuid.uuid4())
    first = await client.assistants.create(
        "ticker", assistant_id=assistant_id, name="first", description="the first"
    )
    assert first["assistant_id"] == assistant_id
    assert first["description"] == "the first"

    with pytest.raises(ConflictError):
        await client.assistants.create("ticker", assistant_id=assistant_id, name="second")
    response = await http.post(
        "/assistants", json={"graph_id": "ticker", "assistant_id": assistant_id}
    )
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}
    assert assistant_id in response.json()["detail"]

    # do_nothing hands back what is stored, whatever the request asked for.
    kept = await client.assistants.create(
        "agent", assistant_id=assistant_id, name="other", if_exists="do_nothing"
    )
    assert kept == first
    assert await client.assistants.get(assistant_id) == first


async def test_create_rejects_unknown_graphs_and_bad_ids(http: httpx.AsyncClient) -> None:
    expected = ", ".join(f"'{g}'" for g in sorted(GRAPHS))
    assert_detail(
        await http.post("/assistants", json={"graph_id": "nope"}),
        404,
        f"Graph 'nope' not found. Expected one of: [{expected}]",
    )
    assert_detail(
        await http.post("/assistants", json={"graph_id": "agent", "assistant_id": "nope"}),
        422,
        "Invalid assistant ID: must be a UUID",
    )
    response = await http.post("/assistants", json={"name": "no graph"})
    assert response.status_code == 422
    assert "graph_id" in response.json()["detail"]


# --- update, versions, set_latest ------------------------------------------------------------


async def test_update_makes_a_new_version_and_set_latest_goes_back(
    client: LangGraphClient,
) -> None:
    created = await client.assistants.create(
        "agent", config={"configurable": {"x": 1}}, metadata={"m": 1}, name="v1"
    )
    assistant_id = created["assistant_id"]
    second = await client.assistants.update(assistant_id, metadata={"n": 2}, name="v2")
    assert second["version"] == 2
    assert second["name"] == "v2"
    assert second["metadata"] == {"m": 1, "n": 2}  # merged, not replaced
    assert second["config"] == {"configurable": {"x": 1}}
    assert second["created_at"] == created["created_at"]
    assert second["updated_at"] > created["updated_at"]

    third = await client.assistants.update(assistant_id, config={"configurable": {"x": 3}})
    assert (third["version"], third["name"]) == (3, "v2")
    assert third["config"] == {"configurable": {"x": 3}}
    assert third["context"] == {"x": 3}
    assert await client.assistants.get(assistant_id) == third

    versions = await client.assistants.get_versions(assistant_id)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(v["assistant_id"] == assistant_id for v in versions)
    assert [(v["name"], v["config"]) for v in versions] == [
        ("v2", {"configurable": {"x": 3}}),
        ("v2", {"configurable": {"x": 1}}),
        ("v1", {"configurable": {"x": 1}}),
    ]
    assert [v["version"] for v in await client.assistants.get_versions(assistant_id, limit=1)] == [
        3
    ]
    page = await client.assistants.get_versions(assistant_id, limit=2, offset=1)
    assert [v["version"] for v in page] == [2, 1]
    with_m = await client.assistants.get_versions(assistant_id, metadata={"m": 1})
    assert [v["version"] for v in with_m] == [3, 2, 1]
    with_n = await client.assistants.get_versions(assistant_id, metadata={"n": 2})
    assert [v["version"] for v in with_n] == [3, 2]

    back = await client.assistants.set_latest(assistant_id, 1)
    assert back["version"] == 1
    assert (back["name"], back["config"], back["metadata"]) == (
        "v1",
        {"configurable": {"x": 1}},
        {"m": 1},
    )
    assert await client.assistants.get(assistant_id) == back
    # Versions are kept; the next update follows the newest one, not the one now in force.
    assert len(await client.assistants.get_versions(assistant_id)) == 3
    fourth = await client.assistants.update(assistant_id, name="v4")
    assert fourth["version"] == 4
    assert fourth["metadata"] == {"m": 1}

    with pytest.raises(NotFoundError):
        await client.assistants.set_latest(assistant_id, 99)


async def test_update_to_an_unknown_graph_is_404(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    created = await client.assistants.create("agent")
    response = await http.patch(f"/assistants/{created['assistant_id']}", json={"graph_id": "nope"})
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Graph 'nope' not found.")
    assert await client.assistants.get(created["assistant_id"]) == created


async def test_a_run_uses_the_assistant_version_in_force(client: LangGraphClient) -> None:
    created = await client.assistants.create("ticker", metadata=tag())
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], created["assistant_id"], input={"n": 1})
    [run] = await client.runs.list(thread["thread_id"])
    assert run["assistant_id"] == created["assistant_id"]
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"] == {"n": 1, "count": 1}
    assert state["metadata"]["assistant_id"] == created["assistant_id"]
    assert (await client.threads.get(thread["thread_id"]))["metadata"]["graph_id"] == "ticker"


# --- search and count ------------------------------------------------------------------------


async def test_search_filters_pages_and_sorts(client: LangGraphClient) -> None:
    mine = tag()
    made = [
        await client.assistants.create(graph, metadata={**mine, "i": i}, name=name)
        for i, (graph, name) in enumerate(
            [("agent", "bravo"), ("ticker", "alpha"), ("agent", "charlie"), ("agent", "delta")]
        )
    ]
    ids = [a["assistant_id"] for a in made]

    found = await client.assistants.search(metadata=mine, limit=100)
    assert [a["assistant_id"] for a in found] == ids[::-1]  # newest first
    assert found[0] == made[-1]
    agents = await client.assistants.search(metadata=mine, graph_id="agent")
    assert [a["assistant_id"] for a in agents] == [ids[3], ids[2], ids[0]]
    assert await client.assistants.search(metadata={**mine, "i": 1}) == [made[1]]
    assert await client.assistants.search(metadata={**mine, "i": 1}, graph_id="agent") == []
    # name matches a substring, ignoring case.
    assert [a["name"] for a in await client.assistants.search(metadata=mine, name="ARL")] == [
        "charlie"
    ]

    by_name = await client.assistants.search(metadata=mine, sort_by="name", sort_order="asc")
    assert [a["name"] for a in by_name] == ["alpha", "bravo", "charlie", "delta"]
    desc = await client.assistants.search(metadata=mine, sort_by="created_at", sort_order="desc")
    assert [a["assistant_id"] for a in desc] == ids[::-1]
    asc = await client.assistants.search(metadata=mine, sort_by="created_at", sort_order="asc")
    assert [a["assistant_id"] for a in asc] == ids

    page = await client.assistants.search(metadata=mine, limit=2, offset=1, sort_order="asc")
    assert [a["assistant_id"] for a in page] == ids[1:3]
    obj = await client.assistants.search(metadata=mine, limit=3, response_format="object")
    assert [a["assistant_id"] for a in obj["assistants"]] == ids[:0:-1]
    assert obj["next"] == "3"
    last = await client.assistants.search(
        metadata=mine, limit=3, offset=3, response_format="object"
    )
    assert [a["assistant_id"] for a in last["assistants"]] == ids[:1]
    assert last["next"] is None

    selected = await client.assistants.search(
        metadata={**mine, "i": 0}, select=["assistant_id", "name"]
    )
    assert selected == [{"assistant_id": ids[0], "name": "bravo"}]

    assert await client.assistants.count(metadata=mine) == 4
    assert await client.assistants.count(metadata=mine, graph_id="agent") == 3
    assert await client.assistants.count(metadata=mine, name="alpha") == 1
    assert await client.assistants.count(metadata={"test": "nobody"}) == 0


async def test_search_reports_the_total_in_a_header(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    mine = tag()
    for _ in range(3):
        await client.assistants.create("hitl", metadata=mine)
    response = await http.post("/assistants/search", json={"metadata": mine, "limit": 2})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert response.headers["x-pagination-total"] == "3"
    assert response.headers["x-pagination-next"] == "2"
    count = await http.post("/assistants/count", json={"metadata": mine})
    assert (count.status_code, count.text) == (200, "3")


@pytest.mark.parametrize(
    "body",
    [{"limit": 0}, {"offset": -1}, {"sort_by": "bogus"}, {"sort_order": "sideways"}, []],
)
async def test_bad_search_bodies_are_422(http: httpx.AsyncClient, body: Any) -> None:
    response = await http.post("/assistants/search", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"detail"}
    assert isinstance(response.json()["detail"], str)


# --- delete ----------------------------------------------------------------------------------


async def test_delete_removes_the_assistant(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    mine = tag()
    created = await client.assistants.create("agent", metadata=mine)
    assistant_id = created["assistant_id"]
    response = await http.delete(f"/assistants/{assistant_id}")
    assert (response.status_code, response.content) == (204, b"")
    with pytest.raises(NotFoundError):
        await client.assistants.get(assistant_id)
    with pytest.raises(NotFoundError):
        await client.assistants.delete(assistant_id)
    assert await client.assistants.search(metadata=mine) == []
    # A run can no longer name it.
    response = await http.post(
        "/runs/wait", json={"assistant_id": assistant_id, "input": {"messages": []}}
    )
    assert_detail(response, 404, "Thread or assistant not found.")


async def test_delete_with_delete_threads_removes_its_threads(client: LangGraphClient) -> None:
    created = await client.assistants.create("ticker")
    assistant_id = created["assistant_id"]
    used = await client.threads.create()
    other = await client.threads.create()
    await client.runs.wait(used["thread_id"], assistant_id, input={"n": 1})
    await client.runs.wait(other["thread_id"], "ticker", input={"n": 1})
    await client.assistants.delete(assistant_id, delete_threads=True)
    with pytest.raises(NotFoundError):
        await client.threads.get(used["thread_id"])
    assert (await client.threads.get(other["thread_id"]))["values"] == {"n": 1, "count": 1}


# --- errors ----------------------------------------------------------------------------------

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", f"/assistants/{UNKNOWN}", None),
        ("patch", f"/assistants/{UNKNOWN}", {"name": "x"}),
        ("delete", f"/assistants/{UNKNOWN}", None),
        ("get", f"/assistants/{UNKNOWN}/graph", None),
        ("get", f"/assistants/{UNKNOWN}/schemas", None),
        ("get", f"/assistants/{UNKNOWN}/subgraphs", None),
        ("post", f"/assistants/{UNKNOWN}/versions", {}),
        ("post", f"/assistants/{UNKNOWN}/latest", {"version": 1}),
    ],
)
async def test_an_unknown_assistant_is_404_not_found(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await http.request(method, path, json=body)
    assert_detail(response, 404, "Not Found")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/assistants/nope", None),
        ("patch", "/assistants/nope", {"name": "x"}),
        ("delete", "/assistants/nope", None),
        ("get", "/assistants/nope/graph", None),
        ("post", "/assistants/nope/versions", {}),
        ("post", "/assistants/nope/latest", {"version": 1}),
    ],
)
async def test_an_assistant_id_that_is_not_a_uuid_is_422(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await http.request(method, path, json=body)
    assert_detail(response, 422, "Invalid assistant ID: must be a UUID")


async def test_set_latest_needs_a_version(http: httpx.AsyncClient) -> None:
    response = await http.post(f"/assistants/{AGENT}/latest", json={})
    assert response.status_code == 422
    assert "version" in response.json()["detail"]


# --- the sync client -------------------------------------------------------------------------


def test_sync_client_round_trip(server: ServerProcess) -> None:
    client = get_sync_client(url=server.url)
    try:
        mine = tag()
        created = client.assistants.create("subgraphs", metadata=mine, name="sync")
        assert client.assistants.get(created["assistant_id"]) == created
        assert client.assistants.search(metadata=mine) == [created]
        assert client.assistants.get_graph(created["assistant_id"], xray=True) == SUBGRAPHS_XRAY
        assert list(client.assistants.get_subgraphs(created["assistant_id"])) == ["child"]
        updated = client.assistants.update(created["assistant_id"], name="sync2")
        assert updated["version"] == 2
        client.assistants.delete(created["assistant_id"])
        with pytest.raises(NotFoundError):
            client.assistants.get(created["assistant_id"])
    finally:
        client.http.client.close()
