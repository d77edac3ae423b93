"""`store` in langgraph.json: `index` (embed, dims, fields), `ttl` and `path` (your own store)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Any, cast

from langgraph.store.base import BaseStore, IndexConfig, TTLConfig
from langgraph.store.base.embed import ensure_embeddings

from agentstream.graphs import Config, GraphLoadError, import_object
from agentstream.storage.memstore import StoreOptions

TTL_KEYS = frozenset({"default_ttl", "refresh_on_read", "sweep_interval_minutes"})
# Items put with a ttl expire even when langgraph.json sets no store.ttl: swept this often.
DEFAULT_SWEEP_MINUTES = 5


def store_section(config: Config) -> Mapping[str, Any]:
    section = config.store or {}
    if not isinstance(section, Mapping):
        raise GraphLoadError(f"store in {config.path} must be an object")
    return section


def store_options(config: Config) -> StoreOptions:
    section = store_section(config)
    custom_store_spec(config)  # checked now; opened with the backends
    return StoreOptions(index=_index(section.get("index"), config), ttl=_ttl(section.get("ttl")))


def _index(raw: Any, config: Config) -> IndexConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise GraphLoadError("store.index must be an object with embed and dims")
    embed, dims = raw.get("embed"), raw.get("dims")
    if not isinstance(embed, str) or not embed:
        raise GraphLoadError(
            "store.index.embed must be 'provider:model' or 'path/to/file.py:function'"
        )
    if not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0:
        raise GraphLoadError("store.index.dims must be a positive integer")
    index: dict[str, Any] = {"dims": dims, "embed": _embedder(embed, config)}
    fields = raw.get("fields")
    if fields is not None:
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise GraphLoadError("store.index.fields must be a list of paths, like ['text']")
        index["fields"] = fields
    return cast(IndexConfig, index)


def _embedder(spec: str, config: Config) -> Any:
    """A user's own function (`./file.py:name`, or `package.module:name` when it imports),
    else a `provider:model` string that LangChain's init_embeddings resolves."""
    target = spec.rpartition(":")[0]
    if target.endswith(".py") or "/" in target:
        try:
            found = import_object(spec, config.root)
        except GraphLoadError as exc:
            raise GraphLoadError(f"store.index.embed {spec!r}: {exc}") from None
        if not callable(found):
            raise GraphLoadError(f"store.index.embed {spec!r} is not callable")
        return found
    try:
        # LangChain's init_embeddings, resolved now so a missing package stops the start.
        return ensure_embeddings(spec)
    except (ImportError, ValueError) as exc:
        raise GraphLoadError(f"store.index.embed {spec!r}: {exc}") from None


def _ttl(raw: Any) -> TTLConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise GraphLoadError("store.ttl must be an object")
    unknown = set(raw) - TTL_KEYS
    if unknown:
        raise GraphLoadError(
            f"store.ttl has unknown keys {sorted(unknown)}; it takes {sorted(TTL_KEYS)}"
        )
    ttl: dict[str, Any] = {
        "refresh_on_read": bool(raw.get("refresh_on_read", True)),
        "sweep_interval_minutes": DEFAULT_SWEEP_MINUTES,
    }
    for key in ("default_ttl", "sweep_interval_minutes"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise GraphLoadError(f"store.ttl.{key} must be a positive number of minutes")
        ttl[key] = value
    return cast(TTLConfig, ttl)


def custom_store_spec(config: Config) -> str | None:
    spec = store_section(config).get("path")
    if spec is not None and not isinstance(spec, str):
        raise GraphLoadError("store.path must be 'path/to/file.py:name'")
    return spec or None


@asynccontextmanager
async def custom_store(spec: str, config: Config) -> AsyncIterator[BaseStore]:
    """`store.path`: a BaseStore, or a function returning one (sync or async), or an (async)
    context manager function yielding one, which stays open while the server runs."""
    try:
        found = import_object(spec, config.root)
    except GraphLoadError as exc:
        raise GraphLoadError(f"store.path {spec!r}: {exc}") from None
    if callable(found) and not isinstance(found, BaseStore):
        found = found()
        if inspect.isawaitable(found):
            found = await found
    if isinstance(found, AbstractAsyncContextManager):
        async with found as store:
            yield _checked(store, spec)
        return
    if isinstance(found, AbstractContextManager) and not isinstance(found, BaseStore):
        with found as store:
            yield _checked(store, spec)
        return
    yield _checked(found, spec)


def _checked(store: Any, spec: str) -> BaseStore:
    if not isinstance(store, BaseStore):
        raise GraphLoadError(f"store.path {spec!r} gave a {type(store).__name__}, not a BaseStore")
    return store
