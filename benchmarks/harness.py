"""The benchmark's plumbing: a pinned `agentstream dev` process, RSS readings, statistics."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "langgraph.json"


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, benchmark CPUs): one core each when there are two or more, else no pinning.

    The server and the measuring client never compete for the same core, and the in-process
    baseline runs on the benchmark's core, alone, so both sides get one core each.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def pin_self(cpus: set[int] | None) -> None:
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.drain is not None:
            self.drain.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(
    database: Path,
    *,
    cpus: set[int] | None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Server:
    """`python -m agentstream dev` on a free loopback port, pinned to `cpus` from its first
    instruction (so its SQLite threads inherit the pinning too)."""
    cmd = [sys.executable, "-m", "agentstream", "dev", "--config", str(EXAMPLES), "--port", "0"]
    cmd += ["--database", str(database), *extra_args]
    preexec: Callable[[], None] | None = None
    if cpus is not None:
        pinned = set(cpus)

        def preexec() -> None:
            os.sched_setaffinity(0, pinned)

    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec,
    )
    assert proc.stdout is not None
    output: list[str] = []
    url = None
    for line in proc.stdout:
        output.append(line)
        if "serving on " in line:
            url = line.split("serving on ", 1)[1].strip()
            break
    if url is None:
        proc.wait(10)
        raise RuntimeError("server did not start:\n" + "".join(output))
    server = Server(url, proc, output)
    stdout = proc.stdout
    server.drain = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
    server.drain.start()
    wait_ready(url)
    return server


def wait_ready(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(url + "/ok").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} never answered /ok")


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (or another `kB` field of /proc/<pid>/status, such as RssAnon) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class RssSampler:
    """Samples a process's RSS on a thread, for the peak during a phase."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb(self.pid))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least pct% of samples at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
