"""Load langgraph.json, import its graphs and describe their default assistants."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

log = logging.getLogger("agentstream.graphs")

# The namespace LangGraph Server derives default assistant ids from, so ids match across servers.
ASSISTANT_NAMESPACE = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


class GraphLoadError(Exception):
    pass


@lru_cache(maxsize=256)  # asked on every run that names its graph (uuid5: a SHA-1 each time)
def default_assistant_id(graph_id: str) -> str:
    return str(uuid5(ASSISTANT_NAMESPACE, graph_id))


@dataclass
class Config:
    """The parts of langgraph.json that agentstream reads."""

    path: Path
    graphs: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    auth: dict[str, Any] | None = None
    http: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] | None = None
    webhooks: dict[str, Any] | None = None
    checkpointer: dict[str, Any] | None = None

    @property
    def root(self) -> Path:
        return self.path.parent


def read_config(path: str | Path) -> Config:
    path = Path(path).resolve()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphLoadError(f"no config file at {path}") from None
    except json.JSONDecodeError as exc:
        raise GraphLoadError(f"{path} is not valid JSON: {exc}") from None
    graphs = raw.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise GraphLoadError(f"{path} lists no graphs")
    env = raw.get("env") or {}
    if isinstance(env, str):
        env = _read_env_file(path.parent / env)
    return Config(
        path=path,
        graphs={k: (v["path"] if isinstance(v, dict) else v) for k, v in graphs.items()},
        env={k: str(v) for k, v in env.items()},
        dependencies=list(raw.get("dependencies") or []),
        auth=raw.get("auth"),
        http=raw.get("http") or {},
        store=raw.get("store"),
        webhooks=raw.get("webhooks"),
        checkpointer=raw.get("checkpointer"),
    )


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def prepare(config: Config) -> None:
    """Apply env and make the dependencies importable, before any graph is imported."""
    for key, value in config.env.items():
        os.environ.setdefault(key, value)
    for dep in config.dependencies:
        folder = (config.root / dep).resolve()
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if str(config.root) not in sys.path:
        sys.path.insert(0, str(config.root))


def import_object(spec: str, root: Path) -> Any:
    """`./file.py:name` (relative to root) or `package.module:name`."""
    target, sep, name = spec.rpartition(":")
    if not sep or not name:
        raise GraphLoadError(f"graph spec {spec!r} must look like 'file.py:name'")
    if target.endswith(".py") or "/" in target:
        file = (root / target).resolve()
        if not file.exists():
            raise GraphLoadError(f"graph file {file} does not exist")
        module_name = f"agentstream_user_{file.stem}_{abs(hash(str(file)))}"
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, file)
            if module_spec is None or module_spec.loader is None:
                raise GraphLoadError(f"cannot import {file}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(module_name, None)
                raise GraphLoadError(f"importing {file} failed: {_one_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise GraphLoadError(f"importing {target} failed: {_one_line(exc)}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise GraphLoadError(f"{target} has no attribute {name!r}") from None


def _one_line(exc: Exception) -> str:
    """What went wrong and where in the user's code, instead of a wall of import machinery."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    where = f" (at {user[-1].filename}:{user[-1].lineno})" if user else ""
    hint = ""
    if isinstance(exc, ModuleNotFoundError):
        hint = "; is it installed, or listed in langgraph.json's dependencies?"
    return f"{type(exc).__name__}: {exc}{where}{hint}"


@dataclass
class GraphEntry:
    graph_id: str
    obj: Any  # a Pregel, a StateGraph, or a factory taking a config

    @property
    def is_factory(self) -> bool:
        return not isinstance(self.obj, Pregel | StateGraph) and callable(self.obj)


class GraphRegistry:
    """The graphs of one langgraph.json, imported at start (and again by reload())."""

    def __init__(self, config: Config) -> None:
        prepare(config)
        self.config = config
        self.store: BaseStore | None = None
        self._warned: set[str] = set()
        self.entries = _import_entries(config)

    def reload(self) -> None:
        """Import the graphs again (what sys.modules still holds is reused) and swap them all in
        at once; a run in flight keeps the graph it started with. On a GraphLoadError the
        graphs in use stay."""
        entries = _import_entries(self.config)
        for entry in entries.values():
            if isinstance(entry.obj, Pregel):
                entry.obj = self._with_store(entry.graph_id, entry.obj)
        self.entries = entries

    def bind_store(self, store: BaseStore) -> None:
        """Every graph runs with the server's store, as on LangGraph Server: nodes get it as
        `store`, `runtime.store` and `get_store()`. Compiled graphs are rebound once, here."""
        self.store = store
        for entry in self.entries.values():
            if isinstance(entry.obj, Pregel):
                entry.obj = self._with_store(entry.graph_id, entry.obj)

    def _with_store(
        self, graph_id: str, graph: Pregel[Any, Any, Any, Any]
    ) -> Pregel[Any, Any, Any, Any]:
        if self.store is None or graph.store is self.store:
            return graph
        if graph.store is not None and graph_id not in self._warned:
            self._warned.add(graph_id)
            log.warning(
                "graph %r was compiled with a store of its own; it runs with the server's "
                "store instead (LangGraph Server refuses such a graph)",
                graph_id,
            )
        return graph.copy(update={"store": self.store})

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self.entries

    @property
    def ids(self) -> list[str]:
        return list(self.entries)

    async def get(
        self, graph_id: str, config: RunnableConfig | None = None
    ) -> Pregel[Any, Any, Any, Any]:
        """The compiled graph; factories are called with the run's config each time."""
        entry = self.entries[graph_id]
        obj = entry.obj
        if entry.is_factory:
            obj = _call_factory(obj, config or {})
            if inspect.isawaitable(obj):
                obj = await obj
        if isinstance(obj, StateGraph):
            obj = obj.compile(store=self.store)
        if not isinstance(obj, Pregel):
            raise GraphLoadError(f"graph {graph_id!r} did not produce a compiled graph")
        return self._with_store(graph_id, obj)


def _import_entries(config: Config) -> dict[str, GraphEntry]:
    entries: dict[str, GraphEntry] = {}
    for graph_id, spec in config.graphs.items():
        obj = import_object(spec, config.root)
        if not isinstance(obj, Pregel | StateGraph) and not callable(obj):
            raise GraphLoadError(f"{spec} is neither a graph nor a factory")
        entries[graph_id] = GraphEntry(graph_id, obj)
    return entries


def _call_factory(factory: Any, config: Mapping[str, Any]) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    return factory(config) if params else factory()
