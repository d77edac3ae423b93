"""The in-process event bus: one shared log per run, readers hold only an index into it.

A finished run's log is kept for `keep_seconds` so that clients can reconnect with
Last-Event-ID, its small events packed into one buffer (about a fifth of the memory of the live
form), and all kept logs together stay under `max_retained_bytes`: past it, the oldest finished
logs go first.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from itertools import accumulate, chain, islice
from operator import itemgetter

from agentstream.eventbus.base import Batch, Event, EventsEvicted
from agentstream.protocol import frames_of

_MODE, _NAME, _DATA = itemgetter(0), itemgetter(1), itemgetter(2)

# Items a log takes before it makes their frames, if no reader asks for them sooner.
_FLUSH_AT = 1024
# A finished log is packed only where that saves memory. An event's frame as an object of its
# own costs _LIVE_OVERHEAD bytes beside its data (the object's header and its three list
# slots), packed 24: a tenth or more of a frame of up to _PACK_UP_TO bytes on average. A log of
# larger frames (a model's tokens, each with its metadata, about a kilobyte) was copied whole,
# a millisecond for a 2,000-token reply as its run ended, to keep a few per cent.
_PACK_UP_TO = 256
_LIVE_OVERHEAD = 57


class _Packed:
    """A finished log's events in one buffer: their frames end to end, where each ends, and
    each one's mode and name (the translator's shared strings); frames are sliced back out of
    the buffer when read.

    Built with no Python-level step per event (joins and C iterators only): a 20,000-event
    log packs in half the time a loop over its events took.
    """

    __slots__ = ("ends", "first", "frames", "modes", "names")

    def __init__(self, first: int, frames: list[bytes], modes: list[str], names: list[str]) -> None:
        self.first = first
        self.frames = b"".join(frames)
        self.ends = array("Q", accumulate(map(len, frames)))
        self.modes = modes
        self.names = names

    @property
    def size(self) -> int:
        return len(self.frames) + 24 * len(self.ends)

    def batch(self, i: int) -> Batch:
        """Its events from the i-th on."""
        ends = self.ends
        starts = chain((ends[i - 1] if i else 0,), islice(ends, i, len(ends) - 1))
        frames = list(map(self.frames.__getitem__, map(slice, starts, islice(ends, i, None))))
        return Batch(self.first + i, frames, self.modes[i:], self.names[i:])


class _Log:
    """One run's events: frames, modes and names side by side (frames[k] is event first + k;
    those before `start` are evicted and go at the next compaction), and items appended since
    the last read, whose frames are made together when a reader asks (or a thousand wait):
    a burst costs one pass of C iterators instead of a Python step, and an object, per event.
    """

    __slots__ = (
        "closed",
        "expiry",
        "first",
        "frames",
        "max_events",
        "modes",
        "names",
        "next_seq",
        "packed",
        "pending",
        "start",
        "waiters",
    )

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.frames: list[bytes] = []
        self.modes: list[str] = []
        self.names: list[str] = []
        self.first = 1
        self.start = 0
        self.pending: list[tuple[str, str, bytes]] = []
        self.next_seq = 1  # the pending items' ids included
        self.closed = False
        self.waiters: list[asyncio.Future[None]] = []
        self.expiry: asyncio.TimerHandle | None = None
        self.packed: _Packed | None = None

    def flush(self) -> None:
        items = self.pending
        if not items:
            return
        self.pending = []
        names = list(map(_NAME, items))
        self.frames += frames_of(self.next_seq - len(items), names, map(_DATA, items))
        self.modes += map(_MODE, items)
        self.names += names
        excess = len(self.frames) - self.start - self.max_events
        if excess > 0:  # the oldest go, exactly max_events kept
            self.start += excess
            if self.start > max(1024, self.max_events >> 3):  # dropped now and then, not each
                del self.frames[: self.start], self.modes[: self.start], self.names[: self.start]
                self.first += self.start
                self.start = 0

    def add(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        pending = self.pending
        pending += items
        self.next_seq += len(items)
        if len(pending) >= _FLUSH_AT:
            self.flush()
        if self.waiters:
            self.notify()

    def pack(self) -> int:
        """Pack a finished log's events where that saves memory (see _PACK_UP_TO); returns the
        bytes it now keeps."""
        self.flush()
        if self.packed is not None:
            return self.packed.size
        i = self.start
        count = len(self.frames) - i
        data = sum(map(len, islice(self.frames, i, None)))
        if data > count * _PACK_UP_TO:  # kept as it is, but for its evicted events
            if i:
                del self.frames[:i], self.modes[:i], self.names[:i]
                self.first, self.start = self.first + i, 0
            return data + count * _LIVE_OVERHEAD
        if count:
            self.packed = _Packed(self.first + i, self.frames[i:], self.modes[i:], self.names[i:])
            self.frames, self.modes, self.names = [], [], []
            self.first, self.start = self.next_seq, 0
        return self.packed.size if self.packed is not None else 0

    def unpack(self) -> None:
        if self.packed is not None:
            batch = self.packed.batch(0)
            self.frames, self.modes, self.names = batch.frames, batch.modes, batch.names
            self.first, self.start = batch.first, 0
            self.packed = None

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
        packed = self.packed
        if packed is not None:
            if seq + 1 < packed.first:
                raise EventsEvicted(seq, packed.first)
            return packed.batch(seq + 1 - packed.first)
        self.flush()
        kept = self.first + self.start
        if seq + 1 < kept:
            raise EventsEvicted(seq, kept)
        i = seq + 1 - self.first
        return Batch(seq + 1, self.frames[i:], self.modes[i:], self.names[i:])


class _Writer:
    """One run's appends from its executor, the per-event call on this bus: the log looked up
    once, not for each event, and an event appended without a list around it."""

    __slots__ = ("bus", "log", "run_id")

    def __init__(self, bus: MemoryEventBus, run_id: str) -> None:
        self.bus = bus
        self.run_id = run_id
        self.log = bus._logs.get(run_id)

    def one(self, item: tuple[str, str, bytes]) -> None:
        log = self.log
        if log is None or log.closed:  # ended meanwhile (deleted): reopened, as append() does
            log = self.log = self.bus._opened(self.run_id)
        pending = log.pending
        pending.append(item)
        log.next_seq += 1
        if len(pending) >= _FLUSH_AT:
            log.flush()
        if log.waiters:  # most events of a burst: its reader is woken already
            log.notify()

    def many(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        log = self.log
        if log is None or log.closed:
            log = self.log = self.bus._opened(self.run_id)
        log.add(items)


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
        # Finished logs still kept, oldest first, with the bytes each keeps.
        self._retained: OrderedDict[str, int] = OrderedDict()
        self._retained_bytes = 0

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
            self._cancel_expiry(log)
            self._forget(run_id)
            log.unpack()
        return log

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        return self.append(run_id, items)

    async def publish_first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        return self._first(run_id, items)

    def lead(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> None:
        if items:  # nothing to wait for here: the log has them now, or had something
            self._first(run_id, items)

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
        self._cancel_expiry(log)
        self._forget(run_id)
        size = log.pack()
        self._retained[run_id] = size
        self._retained_bytes += size
        while self._retained_bytes > self._max_retained and len(self._retained) > 1:
            oldest = next(iter(self._retained))
            self._drop(oldest)  # over the budget: the oldest finished log goes first
        loop = asyncio.get_running_loop()
        log.expiry = loop.call_later(self._keep_seconds, self._drop, run_id)

    def _forget(self, run_id: str) -> None:
        self._retained_bytes -= self._retained.pop(run_id, 0)

    def _drop(self, run_id: str) -> None:
        log = self._logs.pop(run_id, None)
        self._forget(run_id)
        if log is not None:
            self._cancel_expiry(log)

    async def last_seq(self, run_id: str) -> int:
        log = self._logs.get(run_id)
        return 0 if log is None else log.next_seq - 1

    async def subscribe(
        self, run_id: str, after: int | None, *, wait: bool = True, held: bool = False
    ) -> AsyncIterator[Sequence[Event]]:
        if not wait and run_id not in self._logs:
            return
        log = self._log(run_id)
        pos = log.next_seq - 1 if after is None else max(after, 0)
        loop = asyncio.get_running_loop()
        delivered = 0.0  # when the last batch went out
        hot = 0  # wake-ups in a row that came soon after it
        while True:
            batch = log.after(pos)
            if batch:
                pos += len(batch)  # the events after pos, without a gap
                yield batch
                delivered = loop.time()
                continue
            if log.closed or not wait:
                return
            await log.wait()
            hot = hot + 1 if loop.time() - delivered < COALESCE_SECONDS else 0
            if hot >= COALESCE_AFTER:
                await asyncio.sleep(COALESCE_SECONDS)

    async def delete(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        self._drop(run_id)
        if log is not None:
            log.closed = True
            log.notify()

    async def aclose(self) -> None:
        for log in self._logs.values():
            self._cancel_expiry(log)
        self._logs.clear()
        self._retained.clear()
        self._retained_bytes = 0

    @staticmethod
    def _cancel_expiry(log: _Log) -> None:
        if log.expiry is not None:
            log.expiry.cancel()
            log.expiry = None
