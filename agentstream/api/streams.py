"""SSE bodies: a run's frames from its log, and a thread's runs followed in turn.

The routes (api/runs.py, api/thread_stream.py) decide what to stream; this module turns logs
into frames, and protocol.py says what the frames look like.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import compress

from agentstream import metrics, protocol, serde
from agentstream.eventbus import Batch, BusUnavailable, Event, EventBus, EventsEvicted, Frames
from agentstream.execution.runs import thread_log
from agentstream.protocol import END_MODES, RESULT_MODE
from agentstream.storage.base import Storage

# What no SSE stream of a run shows: its result (for runs.wait and joiners' outcomes).
_HIDDEN = frozenset({RESULT_MODE})


def run_frames(
    bus: EventBus,
    run_id: str,
    after: int | None,
    modes: frozenset[str] | None,
    *,
    wait: bool,
    held: bool = False,
) -> AsyncIterator[bytes]:
    """The run's frames after `after` (None: from now on), only `modes` (None: all) and the
    end modes, until its log closes (or, with wait=False, what the log holds now). held: as
    for EventBus.subscribe."""

    # Which modes' frames it sends: for the in-process bus's blocks, all of them in one slice
    # where the block has only those modes (most blocks but a run's last), else asked per
    # event in C (compress), as for the Redis bus's batches, which hold their frames and modes
    # side by side.
    sent = None if modes is None else frozenset(modes | END_MODES).difference((RESULT_MODE,))
    keep: Callable[[str], bool] = RESULT_MODE.__ne__ if sent is None else sent.__contains__

    def keeps_all(kinds: frozenset[str]) -> bool:
        return RESULT_MODE not in kinds if sent is None else kinds <= sent

    def render(batch: Sequence[Event]) -> bytes:
        if type(batch) is Frames and keeps_all(batch.kinds):
            return batch.joined()
        if type(batch) is Frames or type(batch) is Batch:
            return b"".join(compress(batch.frames, map(keep, batch.modes)))
        return b"".join(e.frame for e in batch if keep(e.mode))

    return _rendered(
        bus, run_id, after, render, wait=wait, held=held, evicted=metrics.EVICTIONS.inc
    )


async def from_start(bus: EventBus, run_id: str) -> AsyncIterator[bytes]:
    """run_frames() of a run just created, from its start: its first event (the metadata the
    executor would publish when it starts the run) sent here at once, then published unless
    the executor was first, so that the client hears of its run without waiting for a worker
    to claim it (on `serve` + `worker`, a notification and a statement away).

    The frame goes out before the publish comes back: on Redis that round trip was a third of
    the first event's time on `serve` + `worker`, taken while the worker, told of the run at
    the create's commit, had the core. The frame is what the log's first event is either way:
    the first attempt's metadata, at id 1, ours or the executor's. Should the executor have
    been first, the log is read from its start and its own copy of that frame left out; any
    other first event (a run that failed or was cancelled before it began) is sent as it is.
    """
    _, name, data = first = protocol.metadata_item(run_id, 1)
    frame = protocol.encode_frame(1, name, data)
    yield frame
    try:
        seq = await bus.publish_first(run_id, [first])
    except BusUnavailable as exc:
        yield protocol.unavailable_frame(exc)
        return
    if seq:
        rest = run_frames(bus, run_id, seq, None, wait=True, held=True)
    else:
        rest = _without_first(frame, run_frames(bus, run_id, 0, None, wait=True))
    async for chunk in rest:
        yield chunk


async def _without_first(frame: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """chunks, the first one without `frame` where it begins with it."""
    first = True
    async for chunk in chunks:
        if first:
            first = False
            chunk = chunk.removeprefix(frame)
            if not chunk:
                continue
        yield chunk


async def _rendered(
    bus: EventBus,
    log_id: str,
    after: int | None,
    render: Callable[[Sequence[Event]], bytes],
    *,
    wait: bool = True,
    held: bool = False,
    evicted: Callable[[], None] = lambda: None,
) -> AsyncIterator[bytes]:
    """render(batch) for each batch of a log, empty chunks left out; a log the reader cannot
    follow to its end (events evicted, the bus away too long) ends in an error frame."""
    try:
        async for batch in bus.subscribe(log_id, after, wait=wait, held=held, hidden=_HIDDEN):
            chunk = render(batch)
            if chunk:
                yield chunk
    except EventsEvicted as exc:
        evicted()
        yield protocol.evicted_frame(exc)
    except BusUnavailable as exc:
        yield protocol.unavailable_frame(exc)


async def one_frame(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


async def no_frames() -> AsyncIterator[bytes]:
    return
    yield b""


async def heartbeats_only() -> AsyncIterator[bytes]:
    # Stays open with heartbeats only, like the real server's state_update stream.
    await asyncio.Event().wait()
    yield b""


class ThreadFollower:
    """Every run of a thread in turn, with thread-stream frame ids (protocol.thread_frame_id)."""

    def __init__(
        self, storage: Storage, bus: EventBus, thread_id: str, lifecycle_only: bool
    ) -> None:
        self.storage = storage
        self.bus = bus
        self.thread_id = thread_id
        self.lifecycle_only = lifecycle_only
        self._followed: set[str] = set()

    async def frames(self, resume: tuple[int, int] | None) -> AsyncIterator[bytes]:
        log = thread_log(self.thread_id)
        if resume is None:
            # Live: the runs in flight now, from now on, then every later run.
            start = await self.bus.last_seq(log)
            async for chunk in self._in_flight(start):
                yield chunk
            resume = (start, 0)
        else:
            start = max(resume[0] - 1, 0)
        try:
            async for batch in self.bus.subscribe(log, start):
                for entry in batch:
                    after = resume[1] if entry.seq == resume[0] else 0
                    run_id = entry.data.decode()  # empty: the place of a run deleted since
                    if run_id and after != protocol.RUN_DONE and run_id not in self._followed:
                        async for chunk in self._run(entry.seq, run_id, after):
                            yield chunk
        except EventsEvicted as exc:
            yield protocol.evicted_frame(exc)
        except BusUnavailable as exc:
            yield protocol.unavailable_frame(exc)

    async def _in_flight(self, thread_seq: int) -> AsyncIterator[bytes]:
        runs = await self.storage.inflight_runs(thread_id=self.thread_id, run_ids=None, status=None)
        for run in runs:
            # A run created while the stream was opening is in flight and in the thread log.
            self._followed.add(run["run_id"])
            after = await self.bus.last_seq(run["run_id"])
            async for chunk in self._run(thread_seq, run["run_id"], after):
                yield chunk

    async def _run(self, thread_seq: int, run_id: str, after: int) -> AsyncIterator[bytes]:
        def render(batch: Sequence[Event]) -> bytes:
            return b"".join(
                protocol.encode_frame(protocol.thread_frame_id(thread_seq, e.seq), e.name, e.data)
                for e in batch
                if e.mode != RESULT_MODE and (not self.lifecycle_only or e.mode == "metadata")
            )

        async for chunk in _rendered(self.bus, run_id, after, render):
            yield chunk
        done = serde.dumps({"status": "run_done", "run_id": run_id})
        yield protocol.encode_frame(
            protocol.thread_frame_id(thread_seq, protocol.RUN_DONE), "metadata", done
        )
