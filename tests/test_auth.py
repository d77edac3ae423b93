"""Only the right people get in: a user's own langgraph_sdk.Auth file, isolation on every route
and stream (embedded and distributed), shared API keys, CORS.

The auth file is tests/auth_app/auth.py, written as the LangGraph docs write one: alice and bob
by token, each thread stamped with its owner on create and filtered by it everywhere else, and
assistants that only alice (an editor) may create or delete.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from langgraph_sdk.schema import StreamPart
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.cluster import Cluster, running_cluster
from tests.conftest import EXAMPLES, ServerProcess, start_server
from tests.helpers import read_until
from tests.test_v2 import _until_runs_end

AUTH_APP = Path(__file__).resolve().parent / "auth_app" / "langgraph.json"
ALICE, BOB = "alice-token", "bob-token"
STARTED = {"started": True}


@dataclass
class People:
    """The owner and a stranger, each through the SDK (x-api-key) and raw HTTP (Bearer)."""

    alice: LangGraphClient
    bob: LangGraphClient
    alice_http: httpx.AsyncClient
    bob_http: httpx.AsyncClient


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("auth") / "agentstream.sqlite", config=AUTH_APP)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[Cluster]:
    # Alice talks to one API process, bob to the other, and a worker runs everything.
    with running_cluster(AUTH_APP, apis=2, workers=1) as cluster:
        yield cluster


async def _people(alice_url: str, bob_url: str) -> AsyncIterator[People]:
    alice = get_client(url=alice_url, api_key=ALICE)
    bob = get_client(url=bob_url, api_key=BOB)
    alice_http = httpx.AsyncClient(
        base_url=alice_url, headers={"authorization": f"Bearer {ALICE}"}, timeout=30
    )
    bob_http = httpx.AsyncClient(
        base_url=bob_url, headers={"authorization": f"Bearer {BOB}"}, timeout=30
    )
    yield People(alice, bob, alice_http, bob_http)
    for http in (alice.http.client, bob.http.client, alice_http, bob_http):
        await http.aclose()


@pytest.fixture
async def embedded(auth_server: ServerProcess) -> AsyncIterator[People]:
    async for people in _people(auth_server.url, auth_server.url):
        yield people


@pytest.fixture(params=["embedded", "distributed"])
async def people(request: pytest.FixtureRequest) -> AsyncIterator[People]:
    """The isolation suite runs on both deployments; on the distributed one the owner and the
    stranger reach different API processes, and neither runs the graph."""
    if request.param == "embedded":
        server: ServerProcess = request.getfixturevalue("auth_server")
        urls = (server.url, server.url)
    else:
        cluster: Cluster = request.getfixturevalue("auth_cluster")
        urls = (cluster.apis[0].url, cluster.apis[1].url)
    async for made in _people(*urls):
        yield made


# --- helpers ---------------------------------------------------------------------------------


async def hidden(call: Awaitable[Any]) -> None:
    # Most SDK calls raise NotFoundError; the held ones (wait) a plain HTTPStatusError.
    with pytest.raises(httpx.HTTPStatusError) as raised:
        await call
    assert raised.value.response.status_code == 404


async def hidden_stream(stream: AsyncIterator[StreamPart]) -> None:
    received: list[StreamPart] = []
    with pytest.raises(NotFoundError):
        async for part in stream:
            received.append(part)
    assert received == [], "the stranger received events"


async def refused(
    http: httpx.AsyncClient, method: str, path: str, status: int = 404, **kwargs: Any
) -> dict[str, Any]:
    """Opens the response as a stream, so a route that wrongly streams fails at once instead of
    hanging; the body must be a plain JSON error, with no event in it."""
    async with http.stream(method, path, **kwargs) as res:
        assert res.status_code == status, f"{method} {path}: {res.status_code}"
        body = await res.aread()
    assert b"event:" not in body and b"data:" not in body
    detail: dict[str, Any] = json.loads(body)
    assert set(detail) == {"detail"}
    return detail


async def start_hold(client: LangGraphClient, thread_id: str | None) -> dict[str, Any]:
    """A background run that is running (its node said so) and stays so until cancelled."""
    run: dict[str, Any] = dict(
        await client.runs.create(thread_id, "hold", input={}, stream_mode="custom")
    )
    parts = await read_until(
        client.runs.join_stream(run["thread_id"], run["run_id"], last_event_id="-1"),
        lambda parts: any(p.event == "custom" and p.data == STARTED for p in parts),
    )
    assert parts[-1].data == STARTED
    return run


async def snapshot(client: LangGraphClient, thread_id: str) -> dict[str, Any]:
    """Everything a stranger's request could have changed about a thread."""
    thread = await client.threads.get(thread_id)
    runs = await client.runs.list(thread_id)
    history = await client.threads.get_history(thread_id, limit=100)
    return {
        "thread": {k: thread[k] for k in ("metadata", "values", "updated_at", "status")},
        "runs": [(r["run_id"], r["status"], r["updated_at"]) for r in runs],
        "checkpoints": [h["checkpoint_id"] for h in history],
    }


