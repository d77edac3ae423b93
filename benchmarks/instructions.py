"""Instructions the server executes per run and per event, counted by valgrind's callgrind.

    .venv/bin/python -m benchmarks.instructions
        [--scenario custom|messages|runs|threaded|v2-sse|v2-websocket]
        [--tree DIR] [--rounds N] [--concurrent N] [--distributed]

A count, not a time: the same code, inputs and hash seed give the same figure within a few
tenths of a percent whatever else the machine is doing, so an A/B of a change reads true on a
machine whose timings drift by half within a run. Starts `agentstream dev` under callgrind
(instrumentation off), warms it up with two rounds, counts the rounds that follow (raw HTTP,
stateless runs: `custom`, one 20,000-event ticker run a round; `messages`, one 1,000-repeat
agent reply a round; `runs`, `--concurrent` 20-event ticker runs at once a round; `threaded`,
`--concurrent` clients at once each creating a thread and streaming the agent on it; `v2-sse`,
`v2-websocket`, the same reply through the Python client's protocol v2 `threads.stream`, per
token, against `astream_events(version="v3")`), and prints
the server's instructions per run and per event beside those of the same graph run in-process
(`astream` on uvloop with the server's collector settings, also under callgrind), and their
ratio. `--distributed` runs `agentstream dev` on PostgreSQL + Redis instead of SQLite (the
databases of `benchmarks.run --distributed`; the services' own work is not counted).
`--tree DIR` puts DIR first on the server's path: a checkout of another commit
(`git worktree add /tmp/old HEAD~1`) for the A side. Needs valgrind (Debian's package); the
server runs about fifty times slower under it.

Not counted: the kernel (socket writes, wake-ups), waiting, and the cost of a cache miss; the
benchmark's timings are still the judge of speed, this is the judge of work done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import free_port
from benchmarks.run import distributed_env
from benchmarks.scenarios import AGENT_INPUT

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

SCENARIOS: dict[str, dict[str, Any]] = {
    "custom": {"graph": "ticker", "size": 20_000, "concurrent": 1, "rounds": 2},
    "messages": {"graph": "agent", "size": 1_000, "concurrent": 1, "rounds": 3},
    "runs": {"graph": "ticker", "size": 20, "concurrent": 10, "rounds": 5},
    # The benchmark's threaded scenario: each client creates a thread and streams the agent on
    # it (`values`, every step checkpointed; in-process, to SQLite as the embedded server).
    "threaded": {"graph": "agent", "size": 1, "concurrent": 10, "rounds": 5, "threaded": True},
    # Protocol v2: the agent's reply through the Python client's `threads.stream`, per token
    # (in-process: the same reply's text deltas through `astream_events(version="v3")`).
    "v2-sse": {"graph": "agent", "size": 1_000, "concurrent": 1, "rounds": 3, "v2": "sse"},
    "v2-websocket": {
        "graph": "agent",
        "size": 1_000,
        "concurrent": 1,
        "rounds": 3,
        "v2": "websocket",
    },
}

# The server's collector settings, as the server sets them (app.tune_gc, with
# AGENTSTREAM_GC_THRESHOLD read as the server reads it): the in-process scripts' first step.
_TUNE_GC = """from agentstream.app import tune_gc
from agentstream.settings import Settings
tune_gc(Settings.from_env().gc_threshold)
"""

# How an in-process script drives its once(): `rounds` of `concurrent` at a time, on uvloop
# with the server's collector settings.
_ROUNDS = (
    _TUNE_GC
    + """async def main():
    for _ in range({rounds}):
        await asyncio.gather(*(once() for _ in range({concurrent})))
uvloop.run(main())
"""
)


# The in-process side: `k` runs of the scenario's graph, as the benchmark's baseline runs it.
_INPROCESS = (
    """
import asyncio, sys
sys.path.insert(0, {examples!r})
import uvloop
from {graph} import graph
async def once():
    async for _ in graph.astream({input!r}, {config!r}, stream_mode={mode!r}):
        pass
