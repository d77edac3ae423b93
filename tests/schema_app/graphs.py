"""A graph whose state holds a field no JSON Schema can describe (a lock), for the schemas route."""

import threading
from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class LockedState(TypedDict, total=False):
    n: int
    lock: threading.Lock


def step(state: LockedState) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


builder = StateGraph(LockedState)
builder.add_node("step", step)
builder.add_edge(START, "step")
builder.add_edge("step", END)

graph = builder.compile()
