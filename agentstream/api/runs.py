"""Run routes: create, stream, wait, join, cancel, list, get, delete; threaded and stateless.

The six run-creating routes are declared once, in RUN_CREATE: FastAPI serves them from it (for
OpenAPI and for bodies the lane leaves alone) and so does the run lane (api/runlane.py), which
answers a well-formed request before FastAPI's router sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import ValidationError

from agentstream import metrics, protocol
from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.models import MAX_INT64, CancelMany, RunCreate
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import EventStreamResponse, HeldJsonResponse, JsonResponse
from agentstream.api.run_create import create_run
from agentstream.api.streams import from_start, no_frames, one_frame, run_frames
from agentstream.protocol import CancelAction, location_headers, wait_body
from agentstream.storage.base import TERMINAL, Filter, NotFound, Run

router = APIRouter(route_class=JsonRoute)


def _run_out(run: Run) -> dict[str, Any]:
    return {**run, "langsmith_session_name": None}


def _canceller(c: ApiContext, thread_id: str, run_id: str) -> Callable[[], Awaitable[None]]:
    async def cancel() -> None:
        try:
            run = await c.storage.get_run(thread_id, run_id)
        except NotFound:
            return
        if run["status"] not in TERMINAL:
            await c.runs.cancel(run, "interrupt")

    return cancel


async def stream_response(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None
) -> Response:
    run, temporary, on_disconnect, due_now = await create_run(c, request, body, thread_id, "stream")
    named = None if temporary else run["thread_id"]
    # A run that waits for others on its thread (or for its time) says nothing until it starts,
    # as on the real server; one due now, its metadata at once.
    frames = (
        from_start(c.bus, run["run_id"])
        if due_now
        else run_frames(c.bus, run["run_id"], 0, None, wait=True)
    )
    return EventStreamResponse(
        frames,
        headers=location_headers("stream", named, run["run_id"]),
        heartbeat_seconds=c.settings.heartbeat_seconds,
        on_disconnect=(
            _canceller(c, run["thread_id"], run["run_id"]) if on_disconnect == "cancel" else None
        ),
    )


async def wait_response(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None
) -> Response:
    run = (await create_run(c, request, body, thread_id, "wait")).run

    async def result() -> Any:
        return wait_body(await c.runs.result(run["run_id"]))

    return HeldJsonResponse(
        result,
        headers=location_headers("wait", run["thread_id"], run["run_id"]),
        keepalive_seconds=c.settings.heartbeat_seconds,
    )


async def background_response(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None
) -> Response:
    run, temporary, _, _ = await create_run(c, request, body, thread_id, "create")
    named = None if temporary else run["thread_id"]
    return JsonResponse(_run_out(run), headers=location_headers("create", named, run["run_id"]))


# --- creating runs ---------------------------------------------------------------------------

Handler = Callable[[ApiContext, Request, RunCreate, "str | None"], Awaitable[Response]]


@dataclass(frozen=True)
class RunCreateRoute:
    name: str  # the FastAPI route's name, hence its OpenAPI operation id
    path: str
    handle: Handler  # (context, request, body, thread_id or None for a stateless run)

    @property
    def threaded(self) -> bool:
        return self.path.startswith("/threads/{thread_id}/")


# Every route that creates a run. Their only dependency is `ctx`, which the lane supplies
# itself (tests/test_runlane.py holds them to that).
RUN_CREATE = (
    RunCreateRoute("stream_threaded", "/threads/{thread_id}/runs/stream", stream_response),
    RunCreateRoute("stream_stateless", "/runs/stream", stream_response),
    RunCreateRoute("wait_threaded", "/threads/{thread_id}/runs/wait", wait_response),
    RunCreateRoute("wait_stateless", "/runs/wait", wait_response),
    RunCreateRoute("create_threaded", "/threads/{thread_id}/runs", background_response),
    RunCreateRoute("create_stateless", "/runs", background_response),
)


def _endpoint(route: RunCreateRoute) -> Callable[..., Awaitable[Response]]:
    handle = route.handle
    if route.threaded:

        async def threaded(
            thread_id: str, request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
        ) -> Response:
            return await handle(c, request, body, thread_id)

        return threaded

    async def stateless(
        request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
    ) -> Response:
        return await handle(c, request, body, None)

    return stateless


for _route in RUN_CREATE:
    router.add_api_route(_route.path, _endpoint(_route), methods=["POST"], name=_route.name)


@router.post("/runs/batch")
async def create_batch(
    request: Request, payloads: list[dict[str, Any]] = Body(...), c: ApiContext = Depends(ctx)
) -> Response:
    bodies = []
    for payload in payloads:
        try:
            bodies.append(RunCreate.model_validate(payload))
        except ValidationError as exc:
            raise ApiError(422, str(exc.errors()[0].get("msg"))) from None
    runs = []
    for body in bodies:
        run = (await create_run(c, request, body, None, "create")).run
        runs.append(_run_out(run))
    return JsonResponse(runs)


# --- reading runs ----------------------------------------------------------------------------


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    request: Request,
    limit: int = Query(10, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_INT64),
    status: str | None = None,
    c: ApiContext = Depends(ctx),
) -> Response:
    require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
    runs = await c.storage.list_runs(
        thread_id, limit=limit, offset=offset, status=status, filters=filters
    )
    return JsonResponse([_run_out(r) for r in runs])


async def _find_run(
    c: ApiContext,
    request: Request,
    thread_id: str | None,
    run_id: str,
    action: str = "read",
    extra: dict[str, Any] | None = None,
) -> tuple[Run | None, Filter | None]:
    """The run as this caller may see it, None when it is hidden or absent (the same thing to
    the caller), and the caller's filter for what the route does next."""
    value = {"thread_id": thread_id, "run_id": run_id, **(extra or {})}
    filters = await c.authorize(request, "threads", action, value)
    try:
        return await c.storage.get_run(thread_id, run_id, filters=filters), filters
    except NotFound:
        return None, filters


