"""`blocking`: an async node that calls blocking code, holding its process's event loop for
`seconds` (tests/test_loop_lag.py)."""

import time
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    seconds: float
    done: bool


async def hold_the_loop(state: State) -> dict[str, Any]:
    # The bug this graph is: what a synchronous HTTP client's call does too.
    time.sleep(state.get("seconds", 0.0))  # noqa: ASYNC251
    return {"done": True}


builder = StateGraph(State)
builder.add_node("hold_the_loop", hold_the_loop)
builder.add_edge(START, "hold_the_loop")
builder.add_edge("hold_the_loop", END)
graph = builder.compile()
