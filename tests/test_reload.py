"""`agentstream dev` as `langgraph dev` users know it (issue 16): hot reload of the graphs when
a project file changes (a run in flight finishes on the old code, the next run gets the new,
threads survive), and the flags of `langgraph dev`."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentstream.cli import _parser, _settings, main
from tests.conftest import ROOT

GRAPH = """
import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from helper import VERSION


class State(TypedDict, total=False):
    gate: int
    versions: list[str]


async def work(state: State) -> dict[str, Any]:
    if state.get("gate"):  # hold the run until the test lets it go
        reader, writer = await asyncio.open_connection("127.0.0.1", state["gate"])
        await reader.read(1)
        writer.close()
    return {"versions": [*state.get("versions", []), VERSION], "gate": 0}


builder = StateGraph(State)
builder.add_node("work", work)
builder.add_edge(START, "work")
builder.add_edge("work", END)
graph = builder.compile()
"""


class DevServer:
    """`agentstream dev` on a project of its own, its output read line by line."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentstream", "dev", "--config", str(config), "--port", "0",
             *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self.wait_for("serving on ").split("serving on ", 1)[1].strip()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # the process has ended

    def wait_for(self, text: str) -> str:
        """The next line that contains `text`; fails if the process ends first."""
        while True:
            line = self.lines.get(timeout=60)
            assert line, f"agentstream dev ended before printing {text!r}"
            if text in line:
                return line

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.reader.join(20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text('VERSION = "old"\n')
    (tmp_path / "graph.py").write_text(GRAPH)
    config = tmp_path / "langgraph.json"
    config.write_text('{"dependencies": ["."], "graphs": {"versioned": "./graph.py:graph"}}')
    return config


@pytest.fixture
def dev(project: Path) -> Iterator[DevServer]:
    server = DevServer(project, "--database", str(project.parent / "db.sqlite"))
    server.wait_for("reloading graphs when a .py file changes")
    yield server
    server.stop()


def test_reload_serves_new_code_to_new_runs_and_lets_running_ones_finish(
    project: Path, dev: DevServer
) -> None:
    gate = socket.create_server(("127.0.0.1", 0))
    gate.settimeout(60)
    with httpx.Client(base_url=dev.url, timeout=60) as http, gate:
        held = http.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "versioned", "input": {"gate": gate.getsockname()[1]}}
        run = http.post(f"/threads/{held}/runs", json=body).json()["run_id"]
        conn, _ = gate.accept()  # the run is inside its node, on the old code

        (project.parent / "helper.py").write_text('VERSION = "new code"\n')
        dev.wait_for("graphs reloaded (helper.py changed)")

        fresh = http.post("/threads", json={}).json()["thread_id"]
        answer = http.post(
            f"/threads/{fresh}/runs/wait", json={"assistant_id": "versioned", "input": {}}
        )
        assert answer.json()["versions"] == ["new code"]

        conn.sendall(b"go")
        conn.close()
        finished = http.get(f"/threads/{held}/runs/{run}/join").json()
        assert finished["versions"] == ["old"], "the run in flight kept the graph it started on"

        again = http.post(
            f"/threads/{held}/runs/wait", json={"assistant_id": "versioned", "input": {}}
        )
        assert again.json()["versions"] == ["old", "new code"], "the thread's state survived"
        assert http.get(f"/threads/{held}/runs/{run}").json()["status"] == "success"


def test_a_broken_edit_keeps_the_previous_graphs_serving(project: Path, dev: DevServer) -> None:
    (project.parent / "graph.py").write_text(GRAPH.replace("async def work", "async def work("))
    line = dev.wait_for("reload failed")
    assert "still serving the previous graphs" in line and "SyntaxError" in line, line
    with httpx.Client(base_url=dev.url, timeout=60) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        answer = http.post(
            f"/threads/{thread}/runs/wait", json={"assistant_id": "versioned", "input": {}}
        )
        assert answer.json()["versions"] == ["old"]
        (project.parent / "graph.py").write_text(GRAPH.replace("VERSION]", 'VERSION, "fixed"]'))
        dev.wait_for("graphs reloaded (graph.py changed)")
        answer = http.post(
            f"/threads/{thread}/runs/wait", json={"assistant_id": "versioned", "input": {}}
        )
        assert answer.json()["versions"] == ["old", "old", "fixed"]


def test_langgraph_dev_flags() -> None:
    def settings(*args: str) -> tuple[bool, int]:
        parsed = _settings(_parser().parse_args(list(args)))
        return parsed.reload, parsed.max_concurrency

    assert settings("dev", "--n-jobs-per-worker", "3")[0] is True, "dev reloads by default"
    assert settings("dev", "--no-reload", "--n-jobs-per-worker", "3") == (False, 3)
    assert settings("dev", "--no-browser", "--max-concurrency", "5") == (True, 5)
    assert settings("serve")[0] is False, "only dev reloads"
    assert _parser().parse_args(["dev", "--server-log-level", "warning"]).server_log_level == (
        "WARNING"
    )
    with pytest.raises(SystemExit):  # argparse's usage error
        _parser().parse_args(["dev", "--server-log-level", "LOUD"])


def test_langgraph_dev_flags_that_mean_nothing_here_are_named_and_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "langgraph.json"
    with pytest.raises(SystemExit) as exited:
        main(["dev", "--config", str(missing), "--tunnel", "--debug-port", "5678"])
    assert exited.value.code == f"agentstream: no config file at {missing}"
    noted = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in noted] == [
        "ignored --debug-port",
        "ignored --tunnel",
    ]
