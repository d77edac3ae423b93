"""The plain in-process baseline of the first event, throughput and concurrent runs, measured
in a process of its own and printed as JSON: a script running the graphs, as the issue's
targets quote it (asyncio's default loop, Python's default collector, nothing else held).

    python -m benchmarks.baseline '<Sizes as JSON>'

benchmarks.run starts it beside each distributed deployment's figures: the benchmark's own
process, by then holding clients and figures, made the same loop slower or, with those
objects frozen out of the collector's sight, faster than a script."""

from __future__ import annotations

import asyncio
import json
import sys

from benchmarks.run import measure_inprocess
from benchmarks.scenarios import Sizes


def main(argv: list[str]) -> None:
    sizes = Sizes(**json.loads(argv[0]))
    figures = asyncio.run(measure_inprocess(sizes, beside=True))
    sys.stdout.write(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
