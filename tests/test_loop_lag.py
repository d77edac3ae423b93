"""A process's event loop watched (looplag.py): /metrics has how late it ran, and a node that
holds it with blocking code is reported in the log, with where it is held, by the process that
ran it (the embedded server; on the distributed deployment, the worker)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.samples import Sample

from agentstream import looplag, metrics
from agentstream.app import ISOLATED_LOOPS
from agentstream.looplag import LoopWatch
from tests.servers import ServerProcess, running_cluster, start_server
from tests.services import free_port
from tests.test_metrics import samples, value

BLOCKING_APP = Path(__file__).resolve().parent / "blocking_app" / "langgraph.json"
LAG = "agentstream_event_loop_lag_seconds"
# LangGraph Server's variable asking for runs on event loops of their own: said to be absent.
ISOLATED = {"BG_JOB_ISOLATED_LOOPS": "true"}


class Runner:
    """Where runs go (`url`), and the process that executes them: its log and its /metrics."""

    def __init__(self, url: str, proc: ServerProcess, metrics_url: str) -> None:
        self.url, self.proc, self.metrics_url = url, proc, metrics_url

    def lag(self) -> list[Sample]:
        return [s for s in samples(httpx.get(self.metrics_url, timeout=10).text) if LAG in s.name]

    def first_lag(self, seconds: float = 10.0) -> list[Sample]:
        """The histogram once it has a sample (the watchdog's first comes WATCH after its
        start); fails if none comes."""
        deadline = time.monotonic() + seconds
        while not value(found := self.lag(), f"{LAG}_count"):
            assert time.monotonic() < deadline, "the event loop's watchdog took no sample"
            time.sleep(0.02)
        return found

    def logged(self, text: str, seconds: float = 10.0) -> str:
        """The process's log once it holds `text` (the drain thread appends as lines come)."""
        deadline = time.monotonic() + seconds
        while True:
            log = "".join(self.proc.output)
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.02)


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    if request.param == "embedded":
        database = tmp_path_factory.mktemp("lag") / "agentstream.sqlite"
        proc = start_server(database, config=BLOCKING_APP, env=ISOLATED)
        try:
            yield Runner(proc.url, proc, f"{proc.url}/metrics")
        finally:
            proc.stop()
        return
    port = free_port()
    env = {"AGENTSTREAM_METRICS_PORT": str(port), **ISOLATED}
    with running_cluster(config=BLOCKING_APP, apis=1, workers=1, env=env) as cluster:
        worker = cluster.workers[0]
        yield Runner(cluster.apis[0].url, worker, f"http://127.0.0.1:{port}/metrics")


def above(found: list[Sample], seconds: float) -> float:
    """How many of the histogram's observations were over `seconds` (a bucket bound)."""
    return value(found, f"{LAG}_count") - value(found, f"{LAG}_bucket", le=str(seconds))


def test_a_node_holding_the_loop_is_reported_with_where_it_holds_it(runner: Runner) -> None:
    before = runner.first_lag()  # watched from the start: a sample within 50 ms or so
    assert "the event loop has been held" not in "".join(runner.proc.output)
    body = {"assistant_id": "blocking", "input": {"seconds": 1.5}}
    response = httpx.post(f"{runner.url}/runs/wait", json=body, timeout=30)
    assert response.status_code == 200 and response.json()["done"] is True
    log = runner.logged("hold_the_loop")
    warning = log[log.index("the event loop has been held for ") :]
    held = re.match(r"the event loop has been held for ([0-9.]+) s", warning)
    assert held is not None and float(held.group(1)) >= 0.5
    # The place: the graph's node, in its file, in the blocking call.
    assert "blocking_app/graph.py" in warning and "in hold_the_loop" in warning
    assert "time.sleep" in warning
    after = runner.lag()
    # The callback handed over as the stall began waited over a second.
    assert above(after, 1.0) - above(before, 1.0) >= 1
    assert value(after, f"{LAG}_count") > value(before, f"{LAG}_count")


def test_isolated_loops_asked_for_are_said_to_be_absent(runner: Runner) -> None:
    # By the process that runs the graphs (the API process alone has none to isolate).
    assert ISOLATED_LOOPS in runner.logged(ISOLATED_LOOPS)


# --- LoopWatch on a loop of the test's own --------------------------------------------------


def _observed_over(seconds: float) -> float:
    found = [s for f in metrics.REGISTRY.collect() for s in f.samples if s.name.startswith(LAG)]
    return above(found, seconds)


async def _held(watch: LoopWatch, *stalls: float) -> None:
    watch.start()
    try:
        for seconds in stalls:
            await asyncio.sleep(0.1)  # the watchdog's callbacks run between stalls
            time.sleep(seconds)  # noqa: ASYNC251 (the stall itself)
            await asyncio.sleep(0.05)
    finally:
        watch.stop()


def test_each_stall_is_warned_of_once_and_those_within_a_minute_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(looplag, "REPEAT", 60.0)
    over = _observed_over(0.25)
    with caplog.at_level(logging.WARNING, logger="agentstream"):
        asyncio.run(_held(LoopWatch(0.2), 0.5, 0.5))
    warnings = [r.getMessage() for r in caplog.records if "event loop" in r.getMessage()]
    assert len(warnings) == 1  # the second stall came within REPEAT: counted, not logged
    assert "in _held" in warnings[0] and "time.sleep" in warnings[0]
    assert _observed_over(0.25) - over >= 2  # each stall, a callback that waited it out
    caplog.clear()
    monkeypatch.setattr(looplag, "REPEAT", 0.0)
    watch = LoopWatch(0.2)
    watch._unreported = 3  # as if three stalls had gone unreported
    with caplog.at_level(logging.WARNING, logger="agentstream"):
        asyncio.run(_held(watch, 0.5))
    warnings = [r.getMessage() for r in caplog.records if "event loop" in r.getMessage()]
    assert len(warnings) == 1 and "(3 more since the last warning)" in warnings[0]


def test_a_threshold_of_zero_measures_and_never_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    over = _observed_over(0.25)
    watch = LoopWatch(0.0)
    with caplog.at_level(logging.WARNING, logger="agentstream"):
        asyncio.run(_held(watch, 0.4))
    assert not [r for r in caplog.records if "event loop" in r.getMessage()]
    assert _observed_over(0.25) - over >= 1  # the histogram still has the stall
