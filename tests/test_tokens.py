"""A run's `messages` events are LangGraph's, wherever they come from and in their order.

On the in-process bus the server makes a run's `messages` events in a handler of its own
(execution/tokens.py), not through LangGraph's `messages` mode; on Redis through LangGraph's
mode. Either way the events must be those LangGraph's mode streams in-process for the same
graph: tests/tokens_app's `tokens` graph has a message in every place LangGraph takes one
from (tokens after a custom event, a returned message, a `nostream` model, a subgraph, a graph
run outside the run, a synchronous model in a worker thread), and its `pair` two models
streaming at once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentstream.execution.modes import Translator
from agentstream.execution.tokens import Tokens
from tests.helpers import import_file, url_on_each_deployment

APP = Path(__file__).resolve().parent / "tokens_app"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HI = {"messages": [{"role": "human", "content": "hi there"}]}
ALL_MODES = ["values", "updates", "messages-tuple", "custom"]
# A subgraph's task id in an event's name: random in every run.
TASK = re.compile(r":[0-9a-f-]{36}")

Event = tuple[Any, ...]


GRAPHS = import_file(APP / "graph.py", "tokens_app_graph", beside=EXAMPLES)


tokens_url = url_on_each_deployment("tokens_url", APP / "langgraph.json")


@pytest.fixture
async def client(tokens_url: str) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=tokens_url)
    yield c
    await c.http.client.aclose()


def _event(name: str, data: Any) -> Event:
    """What is compared of an event: its name (a subgraph's task id left out) and, for a
    message, its type, its text and the node it came from."""
    name = TASK.sub("", name)
    if name.split("|")[0] == "messages":
        message, metadata = data
        return (name, message["type"], message["content"], metadata["langgraph_node"])
    return (name,)


async def _served(
    client: LangGraphClient, graph: str, modes: list[str], subgraphs: bool
) -> list[Event]:
    events = []
    async for part in client.runs.stream(
        None, graph, input=HI, stream_mode=modes, stream_subgraphs=subgraphs
    ):
        if part.event != "metadata":
            events.append(_event(part.event, part.data))
    return events


def _message(message: BaseMessage) -> dict[str, Any]:
    return {"type": message.type, "content": message.content}


async def _in_process(graph: str, modes: list[str], subgraphs: bool) -> list[Event]:
    """LangGraph's own stream of the graph, its modes named as the server names them."""
    lg_modes = ["messages" if mode == "messages-tuple" else mode for mode in modes]
    pregel = getattr(GRAPHS, graph)
    events = []
    say = {"messages": [HumanMessage("hi there")]}
    async for part in pregel.astream(say, stream_mode=lg_modes, subgraphs=subgraphs):
        ns, mode, chunk = part if subgraphs else ((), *part)
        name = mode + ("|" + "|".join(ns) if ns else "")
        if mode == "messages":
            chunk = (_message(chunk[0]), chunk[1])
        events.append(_event(name, chunk))
    return events


@pytest.mark.parametrize("subgraphs", [False, True])
@pytest.mark.parametrize("modes", [["messages-tuple"], ALL_MODES])
async def test_a_runs_messages_are_langgraphs_in_its_order(
    client: LangGraphClient, modes: list[str], subgraphs: bool
) -> None:
    served = await _served(client, "tokens", modes, subgraphs)
    expected = await _in_process("tokens", modes, subgraphs)
    assert served == expected
    nodes = {event[3] for event in served if len(event) == 4}
    # Every kind of message is there: the test graph still tests what it says.
    assert {"speak", "whole", "quiet", "in_a_thread", "blocking"} <= nodes
    blocking = [event[2] for event in served if len(event) == 4 and event[3] == "blocking"]
    assert len(blocking) == 22, "each of the synchronous call's tokens, then the last chunk"
    assert ("inner" in nodes) is subgraphs
    if "custom" in modes:  # the custom event a node emits before its model call comes first
        speak = [event[0] for event in served if event[-1] == "speak" or event == ("custom",)]
        assert speak[0] == "custom"


async def test_two_models_at_once_each_stream_in_their_order(client: LangGraphClient) -> None:
    served = await _served(client, "pair", ["messages-tuple"], False)
    for node in ("left", "right"):
        texts = [event[2] for event in served if event[3] == node]
        assert texts == ["echo:", f" {node}", " one", " two", " three", ""]


async def test_a_graph_run_outside_the_run_keeps_its_tokens_unless_subgraphs_are_asked(
    client: LangGraphClient,
) -> None:
    # LangGraph's own rule: a graph a node runs with a config of its own is not the run's
    # graph; its model's tokens stream only to a run that streams subgraphs, and unnamed.
    for subgraphs in (False, True):
        served = await _served(client, "tokens", ["messages-tuple"], subgraphs)
        far = [event for event in served if event[3] == "far"]
        assert [event[0] for event in far] == (["messages"] * 3 if subgraphs else [])


# --- the handler itself ------------------------------------------------------------------------


async def test_tokens_takes_what_langgraphs_queue_holds_before_its_own_events() -> None:
    # The order the handler keeps, without a server: a node's custom event, in LangGraph's
    # queue only after a turn of the loop, comes before the model's tokens that follow it.
    items: list[tuple[str, str, bytes]] = []
    flushed: list[int] = []
    translator = Translator(["messages-tuple", "custom"])
    run_id = uuid.uuid4()
    handler = Tokens(
        translator,
        items,
        lambda: None,
        lambda: flushed.append(len(items)),
        root=run_id,
        subgraphs=False,
    )
    parts = GRAPHS.tokens.astream(
        {"messages": [HumanMessage("hi there")]},
        {"run_id": run_id, "callbacks": [handler]},
        stream_mode=["custom", "values"],
    )
    handler.reads(parts)
    looped = 0  # events the loop over astream appended; the handler counts its own
    async for part in parts:
        batch = translator.part(part)
        items.extend(batch)
        looped += len(batch)
    names = [name for _, name, _ in items]
    first_token = names.index("messages")
    assert names[:first_token] == ["custom"], "the custom event speak emits before its model"
    assert names.count("messages") == 33
    assert handler.count + looped == len(items)
    assert flushed, "a model call's tokens are handed to the log's readers on their way"
