"""A thread's state on the wire: LangGraph's StateSnapshot in the shape of LangGraph Server's
ThreadState, and the thread's graph bound to our checkpointer to read or write it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import PregelTask, StateSnapshot

from agentstream import serde
from agentstream.api.context import ApiContext
from agentstream.api.models import Checkpoint
from agentstream.execution.bound import Graph, bound, interrupt_out, interrupts_by_task
from agentstream.storage.base import Thread

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
        "interrupts": [interrupt_out(i) for i in task.interrupts],
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
        "interrupts": [interrupt_out(i) for i in snapshot.interrupts],
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def thread_config(thread_id: str, checkpoint: Checkpoint | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint is not None:
        for key in ("checkpoint_ns", "checkpoint_id", "checkpoint_map"):
            if getattr(checkpoint, key):
                conf[key] = getattr(checkpoint, key)
    return {"configurable": conf}


@asynccontextmanager
async def stateful(
    c: ApiContext, thread: Thread, config: RunnableConfig
) -> AsyncIterator[Graph | None]:
    """The thread's graph with our checkpointer; None for a thread no run has touched."""
    graph_id = (thread["metadata"] or {}).get("graph_id")
    if not isinstance(graph_id, str) or graph_id not in c.graphs:
        yield None
        return
    async with bound(c.storage, c.graphs, graph_id, config) as graph:
        yield graph


async def read_state(
    c: ApiContext, thread: Thread, config: RunnableConfig, subgraphs: bool
) -> dict[str, Any]:
    async with stateful(c, thread, config) as graph:
        if graph is None:
            return dict(EMPTY_STATE)
        snapshot = await graph.aget_state(config, subgraphs=subgraphs)
    return state_to_dict(snapshot)


async def refresh_thread(c: ApiContext, graph: Graph, thread_id: str) -> None:
    """Keep the thread row's cached values and interrupts in step with its checkpoints."""
    snapshot = await graph.aget_state(thread_config(thread_id))
    await c.storage.set_thread_state(
        thread_id,
        values=serde.to_jsonable(snapshot.values),
        interrupts=serde.to_jsonable(interrupts_by_task(snapshot.tasks)),
        status=None,
    )
