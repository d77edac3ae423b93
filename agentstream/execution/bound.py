"""A graph bound to our checkpointer: how every run, and every state route, reaches a thread's
checkpoints (one saver per use, as storage hands them out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Interrupt, PregelTask

from agentstream.graphs import GraphRegistry
from agentstream.storage.base import Storage

Graph = Pregel[Any, Any, Any, Any]


@asynccontextmanager
async def bound(
    storage: Storage,
    graphs: GraphRegistry,
    graph_id: str,
    config: RunnableConfig | None = None,
    *,
    persist: bool = True,
) -> AsyncIterator[Graph]:
    """The graph (a factory called with `config`) with our checkpointer, or with none when the
    run keeps no state (persist=False: a stateless run whose thread is deleted after it)."""
    graph = await graphs.get(graph_id, config)
    async with storage.checkpointer() as saver:
        wanted = saver if persist else None
        if graph.checkpointer is not wanted:  # a stateless run of a plain graph: as it is
            graph = graph.copy(update={"checkpointer": wanted})
        yield graph


def interrupt_out(interrupt: Interrupt) -> dict[str, Any]:
    return {"id": interrupt.id, "value": interrupt.value}


def interrupts_by_task(tasks: Iterable[PregelTask]) -> dict[str, list[dict[str, Any]]]:
    """What a thread row keeps as its interrupts: each interrupted task's, by task id."""
    return {
        task.id: [interrupt_out(i) for i in task.interrupts] for task in tasks if task.interrupts
    }
