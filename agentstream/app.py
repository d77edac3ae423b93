"""Wiring: choose the backends (the one place that does), build the app, run workers."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from langgraph.store.base import BaseStore
from prometheus_client import start_http_server

from agentstream import __version__, metrics
from agentstream.api import (
    assistants,
    crons,
    errors,
    inspector,
    prune,
    runs,
    store,
    system,
    thread_stream,
    threads,
    v2_commands,
    v2_socket,
    v2_stream,
)
from agentstream.api.auth import Authenticate, Gate, load_gate
from agentstream.api.context import ApiContext
from agentstream.api.deployment import (
    Cors,
    CustomRoutes,
    HeaderPassthrough,
    cors_options,
    disabled_families,
    load_custom_app,
)
from agentstream.api.limits import BodyLimit
from agentstream.api.metrics import RequestMetrics
from agentstream.api.responses import JsonResponse, abort_streams
from agentstream.api.runlane import RunLane
from agentstream.eventbus import EventBus
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.control import Control, LocalControl
from agentstream.execution.executor import Executor
from agentstream.execution.expiry import TtlPolicy
from agentstream.execution.runs import RunService
from agentstream.execution.scheduler import Scheduler
from agentstream.execution.webhooks import WebhookPolicy, WebhookSender
from agentstream.execution.worker import Worker
from agentstream.graphs import Config, GraphRegistry, default_assistant_id, read_config
from agentstream.looplag import LoopWatch
from agentstream.reload import watching
from agentstream.settings import Settings
from agentstream.storage.base import Assistant, Storage, utcnow
from agentstream.storage.memstore import StoreOptions, sqlite_store
from agentstream.storage.sqlite import SqliteStorage
from agentstream.storeconfig import custom_store, custom_store_spec, store_options

if TYPE_CHECKING:  # FastAPI 0.16x's; an older one takes the argument as an extra
    from fastapi.telemetry import TelemetryConfig

log = logging.getLogger("agentstream")


@dataclass
class Backends:
    storage: Storage
    bus: EventBus
    control: Control
    distributed: bool
    store: BaseStore


@asynccontextmanager
async def open_backends(
    settings: Settings, config: Config, options: StoreOptions
) -> AsyncIterator[Backends]:
    """SQLite + in-process bus by default; PostgreSQL + Redis when DATABASE_URI/REDIS_URI say.
    The store lives beside the checkpoints: a file beside the SQLite database, or tables on
    the same PostgreSQL pool; `store.path` in langgraph.json replaces both.

    Closed in the reverse order on the way out, and so is whatever had opened when one of them
    fails to (Redis down: the storage and store opened before it are closed, not leaked)."""
    async with AsyncExitStack() as stack:
        if settings.database_uri:
            from agentstream.storage.memstore import postgres_store
            from agentstream.storage.postgres import PostgresStorage

            postgres = PostgresStorage(settings.database_uri, pool_max=settings.postgres_pool_max)
            storage: Storage = postgres
            stack.push_async_callback(storage.aclose)  # closing tolerates a half-done setup
            await postgres.setup()
            opening = postgres_store(postgres.pool, options)
        else:
            storage = SqliteStorage(settings.database_path())
            stack.push_async_callback(storage.aclose)
            await storage.setup()
            opening = sqlite_store(_store_path(settings.database_path()), options)
        spec = custom_store_spec(config)
        memory = await stack.enter_async_context(custom_store(spec, config) if spec else opening)
        if settings.redis_uri:
            from agentstream.eventbus.redis import RedisEventBus
            from agentstream.execution.control_redis import RedisControl

            bus: EventBus = RedisEventBus(
                settings.redis_uri, settings.event_log_max_events, settings.event_log_keep_seconds
            )
            stack.push_async_callback(bus.aclose)
            redis_control = RedisControl(settings.redis_uri)
            stack.push_async_callback(redis_control.aclose)
            await redis_control.start()
            control: Control = redis_control
        else:
            bus = MemoryEventBus(
                settings.event_log_max_events,
                settings.event_log_keep_seconds,
                int(settings.event_log_max_retained_mb * 1024 * 1024),
            )
            stack.push_async_callback(bus.aclose)
            control = LocalControl()
            stack.push_async_callback(control.aclose)
        distributed = bool(settings.database_uri and settings.redis_uri)
        yield Backends(storage, bus, control, distributed, memory)


@asynccontextmanager
async def running(
    settings: Settings,
    config: Config,
    graphs: GraphRegistry,
    *,
    store: StoreOptions,
    worker: bool,
    grace: Callable[[], float],
    api: bool = True,
) -> AsyncIterator[tuple[Backends, Worker | None]]:
    """What a server or worker process holds while it runs: the backends, the graphs bound to
    the store, their default assistants, and (with `worker`) a worker claiming runs; stopped
    and closed in reverse, the worker's runs given `grace()` seconds (asked when it stops).
    `api=False`: a process that serves no API (`agentstream worker`)."""
    async with AsyncExitStack() as stack:
        backends = await stack.enter_async_context(open_backends(settings, config, store))
        graphs.bind_store(backends.store)
        await ensure_default_assistants(backends.storage, graphs)
        started = None
        if worker:
            started = await start_worker(settings, backends, graphs, alone=not api)
            stop_worker = started.stop
            stack.push_async_callback(lambda: stop_worker(grace=grace()))
            # Runs queued by any process, as the database tells of them (PostgreSQL).
            notices = backends.storage.queued_notices(backends.control.woken)
            await stack.enter_async_context(notices)
            # Crons fire, and expired threads go, where runs execute: the embedded server and
            # every worker process. Stopped before the worker.
            service = RunService(backends.storage, backends.bus, backends.control)
            scheduler = Scheduler(backends.storage, service, ttl=TtlPolicy.from_config(config))
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
        tune_gc(settings.gc_threshold)
        if worker and settings.isolated_loops:
            log.warning(ISOLATED_LOOPS)
        # Watched from here: startup's imports and collection are not a stall.
        watch = LoopWatch(settings.loop_blocked_seconds)
        watch.start()
        stack.callback(watch.stop)
        yield backends, started


# Said where settings.isolated_loops asks for what agentstream does not have.
ISOLATED_LOOPS = (
    "BG_JOB_ISOLATED_LOOPS is set, but agentstream has no isolated loops: every run shares this "
    "process's event loop. Blocking code in an async node holds it (a warning then says where; "
    "AGENTSTREAM_LOOP_BLOCKED_SECONDS): move such calls to a thread (asyncio.to_thread), or "
    "make the node synchronous (def), which LangGraph runs in a thread."
)


def _store_path(database: str) -> str:
    if database == ":memory:":
        return database
    path = Path(database)
    return str(path.with_name(path.stem + ".store" + (path.suffix or ".sqlite")))


async def ensure_default_assistants(storage: Storage, graphs: GraphRegistry) -> None:
    for graph_id in graphs.ids:
        now = utcnow()
        await storage.put_assistant(
            Assistant(
                assistant_id=default_assistant_id(graph_id),
                graph_id=graph_id,
                config={},
                context={},
                metadata={"created_by": "system"},
                name=graph_id,
                description=None,
                version=1,
                created_at=now,
                updated_at=now,
            ),
            if_exists="do_nothing",
        )


def tune_gc(threshold: int) -> None:
    """Fewer garbage collections, none of them over what startup built.

    A stateless run allocates some thousands of containers that die young (dicts, tuples,
    frames of langgraph and of the HTTP stack); with Python's default threshold of 700 the
    collector ran several times per run, and its older generations walked the whole heap of
    modules, graphs and app. Measured with 200 concurrent runs: 1.15 -> 1.02 ms of server CPU
    per run. Cyclic garbage waits a little longer (at most `threshold` allocations);
    everything else is freed at once by reference counting, as before.

    What a collection of the youngest generation costs is the young objects still alive, and
    under load most of them are the runs in flight: at 10,000, 200 stateless runs at once set
    one off every 200 runs or so, each walking some 10,000 objects in 20-27 ms, 8.5 % of the
    server's CPU; at settings.GC_THRESHOLD, above what the worker's runs hold, two in 4,800
    runs (about 1 %).
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


