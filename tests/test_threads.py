"""Thread routes end to end through the official SDK and raw HTTP: create, get, search, count,
update, delete, copy, state, state updates, history and the thread's status across runs
(PROTOCOL §1.1, §10, §11, §12.2; captures threads-create.txt, thread-state-after.txt,
if-not-exists.txt, hitl.txt, errors.txt)."""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError
from langgraph_sdk.schema import Command

from tests.conftest import assert_detail, tag
from tests.helpers import read_until, ticked, ticks

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

TICKER = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "ticker"))
HITL = "d2a02ed8-fb92-5e43-81ea-cb78d82caa2f"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
THREAD_KEYS = {
    "thread_id", "created_at", "updated_at", "state_updated_at", "metadata", "status", "config",
    "values",
}  # fmt: skip
# GET /threads/{t}/state, in the captured key order (thread-state-after.txt).
STATE_KEYS = [
    "values", "next", "tasks", "metadata", "created_at", "checkpoint", "parent_checkpoint",
    "interrupts", "checkpoint_id", "parent_checkpoint_id",
]  # fmt: skip


async def ticked_thread(client: LangGraphClient, n: int = 2, **metadata: Any) -> str:
    """A thread that ran the ticker once, to completion."""
    thread = await client.threads.create(metadata=metadata or None)
    await client.runs.wait(thread["thread_id"], "ticker", input={"n": n})
    return str(thread["thread_id"])


# --- create and get --------------------------------------------------------------------------


async def test_create_returns_an_idle_thread_as_captured(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    response = await http.post("/threads", json={})
    assert response.status_code == 200  # not 201
    thread = response.json()
    assert THREAD_KEYS <= set(thread)
    assert uuid.UUID(thread["thread_id"])
    assert (thread["metadata"], thread["status"], thread["values"]) == ({}, "idle", None)
    assert thread["created_at"] == thread["updated_at"] == thread["state_updated_at"]
    assert await client.threads.get(thread["thread_id"]) == thread

    owned = await client.threads.create(metadata={"owner": "A"}, graph_id="ticker")
    # The SDK puts graph_id into the metadata.
    assert owned["metadata"] == {"owner": "A", "graph_id": "ticker"}
    assert owned["thread_id"] != thread["thread_id"]


async def test_create_with_a_thread_id_and_if_exists(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread_id = str(uuid.uuid4())
    first = await client.threads.create(thread_id=thread_id, metadata={"v": 1})
    assert first["thread_id"] == thread_id

    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=thread_id)
    response = await http.post("/threads", json={"thread_id": thread_id, "if_exists": "raise"})
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}
    assert thread_id in response.json()["detail"]

    # do_nothing hands back the stored thread; its metadata is not replaced.
    kept = await client.threads.create(
        thread_id=thread_id, metadata={"v": 2}, if_exists="do_nothing"
    )
    assert kept == first
    assert (await client.threads.get(thread_id))["metadata"] == {"v": 1}


