"""The benchmark's plumbing: a pinned `agentstream dev` process (tests/servers.py), RSS readings,
statistics."""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests import servers
from tests.servers import EXAMPLES, ROOT, ServerProcess, wait_ready
from tests.services import free_port

__all__ = ["EXAMPLES", "ROOT", "ServerProcess", "free_port", "start_server", "wait_ready"]


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


def start_server(
    database: Path | None,
    *,
    cpus: set[int] | None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    command: str = "dev",
    tree: Path | None = None,
) -> ServerProcess:
    """`python -m agentstream dev` (or `command`) on a free loopback port, pinned to `cpus`
    from its first instruction (so its SQLite threads inherit the pinning too): the tests' own
    server. With `tree`, the server runs that checkout's `agentstream` (an A/B's other side)."""
    return servers.start_server(
        database,
        cpus=cpus,
        env=env,
        extra_args=extra_args,
        command=command,
        cwd=servers.ROOT if tree is None else tree,
    )


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


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def io_calls(pid: int) -> tuple[int, int]:
    """(read, write) system calls of a process so far, all its threads (/proc/<pid>/io's syscr
    and syscw: read(v), pread, write(v), pwrite, on sockets and files alike), counted without
    slowing it as strace would."""
    fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system together."""
    return sum(cpu_times(pid))


def machine_busy_seconds() -> float:
    """CPU time all cores have spent on anything but idling so far (/proc/stat): the services
    (PostgreSQL, Redis) and everything else too."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Busy:
    """How busy each side was during a phase: this process's CPU (the client's core) and the
    server processes' together (the server's core), each as a share of the phase's wall time,
    and the whole machine's (100 % a core: the services run on the same cores). A figure whose
    client was near 100 % while the server was not measures the client."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self.pids = list(server_pids)
        self.figures: dict[str, int | None] = {}

    def _now(self) -> tuple[float, float, float, float]:
        server = sum(cpu_seconds(pid) for pid in self.pids)
        return time.perf_counter(), time.process_time(), server, machine_busy_seconds()

    def __enter__(self) -> Busy:
        self._start = self._now()
        self._left_out = (0.0, 0.0, 0.0, 0.0)
        return self

    @contextmanager
    def paused(self) -> Iterator[None]:
        """What happens inside is left out of the phase's reading (a baseline measured in the
        middle of a client's figures, the client and the server idle meanwhile)."""
        start = self._now()
        try:
            yield
        finally:
            end = self._now()
            self._left_out = tuple(  # type: ignore[assignment]
                out + (b - a) for out, a, b in zip(self._left_out, start, end, strict=True)
            )

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        wall, client, server, machine = (
            b - a - out for a, b, out in zip(self._start, end, self._left_out, strict=True)
        )
        if wall > 0:
            self.figures = {
                "client_pct": round(100 * client / wall),
                # None: a server not ours to read (the reference)
                "server_pct": round(100 * server / wall) if self.pids else None,
                "machine_pct": round(100 * machine / wall),
            }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least pct% of samples at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def freeze_client() -> None:
    """What the measuring process holds by now (its clients, graphs, open streams and figures
    so far) collected and frozen out of its collector's sight, before a figure it measures a
    server by. Left in sight, the collector walked all of it at each full collection, 100-235
    ms each in benchmarks.run's process (80 in a run, about 20 inside servers' figures), where
    a client that stops for a tenth of a second is read as a stream closing late, a late first
    event or fewer runs a second. The baselines beside each figure run in a process of their
    own and freeze theirs the same way (benchmarks.baseline)."""
    gc.collect()
    gc.freeze()
