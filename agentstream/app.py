"""Wiring: choose the backends, build the FastAPI app, start and stop workers with it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agentstream import __version__
from agentstream.api import assistants, errors, runs, system, thread_stream, threads
from agentstream.api.context import ApiContext
from agentstream.api.limits import BodyLimit
from agentstream.api.responses import JsonResponse
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.control import LocalControl
from agentstream.execution.executor import Executor
from agentstream.execution.runs import RunService
from agentstream.execution.worker import Worker
from agentstream.graphs import GraphRegistry, default_assistant_id, read_config
from agentstream.settings import Settings
from agentstream.storage.base import Assistant, Storage, utcnow
from agentstream.storage.sqlite import SqliteStorage

log = logging.getLogger("agentstream")


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


def create_app(settings: Settings) -> FastAPI:
    graphs = GraphRegistry(read_config(settings.config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = SqliteStorage(settings.database_path())
        await storage.setup()
        bus = MemoryEventBus(settings.event_log_max_events, settings.event_log_keep_seconds)
        control = LocalControl()
        await ensure_default_assistants(storage, graphs)
        # One process owns the SQLite file: runs left running by a previous process resume now.
        orphans = await storage.expire_leases()
        if orphans:
            log.warning("taking over %d run(s) left running by a previous process", orphans)
        executor = Executor(storage, bus, graphs, f"http://{settings.host}:{settings.port}")
        worker = Worker(
            storage,
            control,
            executor,
            max_concurrency=settings.max_concurrency,
            lease_seconds=settings.lease_seconds,
        )
        app.state.ctx = ApiContext(
            storage, bus, RunService(storage, bus, control), graphs, settings
        )
        app.state.worker = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()
            await control.aclose()
            await bus.aclose()
            await storage.aclose()

    app = FastAPI(
        title="agentstream",
        version=__version__,
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for module in (system, assistants, threads, thread_stream, runs):
        app.include_router(module.router)
    return app