def whoami_values(values: Any, identity: str, permissions: list[str]) -> None:
    assert values["user_id"] == identity
    assert values["user"]["identity"] == identity
    assert values["user"]["permissions"] == permissions
    assert values["user"]["is_authenticated"] is True


# --- 1. the user's own authenticate handler --------------------------------------------------


@pytest.mark.parametrize("path", ["/ok", "/info", "/docs", "/openapi.json"])
async def test_public_paths_answer_without_credentials(
    auth_server: ServerProcess, path: str
) -> None:
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        assert (await http.get(path)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/threads/search"),
        ("POST", "/assistants/search"),
        ("POST", "/runs/wait"),
        ("GET", f"/threads/{uuid.UUID(int=1)}/stream"),  # stable: the same id in every process
        ("GET", "/metrics"),
        ("GET", "/no/such/path"),
        ("DELETE", "/threads/search"),
    ],
)
async def test_every_other_request_must_authenticate(
    auth_server: ServerProcess, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        # The docs' handler asserts a header is there: any error but HTTPException is a 401.
        assert await refused(http, method, path, 401, json={}) == {"detail": "Unauthorized"}


async def test_handler_http_exception_keeps_its_status_and_detail(
    auth_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        detail = await refused(
            http, "POST", "/threads/search", 401, json={}, headers={"x-api-key": "nope"}
        )
        assert detail == {"detail": "Invalid token"}
        detail = await refused(
            http, "POST", "/threads", 403, json={}, headers={"authorization": "Bearer banned-token"}
        )
        assert detail == {"detail": "This account is suspended"}
    with pytest.raises(AuthenticationError):
        await get_client(url=auth_server.url, api_key="nope").threads.search()


@pytest.mark.parametrize("authorization", ["Basic YWxpY2U6eA==", "Bearer", "Bearer a b"])
async def test_other_handler_errors_are_401_without_a_traceback(
    auth_server: ServerProcess, authorization: str
) -> None:
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        res = await http.post("/threads/search", json={}, headers={"authorization": authorization})
    assert res.status_code == 401
    assert res.json() == {"detail": "Unauthorized"}
    for leak in ("Traceback", "Error", "assert", "unpack"):
        assert leak not in res.text


async def test_authenticate_gets_the_documented_parameters(embedded: People) -> None:
    thread = await embedded.alice.threads.create()
    t = thread["thread_id"]
    res = await embedded.alice_http.post(
        f"/threads/{t}/runs/wait",
        params={"probe": "yes"},
        json={"assistant_id": "whoami", "input": {}},
        headers={"x-probe": "1"},
    )
    assert res.status_code == 200, res.text
    probe = res.json()["user"]["probe"]
    assert probe == {
        "header_types": ["bytes:bytes"],  # headers as dict[bytes, bytes], as documented
        "path": f"/threads/{t}/runs/wait",
        "method": "POST",
        "path_params": {"thread_id": t},
        "query_params": {"probe": "yes"},
    }


async def test_the_sdk_api_key_and_a_bearer_token_are_both_accepted(embedded: People) -> None:
    thread = await embedded.alice.threads.create()  # x-api-key
    res = await embedded.alice_http.get(f"/threads/{thread['thread_id']}")  # Bearer
    assert res.status_code == 200
    assert res.json()["metadata"] == {"owner": "alice"}


# --- 2. authorization handlers ---------------------------------------------------------------


async def test_create_stores_what_the_handler_stamped(embedded: People) -> None:
    thread = await embedded.alice.threads.create(metadata={"owner": "bob", "topic": "tea"})
    assert thread["metadata"] == {"owner": "alice", "topic": "tea"}, "a forged owner is replaced"
    stored = await embedded.alice.threads.get(thread["thread_id"])
    assert stored["metadata"] == {"owner": "alice", "topic": "tea"}
    run = await embedded.alice.runs.create(
        thread["thread_id"], "ticker", input={"n": 1}, metadata={"owner": "bob"}
    )
    assert run["metadata"] == {"owner": "alice"}
    await embedded.alice.runs.join(thread["thread_id"], run["run_id"])


async def test_search_and_count_return_only_the_callers_rows(embedded: People) -> None:
    tag = uuid.uuid4().hex
    mine = {(await embedded.alice.threads.create(metadata={"suite": tag}))["thread_id"]}
    mine.add((await embedded.alice.threads.create(metadata={"suite": tag}))["thread_id"])
    theirs = (await embedded.bob.threads.create(metadata={"suite": tag}))["thread_id"]
    found = await embedded.alice.threads.search(metadata={"suite": tag})
    assert {t["thread_id"] for t in found} == mine
    assert await embedded.alice.threads.count(metadata={"suite": tag}) == 2
    assert [t["thread_id"] for t in await embedded.bob.threads.search(metadata={"suite": tag})] == [
        theirs
    ]
    assert await embedded.bob.threads.count(metadata={"suite": tag}) == 1
    # Asking for alice's rows by name does not widen the filter.
    assert await embedded.bob.threads.search(metadata={"suite": tag, "owner": "alice"}) == []
    assert await embedded.bob.threads.search(ids=sorted(mine)) == []


async def test_the_most_specific_handler_wins(embedded: People) -> None:
    # @auth.on would hide alice's assistant from bob; @auth.on.assistants lets everyone read.
    made = await embedded.alice.assistants.create("ticker", name="alice's", metadata={"x": 1})
    assert made["metadata"] == {"x": 1, "owner": "alice"}, "assistants.create stamped the owner"
    seen = await embedded.bob.assistants.get(made["assistant_id"])
    assert seen["name"] == "alice's"
    # @auth.on.assistants.create raises 403 for a user without the permission.
    with pytest.raises(PermissionDeniedError) as denied:
        await embedded.bob.assistants.create("ticker", name="bob's")
    assert "Editors only" in str(denied.value.body)


async def test_a_handler_returning_false_is_403_and_changes_nothing(embedded: People) -> None:
    made = await embedded.alice.assistants.create("ticker", name="kept")
    res = await embedded.bob_http.delete(f"/assistants/{made['assistant_id']}")
    assert res.status_code == 403
    assert res.json() == {"detail": "Forbidden"}
    assert (await embedded.alice.assistants.get(made["assistant_id"]))["name"] == "kept"
    await embedded.alice.assistants.delete(made["assistant_id"])
    await hidden(embedded.alice.assistants.get(made["assistant_id"]))


# --- 3. isolation everywhere, streams included (both deployments) ----------------------------


async def test_a_strangers_requests_on_a_thread_are_404_and_change_nothing(
    people: People,
) -> None:
    alice, bob, bob_http = people.alice, people.bob, people.bob_http
    thread = await alice.threads.create(metadata={"topic": "private"})
    t = thread["thread_id"]
    await alice.runs.wait(t, "ticker", input={"n": 2})
    run = (await alice.runs.list(t))[0]
    r = run["run_id"]
    checkpoint = (await alice.threads.get_state(t))["checkpoint_id"]
    before = await snapshot(alice, t)
    assert before["thread"]["values"]["count"] == 2

    await hidden(bob.threads.get(t))
    await hidden(bob.threads.update(t, metadata={"owner": "bob"}))
    await hidden(bob.threads.get_state(t))
    await hidden(bob.threads.get_state(t, checkpoint_id=checkpoint))
    await hidden(bob.threads.update_state(t, {"count": 99}, as_node="tick"))
    await hidden(bob.threads.get_history(t))
    await hidden(bob.threads.copy(t))
    await refused(bob_http, "GET", f"/threads/{t}/history")
    await refused(bob_http, "POST", f"/threads/{t}/state/checkpoint", json={"checkpoint": {}})
    await hidden(bob.runs.list(t))
    await hidden(bob.runs.get(t, r))
    await hidden(bob.runs.create(t, "ticker", input={"n": 1}))
    await hidden(bob.runs.create(t, "ticker", input={"n": 1}, if_not_exists="create"))
    await hidden(bob.runs.wait(t, "ticker", input={"n": 1}))
    await hidden_stream(bob.runs.stream(t, "ticker", input={"n": 1}))
    await hidden(bob.runs.join(t, r))
    await hidden_stream(bob.runs.join_stream(t, r))
    await hidden_stream(bob.runs.join_stream(t, r, last_event_id="-1"))
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/stream")
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/stream", headers={"last-event-id": "-1"})
    await refused(bob_http, "GET", f"/runs/{r}/stream", headers={"last-event-id": "0"})
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/join")
    await hidden_stream(await bob.threads.join_stream(t, last_event_id="-1"))
    await hidden(bob.runs.cancel(t, r))
    await hidden(bob.runs.delete(t, r))
    await hidden(bob.threads.delete(t))
    assert await bob.threads.search(ids=[t]) == []
    assert await bob.threads.count(metadata={"topic": "private"}) == 0
    # Taking the id is refused too: the thread exists, so it cannot be created again.
    res = await bob_http.post("/threads", json={"thread_id": t, "if_exists": "do_nothing"})
    assert res.status_code == 409

    assert await snapshot(alice, t) == before, "no denied request changed anything"
    assert (await alice.runs.get(t, r))["status"] == "success"


async def test_a_stranger_gets_nothing_of_a_live_background_run(people: People) -> None:
    alice, bob, bob_http = people.alice, people.bob, people.bob_http
    thread = await alice.threads.create()
    t = thread["thread_id"]
    run = await start_hold(alice, t)
    r = run["run_id"]

    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/stream")
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/stream", headers={"last-event-id": "-1"})
    await refused(
        bob_http, "GET", f"/threads/{t}/runs/{r}/stream", params={"stream_mode": "custom"}
    )
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/join")
    await refused(bob_http, "GET", f"/threads/{t}/stream")
    await refused(bob_http, "GET", f"/threads/{t}/stream", headers={"last-event-id": "-1"})
    await hidden_stream(bob.runs.join_stream(t, r, last_event_id="-1"))
    await hidden_stream(await bob.threads.join_stream(t))
    await refused(bob_http, "POST", f"/threads/{t}/runs/{r}/cancel")
    await refused(bob_http, "POST", f"/threads/{t}/runs/{r}/cancel?wait=1&action=rollback")
    await refused(bob_http, "POST", "/runs/cancel", json={"thread_id": t, "run_ids": [r]})
    await refused(bob_http, "DELETE", f"/threads/{t}")
    await hidden(bob.runs.create(t, "ticker", input={"n": 1}, multitask_strategy="interrupt"))

    # The owner's run went on untouched, and the owner still reads it from the start.
    assert (await alice.runs.get(t, r))["status"] == "running"
    replay = await read_until(
        alice.runs.join_stream(t, r, last_event_id="-1"),
        lambda parts: any(p.data == STARTED for p in parts),
    )
    assert [p.event for p in replay] == ["metadata", "custom"]
    await alice.runs.cancel(t, r, wait=True)
    assert (await alice.runs.get(t, r))["status"] == "interrupted"


async def test_a_stateless_run_belongs_to_its_caller_while_it_exists(people: People) -> None:
    alice, bob_http = people.alice, people.bob_http
    run = await start_hold(alice, None)
    t, r = run["thread_id"], run["run_id"]

    await refused(bob_http, "GET", f"/runs/{r}/stream")
    await refused(bob_http, "GET", f"/runs/{r}/stream", headers={"last-event-id": "-1"})
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/stream")
    await refused(bob_http, "GET", f"/threads/{t}/runs/{r}/join")
    await refused(bob_http, "GET", f"/threads/{t}")
    await refused(bob_http, "POST", f"/threads/{t}/runs/{r}/cancel")

    async with people.alice_http.stream(
        "GET", f"/runs/{r}/stream", headers={"last-event-id": "-1"}
    ) as res:
        assert res.status_code == 200
        async for line in res.aiter_lines():
            if line.startswith("data:") and json.loads(line[5:]) == STARTED:
                break
        else:
            pytest.fail("the owner did not see the run start")
    assert (await alice.runs.get(t, r))["status"] == "running"
    await alice.runs.cancel(t, r, wait=True)
    # Once it ended it no longer exists: not for its owner either.
    await hidden(alice.threads.get(t))


# --- 4. the graph knows who called (both deployments) ----------------------------------------


async def test_the_graph_sees_the_authenticated_user(people: People) -> None:
    alice, bob = people.alice, people.bob
    whoami_values(await alice.runs.wait(None, "whoami", input={}), "alice", ["assistants:write"])
    thread = await bob.threads.create()
    t = thread["thread_id"]
    whoami_values(await bob.runs.wait(t, "whoami", input={}), "bob", [])
    # Kept: a stateless run's thread and run go when it ends, maybe before the join arrives.
    background = await alice.runs.create(None, "whoami", input={}, on_completion="keep")
    joined = await alice.runs.join(background["thread_id"], background["run_id"])
    whoami_values(joined, "alice", ["assistants:write"])
    run = await bob.runs.create(t, "whoami", input={})
    whoami_values(await bob.runs.join(t, run["run_id"]), "bob", [])
    whoami_values((await bob.threads.get_state(t))["values"], "bob", [])


# --- 5. shared API keys ----------------------------------------------------------------------


def test_an_open_server_says_so_at_start(server: ServerProcess) -> None:
    assert any("open to anyone" in line for line in server.output)


@pytest.mark.parametrize(
    ("how", "keys"),
    [
        ({"extra_args": ("--api-key", "key-one", "--api-key", "key-two")}, ("key-one", "key-two")),
        ({"env": {"AGENTSTREAM_API_KEYS": "key-one, key-two"}}, ("key-one", "key-two")),
    ],
    ids=["flag", "env"],
)
async def test_shared_api_keys(
    server_factory: Callable[..., ServerProcess], how: dict[str, Any], keys: tuple[str, str]
) -> None:
    proc = server_factory(config=EXAMPLES, **how)
    assert any("an API key is required (2 configured)" in line for line in proc.output)
    assert not any("open to anyone" in line for line in proc.output)
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        for path in ("/ok", "/info"):
            assert (await http.get(path)).status_code == 200
        res = await http.post("/threads/search", json={})
        assert res.status_code == 401
        assert res.headers["www-authenticate"] == "Bearer"
        assert "Missing API key" in res.json()["detail"]
        for wrong in ({"x-api-key": "key-three"}, {"authorization": "Bearer key-on"}):
            res = await http.post("/threads/search", json={}, headers=wrong)
            assert res.status_code == 401
            assert res.json() == {"detail": "Invalid API key."}
        ok = {"x-api-key": keys[0]}
        assert (await http.post("/threads/search", json={}, headers=ok)).status_code == 200
        ok = {"authorization": f"Bearer {keys[1]}"}
        assert (await http.post("/threads/search", json={}, headers=ok)).status_code == 200
    client = get_client(url=proc.url, api_key=keys[1])
    try:
        assert await client.runs.wait(None, "ticker", input={"n": 2}) == {"n": 2, "count": 2}
    finally:
        await client.http.client.aclose()
    stranger = get_client(url=proc.url, api_key="guess")
    try:
        with pytest.raises(httpx.HTTPStatusError) as raised:
            await stranger.runs.wait(None, "ticker", input={"n": 2})
        assert raised.value.response.status_code == 401
        with pytest.raises(AuthenticationError):
            await stranger.threads.search()
    finally:
        await stranger.http.client.aclose()


# --- 6. browsers -----------------------------------------------------------------------------

ORIGIN = "https://app.example"


def _cors_config(tmp_path: Path, cors: dict[str, Any] | None) -> Path:
    config: dict[str, Any] = {
        "dependencies": [str(EXAMPLES.parent)],
        "graphs": {"ticker": f"{EXAMPLES.parent}/ticker.py:graph"},
    }
    if cors is not None:
        config["http"] = {"cors": cors}
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key, content-type",
    }


async def test_cors_follows_http_cors(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    cors = {"allow_origins": [ORIGIN], "allow_headers": ["x-api-key", "content-type"]}
    proc = server_factory(config=_cors_config(tmp_path, cors), extra_args=("--api-key", "k"))
    async with httpx.AsyncClient(base_url=proc.url) as http:
        # A preflight carries no credentials, and needs none.
        res = await http.options("/threads/search", headers=_preflight(ORIGIN))
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in res.headers["access-control-allow-methods"]
        res = await http.options("/threads/search", headers=_preflight("https://evil.example"))
        assert res.status_code == 400
        assert "access-control-allow-origin" not in res.headers
        res = await http.post(
            "/threads/search", json={}, headers={"origin": ORIGIN, "x-api-key": "k"}
        )
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == ORIGIN
        assert "x-pagination-total" in res.headers["access-control-expose-headers"]
        # A refusal is readable by the page too, so it can ask for a key.
        res = await http.post("/threads/search", json={}, headers={"origin": ORIGIN})
        assert res.status_code == 401
        assert res.headers["access-control-allow-origin"] == ORIGIN
        res = await http.post(
            "/threads/search", json={}, headers={"origin": "https://evil.example", "x-api-key": "k"}
        )
        assert "access-control-allow-origin" not in res.headers
    # Browsers apply no CORS to WebSockets: the server refuses the origins http.cors does not allow.
    url = proc.url.replace("http://", "ws://") + f"/threads/{uuid.uuid4()}/stream/events"
    tree = json.dumps({"id": 1, "method": "agent.getTree", "params": {}})
    async with connect(url, additional_headers={"origin": ORIGIN, "x-api-key": "k"}) as ws:
        await ws.send(tree)
        assert json.loads(await ws.recv())["id"] == 1
    headers = {"origin": "https://evil.example", "x-api-key": "k"}
    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send(tree)
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_without_http_cors_any_origin_is_allowed_and_auth_still_applies(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # As LangGraph's own server without http.cors (issue 11): a frontend on another origin works.
    proc = server_factory(config=_cors_config(tmp_path, None), extra_args=("--api-key", "k"))
    async with httpx.AsyncClient(base_url=proc.url) as http:
        res = await http.options("/threads/search", headers=_preflight(ORIGIN))
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == "*"
        res = await http.post(
            "/threads/search", json={}, headers={"origin": ORIGIN, "x-api-key": "k"}
        )
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == "*"
        res = await http.post("/threads/search", json={}, headers={"origin": ORIGIN})
        assert res.status_code == 401


# --- the store: each user's memories under their identity (auth_app's store handlers) ----------


async def test_store_memories_stay_apart_through_the_api(people: People) -> None:
    alice, bob = people.alice.store, people.bob.store
    topic = uuid.uuid4().hex
    await alice.put_item(["memories", topic], "k", {"text": "alice's"})
    mine = await alice.get_item(["memories", topic], "k")
    assert mine["value"] == {"text": "alice's"}
    assert mine["namespace"] == ["alice", "memories", topic]  # where the handler put it
    assert await bob.get_item(["memories", topic], "k") is None
    assert await bob.get_item(["alice", "memories", topic], "k") is None  # no way to name it

    await bob.put_item(["memories", topic], "k", {"text": "bob's"})
    await bob.delete_item(["memories", topic], "k")
    await bob.delete_item(["alice", "memories", topic], "k")
    assert (await alice.get_item(["memories", topic], "k"))["value"] == {"text": "alice's"}

    assert (await bob.search_items(["memories", topic]))["items"] == []
    everything = await bob.search_items([], limit=1000)
    assert all(i["namespace"][0] == "bob" for i in everything["items"])
    seen = await alice.search_items(["memories", topic])
    assert [i["value"] for i in seen["items"]] == [{"text": "alice's"}]
    bobs = (await bob.list_namespaces())["namespaces"]
    assert all(ns[0] == "bob" for ns in bobs)
    alices = (await alice.list_namespaces(prefix=["memories"]))["namespaces"]
    assert ["alice", "memories", topic] in alices


async def test_a_store_handler_refusal_is_403_and_writes_nothing(people: People) -> None:
    topic = uuid.uuid4().hex
    with pytest.raises(PermissionDeniedError):
        await people.alice.store.put_item(["archive", topic], "k", {"v": 1})
    assert await people.alice.store.get_item(["archive", topic], "k") is None


async def test_store_memories_stay_apart_through_graphs(people: People) -> None:
    secret = f"alice's secret {uuid.uuid4().hex}"
    # The graph names the namespace after the authenticated user; `user` in the input is moot.
    out = await people.alice.runs.wait(None, "memory", input={"remember": secret})
    assert isinstance(out, dict) and secret in out["recalled"]
    theirs = await people.bob.runs.wait(None, "memory", input={"user": "alice"})
    assert isinstance(theirs, dict) and secret not in theirs["recalled"] + theirs["memories"]
    thread = await people.alice.threads.create()
    again = await people.alice.runs.wait(thread["thread_id"], "memory", input={})
    assert isinstance(again, dict) and secret in again["runtime_saw"]
    through_api = await people.alice.store.search_items(["memories"], filter={"text": secret})
    assert [i["namespace"] for i in through_api["items"]] == [["alice", "memories"]]
    assert (await people.bob.store.search_items(["memories"], filter={"text": secret}))[
        "items"
    ] == []


# --- protocol v2 (issue 13) -----------------------------------------------------------------


async def _v2_command(
    http: httpx.AsyncClient, thread_id: str, method: str, **params: object
) -> Any:
    response = await http.post(
        f"/threads/{thread_id}/commands", json={"id": 1, "method": method, "params": params}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_v2_stranger_gets_no_event_and_no_command(people: People) -> None:
    thread_id = str(uuid.uuid4())
    body = {"channels": ["lifecycle", "values", "custom"], "since": 0}
    # The stranger subscribes first, to a thread that does not exist yet...
    async with people.bob_http.stream(
        "POST", f"/threads/{thread_id}/stream/events", json=body
    ) as early:
        assert early.status_code == 200
        # ...which its owner then creates with run.start.
        started = await _v2_command(
            people.alice_http, thread_id, "run.start", assistant_id="ticker", input={"n": 2}
        )
        assert started["type"] == "success", started
        mine = await _until_runs_end(people.alice_http, thread_id, body, 1)
        assert mine[0]["method"] == "lifecycle"
        # The stranger's stream ends without a single event.
        received = [line async for line in early.aiter_lines() if line.startswith("data:")]
    assert received == []
    late = await people.bob_http.post(f"/threads/{thread_id}/stream/events", json=body)
    assert late.status_code == 404
    for method, params in (
        ("run.start", {"assistant_id": "ticker", "input": {"n": 1}}),
        ("input.respond", {"interrupt_id": "x", "namespace": [], "response": 1}),
        ("state.get", {"namespace": []}),
        ("agent.getTree", {}),
    ):
        answer = await _v2_command(people.bob_http, thread_id, method, **params)
        assert answer["type"] == "error", (method, answer)
    runs = await people.alice.runs.list(thread_id)
    assert len(runs) == 1  # the stranger's run.start made nothing


async def test_v2_socket_authenticates_before_any_command(people: People) -> None:
    """The socket is authenticated on its handshake and authorised for the thread before a
    command is read; a refused one closes with 4000 + the status the SSE route would answer."""
    thread_id = str(uuid.uuid4())
    url = str(people.alice_http.base_url).rstrip("/").replace("http://", "ws://")
    url += f"/threads/{thread_id}/stream/events"
    start = {"id": 1, "method": "run.start", "params": {"assistant_id": "whoami", "input": {}}}
    async with connect(url, additional_headers={"authorization": f"Bearer {ALICE}"}) as ws:
        await ws.send(json.dumps(start))
        assert json.loads(await ws.recv())["type"] == "success"
        subscribe = {
            "id": 2,
            "method": "subscription.subscribe",
            "params": {"channels": ["values"]},
        }
        await ws.send(json.dumps(subscribe))
        frame = json.loads(await ws.recv())
        while frame.get("method") != "values":
            frame = json.loads(await ws.recv())
    # The run a command on her socket started is hers, as the graph sees it.
    whoami_values(frame["params"]["data"], "alice", ["assistants:write"])
    for headers, code in (({}, 4401), ({"authorization": f"Bearer {BOB}"}, 4404)):
        async with connect(url, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send(json.dumps({**start, "id": 3}))
                await ws.recv()  # the close, never an answer
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    assert len(await people.alice.runs.list(thread_id)) == 1
