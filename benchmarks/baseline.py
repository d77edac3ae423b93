"""The in-process baseline beside a server's figures, one repetition at a time.

    python -m benchmarks.baseline like|plain '<Sizes as JSON>' '<CPUs to run on as JSON, or null>'

A process of its own, started for a server's figures and kept for them: it reads one request a
line on stdin (`{"figure": ...}`, see _measure), runs that figure's graph once in-process and
writes its figures as a line of JSON. benchmarks.run asks for one before each of a client's
repetitions of a figure and one after the last (scenarios.Pace), so that every repetition has
the baseline's own measured a fraction of a second before and after it, on the server's core
while the server idles: this machine's speed moved by half between two repetitions a second
apart, and a baseline measured a minute away judged a figure by another machine.

`like`: as the server runs graphs (uvloop, the collector tuned as `agentstream` tunes it, over
what loading the graphs built); `plain`: a script running them, as the issue's targets quote it
(asyncio's default loop, Python's default collector). A process rather than a thread of the
benchmark's: that one holds clients and figures by now, which made the same loop slower (the
collector walks them) or, frozen out of its sight, faster than a script.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import sys
from contextlib import nullcontext
from types import TracebackType
from typing import Any

import uvloop

from agentstream.app import tune_gc
from agentstream.graphs import GraphRegistry, read_config
from agentstream.settings import Settings
from benchmarks import scenarios
from benchmarks.harness import EXAMPLES, ROOT, Busy, freeze_client, pin_self
from benchmarks.scenarios import Graph, Pace, Sizes

READY = "ready"


async def _measure(graphs: dict[str, Graph], sizes: Sizes, request: dict[str, Any]) -> Any:
    """One repetition of the figure a request names, in-process."""
    once = dataclasses.replace(sizes, throughput_reps=1)
    figure = request["figure"]
    if figure == "ttfe":
        block = dataclasses.replace(
            sizes, ttfe_warmup=request["warmup"], ttfe_samples=request["samples"]
        )
        return await scenarios.ttfe_inprocess(graphs["ticker"], block)
    if figure == "ticker_throughput":
        return await scenarios.ticker_throughput_inprocess(graphs["ticker"], once)
    if figure == "agent_throughput":
        return await scenarios.agent_throughput_inprocess(
            graphs["agent"], once, request["expected"]
        )
    if figure == "concurrency":
        return await scenarios.concurrency_inprocess(
            graphs["ticker"], request["n"], 1, sizes.ticks_per_run
        )
    raise ValueError(f"no such figure: {figure!r}")


def main(argv: list[str]) -> None:
    which, sizes = argv[0], Sizes(**json.loads(argv[1]))
    cpus = json.loads(argv[2]) if len(argv) > 2 else None
    pin_self(set(cpus) if cpus is not None else None)
    loop = uvloop.new_event_loop() if which == "like" else asyncio.new_event_loop()
    registry = GraphRegistry(read_config(EXAMPLES))
    graphs = {name: loop.run_until_complete(registry.get(name)) for name in ("ticker", "agent")}
    # Each figure once before the first that counts: a graph's first run in a process pays
    # for what its libraries load and build on first use (a sixth of the quick custom events').
    for request in (
        {"figure": "ttfe", "warmup": sizes.ttfe_warmup, "samples": 1},
        {"figure": "ticker_throughput"},
        {"figure": "agent_throughput", "expected": 0},
        {"figure": "concurrency", "n": 10},
    ):
        loop.run_until_complete(_measure(graphs, sizes, request))
    if which == "like":
        tune_gc(Settings.from_env().gc_threshold)
    else:
        # What loading the graphs and those first runs left for the collector's oldest
        # generation, collected now rather than in the middle of a repetition.
        gc.collect()
    print(READY, flush=True)
    for line in sys.stdin:
        if which == "like":
            # Each repetition starts with what the last one left collected and frozen out of
            # the collector's sight with the rest, as the thread this baseline ran in before
            # froze the process just before it measured. The server's process gets no such
            # fresh start between requests: the baseline is the stricter for it (200 runs at
            # once read 1,071 runs/s without it, 1,225 in that thread, measured turn about).
            # The plain baseline's collector runs as a script's does, through its repetitions:
            # collected before each, 200 runs at once read 1,300 runs/s where a script reads
            # 700-800, its full collections left out.
            freeze_client()
        figures = loop.run_until_complete(_measure(graphs, sizes, json.loads(line)))
        print(json.dumps(figures), flush=True)


class Beside:
    """A baseline process (`like` or `plain`) beside a server's figures: pacer() makes the
    scenarios' Pace that measures one repetition of a figure's baseline each call."""

    def __init__(self, which: str, sizes: Sizes, cpus: set[int] | None) -> None:
        self.which = which
        self.sizes = sizes
        self.cpus = cpus
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Beside:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.baseline",
            self.which,
            json.dumps(dataclasses.asdict(self.sizes)),
            json.dumps(sorted(self.cpus) if self.cpus is not None else None),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        if (await self._line()) != READY:
            raise RuntimeError("the baseline process did not start")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        if await proc.wait():
            raise RuntimeError(f"the baseline process exited with {proc.returncode}")

    async def _line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline process exited ({await self._proc.wait()})")
        return line.decode().strip()

    async def measure(self, request: dict[str, Any]) -> dict[str, Any]:
        """One repetition of the figure `request` names, measured in the baseline's process."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self._proc.stdin.drain()
        figures: dict[str, Any] = json.loads(await self._line())
        return figures

    def pacer(
        self, into: list[dict[str, Any]], request: dict[str, Any], busy: Busy | None = None
    ) -> Pace:
        """A Pace measuring `request`'s figure once each call, appended to `into`; with busy,
        out of that phase's reading (the client and the server idle meanwhile)."""

        async def pace() -> None:
            asked = request
            if request["figure"] == "ttfe":
                # Its first block warms up first, as the client's does.
                asked = {**request, "warmup": self.sizes.ttfe_warmup if not into else 0}
            with busy.paused() if busy is not None else nullcontext():
                into.append(await self.measure(asked))

        return pace


if __name__ == "__main__":
    main(sys.argv[1:])
