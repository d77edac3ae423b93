"""The terminal client (`agentstream stream`, `join`, `runs`) run as a process against a real
server of each deployment: what it prints, in what order, and its exit status."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstream.cli import main
from tests.conftest import ROOT, ServerProcess, start_server


def command(server: ServerProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "agentstream", *args, "--url", server.url]


def background_run(server: ServerProcess, graph: str, body: dict[str, Any]) -> tuple[str, str]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        run = http.post(f"/threads/{thread}/runs", json={"assistant_id": graph, **body})
        assert run.status_code == 200, run.text
        return thread, run.json()["run_id"]


@dataclass
class Printed:
    """What each client command printed, and the ids they were given."""

    done: dict[str, subprocess.CompletedProcess[str]]
    ids: dict[str, str]


def run_all(
    commands: dict[str, list[str]], envs: dict[str, dict[str, str]] | None = None
) -> dict[str, subprocess.CompletedProcess[str]]:
    """The client commands at once (each is a Python start-up, the slow part), then their
    outputs. `envs` adds to a command's environment, which holds no AGENTSTREAM_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    procs = {
        name: subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**env, **(envs or {}).get(name, {})},
        )
        for name, argv in commands.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.fixture(scope="module")
def printed(server: ServerProcess) -> Printed:
    ids: dict[str, str] = {}
    ids["thread"], ids["ticked"] = background_run(server, "ticker", {"input": {"n": 1}})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # Queued behind the first run of the thread: once it answers, both have ended.
        failed = http.post(
            f"/threads/{ids['thread']}/runs/wait", json={"assistant_id": "failing", "input": {}}
        )
        assert failed.status_code == 200
        runs = http.get(f"/threads/{ids['thread']}/runs").json()
    ids["failed"] = next(r["run_id"] for r in runs if r["run_id"] != ids["ticked"])
    ticker = {"input": {"n": 5, "delay": 0.05}, "stream_mode": ["custom"]}
    ids["join_thread"], ids["join_run"] = background_run(server, "ticker", ticker)
    ids["fail_thread"], ids["fail_run"] = background_run(server, "failing", {"input": {}})
    message = {"messages": [{"role": "user", "content": SAID}]}
    commands = {
        "stream": command(server, "stream", "agent", "--input", json.dumps(message)),
        "failing": command(server, "stream", "failing", "--input", "{}", "--mode", "updates"),
        "join": command(server, "join", ids["join_thread"], ids["join_run"], "--replay"),
        "runs": command(server, "runs", ids["thread"]),
    }
    if embedded(server):  # what the client alone decides is checked once
        commands |= {
            "refused": command(server, "stream", "no-such-graph", "--input", "{}"),
            "join_failed": command(server, "join", ids["fail_thread"], ids["fail_run"], "--replay"),
            "run": command(server, "runs", ids["thread"], ids["ticked"]),
            "recent": command(server, "runs"),
        }
    return Printed(run_all(commands), ids)


def embedded(server: ServerProcess) -> bool:
    return server.database.suffix == ".sqlite"


# The client's own behaviour (rendering, wording, the terminal) does not depend on the
# deployment behind the API: those tests run on the embedded server only.
embedded_only = pytest.mark.parametrize("server", ["embedded"], indirect=True)


SAID = "alpha beta gamma delta"


def test_stream_renders_tokens_updates_and_custom_events_in_order(printed: Printed) -> None:
    done = printed.done["stream"]
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run ")
    assert lines[1:] == [
        '◆ {"progress": "thinking", "step": 1}',
        f"ai (think): echo: {SAID}",  # the reply's tokens, joined on one line in order
        '◆ {"progress": "done", "step": 2}',
        f'● think {{"messages": ["ai: echo: {SAID}"]}}',
        "ai (finish): bye",
        '● finish {"messages": ["ai: bye"]}',
    ]
    assert "waiting" not in done.stdout + done.stderr, "no spinner when the output is a pipe"


def test_a_failed_run_prints_its_error_and_exits_1(printed: Printed) -> None:
    done = printed.done["failing"]
    assert done.returncode == 1
    assert done.stdout.splitlines()[1:] == ['● first {"x": 1}']
    assert done.stderr.strip() == "error: ValueError: boom: intentional failure"


def test_join_replays_a_background_run_then_reports_its_status(printed: Printed) -> None:
    done, run = printed.done["join"], printed.ids["join_run"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"run {run}",
        *[f'◆ {{"tick": {i}}}' for i in range(5)],
        f"run {run} success",
    ]