async def test_thread_ids_must_be_uuids(http: httpx.AsyncClient) -> None:
    invalid = "Invalid thread ID: must be a UUID"
    assert_detail(await http.post("/threads", json={"thread_id": "not-a-uuid"}), 422, invalid)
    for method, path, body in [
        ("get", "/threads/not-a-uuid", None),
        ("patch", "/threads/not-a-uuid", {"metadata": {}}),
        ("delete", "/threads/not-a-uuid", None),
        ("post", "/threads/not-a-uuid/copy", None),
        ("get", "/threads/not-a-uuid/state", None),
        ("post", "/threads/not-a-uuid/state", {"values": {}}),
        ("post", "/threads/not-a-uuid/history", {}),
    ]:
        assert_detail(await http.request(method, path, json=body), 422, invalid)
    response = await http.post("/threads/search", json={"ids": ["not-a-uuid"]})
    assert_detail(response, 422, invalid)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "", None),
        ("patch", "", {"metadata": {"a": 1}}),
        ("delete", "", None),
        ("post", "/copy", None),
        ("get", "/state", None),
        ("get", "/state/1f1e8052-6e7d-6c68-8002-970d1a89eae4", None),
        ("post", "/state", {"values": {"n": 1}}),
        ("post", "/state/checkpoint", {"checkpoint": {"checkpoint_id": None}}),
        ("get", "/history", None),
        ("post", "/history", {"limit": 1}),
    ],
)
async def test_an_unknown_thread_is_404(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await http.request(method, f"/threads/{UNKNOWN}{path}", json=body)
    assert_detail(response, 404, f"Thread with ID {UNKNOWN} not found")


# --- update, delete --------------------------------------------------------------------------


async def test_update_merges_metadata(client: LangGraphClient) -> None:
    thread = await client.threads.create(metadata={"a": 1, "b": 1})
    updated = await client.threads.update(thread["thread_id"], metadata={"b": 2, "c": 3})
    assert updated["metadata"] == {"a": 1, "b": 2, "c": 3}
    assert updated["updated_at"] > thread["updated_at"]
    assert updated["created_at"] == thread["created_at"]
    assert await client.threads.get(thread["thread_id"]) == updated


async def test_delete_removes_the_thread_its_runs_and_state(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread_id = await ticked_thread(client)
    [run] = await client.runs.list(thread_id)
    response = await http.delete(f"/threads/{thread_id}")
    assert (response.status_code, response.content) == (204, b"")
    with pytest.raises(NotFoundError):
        await client.threads.get(thread_id)
    with pytest.raises(NotFoundError):
        await client.threads.get_state(thread_id)
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.threads.delete(thread_id)
    assert await client.threads.search(ids=[thread_id]) == []
    # The id is free again, and a thread made with it starts empty.
    again = await client.threads.create(thread_id=thread_id)
    assert again["values"] is None
    assert (await client.threads.get_state(thread_id))["values"] == {}
    assert await client.threads.get_history(thread_id) == []


# --- search and count ------------------------------------------------------------------------


async def test_search_filters_by_metadata_values_ids_and_status(client: LangGraphClient) -> None:
    mine = tag()
    fresh = await client.threads.create(metadata={**mine, "kind": "fresh"})
    ran = await ticked_thread(client, n=3, **mine, kind="ran")
    stopped = await client.threads.create(metadata={**mine, "kind": "stopped"})
    await client.runs.wait(stopped["thread_id"], "hitl", input={"question": "go?"})

    def ids(found: list[Any]) -> list[str]:
        return [t["thread_id"] for t in found]

    every = await client.threads.search(metadata=mine)
    assert ids(every) == [stopped["thread_id"], ran, fresh["thread_id"]]  # newest first
    assert ids(await client.threads.search(metadata={**mine, "kind": "ran"})) == [ran]
    assert ids(await client.threads.search(metadata=mine, values={"count": 3})) == [ran]
    assert await client.threads.search(metadata=mine, values={"count": 4}) == []
    assert ids(await client.threads.search(metadata=mine, status="interrupted")) == [
        stopped["thread_id"]
    ]
    assert ids(await client.threads.search(metadata=mine, status="idle")) == [
        ran,
        fresh["thread_id"],
    ]
    assert await client.threads.search(metadata=mine, status="busy") == []
    assert ids(await client.threads.search(ids=[fresh["thread_id"], ran])) == [
        ran,
        fresh["thread_id"],
    ]
    # metadata that graph runs add: graph_id and assistant_id.
    assert ids(await client.threads.search(metadata={**mine, "assistant_id": TICKER})) == [ran]
    assert ids(await client.threads.search(metadata={**mine, "graph_id": "hitl"})) == [
        stopped["thread_id"]
    ]

    assert ids(await client.threads.search(metadata=mine, limit=1, offset=1)) == [ran]
    oldest_first = await client.threads.search(
        metadata=mine, sort_by="created_at", sort_order="asc"
    )
    assert ids(oldest_first) == ids(every)[::-1]
    selected = await client.threads.search(ids=[ran], select=["thread_id", "values"])
    assert selected == [{"thread_id": ran, "values": {"n": 3, "count": 3}}]

    assert await client.threads.count(metadata=mine) == 3
    assert await client.threads.count(metadata=mine, status="idle") == 2
    assert await client.threads.count(metadata=mine, values={"count": 3}) == 1
    assert await client.threads.count(metadata={"test": "nobody"}) == 0


async def test_search_reports_the_total_in_a_header(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    mine = tag()
    for _ in range(3):
        await client.threads.create(metadata=mine)
    response = await http.post("/threads/search", json={"metadata": mine, "limit": 2})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert response.headers["x-pagination-total"] == "3"
    count = await http.post("/threads/count", json={"metadata": mine})
    assert (count.status_code, count.text) == (200, "3")


@pytest.mark.parametrize(
    "body",
    [{"limit": 0}, {"offset": -1}, {"status": "bogus"}, {"sort_by": "bogus"}, {"ids": "x"}, []],
)
async def test_bad_search_bodies_are_422(http: httpx.AsyncClient, body: Any) -> None:
    response = await http.post("/threads/search", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"detail"}
    assert isinstance(response.json()["detail"], str)


# --- state -----------------------------------------------------------------------------------


async def test_state_of_a_new_thread_is_empty(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    state = await client.threads.get_state(thread["thread_id"])
    assert list(state) == STATE_KEYS
    assert (state["values"], state["next"], state["tasks"], state["interrupts"]) == (
        {},
        [],
        [],
        [],
    )
    assert state["checkpoint_id"] is None
    assert await client.threads.get_history(thread["thread_id"]) == []


async def test_state_after_a_run_as_captured(client: LangGraphClient) -> None:
    thread_id = await ticked_thread(client, n=2)
    state = await client.threads.get_state(thread_id)
    assert list(state) == STATE_KEYS
    assert state["values"] == {"n": 2, "count": 2}
    assert (state["next"], state["tasks"], state["interrupts"]) == ([], [], [])
    assert state["checkpoint"] == {
        "checkpoint_id": state["checkpoint_id"],
        "thread_id": thread_id,
        "checkpoint_ns": "",
    }
    assert state["parent_checkpoint"] == {
        "checkpoint_id": state["parent_checkpoint_id"],
        "thread_id": thread_id,
        "checkpoint_ns": "",
    }
    [run] = await client.runs.list(thread_id)
    metadata = state["metadata"]
    assert (metadata["source"], metadata["step"]) == ("loop", 1)
    assert (metadata["graph_id"], metadata["assistant_id"]) == ("ticker", TICKER)
    assert metadata["run_id"] == run["run_id"]

    thread = await client.threads.get(thread_id)
    assert thread["values"] == state["values"]
    assert thread["status"] == "idle"
    assert thread["metadata"] == {"graph_id": "ticker", "assistant_id": TICKER}
    assert thread["interrupts"] == {}
    assert thread["state_updated_at"] > thread["created_at"]


async def test_state_at_a_checkpoint(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread_id = await ticked_thread(client, n=2)
    history = await client.threads.get_history(thread_id)
    first = history[-1]
    assert first["metadata"]["source"] == "input"

    by_id = await client.threads.get_state(thread_id, checkpoint_id=first["checkpoint_id"])
    assert by_id["checkpoint_id"] == first["checkpoint_id"]
    assert (by_id["values"], by_id["next"]) == ({}, ["__start__"])
    assert by_id["parent_checkpoint"] is None
    by_checkpoint = await client.threads.get_state(thread_id, checkpoint=first["checkpoint"])
    assert by_checkpoint == by_id
    middle = history[1]
    response = await http.get(f"/threads/{thread_id}/state/{middle['checkpoint_id']}")
    assert response.status_code == 200
    assert response.json()["values"] == {"n": 2}
    assert response.json()["next"] == ["tick"]
    # A checkpoint without an id is the latest state.
    response = await http.post(
        f"/threads/{thread_id}/state/checkpoint", json={"checkpoint": {"checkpoint_ns": ""}}
    )
    assert response.json() == await client.threads.get_state(thread_id)


async def test_update_state_writes_a_checkpoint_the_next_run_sees(
    client: LangGraphClient,
) -> None:
    thread_id = await ticked_thread(client, n=2)
    before = await client.threads.get_state(thread_id)

    updated = await client.threads.update_state(thread_id, {"count": 100}, as_node="tick")
    checkpoint = updated["checkpoint"]
    assert checkpoint["thread_id"] == thread_id
    assert checkpoint["checkpoint_ns"] == ""
    state = await client.threads.get_state(thread_id)
    assert state["checkpoint_id"] == checkpoint["checkpoint_id"]
    assert state["parent_checkpoint_id"] == before["checkpoint_id"]
    assert state["values"] == {"n": 2, "count": 100}
    assert state["next"] == []  # as the tick node: nothing follows it
    assert (state["metadata"]["source"], state["metadata"]["step"]) == ("update", 2)
    assert (await client.threads.get(thread_id))["values"] == state["values"]

    # The ticker adds n to what the thread counted: it starts from the update.
    result = await client.runs.wait(thread_id, "ticker", input={"n": 1})
    assert result == {"n": 1, "count": 101}


async def test_update_state_at_an_older_checkpoint_forks(client: LangGraphClient) -> None:
    thread_id = await ticked_thread(client, n=2)
    history = await client.threads.get_history(thread_id)
    middle = history[1]
    assert middle["values"] == {"n": 2}
    forked = await client.threads.update_state(
        thread_id, {"n": 5}, checkpoint_id=middle["checkpoint_id"]
    )
    state = await client.threads.get_state(thread_id)
    assert state["checkpoint_id"] == forked["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint_id"] == middle["checkpoint_id"]
    assert state["values"] == {"n": 5}
    assert len(await client.threads.get_history(thread_id)) == len(history) + 1


async def test_update_state_without_a_graph_is_400(http: httpx.AsyncClient) -> None:
    thread_id = (await http.post("/threads", json={})).json()["thread_id"]
    response = await http.post(f"/threads/{thread_id}/state", json={"values": {"n": 1}})
    assert_detail(response, 400, "Thread has no graph ID.")


async def test_update_state_as_an_unknown_node_is_400(client: LangGraphClient) -> None:
    thread_id = await ticked_thread(client)
    response = await client.http.client.post(
        f"/threads/{thread_id}/state", json={"values": {"n": 1}, "as_node": "nope"}
    )
    assert response.status_code == 400
    assert "nope" in response.json()["detail"]
    assert (await client.threads.get_state(thread_id))["values"] == {"n": 2, "count": 2}


# --- history ---------------------------------------------------------------------------------


async def test_history_lists_checkpoints_newest_first(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread_id = await ticked_thread(client, n=2)
    await client.runs.wait(thread_id, "ticker", input={"n": 1})
    history = await client.threads.get_history(thread_id, limit=100)
    steps = [s["metadata"]["step"] for s in history]
    assert steps == [4, 3, 2, 1, 0, -1]
    assert history[0] == await client.threads.get_state(thread_id)
    assert [s["values"].get("count") for s in history] == [3, 2, 2, 2, None, None]
    for newer, older in itertools.pairwise(history):
        assert newer["parent_checkpoint_id"] == older["checkpoint_id"]

    # The SDK asks for 10 by default.
    assert await client.threads.get_history(thread_id) == history
    assert await client.threads.get_history(thread_id, limit=2) == history[:2]
    before = await client.threads.get_history(thread_id, before=history[1]["checkpoint"])
    assert before == history[2:]
    assert await client.threads.get_history(thread_id, before=history[-1]["checkpoint"]) == []
    inputs = await client.threads.get_history(thread_id, metadata={"source": "input"})
    assert [s["checkpoint_id"] for s in inputs] == [
        history[2]["checkpoint_id"],
        history[5]["checkpoint_id"],
    ]
    at = await client.threads.get_history(thread_id, checkpoint=history[3]["checkpoint"])
    assert [s["checkpoint_id"] for s in at] == [history[3]["checkpoint_id"]]

    response = await http.get(f"/threads/{thread_id}/history", params={"limit": 3})
    assert response.status_code == 200
    assert response.json() == history[:3]
    response = await http.get(
        f"/threads/{thread_id}/history",
        params={"before": history[3]["checkpoint_id"], "limit": 1},
    )
    assert response.json() == history[4:5]


# --- copy ------------------------------------------------------------------------------------


async def test_copy_brings_state_and_history_along(client: LangGraphClient) -> None:
    thread_id = await ticked_thread(client, n=2, owner="A")
    await client.threads.update_state(thread_id, {"count": 10}, as_node="tick")
    history = await client.threads.get_history(thread_id)

    copy = await client.threads.copy(thread_id)
    assert isinstance(copy, dict)
    copy_id = copy["thread_id"]
    assert copy_id != thread_id
    assert copy["metadata"] == (await client.threads.get(thread_id))["metadata"]
    assert copy["values"] == {"n": 2, "count": 10}
    assert copy["status"] == "idle"
    assert await client.threads.get(copy_id) == copy

    copied_history = await client.threads.get_history(copy_id)
    assert [s["checkpoint_id"] for s in copied_history] == [s["checkpoint_id"] for s in history]
    assert [s["values"] for s in copied_history] == [s["values"] for s in history]
    assert {s["checkpoint"]["thread_id"] for s in copied_history} == {copy_id}
    # The copy no longer shares anything: a run on it leaves the original alone.
    assert await client.runs.wait(copy_id, "ticker", input={"n": 1}) == {"n": 1, "count": 11}
    assert (await client.threads.get_state(thread_id))["values"] == {"n": 2, "count": 10}
    assert len(await client.threads.get_history(thread_id)) == len(history)
    assert await client.runs.list(copy_id) != []
    assert len(await client.runs.list(thread_id)) == 1


async def test_a_copy_of_an_interrupted_thread_resumes_on_its_own(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    await client.runs.wait(thread_id, "hitl", input={"question": "q?"})
    copy = await client.threads.copy(thread_id)
    assert isinstance(copy, dict)
    copy_id = copy["thread_id"]
    # Like the real server's copy, the new thread starts idle, but its checkpoints still
    # wait at the interrupt.
    assert copy["status"] == "idle"
    assert (await client.threads.get_state(copy_id))["next"] == ["ask"]

    resumed = await client.runs.wait(copy_id, "hitl", command=Command(resume="yes"))
    assert resumed == {"question": "q?", "answer": "yes!"}
    original = await client.threads.get(thread_id)
    assert (original["status"], original["values"]) == ("interrupted", {"question": "q?"})
    assert (await client.threads.get_state(thread_id))["next"] == ["ask"]


# --- status across runs ----------------------------------------------------------------------


async def test_a_thread_is_busy_while_a_run_executes(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    run = await client.runs.create(
        thread_id, "ticker", input={"n": 40, "delay": 0.03}, stream_mode="custom"
    )
    parts = await read_until(client.runs.join_stream(thread_id, run["run_id"]), ticked(1))
    assert parts[-1].event == "custom"  # the run is executing
    assert (await client.threads.get(thread_id))["status"] == "busy"
    assert [t["thread_id"] for t in await client.threads.search(ids=[thread_id])] == [thread_id]
    assert await client.threads.count(status="busy") >= 1
    # The real server refuses a state update while a run is in flight.
    response = await http.post(f"/threads/{thread_id}/state", json={"values": {"n": 0}})
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Thread {thread_id} has in-flight runs")
    assert run["run_id"] in response.json()["detail"]

    await client.runs.join(thread_id, run["run_id"])
    thread = await client.threads.get(thread_id)
    assert (thread["status"], thread["values"]) == ("idle", {"n": 40, "delay": 0.03, "count": 40})


async def test_deleting_a_busy_thread_removes_it_and_its_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    run = await client.runs.create(
        thread_id, "ticker", input={"n": 200, "delay": 0.02}, stream_mode="custom"
    )
    parts = await read_until(client.runs.join_stream(thread_id, run["run_id"]), ticked(1))
    assert ticks(parts)
    await client.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        await client.threads.get(thread_id)
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, run["run_id"])
    # The id can be reused at once, and the new thread starts from nothing.
    await client.threads.create(thread_id=thread_id)
    assert await client.runs.wait(thread_id, "ticker", input={"n": 1}) == {"n": 1, "count": 1}
    [new_run] = await client.runs.list(thread_id)
    assert new_run["run_id"] != run["run_id"]
    assert len(await client.threads.get_history(thread_id)) == 3


async def test_a_failed_run_leaves_the_thread_in_error(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], "failing", input={}, raise_error=False)
    assert result == {"__error__": {"error": "ValueError", "message": "boom: intentional failure"}}
    after = await client.threads.get(thread["thread_id"])
    assert after["status"] == "error"
    assert [t["thread_id"] for t in await client.threads.search(ids=[thread["thread_id"]])] == [
        thread["thread_id"]
    ]
    assert (await client.threads.search(ids=[thread["thread_id"]], status="error"))[0] == after
    # A later good run puts it back to idle.
    await client.runs.wait(thread["thread_id"], "ticker", input={"n": 1})
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_an_interrupted_run_leaves_the_thread_interrupted(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    result = await client.runs.wait(thread_id, "hitl", input={"question": "proceed?"})
    assert isinstance(result, dict)
    [interrupt] = result["__interrupt__"]
    assert interrupt["value"] == {"question": "proceed?"}
    [run] = await client.runs.list(thread_id)
    assert run["status"] == "success"  # an interrupt is not an error (§0.12)

    after = await client.threads.get(thread_id)
    assert after["status"] == "interrupted"
    assert after["values"] == {"question": "proceed?"}
    assert after["metadata"] == {"graph_id": "hitl", "assistant_id": HITL}
    [(task_id, interrupts)] = after["interrupts"].items()
    assert interrupts == [{"id": interrupt["id"], "value": {"question": "proceed?"}}]

    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["ask"]
    assert state["interrupts"] == interrupts
    [task] = state["tasks"]
    assert (task["id"], task["name"], task["interrupts"]) == (task_id, "ask", interrupts)
    assert task["path"] == ["__pregel_pull", "ask"]
    assert (task["error"], task["state"], task["result"]) == (None, None, None)

    resumed = await client.runs.wait(thread_id, "hitl", command=Command(resume="yes please"))
    assert resumed == {"question": "proceed?", "answer": "yes please!"}
    done = await client.threads.get(thread_id)
    assert (done["status"], done["interrupts"]) == ("idle", {})
    assert (await client.threads.get_state(thread_id))["interrupts"] == []


# --- the sync client -------------------------------------------------------------------------


def test_sync_client_round_trip(server: ServerProcess) -> None:
    client = get_sync_client(url=server.url)
    try:
        mine = tag()
        thread = client.threads.create(metadata=mine)
        thread_id = thread["thread_id"]
        assert client.runs.wait(thread_id, "ticker", input={"n": 2}) == {"n": 2, "count": 2}
        assert client.threads.get_state(thread_id)["values"] == {"n": 2, "count": 2}
        assert len(client.threads.get_history(thread_id, limit=2)) == 2
        client.threads.update_state(thread_id, {"count": 7}, as_node="tick")
        assert client.threads.get(thread_id)["values"] == {"n": 2, "count": 7}
        assert client.threads.update(thread_id, metadata={"x": 1})["metadata"]["x"] == 1
        assert [t["thread_id"] for t in client.threads.search(metadata=mine)] == [thread_id]
        assert client.threads.count(metadata=mine) == 1
        client.threads.delete(thread_id)
        with pytest.raises(NotFoundError):
            client.threads.get(thread_id)
    finally:
        client.http.client.close()
