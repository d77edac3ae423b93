"""Server CPU per run: the figure each change of the hot path was judged by, A/B.

    .venv/bin/python -m benchmarks.cpu [--concurrent 200] [--ticks 20] [--seconds 8]
        [--client http|sdk] [--messages | --threaded] [--py-spy out.txt] [--distributed]
        [--split] [--tree DIR]

Starts `agentstream dev` pinned to one core, drives it from the other with rounds of
`--concurrent` stateless `ticker` runs (`--ticks` custom events each, 20 by default; the
benchmark's custom-event figure is `--concurrent 1 --ticks 20000`) for `--seconds`, and prints
runs/s, the server's CPU use and its CPU time per run, read from /proc/<pid>/stat (user +
system, all threads), and the system calls that read and write per run (/proc/<pid>/io:
sockets, SQLite's files, the loop's wake-ups alike). With --messages, one `agent` run after
another streaming a 1,000-token `messages-tuple` reply instead, per event. With --threaded,
rounds of `--concurrent` clients each creating a thread and streaming the `agent` graph on it
(`values`: every step checkpointed), the benchmark's threaded scenario, per run, and how long
after its last event each stream closed (and its first event and its close after its request: a
worker that holds fewer runs moves the wait from the one to the other). With --py-spy, py-spy
(not a dependency: `pip install py-spy`) records the server meanwhile, `--gil` samples in raw
(collapsed) form. With --distributed, also the PostgreSQL statements and Redis round trips per
run (the server's /metrics counters, ours and LangGraph's checkpointer's). With --split,
`agentstream serve` and `agentstream worker` on PostgreSQL + Redis instead, both on the
server's core: the CPU and the counters are both processes' (the worker serves its /metrics on
AGENTSTREAM_METRICS_PORT), and each one's share of the CPU is printed too; --py-spy then
records the worker into out.1.txt. With --tree, the server runs another checkout's
`agentstream` (`git worktree add /tmp/old <commit>`): the other side of an A/B, driven by this
checkout's client. (Run from the main checkout, `PYTHONPATH=/tmp/old` alone does not do it: the
server's working directory, this checkout, comes first on its path.)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.clients import make_client
from benchmarks.harness import (
    ServerProcess,
    cpu_split,
    cpu_times,
    free_port,
    freeze_client,
    io_calls,
    median,
    percentile,
    pin_self,
    start_server,
)
from benchmarks.run import distributed_env, read_service_counters
from benchmarks.scenarios import AGENT_INPUT, ThreadedStream, stream_on_a_new_thread


def _counters(url: str) -> dict[str, float]:
    """The server's service-request counters, from its /metrics."""
    return read_service_counters(httpx.get(f"{url}/metrics", timeout=10).text)


async def _drive(
    url: str,
    kind: str,
    concurrent: int,
    seconds: float,
    messages: bool,
    ticks: int = 20,
    threaded: bool = False,
    timings: dict[str, list[float]] | None = None,
) -> int:
    """Runs (or, with messages, events) completed in `seconds`; with threaded, each stream's
    times go into `timings`: its first event after its request ("first"), its close after its
    last event ("close") and its close after its request ("whole")."""
    client = make_client(kind, url)
    done = 0

    async def ticker() -> int:
        count = 0
        async for event, _ in client.stream("ticker", {"n": ticks}, ["custom"]):
            count += event == "custom"
        if count != ticks:
            raise RuntimeError(f"a run streamed {count} of {ticks} events")
        return 1

    async def agent() -> int:
        config = {"configurable": {"repeat": 1000}}
        count = 0
        async for event, _ in client.stream("agent", AGENT_INPUT, ["messages-tuple"], config):
            count += event.startswith("messages")
        return count

    async def threaded_agent() -> int:
        began = time.perf_counter()
        times = ThreadedStream(began, began)
        await stream_on_a_new_thread(client, times)
        if times.errors:
            raise RuntimeError("a threaded run ended in error")
        if times.first is None or times.last is None:
            raise RuntimeError("a threaded run streamed no values")
        if timings is not None:
            timings["first"].append(times.first - times.asked)
            timings["close"].append(times.closed - times.last)
            timings["whole"].append(times.closed - times.asked)
        return 1

    one = threaded_agent if threaded else ticker
    try:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if messages:
                done += await agent()
            else:
                done += sum(await asyncio.gather(*(one() for _ in range(concurrent))))
    finally:
        await client.aclose()
    return done


def _start(
    args: argparse.Namespace, tmp: str, cpus: set[int] | None
) -> list[tuple[ServerProcess, str]]:
    """The server's processes with the URL of each one's /metrics, the API's first: `dev`, or
    with --split `serve` and a `worker` serving its metrics (AGENTSTREAM_METRICS_PORT), both on
    the server's core(s)."""
    # A fresh database and a flushed Redis database, as the benchmark's distributed columns.
    env = asyncio.run(distributed_env("agentstream_cpu")) if args.distributed else {}
    tree = None if args.tree is None else args.tree.resolve()
    if not args.split:
        server = start_server(Path(tmp) / "cpu.sqlite", cpus=cpus, env=env, tree=tree)
        return [(server, server.url)]
    port = free_port()
    worker_env = {**env, "AGENTSTREAM_METRICS_PORT": str(port)}
    worker = start_server(None, cpus=cpus, env=worker_env, command="worker", tree=tree)
    try:
        api = start_server(None, cpus=cpus, env=env, command="serve", tree=tree)
    except BaseException:
        worker.stop()
        raise
    return [(api, api.url), (worker, f"http://127.0.0.1:{port}")]