@embedded_only
def test_joining_a_failed_run_exits_1(printed: Printed) -> None:
    done = printed.done["join_failed"]
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == f"run {printed.ids['fail_run']} error"
    assert "error: ValueError: boom: intentional failure" in done.stderr


def test_runs_lists_a_threads_runs(printed: Printed) -> None:
    listed, ids = printed.done["runs"], printed.ids
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["thread", "run", "assistant", "status", "created"]
    assert [row[:4] for row in rows[1:]] == [
        [ids["thread"], ids["failed"], "failing", "error"],
        [ids["thread"], ids["ticked"], "ticker", "success"],
    ]


@embedded_only
def test_runs_lists_the_latest_threads_runs(printed: Printed) -> None:
    listed, ids = printed.done["recent"], printed.ids
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[:4] for line in listed.stdout.splitlines()]
    assert rows[0] == ["thread", "run", "assistant", "status"]
    assert [ids["thread"], ids["failed"], "failing", "error"] in rows
    assert [ids["join_thread"], ids["join_run"], "ticker"] in [row[:3] for row in rows]


@embedded_only
def test_runs_shows_one_run(printed: Printed) -> None:
    shown, ids = printed.done["run"], printed.ids
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert (run["run_id"], run["status"], run["kwargs"]["input"]) == (
        ids["ticked"], "success", {"n": 1},
    )  # fmt: skip


@embedded_only
def test_a_refused_request_is_one_line_and_exits_2(printed: Printed) -> None:
    done = printed.done["refused"]
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("agentstream: POST /runs/stream: 422 Invalid assistant"), (
        done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--input", "{not json"], "argument --input: not valid JSON"),
        (["--mode", "tokens"], "argument --mode: unknown stream mode 'tokens'"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    args: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stream", "agent", *args, "--url", "http://127.0.0.1:1"])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


@embedded_only
@pytest.mark.parametrize(
    ("mode", "label"), [("messages-tuple", b"ai (think): "), ("messages", b"ai: ")]
)
def test_tokens_are_printed_as_they_arrive(server: ServerProcess, mode: str, label: bytes) -> None:
    # Five tokens 0.1 s apart: the reply's line is seen growing, not written once at the end.
    body = {"messages": [{"role": "user", "content": "a b c d"}]}
    config = {"configurable": {"delay": 0.1}}
    args = ["stream", "agent", "--input", json.dumps(body), "--config", json.dumps(config)]
    seen = b""
    partial_lines = []
    with subprocess.Popen(
        [sys.executable, "-m", "agentstream", *args, "--url", server.url, "--mode", mode],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            seen += chunk
            last = seen.rsplit(b"\n", 1)[-1]
            if last.startswith(label + b"echo:"):
                partial_lines.append(last)
    assert proc.returncode == 0
    assert label + b"echo: a b c d\n" in seen
    assert partial_lines and partial_lines[0] != label + b"echo: a b c d", partial_lines


@embedded_only
def test_a_terminal_sees_a_spinner_until_the_first_event(server: ServerProcess) -> None:
    # The spinner is drawn when the client starts waiting, so it is on the screen before the
    # run's only event (its node's update) whatever the timing.
    args = ["stream", "ticker", "--input", '{"n": 1}', "--mode", "updates"]
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentstream", *args, "--url", server.url],
        stdout=child,
        stderr=child,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"},
    )
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child side closed: the process has ended
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    assert proc.wait(30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode())  # the colours and cursor moves
    assert "waiting for the first event" in text
    assert text.index("waiting for the first event") < text.index("● tick")


def test_the_api_key_comes_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    server = start_server(tmp_path / "db.sqlite", extra_args=["--api-key", "sesame"])
    try:
        ticker = ["stream", "ticker", "--input", '{"n": 1}', "--mode", "custom"]
        done = run_all(
            {
                "flag": command(server, *ticker, "--api-key", "sesame"),
                "env": [sys.executable, "-m", "agentstream", *ticker],
                "none": command(server, *ticker),
            },
            envs={"env": {"AGENTSTREAM_URL": server.url, "AGENTSTREAM_API_KEY": "sesame"}},
        )
    finally:
        server.stop()
    for name in ("flag", "env"):
        assert done[name].returncode == 0, done[name].stderr
        assert done[name].stdout.splitlines()[1:] == ['◆ {"tick": 0}']
    assert done["none"].returncode == 2
    assert done["none"].stderr.startswith("agentstream: POST /runs/stream: 401"), done[
        "none"
    ].stderr
