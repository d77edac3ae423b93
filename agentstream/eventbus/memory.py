"""The in-process event bus: one shared log per run, readers hold only an index into it.

A finished run's log is kept for `keep_seconds` so that clients can reconnect with
Last-Event-ID, packed into one buffer (about a fifth of the memory of the live form), and all
kept logs together stay under `max_retained_bytes`: past it, the oldest finished logs go first.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from itertools import accumulate
from operator import itemgetter

from agentstream.eventbus.base import Event, EventsEvicted
from agentstream.protocol import encode_frame

_MODE, _NAME = itemgetter(1), itemgetter(2)


class _Packed:
    """A finished log's events in one buffer: their frames end to end, where each ends, and
    each one's mode and name (the translator's shared strings); an event's data is sliced
    back out of its frame.

    Built with no Python-level step per event (joins and C iterators only): a 20,000-event
    log packs in half the time a loop over its events took.
    """

    __slots__ = ("ends", "first", "frames", "modes", "names")

    def __init__(self, events: Sequence[Event]) -> None:
        self.first = events[0].seq
        frames = [e.frame for e in events]
        self.frames = b"".join(frames)
        self.ends = array("Q", accumulate(map(len, frames)))
        self.modes: list[str] = list(map(_MODE, events))
        self.names: list[str] = list(map(_NAME, events))

    @property
    def size(self) -> int:
        return len(self.frames) + 24 * len(self.ends)

    def event(self, i: int) -> Event:
        frame = self.frames[self.ends[i - 1] if i else 0 : self.ends[i]]
        return Event(self.first + i, self.modes[i], self.names[i], frame)

    def events(self) -> list[Event]:
        return [self.event(i) for i in range(len(self.ends))]


# What a packed log holds in place of its deque (an empty deque takes 600 bytes); maxlen 0,
# so that nothing could ever be kept in it.
_PACKED: deque[Event] = deque(maxlen=0)


class _Log:
    __slots__ = ("closed", "events", "expiry", "max_events", "next_seq", "packed", "waiters")

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.events: deque[Event] = deque(maxlen=max_events)
        self.next_seq = 1
        self.closed = False
        self.waiters: list[asyncio.Future[None]] = []
        self.expiry: asyncio.TimerHandle | None = None
        self.packed: _Packed | None = None

    def pack(self) -> int:
        """Pack a finished log's events; returns the bytes it now keeps."""
        if self.packed is None and self.events:
            self.packed = _Packed(self.events)
            self.events = _PACKED
        return self.packed.size if self.packed is not None else 0

    def unpack(self) -> None:
        if self.packed is not None:
            self.events = deque(self.packed.events(), maxlen=self.max_events)
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

    def after(self, seq: int) -> list[Event]:
        packed = self.packed
        if packed is not None:
            last = packed.first + len(packed.ends) - 1
            if last <= seq:
                return []
            if seq + 1 < packed.first:
                raise EventsEvicted(seq, packed.first)
            return [packed.event(i) for i in range(seq + 1 - packed.first, len(packed.ends))]
        if not self.events or self.events[-1].seq <= seq:
            return []
        first = self.events[0].seq
        if seq + 1 < first:
            raise EventsEvicted(seq, first)
        start = seq + 1 - first
        return [self.events[i] for i in range(start, len(self.events))]


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
        """publish(), without a coroutine: the executor's per-event call on this bus."""
        log = self._log(run_id)
        if log.closed:  # a new attempt of the run reopens its log and continues its ids
            log.closed = False
            self._cancel_expiry(log)
            self._forget(run_id)
            log.unpack()
        for mode, name, data in items:
            seq = log.next_seq
            log.next_seq += 1
            # Only the frame is kept (a new buffer of its exact size): orjson (3.13) hands back
            # bytes that hold on to a 4 KiB buffer whatever their length, and the log keeps
            # every event for minutes.
            log.events.append(Event(seq, mode, name, encode_frame(seq, name, data)))
        log.notify()
        return log.next_seq - 1

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
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
        self, run_id: str, after: int | None, *, wait: bool = True
    ) -> AsyncIterator[list[Event]]:
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
                pos = batch[-1].seq
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
