"""The `nested` example: an EchoModel reply streamed from a subgraph two levels down."""

from collections.abc import Awaitable, Callable
from typing import Any

from fake_model import EchoModel
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.pregel import Pregel


async def reply(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await EchoModel().ainvoke(state["messages"])]}


def _single(name: str, node: Callable[..., Awaitable[dict[str, Any]]] | Pregel) -> Pregel:
    # Each level is a graph with one node, so the namespaces read parent -> mid -> inner.
    builder = StateGraph(MessagesState)
    builder.add_node(name, node)
    builder.add_edge(START, name)
    builder.add_edge(name, END)
    return builder.compile()


inner = _single("reply", reply)
mid = _single("inner", inner)
graph = _single("mid", mid)
