"""Smoke test of the scale benchmark: `python -m benchmarks.scale --quick` runs, reports every
curve at every size, and its figures are sane (every joiner got every event, the resumed
sequence equals the uninterrupted one). Kept out of the default run, like the other benchmark
test; `pytest benchmarks -m benchmark` runs it."""

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


def _number(figures: dict[str, Any], key: str, where: str) -> float:
    value = figures.get(key)
    assert isinstance(value, int | float), f"{where}.{key} is missing or not a number: {value!r}"
    assert not math.isnan(value), f"{where}.{key} is NaN"
    return float(value)


def _quick_scale(tmp_path: Path, *more: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`python -m benchmarks.scale --quick` run to success: its output and its JSON's path."""
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--quick", *more, "--json", str(out)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, out


def test_quick_scale_reports_every_curve(tmp_path: Path) -> None:
    proc, out = _quick_scale(tmp_path)
    for heading in ("1. idle open streams", "2. joiners", "3. many threads", "4. one run"):
        assert heading in proc.stdout
    result = json.loads(out.read_text())
    sizes = result["sizes"]
    assert result["errors"] == 0

    idle = result["idle_streams"]["rows"]
    assert [r["streams"] for r in idle] == sizes["idle_streams"]
    for row in idle:
        assert row["streams_closed"] == 0 and row["ttfe_errors"] == 0
        assert _number(row, "rss_kb", "idle") > 0
        assert 0 < _number(row, "ttfe_median_ms", "idle") <= _number(row, "ttfe_p99_ms", "idle")
    for row in idle[1:]:
        # Memory per open stream: some, and far from a megabyte.
        assert 0 < _number(row, "kb_per_stream", "idle") < 1024

    joins = result["joiners"]["rows"]
    assert [r["joiners"] for r in joins] == sizes["joiners"]
    for row in joins:
        assert row["events_per_joiner_min"] == row["events_per_joiner_max"] == sizes["join_ticks"]
        assert 0 <= _number(row, "lag_median_ms", "join") <= _number(row, "lag_p99_ms", "join")

    threads = result["many_threads"]["rows"]
    assert [r["threads"] for r in threads] == sizes["threads"]
    for row in threads:
        assert row["ok"] and row["checkpoints_per_thread"] >= sizes["checkpoints"]
        assert row["history_length"] == 10 and row["search_metadata_found"] == 10
        for key in ("search_metadata", "search_plain", "state", "history"):
            assert _number(row[key], "median_ms", key) > 0
        assert _number(row, "db_mb", "threads") > 0

    for kind in ("paced", "burst"):
        run = result["long_run"][kind]
        assert run["status"] == "success", kind
        assert run["uninterrupted_events"] == run["resumed_events"] == sizes["long_events"]
        assert run["repeated"] == run["skipped"] == 0, kind
        assert run["resume_exact"] and not run["error_frames"], kind
        for key in ("rss_before_kb", "rss_peak_kb", "rss_after_kb"):
            assert _number(run, key, kind) > 0
    assert result["long_run"]["paced"]["resumed_mid_run"]


def test_quick_distributed_scale_keeps_every_stream(tmp_path: Path) -> None:
    # serve + worker on PostgreSQL + Redis: every idle stream stays open and every joiner gets
    # every event (past 1,000 streams a process once failed new ones).
    _, out = _quick_scale(tmp_path, "--distributed")
    result = json.loads(out.read_text())
    assert result["deployment"] == "serve + worker" and result["errors"] == 0
    assert set(result) >= {"idle_streams", "joiners"} and "many_threads" not in result
    for row in result["idle_streams"]["rows"]:
        assert row["streams_closed"] == 0 and row["ttfe_errors"] == 0
    for row in result["joiners"]["rows"]:
        assert row["events_per_joiner_min"] == result["sizes"]["join_ticks"]
