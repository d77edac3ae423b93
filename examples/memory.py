"""A graph with memories that outlive a conversation, kept in the server's store.

Give it `{"remember": "..."}` to keep a fact; every run reports what it finds. The three nodes
reach the same store the three ways LangGraph offers: `store` in the node's signature,
`get_store()`, and `runtime.store`. Whose memories they are: the authenticated caller when the
server has auth handlers, else the input's `user` (default "anonymous").
"""

from __future__ import annotations

from typing import Any, TypedDict
from uuid import NAMESPACE_URL, uuid5

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore


class MemoryState(TypedDict, total=False):
    user: str
    remember: str
    memories: list[str]  # found through the node's `store` argument
    recalled: list[str]  # found through get_store()
    runtime_saw: list[str]  # found through runtime.store


def namespace(state: MemoryState, config: RunnableConfig) -> tuple[str, ...]:
    configurable = config.get("configurable") or {}
    owner = configurable.get("langgraph_auth_user_id") or state.get("user") or "anonymous"
    return (owner, "memories")


async def _texts(store: BaseStore, where: tuple[str, ...]) -> list[str]:
    return sorted(item.value["text"] for item in await store.asearch(where, limit=100))


async def remember(state: MemoryState, config: RunnableConfig, *, store: BaseStore) -> Any:
    where = namespace(state, config)
    fact = state.get("remember")
    if fact:
        # One item per fact: remembering it again changes nothing.
        await store.aput(where, str(uuid5(NAMESPACE_URL, fact)), {"text": fact})
    return {"memories": await _texts(store, where)}


async def recall(state: MemoryState, config: RunnableConfig) -> Any:
    return {"recalled": await _texts(get_store(), namespace(state, config))}


async def check(state: MemoryState, config: RunnableConfig, runtime: Runtime[Any]) -> Any:
    assert runtime.store is not None
    return {"runtime_saw": await _texts(runtime.store, namespace(state, config))}


builder = StateGraph(MemoryState)
builder.add_node("remember", remember)
builder.add_node("recall", recall)
builder.add_node("check", check)
builder.add_edge(START, "remember")
builder.add_edge("remember", "recall")
builder.add_edge("recall", "check")
builder.add_edge("check", END)
graph = builder.compile()
