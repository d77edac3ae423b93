"""`burst`: a model whose reply comes in one burst (the examples' EchoModel: no suspension
between its tokens), beside a node that waits a few turns of the loop and then says so. Where
that node's event lands among the tokens tells whether the burst held the loop
(tests/test_pace.py). `burst_sync`: the same model called from a synchronous node."""

import asyncio
from typing import Any

from fake_model import EchoModel
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph


async def reply(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    # "echo:" and `repeat` words more: 1,000 tokens.
    repeat = int(config.get("configurable", {}).get("repeat", 999))
    return {"messages": [await EchoModel(repeat=repeat).ainvoke(state["messages"])]}


def reply_in_a_thread(state: MessagesState) -> dict[str, Any]:
    # A synchronous node: LangGraph runs it in a worker thread, the model's tokens go through
    # LangChain's synchronous callbacks.
    return {"messages": [EchoModel(repeat=299).invoke(state["messages"])]}


async def aside(state: MessagesState) -> dict[str, Any]:
    for _ in range(3):
        await asyncio.sleep(0)
    get_stream_writer()({"aside": "here"})
    return {}


builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_node("aside", aside)
builder.add_edge(START, "reply")
builder.add_edge(START, "aside")
graph = builder.compile()

sync_builder = StateGraph(MessagesState)
sync_builder.add_node("reply", reply_in_a_thread)
sync_builder.add_edge(START, "reply")
sync_graph = sync_builder.compile()
