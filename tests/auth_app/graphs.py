"""Graphs for the auth tests: one reports who called, one holds a run open until cancelled."""

import asyncio
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class WhoState(TypedDict, total=False):
    user_id: str
    user: dict[str, Any]


def whoami(state: WhoState, config: RunnableConfig) -> dict[str, Any]:
    configurable = config.get("configurable") or {}
    user = configurable.get("langgraph_auth_user")
    return {
        "user_id": configurable.get("langgraph_auth_user_id"),
        "user": dict(user) if user is not None else None,
    }


class HoldState(TypedDict, total=False):
    started: bool


async def hold(state: HoldState) -> dict[str, Any]:
    # Tells its readers it runs, then waits until the run is cancelled.
    get_stream_writer()({"started": True})
    await asyncio.Event().wait()
    return {"started": True}


who = StateGraph(WhoState)
who.add_node("whoami", whoami)
who.add_edge(START, "whoami")
who.add_edge("whoami", END)
whoami_graph = who.compile()

holder = StateGraph(HoldState)
holder.add_node("hold", hold)
holder.add_edge(START, "hold")
holder.add_edge("hold", END)
hold_graph = holder.compile()
