"""Fitting a deployment (issue 11, point 5): langgraph.json's `http` block. CORS open by default
and narrowed by http.cors, request headers passed into a run's config by pattern, the user's own
app mounted beside ours (with or without our auth), and route families switched off."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.servers import serving

APP = Path(__file__).parent / "deploy_app"
ORIGIN = "https://chat.example"


def write_config(tmp_path: Path, http: dict[str, Any]) -> Path:
    config = {
        "dependencies": [str(APP)],
        "graphs": {"headers": f"{APP}/graph.py:graph"},
        "http": http,
    }
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


PATTERNS = {
    "configurable_headers": {
        "include": ["x-user-*", "x-trace", "authorization"],
        "exclude": ["x-user-secret"],
    }
}
SENT = {
    "x-user-id": "alice",
    "X-User-Role": "admin",
    "x-user-secret": "s3cret",
    "x-trace": "t-1",
    "x-other": "no",
    "authorization": "Bearer token",
    "x-api-key": "key",
}


@pytest.fixture(params=["embedded", "distributed"])
def header_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    config = write_config(tmp_path, PATTERNS)
    with serving(request.param, config, tmp_path / "db.sqlite") as urls:
        yield urls[0]


def test_matching_headers_reach_the_run_config_and_credentials_never_do(header_server: str) -> None:
    with httpx.Client(base_url=header_server, timeout=30) as http:
        for path in ("/runs/wait", f"/threads/{_thread(http)}/runs/wait"):
            answer = http.post(path, json={"assistant_id": "headers", "input": {}}, headers=SENT)
            assert answer.status_code == 200, answer.text
            assert answer.json()["headers"] == {
                "x-user-id": "alice",
                "x-user-role": "admin",
                "x-trace": "t-1",
            }


def test_a_header_wins_over_the_same_key_in_the_body(header_server: str) -> None:
    configurable = {"x-user-id": "mallory", "x-user-plan": "free"}
    body = {"assistant_id": "headers", "input": {}, "config": {"configurable": configurable}}
    with httpx.Client(base_url=header_server, timeout=30) as http:
        answer = http.post("/runs/wait", json=body, headers={"x-user-id": "alice"})
    assert answer.json()["headers"] == {"x-user-id": "alice", "x-user-plan": "free"}


def _thread(http: httpx.Client) -> str:
    return str(http.post("/threads", json={}).json()["thread_id"])


def test_without_patterns_no_header_reaches_the_run(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    proc = server_factory(config=write_config(tmp_path, {}))
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        answer = http.post(
            "/runs/wait", json={"assistant_id": "headers", "input": {}}, headers=SENT
        )
    assert answer.json()["headers"] == {}


def test_any_origin_may_call_a_default_server(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    proc = server_factory(config=write_config(tmp_path, {}))
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-api-key",
    }
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        res = http.options("/runs/stream", headers=preflight)
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == "*"
        assert "POST" in res.headers["access-control-allow-methods"]
        res = http.post("/threads/search", json={}, headers={"origin": ORIGIN})
        assert res.status_code == 200
        assert res.headers["access-control-allow-origin"] == "*"
        assert "content-location" in res.headers["access-control-expose-headers"]
    assert any("CORS: any origin may call this server" in line for line in proc.output)


def test_the_users_app_is_served_beside_ours_and_started_with_it(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    proc = server_factory(config=write_config(tmp_path, {"app": f"{APP}/app.py:app"}))
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        assert http.get("/hello").json() == {"hello": "world", "started": True}
        assert http.get("/info").json() == {"custom": True}  # the user's route comes first
        assert http.post("/threads/search", json={}).status_code == 200  # ours still serve
        assert http.get("/nowhere").status_code == 404


@pytest.mark.parametrize("custom_auth", [False, True])
def test_custom_routes_sit_behind_our_auth_only_when_asked(
    tmp_path: Path, server_factory: Callable[..., ServerProcess], custom_auth: bool
) -> None:
    http_config = {"app": f"{APP}/app.py:app", "enable_custom_route_auth": custom_auth}
    proc = server_factory(config=write_config(tmp_path, http_config), extra_args=("--api-key", "k"))
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        assert http.get("/hello").status_code == (401 if custom_auth else 200)
        assert http.get("/hello", headers={"x-api-key": "k"}).status_code == 200
        assert http.post("/threads/search", json={}).status_code == 401


def test_disabled_route_families_are_not_served(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    config = write_config(tmp_path, {"disable_runs": True, "disable_assistants": True})
    proc = server_factory(config=config)
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        body = {"assistant_id": "headers", "input": {}}
        assert http.post("/runs/wait", json=body).status_code == 404
        assert http.post("/runs/stream", json=body).status_code == 404
        assert http.post("/assistants/search", json={}).status_code == 404
        assert http.post("/threads/search", json={}).status_code == 200
        assert http.post("/threads", json={}).status_code == 200
        assert http.get("/ok").status_code == 200
    # Thread creation is the run lane's too (api/runlane.py): off with its family, alone.
    config = write_config(tmp_path, {"disable_threads": True})
    proc = server_factory(config=config)
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        assert http.post("/threads", json={}).status_code == 404
        assert http.post("/threads/search", json={}).status_code == 404
        body = {"assistant_id": "headers", "input": {}}
        assert http.post("/runs/wait", json=body).status_code == 200


def test_a_broken_http_app_is_one_clear_startup_line(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    config = write_config(tmp_path, {"app": f"{APP}/missing.py:app"})
    with pytest.raises(RuntimeError) as failed:
        server_factory(config=config)
    assert "http.app" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_a_request_without_an_origin_is_answered_vary_origin_as_starlette_answers_it(
    header_server: str,
) -> None:
    # Cors' short way (no Origin: every client but a browser) on the run lane, a FastAPI
    # route and a stream; a browser's request still gets Starlette's CORS headers.
    with httpx.Client(base_url=header_server, timeout=30) as http:
        thread = _thread(http)
        answers = [
            http.post("/runs/wait", json={"assistant_id": "headers", "input": {}}),
            http.get(f"/threads/{thread}"),
            http.post("/threads/search", json={}),
        ]
        with http.stream(
            "POST", "/runs/stream", json={"assistant_id": "headers", "input": {}}
        ) as streamed:
            streamed.read()
            answers.append(streamed)
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.headers.get_list("vary") == ["Origin"]
            assert "access-control-allow-origin" not in answer.headers
        browser = http.get(f"/threads/{thread}", headers={"origin": ORIGIN})
        assert browser.headers["access-control-allow-origin"] == "*"
        assert browser.headers.get_list("vary") == ["Origin"]
