"""The in-process event bus: one shared log per run, readers hold only an index into it.

A log keeps its events in blocks, one per flush (what came since a reader last asked, or a
thousand): their frames end to end in one buffer, with where each ends and each one's mode and
name. A reader that sends every frame of a block sends one slice of it.

A finished run's log is kept for `keep_seconds` so that clients can reconnect with
Last-Event-ID, and all kept logs together stay under `max_retained_bytes`: past it, the oldest
finished logs go first.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import accumulate, chain, islice, repeat
from operator import add, itemgetter

from agentstream.eventbus.base import Event, EventsEvicted, Frames
from agentstream.protocol import frames_of

_MODE, _NAME, _DATA = itemgetter(0), itemgetter(1), itemgetter(2)

# Items a log takes before it makes their frames, if no reader asks for them sooner.
_FLUSH_AT = 1024
# What a block costs beside its frames: its object, its buffer's, its arrays' and lists'
# headers; and an event, beside its frame: its end, and its mode's and name's slots.
_BLOCK_OVERHEAD = 400
_EVENT_OVERHEAD = 24
# A finished log's blocks are merged into one where they average under this many bytes (a
# reader that kept up with a model's tokens made a block a token); larger ones are kept as
# they are, without a copy.
_MERGE_UNDER = 16 * 1024

# How early a kept log may go (see MemoryEventBus._expire).
_EARLY = 0.001

# One frozenset per set of modes, shared by every block that has them.
_KINDS: dict[frozenset[str], frozenset[str]] = {}


def _kinds(modes: Iterable[str]) -> frozenset[str]:
    kinds = frozenset(modes)
    shared = _KINDS.get(kinds)
    if shared is None:
        if len(_KINDS) >= 1024:
            _KINDS.clear()
        shared = _KINDS[kinds] = kinds
    return shared


def _merged(blocks: Sequence[Frames]) -> Frames:
    """Blocks in a row as one, in a buffer of its own."""
    if len(blocks) == 1:
        return blocks[0]
    ends: array[int] = array("Q")
    base = 0
    for block in blocks:
        shift = base - block.start
        ends.extend(map(add, block.ends, repeat(shift)) if shift else block.ends)
        base += block.ends[-1] - block.start
    return Frames(
        blocks[0].first,
        b"".join([block.joined() for block in blocks]),
        0,
        ends,
        tuple(chain.from_iterable(block.modes for block in blocks)),
        tuple(chain.from_iterable(block.names for block in blocks)),
        _kinds(chain.from_iterable(block.kinds for block in blocks)),
    )


class _Log:
    """One run's events: blocks of frames (blocks[b0:] are kept, but for the first `start`
    events of blocks[b0]; those before b0 go at the next compaction), and items appended since
    the last flush, whose frames are made together when a reader asks (or a thousand wait):
    a burst costs one pass of C iterators and one buffer instead of a Python step, and an
    object, per event.
    """

    __slots__ = (
        "b0",
        "blocks",
        "closed",
        "firsts",
        "gone",
        "kept",
        "max_events",
        "next_seq",
        "pending",
        "start",
        "waiters",
    )

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.blocks: list[Frames] = []
        self.firsts: list[int] = []  # each block's first id, for bisect
        self.b0 = 0
        self.start = 0
        self.gone = 0  # events of the evicted blocks before b0
        self.kept = 0  # events kept in blocks
        self.pending: list[tuple[str, str, bytes]] = []
        self.next_seq = 1  # the pending items' ids included
        self.closed = False
        self.waiters: list[asyncio.Future[None]] = []

    def add(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        pending = self.pending
        pending += items
        self.next_seq += len(items)
        if len(pending) >= _FLUSH_AT:
            self.flush()
        if self.waiters:
            self.notify()

    def flush(self) -> None:
        items = self.pending
        if not items:
            return
        self.pending = []
        first = self.next_seq - len(items)
        # Tuples, not lists: a tuple of str is dropped from the collector's sight, where a
        # list of a kept log's modes and names was walked name by name at each full collection
        # (21 ms each, a quarter of the collector's time, with 20,000-event runs' logs kept).
        names = tuple(map(_NAME, items))
        modes = tuple(map(_MODE, items))
        frames = list(frames_of(first, names, map(_DATA, items)))
        ends = array("Q", accumulate(map(len, frames)))
        self.blocks.append(Frames(first, b"".join(frames), 0, ends, modes, names, _kinds(modes)))
        self.firsts.append(first)
        self.kept += len(items)
        if self.kept > self.max_events:  # the oldest go, exactly max_events kept
            self._evict(self.kept - self.max_events)

    def _evict(self, n: int) -> None:
        self.kept -= n
        blocks, b0, start = self.blocks, self.b0, self.start + n
        while start >= len(blocks[b0]):
            start -= len(blocks[b0])
            self.gone += len(blocks[b0])
            b0 += 1
        if self.gone > max(1024, self.max_events >> 3):  # dropped now and then, not each time
            del blocks[:b0], self.firsts[:b0]
            b0 = self.gone = 0
        self.b0, self.start = b0, start

    def pack(self) -> int:
        """A finished log without its evicted blocks; returns the bytes it keeps."""
        self.flush()
        blocks = self.blocks[self.b0 :]
        if self.start:
            blocks[0] = blocks[0].tail(self.start)
        self.blocks, self.firsts = blocks, [block.first for block in blocks]
        self.b0 = self.start = self.gone = 0
        return self.size()

    def size(self) -> int:
        frames = sum(len(block.buf) for block in self.blocks)
        return frames + _BLOCK_OVERHEAD * len(self.blocks) + _EVENT_OVERHEAD * self.kept

    def small(self) -> bool:
        """Whether its blocks are many and small (see _MERGE_UNDER)."""
        blocks = self.blocks
        return len(blocks) > 1 and sum(len(b.buf) for b in blocks) < _MERGE_UNDER * len(blocks)

    def merge(self) -> int:
        """A packed log's blocks as one; returns the bytes it now keeps."""
        if len(self.blocks) > 1:
            self.blocks = [_merged(self.blocks)]
            self.firsts = [self.blocks[0].first]
        return self.size()

    def notify(self) -> None:
        # A future per waiting reader, woken together. (One future shared through
        # asyncio.shield cost each wait a second future and two callbacks: about 4 % of the
        # server's CPU on a streamed reply, where every token wakes its reader.)
        if not self.waiters:  # most events of a burst: its reader is woken already
            return
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            raise

    def after(self, seq: int) -> Sequence[Event]:
        if self.next_seq - 1 <= seq:
            return ()
        self.flush()
        b0, firsts = self.b0, self.firsts
        kept = firsts[b0] + self.start
        if seq + 1 < kept:
            raise EventsEvicted(seq, kept)
        k = bisect_right(firsts, seq + 1, b0) - 1
        blocks = self.blocks
        block = blocks[k].tail(seq + 1 - firsts[k])
        # A reader behind by several blocks takes the small ones that follow together (one
        # write to its client, not one each); a large block goes as it is, without a copy.
        end, size = k + 1, len(block.buf)
        while end < len(blocks) and size < _MERGE_UNDER:
            size += len(blocks[end].buf)
            end += 1
        if end == k + 1:
            return block
        return _merged([block, *islice(blocks, k + 1, end)])


