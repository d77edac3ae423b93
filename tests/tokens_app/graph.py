"""Graphs with a message in every place LangGraph's `messages` mode takes one from: a model's
tokens after a custom event, a message a node returns, a model call tagged `nostream`, a
subgraph's model, a graph a node invokes outside its run (a thread of its own), a synchronous
model in a worker thread and one on the loop's thread, and (`pair`) two models streaming at
once. tests/test_tokens.py holds the server's `messages` events equal to what LangGraph
streams in-process."""

import asyncio
from typing import Any

from fake_model import EchoModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph


def _said(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


async def speak(state: MessagesState) -> dict[str, Any]:
    get_stream_writer()({"before": "speak"})
    return {"messages": [await EchoModel().ainvoke(state["messages"])]}


async def whole(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage("returned whole", id="whole")]}


async def quiet(state: MessagesState) -> dict[str, Any]:
    # Not streamed, token by token; LangGraph's handler sends it whole as the node returns it.
    model = EchoModel().with_config(tags=["nostream"])
    return {"messages": [await model.ainvoke([HumanMessage("quietly")])]}


async def inner(state: MessagesState) -> dict[str, Any]:
    get_stream_writer()({"before": "inner"})
    return {"messages": [await EchoModel().ainvoke([HumanMessage("inside")])]}


inner_builder = StateGraph(MessagesState)
inner_builder.add_node("inner", inner)
inner_builder.add_edge(START, "inner")
child = inner_builder.compile()

elsewhere_builder = StateGraph(MessagesState)
elsewhere_builder.add_node("far", inner)
elsewhere_builder.add_edge(START, "far")
elsewhere = elsewhere_builder.compile()


async def detached(state: MessagesState) -> dict[str, Any]:
    # A graph run outside this run (not as its task): its tokens are its own.
    await elsewhere.ainvoke(_said("far away"), {"configurable": {"thread_id": "elsewhere"}})
    return {"messages": [AIMessage("back", id="back")]}


def in_a_thread(state: MessagesState) -> dict[str, Any]:
    return {"messages": [EchoModel().invoke([HumanMessage("threaded")])]}


async def blocking(state: MessagesState) -> dict[str, Any]:
    # A synchronous call on the loop's thread: LangChain's synchronous callbacks, in place.
    return {"messages": [EchoModel(repeat=20).invoke([HumanMessage("blocking")])]}


builder = StateGraph(MessagesState)
for name, node in [
    ("speak", speak),
    ("whole", whole),
    ("quiet", quiet),
    ("child", child),
    ("detached", detached),
    ("in_a_thread", in_a_thread),
    ("blocking", blocking),
]:
    builder.add_node(name, node)
builder.add_edge(START, "speak")
builder.add_edge("speak", "whole")
builder.add_edge("whole", "quiet")
builder.add_edge("quiet", "child")
builder.add_edge("child", "detached")
builder.add_edge("detached", "in_a_thread")
builder.add_edge("in_a_thread", "blocking")
tokens = builder.compile()


async def left(state: MessagesState) -> dict[str, Any]:
    model = EchoModel(delay=0.001)
    return {"messages": [await model.ainvoke([HumanMessage("left one two three")])]}


async def right(state: MessagesState) -> dict[str, Any]:
    await asyncio.sleep(0.0005)
    model = EchoModel(delay=0.001)
    return {"messages": [await model.ainvoke([HumanMessage("right one two three")])]}


pair_builder = StateGraph(MessagesState)
pair_builder.add_node("left", left)
pair_builder.add_node("right", right)
pair_builder.add_edge(START, "left")
pair_builder.add_edge(START, "right")
pair = pair_builder.compile()
