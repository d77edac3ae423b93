"""A model's tokens reach our callback handlers and LangGraph's in place (execution/dispatch.py),
exactly as LangChain's own dispatch would hand them over.

Each test runs tests/tokens_app's `tokens` graph in-process, where every kind of message a
run streams is made, and compares what the handlers got in place with what they get through
LangChain's dispatch (its methods put back for the test).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks import manager as callbacks_manager
from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun
from langchain_core.messages import HumanMessage

from agentstream.execution import dispatch
from agentstream.execution.modes import Translator
from agentstream.execution.pace import Pace
from agentstream.execution.tokens import Tokens
from tests.helpers import import_file

APP = Path(__file__).resolve().parent / "tokens_app"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GRAPHS = import_file(APP / "graph.py", "tokens_app_graph", beside=EXAMPLES)
HI = {"messages": [HumanMessage("hi there")]}


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The events LangChain's generic dispatch hands to asynchronous handlers, by name."""
    names: list[str] = []
    generic = callbacks_manager.ahandle_event

    async def counted(handlers: Any, event_name: str, *args: Any, **kwargs: Any) -> None:
        names.append(event_name)
        await generic(handlers, event_name, *args, **kwargs)

    monkeypatch.setattr(callbacks_manager, "ahandle_event", counted)
    return names


@pytest.fixture(autouse=True)
def in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins in place, as a server's executor puts them (LangChain's after the test)."""
    for name, method in dispatch.stand_ins().items():
        monkeypatch.setattr(AsyncCallbackManagerForLLMRun, name, method)


@pytest.fixture
def langchains(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Puts LangChain's own methods back on the run manager, for the rest of the test."""

    def put_back() -> None:
        for name, method in dispatch.LANGCHAINS.items():
            monkeypatch.setattr(AsyncCallbackManagerForLLMRun, name, method)

    return put_back


def _tokens(items: list[Any], run_id: uuid.UUID) -> Tokens:
    translator = Translator(["messages-tuple"])
    return Tokens(translator, items, lambda: None, lambda: None, root=run_id, subgraphs=False)


def _texts(items: list[Any]) -> list[tuple[str, str]]:
    """Each `messages` event's text and node (its ids are new each run)."""
    pairs = [orjson.loads(data) for _, name, data in items if name == "messages"]
    return [(message["content"], meta["langgraph_node"]) for message, meta in pairs]


async def _run_with(handlers: list[Any], run_id: uuid.UUID) -> None:
    config = {"run_id": run_id, "callbacks": handlers}
    async for _ in GRAPHS.tokens.astream(HI, config, stream_mode="values"):
        pass


async def _v1_messages(handlers: list[Any]) -> list[tuple[str, str]]:
    """LangGraph's own `messages` mode (as runs stream on a bus without Tokens): text, node."""
    got = []
    config = {"callbacks": handlers}
    async for message, meta in GRAPHS.tokens.astream(HI, config, stream_mode="messages"):
        got.append((message.content, meta["langgraph_node"]))
    return got


async def _v3_deltas(handlers: list[Any]) -> list[tuple[str, str]]:
    """astream_events v3's text deltas (protocol v2's runs): text, node."""
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LangGraph marks v3 streaming as beta
        run = await GRAPHS.tokens.astream_events(HI, {"callbacks": handlers}, version="v3")
    async with run:
        async for event in run:
            if event["method"] != "messages":
                continue
            data, meta = event["params"]["data"]
            if isinstance(data, dict) and data.get("event") == "content-block-delta":
                got.append((data["delta"].get("text", ""), meta["langgraph_node"]))
    return got


def test_both_methods_stand_in_on_the_langchain_pinned() -> None:
    assert set(dispatch.stand_ins()) == {"on_llm_new_token", "on_stream_event"}


def test_only_an_executor_puts_them_in_place() -> None:
    # A script that imports the server's modules (the benchmark's in-process baselines) runs
    # LangChain's own dispatch; a process whose executor runs runs, ours.
    code = (
        "import agentstream.app\n"
        "import agentstream.execution.executor as e, agentstream.execution.dispatch as d\n"
        "from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun as M\n"
        "before = {n: getattr(M, n) is d.LANGCHAINS[n] for n in d.LANGCHAINS}\n"
        "e.Executor(None, None, None, 'http://x')\n"
        "after = {n: getattr(M, n) is d.LANGCHAINS[n] for n in d.LANGCHAINS}\n"
        "print(sorted(before.items()), sorted(after.items()), sorted(d.INSTALLED))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == (
        "[('on_llm_new_token', True), ('on_stream_event', True)] "
        "[('on_llm_new_token', False), ('on_stream_event', False)] "
        "['on_llm_new_token', 'on_stream_event']"
    )


async def test_an_async_models_tokens_reach_its_only_handler_without_langchains_dispatch(
    dispatched: list[str], langchains: Callable[[], None]
) -> None:
    items: list[Any] = []
    run_id = uuid.uuid4()
    await _run_with([_tokens(items, run_id)], run_id)
    assert [name for _, name, _ in items].count("messages") == 33
    # The synchronous models' tokens go through LangChain's synchronous manager, as ever.
    assert "on_llm_new_token" not in dispatched
    assert "on_chat_model_start" in dispatched  # the dispatch was watched
    langchains()
    theirs: list[Any] = []
    run_id = uuid.uuid4()
    await _run_with([_tokens(theirs, run_id)], run_id)
    assert _texts(items) == _texts(theirs)
    assert "on_llm_new_token" in dispatched


async def test_a_handler_not_ours_gets_every_token_langchains_way(dispatched: list[str]) -> None:
    class Counting(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    alone: list[Any] = []
    run_id = uuid.uuid4()
    await _run_with([_tokens(alone, run_id)], run_id)
    beside: list[Any] = []
    counting = Counting()
    run_id = uuid.uuid4()
    await _run_with([_tokens(beside, run_id), counting], run_id)
    assert _texts(beside) == _texts(alone)
    # Every token of the async model's, in order (it hears the `nostream` model's too).
    spoken = [text for text, node in _texts(alone) if node == "speak"]
    assert spoken and counting.tokens[: len(spoken)] == spoken
    assert "on_llm_new_token" in dispatched


@pytest.mark.parametrize(
    ("stream", "event"),
    [(_v1_messages, "on_llm_new_token"), (_v3_deltas, "on_stream_event")],
    ids=["langgraphs-messages-mode", "protocol-v2s-stream-events"],
)
async def test_langgraphs_handlers_and_pace_in_place_are_langchains(
    dispatched: list[str],
    langchains: Callable[[], None],
    stream: Callable[[list[Any]], Awaitable[list[tuple[str, str]]]],
    event: str,
) -> None:
    ours = await stream([Pace()])
    assert event not in dispatched
    langchains()
    theirs = await stream([Pace()])
    assert event in dispatched
    assert ours == theirs
    assert [text for text, node in ours if node == "speak"][:3] == ["echo:", " hi", " there"]


async def test_a_handler_that_fails_on_a_token_does_not_stop_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing(list[Any]):
        def append(self, item: Any) -> None:
            raise RuntimeError("refused")

    run_id = uuid.uuid4()
    with caplog.at_level(logging.WARNING):
        await _run_with([_tokens(Refusing(), run_id)], run_id)  # ends: nothing raised
    assert any("refused" in record.getMessage() for record in caplog.records)
