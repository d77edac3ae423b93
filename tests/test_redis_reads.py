"""Waiting readers on Redis share a few connections (eventbus/redis_reads.py): many more
readers than connections each get exactly their events, joiners of one log share its reads,
and a reader that stops leaves the others reading."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis

from agentstream import metrics
from agentstream.eventbus.redis import RedisEventBus
from tests.services import RedisServer
from tests.test_eventbus_contract import _items, redis_bus, redis_namespace

__all__ = ["redis_bus", "redis_namespace"]


def _waiting(bus: RedisEventBus) -> int:
    return sum(lane.size() for lane in bus._reads._lanes)


def _reader_connections(bus: RedisEventBus) -> int:
    pool: Any = bus._readers.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def _started() -> None:
    """Lets the tasks just made run to their first wait (a reader's: its watch made)."""
    await asyncio.sleep(0)


async def _read(bus: RedisEventBus, run_id: str) -> list[int]:
    return [e.seq for batch in [b async for b in bus.subscribe(run_id, 0)] for e in batch]


async def test_redis_many_more_readers_than_connections_each_get_their_events(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    reader, publisher = redis_bus(read_lanes=3), redis_bus()
    logs = [f"r{n}" for n in range(30)]
    # Two readers per log (a run and its joiner), all waiting before anything is published.
    tasks = [asyncio.create_task(_read(reader, log)) for log in logs for _ in range(2)]
    await _started()
    assert _waiting(reader) == 60
    for round_ in range(3):  # interleaved: every lane hears of many logs at once
        await asyncio.gather(*(publisher.publish(log, _items(str(round_))) for log in logs))
    await asyncio.gather(*(publisher.close(log, _items("last")) for log in logs))
    results = await asyncio.gather(*tasks)
    assert results == [[1, 2, 3, 4]] * 60
    assert 0 < _reader_connections(reader) <= 3
    assert _waiting(reader) == 0


async def test_redis_two_thousand_readers_wait_at_once(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # Each waiting reader held a connection of its own until this change, and past a thousand
    # a new one failed at once: a chat UI holds its thread's stream open, idle, for hours.
    reader, publisher = redis_bus(read_lanes=8), redis_bus()
    logs = [f"idle{n}" for n in range(2_000)]
    tasks = [asyncio.create_task(_read(reader, log)) for log in logs]
    await _started()
    assert _waiting(reader) == len(logs)
    for log in logs:
        await publisher.close(log, _items("a", "b"))
    assert await asyncio.gather(*tasks) == [[1, 2]] * len(logs)
    assert 0 < _reader_connections(reader) <= 8


async def test_redis_a_reader_that_stops_leaves_the_others_of_its_log_reading(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    reader, publisher = redis_bus(read_lanes=1), redis_bus()
    staying = asyncio.create_task(_read(reader, "r"))
    leaving = reader.subscribe("r", 0)
    first = asyncio.create_task(anext(leaving))
    await _started()
    assert _waiting(reader) == 2
    await publisher.publish("r", _items("a"))
    assert [e.seq for e in await first] == [1]
    await leaving.aclose()
    assert _waiting(reader) == 1
    # A reader of another log, added while the lane is reading, is heard of at once.
    other = asyncio.create_task(_read(reader, "other"))
    await _started()
    assert _waiting(reader) == 2
    await publisher.close("other", _items("x"))
    async with asyncio.timeout(5):  # not the lane's next read, 20 s on
        assert await other == [1]
    await publisher.close("r", _items("b"))
    assert await staying == [1, 2]
    assert _waiting(reader) == 0


async def test_redis_a_joiner_behind_a_read_in_flight_gets_every_event_after_its_own(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    """A joiner waits from where it found the log's end, while the lane's read of that log,
    sent for the readers already there, may begin further on (they had read an event the
    joiner's look missed). What that read finds is not the joiner's next events: it waits for
    the lane's next read, from its own position. (It was given them, and told the events in
    between were no longer kept: one joiner in a few of fifty at random moments.)"""
    reader, publisher = redis_bus(read_lanes=1), redis_bus()
    await publisher.publish("r", _items("a", "b"))  # events 1 and 2
    reads, key = reader._reads, reader.key("r")
    ahead = reads.watch(key, b"2-0")  # the readers already there have event 2
    ahead_reads = asyncio.create_task(reads.read(ahead, b"2-0"))
    await _started()  # the lane's task has sent its read, from event 2
    lane = reads._lanes[0]
    assert lane.reading
    # The joiner comes while that read is out, and before its wake-up reaches Redis.
    lane.waking = True
    joiner = reads.watch(key, b"1-0")
    joiner_reads = asyncio.create_task(reads.read(joiner, b"1-0"))
    await publisher.publish("r", _items("c"))  # event 3: the read from 2 returns it
    async with asyncio.timeout(5):
        assert [e[0] for e in await joiner_reads] == [b"2-0", b"3-0"]
        assert [e[0] for e in await ahead_reads] == [b"3-0"]
    reads.stop(ahead)
    reads.stop(joiner)


# --- a log closed by this process ends its readers here at once ------------------------------
RESULT = frozenset({"result"})


@contextlib.asynccontextmanager
async def writes_paused(server: RedisServer) -> AsyncIterator[None]:
    """Redis takes no write (no publish, no close) until the block ends; reads go on."""
    admin = Redis.from_url(server.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        yield
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()


def _result() -> list[tuple[str, str, bytes]]:
    return [("result", "result", b'{"values":null}')]


async def test_redis_a_reader_hiding_the_result_ends_at_its_close_here_before_redis_has_it(
    redis_server: RedisServer,
) -> None:
    """The closing process (`dev` on Redis: the run's executor and its stream in one process)
    ends its own readers that would not show the close's events once they have every event
    before it: without the close's round trip to Redis and back."""
    bus = RedisEventBus(redis_server.url)
    try:
        await bus.publish("r", _items("a", "b"))
        stream = bus.subscribe("r", 0, hidden=RESULT)
        assert [e.seq for e in await anext(stream)] == [1, 2]
        await bus.publish("r", _items("c"))  # event 3, not yet read
        async with writes_paused(redis_server):
            closing = asyncio.create_task(bus.close("r", _result()))
            async with asyncio.timeout(10):
                rest = [e.seq for batch in [b async for b in stream] for e in batch]
            assert rest == [3]  # read through the last event first, then ended
            assert not closing.done()  # Redis has no close yet
        await closing
        # Every other reader still reads the close from Redis: the result, then the end.
        whole = [b async for b in bus.subscribe("r", 0)]
        assert [(e.seq, e.mode) for batch in whole for e in batch][-2:] == [
            (3, "custom"),
            (4, "result"),
        ]
    finally:
        await bus.aclose()


async def test_redis_a_close_here_that_adds_what_a_reader_shows_reaches_it(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    bus = redis_bus()
    await bus.publish("r", _items("a"))
    shown = asyncio.create_task(_read_hiding(bus, "r", RESULT))
    everything = asyncio.create_task(_read_hiding(bus, "r", frozenset()))
    await _started()
    await bus.close("r", [*_items("last"), *_result()])
    async with asyncio.timeout(10):
        assert await shown == [(1, "custom"), (2, "custom"), (3, "result")]
        assert await everything == [(1, "custom"), (2, "custom"), (3, "result")]


async def test_redis_a_close_in_another_process_reaches_a_hiding_reader_through_redis(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    """serve + worker: the worker closes the log, the API's reader hears of it from Redis."""
    api, worker = redis_bus(), redis_bus()
    await worker.publish("r", _items("a", "b"))
    reader = asyncio.create_task(_read_hiding(api, "r", RESULT))
    await _started()
    await worker.close("r", _result())
    async with asyncio.timeout(10):
        assert await reader == [(1, "custom"), (2, "custom"), (3, "result")]
    assert not api._hiding  # its reader's watch forgotten with it


async def _read_hiding(bus: RedisEventBus, run_id: str, hidden: frozenset[str]) -> list[Any]:
    batches = [b async for b in bus.subscribe(run_id, 0, hidden=hidden)]
    return [(e.seq, e.mode) for batch in batches for e in batch]


async def test_redis_a_stream_answered_after_its_runs_events_still_reads_them_all_here(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    """`dev` on Redis: the request streaming a new run publishes its first event
    (publish_first) while the run's executor, in the same process, publishes the run's events
    after it. Read in the other order (the request's task resumed later, a busy loop), the
    request's answer lowered the log's end this process remembers, and the executor's close
    here then ended the stream's reader there: a stateless stream of 20 events closed with
    none of them (1 in some thousands, benchmarks.run, `dev`, 50 at once)."""
    bus = redis_bus()
    landed, answered = asyncio.Event(), asyncio.Event()
    script = bus._publish_first

    async def read_late(**kwargs: Any) -> Any:
        seq = await script(**kwargs)
        landed.set()  # in Redis: event 1
        await answered.wait()
        return seq

    bus._publish_first = read_late  # type: ignore[method-assign]
    first = asyncio.create_task(bus.publish_first("r", _items("metadata")))
    await landed.wait()
    bus.lead("r", _items("metadata"))  # as the executor does; the log has it already
    await bus.publish("r", _items("a", "b", "c"))  # events 2-4
    answered.set()
    assert await first == 1

    async def stream() -> list[Any]:  # as api/streams.from_start reads on after its event 1
        batches = [b async for b in bus.subscribe("r", 1, held=True, hidden=RESULT)]
        return [(e.seq, e.mode) for batch in batches for e in batch]

    reader = asyncio.create_task(stream())
    await _started()  # its watch made, its lane's read not yet answered
    await bus.close("r", _result())
    async with asyncio.timeout(10):
        got = await reader
    # Every event after its first (the result after them too, if the lane read the close).
    assert got[:3] == [(2, "custom"), (3, "custom"), (4, "custom")]
    assert got[3:] in ([], [(5, "result")])


async def test_redis_a_first_event_published_here_already_costs_no_round_trip(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    """`dev` on Redis: when the run's executor, in this process, has published before the
    request streaming the run gets to publish its first event, publish_first answers from what
    this process knows (the log has an event), without asking Redis."""
    bus, other = redis_bus(), redis_bus()
    bus.lead("r", _items("metadata"))  # as the executor does
    assert await bus.publish("r", _items("a")) == 2
    sent = metrics.REDIS_ROUND_TRIPS._value.get()
    assert await bus.publish_first("r", _items("metadata")) == 0
    assert metrics.REDIS_ROUND_TRIPS._value.get() == sent
    # Another process (`serve` + `worker`'s API) asks, and is told the same.
    assert await other.publish_first("r", _items("metadata")) == 0
    asked = metrics.REDIS_ROUND_TRIPS._value.get()
    assert asked > sent
    # A log this process has not published to is asked about, as before.
    assert await bus.publish_first("new", _items("metadata")) == 1
    assert metrics.REDIS_ROUND_TRIPS._value.get() > asked
    assert [e.seq for batch in [b async for b in bus.subscribe("r", 0, wait=False)]
            for e in batch] == [1, 2]  # fmt: skip