class _Writer:
    """One run's appends from its executor: `items` appended to in place (a list's append per
    event, where a call of ours cost a custom event a twentieth of its server time), into the
    log at each flush(), which soon() also schedules for the loop's next turn: before anything
    else runs, however the run suspends."""

    __slots__ = ("bus", "items", "log", "loop", "run_id")

    def __init__(self, bus: MemoryEventBus, run_id: str) -> None:
        self.bus = bus
        self.run_id = run_id
        self.log = bus._logs.get(run_id)
        self.items: list[tuple[str, str, bytes]] = []
        self.loop = asyncio.get_running_loop()

    def soon(self) -> None:
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        items = self.items
        if not items:
            return
        log = self.log
        if log is None or log.closed:  # ended meanwhile (deleted): reopened, as append() does
            log = self.log = self.bus._opened(self.run_id)
        log.add(items)
        items.clear()


# A reader woken again and again soon after its last batch is reading a burst (a model's reply
# token by token): from the COALESCE_AFTER-th such wake-up in a row it waits COALESCE_SECONDS
# before reading, and takes what came meanwhile as one batch: one write to its client instead
# of one per event. The first events after a pause go out at once; a burst's later events up
# to a millisecond later.
COALESCE_SECONDS = 0.001
COALESCE_AFTER = 4


