"""Tokens: a run's `messages` events made where LangGraph reports them, on the in-process bus.

LangGraph's own `messages` mode puts each token in its stream's queue through a handler of its
own, `astream` yields it from there, and the executor's loop translates it; beside it `Pace`,
a second handler, hands the loop over now and then (pace.py). Two handlers a token (LangChain
dispatches each with a coroutine of its own), a queue and a generator's step: measured
in-process on a 2,003-token reply, 14.3-14.7 us a token that way against 12.6-12.7 with one
handler that makes the events itself and paces. This is that handler, for the runs whose log
is in this process: a `StreamMessagesHandler` of LangGraph's (so that it sees what LangGraph's
does, node outputs included, and LangGraph leaves it out of the graphs that are not its run's
as it does its own), whose events go into the run's log at once.

The one thing LangGraph's queue gave for free is order: what the graph put there before a
token (a custom event emitted before the model was called; with subgraphs, a subgraph's
values) must reach the log before it. So before each event of its own the handler takes what
the queue holds, in order, through the same translator as the executor's loop would; and at
a model call's first token it first hands the loop over, once, so that what the node emitted
just before the call (LangGraph's stream writer puts it in the queue a loop turn later) is
there to take.

A token also reaches the handler without LangChain's dispatch in between, where the handler
is the model call's only one (`Tokens.direct`, dispatch.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from uuid import UUID, uuid4

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langgraph.pregel import Pregel
from langgraph.pregel._messages import StreamMessagesHandler

from agentstream.execution.modes import Item, Translator
from agentstream.execution.pace import YIELD_EVERY

# Where LangGraph's astream keeps its stream's queue: a local of its generator's frame, read
# once a run. Checked here, at import: a LangGraph without it streams tokens its own way.
_QUEUE = "stream"
_CODE = Pregel.astream.__code__
SUPPORTED = _QUEUE in _CODE.co_varnames + _CODE.co_cellvars  # a cell: its closures use it

_Chunk = tuple[tuple[str, ...], str, tuple[BaseMessage, dict[str, Any]]]  # (ns, mode, pair)


class Tokens(StreamMessagesHandler):
    """One run's `messages` events, appended to `items` (the run's writer's list; `soon()`
    when it was empty, `flush()` to hand a burst to its readers)."""

    run_inline = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(
        self,
        translator: Translator,
        items: list[Item],
        soon: Callable[[], None],
        flush: Callable[[], None],
        *,
        root: UUID,
        subgraphs: bool,
        every: int = YIELD_EVERY,
    ) -> None:
        # Not StreamMessagesHandler.__init__: `subgraphs` is a property here.
        self.stream = self._put
        self.metadata = {}
        self.seen = set()
        self.parent_ns = ()
        self.count = 0  # events this handler appended
        self._translator = translator
        self._items = items
        self._soon = soon
        self._flush = flush
        self._root = root
        self._subgraphs = subgraphs
        self._armed = False
        self._every = every
        self._left = self._step = 1
        self._fresh = False  # a model call started, its first token not yet here
        self._parts: Any = None  # the graph's astream, for its queue
        self._queue: asyncio.Queue[Any] | None = None
        self._pair = translator.pair if translator.pairs_only else None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._late: deque[_Chunk] = deque()  # messages from other threads, on their way

    def reads(self, parts: Any) -> None:
        """The graph's astream generator, whose queue holds what comes before a token."""
        self._parts = parts

    @property
    def subgraphs(self) -> bool:  # type: ignore[override]
        # LangGraph leaves a handler without subgraphs out of every graph run not as a task of
        # another (a graph a node invokes with a thread of its own), the run's own graph
        # included: so this says True until that graph has started.
        return self._subgraphs if self._armed else True

    # -- what LangGraph's handler would put in its queue -----------------------------------

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        if not self._armed and run_id == self._root:
            self._armed = True
            return None
        return super().on_chain_start(serialized, inputs, run_id=run_id, **kwargs)

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> Any:
        super().on_chat_model_start(serialized, messages, **kwargs)
        self._left = self._step = 1  # paced from its first token again (see Pace)
        self._fresh = True

    @property
    def on_llm_new_token(self) -> Callable[..., Any]:  # type: ignore[override]
        # Read by LangChain for each token, then called; a coroutine function is awaited.
        return self._token_and_turn if self._paced() else self._token

    def direct(self, token: Any, chunk: Any, run_id: UUID) -> Coroutine[Any, Any, None] | None:
        """A token handed over by dispatch.py, paced as on_llm_new_token's: taken at
        once, or a coroutine to await that takes it and hands the loop over."""
        if self._paced():
            return self._token_and_turn(token, chunk=chunk, run_id=run_id)
        self._token(token, chunk=chunk, run_id=run_id)
        return None

    def _paced(self) -> bool:
        """Counts a token: whether it is one that hands the loop over (as Pace: a call's 1st,
        2nd, 4th ... token, then every `every`), where a loop runs to hand over."""
        self._left -= 1
        if self._left > 0 or asyncio._get_running_loop() is None:
            return False
        self._left = self._step
        self._step = min(self._step * 2, self._every)
        return True

    def _token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        meta = self.metadata.get(run_id)
        if meta is None or not isinstance(chunk, ChatGenerationChunk):
            return
        message = chunk.message
        if message.id is None:
            message.id = str(uuid4())
        self.seen.add(message.id)
        if self._late or threading.get_ident() != self._thread:
            self._defer((meta[0], "messages", (message, meta[1])))
            return
        queue = self._queue
        if queue is not None and queue._queue:  # type: ignore[attr-defined]
            self._take(queue)
        ns = meta[0]
        if self._pair is not None and not ns:
            self._items.append(("messages-tuple", "messages", self._pair((message, meta[1]))))
            if len(self._items) == 1:
                self._soon()
            self.count += 1
        else:
            self._append(self._translator.translate(ns, "messages", (message, meta[1])))

    async def _token_and_turn(self, token: Any, **kwargs: Any) -> None:
        if threading.get_ident() != self._thread:
            # A synchronous model called on the loop's thread: LangChain runs this coroutine
            # in a loop of its own, in another thread (_token defers it to the loop's).
            self._token(token, **kwargs)
            return
        if self._fresh:  # what the node emitted before the call: in the queue after a turn
            self._fresh = False
            await asyncio.sleep(0)
            self._take(self._queue_now())
            self._token(token, **kwargs)
            return
        self._token(token, **kwargs)
        self._flush()
        await asyncio.sleep(0)

    def _put(self, chunk: _Chunk) -> None:
        # A whole message: a node's output, a reply not streamed (StreamMessagesHandler._emit).
        if self._late or threading.get_ident() != self._thread:
            self._defer(chunk)
            return
        self._add(chunk)

    def _add(self, chunk: _Chunk) -> None:
        self._take(self._queue_now())
        self._append(self._translator.translate(chunk[0], chunk[1], chunk[2]))

    # -- from other threads -----------------------------------------------------------------

    def _defer(self, chunk: _Chunk) -> None:
        """A message from another thread (a synchronous model in a worker thread, or in
        LangChain's own thread for a coroutine of this handler) reaches the log on the loop's;
        and while any is on its way, so do the ones after it, to keep their order."""
        self._late.append(chunk)
        self._loop.call_soon_threadsafe(self._undefer)

    def _undefer(self) -> None:
        self._add(self._late.popleft())

    # -- the order --------------------------------------------------------------------------

    def _queue_now(self) -> asyncio.Queue[Any] | None:
        if self._queue is None and self._parts is not None:
            frame = getattr(self._parts, "ag_frame", None)
            found = frame.f_locals.get(_QUEUE) if frame is not None else None
            if isinstance(found, asyncio.Queue):
                self._queue = found
        return self._queue

    def _take(self, queue: asyncio.Queue[Any] | None) -> None:
        """What LangGraph's queue holds, translated as the executor's loop would have."""
        if queue is None:
            return
        translate = self._translator.translate
        while not queue.empty():
            ns, mode, payload = queue.get_nowait()
            self._append(translate(ns, mode, payload))

    def _append(self, batch: Iterable[Item]) -> None:
        items = self._items
        was = len(items)
        items.extend(batch)
        if len(items) > was:
            if not was:
                self._soon()
            self.count += len(items) - was
