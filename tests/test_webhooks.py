"""Webhooks (issue 15, point 3): a run that names one POSTs itself, with its final values, to a
receiver when it ends (success, error, interrupted), once, retried on 5xx; URLs are checked
when the run is created, and loopback and private targets are refused unless langgraph.json's
`webhooks` allows them. A receiver on loopback, allowed by this suite's own langgraph.json."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, ServerProcess
from tests.servers import serving

HI = {"messages": [{"role": "human", "content": "hi"}]}


class Receiver:
    """An HTTP server on loopback that keeps every POST it gets; it answers 503 to the first
    `fail` of them."""

    def __init__(self, fail: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail = fail
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver.arrived:
                    receiver.posts.append({"body": body, "headers": dict(self.headers)})
                    failing = len(receiver.posts) <= receiver.fail
                    receiver.arrived.notify_all()
                self.send_response(503 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, run_id: str, count: int = 1) -> list[dict[str, Any]]:
        return self.wait_where(lambda body: body.get("run_id") == run_id, count)

    def wait_where(
        self, wanted: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        def mine() -> list[dict[str, Any]]:
            return [p["body"] for p in self.posts if wanted(p["body"])]

        with self.arrived:
            assert self.arrived.wait_for(lambda: len(mine()) >= count, timeout=30), self.posts
            return mine()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_config(tmp_path: Path, webhooks: dict[str, Any] | None) -> Path:
    raw = json.loads(EXAMPLES.read_text())
    raw["dependencies"] = [str(EXAMPLES.parent)]
    raw["graphs"] = {
        k: str(EXAMPLES.parent / v.removeprefix("./")) for k, v in raw["graphs"].items()
    }
    raw["env"] = {"LG_WEBHOOK_TOKEN": "s3cret"}
    if webhooks is not None:
        raw["webhooks"] = webhooks
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps(raw))
    return path


LOOPBACK_ALLOWED = {
    "url": {"disable_loopback": False, "require_https": False},
    "headers": {"x-hook-token": "${{ env.LG_WEBHOOK_TOKEN }}"},
}


@pytest.fixture(params=["embedded", "distributed"])
def hooked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    config = write_config(tmp_path, LOOPBACK_ALLOWED)
    with serving(request.param, config, tmp_path / "db.sqlite", workers=2) as urls:
        yield urls[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_a_finished_run_posts_itself_with_its_values_once(hooked: str, receiver: Receiver) -> None:
    with httpx.Client(base_url=hooked, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "agent", "input": HI, "webhook": receiver.url}
        run = http.post(f"/threads/{thread}/runs", json=body).json()
        failing = {"assistant_id": "failing", "input": {}, "webhook": receiver.url}
        failed = http.post("/runs", json=failing).json()
        stateless = http.post("/runs/wait", json={**body, "metadata": {"kind": "stateless"}})
        assert stateless.status_code == 200
    [sent] = receiver.wait_for(run["run_id"])
    assert sent["status"] == "success"
    assert sent["thread_id"] == thread
    assert [m["content"] for m in sent["values"]["messages"]] == ["hi", "echo: hi", "bye"]
    assert {"run_started_at", "run_ended_at", "webhook_sent_at", "kwargs"} <= sent.keys()
    [error] = receiver.wait_for(failed["run_id"])
    assert error["status"] == "error"
    assert error["error"]["message"]
    # A stateless run's values too, though its temporary thread is gone by then.
    [kept] = receiver.wait_where(lambda body: body.get("metadata") == {"kind": "stateless"})
    assert kept["values"]["messages"][-1]["content"] == "bye"
    headers = [p["headers"] for p in receiver.posts]
    assert all(h.get("x-hook-token") == "s3cret" for h in headers)
    ids = [p["body"]["run_id"] for p in receiver.posts]
    assert len(ids) == len(set(ids)) == 3, "one POST per finished run"


def test_a_failing_receiver_gets_the_retry(hooked: str) -> None:
    receiver = Receiver(fail=1)
    try:
        with httpx.Client(base_url=hooked, timeout=30) as http:
            body = {"assistant_id": "ticker", "input": {"n": 1}, "webhook": receiver.url}
            run = http.post("/runs", json=body).json()
        first, second = receiver.wait_for(run["run_id"], count=2)
        assert first == {**second, "webhook_sent_at": first["webhook_sent_at"]}
        assert second["status"] == "success"
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("ftp://example.com/hook", "absolute http(s)"),
        ("/threads", "absolute http(s)"),
        ("http://example.com/" + "a" * 5000, "too long"),
    ],
)
def test_a_webhook_into_the_servers_own_network_is_refused_at_creation(
    server: ServerProcess, url: str, why: str
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post("/runs", json={"assistant_id": "agent", "input": HI, "webhook": url})
    assert answer.status_code == 422, answer.text
    assert why in answer.json()["detail"]


def test_a_url_block_requires_https_unless_it_says_otherwise(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    config = write_config(tmp_path, {"url": {"disable_loopback": False}})
    proc = server_factory(config=config)
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        body = {"assistant_id": "agent", "input": HI, "webhook": "http://127.0.0.1:9/hook"}
        answer = http.post("/runs", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "Webhook must use https"
