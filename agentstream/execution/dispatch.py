"""A model's tokens handed to the callback handlers we know, without LangChain's generic dispatch.

LangChain hands each token of an asynchronous model (`on_llm_new_token`; under
`astream_events(version="v3")`, protocol v2's runs, `on_stream_event`) to the call's handlers
through `ahandle_event`: the inline handlers one by one, each in a coroutine of its own that
reads its ignore flag and asks whether its method is a coroutine function, then a `gather()` of
the others, which makes a future and looks the running loop up (a getpid system call on Python
3.11) even when there are none. With one inline handler that is 3.2 us a token here, against
0.2 us for the handler's own call: a fifth of the server's CPU a token of a v1 run.

Where every handler of the call is one of ours or one of LangGraph's streaming handlers (all
of them inline), the run manager's two methods dispatch in place, as LangChain would: in order,
each handler that does not ignore the event called, and awaited where its method is a coroutine
function; a failure logged, and raised where the handler asks for that. A call with any other
handler goes LangChain's way, unchanged, and so does every call where LangChain's methods have
another shape than the ones these stand in for (`INSTALLED` says which). They are put in place
by the process's executor (`install`), for the whole process.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks.base import BaseCallbackHandler
from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun
from langgraph.pregel._messages import StreamMessagesHandler, StreamMessagesHandlerV2
from langgraph.pregel._tools import StreamToolCallHandler

from agentstream.execution.pace import Pace
from agentstream.execution.tokens import SUPPORTED, Tokens

log = logging.getLogger("agentstream.dispatch")

# The handlers dispatched in place: LangChain runs each inline (run_inline), and we know them.
_OURS = frozenset(
    {Tokens, Pace, StreamMessagesHandler, StreamMessagesHandlerV2, StreamToolCallHandler}
)

_NEW_TOKEN = AsyncCallbackManagerForLLMRun.on_llm_new_token
_STREAM_EVENT = AsyncCallbackManagerForLLMRun.on_stream_event
# LangChain's own, by name (the tests compare the two).
LANGCHAINS = {"on_llm_new_token": _NEW_TOKEN, "on_stream_event": _STREAM_EVENT}


def _ours(handlers: list[BaseCallbackHandler]) -> bool:
    return all(type(handler) in _OURS for handler in handlers)


async def _each(handlers: list[BaseCallbackHandler], name: str, *args: Any, **kwargs: Any) -> None:
    """One model event (whose ignore flag is `ignore_llm`) to each handler, in order."""
    for handler in handlers:
        try:
            if handler.ignore_llm:
                continue
            method = getattr(handler, name)
            if inspect.iscoroutinefunction(method):
                await method(*args, **kwargs)
            else:
                method(*args, **kwargs)
        except Exception as exc:  # a handler's failure never fails the model, unless it asks
            log.warning("Error in %s.%s callback: %r", type(handler).__name__, name, exc)
            if handler.raise_error and not isinstance(exc, NotImplementedError):
                raise


async def _on_llm_new_token(
    self: AsyncCallbackManagerForLLMRun, token: Any, *, chunk: Any = None, **kwargs: Any
) -> None:
    handlers = self.handlers
    if len(handlers) == 1 and type(handlers[0]) is Tokens:  # the run's own handler alone
        try:
            paced = handlers[0].direct(token, chunk, self.run_id)
            if paced is not None:
                await paced
        except Exception as exc:
            log.warning("Error in Tokens.on_llm_new_token callback: %r", exc)
    elif handlers and _ours(handlers):
        await _each(
            handlers, "on_llm_new_token", token, chunk=chunk, run_id=self.run_id,
            parent_run_id=self.parent_run_id, tags=self.tags, **kwargs,
        )  # fmt: skip
    else:
        await _NEW_TOKEN(self, token, chunk=chunk, **kwargs)


async def _on_stream_event(self: AsyncCallbackManagerForLLMRun, event: Any, **kwargs: Any) -> None:
    handlers = self.handlers
    if handlers and _ours(handlers):
        await _each(
            handlers, "on_stream_event", event, run_id=self.run_id,
            parent_run_id=self.parent_run_id, tags=self.tags, **kwargs,
        )  # fmt: skip
    else:
        await _STREAM_EVENT(self, event, **kwargs)


def _shape(method: Any) -> list[tuple[str, Any]] | None:
    if not inspect.iscoroutinefunction(method):
        return None
    try:
        return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]
    except (TypeError, ValueError):
        return None


_P = inspect.Parameter
# Each stands in for LangChain's method of the same name where that has this shape.
_STANDS_IN: dict[str, tuple[Callable[..., Any], list[tuple[str, Any]]]] = {
    "on_llm_new_token": (
        _on_llm_new_token,
        [("self", _P.POSITIONAL_OR_KEYWORD), ("token", _P.POSITIONAL_OR_KEYWORD),
         ("chunk", _P.KEYWORD_ONLY), ("kwargs", _P.VAR_KEYWORD)],
    ),
    "on_stream_event": (
        _on_stream_event,
        [("self", _P.POSITIONAL_OR_KEYWORD), ("event", _P.POSITIONAL_OR_KEYWORD),
         ("kwargs", _P.VAR_KEYWORD)],
    ),
}  # fmt: skip

# The methods dispatching in place in this process.
INSTALLED: set[str] = set()


def stand_ins() -> dict[str, Callable[..., Any]]:
    """Ours, by name, for each of LangChain's methods that has the shape ours stands in for."""
    if not SUPPORTED:
        return {}
    return {
        name: ours
        for name, (ours, shape) in _STANDS_IN.items()
        if _shape(LANGCHAINS[name]) == shape
    }


def install() -> None:
    """Puts the stand-ins in place on LangChain's run manager, for the whole process (a
    process that runs runs: the executor's)."""
    for name, ours in stand_ins().items():
        if getattr(AsyncCallbackManagerForLLMRun, name) is not ours:
            setattr(AsyncCallbackManagerForLLMRun, name, ours)
        INSTALLED.add(name)