async def start_worker(
    settings: Settings, backends: Backends, graphs: GraphRegistry, *, alone: bool = False
) -> Worker:
    """The process's worker; `alone`, in a process without an API (`agentstream worker`)."""
    if not backends.distributed:
        # One process owns the embedded database: runs a dead process left running resume now
        # instead of after their lease runs out.
        orphans = await backends.storage.expire_leases()
        if orphans:
            log.warning("taking over %d run(s) left running by a previous process", orphans)
    executor = Executor(
        backends.storage,
        backends.bus,
        graphs,
        f"http://{settings.host}:{settings.port}",
        max_attempts=settings.max_attempts,
        webhooks=WebhookSender(WebhookPolicy.from_config(graphs.config)),
        notify_ends=alone,
    )
    worker = Worker(
        backends.storage,
        backends.control,
        executor,
        max_concurrency=settings.max_concurrency,
        lease_seconds=settings.lease_seconds,
    )
    await worker.start()
    return worker


def create_app(settings: Settings) -> FastAPI:
    config = read_config(settings.config)
    graphs = GraphRegistry(config)
    gate = load_gate(config, settings.api_keys)
    cors = cors_options(config)
    user_app = load_custom_app(config)
    disabled = disabled_families(config)
    headers = HeaderPassthrough.from_config(config)
    webhooks = WebhookPolicy.from_config(config)
    ttl = TtlPolicy.from_config(config)  # like the store's config: a mistake stops the start
    store_config = store_options(config)  # a mistake in it stops the start, before serving
    _announce(gate, "cors" in config.http)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def grace() -> float:
            return _grace_left(app, settings)

        serving = running(
            settings, config, graphs, store=store_config, worker=settings.run_workers, grace=grace
        )
        async with serving as (backends, worker), watching(graphs, enabled=settings.reload):
            runs_service = RunService(backends.storage, backends.bus, backends.control, worker)
            app.state.ctx = ApiContext(
                backends.storage, backends.bus, runs_service, graphs, settings, auth=gate,
                headers=headers, store=backends.store, webhooks=webhooks,
            )  # fmt: skip
            app.state.worker = worker
            app.state.ttl = ttl
            app.state.draining_since = None
            # `serve`: its streams end at the commit of their runs' ends in the workers, as the
            # database tells it (PostgreSQL), not a round trip to Redis after it. A process
            # with a worker ends the streams of its own runs itself, and would only pay for
            # hearing of everyone else's.
            ends = (
                nullcontext()
                if worker is not None
                else backends.storage.ended_notices(backends.bus.ended)
            )
            async with ends, _user_lifespan(user_app):
                yield

    app = FastAPI(
        title="agentstream",
        version=__version__,
        lifespan=lifespan,
        default_response_class=JsonResponse,
        telemetry=fastapi_telemetry(os.environ),
    )
    errors.install(app)
    families = {
        "meta": [system],
        "assistants": [assistants],
        "threads": [prune, threads, thread_stream, v2_stream, v2_socket, v2_commands],
        "runs": [runs, crons],
        "store": [store],
    }
    for family, modules in families.items():
        if family not in disabled:
            for module in modules:
                # The routes themselves, not app.include_router(): FastAPI (0.16x) walks an
                # included router's routes through a context of its own on every request, a
                # quarter of the server's CPU for a GET of a run (the Python SDK sends one after
                # every stream); ours have no prefix, dependencies or tags to add.
                app.router.routes.extend(module.router.routes)
    # The last added runs first: CORS answers preflights and labels even a refusal; the body
    # limit also counts what an authenticate handler reads; then the user's own routes
    # (http.app); then the inspector's files; then the gate; then the lane for well-formed
    # run-creating and thread-creating requests (runlane.py); then FastAPI's routes.
    lane = {"runs", "threads"} - set(disabled)
    if lane:
        app.add_middleware(RunLane, families=lane)
    if gate is not None:
        app.add_middleware(Authenticate, gate=gate, router=app.router)
    if inspector.enabled(config):
        app.add_middleware(inspector.InspectorFiles)  # ahead of the gate: the page is public
    if user_app is not None:
        entry = user_app
        if gate is not None and config.http.get("enable_custom_route_auth"):
            entry = Authenticate(user_app, gate=gate, router=user_app.router)
        app.add_middleware(CustomRoutes, user_app=user_app, entry=entry)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(Cors, **cors)
    if "meta" not in disabled:
        app.add_middleware(RequestMetrics)
    return app


