"""EchoModel: a deterministic, offline chat model that streams its reply one word at a time."""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

# A word together with the whitespace before it, or whitespace that trails the text, so that
# the chunks always join back to the exact reply.
_TOKEN = re.compile(r"\s*\S+|\s+")


class EchoModel(BaseChatModel):
    """Answers "echo: <last human message>", repeating the text `repeat` times."""

    repeat: int = 1
    delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "echomodel"

    def reply_text(self, messages: list[BaseMessage]) -> str:
        said = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        return "echo: " + " ".join([said] * max(self.repeat, 1))

    def tokens(self, messages: list[BaseMessage]) -> list[str]:
        return _TOKEN.findall(self.reply_text(messages))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _result(self.reply_text(messages))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Overridden so a plain ainvoke does not hop to a worker thread for no reason.
        return _result(self.reply_text(messages))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for i, token in enumerate(self.tokens(messages)):
            if i and self.delay > 0:
                time.sleep(self.delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            # langchain-core reports tokens itself on the paths where it withholds run_manager;
            # when it hands one over, reporting is this model's job.
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for i, token in enumerate(self.tokens(messages)):
            if i and self.delay > 0:
                await asyncio.sleep(self.delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _result(text: str) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
