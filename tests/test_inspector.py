"""The web inspector at /inspector (issue 16), driven in headless Chromium (Debian's, through
playwright-core; inspector/driver.mjs) against real servers on both deployments: one browser for
the module, several behaviours per page visit, every wait on something the page or the API
shows."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstream.api.inspector import InspectorFiles
from agentstream.app import create_app
from agentstream.settings import Settings
from tests.conftest import EXAMPLES, ROOT, ServerProcess
from tests.helpers import npm_built
from tests.servers import serving

INSPECTOR = ROOT / "inspector"
AUTH_APP = ROOT / "tests" / "auth_app" / "langgraph.json"
ENDED = "document.querySelector('#status')?.dataset.status === 'ended'"


def build_inspector() -> None:
    """What scripts/test.sh does on a fresh machine: the pinned packages, then the bundle."""
    npm = shutil.which("npm")
    assert npm is not None, "the inspector tests need node and npm"
    assert Path("/usr/bin/chromium").exists(), "they need Debian's chromium (scripts/test.sh)"
    npm_built(INSPECTOR, npm)


class Browser:
    """One headless Chromium; each call is one command to inspector/driver.mjs."""

    def __init__(self) -> None:
        node = shutil.which("node")
        assert node is not None
        self.proc = subprocess.Popen(
            [node, "driver.mjs"],
            cwd=INSPECTOR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the browser driver died"
        answer = json.loads(line)
        assert answer["ok"], f"{op} {args}: {answer['error']}"
        return answer["value"]

    def open(self, url: str) -> None:
        self("open", url=url)
        self("until", expression="document.querySelectorAll('#assistant option').length > 0")

    def until(self, expression: str, timeout: int = 20000) -> None:
        try:
            self("until", expression=expression, timeout=timeout)
        except AssertionError as failed:
            # Say what the page shows, so a timeout tells a lost run from a stream that ended
            # in an error (its status is then "error", not "ended") or a refused request.
            shown = self.js(
                "({status: document.querySelector('#status')?.dataset.status,"
                " run: document.querySelector('#watch-run')?.textContent,"
                " error: document.querySelector('#error')?.textContent,"
                " runError: document.querySelector('#run-error')?.textContent,"
                " events: document.querySelectorAll('.event').length})"
            )
            raise AssertionError(f"{failed}; the page shows {shown}") from None

    def js(self, expression: str) -> Any:
        return self("eval", expression=expression)

    def text(self, selector: str) -> str:
        return str(self("text", selector=selector))

    def events(self, lane: str) -> list[dict[str, Any]]:
        """One lane's events as the page lists them: id, arrival (ms), summary."""
        return list(
            self.js(
                f"[...document.querySelectorAll('.lane[data-lane=\"{lane}\"] .event')].map(e => ({{"
                "id: e.dataset.id, at: parseFloat(e.querySelector('.at').textContent.slice(1)),"
                "summary: e.querySelector('.summary').textContent}))"
            )
        )

    def count(self, lane: str) -> int:
        return int(
            self.js(f"document.querySelectorAll('.lane[data-lane=\"{lane}\"] .event').length")
        )

    def start(self, assistant: str, body: Any, protocol: str = "v1", target: str = "new") -> None:
        """Picks the assistant, protocol and target, writes the input, presses Start."""
        chosen = self.assistant_id(assistant)
        self("select", selector="#assistant", value=chosen)
        self("waitFor", selector=f"#input[data-for='{chosen}']")  # its input template is in
        self("click", selector=f"#protocol-{protocol}")
        self("select", selector="#target", value=target)
        self("fill", selector="#input", value=json.dumps(body))
        self("click", selector="#start")

    def assistant_id(self, graph: str) -> str:
        return str(
            self.js(
                "[...document.querySelectorAll('#assistant option')]"
                f".find(o => o.textContent.startsWith('{graph} ')).value"
            )
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    build_inspector()
    b = Browser()
    yield b
    failures = b("failures")
    b.close()
    assert failures == []


def ticks(events: list[dict[str, Any]]) -> list[int]:
    """The `ticker` example's ticks in a custom lane (v2 wraps each in a payload)."""
    data = [json.loads(e["summary"]) for e in events]
    return [d.get("payload", d)["tick"] for d in data]


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"]) for e in events]


def test_a_run_shows_its_graph_schema_and_tokens_as_they_arrive(
    server: ServerProcess, browser: Browser
) -> None:
    # The startup lines name it.
    assert f"agentstream: inspector at {server.url}/inspector/\n" in server.output
    browser.open(f"{server.url}/inspector/?assistant=agent")
    browser("waitFor", selector="#graph .node[data-node=think]")
    nodes = browser.js("[...document.querySelectorAll('#graph .node')].map(n => n.dataset.node)")
    assert sorted(nodes) == ["__end__", "__start__", "finish", "think"]
    browser("waitFor", selector="#input-schema [data-prop=messages]")

    # v1, stateless; the echo model waits 80 ms between tokens.
    browser("fill", selector="#config", value='{"configurable": {"delay": 0.08}}')
    question = {"messages": [{"role": "human", "content": "alpha beta gamma"}]}
    browser.start("agent", question, target="stateless")
    browser.until(ENDED)
    assert browser.js("[...document.querySelectorAll('.lane[data-lane=messages] .tokens')]"
                      ".map(t => t.textContent)") == ["echo: alpha beta gamma", "bye"]  # fmt: skip
    tokens = browser.events("messages")[:4]
    assert [t["summary"] for t in tokens] == ["echo:", " alpha", " beta", " gamma"]
    # Each shown as it arrived (3 pauses of 80 ms between them), not all at the end.
    assert tokens[3]["at"] - tokens[0]["at"] >= 150, tokens
    every = [e for lane in ("metadata", "values", "updates", "custom", "messages")
             for e in browser.events(lane)]  # fmt: skip
    assert sorted(ids(every)) == list(range(1, len(every) + 1))
    assert int(browser.text("#event-count")) == len(every)
    assert browser.text("#ttfe").endswith(" ms") and browser.text("#rate").endswith("/s")

    # The same on protocol v2: its lifecycle lane, its token deltas.
    browser.start("agent", question, protocol="v2")
    browser.until(ENDED)
    assert [e["summary"] for e in browser.events("lifecycle")] == ["running", "completed"]
    assert browser.text(".lane[data-lane=messages] .tokens") == "echo: alpha beta gamma"
    v2 = [e for lane in ("lifecycle", "values", "custom", "messages") for e in browser.events(lane)]
    assert len({e["id"] for e in v2}) == len(v2)

    # Subgraphs on: the child graph's events in lanes of their own namespace.
    browser("check", selector="#subgraphs")
    browser.start("subgraphs", {}, target="stateless")
    browser.until(ENDED)
    lanes = browser.js("[...document.querySelectorAll('.lane')].map(l => l.dataset.lane)")
    assert "updates" in lanes
    assert any(lane.startswith("updates @ child:") for lane in lanes), lanes
    browser("check", selector="#subgraphs", on=False)

    # A run that fails says so in the server's words, on either protocol.
    browser.start("failing", {}, target="stateless")
    browser.until(ENDED)
    assert browser.text("#run-error") == "run error: ValueError: boom: intentional failure"
    browser.start("failing", {}, protocol="v2")
    browser.until(ENDED)
    assert browser.text("#run-error") == "run failed: boom: intentional failure"


def test_join_a_background_run_live_then_from_its_first_event_then_cancel_one(
    server: ServerProcess, browser: Browser
) -> None:
    browser.open(f"{server.url}/inspector/")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "ticker", "input": {"n": 120, "delay": 0.02},
                "stream_mode": ["values", "custom"], "stream_resumable": True}  # fmt: skip
        run = http.post(f"/threads/{thread}/runs", json=body).json()["run_id"]
        # Found in the threads view, joined from there: live, from wherever the run is.
        browser("click", selector="#tab-threads")
        browser("click", selector=f".thread[data-thread='{thread}'] button")
        browser("click", selector=f"#thread-runs .run[data-run='{run}'] button.join")
        browser.until(ENDED)
        assert browser.text("#watch-run") == run
        live = browser.events("custom")
        assert ticks(live)[-1] == 119
        assert ticks(live) == list(range(ticks(live)[0], 120))  # from when it joined, in order
        assert ids(live) == list(range(ids(live)[0], ids(live)[0] + len(live)))

        # Joined again from before its first event: all of it, replayed from the log.
        browser("fill", selector="#join-thread", value=thread)
        browser("fill", selector="#join-run", value=run)
        browser("fill", selector="#join-from", value="0")
        browser("click", selector="#join")
        browser.until(ENDED)
        assert ticks(browser.events("custom")) == list(range(120))
        # And from an id in the middle: only what came after it.
        middle = ids(live)[len(live) // 2]
        browser("fill", selector="#join-from", value=str(middle))
        browser("click", selector="#join")
        browser.until(ENDED)
        after = [e for e in live if int(e["id"]) > middle]
        assert browser.events("custom") and ticks(browser.events("custom")) == ticks(after)
        assert min(ids(browser.events("custom"))) > middle

        # A long run started from the page, cancelled from the page.
        browser.start("ticker", {"n": 2000, "delay": 0.01})
        # Its own events: until the page watches the new run, its lanes may still hold the
        # joined run's (a cancel pressed then went to that run, ended: 404, and the new run
        # ran on past the wait).
        browser.until(
            f"!['{run}', '—'].includes(document.querySelector('#watch-run').textContent) && "
            "document.querySelectorAll('.lane[data-lane=custom] .event').length >= 3"
        )
        browser("click", selector="#cancel")
        thread, run = browser.text("#watch-thread"), browser.text("#watch-run")
        try:
            browser.until(ENDED)
        except AssertionError as failed:  # was the cancel lost, or the stream's end?
            stored = http.get(f"/threads/{thread}/runs/{run}").json().get("status")
            raise AssertionError(f"{failed}; the server has the run {stored}") from None
        http.get(f"/threads/{thread}/runs/{run}/join")  # settled, as storage has it
        assert http.get(f"/threads/{thread}/runs/{run}").json()["status"] == "interrupted"
        assert browser.count("custom") < 2000


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_drop_and_resume_loses_nothing(
    server: ServerProcess, browser: Browser, protocol: str
) -> None:
    browser.open(f"{server.url}/inspector/")
    browser.start("ticker", {"n": 40, "delay": 0.02}, protocol=protocol)
    browser.until("document.querySelectorAll('.lane[data-lane=custom] .event').length >= 5")
    browser("click", selector="#drop")
    browser.until("document.querySelector('#status').dataset.status === 'dropped'")
    before = browser.count("custom")
    thread, run = browser.text("#watch-thread"), browser.text("#watch-run")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.get(f"/threads/{thread}/runs/{run}/join")  # the run ends while nobody listens
    assert browser.count("custom") == before < 40

    browser("click", selector="#resume")
    browser("waitFor", selector="#check")
    assert browser.js("document.querySelector('#check').dataset.missing") == "0"
    assert browser.js("document.querySelector('#check').dataset.repeated") == "0"
    assert ticks(browser.events("custom")) == list(range(40))
    assert browser.text("#connections") == "2"
    lanes = browser.js("[...document.querySelectorAll('.lane')].map(l => l.dataset.lane)")
    shown = [int(e["id"]) for lane in lanes for e in browser.events(lane)]
    assert len(set(shown)) == len(shown)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_answer_an_interrupt_then_browse_the_thread(
    server: ServerProcess, browser: Browser, protocol: str
) -> None:
    browser.open(f"{server.url}/inspector/")
    browser.start("hitl", {"question": "ship it?"}, protocol=protocol)
    browser("waitFor", selector="#interrupt")
    assert json.loads(browser.text("#interrupt-value")) == {"question": "ship it?"}
    thread = browser.text("#watch-thread")
    browser("fill", selector="#interrupt-answer", value='"sure"')
    browser("click", selector="#interrupt-send")
    browser.until(ENDED)
    assert json.loads(browser.events("values")[-1]["summary"])["answer"] == "sure!"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # Its stream ends just before storage has it ended: wait for that.
        http.get(f"/threads/{thread}/runs/{browser.text('#watch-run')}/join")
        assert http.get(f"/threads/{thread}/state").json()["values"]["answer"] == "sure!"

    browser("click", selector="#tab-threads")
    browser("click", selector=f".thread[data-thread='{thread}'] button")
    browser("waitFor", selector=f"#thread-detail[data-thread='{thread}']")
    assert json.loads(browser.text("#thread-state"))["values"]["answer"] == "sure!"
    statuses = browser.js(
        "[...document.querySelectorAll('#thread-runs .run')].map(r => r.dataset.status)"
    )
    assert statuses == ["success", "success"]  # the one that asked, the one that went on
    assert browser.js("document.querySelectorAll('#thread-history li').length") >= 3


def test_an_auth_protected_server_with_and_without_credentials(
    browser: Browser, tmp_path: Path
) -> None:
    # Embedded only: the gate sits at the API's edge, the same code on both deployments.
    key = f"key-{uuid.uuid4().hex}"
    with serving(
        "embedded", EXAMPLES, tmp_path / "keys.sqlite", env={"AGENTSTREAM_API_KEYS": key}
    ) as (url,):
        refused = httpx.post(f"{url}/assistants/search", json={}).json()["detail"]
        assert httpx.get(f"{url}/inspector/inspector.js").status_code == 200  # no key needed
        browser("open", url=f"{url}/inspector/")  # the page itself needs no key
        browser("waitFor", selector="#error:not([hidden])")
        assert browser.text("#error") == f"HTTP 401: {refused}"
        assert browser.js("document.querySelectorAll('#assistant option').length") == 0

        browser("fill", selector="#api-key", value=key)
        browser("click", selector="#connect")
        browser.until("document.querySelectorAll('#assistant option').length > 0")
        assert browser.js("document.querySelector('#error').hidden")
        browser.start("ticker", {"n": 3}, target="stateless")
        browser.until(ENDED)
        assert ticks(browser.events("custom")) == [0, 1, 2]

    # The user's own auth handler (tests/auth_app), its token in a header of the user's choosing.
    with serving("embedded", AUTH_APP, tmp_path / "handler.sqlite") as (url,):
        browser("open", url=f"{url}/inspector/")
        browser("fill", selector="#headers", value="Authorization: Bearer banned-token")
        browser("click", selector="#connect")
        browser.until("document.querySelector('#error').textContent.includes('403')")
        assert browser.text("#error") == "HTTP 403: This account is suspended"
        browser("fill", selector="#headers", value="Authorization: Bearer alice-token")
        browser("click", selector="#connect")
        browser.until("document.querySelectorAll('#assistant option').length > 0")
        browser.start("ticker", {"n": 2}, target="new")
        browser.until(ENDED)
        assert ticks(browser.events("custom")) == [0, 1]


async def test_an_unbuilt_inspector_says_how_to_build_it(tmp_path: Path) -> None:
    async def api(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the inspector's paths never reach the API")

    app = InspectorFiles(api, directory=tmp_path / "missing")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as http:
        moved = await http.get("/inspector")
        page = await http.get("/inspector/")
    assert (moved.status_code, moved.headers["location"]) == (307, "/inspector/")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "npm run build" in page.text and "The inspector is not built" in page.text


async def test_the_inspector_can_be_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "langgraph.json"
    examples = ROOT / "examples"
    config.write_text(
        json.dumps(
            {
                "dependencies": [str(examples)],
                "graphs": {"agent": f"{examples / 'agent.py'}:graph"},
                "http": {"disable_inspector": True},
            }
        )
    )
    app = create_app(Settings(config=config, database=str(tmp_path / "db.sqlite")))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as http:
        page = await http.get("/inspector/")
    assert page.status_code == 404
    assert page.json() == {"detail": "Not Found"}
