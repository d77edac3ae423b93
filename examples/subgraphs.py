"""The `subgraphs` example: a parent node followed by a compiled child graph of two nodes."""

import operator
from typing import Annotated, Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class ItemsState(TypedDict):
    items: Annotated[list[str], operator.add]


class FreshStart(TypedDict):
    """Takes nothing from the parent, so the child's items start empty."""


def parent_start(state: ItemsState) -> dict[str, Any]:
    return {"items": ["start"]}


def child_a(state: ItemsState) -> dict[str, Any]:
    get_stream_writer()({"child": "child_a"})
    return {"items": ["a"]}


def child_b(state: ItemsState) -> dict[str, Any]:
    get_stream_writer()({"child": "child_b"})
    return {"items": ["b"]}


# A subgraph node returns its whole state, which the parent's reducer appends. Were the child
# to start from the parent's items, they would come back doubled: start, start, a, b.
child_builder = StateGraph(ItemsState, input_schema=FreshStart)
child_builder.add_node("child_a", child_a)
child_builder.add_node("child_b", child_b)
child_builder.add_edge(START, "child_a")
child_builder.add_edge("child_a", "child_b")
child_builder.add_edge("child_b", END)
child = child_builder.compile()

builder = StateGraph(ItemsState)
builder.add_node("parent_start", parent_start)
builder.add_node("child", child)
builder.add_edge(START, "parent_start")
builder.add_edge("parent_start", "child")
builder.add_edge("child", END)

graph = builder.compile()
