"""A model's burst of tokens does not hold the loop: the run's events go out while it lasts.

tests/burst_app's `burst` graph runs a model that makes 1,000 tokens without a suspension,
beside a node that waits three turns of the loop and then emits a custom event. Unpaced, that
event came after the last token (the burst ran in one step of the loop, and so did the
reader's whole share of it); paced, it lands among them.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks.manager import CallbackManagerForLLMRun
from langchain_core.outputs import LLMResult
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentstream.execution.pace import YIELD_EVERY, Pace
from tests.helpers import url_on_each_deployment

BURST_APP = Path(__file__).resolve().parent / "burst_app" / "langgraph.json"
HI = {"messages": [{"role": "human", "content": "hi"}]}


burst_url = url_on_each_deployment("burst_url", BURST_APP)


@pytest.fixture
async def client(burst_url: str) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=burst_url)
    yield c
    await c.http.client.aclose()


@pytest.mark.parametrize("mode", ["messages-tuple", "messages"])
async def test_a_burst_of_tokens_lets_the_rest_of_the_run_go_on(
    client: LangGraphClient, mode: str
) -> None:
    events: list[str] = []
    async for part in client.runs.stream(None, "burst", input=HI, stream_mode=[mode, "custom"]):
        if part.event == "custom":
            assert part.data == {"aside": "here"}
            events.append("aside")
        elif part.event == "messages" or part.event == "messages/partial":
            events.append("token")
    tokens = events.count("token")
    assert tokens >= 1000 and events.count("aside") == 1
    # Among the tokens, not after them: the burst handed the loop over on its way.
    assert 0 < events.index("aside") < tokens


async def test_the_tokens_of_a_threaded_run_arrive_whole_and_in_order(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    texts = [
        part.data[0]["content"]
        async for part in client.runs.stream(
            thread["thread_id"], "burst", input=HI, stream_mode="messages-tuple"
        )
        if part.event == "messages"
    ]
    assert [text for text in texts if text] == ["echo:", *[" hi"] * 999]
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["messages"][-1]["content"] == "".join(texts)


async def test_a_synchronous_model_streams_its_tokens_through_a_paced_run(
    client: LangGraphClient,
) -> None:
    texts = [
        part.data[0]["content"]
        async for part in client.runs.stream(
            None, "burst_sync", input=HI, stream_mode="messages-tuple"
        )
        if part.event == "messages"
    ]
    assert [text for text in texts if text] == ["echo:", *[" hi"] * 299]


# --- the handler itself ------------------------------------------------------------------------


async def test_pace_hands_the_loop_over_soon_at_first_then_every_yield_every() -> None:
    pace = Pace()
    let_by = [i for i in range(1, 4 * YIELD_EVERY + 1) if not pace.ignore_llm]
    ramp = [1, 2, 4, 8, 16, 32, 64, 128]
    assert YIELD_EVERY == 128 and let_by == [*ramp, 256, 384, 512]
    # Each chat model call starts over (LangChain reads ignore_chat_model as it starts).
    assert pace.ignore_chat_model
    assert [i for i in range(1, 20) if not pace.ignore_llm] == [1, 2, 4, 8, 16]
    # What it then awaits is one turn of the loop: another task runs meanwhile.
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.ensure_future(other())
    await pace.on_llm_new_token("x")
    assert ran == ["other"]
    await task
    # So is a stream event's (astream_events v3, protocol v2's runs: ignore_llm is read for
    # those too, and a hand-over may fall on one).
    task = asyncio.ensure_future(other())
    await pace.on_stream_event({"event": "content-block-delta"})
    assert ran == ["other", "other"]
    await task
    # Less often where a publish is a round trip (the executor's choice on Redis).
    every = Pace(256)
    assert [i for i in range(1, 1100) if not every.ignore_llm] == [*ramp, 256, 512, 768, 1024]


class _Counted(Pace):
    calls = 0

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.calls += 1


def test_pace_lets_a_synchronous_model_in_a_thread_be() -> None:
    # LangChain's synchronous callbacks would run a coroutine in a loop of their own for each
    # token let by: in a worker thread (no running loop) every event is passed over instead.
    pace = _Counted()
    manager = CallbackManagerForLLMRun(
        run_id=uuid.uuid4(), handlers=[pace], inheritable_handlers=[pace]
    )

    def model() -> None:
        for _ in range(300):
            manager.on_llm_new_token("x")
            manager.on_text("x")  # an event without an ignore_ flag: a synchronous no-op
        manager.on_llm_end(LLMResult(generations=[]))

    worker = threading.Thread(target=model)
    worker.start()
    worker.join()
    assert pace.calls == 0
