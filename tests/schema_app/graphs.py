"""Graphs with unusual schemas: a state field no JSON Schema can describe (a lock), for the
schemas route; an output schema narrower than the state, for what a thread keeps."""

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


# A graph whose output schema leaves part of its state out: a thread's values are still its
# whole state (as reading the state says), whatever its runs stream as `values`.
class NarrowState(TypedDict, total=False):
    n: int
    secret: str


class NarrowOutput(TypedDict, total=False):
    n: int


def count(state: NarrowState) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1, "secret": f"kept {state.get('n', 0) + 1}"}


narrow_builder = StateGraph(NarrowState, output_schema=NarrowOutput)
narrow_builder.add_node("count", count)
narrow_builder.add_edge(START, "count")
narrow_builder.add_edge("count", END)

narrow = narrow_builder.compile()
