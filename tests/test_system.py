"""System routes over real HTTP: health, /info, the OpenAPI document and its docs page
(PROTOCOL §1.1, §11; captures info.txt, errors.txt)."""

from __future__ import annotations

from typing import Any

import httpx
import langgraph.version
import pytest

from agentstream import __version__

# Every route the official Python SDK's assistants, threads and runs methods send (§12.2),
# except threads.prune, threads.stream (protocol v2), crons and store: not served yet.
SDK_ROUTES = {
    ("post", "/assistants"),
    ("post", "/assistants/search"),
    ("post", "/assistants/count"),
    ("get", "/assistants/{assistant_id}"),
    ("patch", "/assistants/{assistant_id}"),
    ("delete", "/assistants/{assistant_id}"),
    ("get", "/assistants/{assistant_id}/graph"),
    ("get", "/assistants/{assistant_id}/schemas"),
    ("get", "/assistants/{assistant_id}/subgraphs"),
    ("get", "/assistants/{assistant_id}/subgraphs/{namespace}"),
    ("post", "/assistants/{assistant_id}/versions"),
    ("post", "/assistants/{assistant_id}/latest"),
    ("post", "/threads"),
    ("post", "/threads/search"),
    ("post", "/threads/count"),
    ("get", "/threads/{thread_id}"),
    ("patch", "/threads/{thread_id}"),
    ("delete", "/threads/{thread_id}"),
    ("post", "/threads/{thread_id}/copy"),
    ("get", "/threads/{thread_id}/state"),
    ("post", "/threads/{thread_id}/state"),
    ("get", "/threads/{thread_id}/state/{checkpoint_id}"),
    ("post", "/threads/{thread_id}/state/checkpoint"),
    ("post", "/threads/{thread_id}/history"),
    ("get", "/threads/{thread_id}/stream"),
    ("post", "/threads/{thread_id}/runs"),
    ("get", "/threads/{thread_id}/runs"),
    ("post", "/threads/{thread_id}/runs/stream"),
    ("post", "/threads/{thread_id}/runs/wait"),
    ("get", "/threads/{thread_id}/runs/{run_id}"),
    ("delete", "/threads/{thread_id}/runs/{run_id}"),
    ("get", "/threads/{thread_id}/runs/{run_id}/join"),
    ("get", "/threads/{thread_id}/runs/{run_id}/stream"),
    ("post", "/threads/{thread_id}/runs/{run_id}/cancel"),
    ("post", "/runs"),
    ("post", "/runs/stream"),
    ("post", "/runs/wait"),
    ("post", "/runs/batch"),
    ("post", "/runs/cancel"),
}


async def test_ok_and_root_answer_as_captured(http: httpx.AsyncClient) -> None:
    for path in ("/ok", "/"):
        response = await http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"ok": True, "services": {}}


async def test_info_has_the_captured_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/info")
    assert response.status_code == 200
    info = response.json()
    assert list(info) == ["version", "langgraph_py_version", "flags", "host"]
    assert info["version"] == __version__
    assert info["langgraph_py_version"] == langgraph.version.__version__
    assert info["flags"]["assistants"] is True
    assert info["flags"]["langsmith"] is False
    assert info["flags"]["crons"] is True  # the cron routes are served (test_crons.py)
    assert all(isinstance(v, bool) for v in info["flags"].values())
    assert info["host"] == {
        "kind": "self-hosted",
        "project_id": None,
        "host_revision_id": None,
        "revision_id": None,
        "tenant_id": None,
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_openapi_is_a_valid_document_listing_the_sdk_routes(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] and spec["info"]["version"]
    operations = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert SDK_ROUTES - operations == set()
    for path, item in spec["paths"].items():
        assert path.startswith("/")
        for method, op in item.items():
            assert method in {"get", "post", "put", "patch", "delete"}, (method, path)
            assert op["responses"], (method, path)
            # A path template names only parameters the operation declares.
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {s[1:-1] for s in path.split("/") if s.startswith("{")}
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for ref in _refs(spec):
        assert isinstance(_resolve(spec, ref), dict), ref


async def test_docs_is_an_html_page_for_the_openapi_document(http: httpx.AsyncClient) -> None:
    response = await http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "/openapi.json" in page


async def test_metrics_is_prometheus_text(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = [line for line in response.text.splitlines() if not line.startswith("#")]
    assert samples
    for line in samples:
        name, value = line.rsplit(" ", 1)
        float(value)
        assert name


@pytest.mark.parametrize(
    ("method", "path", "status", "detail", "allow"),
    [
        ("get", "/nope", 404, "Not Found", None),
        ("put", "/ok", 405, "Method Not Allowed", "GET"),
        ("get", "/runs/stream", 405, "Method Not Allowed", "POST"),
        ("delete", "/runs/stream", 405, "Method Not Allowed", "POST"),
    ],
)
async def test_unknown_routes_and_methods_answer_like_the_real_server(
    app_http: httpx.AsyncClient,
    method: str,
    path: str,
    status: int,
    detail: str,
    allow: str | None,
) -> None:
    # Wording only: in process (conftest's app_http).
    response = await app_http.request(method, path)
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    assert response.headers.get("allow") == allow
