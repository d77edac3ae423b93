"""Bad requests get a 4xx with {"detail": <str>}, never a 500, and leave the server serving
(PROTOCOL §0.11, §1.1, §3, §10).

In process (conftest's app_http): only what the API says is checked here, and a 500 shows its
traceback; the size limits, which need a real socket, start a server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import new_thread

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

HI = {"messages": [{"role": "human", "content": "hi there"}]}
GRAPHS = ("agent", "subgraphs", "ticker", "hitl", "failing", "nested", "memory")


@pytest.fixture
def http(app_http: httpx.AsyncClient) -> httpx.AsyncClient:
    return app_http


def assert_error(response: httpx.Response, status: int, detail: str | None = None) -> str:
    """The status, a JSON body holding exactly a string `detail`; returns that detail."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if detail is not None:
        assert body["detail"] == detail
    return str(body["detail"])


async def assert_still_serves(http: httpx.AsyncClient) -> None:
    response = await http.post("/runs/wait", json={"assistant_id": "agent", "input": HI})
    assert response.status_code == 200
    contents = [m["content"] for m in response.json()["messages"]]
    assert contents == ["hi there", "echo: hi there", "bye"]


# --- bodies that are not a run request -----------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b'{"assistant_id": "agent", "input": ', b"", b"not json at all", b"\xff\xfe"],
    ids=["truncated", "empty", "text", "binary"],
)
@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_body_that_is_not_json_is_422(
    http: httpx.AsyncClient, route: str, content: bytes
) -> None:
    response = await http.post(route, content=content, headers={"content-type": "application/json"})
    assert_error(response, 422, "Invalid JSON in request body")
    await assert_still_serves(http)


@pytest.mark.parametrize(
    "content", [b"[]", b'[{"assistant_id": "agent"}]', b'"agent"', b"5", b"null"]
)
async def test_a_json_body_that_is_not_an_object_is_422(
    http: httpx.AsyncClient, content: bytes
) -> None:
    response = await http.post(
        "/runs/stream", content=content, headers={"content-type": "application/json"}
    )
    detail = assert_error(response, 422)
    assert "object" in detail.lower()
    await assert_still_serves(http)


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_missing_assistant_id_is_422(http: httpx.AsyncClient, route: str) -> None:
    response = await http.post(route, json={"input": HI})
    detail = assert_error(response, 422)
    assert "assistant_id" in detail
    await assert_still_serves(http)


# --- assistants ----------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream"])
async def test_an_unknown_graph_name_is_422_and_lists_the_graphs(
    http: httpx.AsyncClient, route: str
) -> None:
    response = await http.post(route, json={"assistant_id": "nope", "input": {}})
    detail = assert_error(response, 422)
    assert detail.startswith("Invalid assistant: 'nope'.")
    registered = detail.rsplit("registered graphs: ", 1)[1]
    assert sorted(registered.split(", ")) == sorted(GRAPHS)
    await assert_still_serves(http)


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_an_unknown_assistant_uuid_is_404(http: httpx.AsyncClient, route: str) -> None:
    body = {"assistant_id": str(uuid.uuid4()), "input": {}}
    assert_error(await http.post(route, json=body), 404, "Thread or assistant not found.")
    await assert_still_serves(http)


# --- enums and types -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bogus", ["values", "bogus"], 7])
@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_bad_stream_mode_is_422(http: httpx.AsyncClient, route: str, mode: Any) -> None:
    body = {"assistant_id": "agent", "input": HI, "stream_mode": mode}
    detail = assert_error(await http.post(route, json=body), 422)
    assert "stream_mode" in detail
    await assert_still_serves(http)


async def test_on_disconnect_is_checked_on_stream_routes(http: httpx.AsyncClient) -> None:
    body = {"assistant_id": "agent", "input": HI, "on_disconnect": "bogus"}
    detail = assert_error(await http.post("/runs/stream", json=body), 422)
    assert "bogus" in detail
    thread_id = await new_thread(http)
    response = await http.post(f"/threads/{thread_id}/runs/stream", json=body)
    assert "bogus" in assert_error(response, 422)
    await assert_still_serves(http)


async def test_on_disconnect_is_ignored_where_the_schema_has_no_such_field(
    http: httpx.AsyncClient,
) -> None:
    body = {"assistant_id": "agent", "input": HI, "on_disconnect": "bogus"}
    response = await http.post("/runs/wait", json=body)
    assert response.status_code == 200
    assert response.json()["messages"][1]["content"] == "echo: hi there"


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_bad_multitask_strategy_is_422_on_a_thread(
    http: httpx.AsyncClient, route: str
) -> None:
    thread_id = await new_thread(http)
    body = {"assistant_id": "agent", "input": HI, "multitask_strategy": "bogus"}
    detail = assert_error(await http.post(f"/threads/{thread_id}{route}", json=body), 422)
    assert "bogus" in detail
    runs = await http.get(f"/threads/{thread_id}/runs")
    assert runs.json() == []
    await assert_still_serves(http)


