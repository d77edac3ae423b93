"""Store routes: put, get, delete and search items, list namespaces; each through the `store`
resource of the auth handlers, whose namespace rewrite or refusal applies."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from langgraph.store.base import BaseStore, InvalidNamespaceError, Item
from pydantic import BaseModel, ConfigDict, Field

from agentstream.api.context import ApiContext, ctx
from agentstream.api.errors import ApiError
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import JsonResponse

router = APIRouter(route_class=JsonRoute)
log = logging.getLogger("agentstream.api")

# Bounds that keep a namespace a path, not a payload: labels, and the dotted form stored.
MAX_NAMESPACE_LABELS = 64
MAX_NAMESPACE_CHARS = 1024
MAX_KEY_CHARS = 1024
MAX_LIMIT = 1000
_warned_filters: set[str] = set()


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StorePut(_Body):
    namespace: list[str]
    key: str
    value: dict[str, Any]
    index: Literal[False] | list[str] | None = None
    ttl: float | None = Field(default=None, gt=0)


class StoreDelete(_Body):
    namespace: list[str]
    key: str


class StoreSearch(_Body):
    namespace_prefix: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=0, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)
    query: str | None = None
    refresh_ttl: bool | None = None


class StoreNamespaces(_Body):
    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = Field(default=None, ge=1, le=MAX_NAMESPACE_LABELS)
    limit: int = Field(default=100, ge=0, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)


def checked_namespace(labels: Sequence[Any], what: str, *, empty: bool = False) -> tuple[str, ...]:
    """A namespace as the stores keep it (labels joined by dots), or a 422 saying why not."""
    if not isinstance(labels, list | tuple):
        raise ApiError(422, f"{what} must be a list of strings")
    if not labels and not empty:
        raise ApiError(422, f"{what} must not be empty")
    if len(labels) > MAX_NAMESPACE_LABELS:
        raise ApiError(422, f"{what} has {len(labels)} labels; at most {MAX_NAMESPACE_LABELS}")
    for label in labels:
        if not isinstance(label, str) or not label:
            raise ApiError(422, f"{what}: every label must be a non-empty string")
        if "." in label:
            raise ApiError(422, f"{what}: the label {label!r} contains a period ('.')")
        if "\x00" in label:
            raise ApiError(422, f"{what}: the label {label!r} contains a NUL character")
    if sum(len(label) + 1 for label in labels) - 1 > MAX_NAMESPACE_CHARS:
        raise ApiError(422, f"{what} is longer than {MAX_NAMESPACE_CHARS} characters")
    return tuple(labels)


def _checked_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ApiError(422, "key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise ApiError(422, f"key is longer than {MAX_KEY_CHARS} characters")
    without_nul(key, "key")
    return key


def without_nul(value: Any, what: str) -> Any:
    """PostgreSQL keeps no NUL character in text or JSON: refused up front, on both backends."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(422, f"{what} contains a NUL character")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


def _store(c: ApiContext) -> BaseStore:
    if c.store is None:
        raise ApiError(503, "The store is not available")
    return c.store


async def _authorize(
    c: ApiContext, request: Request, action: str, value: dict[str, Any]
) -> dict[str, Any]:
    """The auth handler for store.<action> may rewrite `value` (its namespace above all) or
    refuse; a filter it returns has no rows to apply to here, as on LangGraph Server."""
    filters = await c.authorize(request, "store", action, value)
    if filters and action not in _warned_filters:
        _warned_filters.add(action)
        log.warning(
            "the auth handler for store.%s returned a filter; store handlers scope a user by "
            "rewriting value['namespace'], and filters do not apply to store items",
            action,
        )
    return value


def _timestamp(moment: datetime) -> str:
    # SQLite keeps UTC without an offset; say so on the wire, as PostgreSQL's values do.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def item_json(item: Item, *, scored: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": _timestamp(item.created_at),
        "updated_at": _timestamp(item.updated_at),
    }
    if scored:
        shown["score"] = getattr(item, "score", None)
    return shown


