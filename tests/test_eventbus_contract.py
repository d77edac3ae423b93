"""The event-bus contract: every backend keeps one ordered log per run with exact resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from agentstream.eventbus import EventBus, EventsEvicted
from agentstream.eventbus.memory import MemoryEventBus

BACKENDS: dict[str, Callable[..., EventBus]] = {"memory": MemoryEventBus}


@pytest.fixture(params=sorted(BACKENDS))
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., EventBus]]:
    made: list[EventBus] = []

    def make(**kwargs: object) -> EventBus:
        bus = BACKENDS[request.param](**kwargs)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.aclose()


def _items(*names: str) -> list[tuple[str, str, bytes]]:
    return [("custom", "custom", f'{{"n":"{n}"}}'.encode()) for n in names]


async def _read_all(bus: EventBus, run_id: str, after: int | None) -> list[int]:
    return [e.seq for batch in [b async for b in bus.subscribe(run_id, after)] for e in batch]


async def test_ids_are_unique_and_increase_from_one(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    assert await bus.publish("r", _items("a", "b")) == 2
    assert await bus.publish("r", _items("c")) == 3
    await bus.close("r")
    assert await _read_all(bus, "r", 0) == [1, 2, 3]


async def test_resume_after_id_is_exact(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    await bus.publish("r", _items(*"abcdef"))
    await bus.close("r")
    assert await _read_all(bus, "r", 4) == [5, 6]
    assert await _read_all(bus, "r", 6) == []


async def test_frame_carries_event_data_and_id(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    await bus.publish("r", [("values", "values", b'{"x":1}')])
    await bus.close("r")
    [[event]] = [b async for b in bus.subscribe("r", 0)]
    assert event.frame == b'event: values\r\ndata: {"x":1}\r\nid: 1\r\n\r\n'


async def test_live_subscriber_starts_at_now(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    await bus.publish("r", _items("old1", "old2"))
    after = await bus.last_seq("r")
    seen: list[int] = []
    got_first = asyncio.Event()

    async def reader() -> None:
        async for batch in bus.subscribe("r", after):
            seen.extend(e.seq for e in batch)
            got_first.set()

    task = asyncio.create_task(reader())
    await bus.publish("r", _items("new1"))
    await got_first.wait()
    await bus.publish("r", _items("new2"))
    await bus.close("r")
    await task
    assert seen == [3, 4]


async def test_readers_each_get_everything_in_order(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    readers = [asyncio.create_task(_read_all(bus, "r", 0)) for _ in range(20)]
    for i in range(50):
        await bus.publish("r", _items(str(i)))
    await bus.close("r")
    for result in await asyncio.gather(*readers):
        assert result == list(range(1, 51))


async def test_evicted_ids_are_reported_not_skipped(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus(max_events=5)
    await bus.publish("r", _items(*"abcdefgh"))
    await bus.close("r")
    with pytest.raises(EventsEvicted) as info:
        await _read_all(bus, "r", 1)
    assert info.value.first_kept == 4
    assert await _read_all(bus, "r", 3) == [4, 5, 6, 7, 8]


async def test_no_wait_read_of_unknown_run_is_empty(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    assert [b async for b in bus.subscribe("nobody", 0, wait=False)] == []


async def test_publish_after_close_reopens_with_next_id(make_bus: Callable[..., EventBus]) -> None:
    # A run taken over by a new attempt continues its log; ids never restart.
    bus = make_bus()
    await bus.publish("r", _items("a"))
    await bus.close("r")
    assert await bus.publish("r", _items("b")) == 2
    await bus.close("r")
    assert await _read_all(bus, "r", 0) == [1, 2]