"""
    + _ROUNDS
)


# The in-process side of a v2 scenario: the reply's text deltas through astream_events v3.
_INPROCESS_V2 = (
    """
import asyncio, sys, warnings
sys.path.insert(0, {examples!r})
sys.path.insert(0, {root!r})
import uvloop
from {graph} import graph
from benchmarks.scenarios import _tokens
async def once():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = await graph.astream_events({input!r}, {config!r}, version="v3")
    async with stream as run:
        await _tokens(run.messages, 0.0)
"""
    + _ROUNDS
)


# The in-process side of the threaded scenario.
_INPROCESS_THREADED = (
    """
import asyncio, sys, tempfile, uuid
from pathlib import Path
sys.path.insert(0, {examples!r})
import uvloop
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from {graph} import graph
"""
    + _TUNE_GC
    + """async def main():
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncSqliteSaver.from_conn_string(str(Path(tmp) / "c.sqlite")) as saver:
            threaded = graph.copy(update={{"checkpointer": saver}})
            async def once():
                config = {{"configurable": {{"thread_id": str(uuid.uuid4())}}}}
                async for _ in threaded.astream({input!r}, config, stream_mode="values"):
                    pass
            await once()  # the saver's tables made
            for _ in range({rounds}):
                await asyncio.gather(*(once() for _ in range({concurrent})))
