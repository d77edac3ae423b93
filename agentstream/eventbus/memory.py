"""The in-process event bus: one shared log per run, readers hold only an index into it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence

from agentstream.eventbus.base import Event, EventsEvicted, encode_frame


class _Log:
    __slots__ = ("changed", "closed", "events", "expiry", "next_seq")

    def __init__(self, max_events: int) -> None:
        self.events: deque[Event] = deque(maxlen=max_events)
        self.next_seq = 1
        self.closed = False
        self.changed: asyncio.Future[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None

    def notify(self) -> None:
        # One shared future per log: a publish costs the same whatever the number of readers.
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)
        self.changed = None

    async def wait(self) -> None:
        if self.changed is None:
            self.changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.changed)

    def after(self, seq: int) -> list[Event]:
        if not self.events or self.events[-1].seq <= seq:
            return []
        first = self.events[0].seq
        if seq + 1 < first:
            raise EventsEvicted(seq, first)
        start = seq + 1 - first
        return [self.events[i] for i in range(start, len(self.events))]


class MemoryEventBus:
    instant = True

    def __init__(self, max_events: int = 50_000, keep_seconds: float = 600.0) -> None:
        self._logs: dict[str, _Log] = {}
        self._max_events = max_events
        self._keep_seconds = keep_seconds

    def _log(self, run_id: str) -> _Log:
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = _Log(self._max_events)
        return log

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        log = self._log(run_id)
        if log.closed:  # a new attempt of the run reopens its log and continues its ids
            log.closed = False
            self._cancel_expiry(log)
        for mode, name, data in items:
            seq = log.next_seq
            log.next_seq += 1
            # A copy of the exact size: orjson (3.13) hands back bytes that hold on to a 4 KiB
            # buffer whatever their length, and the log keeps every event for minutes.
            data = bytes(memoryview(data))
            log.events.append(Event(seq, mode, name, data, encode_frame(seq, name, data)))
        log.notify()
        return log.next_seq - 1

    async def close(self, run_id: str) -> None:
        log = self._log(run_id)
        log.closed = True
        log.notify()
        self._cancel_expiry(log)
        loop = asyncio.get_running_loop()
        log.expiry = loop.call_later(self._keep_seconds, self._logs.pop, run_id, None)

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
        while True:
            batch = log.after(pos)
            if batch:
                pos = batch[-1].seq
                yield batch
                continue
            if log.closed or not wait:
                return
            await log.wait()

    async def delete(self, run_id: str) -> None:
        log = self._logs.pop(run_id, None)
        if log is not None:
            log.closed = True
            log.notify()
            self._cancel_expiry(log)

    async def aclose(self) -> None:
        for log in self._logs.values():
            self._cancel_expiry(log)
        self._logs.clear()

    @staticmethod
    def _cancel_expiry(log: _Log) -> None:
        if log.expiry is not None:
            log.expiry.cancel()
            log.expiry = None
