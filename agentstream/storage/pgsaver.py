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

Rows go in one statement a table (`AllAtOnce`): the library inserts a task's writes, and a
checkpoint's blobs, with `executemany`, a statement a row, which PostgreSQL parses, plans and
runs one by one and psycopg sends one by one; the same rows in one VALUES list are one
statement, and the writes held for a checkpoint, whichever tasks made them, one with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import re
import time
import types
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

T = TypeVar("T")


# A (de)serialisation that held the loop longer than this, on the CPU (the interpreter's switch
# interval, at which a thread would have let the loop in), sends the rest of its saver's to a
# thread.
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
        # The call's own work, in the thread's CPU time: on the wall clock a loaded machine
        # that left the process unscheduled meanwhile made a small state read as heavy.
        started = time.thread_time()
        result = func(*args, **kwargs)
        saver.heavy = time.thread_time() - started > HEAVY_SECONDS
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


# The library's inserts of a row per parameter set that may go as one statement: those that
# leave a row already there as it is (a row of the same key later in the same statement too,
# as a statement a row did), a task's writes and a checkpoint's blobs. The writes that replace
# (an interrupt's, an error's: UPSERT_CHECKPOINT_WRITES_SQL) stay a statement a row, and so
# does any statement a later release words otherwise.
_VALUES = re.compile(r"\bVALUES\s*(\((?:%s,\s*)*%s\))", re.IGNORECASE)


def _all_at_once(query: str) -> tuple[str, str, str] | None:
    """(up to its VALUES, the row's placeholders, after them) of an insert of one row that
    may be given many rows, or None."""
    if not re.search(r"\bDO\s+NOTHING\s*;?\s*$", query, re.IGNORECASE):
        return None
    found = _VALUES.search(query)
    if found is None or query.count("%") != found.group(1).count("%"):
        return None
    return query[: found.start(1)], found.group(1), query[found.end(1) :]


_ALL_AT_ONCE = {
    query: parts
    for query in (
        AsyncPostgresSaver.INSERT_CHECKPOINT_WRITES_SQL,
        AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL,
    )
    if (parts := _all_at_once(query)) is not None
}


# The most rows one statement inserts (nine parameters a write's row).
_MOST_ROWS = 1_000


@functools.lru_cache(maxsize=64)
def _rows_sql(query: str, rows: int) -> str:
    """The insert of `rows` rows in one statement: its VALUES row that many times."""
    head, row, tail = _ALL_AT_ONCE[query]
    return head + ", ".join([row] * rows) + tail


class AllAtOnce:
    """The saver's cursor of a pipeline, its inserts of many rows sent as one statement each
    (_ALL_AT_ONCE); anything else as the cursor does it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        rows = list(params_seq)
        if len(rows) < 2 or kwargs or query not in _ALL_AT_ONCE:
            await self.cursor.executemany(query, rows, **kwargs)
            return
        for at in range(0, len(rows), _MOST_ROWS):  # PostgreSQL takes 65,535 parameters at most
            chunk = rows[at : at + _MOST_ROWS]
            await self.cursor.execute(
                _rows_sql(query, len(chunk)), [v for row in chunk for v in row]
            )


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
    `checkpointer()`), until a (de)serialisation of its took more than HEAVY_SECONDS of CPU; and a
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
            # First, in the same pipeline: the rows of one statement's held runs together.
            batches: list[tuple[Any, list[Any]]] = []
            for query, rows in held or ():
                if batches and batches[-1][0] == query:
                    batches[-1][1].extend(rows)
                else:
                    batches.append((query, list(rows)))
            ours = AllAtOnce(cur)
            for query, rows in batches:
                await ours.executemany(query, rows)
            # The writes' (and blobs') cursor; a read's iterates the cursor itself.
            yield ours if pipeline else cur

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
