"""The event-bus contract: what every backend (memory, Redis) must provide."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import chain, islice
from typing import NamedTuple, Protocol, overload

from agentstream.protocol import frame_data


class Event(NamedTuple):
    """One event of a run: its id in the run's log, the stream mode it came from, and its frame.

    A named tuple, not a frozen dataclass: it is built once per event on the hot path (0.35 µs
    instead of 0.9 µs), and a tuple of str, int and bytes drops out of the garbage collector's
    tracking, which matters for logs that keep tens of thousands of events. Its data is sliced
    out of the frame when asked for: most readers only send frames, and keeping the data too
    cost every event a copy and a second buffer.
    """

    seq: int
    mode: str
    name: str
    frame: bytes

    @property
    def data(self) -> bytes:
        return frame_data(self.frame, self.name, self.seq)


class _InRow(Sequence[Event]):
    """Events of one log in a row: each one's mode and name side by side, ids following from
    the first, and each frame as the subclass keeps it. An Event is made only when one is
    asked for: a reader that sends frames (every SSE stream) takes them as they are, without
    an object per event (about a third of what a custom event cost on its way to the client)."""

    __slots__ = ()
    first: int
    modes: Sequence[str]
    names: Sequence[str]

    @property
    def frames(self) -> list[bytes]:
        raise NotImplementedError

    def _frame(self, i: int) -> bytes:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Event: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Event]: ...
    def __getitem__(self, i: int | slice) -> Event | Sequence[Event]:
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        return Event(self.first + i, self.modes[i], self.names[i], self._frame(i))

    def __iter__(self) -> Iterator[Event]:
        ids = range(self.first, self.first + len(self))
        return map(Event, ids, self.modes, self.names, self.frames)


class Batch(_InRow):
    """Events in a row with a frame object each, as the Redis bus reads them."""

    __slots__ = ("_frames", "first", "modes", "names")

    def __init__(self, first: int, frames: list[bytes], modes: list[str], names: list[str]) -> None:
        self.first = first
        self._frames = frames
        self.modes = modes
        self.names = names

    @property
    def frames(self) -> list[bytes]:
        return self._frames

    def _frame(self, i: int) -> bytes:
        return self._frames[i]

    def __len__(self) -> int:
        return len(self._frames)


class Frames(_InRow):
    """Events in a row, their frames end to end in one buffer, as the in-process bus keeps
    them: frame k is buf[ends[k - 1]:ends[k]], the first from `start`; `kinds` holds (at
    least) every mode among them. A reader that sends them all sends one slice of the buffer
    (joined()), where a list of frames cost it a join and a frame object each."""

    __slots__ = ("buf", "ends", "first", "kinds", "modes", "names", "start")
    modes: tuple[str, ...]  # tuples of str: the collector stops tracking them (see memory.py)
    names: tuple[str, ...]

    def __init__(
        self,
        first: int,
        buf: bytes,
        start: int,
        ends: array[int],
        modes: tuple[str, ...],
        names: tuple[str, ...],
        kinds: frozenset[str],
    ) -> None:
        self.first = first
        self.buf = buf
        self.start = start
        self.ends = ends
        self.modes = modes
        self.names = names
        self.kinds = kinds

    def __len__(self) -> int:
        return len(self.ends)

    def joined(self) -> bytes:
        """Every frame, in order, as one bytes."""
        end = self.ends[-1]
        if self.start == 0 and end == len(self.buf):
            return self.buf
        return self.buf[self.start : end]

    @property
    def frames(self) -> list[bytes]:
        ends = self.ends
        starts = chain((self.start,), islice(ends, 0, len(ends) - 1))
        return list(map(self.buf.__getitem__, map(slice, starts, ends)))

    def _frame(self, i: int) -> bytes:
        return self.buf[self.ends[i - 1] if i else self.start : self.ends[i]]

    def tail(self, i: int) -> Frames:
        """Its events from the i-th on (i < len), sharing its buffer."""
        if i == 0:
            return self
        return Frames(
            self.first + i,
            self.buf,
            self.ends[i - 1],
            self.ends[i:],
            self.modes[i:],
            self.names[i:],
            self.kinds,
        )


class EventsEvicted(Exception):
    """A reader asked for events that the log no longer keeps."""

    def __init__(self, requested_after: int, first_kept: int) -> None:
        super().__init__(
            f"events after id {requested_after} are no longer kept; the oldest kept id is "
            f"{first_kept}"
        )
        self.requested_after = requested_after
        self.first_kept = first_kept


class BusUnavailable(Exception):
    """The event bus did not answer for longer than an outage is ridden out: the reader is told
    so (an explicit error, never a silent gap) and may resume by id once it is back."""


class EventBus(Protocol):
    # Whether publish() completes without waiting on anything (an in-process log): the
    # executor then publishes each batch in place (through append(), see InstantEventBus)
    # instead of keeping one publish in flight.
    instant: bool

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        """Append (mode, event name, JSON data) items in order; returns the last id given."""
        ...

    async def publish_first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        """publish(), but only to a log that has nothing yet (no event, no end): the last id
        given, or 0 when the log had something and nothing was appended. A run's first event
        (its metadata) is published so by its creator and by its executor, whichever is first."""
        ...

    def lead(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Items to go first, with this process's next publish or close of the run, if its log
        has nothing by then: a run's first attempt says its metadata without a round trip of
        its own (the request streaming the run may have published it already: publish_first).
        Empty items forget what was led. Never suspends."""
        ...

    async def close(self, run_id: str, items: Sequence[tuple[str, str, bytes]] = ()) -> None:
        """Append items (as publish does), then mark the log complete: readers drain what is
        left and stop. One step, so a run's last events and its end cost one round trip."""
        ...

    def own(self, run_id: str) -> None:
        """The run's executor is in this process from now until release(): what it publishes
        and closes, readers here may be handed as it is stored, without reading it back (the
        Redis bus; `dev` on Redis runs API and worker in one process). Never suspends."""
        ...

    def release(self, run_id: str) -> None:
        """The run's executor here has stopped (its log closed, or the run handed back, to be
        run again anywhere): readers here read the log again for what comes next."""
        ...

    def end_notice(self, run_id: str, modes: set[str]) -> str | None:
        """What to tell this bus in other processes (ended()) when the run's end is stored,
        its log about to be closed here with events of `modes` only: none where no other
        process reads its logs (the in-process bus), or where this process cannot say where
        the log stands (it published nothing to it yet). Never suspends."""
        ...

    def ended(self, notice: str) -> None:
        """A run's end was stored in another process, which told end_notice(): readers here
        that hide every mode its close adds end once they have read through its last event,
        before the close reaches the log. Anything else (a notice of this process's own, or
        none of its readers here) is ignored. Never suspends."""
        ...

    async def last_seq(self, run_id: str) -> int:
        """The id of the newest event, 0 when there is none."""
        ...

    def subscribe(
        self,
        run_id: str,
        after: int | None,
        *,
        wait: bool = True,
        held: bool = False,
        hidden: frozenset[str] = frozenset(),
    ) -> AsyncIterator[Sequence[Event]]:
        """Batches of events with id > after (None: from now on) until the log is closed.

        With wait=False it returns what the log holds now and stops (for finished runs).
        held=True says event `after` is in the log (its caller just published it): a reader
        that waits may then wait at once, without first looking whether the log ended before.
        hidden: modes the reader leaves out (an SSE stream never shows a run's result). A
        close that adds only such events may end the reader without them, once it has every
        event before: the Redis bus ends its readers in the closing process so, without
        waiting for Redis to hand them the close.

        Raises EventsEvicted when `after` is older than what the log keeps.
        """
        ...

    async def delete(self, run_id: str) -> None: ...

    async def aclose(self) -> None: ...


class Writer(Protocol):
    """One run's publishes on an instant bus, without a coroutine nor a call per event: its
    executor appends (mode, event name, JSON data) items to `items` and calls soon() when
    `items` was empty; they reach the run's log at flush(), which soon() schedules for the
    loop's next turn (before any reader runs, however the run suspends)."""

    items: list[tuple[str, str, bytes]]

    def soon(self) -> None: ...

    def flush(self) -> None: ...


class InstantEventBus(EventBus, Protocol):
    """A bus whose publish never waits (`instant`): the executor publishes through a Writer
    of its run instead, without a coroutine (about 0.2 us of 4 per custom event) nor a
    lookup of the run's log for each event."""

    def writer(self, run_id: str) -> Writer: ...
