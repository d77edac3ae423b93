"""Waiting readers on Redis share a few connections (eventbus/redis_reads.py): many more
readers than connections each get exactly their events, joiners of one log share its reads,
and a reader that stops leaves the others reading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agentstream.eventbus.redis import RedisEventBus
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
