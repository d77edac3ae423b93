"""LangGraph's PostgreSQL saver, serialising on the event loop instead of on a thread.

Its async saver sends each checkpoint's and each task's writes' serialisation (and a read's
pending writes' decoding) to the loop's default executor with `asyncio.to_thread`: a thread
hop a step, and more at a run's start, each costing the loop two turns and a thread's wake-up.
Under the GIL the hop buys a small state nothing, the thread holding the lock while it
serialises, and LangGraph's SQLite saver (the embedded deployment's) serialises on the loop
already. With them in place a worker ran 5 to 20 % more threaded runs a second on 5 to 17 %
less CPU a run (six pairs: benchmarks/README, "The fifteenth session"). The price, the same as
SQLite's: a state that takes long to serialise holds the loop that long, where the thread
would have let it in every switch interval (5 ms); a conversation of 1,000 messages, half a
megabyte, takes 3 ms here.

The saver's own methods are used as they are, each seeing an `asyncio` whose `to_thread`
calls in place: nothing of the library is rewritten here, and nothing outside this class
changes.

A task's writes also wait for the saver's next statement (`HeldWrites`): the checkpoint that
follows them, a read, or the end of the saver's use (`flush`, storage's `checkpointer()`), and
go in the same pipeline, before it. The library sends each on its own, a connection, a
pipeline and a round trip each; in a threaded run of the benchmark's agent graph that was
three of its eleven round trips to PostgreSQL. What stays as it was: a checkpoint is never
stored before the writes that led to it (in one pipeline they are one implicit transaction,
now stored together), and a read sees every write made before it. An interrupt's or an
error's writes (channels named `__...__`) are still sent at once: what resumes a run after a
crash, or its error handler, reads them. What changes: the writes of the task running when
the process dies are lost with it, where they might have reached the database; the run, taken
over, runs that task again as it would have had the task not finished.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import types
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

T = TypeVar("T")


# A (de)serialisation that held the loop longer than this (the interpreter's switch interval,
# at which a thread would have let the loop in) sends the rest of its saver's to a thread.
HEAVY_SECONDS = 0.005


class _InPlace:
    """asyncio, but for `to_thread`, which runs the call where it is, unless the saver whose
    method it calls met a heavy state (`LoopSaver.heavy`): a run whose state takes long to
    serialise holds the loop once, not at every step."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        saver = getattr(func, "__self__", None)
        if not isinstance(saver, LoopSaver) or saver.heavy:  # not one of ours, or heavy
            return await asyncio.to_thread(func, *args, **kwargs)
        started = time.perf_counter()
        result = func(*args, **kwargs)
        saver.heavy = time.perf_counter() - started > HEAVY_SECONDS
        return result


def _in_place(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` (a function of the saver's module) seeing `_InPlace` as its `asyncio`; as it
    is when it is not a plain function (a later release's decorated method, say)."""
    if not isinstance(method, types.FunctionType):
        return method
    names = {**method.__globals__, "asyncio": _InPlace()}
    function = types.FunctionType(
        method.__code__, names, method.__name__, method.__defaults__, method.__closure__
    )
    function.__kwdefaults__ = method.__kwdefaults__
    function.__qualname__ = method.__qualname__
    function.__doc__ = method.__doc__
    return function


# Set while the library's aput_writes runs for writes to hold: its cursor then keeps them.
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("holding", default=False)


class HeldWrites:
    """The cursor aput_writes gets while its writes are held: it keeps what it is given."""

    def __init__(self, held: list[tuple[Any, list[Any]]]) -> None:
        self.held = held

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        self.held.append((query, list(params_seq)))


class LoopSaver(AsyncPostgresSaver):
    """The methods that hop to a thread, without the hop (one saver a run, storage's
    `checkpointer()`), until a (de)serialisation of its took longer than HEAVY_SECONDS; and a
    task's writes held for the saver's next statement (see the module's docstring)."""

    heavy = False
    _held: list[tuple[Any, list[Any]]] | None = None  # (query, parameters) in order

    async def aput_writes(
        self,
        config: Any,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not HOLDS or any(channel.startswith("__") for channel, _ in writes):
            await _aput_writes(self, config, writes, task_id, task_path)
            return
        holding = _HOLDING.set(True)
        try:
            await _aput_writes(self, config, writes, task_id, task_path)
        finally:
            _HOLDING.reset(holding)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
        if _HOLDING.get():
            if self._held is None:
                self._held = []
            yield HeldWrites(self._held)
            return
        async with super()._cursor(pipeline=pipeline) as cur:
            held, self._held = self._held, None
            for query, params_seq in held or ():  # first, in the same pipeline
                await cur.executemany(query, params_seq)
            yield cur

    async def flush(self) -> None:
        """Sends the writes still held (the saver's use is over)."""
        if self._held:
            async with self._cursor(pipeline=True):
                pass


# Each release of the 3.x range has these three; one a later release renames or drops keeps
# the library's own (hopping) behaviour, which the test that counts the hops reports.
for _name in ("aput", "_load_checkpoint_tuple"):
    if _name in vars(AsyncPostgresSaver):
        setattr(LoopSaver, _name, _in_place(vars(AsyncPostgresSaver)[_name]))
# The third, which LoopSaver.aput_writes calls.
_own = vars(AsyncPostgresSaver).get("aput_writes")
_aput_writes = AsyncPostgresSaver.aput_writes if _own is None else _in_place(_own)

# The library's aput_writes sends its writes with one executemany on a `_cursor(pipeline=True)`:
# a release that sends them otherwise has them sent at once, as it does.
HOLDS = {"_cursor", "executemany"} <= set(AsyncPostgresSaver.aput_writes.__code__.co_names)
