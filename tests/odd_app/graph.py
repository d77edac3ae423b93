"""`odd`: a node whose custom events orjson's plain call refuses (keys that are not str, numpy
values) beside one it takes, each written as a run streams them (tests/test_custom_encoding.py)."""

from typing import Any, TypedDict

import numpy
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph


class State(TypedDict, total=False):
    done: bool


def write(state: State) -> dict[str, Any]:
    emit = get_stream_writer()
    emit({"plain": 1})
    emit({1: "int key", "s": [1, 2.5]})
    emit({"array": numpy.array([1.5, 2.5]), "scalar": numpy.int64(9)})
    emit(("a", "tuple"))
    return {"done": True}


builder = StateGraph(State)
builder.add_node("write", write)
builder.add_edge(START, "write")
graph = builder.compile()
