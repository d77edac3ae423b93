"""The `ticker` example: a single node that emits `n` custom events, optionally paced."""

import asyncio
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class TickerState(TypedDict, total=False):
    n: int
    delay: float
    count: int


async def tick(state: TickerState) -> dict[str, Any]:
    n = state.get("n", 0)
    delay = state.get("delay", 0.0)
    write = get_stream_writer()
    for i in range(n):
        if i and delay > 0:
            await asyncio.sleep(delay)
        write({"tick": i})
    # Adds to what the thread already counted, so repeated runs on one thread accumulate.
    return {"count": state.get("count", 0) + n}


builder = StateGraph(TickerState)
builder.add_node("tick", tick)
builder.add_edge(START, "tick")
builder.add_edge("tick", END)

graph = builder.compile()
