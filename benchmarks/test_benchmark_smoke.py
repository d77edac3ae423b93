"""Smoke test of the benchmark: `python -m benchmarks.run --quick` runs, reports every figure,
and sees no error. Kept out of the default run; `pytest benchmarks -m benchmark` runs it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(300)]

TTFE = ("samples", "median_ms", "p99_ms", "errors")
THROUGHPUT = ("events", "events_per_s", "errors")
CONCURRENCY = ("runs", "runs_per_s", "median_ms", "p99_ms", "errors")
JOIN = ("events_per_joiner_min", "events_per_joiner_max", "final_event_lag_ms", "run_seconds")
MEMORY = (
    "idle_kb",
    "warm_kb",
    "after_first_batch_kb",
    "after_second_batch_kb",
    "growth_second_batch_kb",
    "during_streams_peak_kb",
    "after_streams_kb",
    "errors",
)


def _number(figures: dict[str, Any], key: str, where: str) -> float:
    value = figures.get(key)
    assert isinstance(value, int | float), f"{where}.{key} is missing or not a number: {value!r}"
    assert not math.isnan(value), f"{where}.{key} is NaN"
    return float(value)


def _check(figures: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        _number(figures, key, where)
    if "errors" in figures:
        assert figures["errors"] == 0, f"{where}: {figures['errors']} error(s)"


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "AGENTSTREAM_BENCH_REFERENCE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reference: not measured" in proc.stdout
    result = json.loads(out.read_text())
    assert result["errors"] == 0
    sizes = result["sizes"]
    levels = [str(n) for n, _ in sizes["concurrency"]]
    assert levels == ["10", "50", "200"]
    assert sizes["joiners"] == [1, 10, 50]

    base = result["inprocess"]
    # Each baseline measured before the servers and after them; the ratios use their mean.
    for key in ("inprocess_before_after", "inprocess_like_server_before_after"):
        before, after = result[key]
        for figures in (before, after):
            _check(figures["ticker_throughput"], THROUGHPUT, key)
    assert "baselines before the servers -> after them" in proc.stdout
    _check(base["ttfe"], TTFE, "inprocess.ttfe")
    for key in ("ticker_throughput", "agent_throughput"):
        _check(base[key], THROUGHPUT, f"inprocess.{key}")
    for n in levels:
        _check(base["concurrency"][n], CONCURRENCY, f"inprocess.concurrency.{n}")
    _check(base["join"], ("events", "run_seconds", "errors"), "inprocess.join")
    for n, _ in sizes["threaded"]:
        _check(base["threaded"][str(n)], CONCURRENCY, f"inprocess.threaded.{n}")

    for kind in ("sdk", "http"):
        server = result["agentstream"][kind]
        where = f"agentstream.{kind}"
        _check(server["ttfe"], TTFE, f"{where}.ttfe")
        for key in ("ticker_throughput", "agent_throughput"):
            _check(server[key], THROUGHPUT, f"{where}.{key}")
            assert server[key]["events"] == base[key]["events"], f"{where}.{key}: events lost"
        for n in levels:
            _check(server["concurrency"][n], CONCURRENCY, f"{where}.concurrency.{n}")
        for n, _ in sizes["threaded"]:
            threaded = server["threaded"][str(n)]
            _check(threaded, (*CONCURRENCY, "close_p50_ms", "close_p99_ms"), f"{where}.threaded")
            # The server's own side of the close, off its histogram: every stream counted.
            server_close = ("server_close_p50_ms", "server_close_p99_ms")
            _check(threaded, server_close, f"{where}.threaded")
            assert threaded["server_close_p50_ms"] <= threaded["server_close_p99_ms"]
            # How long the runs' event loop kept a callback waiting meanwhile (its histogram).
            _check(threaded, ("loop_lag_p50_ms", "loop_lag_p99_ms"), f"{where}.threaded")
            assert threaded["loop_lag_p50_ms"] <= threaded["loop_lag_p99_ms"]
            # The API's requests a threaded run took: its thread, its stream, and with the
            # SDK its check of the run after a stream that ended without an `end` event.
            asked = threaded["requests_per_run"]
            assert asked["POST /threads"] == 1, asked
            assert asked["POST /threads/{thread_id}/runs/stream"] == 1, asked
            checks = asked.get("GET /threads/{thread_id}/runs/{run_id}", 0)
            assert checks == (1 if kind == "sdk" else 0), asked
            _number(result["ratios"][kind]["threaded_runs_per_s"], str(n), f"ratios.{kind}")
        measured = [
            server["ttfe"],
            server["ticker_throughput"],
            server["agent_throughput"],
            *(server["concurrency"][n] for n in levels),
            *(server["threaded"][str(n)] for n, _ in sizes["threaded"]),
        ]
        server_busy = 0.0
        for figures in measured:  # how busy each side was, read off both processes
            busy = figures["busy"]
            assert _number(busy, "client_pct", f"{where}.busy") > 0
            # In clock ticks (10 ms): a short quick phase may read none, not every phase.
            server_busy += _number(busy, "server_pct", f"{where}.busy")
        assert server_busy > 0
        assert "cores busy during the figure" in proc.stdout
        # The like-for-like baseline measured before each of this client's repetitions and
        # after the last, and the embedded targets judged against it pair by pair.
        beside = server["like_beside"]
        _check(beside["figures"]["ttfe"], TTFE, f"{where}.like_beside.ttfe")
        paired = result["ratios_like_beside"][kind]["paired"]
        blocks = server["ttfe"]["median_ms_blocks"]
        assert len(beside["reps"]["ttfe"]) == len(blocks) + 1, beside["reps"]["ttfe"]
        assert paired["ttfe_median"]["pairs"] == len(blocks)
        for key in ("ticker_throughput", "agent_throughput"):
            _check(beside["figures"][key], THROUGHPUT, f"{where}.like_beside.{key}")
            reps = server[key]["events_per_s_reps"]
            assert len(beside["reps"][key]) == len(reps) + 1 == sizes["throughput_reps"] + 1
            ratio = _number(result["ratios_like_beside"][kind], key, f"ratios_like_beside.{kind}")
            assert ratio == paired[key]["ratio"]
            assert paired[key]["pairs"] == sizes["throughput_reps"]
            assert 0 < paired[key]["low"] <= paired[key]["median"] <= paired[key]["high"]
        for n, rounds in sizes["concurrency"]:
            figures = beside["figures"]["concurrency"][str(n)]
            _check(figures, CONCURRENCY, f"{where}.like_beside.concurrency")
            assert len(beside["reps"]["concurrency"][str(n)]) == rounds + 1
            assert paired["concurrency_runs_per_s"][str(n)]["pairs"] == rounds
        for j in sizes["joiners"]:
            join = server["join"][str(j)]
            _check(join, JOIN, f"{where}.join.{j}")
            assert join["events_per_joiner_min"] == sizes["join_ticks"]

        ratio = result["ratios"][kind]
        for key in ("ttfe_median", "ttfe_p99", "ticker_throughput", "agent_throughput"):
            _number(ratio, key, f"ratios.{kind}")
        for n in levels:
            _number(ratio["concurrency_runs_per_s"], n, f"ratios.{kind}.concurrency_runs_per_s")

    v2 = ("tokens", "tokens_per_s", "first_token_ms", "errors")
    v2_base = result["v2"]["inprocess"]  # the baseline, run in turn with the transports
    _check(v2_base, v2, "v2.inprocess")
    for transport in ("sse", "websocket"):
        _check(result["v2"][transport], v2, f"v2.{transport}")
        assert result["v2"][transport]["tokens"] == v2_base["tokens"]
    assert "threads.stream websocket" in proc.stdout

    for key in ("memory", "memory_logs_expire"):
        _check(result[key], MEMORY, key)
    memory = result["targets"]["memory_no_growth_beyond_noise"]
    assert isinstance(memory["embedded"], bool)
    rows = result["targets"]["issue17"]
    assert {"sdk", "http", "v2 sse", "v2 websocket"} <= {c for row in rows for c in row["cells"]}
    for row in rows:
        for column, cell in row["cells"].items():
            assert isinstance(cell["met"], bool), (row["target"], column)
            if cell["value"] is not None:
                assert cell["value"] > 0, (row["target"], column)
    assert "targets (issue 17)" in proc.stdout
    assert rows[0]["baseline"] == "in-process, like for like, beside"
    assert "embedded: the like-for-like baseline beside each client's figures" in proc.stdout
    assert "agentstream, API requests per threaded run: sdk" in proc.stdout
