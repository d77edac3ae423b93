"""The lane for run-creating and thread-creating requests (agentstream/api/runlane.py) answers
exactly as the FastAPI routes it stands in front of: same routes, same results, same errors.

A body sent as `application/json` takes the lane; the same body sent as `application/x+json`
(which FastAPI also reads as JSON) is one the lane leaves to FastAPI. Each case is sent both
ways and the two answers compared.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from agentstream.api import assistants, runs, system, thread_stream, threads
from agentstream.api.context import ctx
from agentstream.api.runlane import match
from agentstream.app import create_app
from agentstream.settings import Settings
from tests.helpers import new_thread, summary
from tests.sse import sse_events

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "langgraph.json"
HI = {"messages": [{"role": "human", "content": "hi there"}]}
LANE = {"content-type": "application/json"}
FASTAPI = {"content-type": "application/x+json"}
RUN_CREATING = {
    "stream_threaded", "stream_stateless", "wait_threaded", "wait_stateless",
    "create_threaded", "create_stateless",
}  # fmt: skip
TAKEN = RUN_CREATING | {"create_thread"}


def test_the_lane_takes_exactly_the_run_creating_routes() -> None:
    create_app(Settings(config=EXAMPLES))  # the app serves these routers' routes, unprefixed
    taken = []
    modules = (assistants, runs, system, thread_stream, threads)
    routes = [route for module in modules for route in module.router.routes]
    assert len(routes) > 40
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        path = route.path.replace("{thread_id}", str(uuid.uuid4()))
        path = path.replace("{run_id}", str(uuid.uuid4())).replace("{assistant_id}", "a")
        lane = match(path)
        if route.name in TAKEN:
            assert "POST" in route.methods
            assert lane is not None, route.path
            taken.append(route.path)
        elif "POST" in route.methods:
            assert lane is None, route.path
    assert len(taken) == len(TAKEN)
    for odd in (
        "/runs/", "/runs/stream/", "/threads//runs", "/threads/x/runs/", "/runs/batch",
        "/runs/cancel", "/threads/x/runs/y/stream", "/threads/x/runs/stream/x", "runs",
        "/runs//stream", "/threads/x/history",
    ):  # fmt: skip
        assert match(odd) is None, odd


def test_the_run_creating_routes_depend_on_nothing_but_ctx() -> None:
    # The lane calls their handlers with the context itself and solves no dependencies: one
    # added to these routes (a rate limit, say) would apply to the bodies FastAPI answers only.
    app = create_app(Settings(config=EXAMPLES))
    assert not app.router.dependencies and not runs.router.dependencies
    taken = [r for r in runs.router.routes if isinstance(r, APIRoute) and r.name in RUN_CREATING]
    assert {route.name for route in taken} == RUN_CREATING
    assert {route.name for route in runs.RUN_CREATE} == RUN_CREATING
    [create_thread] = [r for r in threads.router.routes if r.name == "create_thread"]
    assert isinstance(create_thread, APIRoute)
    for route in [*taken, create_thread]:
        assert [d.call for d in route.dependant.dependencies] == [ctx], route.path


async def both(http: httpx.AsyncClient, path: str, body: Any) -> tuple[httpx.Response, ...]:
    content = httpx.Request("POST", "/", json=body).content
    lane = await http.post(path, content=content, headers=LANE)
    fastapi = await http.post(path, content=content, headers=FASTAPI)
    return lane, fastapi


def same_error(lane: httpx.Response, fastapi: httpx.Response, status: int) -> None:
    assert lane.status_code == fastapi.status_code == status, (lane.text, fastapi.text)
    assert lane.headers["content-type"] == fastapi.headers["content-type"]
    assert lane.json() == fastapi.json()
    assert set(lane.json()) == {"detail"}


async def test_wait_gives_the_same_values_either_way(http: httpx.AsyncClient) -> None:
    body = {"assistant_id": "agent", "input": HI}
    lane, fastapi = await both(http, "/runs/wait", body)
    assert lane.status_code == fastapi.status_code == 200
    # Message ids are new each run; the rest is the same.
    assert summary(lane.json()) == summary(fastapi.json())
    assert [c for _, c in summary(lane.json())] == ["hi there", "echo: hi there", "bye"]
    thread_id = await new_thread(http)
    lane, fastapi = await both(http, f"/threads/{thread_id}/runs/wait", body)
    assert lane.status_code == fastapi.status_code == 200
    # The second run adds to the first's thread: the same answer would be a lost run.
    assert len(fastapi.json()["messages"]) > len(lane.json()["messages"])
    assert lane.headers["content-location"].startswith(f"/threads/{thread_id}/runs/")
    assert fastapi.headers["content-location"].startswith(f"/threads/{thread_id}/runs/")


async def test_stream_sends_the_same_frames_either_way(http: httpx.AsyncClient) -> None:
    body = {"assistant_id": "ticker", "input": {"n": 3}, "stream_mode": ["custom", "updates"]}
    lane, fastapi = await both(http, "/runs/stream", body)
    assert lane.status_code == fastapi.status_code == 200
    assert lane.headers["content-type"] == fastapi.headers["content-type"]
    assert lane.headers["location"].startswith("/runs/")
    assert fastapi.headers["location"].startswith("/runs/")
    # metadata carries the run's own id; every other frame is the same.
    assert [f for f in sse_events(lane.text) if f[0] != "metadata"] == [
        f for f in sse_events(fastapi.text) if f[0] != "metadata"
    ]
    assert [e for e, _ in sse_events(lane.text)] == ["metadata"] + ["custom"] * 3 + ["updates"]
    thread_id = await new_thread(http)
    lane, fastapi = await both(http, f"/threads/{thread_id}/runs/stream", body)
    assert [e for e, _ in sse_events(lane.text)] == [e for e, _ in sse_events(fastapi.text)]
    assert lane.headers["location"].startswith(f"/threads/{thread_id}/runs/")


async def test_create_gives_the_same_run_either_way(http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http)
    body = {"assistant_id": "ticker", "input": {"n": 1}, "metadata": {"lane": "x"}}
    lane, fastapi = await both(http, f"/threads/{thread_id}/runs", body)
    assert lane.status_code == fastapi.status_code == 200
    a, b = lane.json(), fastapi.json()
    assert a["run_id"] != b["run_id"]
    assert set(a) == set(b)
    different = {"run_id", "created_at", "updated_at", "status"}
    assert {k: v for k, v in a.items() if k not in different} == {
        k: v for k, v in b.items() if k not in different
    }
    assert a["metadata"] == {"lane": "x"}
    for run in (a, b):
        joined = await http.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
        assert joined.status_code == 200
    stateless_lane, stateless_fastapi = await both(http, "/runs", body)
    assert stateless_lane.status_code == stateless_fastapi.status_code == 200
    assert set(stateless_lane.json()) == set(stateless_fastapi.json())


async def test_threads_are_created_the_same_way_either_way(http: httpx.AsyncClient) -> None:
    body = {"metadata": {"lane": "x"}, "ttl": {"strategy": "delete", "ttl": 5}}
    lane, fastapi = await both(http, "/threads", body)
    assert lane.status_code == fastapi.status_code == 200
    a, b = lane.json(), fastapi.json()
    assert a["thread_id"] != b["thread_id"]
    different = {"thread_id", "created_at", "updated_at", "state_updated_at"}
    assert {k: v for k, v in a.items() if k not in different} == {
        k: v for k, v in b.items() if k not in different
    }
    assert a["metadata"] == {"lane": "x"} and a["status"] == "idle"
    for thread in (a, b):
        got = await http.get(f"/threads/{thread['thread_id']}")
        assert got.status_code == 200
        assert got.json()["thread_id"] == thread["thread_id"]
    # A given id: created once, then refused the same way, or kept with do_nothing.
    thread_id = str(uuid.uuid4())
    created = await http.post("/threads", json={"thread_id": thread_id}, headers=LANE)
    assert created.status_code == 200
    same_error(*await both(http, "/threads", {"thread_id": thread_id}), 409)
    kept = await both(http, "/threads", {"thread_id": thread_id, "if_exists": "do_nothing"})
    assert [r.json()["thread_id"] for r in kept] == [thread_id, thread_id]
    same_error(*await both(http, "/threads", {"thread_id": "nope"}), 422)
    same_error(*await both(http, "/threads", {"supersteps": [{"updates": []}]}), 422)
    for content in (b"[]", b"{", b'{"if_exists": "sometimes"}', b'{"metadata": 5}'):
        lane = await http.post("/threads", content=content, headers=LANE)
        fastapi = await http.post("/threads", content=content, headers=FASTAPI)
        same_error(lane, fastapi, 422)


@pytest.mark.parametrize("route", ["stream", "wait", ""])
async def test_errors_are_the_same_either_way(http: httpx.AsyncClient, route: str) -> None:
    suffix = f"/{route}" if route else ""
    unknown = str(uuid.uuid4())
    # A thread that does not exist.
    agent = {"assistant_id": "agent"}
    same_error(*await both(http, f"/threads/{unknown}/runs{suffix}", agent), 404)
    # A thread id that is not a UUID.
    same_error(*await both(http, f"/threads/nope/runs{suffix}", agent), 400)
    # An assistant that is neither a graph nor a UUID.
    same_error(*await both(http, f"/runs{suffix}", {"assistant_id": "nope"}), 422)
    # An assistant UUID that is not stored.
    same_error(*await both(http, f"/runs{suffix}", {"assistant_id": unknown}), 404)
    # Resuming needs a thread.
    body = {"assistant_id": "agent", "command": {"resume": "x"}}
    same_error(*await both(http, f"/runs{suffix}", body), 400)
    # Fields the model accepts and the route refuses.
    body = {"assistant_id": "agent", "multitask_strategy": "sometimes"}
    thread_id = await new_thread(http)
    same_error(*await both(http, f"/threads/{thread_id}/runs{suffix}", body), 422)


async def test_a_busy_thread_refuses_the_same_way(http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http)
    blocker = await http.post(
        f"/threads/{thread_id}/runs",
        json={"assistant_id": "ticker", "input": {"n": 50, "delay": 0.05}},
    )
    assert blocker.status_code == 200
    body = {"assistant_id": "ticker", "input": {"n": 1}, "multitask_strategy": "reject"}
    same_error(*await both(http, f"/threads/{thread_id}/runs/wait", body), 409)
    cancel = await http.post(f"/threads/{thread_id}/runs/{blocker.json()['run_id']}/cancel")
    assert cancel.status_code in (200, 202, 204)


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b'"x"', b"{", b'{"input": 1}', b'{"assistant_id": 5}'],
    ids=["empty", "list", "string", "truncated", "no-assistant", "wrong-type"],
)
async def test_bodies_the_lane_leaves_alone_get_fastapis_answer(
    http: httpx.AsyncClient, content: bytes
) -> None:
    for path in ("/runs/stream", "/runs/wait", "/runs"):
        lane = await http.post(path, content=content, headers=LANE)
        fastapi = await http.post(path, content=content, headers=FASTAPI)
        same_error(lane, fastapi, 422)
    plain = await http.post("/runs/wait", content=b'{"assistant_id": "agent"}',
                            headers={"content-type": "text/plain"})  # fmt: skip
    assert plain.status_code == 422
    assert set(plain.json()) == {"detail"}