async def test_a_bad_multitask_strategy_is_ignored_on_a_stateless_run(
    http: httpx.AsyncClient,
) -> None:
    body = {"assistant_id": "agent", "input": HI, "multitask_strategy": "bogus"}
    response = await http.post("/runs/wait", json=body)
    assert response.status_code == 200
    assert [m["content"] for m in response.json()["messages"]][1:] == ["echo: hi there", "bye"]


@pytest.mark.parametrize(
    "field",
    [
        {"stream_subgraphs": "yes please"},
        {"stream_resumable": [1]},
        {"config": 5},
        {"config": "configurable"},
        {"metadata": ["a"]},
        {"context": 1.5},
        {"if_not_exists": "sometimes"},
        {"interrupt_before": 3},
        {"after_seconds": "soon"},
    ],
    ids=lambda field: next(iter(field)),
)
async def test_a_field_of_the_wrong_type_is_422(
    http: httpx.AsyncClient, field: dict[str, Any]
) -> None:
    body = {"assistant_id": "agent", "input": HI, **field}
    detail = assert_error(await http.post("/runs/stream", json=body), 422)
    assert next(iter(field)) in detail
    await assert_still_serves(http)


# --- ids and resumes -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_command_on_a_stateless_run_is_400(http: httpx.AsyncClient, route: str) -> None:
    body = {"assistant_id": "hitl", "command": {"resume": "yes"}}
    response = await http.post(route, json=body)
    assert_error(response, 400, "You must provide a thread_id when resuming.")
    await assert_still_serves(http)


@pytest.mark.parametrize("route", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_thread_id_that_is_not_a_uuid_is_400(http: httpx.AsyncClient, route: str) -> None:
    body = {"assistant_id": "agent", "input": HI}
    response = await http.post(f"/threads/not-a-uuid{route}", json=body)
    detail = assert_error(response, 400)
    assert "UUID" in detail
    await assert_still_serves(http)


async def test_an_unknown_run_is_404(http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http)
    run_id = str(uuid.uuid4())
    assert_error(await http.get(f"/threads/{thread_id}/runs/{run_id}"), 404)
    assert_error(await http.delete(f"/threads/{thread_id}/runs/{run_id}"), 404)
    cancel = await http.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
    assert_error(cancel, 404, "No runs found to cancel.")
    # An unknown run on an unknown thread, too.
    assert_error(await http.get(f"/threads/{uuid.uuid4()}/runs/{run_id}"), 404)
    await assert_still_serves(http)


async def test_a_run_id_that_is_not_a_uuid_is_422(http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http)
    detail = assert_error(await http.get(f"/threads/{thread_id}/runs/not-a-run"), 422)
    assert "UUID" in detail
    await assert_still_serves(http)


@pytest.mark.parametrize("body", [{}, {"status": "bogus"}, {"run_ids": "x"}])
async def test_bulk_cancel_without_a_selection_is_422(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert_error(await http.post("/runs/cancel", json=body), 422)
    await assert_still_serves(http)


# --- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/runs/wait", "POST"), ("PUT", "/runs/stream", "POST"), ("GET", "/runs", "POST")],
)
async def test_a_wrong_method_is_405_json(
    http: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await http.request(method, path)
    assert_error(response, 405, "Method Not Allowed")
    assert allowed in response.headers["allow"]
    await assert_still_serves(http)


@pytest.mark.parametrize("path", ["/nope", "/runs/wait/extra", "/threads/x/y/z/w"])
async def test_an_unknown_path_is_404_json(http: httpx.AsyncClient, path: str) -> None:
    assert_error(await http.get(path), 404, "Not Found")
    assert_error(await http.post(path, json={}), 404, "Not Found")
    await assert_still_serves(http)


# --- size ----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413(
    server_factory: Callable[..., ServerProcess],
) -> None:
    limit = 1024
    proc = server_factory(env={"AGENTSTREAM_MAX_BODY_BYTES": str(limit)})
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        # A request that would otherwise be valid: only its size is wrong.
        words = {"role": "human", "content": "x" * 4 * limit}
        big = {"assistant_id": "agent", "input": {"messages": [words]}}
        assert "limit" in assert_error(await http.post("/runs/wait", json=big), 413).lower()
        # One far over the limit: the client still reads its 413 rather than a reset connection.
        huge = b" " * 200 * limit
        response = await http.post(
            "/runs/wait", content=huge, headers={"content-type": "application/json"}
        )
        assert_error(response, 413)
        # A body sent in chunks, without a content-length, is counted as it arrives; the chunks
        # still coming after the limit are read and dropped, not left to reset the connection.

        async def chunks() -> Any:
            for _ in range(200):
                yield b" " * 512
            yield b"{}"

        response = await http.post(
            "/runs/wait", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413)
        # Just under the limit still works.
        small = {"assistant_id": "agent", "input": HI, "metadata": {"pad": "y" * 500}}
        assert len(httpx.Request("POST", "/", json=small).content) < limit
        response = await http.post("/runs/wait", json=small)
        assert response.status_code == 200
        assert response.json()["messages"][1]["content"] == "echo: hi there"
        await assert_still_serves(http)
