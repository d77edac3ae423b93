"""The plain in-process baseline of the first event, throughput and concurrent runs, measured
in a process of its own and printed as JSON: a script running the graphs, as the issue's
targets quote it (asyncio's default loop, Python's default collector, nothing else held).

    python -m benchmarks.baseline '<Sizes as JSON>' '<CPUs to run on as JSON, or null>'

benchmarks.run starts it beside each distributed deployment's figures: the benchmark's own
process, by then holding clients and figures, made the same loop slower or, with those
objects frozen out of the collector's sight, faster than a script."""

from __future__ import annotations

import asyncio
import json
import sys

from benchmarks.harness import pin_self
from benchmarks.run import measure_inprocess
from benchmarks.scenarios import Sizes


def main(argv: list[str]) -> None:
    sizes = Sizes(**json.loads(argv[0]))
    cpus = json.loads(argv[1]) if len(argv) > 1 else None
    pin_self(set(cpus) if cpus is not None else None)
    figures = asyncio.run(measure_inprocess(sizes, beside=True))
    sys.stdout.write(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
