"""Prometheus metrics: LangGraph Server's names (so existing dashboards work) and our streams'.

One registry per process. A worker process (`agentstream worker`) has no HTTP API: it serves its
own registry on AGENTSTREAM_METRICS_PORT when that is set."""

from __future__ import annotations

import statistics

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Latencies from a fraction of a millisecond (a stream's first event) to a long run's wait.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- LangGraph Server's names ---------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "lg_api_http_requests", "Total number of HTTP requests.",
    ["method", "path", "status"], registry=REGISTRY,
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "lg_api_http_requests_latency_seconds", "HTTP request latency in seconds.",
    ["method", "path"], buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip


def _gauge(name: str, help_text: str) -> Gauge:
    return Gauge(name, help_text, registry=REGISTRY)


PENDING = _gauge("lg_api_num_pending_runs", "The number of runs currently pending")
RUNNING = _gauge("lg_api_num_running_runs", "The number of runs currently running")
WAIT_MAX = _gauge(
    "lg_api_pending_runs_wait_time_max", "The maximum time a run has been pending, in seconds"
)
WAIT_MED = _gauge(
    "lg_api_pending_runs_wait_time_med", "The median pending wait time across runs, in seconds"
)
UNBLOCKED_WAIT_MAX = _gauge(
    "lg_api_pending_unblocked_runs_wait_time_max",
    "The maximum time a run has been pending excluding runs blocked by another run on the same "
    "thread, in seconds",
)
WORKERS_MAX = _gauge("lg_api_workers_max", "The maximum number of workers available")
WORKERS_ACTIVE = _gauge("lg_api_workers_active", "The number of currently active workers")
WORKERS_AVAILABLE = _gauge("lg_api_workers_available", "The number of available (idle) workers")
PG_POOL_MAX = _gauge("lg_api_pg_pool_max", "The maximum size of the postgres connection pool")
PG_POOL_SIZE = _gauge(
    "lg_api_pg_pool_size", "Number of connections currently managed by the postgres connection pool"
)
PG_POOL_AVAILABLE = _gauge(
    "lg_api_pg_pool_available",
    "Number of connections currently idle in the postgres connection pool",
)
REDIS_POOL_MAX = _gauge("lg_api_redis_pool_max", "The maximum size of the redis connection pool")
REDIS_POOL_SIZE = _gauge(
    "lg_api_redis_pool_size", "Number of connections currently in use in the redis connection pool"
)
REDIS_POOL_AVAILABLE = _gauge(
    "lg_api_redis_pool_available",
    "Number of connections currently idle in the redis connection pool",
)
STREAMS_ACTIVE = _gauge("agentstream_streams_active", "SSE streams this process is writing now.")

# --- streams ----------------------------------------------------------------------------------
TIME_TO_FIRST_EVENT = Histogram(
    "agentstream_time_to_first_event_seconds",
    "From a run's creation to the first event its graph published.",
    buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
# A stream's close after its last event: a few milliseconds (the run's end stored, then its log
# closed) to a slow one under load; finer where issue 17's 20 ms bound lies.
_CLOSE_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5)
STREAM_CLOSE = Histogram(
    "agentstream_stream_close_seconds",
    "From a stream's last event written to its end written, for streams the server ended.",
    buckets=_CLOSE_SECONDS, registry=REGISTRY,
)  # fmt: skip
QUEUE_WAIT = Histogram(
    "agentstream_queue_wait_seconds",
    "From a run falling due to a worker claiming it (first attempts).",
    buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
EVENTS_PUBLISHED = Counter(
    "agentstream_events_published", "Events runs published to their logs.", registry=REGISTRY
)
JOINS = Counter(
    "agentstream_stream_joins", "Streams opened on a run that already existed.", registry=REGISTRY
)
RESUMES = Counter(
    "agentstream_stream_resumes", "Streams opened with a Last-Event-ID to resume from.",
    registry=REGISTRY,
)  # fmt: skip
EVICTIONS = Counter(
    "agentstream_stream_evictions",
    "Readers told that events they asked for are no longer kept (EventsEvicted).",
    registry=REGISTRY,
)  # fmt: skip

# How long a callback made ready waited for the event loop that every stream and run of the
# process share (looplag.py: one handed over twenty times a second).
EVENT_LOOP_LAG = Histogram(
    "agentstream_event_loop_lag_seconds",
    "How long a callback made ready waited for this process's event loop to run it.",
    buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip

STREAM_ENDS_NOTICED = Counter(
    "agentstream_stream_ends_noticed",
    "Streams told their run's end by the database at its commit (`serve`: the worker's notice), "
    "before the run's log was closed.",
    registry=REGISTRY,
)  # fmt: skip

# What the distributed path costs per run, in requests to its services (benchmarks.cpu reports
# them per run): every statement sent to PostgreSQL, ours and LangGraph's checkpointer's, and
# every request to Redis (a command or a whole pipeline: one round trip each).
POSTGRES_STATEMENTS = Counter(
    "agentstream_postgres_statements", "Statements this process sent to PostgreSQL.",
    registry=REGISTRY,
)  # fmt: skip
REDIS_ROUND_TRIPS = Counter(
    "agentstream_redis_round_trips",
    "Requests this process sent to Redis: a command or a pipeline, one round trip each.",
    registry=REGISTRY,
)  # fmt: skip


def set_queue(pending: int, running: int, waits: list[float], unblocked: list[float]) -> None:
    PENDING.set(pending)
    RUNNING.set(running)
    WAIT_MAX.set(max(waits, default=0.0))
    WAIT_MED.set(statistics.median(waits) if waits else 0.0)
    UNBLOCKED_WAIT_MAX.set(max(unblocked, default=0.0))
