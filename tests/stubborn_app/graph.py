"""`stubborn`: a node that, once cancelled, takes `cleanup` seconds to stop (a model's stream
closed politely, a row written): longer than a thread's delete waits for its runs
(tests/test_lease_race.py)."""

import asyncio
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    cleanup: float
    done: bool


async def wait_then_clean_up(state: State) -> dict[str, Any]:
    get_stream_writer()({"waiting": True})
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(state.get("cleanup", 0.0))
        raise
    return {"done": True}


builder = StateGraph(State)
builder.add_node("wait_then_clean_up", wait_then_clean_up)
builder.add_edge(START, "wait_then_clean_up")
builder.add_edge("wait_then_clean_up", END)
graph = builder.compile()
