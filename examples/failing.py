"""The `failing` example: the second of two nodes always raises, to exercise error reporting."""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph


class FailingState(TypedDict, total=False):
    x: int


def first(state: FailingState) -> dict[str, Any]:
    return {"x": 1}


def second(state: FailingState) -> dict[str, Any]:
    raise ValueError("boom: intentional failure")


builder = StateGraph(FailingState)
builder.add_node("first", first)
builder.add_node("second", second)
builder.add_edge(START, "first")
builder.add_edge("first", "second")
builder.add_edge("second", END)

graph = builder.compile()
