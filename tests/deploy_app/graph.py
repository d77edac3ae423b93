"""A graph that answers with the request headers its run got in config["configurable"]."""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph


class State(TypedDict, total=False):
    headers: dict[str, Any]


def capture(state: State, config: RunnableConfig) -> State:
    configurable = config.get("configurable", {})
    return {"headers": {k: v for k, v in configurable.items() if k.startswith(("x-", "auth"))}}


graph = StateGraph(State).add_node(capture).add_edge("__start__", "capture").compile()
