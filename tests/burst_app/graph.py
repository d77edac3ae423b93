"""`burst`: a model whose reply comes in one burst (no suspension between its tokens), beside a
node that waits a few turns of the loop and then says so. Where that node's event lands among
the tokens tells whether the burst held the loop (tests/test_pace.py). `burst_sync`: the same
model called from a synchronous node."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph


class BurstModel(BaseChatModel):
    tokens: int = 1000

    @property
    def _llm_type(self) -> str:
        return "burst"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(f" t{i}" for i in range(self.tokens))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for i in range(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=f" t{i}"))
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for i in range(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=f" t{i}"))
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


async def reply(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    tokens = int(config.get("configurable", {}).get("tokens", 1000))
    return {"messages": [await BurstModel(tokens=tokens).ainvoke(state["messages"])]}


def reply_in_a_thread(state: MessagesState) -> dict[str, Any]:
    # A synchronous node: LangGraph runs it in a worker thread, the model's tokens go through
    # LangChain's synchronous callbacks.
    return {"messages": [BurstModel(tokens=300).invoke(state["messages"])]}


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