def fastapi_telemetry(
    environ: Mapping[str, str], providers: Sequence[object] | None = None
) -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry hooks (its defaults, None) where OpenTelemetry is set up as
    the server starts: an `OTEL_` variable (what `opentelemetry-instrument` and the SDK read),
    or a provider already set (say by the module of a custom app, loaded before this; the
    global tracer, meter and logger providers unless `providers` are given). Else off: with
    nothing set up, FastAPI still asked at every request whether anything was, three lookups
    of the environment, each a KeyError raised and caught (9 us a request)."""
    if any(name.startswith(("OTEL_", "FASTAPI_OTEL_")) for name in environ):
        return None
    if providers is None:
        try:
            from opentelemetry import _logs, metrics, trace
        except ImportError:  # an older FastAPI, without the hooks
            return None
        providers = (
            trace.get_tracer_provider(),
            metrics.get_meter_provider(),
            _logs.get_logger_provider(),
        )
    # Unset, each is OpenTelemetry's own proxy (ProxyTracerProvider, _ProxyMeterProvider, ...);
    # anything else, a vendor's proxy included, is a provider someone set.
    if not all(_otel_proxy(type(p)) for p in providers):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def _otel_proxy(cls: type) -> bool:
    return cls.__module__.startswith("opentelemetry.") and cls.__name__.lstrip("_").startswith(
        "Proxy"
    )


async def drain(app: FastAPI, grace: float) -> None:
    """SIGTERM's first step: /ok answers 503 (load balancers stop sending), the worker claims
    nothing new, and its running runs get up to `grace` seconds while the server keeps serving
    their streams and joins; then the streams still open are cut so their clients resume
    elsewhere (or here, restarted). An API-only process has no runs: it cuts its streams at
    once, since they follow runs that workers elsewhere go on executing."""
    if getattr(app.state, "draining_since", 0) is not None:
        return  # not started yet, or already draining
    app.state.draining_since = time.monotonic()
    worker: Worker | None = getattr(app.state, "worker", None)
    if worker is not None:
        worker.stop_claiming()
        log.warning("draining: no new runs; running ones have %.0f s to finish", grace)
        await worker.idle(grace)
    abort_streams()


def _grace_left(app: FastAPI, settings: Settings) -> float:
    since: float | None = getattr(app.state, "draining_since", None)
    if since is None:
        return settings.shutdown_grace_seconds
    return max(0.0, settings.shutdown_grace_seconds - (time.monotonic() - since))


@asynccontextmanager
async def _user_lifespan(user_app: Any) -> AsyncIterator[None]:
    """The user's app (http.app) starts and stops with ours."""
    if user_app is None:
        yield
        return
    async with user_app.router.lifespan_context(user_app):
        yield


