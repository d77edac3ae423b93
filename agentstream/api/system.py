"""System routes: health (/ok and /), server information (/info) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import langgraph.version
from fastapi import APIRouter, Depends, Request, Response

from agentstream import __version__
from agentstream.api.context import ApiContext, ctx
from agentstream.api.metrics import render as render_metrics
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import JsonResponse

router = APIRouter(route_class=JsonRoute)


@router.get("/ok")
async def ok(request: Request, check_db: int = 0, c: ApiContext = Depends(ctx)) -> JsonResponse:
    """Liveness and readiness: 503 while the process drains (SIGTERM), and with check_db=1 while
    the database or the event bus does not answer."""
    if getattr(request.app.state, "draining_since", None) is not None:
        return JsonResponse({"ok": False, "draining": True}, status_code=503)
    if not check_db:
        return JsonResponse({"ok": True, "services": {}})
    services = {"database": await _answers(c.storage.next_due())}
    services["event_bus"] = await _answers(c.bus.last_seq("agentstream-health"))
    healthy = all(state == "ok" for state in services.values())
    return JsonResponse({"ok": healthy, "services": services}, status_code=200 if healthy else 503)


async def _answers(probe: Awaitable[Any]) -> str:
    try:
        async with asyncio.timeout(5):
            await probe
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/")
async def root() -> JsonResponse:
    # The real server answers / exactly as it answers /ok.
    return JsonResponse({"ok": True, "services": {}})


@router.get("/info")
async def info(c: ApiContext = Depends(ctx)) -> JsonResponse:
    store: Any = c.store
    return JsonResponse(
        {
            "version": __version__,
            "langgraph_py_version": langgraph.version.__version__,
            "flags": {
                "assistants": True,
                "crons": True,
                "langsmith": False,
                # The store's routes, semantic search (store.index) and expiry (store.ttl).
                "store": store is not None,
                "store_semantic_search": bool(getattr(store, "index_config", None)),
                "store_ttl": bool(getattr(store, "ttl_config", None)),
            },
            "host": {
                "kind": "self-hosted",
                "project_id": None,
                "host_revision_id": None,
                "revision_id": None,
                "tenant_id": None,
            },
        }
    )


@router.get("/metrics")
async def metrics(request: Request, c: ApiContext = Depends(ctx)) -> Response:
    # A process that serves the API without workers (`agentstream serve`) has no worker.
    body, media_type = await render_metrics(c, getattr(request.app.state, "worker", None))
    return Response(content=body, media_type=media_type)
