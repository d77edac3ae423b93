"""Pace: a model's tokens reach the run's readers while the model is still producing them.

For runs that stream `events` or protocol v2's events; a run streaming `messages` or
`messages-tuple` is paced the same way by its Tokens handler instead (tokens.py).

A chat model whose tokens come without a suspension in between (a local or cached model, a
fake one in tests; LangChain's callbacks do not suspend) runs its whole reply in one step of
the loop: LangGraph queues every token, and the executor, the run's log and its readers see
none of them until the reply is done. The first token then reaches the client after the last
one was made, and the client decodes the whole reply after the server is done with it: a
2,003-token reply on the benchmark's machine left the server idle for a seventh of its
stream, waiting for its client. A model reached over the network suspends between its tokens
anyway; for it this costs a few suspensions a call, then one in YIELD_EVERY tokens.

The handler runs inline (LangChain awaits it in place) and says it ignores every event but
the tokens it hands the loop over at, so a token it lets by costs LangChain's dispatch to it
(0.8 us on the benchmark's machine), not a suspension.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

# One suspension in this many tokens (on the in-process bus), once a model call is under way.
YIELD_EVERY = 128


class Pace(BaseCallbackHandler):
    """One run's pacing, inherited by every model call of its graph: suspensions at a model
    call's 1st, 2nd, 4th, 8th... token, then every `every` tokens. A token reaches the reader
    several turns of the loop after it is made (LangGraph's queue, its waiter, the executor,
    the log's reader), each turn a suspension of the model's: every 128 from the start, the
    first token of a burst left 10 ms after the model began, doubling from 1, at once.

    Every other event is the base class's synchronous no-op, so none of them (on_text has no
    ignore_ flag) makes LangChain's synchronous callbacks run a coroutine."""

    run_inline = True
    ignore_agent = True
    ignore_chain = True
    ignore_custom_event = True
    ignore_retriever = True
    ignore_retry = True

    def __init__(self, every: int = YIELD_EVERY) -> None:
        self._every = every
        self._left = self._step = 1

    @property
    def ignore_chat_model(self) -> bool:
        # Read as each chat model call starts (on_chat_model_start): it starts from 1 again.
        self._left = self._step = 1
        return True

    @property
    def ignore_llm(self) -> bool:
        # Read once for each model event, tokens included; False makes LangChain await
        # on_llm_new_token (or call the no-op on_llm_start/end: they count as a token here).
        # A synchronous model in a worker thread has no loop to hand over: ignored there.
        self._left -= 1
        if self._left > 0 or asyncio._get_running_loop() is None:
            return True
        self._left = self._step
        self._step = min(self._step * 2, self._every)
        return False

    # The two coroutines, LangChain's asynchronous callbacks await them in place (run_inline):
    # a token is an on_llm_new_token, and under astream_events v3 (protocol v2's runs) also
    # on_stream_event, ignore_llm read for each. A hand-over that fell on one without a
    # coroutine was lost: every 128 reads from the 1st fell on tokens, the doubling ones on
    # stream events, and protocol v2's first token waited for the model's last.
    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)

    async def on_stream_event(self, event: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
