"""Run routes: create, stream, wait, join, cancel, list, get, delete; threaded and stateless."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import ValidationError

from agentstream import metrics, serde
from agentstream.api.auth import current_user
from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.models import MAX_INT64, CancelMany, RunCreate
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import EventStreamResponse, HeldJsonResponse, JsonResponse
from agentstream.eventbus import END_MODES, BusUnavailable, EventsEvicted
from agentstream.execution.executor import RESULT_MODE
from agentstream.execution.runs import new_run, wait_body
from agentstream.ids import is_uuid, uuid7
from agentstream.storage.base import TERMINAL, Filter, NotFound, Run

router = APIRouter(route_class=JsonRoute)

Route = Literal["stream", "wait", "create"]
_STRATEGIES = ("reject", "interrupt", "rollback", "enqueue")


def _run_out(run: Run) -> dict[str, Any]:
    return {**run, "langsmith_session_name": None}


def _paths(thread_id: str, run_id: str, temporary: bool) -> tuple[str, str]:
    base = f"/runs/{run_id}" if temporary else f"/threads/{thread_id}/runs/{run_id}"
    return base, f"{base}/stream"


def _stream_modes(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return ["values"]
    return [value] if isinstance(value, str) else list(dict.fromkeys(value))


def _check_route_fields(body: RunCreate, route: Route, threaded: bool) -> tuple[str, str]:
    strategy = body.multitask_strategy if threaded else None
    if strategy is None:
        strategy = "enqueue"
    elif strategy not in _STRATEGIES:
        raise ApiError(422, f"multitask_strategy: {strategy!r} is not one of {list(_STRATEGIES)}")
    on_disconnect = body.on_disconnect if route == "stream" else None
    if on_disconnect is None:
        on_disconnect = "continue"
    elif on_disconnect not in ("cancel", "continue"):
        raise ApiError(
            422, f'on_disconnect: {on_disconnect!r} is not one of "cancel" or "continue"'
        )
    return strategy, on_disconnect


def _config(body: RunCreate, headers: Mapping[str, str]) -> dict[str, Any]:
    config = body.config.model_dump(exclude_unset=True) if body.config else {}
    if headers:  # http.configurable_headers; a header set by a proxy wins over the body's
        config["configurable"] = {**(config.get("configurable") or {}), **headers}
    return config


def _kwargs(body: RunCreate, temporary: bool, headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        "input": body.input,
        "command": body.command.model_dump(exclude_none=True) if body.command else None,
        "config": _config(body, headers),
        "context": body.context or {},
        "stream_mode": _stream_modes(body.stream_mode),
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "webhook": body.webhook,
        "feedback_keys": body.feedback_keys,
        "temporary": temporary,
        "subgraphs": body.stream_subgraphs,
        "resumable": body.stream_resumable,
        "checkpoint_during": body.checkpoint_during,
        "durability": body.durability,
        "checkpoint_id": body.checkpoint_id,
        "checkpoint": body.checkpoint.model_dump(exclude_none=True) if body.checkpoint else None,
        "after_seconds": body.after_seconds,
        "on_completion": body.on_completion,
    }


def _run_value(
    body: RunCreate, thread_id: str, run_id: str, strategy: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    # What a threads.create_run auth handler sees: langgraph_sdk's Auth.types.RunsCreate.
    return {
        "thread_id": thread_id,
        "assistant_id": body.assistant_id,
        "run_id": run_id,
        "status": "pending",
        "metadata": dict(body.metadata or {}),
        "multitask_strategy": strategy,
        "if_not_exists": body.if_not_exists,
        "after_seconds": body.after_seconds or 0,
        "kwargs": kwargs,
    }


async def _create(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None, route: Route
) -> tuple[Run, bool, str]:
    temporary = thread_id is None
    if thread_id is not None and not is_uuid(thread_id):
        raise ApiError(400, "badly formed hexadecimal UUID string")
    if temporary and body.command is not None:
        raise ApiError(400, "You must provide a thread_id when resuming.")
    strategy, on_disconnect = _check_route_fields(body, route, not temporary)
    run_id = uuid7()
    thread_id = thread_id or uuid7()
    headers = c.headers.select(request.headers) if c.headers else {}
    value = _run_value(body, thread_id, run_id, strategy, _kwargs(body, temporary, headers))
    filters = await c.authorize(request, "threads", "create_run", value)
    assistant = await c.resolve_assistant(body.assistant_id, filters=None)
    # What the auth handler left in value is what the run keeps.
    metadata = dict(value.get("metadata") or {})
    kwargs = value.get("kwargs")
    if not isinstance(kwargs, dict):
        kwargs = _kwargs(body, temporary, headers)
    run = new_run(run_id, thread_id, assistant["assistant_id"], kwargs, metadata, strategy)
    thread_metadata = {"graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}
    if c.authorizes("threads", "create_run"):
        # The thread carries what the handler stamped (an owner, say), so a thread this run
        # creates, or a stateless run's temporary one, matches its caller's filter at once.
        thread_metadata = {**metadata, **thread_metadata}
    try:
        await c.runs.create(
            run,
            temporary=temporary,
            if_not_exists=body.if_not_exists,
            auth_user=current_user(request),
            thread_metadata=thread_metadata,
            filters=filters,
        )
    except NotFound:
        raise ApiError(404, "Thread or assistant not found.") from None
    return run, temporary, on_disconnect


def _frames(
    c: ApiContext, run_id: str, after: int | None, modes: frozenset[str] | None, *, wait: bool
) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        try:
            async for batch in c.bus.subscribe(run_id, after, wait=wait):
                chunk = b"".join(
                    e.frame
                    for e in batch
                    if e.mode != RESULT_MODE
                    and (modes is None or e.mode in modes or e.mode in END_MODES)
                )
                if chunk:
                    yield chunk
        except EventsEvicted as exc:
            metrics.EVICTIONS.inc()
            yield _error_frame("EventsEvicted", f"{exc}. Read the thread state to catch up.")
        except BusUnavailable as exc:
            yield _error_frame("BusUnavailable", f"{exc}. Resume with Last-Event-ID later.")

    return generate()


def _error_frame(error: str, message: str) -> bytes:
    data = serde.dumps({"error": error, "message": message})
    return b"event: error\r\ndata: " + data + b"\r\n\r\n"


async def _one_frame(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


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
    run, temporary, on_disconnect = await _create(c, request, body, thread_id, "stream")
    content_location, location = _paths(run["thread_id"], run["run_id"], temporary)
    return EventStreamResponse(
        _frames(c, run["run_id"], 0, None, wait=True),
        headers={"location": location, "content-location": content_location},
        heartbeat_seconds=c.settings.heartbeat_seconds,
        on_disconnect=(
            _canceller(c, run["thread_id"], run["run_id"]) if on_disconnect == "cancel" else None
        ),
    )


async def wait_response(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None
) -> Response:
    run, _, _ = await _create(c, request, body, thread_id, "wait")
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"

    async def result() -> Any:
        return wait_body(await c.runs.result(run["run_id"]))

    return HeldJsonResponse(
        result,
        headers={"location": f"{base}/join", "content-location": base},
        keepalive_seconds=c.settings.heartbeat_seconds,
    )


async def background_response(
    c: ApiContext, request: Request, body: RunCreate, thread_id: str | None
) -> Response:
    run, temporary, _ = await _create(c, request, body, thread_id, "create")
    content_location, _ = _paths(run["thread_id"], run["run_id"], temporary)
    return JsonResponse(_run_out(run), headers={"content-location": content_location})


# --- creating runs ---------------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs/stream")
async def stream_threaded(
    thread_id: str, request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await stream_response(c, request, body, thread_id)


@router.post("/runs/stream")
async def stream_stateless(
    request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await stream_response(c, request, body, None)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_threaded(
    thread_id: str, request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await wait_response(c, request, body, thread_id)


@router.post("/runs/wait")
async def wait_stateless(
    request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await wait_response(c, request, body, None)


@router.post("/threads/{thread_id}/runs")
async def create_threaded(
    thread_id: str, request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await background_response(c, request, body, thread_id)


@router.post("/runs")
async def create_stateless(
    request: Request, body: RunCreate, c: ApiContext = Depends(ctx)
) -> Response:
    return await background_response(c, request, body, None)


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
        run, _, _ = await _create(c, request, body, None, "create")
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


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    try:
        return max(int(raw.strip()), 0)
    except ValueError:
        return 0  # an id from another server: replay what we have rather than guess


def _join_modes(request: Request) -> frozenset[str] | None:
    # Repeated keys: the last one counts; a JSON array (the JS SDK) names several modes.
    values = request.query_params.getlist("stream_mode")
    raw = values[-1] if values else ""
    if not raw:
        return None
    if raw.startswith("["):
        try:
            parsed = serde.loads(raw)
        except ValueError:
            return frozenset()
        if isinstance(parsed, list):
            return frozenset(str(m) for m in parsed) or None
        return frozenset()
    return frozenset({raw})


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def _join_stream(
    c: ApiContext, request: Request, thread_id: str | None, run_id: str
) -> Response:
    require_uuid(run_id, "run")
    if thread_id is not None:
        require_uuid(thread_id, "thread")
    base = f"/threads/{thread_id}/runs/{run_id}" if thread_id else f"/runs/{run_id}"
    headers = {"location": f"{base}/stream", "content-location": base}
    last_id = _last_event_id(request)
    if thread_id is None and last_id is None:
        # A stateless run's stream URL is what the SDK reconnects to; a stream that broke
        # before its first event sends no Last-Event-ID, and "live from now" would lose every
        # event it never saw. Nobody else joins a stateless run: replay it from its start.
        last_id = 0
    modes = _join_modes(request)
    metrics.JOINS.inc()
    if last_id:
        metrics.RESUMES.inc()
    run, _ = await _find_run(c, request, thread_id, run_id)
    if run is None:
        _hidden_run_is_404(c)
        if await _stateless_log_outlived_its_run(c, thread_id, run_id, last_id):
            # The SDK reconnects a second or more after a cut; a short stateless run has ended
            # and taken its temporary thread along by then, but its log is still kept.
            body = _frames(c, run_id, last_id, modes, wait=True)
        else:
            body = _one_frame(_error_frame("HTTPException", "404: Run not found"))
        return EventStreamResponse(
            body, headers=headers, heartbeat_seconds=c.settings.heartbeat_seconds
        )
    finished = run["status"] in TERMINAL
    if finished and last_id is None:
        body = _empty()
    else:
        after = last_id if last_id is not None else await c.bus.last_seq(run_id)
        body = _frames(c, run_id, after, modes, wait=not finished)
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


def _hidden_run_is_404(c: ApiContext) -> None:
    # The open server answers an unknown run's join with 200 and an error, as LangGraph Server
    # does. Where auth handlers decide who reads what, a run the caller may not see, like one
    # that does not exist, is a plain 404 before any stream or held response starts.
    if c.authorizes("threads", "read"):
        raise ApiError(404, "Run not found")


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


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
    base = f"/threads/{thread_id}/runs/{run_id}"
    headers = {"location": f"{base}/join", "content-location": base}
    run, _ = await _find_run(c, request, thread_id, run_id)
    if run is None:
        _hidden_run_is_404(c)
        missing = {"__error__": {"error": "HTTPException", "message": "404: Run not found"}}
        return JsonResponse(missing, headers=headers)

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
    action: Literal["interrupt", "rollback"] = "interrupt",
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
    base = f"/threads/{thread_id}/runs/{run_id}"

    async def finished() -> Any:
        await c.runs.result(run_id)
        return {}

    return HeldJsonResponse(
        finished,
        headers={"location": f"{base}/join"},
        keepalive_seconds=c.settings.heartbeat_seconds,
    )


@router.post("/runs/cancel")
async def cancel_many(
    request: Request,
    body: CancelMany,
    action: Literal["interrupt", "rollback"] = "interrupt",
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
