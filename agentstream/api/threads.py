"""Thread routes: create, search, count, get, patch, delete, copy; a thread's state and history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import Command
from langgraph.types import StateUpdate as GraphUpdate

from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.models import (
    Checkpoint,
    HistoryQuery,
    StateCheckpoint,
    StateUpdate,
    ThreadCount,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
)
from agentstream.api.prune import apply_ttl
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import JsonResponse
from agentstream.api.state import read_state, refresh_thread, state_to_dict, stateful, thread_config
from agentstream.ids import uuid7
from agentstream.storage.base import Filter, Thread

router = APIRouter(route_class=JsonRoute)


class _StateAt(StateCheckpoint):
    select: list[str] | None = None


class _History(HistoryQuery):
    select: list[str] | None = None


# --- shared helpers (assistants.py reuses some) ------------------------------------------------


def pick(item: Mapping[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    """Only the selected keys; a dotted path (`values.messages`) selects inside a mapping."""
    if not select:
        return dict(item)
    out: dict[str, Any] = {}
    for path in select:
        *parents, last = path.split(".")
        source: Any = item
        target = out
        for key in parents:
            source = source.get(key) if isinstance(source, Mapping) else None
            target = target.setdefault(key, {})
        if isinstance(source, Mapping) and last in source:
            target[last] = source[last]
    return out


def search_headers(offset: int, returned: int, total: int) -> dict[str, str]:
    headers = {"x-pagination-total": str(total)}
    if offset + returned < total:
        headers["x-pagination-next"] = str(offset + returned)
    return headers


async def _thread(
    c: ApiContext, request: Request, thread_id: str, action: str, **value: Any
) -> tuple[Thread, Filter | None]:
    require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", action, {"thread_id": thread_id, **value})
    return await c.storage.get_thread(thread_id, filters=filters), filters


# --- threads -------------------------------------------------------------------------------


def _supersteps(raw: list[dict[str, Any]]) -> list[list[GraphUpdate]]:
    steps = []
    for step in raw:
        updates = []
        for update in step.get("updates") or []:
            command = update.get("command")
            if command:
                values: Any = Command(**{k: v for k, v in command.items() if v is not None})
            else:
                values = update.get("values")
            updates.append(GraphUpdate(values, update.get("as_node")))
        steps.append(updates)
    return steps


async def _apply_supersteps(
    c: ApiContext, thread: Thread, supersteps: list[dict[str, Any]]
) -> None:
    config = thread_config(thread["thread_id"])
    async with stateful(c, thread, config) as graph:
        if graph is None:
            raise ApiError(422, "supersteps need the thread's metadata to name a graph_id")
        await graph.abulk_update_state(config, _supersteps(supersteps))
        await refresh_thread(c, graph, thread["thread_id"])


@router.post("/threads")
async def create_thread(
    request: Request, body: ThreadCreate, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    thread_id = require_uuid(body.thread_id, "thread") if body.thread_id else uuid7()
    value = {**body.model_dump(), "thread_id": thread_id, "metadata": dict(body.metadata or {})}
    filters = await c.authorize(request, "threads", "create", value)
    if body.supersteps and value["metadata"].get("graph_id") not in c.graphs:
        raise ApiError(422, "supersteps need metadata.graph_id to name a graph")
    thread = await c.storage.create_thread(
        thread_id, metadata=value["metadata"], if_exists=body.if_exists, filters=filters
    )
    await apply_ttl(c, request, thread_id, body.ttl, default=True)
    # Supersteps seed a new thread's checkpoints; a thread that already had state
    # (if_exists=do_nothing) keeps it.
    if body.supersteps and thread["values"] is None:
        await _apply_supersteps(c, thread, body.supersteps)
        thread = await c.storage.get_thread(thread_id, filters=filters)
    return JsonResponse(thread)


@router.post("/threads/search")
async def search_threads(
    request: Request, body: ThreadSearch, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    for thread_id in body.ids or ():
        require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", "search", body.model_dump())
    found, total = await c.storage.search_threads(
        ids=body.ids,
        metadata=body.metadata,
        values=body.values,
        status=body.status,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        filters=filters,
    )
    items = [pick(t, body.select) for t in found]
    return JsonResponse(items, headers=search_headers(body.offset, len(found), total))


@router.post("/threads/count")
async def count_threads(
    request: Request, body: ThreadCount, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    filters = await c.authorize(request, "threads", "search", body.model_dump())
    _, total = await c.storage.search_threads(
        ids=None,
        metadata=body.metadata,
        values=body.values,
        status=body.status,
        limit=1,
        offset=0,
        sort_by=None,
        sort_order=None,
        filters=filters,
    )
    return JsonResponse(total)


@router.get("/threads/{thread_id}")
async def get_thread(
    request: Request, thread_id: str, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    thread, _ = await _thread(c, request, thread_id, "read")
    return JsonResponse(thread)


@router.patch("/threads/{thread_id}")
async def patch_thread(
    request: Request, thread_id: str, body: ThreadPatch, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    metadata = dict(body.metadata)
    _, filters = await _thread(c, request, thread_id, "update", metadata=metadata)
    thread = await c.storage.patch_thread(thread_id, metadata, filters=filters)
    await apply_ttl(c, request, thread_id, body.ttl, default=False)
    return JsonResponse(thread)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread_route(
    request: Request, thread_id: str, c: ApiContext = Depends(ctx)
) -> Response:
    _, filters = await _thread(c, request, thread_id, "delete")
    await c.runs.delete_thread(thread_id, filters)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/copy")
async def copy_thread(
    request: Request, thread_id: str, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    _, filters = await _thread(c, request, thread_id, "read")
    copied = await c.storage.copy_thread(thread_id, uuid7(), filters=filters)
    return JsonResponse(copied)


# --- state and history ---------------------------------------------------------------------


@router.get("/threads/{thread_id}/state")
async def get_state(
    request: Request,
    thread_id: str,
    subgraphs: bool = False,
    select: list[str] | None = Query(None),
    c: ApiContext = Depends(ctx),
) -> JsonResponse:
    thread, _ = await _thread(c, request, thread_id, "read")
    state = await read_state(c, thread, thread_config(thread_id), subgraphs)
    return JsonResponse(pick(state, select))


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(
    request: Request,
    thread_id: str,
    checkpoint_id: str,
    subgraphs: bool = False,
    select: list[str] | None = Query(None),
    c: ApiContext = Depends(ctx),
) -> JsonResponse:
    thread, _ = await _thread(c, request, thread_id, "read")
    config = thread_config(thread_id, Checkpoint(checkpoint_id=checkpoint_id))
    state = await read_state(c, thread, config, subgraphs)
    return JsonResponse(pick(state, select))


@router.post("/threads/{thread_id}/state/checkpoint")
async def post_state_at(
    request: Request, thread_id: str, body: _StateAt, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    # RemoteGraph sends a checkpoint without checkpoint_id: that is the latest state.
    thread, _ = await _thread(c, request, thread_id, "read")
    state = await read_state(c, thread, thread_config(thread_id, body.checkpoint), body.subgraphs)
    return JsonResponse(pick(state, body.select))


@router.post("/threads/{thread_id}/state")
async def update_state(
    request: Request, thread_id: str, body: StateUpdate, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    thread, filters = await _thread(c, request, thread_id, "update", values=body.values)
    # As on the real server: a run in flight would race the update, so it is refused.
    inflight = await c.storage.inflight_runs(
        thread_id=thread_id, run_ids=None, status=None, filters=filters
    )
    if inflight:
        run_ids = [run["run_id"] for run in inflight]
        raise ApiError(409, f"Thread {thread_id} has in-flight runs: {run_ids}")
    checkpoint = body.checkpoint or Checkpoint()
    if body.checkpoint_id:
        checkpoint = checkpoint.model_copy(update={"checkpoint_id": body.checkpoint_id})
    config = thread_config(thread_id, checkpoint)
    async with stateful(c, thread, config) as graph:
        if graph is None:
            raise ApiError(400, "Thread has no graph ID.")
        try:
            updated = await graph.aupdate_state(config, body.values, as_node=body.as_node)
        except InvalidUpdateError as exc:  # an unknown or ambiguous as_node
            raise ApiError(400, str(exc)) from None
        await refresh_thread(c, graph, thread_id)
    conf = updated.get("configurable") or {}
    keys = ("thread_id", "checkpoint_ns", "checkpoint_id")
    return JsonResponse({"checkpoint": {k: conf.get(k) for k in keys}})


async def _history(
    c: ApiContext,
    thread: Thread,
    query: HistoryQuery,
    select: list[str] | None,
) -> JsonResponse:
    config = thread_config(thread["thread_id"], query.checkpoint)
    before = query.before
    if isinstance(before, Checkpoint):
        before = before.checkpoint_id
    before_config: RunnableConfig | None = (
        {"configurable": {"checkpoint_id": before}} if before else None
    )
    states: list[dict[str, Any]] = []
    async with stateful(c, thread, config) as graph:
        if graph is not None:
            async for snapshot in graph.aget_state_history(
                config, filter=query.metadata, before=before_config, limit=query.limit
            ):
                states.append(pick(state_to_dict(snapshot), select))
    return JsonResponse(states)


@router.get("/threads/{thread_id}/history")
async def get_history(
    request: Request,
    thread_id: str,
    limit: int = Query(10, ge=1, le=1000),
    before: str | None = None,
    c: ApiContext = Depends(ctx),
) -> JsonResponse:
    thread, _ = await _thread(c, request, thread_id, "read")
    return await _history(c, thread, HistoryQuery(limit=limit, before=before), None)


@router.post("/threads/{thread_id}/history")
async def post_history(
    request: Request, thread_id: str, body: _History, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    thread, _ = await _thread(c, request, thread_id, "read")
    return await _history(c, thread, body, body.select)