@router.put("/store/items", status_code=204)
async def put_item(request: Request, body: StorePut, c: ApiContext = Depends(ctx)) -> Response:
    checked_namespace(body.namespace, "namespace")
    _checked_key(body.key)
    value = await _authorize(
        c,
        request,
        "put",
        {
            "namespace": tuple(body.namespace),
            "key": body.key,
            "value": body.value,
            "index": body.index,
        },
    )
    namespace = checked_namespace(value["namespace"], "namespace")
    if not isinstance(value.get("value"), dict):
        raise ApiError(422, "value must be an object")
    without_nul(value["value"], "value")
    options: dict[str, Any] = {"index": value.get("index")}
    if body.ttl is not None:
        options["ttl"] = body.ttl
    try:
        await _store(c).aput(namespace, _checked_key(value["key"]), value["value"], **options)
    except NotImplementedError as exc:  # a store.path store without TTLs, given a ttl
        raise ApiError(422, str(exc) or "this store does not support ttl") from None
    except InvalidNamespaceError as exc:
        raise ApiError(422, str(exc)) from None
    return Response(status_code=204)


@router.get("/store/items")
async def get_item(
    request: Request,
    namespace: str = Query(...),
    key: str = Query(...),
    refresh_ttl: bool | None = Query(None),
    c: ApiContext = Depends(ctx),
) -> JsonResponse:
    labels = checked_namespace(namespace.split(".") if namespace else [], "namespace")
    value = await _authorize(c, request, "get", {"namespace": labels, "key": _checked_key(key)})
    try:
        item = await _store(c).aget(
            checked_namespace(value["namespace"], "namespace"),
            _checked_key(value["key"]),
            refresh_ttl=refresh_ttl,
        )
    except InvalidNamespaceError as exc:
        raise ApiError(422, str(exc)) from None
    # A missing item is a 200 with null, as LangGraph Server answers it.
    return JsonResponse(item_json(item) if item is not None else None)


@router.delete("/store/items", status_code=204)
async def delete_item(
    request: Request, body: StoreDelete, c: ApiContext = Depends(ctx)
) -> Response:
    namespace = checked_namespace(body.namespace, "namespace")
    value = await _authorize(
        c, request, "delete", {"namespace": namespace, "key": _checked_key(body.key)}
    )
    try:
        await _store(c).adelete(
            checked_namespace(value["namespace"], "namespace"), _checked_key(value["key"])
        )
    except InvalidNamespaceError as exc:
        raise ApiError(422, str(exc)) from None
    return Response(status_code=204)


@router.post("/store/items/search")
async def search_items(
    request: Request, body: StoreSearch, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    prefix = checked_namespace(body.namespace_prefix, "namespace_prefix", empty=True)
    without_nul([body.filter, body.query], "the search")
    value = await _authorize(
        c,
        request,
        "search",
        {
            "namespace": prefix,
            "filter": body.filter,
            "limit": body.limit,
            "offset": body.offset,
            "query": body.query,
        },
    )
    prefix = checked_namespace(value["namespace"], "namespace_prefix", empty=True)
    try:
        found = await _store(c).asearch(
            prefix,
            query=value.get("query"),
            filter=value.get("filter"),
            limit=value.get("limit", body.limit),
            offset=value.get("offset", body.offset),
            refresh_ttl=body.refresh_ttl,
        )
    except ValueError as exc:  # an unusable filter key or operator
        raise ApiError(422, str(exc)) from None
    scored = bool(value.get("query"))
    return JsonResponse({"items": [item_json(item, scored=scored) for item in found]})


@router.post("/store/namespaces")
async def list_namespaces(
    request: Request, body: StoreNamespaces, c: ApiContext = Depends(ctx)
) -> JsonResponse:
    prefix = body.prefix
    suffix = body.suffix
    value = await _authorize(
        c,
        request,
        "list_namespaces",
        {
            "namespace": _pattern(prefix, "prefix"),
            "suffix": _pattern(suffix, "suffix"),
            "max_depth": body.max_depth,
            "limit": body.limit,
            "offset": body.offset,
        },
    )
    found = await _store(c).alist_namespaces(
        prefix=_pattern(value.get("namespace"), "prefix"),
        suffix=_pattern(value.get("suffix"), "suffix"),
        max_depth=value.get("max_depth"),
        limit=value.get("limit", body.limit),
        offset=value.get("offset", body.offset),
    )
    return JsonResponse({"namespaces": [list(namespace) for namespace in found]})


def _pattern(labels: Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    """A prefix or suffix to match; `*` matches any one label."""
    if not labels:
        return None
    return checked_namespace(labels, what)