def _announce(gate: Gate | None, cors_configured: bool) -> None:
    if gate is None:
        log.warning(
            "no auth configured (langgraph.json auth.path or AGENTSTREAM_API_KEYS): the server "
            "is open to anyone who can reach it"
        )
    else:
        log.info("auth: %s", gate.description)
    if cors_configured:
        log.info("CORS: cross-origin requests allowed as http.cors says")
    else:
        log.info(
            "CORS: any origin may call this server (as LangGraph's does without http.cors); "
            "set http.cors in langgraph.json to restrict it"
        )


async def run_worker_process(settings: Settings) -> None:
    """`agentstream worker`: claim and execute runs until SIGTERM or SIGINT."""
    config = read_config(settings.config)
    graphs = GraphRegistry(config)
    grace = settings.shutdown_grace_seconds
    working = running(
        settings, config, graphs, store=store_options(config), worker=True,
        grace=lambda: grace, api=False,
    )  # fmt: skip
    async with working as (_, worker):
        assert worker is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if settings.metrics_port:
            try:
                start_http_server(
                    settings.metrics_port, addr=settings.host, registry=metrics.REGISTRY
                )
            except OSError as exc:
                where = f"{settings.host}:{settings.metrics_port}"
                raise SystemExit(f"agentstream: metrics port {where}: {exc.strerror}") from exc
        kind = type(loop).__module__.split(".")[0]  # uvloop, or asyncio
        print(f"agentstream: worker {worker.worker_id} ready (event loop: {kind})", flush=True)
        await stop.wait()
        log.warning("draining: no new runs; running ones have the shutdown grace period")
