"""GET /metrics in Prometheus' text format, and the HTTP request metrics behind it."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import metrics
from agentstream.api import runlane
from agentstream.api.context import ApiContext
from agentstream.api.responses import live_streams


class RequestMetrics:
    """Counts each request by method, route template and status, and times it. Requests that
    match no route count under "other", so a scan of random paths cannot grow the series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            _count(scope["method"], _template(scope), status, time.perf_counter() - started)


# Each series' child, as labels() gives it (labels() turns its values into a tuple of str and
# takes a lock each call). As many as the series: methods, route templates and statuses.
_COUNTERS: dict[tuple[str, str, int], Any] = {}
_TIMERS: dict[tuple[str, str], Any] = {}


def _count(method: str, path: str, status: int, seconds: float) -> None:
    counter = _COUNTERS.get((method, path, status))
    if counter is None:
        counter = _COUNTERS[method, path, status] = metrics.HTTP_REQUESTS.labels(
            method, path, str(status)
        )
    counter.inc()
    timer = _TIMERS.get((method, path))
    if timer is None:
        timer = _TIMERS[method, path] = metrics.HTTP_LATENCY.labels(method, path)
    timer.observe(seconds)


def _template(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    found = runlane.match(scope["path"])  # the lane answers without FastAPI's router
    if found is not None:
        thread_id = found[1]
        path: str = scope["path"]
        return path.replace(thread_id, "{thread_id}", 1) if thread_id else path
    return "other"


async def render(c: ApiContext, worker: Any) -> tuple[bytes, str]:
    """The metrics text: gauges read now (queue, workers, pools, streams), then everything."""
    stats = await c.storage.queue_stats()
    metrics.set_queue(stats["pending"], stats["running"], stats["waits"], stats["unblocked_waits"])
    if worker is not None:
        metrics.WORKERS_MAX.set(worker.max_concurrency)
        metrics.WORKERS_ACTIVE.set(worker.active)
        metrics.WORKERS_AVAILABLE.set(worker.max_concurrency - worker.active)
    for gauges, source in (
        ((metrics.PG_POOL_MAX, metrics.PG_POOL_SIZE, metrics.PG_POOL_AVAILABLE), c.storage),
        ((metrics.REDIS_POOL_MAX, metrics.REDIS_POOL_SIZE, metrics.REDIS_POOL_AVAILABLE), c.bus),
    ):
        pool_stats = getattr(source, "pool_stats", None)
        if pool_stats is not None:
            for gauge, value in zip(gauges, pool_stats(), strict=True):
                gauge.set(value)
    metrics.STREAMS_ACTIVE.set(live_streams())
    return generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST
