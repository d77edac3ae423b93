"""Server CPU per run: the figure each change of the hot path was judged by, A/B.

    .venv/bin/python -m benchmarks.cpu [--concurrent 200] [--ticks 20] [--seconds 8]
        [--client http|sdk] [--messages] [--py-spy out.txt] [--distributed]

Starts `agentstream dev` pinned to one core, drives it from the other with rounds of
`--concurrent` stateless `ticker` runs (`--ticks` custom events each, 20 by default; the
benchmark's custom-event figure is `--concurrent 1 --ticks 20000`) for `--seconds`, and prints
runs/s, the server's CPU use and its CPU time per run, read from /proc/<pid>/stat (user +
system, all threads). With --messages, one `agent` run after another streaming a 1,000-token
`messages-tuple` reply instead, per event. With --py-spy, py-spy (not a dependency: `pip install
py-spy`) records the server meanwhile, `--gil` samples in raw (collapsed) form. With
--distributed, also the PostgreSQL statements and Redis round trips per run (the server's
/metrics counters, ours and LangGraph's checkpointer's).
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

import httpx

from benchmarks.clients import make_client
from benchmarks.harness import cpu_split, pin_self, start_server
from benchmarks.run import distributed_env, read_service_counters
from benchmarks.scenarios import AGENT_INPUT


def _counters(url: str) -> dict[str, float]:
    """The server's service-request counters, from its /metrics."""
    return read_service_counters(httpx.get(f"{url}/metrics", timeout=10).text)


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _drive(
    url: str, kind: str, concurrent: int, seconds: float, messages: bool, ticks: int = 20
) -> int:
    """Runs (or, with messages, events) completed in `seconds`."""
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

    try:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if messages:
                done += await agent()
            else:
                done += sum(await asyncio.gather(*(ticker() for _ in range(concurrent))))
    finally:
        await client.aclose()
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--client", choices=("http", "sdk"), default="http")
    parser.add_argument("--messages", action="store_true")
    parser.add_argument("--ticks", type=int, default=20, help="custom events per ticker run")
    parser.add_argument("--py-spy", type=Path, default=None, dest="py_spy")
    parser.add_argument("--distributed", action="store_true")
    args = parser.parse_args(argv)
    server_cpus, bench_cpus = cpu_split()
    pin_self(bench_cpus)
    # A fresh database and a flushed Redis database, as the benchmark's distributed column.
    env = asyncio.run(distributed_env("agentstream_cpu")) if args.distributed else {}
    with tempfile.TemporaryDirectory(prefix="agentstream-cpu-") as tmp:
        server = start_server(Path(tmp) / "cpu.sqlite", cpus=server_cpus, env=env)
        try:

            def drive(seconds: float) -> int:
                return asyncio.run(
                    _drive(server.url, args.client, args.concurrent, seconds, args.messages,
                           args.ticks)
                )  # fmt: skip

            drive(1.0)
            spy = None
            if args.py_spy is not None:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen(
                    [exe, "record", "-p", str(server.pid), "-f", "raw", "-r", "500", "--gil",
                     "--nonblocking", "-o", str(args.py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            counted = _counters(server.url)
            before, start = _cpu_seconds(server.pid), time.perf_counter()
            done = drive(args.seconds)
            after, wall = _cpu_seconds(server.pid), time.perf_counter() - start
            user, system = after[0] - before[0], after[1] - before[1]
            cpu = user + system
            requests = {k: v - counted.get(k, 0.0) for k, v in _counters(server.url).items()}
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
        finally:
            server.stop()
    per = f"{1e6 * cpu / done:.1f} us" if args.messages else f"{1e3 * cpu / done:.3f} ms"
    unit = "event" if args.messages else "run"
    print(
        f"{args.client}: {done / wall:,.1f} {unit}s/s, server CPU {100 * cpu / wall:.0f}%, "
        f"{per} of server CPU per {unit} ({100 * system / cpu if cpu else 0:.0f}% of it in the "
        "kernel)"
    )
    if not args.messages and done:
        print(f"per custom event: {1e6 * cpu / (done * args.ticks):.1f} us of server CPU")
    if args.distributed and done:
        statements = requests.get("postgres_statements", 0.0) / done
        trips = requests.get("redis_round_trips", 0.0) / done
        print(f"per {unit}: {statements:.1f} PostgreSQL statements, {trips:.1f} Redis round trips")


if __name__ == "__main__":
    main()
