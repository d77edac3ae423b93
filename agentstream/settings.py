"""Configuration: command-line flags over environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The youngest generation's threshold the CLI's servers run with: above what a busy worker
# holds in flight, so that collections are rare under load (app.tune_gc says what they cost).
GC_THRESHOLD = 50_000


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


@dataclass
class Settings:
    config: Path = Path("langgraph.json")
    host: str = "127.0.0.1"
    port: int = 2024
    database: str | None = None  # SQLite file; defaults to .agentstream/agentstream.sqlite
    database_uri: str | None = None  # PostgreSQL: the distributed deployment
    redis_uri: str | None = None
    max_concurrency: int = 32
    # The most connections a process keeps to PostgreSQL (LangGraph Server's variable name).
    postgres_pool_max: int = 20
    heartbeat_seconds: float = 5.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    event_log_max_events: int = 50_000
    event_log_keep_seconds: float = 600.0
    # All finished runs' kept logs together (in-process bus); past it the oldest go first.
    event_log_max_retained_mb: float = 256.0
    lease_seconds: float = 30.0
    max_attempts: int = 3
    # On SIGTERM: how long running runs (and requests) may go on before they are handed back.
    shutdown_grace_seconds: float = 20.0
    # `agentstream worker` has no HTTP API: its /metrics is served on this port when set.
    metrics_port: int = 0
    run_workers: bool = True
    # Collections of the youngest generation every this many allocations (Python: 700), with
    # what startup built frozen out of every collection; 0 leaves Python's defaults. The CLI
    # sets GC_THRESHOLD (see app.tune_gc); in-process uses of create_app keep their own.
    gc_threshold: int = 0
    # Shared keys a client must send when langgraph.json names no auth file.
    api_keys: list[str] = field(default_factory=list)
    # Import the graphs again when a project file changes (`agentstream dev`; see reload.py).
    reload: bool = False
    # Compress WebSocket messages (permessage-deflate) when the client offers it. Off: each
    # event is a small message of its own, compressed for a few bytes at the cost of about 3 us
    # of CPU on each side and a compressor's memory per socket (SSE is not compressed either).
    ws_deflate: bool = False
    # Warn, saying where, when the event loop has been held this long (looplag.py); 0: never.
    loop_blocked_seconds: float = 0.5
    # LangGraph Server's BG_JOB_ISOLATED_LOOPS (runs on event loops apart from the API's), which
    # agentstream does not have: a process that runs graphs says so when it is set.
    isolated_loops: bool = False
    # How long an idle keep-alive connection stays open. Longer than clients keep theirs
    # (httpx, so the Python SDK: 5 s; Node's fetch: 4 s; load balancers: 60 s): at uvicorn's
    # 5 s a client reusing a connection as the server closed it got a reset instead of an
    # answer (the SDK's ReadError, 11 of 4,800 runs streamed by 200 at once on a loaded core).
    keep_alive_seconds: int = 75

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            config=Path(os.environ.get("AGENTSTREAM_CONFIG", "langgraph.json")),
            host=os.environ.get("AGENTSTREAM_HOST", "127.0.0.1"),
            port=_env_int("PORT", 2024),
            database=os.environ.get("AGENTSTREAM_DATABASE"),
            database_uri=os.environ.get("DATABASE_URI") or None,
            redis_uri=os.environ.get("REDIS_URI") or None,
            # LangGraph Server's name for it too, which deployments already set.
            max_concurrency=_env_int(
                "AGENTSTREAM_MAX_CONCURRENCY", _env_int("N_JOBS_PER_WORKER", 32)
            ),
            postgres_pool_max=_env_int("LANGGRAPH_POSTGRES_POOL_MAX_SIZE", 20),
            heartbeat_seconds=_env_float("AGENTSTREAM_HEARTBEAT_SECONDS", 5.0),
            max_body_bytes=_env_int("AGENTSTREAM_MAX_BODY_BYTES", 10 * 1024 * 1024),
            max_header_bytes=_env_int("AGENTSTREAM_MAX_HEADER_BYTES", 64 * 1024),
            event_log_max_events=_env_int("AGENTSTREAM_EVENT_LOG_MAX_EVENTS", 50_000),
            event_log_keep_seconds=_env_float("AGENTSTREAM_EVENT_LOG_KEEP_SECONDS", 600.0),
            event_log_max_retained_mb=_env_float("AGENTSTREAM_EVENT_LOG_MAX_RETAINED_MB", 256.0),
            lease_seconds=_env_float("AGENTSTREAM_LEASE_SECONDS", 30.0),
            max_attempts=_env_int("AGENTSTREAM_MAX_ATTEMPTS", 3),
            shutdown_grace_seconds=_env_float("AGENTSTREAM_SHUTDOWN_GRACE_SECONDS", 20.0),
            metrics_port=_env_int("AGENTSTREAM_METRICS_PORT", 0),
            api_keys=_env_list("AGENTSTREAM_API_KEYS"),
            gc_threshold=_env_int("AGENTSTREAM_GC_THRESHOLD", GC_THRESHOLD),
            ws_deflate=_env_int("AGENTSTREAM_WS_DEFLATE", 0) > 0,
            keep_alive_seconds=_env_int("AGENTSTREAM_KEEP_ALIVE_SECONDS", 75),
            loop_blocked_seconds=_env_float("AGENTSTREAM_LOOP_BLOCKED_SECONDS", 0.5),
            isolated_loops=_env_bool("BG_JOB_ISOLATED_LOOPS"),
        )

    def database_path(self) -> str:
        if self.database:
            return self.database
        return str(self.config.resolve().parent / ".agentstream" / "agentstream.sqlite")
