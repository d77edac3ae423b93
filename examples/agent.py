"""The `agent` example: one streamed EchoModel reply, progress events, then a fixed goodbye."""

from typing import Any

from fake_model import EchoModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph


async def think(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    write = get_stream_writer()
    write({"progress": "thinking", "step": 1})
    # Clients ask for long or slow replies through the configurable, e.g. for benchmarks.
    options = config.get("configurable", {})
    model = EchoModel(repeat=int(options.get("repeat", 1)), delay=float(options.get("delay", 0.0)))
    reply = await model.ainvoke(state["messages"])
    write({"progress": "done", "step": 2})
    return {"messages": [reply]}


def finish(state: MessagesState) -> dict[str, Any]:
    # A fixed id keeps the message stable across runs, so clients can match on it.
    return {"messages": [AIMessage(content="bye", id="final-bye")]}


builder = StateGraph(MessagesState)
builder.add_node("think", think)
builder.add_node("finish", finish)
builder.add_edge(START, "think")
builder.add_edge("think", "finish")
builder.add_edge("finish", END)

# No checkpointer: the server attaches its own.
graph = builder.compile()