def _all_counters(processes: list[tuple[ServerProcess, str]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for _, url in processes:
        for key, value in _counters(url).items():
            total[key] = total.get(key, 0.0) + value
    return total


def _all_cpu(processes: list[tuple[ServerProcess, str]]) -> list[tuple[float, float]]:
    return [cpu_times(process.pid) for process, _ in processes]


def _all_io(processes: list[tuple[ServerProcess, str]]) -> tuple[int, int]:
    calls = [io_calls(process.pid) for process, _ in processes]
    return sum(r for r, _ in calls), sum(w for _, w in calls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--client", choices=("http", "sdk"), default="http")
    parser.add_argument("--messages", action="store_true")
    parser.add_argument("--threaded", action="store_true", help="create a thread, stream agent")
    parser.add_argument("--ticks", type=int, default=20, help="custom events per ticker run")
    parser.add_argument("--py-spy", type=Path, default=None, dest="py_spy")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--split", action="store_true", help="serve + worker (with --distributed)")
    parser.add_argument("--tree", type=Path, default=None, help="the checkout the server runs")
    args = parser.parse_args(argv)
    args.distributed = args.distributed or args.split
    server_cpus, bench_cpus = cpu_split()
    pin_self(bench_cpus)
    with tempfile.TemporaryDirectory(prefix="agentstream-cpu-") as tmp:
        processes = _start(args, tmp, server_cpus)
        url = processes[0][0].url
        try:
            timings: dict[str, list[float]] = {"first": [], "close": [], "whole": []}

            def drive(seconds: float) -> int:
                return asyncio.run(
                    _drive(
                        url, args.client, args.concurrent, seconds, args.messages, args.ticks,
                        args.threaded, timings,
                    )
                )  # fmt: skip

            # Threaded runs hold more connections: the pool grows (a connection at a time)
            # during the warm-up, not while measuring.
            drive(3.0 if args.threaded else 1.0)
            spies = []
            if args.py_spy is not None:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                for n, (process, _) in enumerate(processes):
                    # The worker's samples beside the API's: out.txt, out.1.txt
                    out = args.py_spy.with_suffix(f".{n}{args.py_spy.suffix}") if n else args.py_spy
                    spies.append(subprocess.Popen(
                        [exe, "record", "-p", str(process.pid), "-f", "raw", "-r", "500", "--gil",
                         "--nonblocking", "-o", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    ))  # fmt: skip
                time.sleep(1.0)
            for figures in timings.values():
                figures.clear()
            freeze_client()
            counted = _all_counters(processes)
            io_before = _all_io(processes)
            before, start = _all_cpu(processes), time.perf_counter()
            done = drive(args.seconds)
            after, wall = _all_cpu(processes), time.perf_counter() - start
            io_after = _all_io(processes)
            requests = {k: v - counted.get(k, 0.0) for k, v in _all_counters(processes).items()}
            for spy in spies:
                spy.send_signal(2)
                spy.wait(30)
        finally:
            for process, _ in processes:
                process.stop()
    spent = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
    system = sum(s for _, s in spent)
    cpu = sum(u + s for u, s in spent)
    per = f"{1e6 * cpu / done:.1f} us" if args.messages else f"{1e3 * cpu / done:.3f} ms"
    unit = "event" if args.messages else "run"
    print(
        f"{args.client}: {done / wall:,.1f} {unit}s/s, server CPU {100 * cpu / wall:.0f}%, "
        f"{per} of server CPU per {unit} ({100 * system / cpu if cpu else 0:.0f}% of it in the "
        "kernel)"
    )
    if done:
        reads, writes = (b - a for a, b in zip(io_before, io_after, strict=True))
        calls = f"{reads / done:.3g} reading and {writes / done:.3g} writing system calls"
        print(f"per {unit}: {calls}")
    if args.split and done:
        named = zip(("serve", "worker"), spent, strict=True)
        shares = ", ".join(f"{name} {1e3 * (u + s) / done:.3f} ms" for name, (u, s) in named)
        print(f"per {unit}: {shares}")
    if args.threaded and timings["close"]:
        for name, key in (
            ("stream close after its last event", "close"),
            ("first event after the request", "first"),
            ("the whole stream, request to close", "whole"),
        ):
            figures = timings[key]
            p50, p99 = 1e3 * median(figures), 1e3 * percentile(figures, 99)
            print(f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if not args.messages and not args.threaded and done:
        print(f"per custom event: {1e6 * cpu / (done * args.ticks):.1f} us of server CPU")
    if args.distributed and done:
        statements = requests.get("postgres_statements", 0.0) / done
        trips = requests.get("redis_round_trips", 0.0) / done
        print(f"per {unit}: {statements:.1f} PostgreSQL statements, {trips:.1f} Redis round trips")


if __name__ == "__main__":
    main()
