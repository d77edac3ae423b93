"""Assistant routes: create, search, count, get, patch, delete, versions; graph introspection."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Request, Response
from langchain_core.runnables import RunnableConfig
from langgraph.channels.base import BaseChannel
from langgraph.pregel import Pregel
from pydantic import BaseModel, create_model

from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.models import (
    AssistantCount,
    AssistantCreate,
    AssistantPatch,
    AssistantSearch,
    AssistantVersions,
    SetLatest,
)
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import JsonResponse
from agentstream.api.threads import pick, search_headers
from agentstream.graphs import default_assistant_id
from agentstream.storage.base import Assistant, Filter, NotFound, utcnow

log = logging.getLogger("agentstream.api")

router = APIRouter(route_class=JsonRoute)

Graph = Pregel[Any, Any, Any, Any]

_OUT_KEYS = (
    "assistant_id", "graph_id", "config", "context", "metadata", "name", "created_at",
    "updated_at", "version", "description",
)  # fmt: skip


def _out(assistant: Assistant) -> dict[str, Any]:
    # The key order of the real server's assistants.
    return {key: assistant.get(key) for key in _OUT_KEYS}


def _check_graph(c: ApiContext, graph_id: str) -> None:
    if graph_id not in c.graphs:
        raise ApiError(
            404, f"Graph '{graph_id}' not found. Expected one of: {sorted(c.graphs.ids)}"
        )


def _context(config: dict[str, Any] | None, context: dict[str, Any] | None) -> dict[str, Any]:
    # The real server mirrors config.configurable into context, for graphs that read either.
    configurable = (config or {}).get("configurable") or {}
    return {**configurable, **(context or {})}


async def _get(
    c: ApiContext, request: Request, assistant_id: str, action: str = "read"
) -> tuple[Assistant, Filter | None]:
    require_uuid(assistant_id, "assistant")
    filters = await c.authorize(request, "assistants", action, {"assistant_id": assistant_id})
    try:
        return await c.storage.get_assistant(assistant_id, filters=filters), filters
    except NotFound:
        raise ApiError(404, "Not Found") from None


async def _get_for_graph(
    c: ApiContext, request: Request, assistant_id: str
) -> tuple[Assistant, Filter | None]:
    # RemoteGraph asks for /assistants/<graph name>/graph: a graph name means its default
    # assistant on the introspection routes, though not on GET /assistants/{id}.
    if assistant_id in c.graphs:
        assistant_id = default_assistant_id(assistant_id)
    return await _get(c, request, assistant_id)


async def _graph(c: ApiContext, assistant: Assistant) -> Graph:
    config: RunnableConfig = assistant["config"]  # type: ignore[assignment]
    return await c.graphs.get(assistant["graph_id"], config)


@router.post("/assistants")
async def create_assistant(
    request: Request, body: AssistantCreate, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    _check_graph(c, body.graph_id)
    assistant_id = require_uuid(body.assistant_id, "assistant") if body.assistant_id else None
    value = {
        **body.model_dump(),
        "assistant_id": assistant_id or str(uuid4()),
        "metadata": dict(body.metadata or {}),
    }
    filters = await c.authorize(request, "assistants", "create", value)
    now = utcnow()
    assistant = Assistant(
        assistant_id=value["assistant_id"],
        graph_id=body.graph_id,
        config=body.config or {},
        context=_context(body.config, body.context),
        metadata=value["metadata"],
        name=body.name or "Untitled",
        description=body.description,
        version=1,
        created_at=now,
        updated_at=now,
    )
    try:
        stored = await c.storage.put_assistant(assistant, if_exists=body.if_exists, filters=filters)
    except NotFound:
        # It exists but belongs to someone else: the caller may neither see nor take its id.
        raise ApiError(409, f"Assistant {assistant['assistant_id']} already exists") from None
    return JsonResponse(_out(stored))


@router.post("/assistants/search")
async def search_assistants(
    request: Request, body: AssistantSearch, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    filters = await c.authorize(request, "assistants", "search", body.model_dump())
    found, total = await c.storage.search_assistants(
        graph_id=body.graph_id,
        name=body.name,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        filters=filters,
    )
    items = [pick(_out(a), body.select) for a in found]
    return JsonResponse(items, headers=search_headers(body.offset, len(found), total))


@router.post("/assistants/count")
async def count_assistants(
    request: Request, body: AssistantCount, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    filters = await c.authorize(request, "assistants", "search", body.model_dump())
    _, total = await c.storage.search_assistants(
        graph_id=body.graph_id,
        name=body.name,
        metadata=body.metadata,
        limit=1,
        offset=0,
        sort_by=None,
        sort_order=None,
        filters=filters,
    )
    return JsonResponse(total)


@router.get("/assistants/{assistant_id}")
async def get_assistant(
    request: Request, assistant_id: str, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    assistant, _ = await _get(c, request, assistant_id)
    return JsonResponse(_out(assistant))


@router.patch("/assistants/{assistant_id}")
async def patch_assistant(
    request: Request, assistant_id: str, body: AssistantPatch, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    require_uuid(assistant_id, "assistant")
    if body.graph_id is not None:
        _check_graph(c, body.graph_id)
    value = {"assistant_id": assistant_id, **body.model_dump(exclude_none=True)}
    filters = await c.authorize(request, "assistants", "update", value)
    changes = {k: v for k, v in value.items() if k != "assistant_id"}
    if body.config is not None:
        changes["context"] = _context(body.config, body.context)
    try:
        updated = await c.storage.patch_assistant(assistant_id, changes, filters=filters)
    except NotFound:
        raise ApiError(404, "Not Found") from None
    return JsonResponse(_out(updated))


@router.delete("/assistants/{assistant_id}", status_code=204)
async def delete_assistant(
    request: Request,
    assistant_id: str,
    delete_threads: bool = False,
    c: ApiContext = Depends(ctx),
) -> Response:
    require_uuid(assistant_id, "assistant")
    filters = await c.authorize(request, "assistants", "delete", {"assistant_id": assistant_id})
    try:
        await c.storage.delete_assistant(assistant_id, filters=filters)
    except NotFound:
        raise ApiError(404, "Not Found") from None
    if delete_threads:
        await _delete_threads_of(c, request, assistant_id)
    return Response(status_code=204)


async def _delete_threads_of(c: ApiContext, request: Request, assistant_id: str) -> None:
    metadata = {"assistant_id": assistant_id}
    filters = await c.authorize(request, "threads", "delete", {"metadata": metadata})
    while True:
        threads, _ = await c.storage.search_threads(
            ids=None, metadata=metadata, values=None, status=None, limit=100, offset=0,
            sort_by=None, sort_order=None, filters=filters,
        )  # fmt: skip
        if not threads:
            return
        for thread in threads:
            try:
                await c.runs.delete_thread(thread["thread_id"], filters)
            except NotFound:
                pass


@router.post("/assistants/{assistant_id}/versions")
async def assistant_versions(
    request: Request, assistant_id: str, body: AssistantVersions, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    _, filters = await _get(c, request, assistant_id)
    versions = await c.storage.assistant_versions(
        assistant_id,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
        filters=filters,
    )
    return JsonResponse(versions)


@router.post("/assistants/{assistant_id}/latest")
async def set_latest(
    request: Request, assistant_id: str, body: SetLatest, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    # The SDK's set_latest returns the assistant, now at the chosen version.
    _, filters = await _get(c, request, assistant_id, "update")
    assistant = await c.storage.set_latest_assistant(assistant_id, body.version, filters=filters)
    return JsonResponse(_out(assistant))


# --- graph introspection -------------------------------------------------------------------


def _xray(value: str) -> bool | int:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        depth = int(lowered)
    except ValueError:
        raise ApiError(422, f"Invalid xray value: {value!r}") from None
    if depth < 0:
        raise ApiError(422, f"Invalid xray value: {value!r}")
    return depth if depth > 0 else False


def _drawable(graph_json: dict[str, Any]) -> dict[str, Any]:
    # langchain-core names each node's Python class in data.id; the real server leaves it out.
    nodes = []
    for node in graph_json.get("nodes", []):
        data = node.get("data")
        if isinstance(data, dict):
            node = {**node, "data": {k: v for k, v in data.items() if k != "id"}}
        nodes.append(node)
    return {**graph_json, "nodes": nodes}


@router.get("/assistants/{assistant_id}/graph")
async def assistant_graph(
    request: Request, assistant_id: str, xray: str = "false", c: ApiContext = Depends(ctx)
) -> JsonResponse:
    assistant, _ = await _get_for_graph(c, request, assistant_id)
    graph = await _graph(c, assistant)
    drawn = await graph.aget_graph(xray=_xray(xray))
    return JsonResponse(_drawable(drawn.to_json()))


def _safely(what: str, make: Callable[[], Any]) -> Any:
    # One schema that cannot be built (an unsupported type hint, say) must not fail the rest.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make()
    except Exception as exc:
        log.debug("no %s: %r", what, exc)
        return None


def _field_type(key: str, channel: BaseChannel[Any, Any, Any]) -> Any:
    # As on the real server, one field whose type has no JSON Schema shows as any value
    # rather than costing the whole state schema.
    try:
        create_model(key, value=(channel.UpdateType, None)).model_json_schema()
    except Exception:
        return Any
    return channel.UpdateType


def _state_schema(graph: Graph, name: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        key: (_field_type(key, channel), None)
        for key in graph.stream_channels_list
        if isinstance(channel := graph.channels.get(key), BaseChannel)
    }
    model: type[BaseModel] = create_model(graph.get_name("State", name=name), **fields)
    return model.model_json_schema()


def _config_schema(graph: Graph) -> dict[str, Any]:
    if graph.context_schema is None:
        return {}
    schema: dict[str, Any] = graph.get_config_jsonschema()
    return schema


def _schemas(graph: Graph, name: str | None) -> dict[str, Any]:
    return {
        "input_schema": _safely("input schema", graph.get_input_jsonschema),
        "output_schema": _safely("output schema", graph.get_output_jsonschema),
        "state_schema": _safely("state schema", lambda: _state_schema(graph, name)),
        "config_schema": _safely("config schema", lambda: _config_schema(graph)),
        "context_schema": _safely("context schema", graph.get_context_jsonschema),
    }


@router.get("/assistants/{assistant_id}/schemas")
async def assistant_schemas(
    request: Request, assistant_id: str, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    assistant, _ = await _get_for_graph(c, request, assistant_id)
    graph = await _graph(c, assistant)
    graph_id = assistant["graph_id"]
    return JsonResponse({"graph_id": graph_id, **_schemas(graph, graph_id)})


async def _subgraphs(
    c: ApiContext, request: Request, assistant_id: str, namespace: str | None, recurse: bool
) -> JsonResponse:
    assistant, _ = await _get_for_graph(c, request, assistant_id)
    graph = await _graph(c, assistant)
    found: dict[str, Any] = {}
    async for ns, subgraph in graph.aget_subgraphs(namespace=namespace, recurse=recurse):
        if isinstance(subgraph, Pregel):
            found[ns] = _schemas(subgraph, None)
    return JsonResponse(found)


@router.get("/assistants/{assistant_id}/subgraphs")
async def assistant_subgraphs(
    request: Request, assistant_id: str, recurse: bool = False, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    return await _subgraphs(c, request, assistant_id, None, recurse)


@router.get("/assistants/{assistant_id}/subgraphs/{namespace}")
async def assistant_subgraphs_at(
    request: Request,
    assistant_id: str,
    namespace: str,
    recurse: bool = Query(False),
    c: ApiContext = Depends(ctx),
) -> JsonResponse:
    return await _subgraphs(c, request, assistant_id, namespace, recurse)
