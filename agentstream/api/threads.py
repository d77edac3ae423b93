"""Thread routes: create, search, count, get, patch, delete, copy; a thread's state and history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.pregel import Pregel
from langgraph.types import Command, Interrupt, PregelTask, StateSnapshot
from langgraph.types import StateUpdate as GraphUpdate

from agentstream import serde
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
from agentstream.ids import uuid7
from agentstream.storage.base import Filter, Thread

router = APIRouter(route_class=JsonRoute)

Graph = Pregel[Any, Any, Any, Any]

EMPTY_STATE: dict[str, Any] = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": {},
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}


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


# How long a thread's delete waits for its cancelled runs to stop before deleting anyway (a
# worker that died holds its run until the lease runs out).
SETTLE_SECONDS = 10.0


async def delete_thread(c: ApiContext, thread_id: str, filters: Filter | None) -> None:
    # Cancel what still runs on the thread first, and wait until each run has stopped: a run
    # being cancelled may still have a checkpoint write in flight, and if that lands after the
    # delete, a new thread with the same id starts from the old one's state.
    inflight = await c.storage.inflight_runs(
        thread_id=thread_id, run_ids=None, status=None, filters=filters
    )
    for run in inflight:
        await c.runs.cancel(run, "interrupt")
    if inflight:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS):
                for run in inflight:
                    await c.runs.wait_closed(run["run_id"])
    await c.storage.delete_thread(thread_id, filters=filters)


async def _thread(
    c: ApiContext, request: Request, thread_id: str, action: str, **value: Any
) -> tuple[Thread, Filter | None]:
    require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", action, {"thread_id": thread_id, **value})
    return await c.storage.get_thread(thread_id, filters=filters), filters


# --- state: StateSnapshot to the wire --------------------------------------------------------


def _checkpoint(config: RunnableConfig | None) -> dict[str, Any] | None:
    conf = (config or {}).get("configurable") or {}
    if not conf.get("checkpoint_id"):
        return None
    out = {
        "checkpoint_id": conf["checkpoint_id"],
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
    }
    if conf.get("checkpoint_map"):
        out["checkpoint_map"] = conf["checkpoint_map"]
    return out


def _interrupt(interrupt: Interrupt) -> dict[str, Any]:
    return {"id": interrupt.id, "value": interrupt.value}


def _error(error: Any) -> str | None:
    if error is None:
        return None
    return repr(error) if isinstance(error, BaseException) else str(error)


def _task(task: PregelTask) -> dict[str, Any]:
    # A subgraph task carries either its own snapshot (subgraphs=true) or a config naming it.
    state = task.state
    where = None
    if state is not None and not isinstance(state, StateSnapshot):
        where = dict(state.get("configurable") or {}) or None
    return {
        "id": task.id,
        "name": task.name,
        "path": list(task.path),
        "error": _error(task.error),
        "interrupts": [_interrupt(i) for i in task.interrupts],
        "checkpoint": where,
        "state": state_to_dict(state) if isinstance(state, StateSnapshot) else None,
        "result": task.result,
    }


def state_to_dict(snapshot: StateSnapshot) -> dict[str, Any]:
    """A StateSnapshot in the shape of LangGraph Server's ThreadState."""
    checkpoint = _checkpoint(snapshot.config)
    parent = _checkpoint(snapshot.parent_config)
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": [_task(t) for t in snapshot.tasks],
        "metadata": snapshot.metadata or {},
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [_interrupt(i) for i in snapshot.interrupts],
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def _config(thread_id: str, checkpoint: Checkpoint | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint is not None:
        for key in ("checkpoint_ns", "checkpoint_id", "checkpoint_map"):
            if getattr(checkpoint, key):
                conf[key] = getattr(checkpoint, key)
    return {"configurable": conf}


@asynccontextmanager
async def _stateful(
    c: ApiContext, thread: Thread, config: RunnableConfig
) -> AsyncIterator[Graph | None]:
    """The thread's graph with our checkpointer; None for a thread no run has touched."""
    graph_id = (thread["metadata"] or {}).get("graph_id")
    if not isinstance(graph_id, str) or graph_id not in c.graphs:
        yield None
        return
    graph = await c.graphs.get(graph_id, config)
    async with c.storage.checkpointer() as saver:
        yield graph.copy(update={"checkpointer": saver})


async def _read_state(
    c: ApiContext, thread: Thread, config: RunnableConfig, subgraphs: bool
) -> dict[str, Any]:
    async with _stateful(c, thread, config) as graph:
        if graph is None:
            return dict(EMPTY_STATE)
        snapshot = await graph.aget_state(config, subgraphs=subgraphs)
    return state_to_dict(snapshot)


async def _refresh_thread(c: ApiContext, graph: Graph, thread_id: str) -> None:
    """Keep the thread row's cached values and interrupts in step with its checkpoints."""
    snapshot = await graph.aget_state(_config(thread_id))
    interrupts = {
        task.id: [_interrupt(i) for i in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }
    await c.storage.set_thread_state(
        thread_id,
        values=serde.to_jsonable(snapshot.values),
        interrupts=serde.to_jsonable(interrupts),
        status=None,
    )


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
    config = _config(thread["thread_id"])
    async with _stateful(c, thread, config) as graph:
        if graph is None:
            raise ApiError(422, "supersteps need the thread's metadata to name a graph_id")
        await graph.abulk_update_state(config, _supersteps(supersteps))
        await _refresh_thread(c, graph, thread["thread_id"])


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
    await delete_thread(c, thread_id, filters)
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
    state = await _read_state(c, thread, _config(thread_id), subgraphs)
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
    config = _config(thread_id, Checkpoint(checkpoint_id=checkpoint_id))
    state = await _read_state(c, thread, config, subgraphs)
    return JsonResponse(pick(state, select))


@router.post("/threads/{thread_id}/state/checkpoint")
async def post_state_at(
    request: Request, thread_id: str, body: _StateAt, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    # RemoteGraph sends a checkpoint without checkpoint_id: that is the latest state.
    thread, _ = await _thread(c, request, thread_id, "read")
    state = await _read_state(c, thread, _config(thread_id, body.checkpoint), body.subgraphs)
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
    config = _config(thread_id, checkpoint)
    async with _stateful(c, thread, config) as graph:
        if graph is None:
            raise ApiError(400, "Thread has no graph ID.")
        try:
            updated = await graph.aupdate_state(config, body.values, as_node=body.as_node)
        except InvalidUpdateError as exc:  # an unknown or ambiguous as_node
            raise ApiError(400, str(exc)) from None
        await _refresh_thread(c, graph, thread_id)
    conf = updated.get("configurable") or {}
    keys = ("thread_id", "checkpoint_ns", "checkpoint_id")
    return JsonResponse({"checkpoint": {k: conf.get(k) for k in keys}})


async def _history(
    c: ApiContext,
    thread: Thread,
    query: HistoryQuery,
    select: list[str] | None,
) -> JsonResponse:
    config = _config(thread["thread_id"], query.checkpoint)
    before = query.before
    if isinstance(before, Checkpoint):
        before = before.checkpoint_id
    before_config: RunnableConfig | None = (
        {"configurable": {"checkpoint_id": before}} if before else None
    )
    states: list[dict[str, Any]] = []
    async with _stateful(c, thread, config) as graph:
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
