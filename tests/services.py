"""Service processes a test owns, to stop and restart at will: a Redis server and a PostgreSQL
cluster of its own, on free ports (never the machine's shared services)."""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, for a process that binds it later, chosen below the kernel's ephemeral
    range. A port the kernel picked (bind to 0) and then released may be handed to the next
    process that binds to 0, as the servers under test do: once an API was given a worker's
    metrics port that way, and its clients reached the metrics server."""
    low = min(_ephemeral_low(), 32768)
    # A host whose ephemeral range starts at 10000 or lower leaves nothing below it to pick
    # from: there the kernel picks, as before.
    picks = [random.randrange(10_000, low) for _ in range(200)] if low > 10_000 else [0]
    for port in picks:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port found between 10000 and {low}")


def _wait_for(check: object, what: str, attempts: int = 200) -> None:
    for _ in range(attempts):
        if check():  # type: ignore[operator]
            return
        threading.Event().wait(0.05)
    raise RuntimeError(f"{what} did not come up")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer:
    """redis-server on its own port, keeping nothing on disk: a restart empties it, as a
    restarted Redis without persistence does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/services.sh installs it)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--logfile", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: _answers(self.port), "redis-server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        _wait_for(lambda: not _answers(self.port), "redis-server's exit")


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb as the postgres user, trust auth), stopped and
    started again like a restart or a failover."""

    def __init__(self) -> None:
        self.port = free_port()
        # Its own folder under /tmp: the postgres user cannot reach into pytest's (root's, 0700).
        self.root = Path(tempfile.mkdtemp(prefix="agentstream-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        self.bin = Path(bins[-1]).parent

    def _as_postgres(self, *args: str) -> None:
        command = [str(a) for a in args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