async def _get_run(
    c: ApiContext, request: Request, thread_id: str, run_id: str, action: str = "read"
) -> tuple[Run, Filter | None]:
    require_uuid(thread_id, "thread")
    require_uuid(run_id, "run")
    run, filters = await _find_run(c, request, thread_id, run_id, action)
    if run is None:
        raise ApiError(404, "Not Found")
    return run, filters


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(
    thread_id: str, run_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    run, _ = await _get_run(c, request, thread_id, run_id)
    return JsonResponse(_run_out(run))


@router.delete("/threads/{thread_id}/runs/{run_id}")
async def delete_run(
    thread_id: str, run_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    run, filters = await _get_run(c, request, thread_id, run_id, "delete")
    if run["status"] not in TERMINAL:
        raise ApiError(409, "Run is still pending or running; cancel it before deleting it.")
    await c.storage.delete_run(thread_id, run_id, filters=filters)
    await c.bus.delete(run_id)
    return Response(status_code=204)


# --- joining runs ----------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def _join_stream(
    c: ApiContext, request: Request, thread_id: str | None, run_id: str
) -> Response:
    require_uuid(run_id, "run")
    if thread_id is not None:
        require_uuid(thread_id, "thread")
    headers = location_headers("stream", thread_id, run_id)
    last_id = protocol.last_event_id(request.headers.get("last-event-id"))
    if thread_id is None and last_id is None:
        # A stateless run's stream URL is what the SDK reconnects to; a stream that broke
        # before its first event sends no Last-Event-ID, and "live from now" would lose every
        # event it never saw. Nobody else joins a stateless run: replay it from its start.
        last_id = 0
    modes = protocol.join_modes(request.query_params.getlist("stream_mode"))
    metrics.JOINS.inc()
    if last_id:
        metrics.RESUMES.inc()
    run, _ = await _find_run(c, request, thread_id, run_id)
    if run is None:
        _hidden_run_is_404(c, run_id)
        if await _stateless_log_outlived_its_run(c, thread_id, run_id, last_id):
            # The SDK reconnects a second or more after a cut; a short stateless run has ended
            # and taken its temporary thread along by then, but its log is still kept.
            body = run_frames(c.bus, run_id, last_id, modes, wait=True)
        else:
            body = one_frame(protocol.run_not_found_frame())
        return EventStreamResponse(
            body, headers=headers, heartbeat_seconds=c.settings.heartbeat_seconds
        )
    finished = run["status"] in TERMINAL
    if finished and last_id is None:
        body = no_frames()
    else:
        after = last_id if last_id is not None else await c.bus.last_seq(run_id)
        body = run_frames(c.bus, run_id, after, modes, wait=not finished)
    cancel = _truthy(request.query_params.get("cancel_on_disconnect"))
    return EventStreamResponse(
        body,
        headers=headers,
        heartbeat_seconds=c.settings.heartbeat_seconds,
        on_disconnect=_canceller(c, run["thread_id"], run_id) if cancel else None,
    )


async def _stateless_log_outlived_its_run(
    c: ApiContext, thread_id: str | None, run_id: str, last_id: int | None
) -> bool:
    # Only where nobody's reads are restricted: a removed run no longer says whose it was.
    return (
        thread_id is None
        and last_id is not None
        and not c.authorizes("threads", "read")
        and await c.bus.last_seq(run_id) > 0
    )


def _hidden_run_is_404(c: ApiContext, run_id: str) -> None:
    # The open server answers an unknown run's join with 200 and an error, as LangGraph Server
    # does. Where auth handlers decide who reads what, a run the caller may not see, like one
    # that does not exist, is a plain 404 before any stream or held response starts.
    if c.authorizes("threads", "read"):
        raise NotFound("run", run_id)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(
    thread_id: str, run_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    return await _join_stream(c, request, thread_id, run_id)


@router.get("/runs/{run_id}/stream")
async def join_stream_stateless(
    run_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    # The real server names this URL in a stateless stream's Location but does not serve it;
    # the JS SDK's joinStream(null, runId) and reconnects use it, so we do.
    return await _join_stream(c, request, None, run_id)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join(
    thread_id: str, run_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    require_uuid(thread_id, "thread")
    require_uuid(run_id, "run")
    headers = location_headers("join", thread_id, run_id)
    run, _ = await _find_run(c, request, thread_id, run_id)
    if run is None:
        _hidden_run_is_404(c, run_id)
        return JsonResponse({"__error__": protocol.RUN_NOT_FOUND}, headers=headers)

    async def result() -> Any:
        finished = run["status"] in TERMINAL
        found = await c.runs.result(run_id, wait=not finished)
        if found is None:
            thread = await c.storage.get_thread(thread_id)
            return thread["values"]
        return wait_body(found)

    return HeldJsonResponse(result, headers=headers, keepalive_seconds=c.settings.heartbeat_seconds)


# --- cancelling runs -------------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    request: Request,
    wait: str | None = None,
    action: CancelAction = "interrupt",
    c: ApiContext = Depends(ctx),
) -> Response:
    require_uuid(thread_id, "thread")
    require_uuid(run_id, "run")
    run, _ = await _find_run(c, request, thread_id, run_id, "update", {"action": action})
    if run is None:
        raise ApiError(404, "No runs found to cancel.")
    if run["status"] in TERMINAL:
        raise ApiError(
            404,
            "No matching runs to cancel. Please verify the thread ID and run IDs are correct, "
            "and the runs haven't been deleted or completed.",
        )
    await c.runs.cancel(run, action)
    if not _truthy(wait):
        return Response(status_code=202)

    async def finished() -> Any:
        await c.runs.result(run_id)
        return {}

    return HeldJsonResponse(
        finished,
        headers=location_headers("cancel", thread_id, run_id),
        keepalive_seconds=c.settings.heartbeat_seconds,
    )


@router.post("/runs/cancel")
async def cancel_many(
    request: Request,
    body: CancelMany,
    action: CancelAction = "interrupt",
    c: ApiContext = Depends(ctx),
) -> Response:
    if body.thread_id is None and body.run_ids is None and body.status is None:
        raise ApiError(422, "Provide thread_id with run_ids, or status")
    filters = await c.authorize(request, "threads", "update", body.model_dump(exclude_none=True))
    runs = await c.storage.inflight_runs(
        thread_id=body.thread_id,
        run_ids=body.run_ids,
        status=None if body.status == "all" else body.status,
        filters=filters,
    )
    if not runs:
        raise ApiError(404, "No runs found to cancel.")
    for run in runs:
        await c.runs.cancel(run, action)
    return Response(status_code=204)
