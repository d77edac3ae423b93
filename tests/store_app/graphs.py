"""A graph compiled with a store of its own: the server runs it with its own store instead."""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore


class NoteState(TypedDict, total=False):
    note: str
    namespace: list[str]


async def write(state: NoteState, *, store: BaseStore) -> dict[str, Any]:
    await store.aput(tuple(state["namespace"]), "note", {"text": state["note"]})
    return {}


builder = StateGraph(NoteState)
builder.add_node("write", write)
builder.add_edge(START, "write")
builder.add_edge("write", END)
own_store_graph = builder.compile(store=InMemoryStore())