uvloop.run(main())
"""
)


async def _drive_v2(url: str, size: int, rounds: int, transport: str) -> int:
    """`rounds` replies through the Python client's v2 `threads.stream`; the last one's tokens."""
    from langgraph_sdk import get_client

    from benchmarks.scenarios import _tokens

    client = get_client(url=url, timeout=1200)
    config = {"configurable": {"repeat": size}}
    tokens = 0
    try:
        for _ in range(rounds):
            async with client.threads.stream(assistant_id="agent", transport=transport) as thread:  # type: ignore[arg-type]
                await thread.run.start(input=AGENT_INPUT, config=config)
                tokens, _ = await _tokens(thread.messages, 0.0)
    finally:
        await client.http.client.aclose()
    return tokens


def _body(graph: str, size: int, threaded: bool = False) -> dict[str, Any]:
    if threaded:  # the benchmark's threaded scenario: the agent's every step
        return {"assistant_id": graph, "input": AGENT_INPUT, "stream_mode": ["values"]}
    if graph == "agent":
        return {
            "assistant_id": "agent",
            "input": AGENT_INPUT,
            "stream_mode": ["messages-tuple"],
            "config": {"configurable": {"repeat": size}},
        }
    return {"assistant_id": "ticker", "input": {"n": size}, "stream_mode": ["custom"]}


async def _drive(
    url: str, body: dict[str, Any], rounds: int, concurrent: int, threaded: bool = False
) -> int:
    """Runs `rounds` rounds of `concurrent` streams (threaded: each on a thread it creates
    first); returns the events of the last stream."""
    events = 0

    async def one(client: httpx.AsyncClient) -> int:
        count = 0
        path = "/runs/stream"
        if threaded:
            thread_id = (await client.post("/threads", json={})).json()["thread_id"]
            path = f"/threads/{thread_id}/runs/stream"
        async with client.stream("POST", path, json=body) as response:
            async for chunk in response.aiter_bytes():
                count += chunk.count(b"\r\nid: ")
        return count

    limits = httpx.Limits(max_connections=concurrent)
    async with httpx.AsyncClient(base_url=url, timeout=1200, limits=limits) as client:
        for _ in range(rounds):
            events = (await asyncio.gather(*(one(client) for _ in range(concurrent))))[-1]
    return events


def _callgrind(out: Path, *, at_start: bool) -> list[str]:
    start = "yes" if at_start else "no"
    return [
        "valgrind",
        "--tool=callgrind",
        f"--instr-atstart={start}",
        f"--callgrind-out-file={out}",
    ]


def _totals(out: Path) -> int:
    total = 0
    for part in out.parent.glob(out.name + "*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def server_instructions(
    graph: str,
    size: int,
    rounds: int,
    concurrent: int,
    tree: str | None,
    services: dict[str, str] | None = None,
    keep: Path | None = None,
    v2: str | None = None,
    threaded: bool = False,
) -> tuple[int, int]:
    """(instructions, events per run) of `rounds` rounds on a fresh server under callgrind;
    with `keep`, its callgrind files are copied there (for callgrind_annotate)."""
    work = Path(tempfile.mkdtemp(prefix="agentstream-ir-"))
    out = work / "callgrind.out"
    port = free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0", "AGENTSTREAM_SHUTDOWN_GRACE_SECONDS": "1"}
    env.update(services or {})
    if tree:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        *_callgrind(out, at_start=False),
        sys.executable,
        "-m",
        "agentstream",
        "dev",
        "--config",
        str(EXAMPLES / "langgraph.json"),
        "--port",
        str(port),
        "--database",
        str(work / "db.sqlite"),
        "--no-reload",
        "--server-log-level",
        "WARNING",
    ]
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=EXAMPLES, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(work / 'server.log').read_text()}")
            time.sleep(0.5)
        body = _body(graph, size, threaded)

        def drive(k: int) -> int:
            if v2 is not None:
                return asyncio.run(_drive_v2(url, size, k, v2))
            return asyncio.run(_drive(url, body, k, concurrent, threaded))

        drive(2)  # warm-up, not counted
        _control(proc.pid, "-i", "on")
        events = drive(rounds)
        _control(proc.pid, "-i", "off")
        _control(proc.pid, "-d")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for part in out.parent.glob(out.name + "*"):
                shutil.copy(part, keep / part.name)
        return _totals(out), events
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def inprocess_instructions(
    graph: str, size: int, rounds: int, concurrent: int, v2: bool = False, threaded: bool = False
) -> int:
    """Instructions of `rounds` rounds in-process: two runs of the script, one round apart."""
    mode = "messages" if graph == "agent" else "custom"
    graph_input = AGENT_INPUT if graph == "agent" else {"n": size}
    config = {"configurable": {"repeat": size}} if graph == "agent" else {}

    def count(k: int) -> int:
        template = _INPROCESS_V2 if v2 else _INPROCESS_THREADED if threaded else _INPROCESS
        script = template.format(
            examples=str(EXAMPLES),
            root=str(ROOT),
            graph=graph,
            input=graph_input,
            config=config,
            mode=mode,
            rounds=k,
            concurrent=concurrent,
        )
        work = Path(tempfile.mkdtemp(prefix="agentstream-ir-"))
        out = work / "callgrind.out"
        try:
            cmd = [*_callgrind(out, at_start=True), sys.executable, "-c", script]
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            return _totals(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return count(1 + rounds) - count(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="custom")
    parser.add_argument("--tree", help="a directory put first on the server's path")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--concurrent", type=int)
    parser.add_argument("--distributed", action="store_true", help="on PostgreSQL + Redis")
    parser.add_argument("--keep", type=Path, help="a directory to keep the server's counts in")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    scenario = SCENARIOS[args.scenario]
    rounds = args.rounds or scenario["rounds"]
    concurrent = args.concurrent or scenario["concurrent"]
    graph, size = scenario["graph"], scenario["size"]
    services = asyncio.run(distributed_env("agentstream_bench_ir")) if args.distributed else None
    v2, threaded = scenario.get("v2"), bool(scenario.get("threaded"))
    server, events = server_instructions(
        graph, size, rounds, concurrent, args.tree, services, args.keep, v2, threaded
    )
    runs = rounds * concurrent
    inprocess = inprocess_instructions(
        graph, size, rounds, concurrent, v2=v2 is not None, threaded=threaded
    )
    print(f"{args.scenario}: {runs} runs of {events} events, {concurrent} at once")
    for side, total in (("server", server), ("in-process", inprocess)):
        per_run = total / runs
        print(f"{side:>10}: {per_run:,.0f} instructions per run, {per_run / events:,.0f} per event")
    print(f"ratio (in-process / server, as the benchmark's rates): {inprocess / server:.2f}x")


if __name__ == "__main__":
    main()