class MemoryEventBus:
    instant = True

    def __init__(
        self,
        max_events: int = 50_000,
        keep_seconds: float = 600.0,
        max_retained_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._logs: dict[str, _Log] = {}
        self._max_events = max_events
        self._keep_seconds = keep_seconds
        self._max_retained = max_retained_bytes
        # Finished logs still kept, oldest first: the bytes each keeps, and the loop's time at
        # which it goes. One timer for them all, at the oldest's time (a timer a log kept its
        # handle, callback and context, a sixth of a short run's kept bytes, until it fired).
        self._retained: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._retained_bytes = 0
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def retained_bytes(self) -> int:
        """What the finished runs' kept logs hold (their frames and index)."""
        return self._retained_bytes

    def _log(self, run_id: str) -> _Log:
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = _Log(self._max_events)
        return log

    def append(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        """publish(), without a coroutine."""
        log = self._logs.get(run_id)
        if log is None or log.closed:
            log = self._opened(run_id)
        log.add(items)
        return log.next_seq - 1

    def writer(self, run_id: str) -> _Writer:
        return _Writer(self, run_id)

    def _opened(self, run_id: str) -> _Log:
        log = self._log(run_id)
        if log.closed:  # a new attempt of the run reopens its log and continues its ids
            log.closed = False
            self._forget(run_id)
        return log

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        return self.append(run_id, items)

    async def publish_first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        return self._first(run_id, items)

    def lead(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> None:
        if items:  # nothing to wait for here: the log has them now, or had something
            self._first(run_id, items)

    def own(self, run_id: str) -> None:
        """Nothing to do: every reader here is handed every publish."""

    def release(self, run_id: str) -> None:
        """Nothing to do (see own())."""

    def end_notice(self, run_id: str, modes: set[str]) -> None:
        """None: no other process reads these logs."""
        return None

    def ended(self, notice: str) -> None:
        """Nothing to do (see end_notice())."""

    def _first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        log = self._logs.get(run_id)
        if log is not None and (log.closed or log.next_seq > 1):
            return 0
        return self.append(run_id, items)

    async def close(self, run_id: str, items: Sequence[tuple[str, str, bytes]] = ()) -> None:
        if items:
            self.append(run_id, items)
        log = self._log(run_id)
        log.closed = True
        log.notify()
        self._forget(run_id)
        loop = asyncio.get_running_loop()
        self._retain(run_id, log.pack(), loop.time() + self._keep_seconds)
        if log.small():  # once its readers, woken above, have had its last events
            loop.call_soon(self._merge, run_id, log)

    def _retain(self, run_id: str, size: int, until: float) -> None:
        self._retained[run_id] = (size, until)
        self._retained_bytes += size
        while self._retained_bytes > self._max_retained and len(self._retained) > 1:
            oldest = next(iter(self._retained))
            self._drop(oldest)  # over the budget: the oldest finished log goes first
        if self._sweep is None:
            self._arm()

    def _arm(self) -> None:
        if self._retained:
            _, until = next(iter(self._retained.values()))
            self._sweep = asyncio.get_running_loop().call_at(until, self._expire)

    def _expire(self) -> None:
        """The kept logs whose time has come go (closed in order, so they are the oldest)."""
        self._sweep = None
        # uvloop runs a timer up to half a millisecond early: a log due within _EARLY goes now,
        # instead of the timer being armed again and again until its time.
        now = asyncio.get_running_loop().time() + _EARLY
        retained = self._retained
        while retained:
            run_id, (_, until) = next(iter(retained.items()))
            if until > now:
                break
            self._drop(run_id)
        self._arm()

    def _merge(self, run_id: str, log: _Log) -> None:
        kept = self._retained.get(run_id)
        if kept is not None and self._logs.get(run_id) is log and log.closed:
            size, until = kept
            merged = log.merge()
            self._retained[run_id] = (merged, until)  # in its place: it goes when it would have
            self._retained_bytes += merged - size

    def _forget(self, run_id: str) -> None:
        kept = self._retained.pop(run_id, None)
        if kept is not None:
            self._retained_bytes -= kept[0]

    def _drop(self, run_id: str) -> None:
        self._logs.pop(run_id, None)
        self._forget(run_id)

    async def last_seq(self, run_id: str) -> int:
        log = self._logs.get(run_id)
        return 0 if log is None else log.next_seq - 1

    async def subscribe(
        self,
        run_id: str,
        after: int | None,
        *,
        wait: bool = True,
        held: bool = False,
        hidden: frozenset[str] = frozenset(),  # a close here reaches readers at once anyway
    ) -> AsyncIterator[Sequence[Event]]:
        if not wait and run_id not in self._logs:
            return
        log = self._log(run_id)
        pos = log.next_seq - 1 if after is None else max(after, 0)
        # perf_counter, not the loop's time: uvloop's moves in whole milliseconds, and a burst's
        # wake-ups 0.1 ms apart read as a millisecond apart whenever it ticked between them
        # (a v2 reply of 2,001 tokens went out in 735 writes, not the few dozen meant).
        clock = time.perf_counter
        delivered = 0.0  # when the last batch went out
        hot = 0  # wake-ups in a row that came soon after it
        while True:
            batch = log.after(pos)
            if batch:
                pos += len(batch)  # the events after pos, without a gap
                yield batch
                delivered = clock()
                continue
            if log.closed or not wait:
                return
            await log.wait()
            hot = hot + 1 if clock() - delivered < COALESCE_SECONDS else 0
            if hot >= COALESCE_AFTER:
                await asyncio.sleep(COALESCE_SECONDS)

    async def delete(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        self._drop(run_id)
        if log is not None:
            log.closed = True
            log.notify()

    async def aclose(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._logs.clear()
        self._retained.clear()
        self._retained_bytes = 0
