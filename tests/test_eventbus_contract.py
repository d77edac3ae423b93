"""The event-bus contract: every backend keeps one ordered log per run with exact resume."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection

from agentstream import metrics
from agentstream.api.streams import from_start
from agentstream.eventbus import Event, EventBus, EventsEvicted, Frames
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.eventbus.redis import ENTRY_MOST, RedisEventBus, _shared_ends
from agentstream.execution.executor import YIELD_EVERY, Executor
from agentstream.graphs import GraphRegistry
from agentstream.protocol import RESULT_MODE, metadata_item, result_item
from agentstream.serde import loads
from agentstream.storage.base import Run, Storage
from tests.sse import sse_frames

# Database 15 of the test server; every test gets its own key prefix there, so parallel runs
# never see each other's logs and nothing needs flushing.
REDIS_URL = os.environ.get("AGENTSTREAM_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")

# Each factory gets the test's namespace: buses made in one test share it, as the processes of
# one deployment share a Redis.
BACKENDS: dict[str, Callable[[str], Callable[..., EventBus]]] = {
    "memory": lambda namespace: MemoryEventBus,
    "redis": lambda namespace: lambda **kw: RedisEventBus(REDIS_URL, key_prefix=namespace, **kw),
}


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A fresh key prefix on the test Redis, its keys removed afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        # Never a skip: a contract that silently drops a backend proves nothing.
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with "
            "`bash scripts/services.sh` or set AGENTSTREAM_TEST_REDIS_URI"
        )
    namespace = f"agentstream-test:{secrets.token_hex(8)}:"
    try:
        yield namespace
    finally:
        keys = list(client.scan_iter(match=namespace + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=sorted(BACKENDS))
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., EventBus]]:
    namespace = ""
    if request.param == "redis":
        namespace = request.getfixturevalue("redis_namespace")
    factory = BACKENDS[request.param](namespace)
    made: list[EventBus] = []

    def make(**kwargs: object) -> EventBus:
        bus = factory(**kwargs)
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
    # One event a publish: on Redis a publish's events are one entry, and trimming keeps
    # whole entries (see test_redis_trimming_keeps_whole_entries).
    bus = make_bus(max_events=5)
    for name in "abcdefgh":
        await bus.publish("r", _items(name))
    await bus.close("r")
    with pytest.raises(EventsEvicted) as info:
        await _read_all(bus, "r", 1)
    assert info.value.first_kept == 4
    assert await _read_all(bus, "r", 3) == [4, 5, 6, 7, 8]


async def test_a_log_far_past_its_bound_keeps_exactly_the_newest_events(
    make_bus: Callable[..., EventBus],
) -> None:
    # Thousands of events over the bound, a reader reading along and one left behind: the
    # log keeps exactly the newest max_events, each with its own id, name, data and frame,
    # however the backend stores them meanwhile (the in-process log drops evicted events in
    # chunks, and makes frames only when read).
    bus = make_bus(max_events=10)
    behind = bus.subscribe("r", 0)
    along = bus.subscribe("r", 0)
    await bus.publish("r", [("custom", "custom", b'{"n":0}')])
    assert [e.seq for e in await anext(behind)] == [1]
    seen: list[int] = [e.seq for e in await anext(along)]
    for start in range(1, 3000, 7):
        items = [
            ("custom", "custom|sub:1" if n % 2 else "custom", b'{"n":%d}' % n)
            for n in range(start, start + 7)
        ]
        await bus.publish("r", items)
        seen += [e.seq for e in await anext(along)]
    await bus.close("r")
    last = 1 + len(range(1, 3000, 7)) * 7
    assert seen == list(range(1, last + 1))
    # The reader left behind may have had some read for it meanwhile (Redis: its lane reads
    # on while it holds fewer than a read's worth); then it is told exactly what it missed:
    # the oldest event kept (on Redis the first of the oldest entry kept, a publish of 7).
    got = [1]
    with pytest.raises(EventsEvicted) as info:
        while True:
            got += [e.seq for e in await anext(behind)]
    assert got == list(range(1, len(got) + 1))
    whole = 6 if isinstance(bus, RedisEventBus) else 0
    assert info.value.requested_after == got[-1]
    assert last - 9 - whole <= info.value.first_kept <= last - 9
    kept = [e for batch in [b async for b in bus.subscribe("r", last - 10)] for e in batch]
    assert [e.seq for e in kept] == list(range(last - 9, last + 1))
    for e in kept:
        name = "custom|sub:1" if (e.seq - 1) % 2 else "custom"
        data = b'{"n":%d}' % (e.seq - 1)
        assert (e.mode, e.name, e.data) == ("custom", name, data)
        assert e.frame == b"event: %s\r\ndata: %s\r\nid: %d\r\n\r\n" % (name.encode(), data, e.seq)
    assert await _read_all(bus, "r", last - 2) == [last - 1, last]


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


async def test_publish_first_appends_only_to_a_log_with_nothing_in_it(
    make_bus: Callable[..., EventBus],
) -> None:
    """A run's first event, published by whoever comes first of its creator and its executor:
    once, at id 1; never after another event, nor to a log already ended (a run cancelled
    before it started)."""
    bus = make_bus()
    other = bus if bus.instant else make_bus()  # on Redis, another process's bus
    assert await bus.publish_first("r", _items("first")) == 1
    assert await other.publish_first("r", _items("again")) == 0
    assert await other.publish("r", _items("next")) == 2
    assert await bus.publish_first("r", _items("late")) == 0
    await bus.close("r")
    events = [e for batch in [b async for b in bus.subscribe("r", 0)] for e in batch]
    assert [(e.seq, e.data) for e in events] == [(1, b'{"n":"first"}'), (2, b'{"n":"next"}')]
    await bus.close("ended")
    assert await bus.publish_first("ended", _items("x")) == 0
    assert await _read_all(bus, "ended", 0) == []
    await other.publish("taken", _items("a"))
    assert await bus.publish_first("taken", _items("b")) == 0
    assert await bus.last_seq("taken") == 1


async def test_led_items_go_first_with_the_next_publish_or_close_into_an_empty_log(
    make_bus: Callable[..., EventBus],
) -> None:
    """A run's first attempt leads its metadata: it goes first with the run's first publish or
    its close, only if the log has nothing by then (the request streaming it was not first)."""
    bus = make_bus()
    other = bus if bus.instant else make_bus()  # on Redis, another process's bus
    bus.lead("r", _items("meta"))
    assert await bus.publish("r", _items("a", "b")) == 3
    assert await bus.publish("r", _items("c")) == 4  # led once
    assert await other.publish_first("taken", _items("meta")) == 1
    bus.lead("taken", _items("meta again"))
    assert await bus.publish("taken", _items("a")) == 2
    bus.lead("closed", _items("meta"))
    await bus.close("closed", _items("end"))
    bus.lead("bare", _items("meta"))
    await bus.close("bare")
    bus.lead("forgotten", _items("meta"))
    bus.lead("forgotten", [])
    if not bus.instant:  # the in-process bus appends what is led at once
        assert await bus.publish("forgotten", _items("a")) == 1

    async def datas(run_id: str) -> list[bytes]:
        return [e.data for batch in [b async for b in bus.subscribe(run_id, 0, wait=False)]
                for e in batch]  # fmt: skip

    assert await datas("r") == [b'{"n":"%s"}' % n for n in (b"meta", b"a", b"b", b"c")]
    assert await datas("taken") == [b'{"n":"meta"}', b'{"n":"a"}']
    assert await datas("closed") == [b'{"n":"meta"}', b'{"n":"end"}']
    assert await datas("bare") == [b'{"n":"meta"}']


async def test_a_reader_from_an_event_it_holds_gets_what_follows_and_the_end(
    make_bus: Callable[..., EventBus],
) -> None:
    """held=True (the reader published event `after` itself) lets a waiting read wait at once:
    it still gets every later event, and the end whether it came before or after it began."""
    bus = make_bus()
    assert await bus.publish_first("r", _items("meta")) == 1
    reader = asyncio.create_task(_read_held(bus, "r", 1))
    await bus.publish("r", _items("a"))
    await bus.close("r", _items("b"))
    assert await asyncio.wait_for(reader, 10) == [2, 3]
    assert await bus.publish_first("done", _items("meta")) == 1
    await bus.close("done")  # ended before the reader began: the end is after its event
    assert await asyncio.wait_for(_read_held(bus, "done", 1), 10) == []


async def test_a_stream_from_its_runs_start_says_the_metadata_once_whoever_published_it(
    make_bus: Callable[..., EventBus],
) -> None:
    """api/streams.from_start sends the metadata before the log has it, then publishes it: the
    client sees it once, at id 1, then the run's events, whether the request's publish or the
    executor's led copy came first; a run that ended before it began still says why."""
    bus = make_bus()
    worker = bus if bus.instant else make_bus()  # on Redis, another process's bus
    result = result_item(None, None, "success", [])

    def ran(run_id: str) -> list[tuple[str | None, str, Any]]:
        return [("1", "metadata", {"run_id": run_id, "attempt": 1}), ("2", "custom", {"n": "a"})]

    # The request first: its frame goes out while the log is still empty.
    told = _Told(bus)
    stream = from_start(cast(EventBus, told), "request-first")
    assert _frames(await anext(stream)) == ran("request-first")[:1]
    assert await bus.last_seq("request-first") == 0
    rest = asyncio.create_task(_body(stream))
    await asyncio.wait_for(told.published.wait(), 10)  # the executor's lead is then dropped
    worker.lead("request-first", [metadata_item("request-first", 1)])
    await worker.publish("request-first", _items("a"))
    await worker.close("request-first", [result])
    assert _frames(await asyncio.wait_for(rest, 10)) == ran("request-first")[1:]

    # The executor first: its copy of the frame is left out of what follows.
    worker.lead("executor-first", [metadata_item("executor-first", 1)])
    await worker.publish("executor-first", _items("a"))
    await worker.close("executor-first", [result])
    body = await asyncio.wait_for(_body(from_start(bus, "executor-first")), 10)
    assert _frames(body) == ran("executor-first")

    # A run that failed before it began (Executor.abandon): its error follows the metadata.
    error = {"error": "RunUnreadable", "message": "x"}
    await worker.publish("abandoned", [("error", "error", json.dumps(error).encode()), result])
    await worker.close("abandoned")
    body = await asyncio.wait_for(_body(from_start(bus, "abandoned")), 10)
    assert _frames(body) == [*ran("abandoned")[:1], ("1", "error", error)]


class _Told:
    """A bus that says when a publish_first of its has come back."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.published = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    async def publish_first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        try:
            return await self.bus.publish_first(run_id, items)
        finally:
            self.published.set()


async def _body(frames: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in frames])


def _frames(body: bytes) -> list[tuple[str | None, str, Any]]:
    return sse_frames(body.decode())


async def _read_held(bus: EventBus, run_id: str, after: int) -> list[int]:
    return [e.seq for b in [b async for b in bus.subscribe(run_id, after, held=True)] for e in b]


async def test_old_end_marker_does_not_stop_a_new_subscriber(
    make_bus: Callable[..., EventBus],
) -> None:
    # A reader that saw the close stopped; after a new attempt reopens the log, a new reader
    # reads past the old close and stops only at the next one.
    bus = make_bus()
    await bus.publish("r", _items("a"))
    await bus.close("r")
    assert await _read_all(bus, "r", 0) == [1]
    await bus.publish("r", _items("b"))
    seen: list[int] = []
    got_second = asyncio.Event()

    async def reader() -> None:
        async for batch in bus.subscribe("r", 0):
            seen.extend(e.seq for e in batch)
            if 2 in seen:
                got_second.set()

    task = asyncio.create_task(reader())
    second = asyncio.create_task(got_second.wait())
    await asyncio.wait([task, second], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert got_second.is_set() and not task.done(), f"stopped early after {seen}"
    await bus.publish("r", _items("c"))
    await bus.close("r")
    await asyncio.wait_for(task, 10)
    assert seen == [1, 2, 3]


async def test_no_wait_read_passes_an_old_end_marker(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    await bus.publish("r", _items("a"))
    await bus.close("r")
    await bus.publish("r", _items("b", "c"))
    batches = [b async for b in bus.subscribe("r", 0, wait=False)]
    assert [e.seq for batch in batches for e in batch] == [1, 2, 3]


async def test_no_wait_read_of_an_open_log_returns_what_is_there(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus()
    await bus.publish("r", _items("a", "b"))
    batches = [b async for b in bus.subscribe("r", 1, wait=False)]
    assert [e.seq for batch in batches for e in batch] == [2]


async def test_close_with_last_events_appends_them_then_ends(
    make_bus: Callable[..., EventBus],
) -> None:
    # A run's result and the end of its log go in one step: a live reader gets both and stops.
    bus = make_bus()
    await bus.publish("r", _items("a"))
    reader = asyncio.create_task(_read_all(bus, "r", 0))
    await asyncio.sleep(0.05)
    await bus.close("r", _items("b", "c"))
    assert await asyncio.wait_for(reader, 10) == [1, 2, 3]
    assert await bus.last_seq("r") == 3
    await bus.close("r", _items("d"))  # a new attempt's end continues the ids
    assert await _read_all(bus, "r", 0) == [1, 2, 3, 4]


async def test_reading_from_now_or_beyond_a_closed_log_ends(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus()
    await bus.publish("r", _items("a", "b"))
    await bus.close("r")
    assert await asyncio.wait_for(_read_all(bus, "r", None), 10) == []
    assert await asyncio.wait_for(_read_all(bus, "r", 7), 10) == []


async def test_last_seq_counts_events_not_closes(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    assert await bus.last_seq("r") == 0
    await bus.close("r")
    await bus.close("r")
    assert await bus.last_seq("r") == 0
    assert await bus.publish("r", _items("a")) == 1
    await bus.close("r")
    assert await bus.last_seq("r") == 1


async def test_reader_that_falls_behind_is_told(make_bus: Callable[..., EventBus]) -> None:
    # 600 events in one publish, 300 kept: the in-process log keeps exactly the newest 300;
    # Redis whole entries of ENTRY_MOST (the publish's second and third).
    bus = make_bus(max_events=300)
    await bus.publish("r", _items("a"))
    reader = bus.subscribe("r", 0)
    assert [e.seq for e in await anext(reader)] == [1]
    await bus.publish("r", _items(*map(str, range(600))))
    with pytest.raises(EventsEvicted) as info:
        await anext(reader)
    first_kept = 2 + ENTRY_MOST if isinstance(bus, RedisEventBus) else 302
    assert (info.value.requested_after, info.value.first_kept) == (1, first_kept)


async def test_delete_forgets_the_log(make_bus: Callable[..., EventBus]) -> None:
    bus = make_bus()
    await bus.publish("r", _items("a", "b"))
    await bus.close("r")
    await bus.delete("r")
    assert await bus.last_seq("r") == 0
    assert [b async for b in bus.subscribe("r", 0, wait=False)] == []


# --- Redis only: what a shared server adds ---------------------------------------------------
@pytest.fixture
async def redis_bus(redis_namespace: str) -> AsyncIterator[Callable[..., RedisEventBus]]:
    """RedisEventBus instances on one server, each standing for a process of one deployment."""
    made: list[RedisEventBus] = []

    def make(**kwargs: object) -> RedisEventBus:
        bus = RedisEventBus(REDIS_URL, key_prefix=redis_namespace, **kwargs)  # type: ignore[arg-type]
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.aclose()


async def _written_by_an_older_version(key: str, *entries: tuple[str, dict[str, Any]]) -> None:
    """(id, fields) entries XADDed as they are: an older version wrote an event an entry."""
    client = Redis.from_url(REDIS_URL)
    try:
        for entry_id, fields in entries:
            await client.xadd(key, fields, id=entry_id)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_redis_reads_events_whatever_the_order_of_their_fields(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # Entries of one event each (an older version's, another writer's), their fields in any
    # order, read to the same events as ours.
    bus = redis_bus()
    await _written_by_an_older_version(
        bus.key("r"),
        ("1-0", {"mode": "custom", "name": "custom", "data": b'{"n":1}'}),
        ("2-0", {"name": "custom|a:1", "data": b'{"n":2}', "mode": "custom"}),
        ("3-0", {"mode": "custom", "name": "custom", "data": b'{"n":3}'}),
        ("3-1", {"end": "1"}),
    )
    events = [e for batch in [b async for b in bus.subscribe("r", 0)] for e in batch]
    assert [(e.seq, e.name, e.data) for e in events] == [
        (1, "custom", b'{"n":1}'),
        (2, "custom|a:1", b'{"n":2}'),
        (3, "custom", b'{"n":3}'),
    ]
    assert events[1].frame == b'event: custom|a:1\r\ndata: {"n":2}\r\nid: 2\r\n\r\n'
    # From event 2 on, the one entry as written: its read ends at the marker.
    assert await _read_all(bus, "r", 2) == [3]


async def test_redis_reads_a_log_an_older_version_began_then_ours_continued(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A rolling upgrade: a log of one entry per event (as an older version wrote them), then
    # a new attempt's events in entries of many; a reader from anywhere gets each once.
    bus = redis_bus()
    await _written_by_an_older_version(
        bus.key("r"),
        *(
            (f"{n}-0", {"mode": "custom", "name": "custom", "data": b'{"n":%d}' % n})
            for n in (1, 2)
        ),
        ("2-1", {"end": "1"}),
    )
    await bus.publish("r", [("custom", "custom", b'{"n":%d}' % n) for n in (3, 4, 5)])
    await bus.close("r")
    events = [e for batch in [b async for b in bus.subscribe("r", 0)] for e in batch]
    assert [(e.seq, e.data) for e in events] == [(n, b'{"n":%d}' % n) for n in range(1, 6)]
    assert await _read_all(bus, "r", 1) == [2, 3, 4, 5]
    assert await _read_all(bus, "r", 3) == [4, 5]


async def test_redis_keeps_a_publish_in_entries_of_at_most_entry_most(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A model's reply published at once: entries of ENTRY_MOST events, each id its last
    # event's; a reader resuming from inside one gets the rest of it and nothing before.
    # The fields are bytes as they come (a name in any script, data with a line break).
    bus = redis_bus()
    items = [
        ("messages-tuple", "messages|子:1" if n % 3 else "messages", b'["a\nb",%d]' % n)
        for n in range(1, 601)
    ]
    assert await bus.publish("r", items) == 600
    await bus.close("r")
    client = Redis.from_url(REDIS_URL)
    try:
        ids = [e[0] for e in await client.xrange(bus.key("r"))]
    finally:
        await client.aclose()
    assert ids == [b"%d-0" % ENTRY_MOST, b"%d-0" % (2 * ENTRY_MOST), b"600-0", b"600-1"]
    for after in (0, 1, ENTRY_MOST - 1, ENTRY_MOST, ENTRY_MOST + 7, 599):
        events = [e for batch in [b async for b in bus.subscribe("r", after)] for e in batch]
        assert [(e.seq, e.mode, e.name, e.data) for e in events] == [
            (n, *items[n - 1]) for n in range(after + 1, 601)
        ]
        frame = b"event: %s\r\ndata: %s\r\nid: 600\r\n\r\n"
        assert events[-1].frame == frame % (items[-1][1].encode(), items[-1][2])


def _token(n: int, call: int) -> bytes:
    # A messages-tuple event as the executor makes it: [message, the call's metadata].
    message = b'{"content":"t%d","type":"AIMessageChunk","tool_calls":[{"a":1},{"b":2}]}' % n
    metadata = b'{"run_id":"%s","langgraph_node":"think","call":%d,"lc":{"x":[{"y":1}]}}' % (
        b"r" * 400,
        call,
    )
    return b"[%s,%s]" % (message, metadata)


async def test_redis_sends_a_data_end_its_entry_shares_once(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # Two model calls' tokens interleaved (parallel nodes), with custom events, a data that is
    # all end and one with no end among them: each event reads back exactly, and the entry
    # holds each call's metadata once.
    bus = redis_bus()
    datas = [_token(n, n % 2) for n in range(200)]
    datas[7] = b'{"n":7}'
    datas[8] = b"[1,2,3]"
    datas[9] = datas[10][datas[10].rfind(b",{") :]
    items = [("messages-tuple", "messages", d) for d in datas]
    await bus.publish("r", items)
    await bus.close("r")
    events = [e for batch in [b async for b in bus.subscribe("r", 0)] for e in batch]
    assert [e.data for e in events] == datas
    assert [e.frame for e in events][3] == b"event: messages\r\ndata: %s\r\nid: 4\r\n\r\n" % datas[
        3
    ]
    client = Redis.from_url(REDIS_URL)
    try:
        (_, fields), _ = await client.xrange(bus.key("r"))
    finally:
        await client.aclose()
    assert len(fields[b"d"]) < sum(map(len, datas)) / 4


@given(
    st.lists(
        st.tuples(st.binary(max_size=40), st.sampled_from([b"", b",{", b',{"k":1}', b"x" * 70])),
        max_size=40,
    ),
    st.binary(min_size=0, max_size=90),
)
def test_shared_ends_split_every_data_exactly(pairs: list[tuple[bytes, bytes]], end: bytes) -> None:
    # However the data look (an end shorter or longer than worth sharing, `,{` anywhere or
    # nowhere), each one is its part and its end again.
    datas = [head + glue + (end if n % 3 else b"") for n, (head, glue) in enumerate(pairs)]
    parts, shared, which = _shared_ends(datas)
    if which is None:
        assert list(parts) == datas and not shared
        return
    table = [b"", *shared]
    assert [part + table[k] for part, k in zip(parts, which, strict=True)] == datas


async def test_redis_a_replay_comes_in_reads_of_a_bounded_size(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A paced start (an entry per event), then a model's reply at once (entries of 256): a
    # reader from the start gets it in reads of at most 32 entries, so at most 8,192 events
    # are held at once, however long the log.
    bus = redis_bus(max_events=100_000)
    for n in range(100):
        await bus.publish("r", _items(str(n)))
    await bus.publish("r", _items(*map(str, range(10_000))))
    await bus.close("r")
    sizes = [len(batch) async for batch in bus.subscribe("r", 0, wait=False)]
    assert sizes == [32, 32, 32, 4 + 28 * ENTRY_MOST, 10_000 - 28 * ENTRY_MOST]
    waited = [batch async for batch in bus.subscribe("r", 0)]
    assert [e.seq for batch in waited for e in batch] == list(range(1, 10_101))
    assert max(map(len, waited)) <= 2 * 32 * ENTRY_MOST


async def test_redis_a_bus_closes_at_once_while_a_lane_reads(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A reader told it fell behind leaves its lane reading on (XREAD BLOCK for a whole block,
    # 20 s); closing the bus cancels that read. Under redis-py's socket timeout the cancel
    # could land as the read's send completed and be swallowed: the close then sat out the
    # block (and with it every test's teardown, and a server's stop).
    bus = redis_bus(max_events=300)
    await bus.publish("r", _items("a"))
    reader = bus.subscribe("r", 0)
    assert [e.seq for e in await anext(reader)] == [1]
    await bus.publish("r", _items(*map(str, range(600))))
    with pytest.raises(EventsEvicted):
        await anext(reader)
    await asyncio.wait_for(bus.aclose(), 5)


async def test_redis_commands_make_no_task_of_their_own(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # redis-py sends under its socket timeout through asyncio.wait_for, a task a send on
    # Python 3.11: two more loop turns for every command, a few milliseconds of a run's close
    # on a busy loop. Ours keep the timeout without one.
    bus = redis_bus()
    await bus.publish("r", _items("a"))  # the connection made, the script loaded
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        await bus.publish("r", _items("b"))
        await bus.close("r")
    finally:
        loop.set_task_factory(None)
    assert made == []
    assert await _read_all(bus, "r", 0) == [1, 2]


async def test_redis_a_send_past_its_socket_timeout_fails_as_redis_py_would(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # The timeout a connection sends under is ours (asyncio.timeout, not redis-py's wait_for):
    # a send it cuts short raises redis-py's own TimeoutError, which the bus rides out, and the
    # connection keeps its timeout for the next command.
    bus = redis_bus()
    connection: Any = bus._redis.connection_pool.make_connection()
    connection.socket_timeout = 1e-6  # the connect inside the send cannot finish in time
    with pytest.raises(redis.exceptions.TimeoutError, match="Timeout writing to socket"):
        await connection.send_packed_command(connection.pack_command("PING"))
    assert connection.socket_timeout == 1e-6
    connection.socket_timeout = 5.0
    await connection.send_packed_command(connection.pack_command("PING"))
    assert await connection.read_response() == b"PONG"
    await connection.disconnect()


async def test_redis_trimming_keeps_whole_entries(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # The bound is met entry by entry: a publish of 8 is kept whole while any of its events
    # is among the newest max_events, and dropped whole once none is; a reader from before
    # what is kept is told where it begins.
    bus = redis_bus(max_events=5)
    await bus.publish("r", _items(*"abcdefgh"))
    for name in "ijk":
        await bus.publish("r", _items(name))
    await bus.close("r")
    assert await _read_all(bus, "r", 0) == list(range(1, 12))
    assert await _read_all(bus, "r", 5) == list(range(6, 12))
    for name in "lmn":
        await bus.publish("r", _items(name))
    await bus.close("r")
    with pytest.raises(EventsEvicted) as info:
        await _read_all(bus, "r", 5)
    assert (info.value.requested_after, info.value.first_kept) == (5, 10)
    assert await _read_all(bus, "r", 9) == list(range(10, 15))


async def test_redis_close_sets_a_ttl_and_reopen_clears_it(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    bus = redis_bus(keep_seconds=30)
    client = Redis.from_url(REDIS_URL)
    try:
        await bus.publish("r", _items("a"))
        assert await client.ttl(bus.key("r")) == -1, "an open log never expires"
        await bus.close("r")
        assert 0 < await client.ttl(bus.key("r")) <= 30
        await bus.publish("r", _items("b"))
        assert await client.ttl(bus.key("r")) == -1, "a new attempt keeps its log"
    finally:
        await client.aclose()


async def test_redis_close_with_events_retried_appends_them_once(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A retry after a lost reply resends the same batch token: nothing lands twice, and the
    # log still ends once and expires.
    bus = redis_bus(keep_seconds=30)
    client = Redis.from_url(REDIS_URL)
    try:
        await bus.publish("r", _items("a"))
        keys = [bus.key("r"), bus._meta("r")]
        args = bus._batch("r", _items("b"), 30_000, "__end__", led=())  # no items led
        for _ in range(2):  # the last event's id and the end's, the same on the retry
            assert await bus._finish(keys=keys, args=args) == [2, 2]
        assert await _read_all(bus, "r", 0) == [1, 2]
        assert [e[0] for e in await client.xrange(bus.key("r"))] == [b"1-0", b"2-0", b"2-1"]
        assert 0 < await client.ttl(bus.key("r")) <= 30
    finally:
        await client.aclose()


async def test_redis_subscriber_in_another_process_gets_everything_live(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    publisher, subscriber = redis_bus(), redis_bus()
    received: list[tuple[int, bytes]] = []
    got_first = asyncio.Event()

    async def reader(after: int) -> None:
        async for batch in subscriber.subscribe("r", after):
            received.extend((e.seq, e.data) for e in batch)
            got_first.set()

    # "Now", taken before anything is published, as a join does.
    task = asyncio.create_task(reader(await subscriber.last_seq("r")))
    await publisher.publish("r", _items("0"))
    await asyncio.wait_for(got_first.wait(), 10)
    for i in range(1, 300, 3):
        await publisher.publish("r", _items(str(i), str(i + 1), str(i + 2)))
    await publisher.close("r")
    await asyncio.wait_for(task, 10)
    assert received == [(n + 1, f'{{"n":"{n}"}}'.encode()) for n in range(301)]


async def _until(check: Callable[[], Any], what: str) -> Any:
    """check()'s first true answer, asked every 10 ms for up to 5 s."""
    for _ in range(500):
        if found := check():
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def _local_watch(bus: RedisEventBus, run_id: str) -> Any:
    """The watch of this process's reader of the run's log, once it is handed its publishes
    (Reads.feed) instead of reading them."""
    key = bus.key(run_id)

    def local() -> Any:
        lane = bus._reads._home.get(key)
        found = lane.watches.get(key, ()) if lane is not None else ()
        return found[0] if found and found[0].local else None

    return await _until(local, "the reader never became local")


async def test_redis_a_reader_where_the_run_executes_is_handed_its_events(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # `dev` on Redis: the executor publishes, a stream in the same process reads. What the
    # reader gets comes with each publish's answer, without a read of it back from Redis.
    bus = redis_bus()
    bus.own("r")
    await bus.publish("r", _items("a"))
    reader = asyncio.ensure_future(_read_all(bus, "r", 1))
    await _local_watch(bus, "r")
    before = metrics.REDIS_ROUND_TRIPS._value.get()
    await bus.publish("r", _items("b", "c"))
    await bus.publish("r", _items(*"defg"))
    await bus.close("r", [*_items("h"), result_item({}, None, "success", [])])
    assert await asyncio.wait_for(reader, 10) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert metrics.REDIS_ROUND_TRIPS._value.get() - before == 3, "two publishes and a close"
    bus.release("r")
    assert await _read_all(bus, "r", 0) == list(range(1, 10)), "the log holds them all"


async def test_redis_a_local_reader_reads_again_what_another_process_published(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A run taken over while its first worker still publishes: the other process's events
    # reach the reader in the log's order, once a publish here shows it was left behind.
    here, other = redis_bus(), redis_bus()
    here.own("r")
    await here.publish("r", _items("a"))
    got: list[int] = []

    async def read() -> None:
        async for batch in here.subscribe("r", 1):
            got.extend(e.seq for e in batch)

    reader = asyncio.ensure_future(read())
    await _local_watch(here, "r")
    await other.publish("r", _items("b"))
    await here.publish("r", _items("c"))
    # Both, while the run is still this process's.
    await _until(lambda: got == [2, 3], "the reader never got events 2 and 3")
    here.release("r")  # the executor here stopped: what comes next is read from the log
    await other.publish("r", _items("d"))
    await other.close("r")
    await asyncio.wait_for(reader, 10)
    assert got == [2, 3, 4]


async def test_redis_a_local_reader_that_does_not_take_its_events_is_handed_no_more(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A slow client: past a read's worth it is left to read the log when it comes back, as a
    # lane would have paused it, instead of holding every publish in memory meanwhile.
    bus = redis_bus()
    bus.own("r")
    await bus.publish("r", _items("0"))
    stream = bus.subscribe("r", 1)
    first = asyncio.ensure_future(anext(stream))
    watch = await _local_watch(bus, "r")
    await bus.publish("r", _items("1"))
    got = [e.seq for e in await asyncio.wait_for(first, 10)]
    for i in range(2, 100):  # nobody takes these meanwhile
        await bus.publish("r", _items(str(i)))
    assert len(watch.taken) <= 32 and not watch.local
    await bus.close("r")
    async for batch in stream:
        got += [e.seq for e in batch]
    assert got == list(range(2, 101))


async def test_redis_a_reader_elsewhere_that_hides_the_close_ends_at_the_notice_of_it(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # `serve`: a run executes in a worker process, its stream (which hides the result) in an
    # API process. The worker's notice of the run's end, as the database delivers it at the
    # end's commit, ends that stream once it has read the run's last event: before the close.
    worker, api = redis_bus(), redis_bus()
    assert worker.end_notice("r", {RESULT_MODE}) is None, "nothing published: no floor known"
    await worker.publish("r", _items("a", "b"))
    got: list[int] = []

    async def read() -> None:
        async for batch in api.subscribe("r", 0, hidden=frozenset({RESULT_MODE})):
            got.extend(e.seq for e in batch)

    stream = asyncio.ensure_future(read())
    plain = asyncio.ensure_future(_read_all(api, "r", 0))  # hides nothing
    await _until(lambda: got == [1, 2], "the stream never read events 1 and 2")
    await worker.publish("r", _items("c"))  # not read yet, perhaps, when the notice comes
    notice = worker.end_notice("r", {RESULT_MODE})
    assert notice is not None
    for foreign in ("", "x", f"{notice} more", notice.replace(" 3 ", " three ")):
        api.ended(foreign)  # not a notice: ignored
    await _until(lambda: got == [1, 2, 3], "the stream never read event 3")
    assert [w.end for w in api._hiding["r"]] == [None], "no end told to the stream yet"
    api.ended(notice.replace(RESULT_MODE, "values"))  # a close that adds what it shows
    api.ended(notice)
    await asyncio.wait_for(stream, 10)
    assert got == [1, 2, 3]
    assert not plain.done(), "a reader that shows the result waits for the close"
    await worker.close("r", [result_item({}, None, "success", [])])
    assert await asyncio.wait_for(plain, 10) == [1, 2, 3, 4]


async def test_redis_publishers_in_two_processes_never_share_an_id(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    # A thread's log gets its runs from every API process: batches interleave but stay whole.
    buses = [redis_bus(), redis_bus()]

    async def publish(bus: RedisEventBus, tag: str) -> list[int]:
        return [await bus.publish("r", _items(f"{tag}{i}a", f"{tag}{i}b")) for i in range(100)]

    lasts = await asyncio.gather(publish(buses[0], "x"), publish(buses[1], "y"))
    assert sorted(lasts[0] + lasts[1]) == list(range(2, 401, 2))
    events = [
        e for batch in [b async for b in buses[0].subscribe("r", 0, wait=False)] for e in batch
    ]
    assert [e.seq for e in events] == list(range(1, 401))
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert first.data[:-4] == second.data[:-4], "a batch is never split"
    for tag in "xy":
        mine = [e.data for e in events if e.data.startswith(f'{{"n":"{tag}'.encode())]
        assert mine == [f'{{"n":"{tag}{i}{p}"}}'.encode() for i in range(100) for p in "ab"]


async def test_redis_new_attempt_in_another_process_continues_ids(
    redis_bus: Callable[..., RedisEventBus],
) -> None:
    crashed = redis_bus()
    await crashed.publish("r", _items("a", "b", "c"))
    await crashed.aclose()  # gone without closing the log
    taker = redis_bus()
    assert await taker.publish("r", _items("d")) == 4
    await taker.close("r")
    assert await _read_all(taker, "r", 0) == [1, 2, 3, 4]


async def test_reader_that_goes_away_mid_wait_leaves_the_log_usable(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus()
    await bus.publish("r", _items("a"))
    gone = asyncio.create_task(_read_all(bus, "r", 1))
    staying = asyncio.create_task(_read_all(bus, "r", 1))
    await bus.publish("r", _items("b"))
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await bus.publish("r", _items("c"))
    await bus.close("r")
    assert await asyncio.wait_for(staying, 10) == [2, 3]
    assert await _read_all(bus, "r", 0) == [1, 2, 3]


# --- the in-process bus: finished logs packed, and a budget for them -------------------------
async def test_a_finished_log_reads_back_exactly_what_was_published() -> None:
    bus = MemoryEventBus()
    items = [
        ("custom", "custom", b'{"tick":1}'),
        ("messages-tuple", "messages|agent:7f3|tools:1", '[{"content":"héllo ✓"},{}]'.encode()),
        ("values", "values", b"null"),
        ("updates", "updates|résumé:1", b'{"a":{"b":"\\r\\nid: 5"}}'),
    ] * 30
    await bus.publish("r", items)
    live = [e for batch in [b async for b in bus.subscribe("r", 0, wait=False)] for e in batch]
    await bus.close("r")
    # Packed, the log takes less than its live form did (each event a tuple and a frame).
    live_size = sum(sys.getsizeof(e) + sys.getsizeof(e.frame) for e in live)
    assert sum(len(e.frame) for e in live) < bus.retained_bytes < live_size
    kept = [e for batch in [b async for b in bus.subscribe("r", 0, wait=False)] for e in batch]
    assert kept == live
    assert [e.seq for e in kept] == list(range(1, len(items) + 1))
    # From any point, and past the end.
    tail = [e for batch in [b async for b in bus.subscribe("r", 100, wait=False)] for e in batch]
    assert tail == live[100:]
    assert [b async for b in bus.subscribe("r", len(items), wait=True)] == []
    # A new attempt reopens it: the old events stay readable, the ids go on.
    await bus.publish("r", [("custom", "custom", b'{"tick":2}')])
    assert bus.retained_bytes == 0
    again = [e for batch in [b async for b in bus.subscribe("r", 0, wait=False)] for e in batch]
    assert again[:-1] == live
    assert (again[-1].seq, again[-1].data) == (len(items) + 1, b'{"tick":2}')
    await bus.aclose()


async def test_a_finished_log_of_large_events_is_kept_without_a_copy() -> None:
    # A model's tokens, each about a kilobyte with its metadata: merging a finished log's
    # blocks into one buffer would copy the log for a few per cent of its memory.
    bus = MemoryEventBus(max_events=100)
    token = b'[{"content":"t"},{"k":"' + b"v" * 1000 + b'"}]'
    for n in range(3):  # each read as it comes: three blocks, the first evicted whole
        await bus.publish("r", [("messages-tuple", "messages", token)] * 50)
        [b async for b in bus.subscribe("r", 50 * n, wait=False)]
    live_batches = [b async for b in bus.subscribe("r", 50, wait=False)]
    await bus.close("r")
    await asyncio.sleep(0)  # a merge would come a turn after the close
    kept_batches = [b async for b in bus.subscribe("r", 50, wait=False)]
    live = [e for batch in live_batches for e in batch]
    kept = [e for batch in kept_batches for e in batch]
    assert kept == live and [e.seq for e in kept] == list(range(51, 151))
    buffers = {id(cast(Frames, b).buf) for b in kept_batches}
    assert buffers <= {id(cast(Frames, b).buf) for b in live_batches}  # not copied
    # Its 100 kept events, counted with what each and its buffer cost beside its frame.
    frames = sum(len(e.frame) for e in kept)
    assert frames < bus.retained_bytes <= frames + 100 * 64 + 1_000 * len(buffers)
    with pytest.raises(EventsEvicted):
        [b async for b in bus.subscribe("r", 0, wait=False)]
    await bus.aclose()


async def test_a_finished_log_of_many_small_blocks_is_merged_into_one() -> None:
    # A reader that keeps up with a model's tokens has the log make a block of each; once the
    # run is over they are one buffer, read back exactly, from any point.
    bus = MemoryEventBus()
    reader = bus.subscribe("r", 0)
    read: list[Event] = []
    for n in range(1, 201):
        await bus.publish("r", [("messages-tuple", "messages", b'[{"n":%d},{}]' % n)])
        read += await anext(reader)
    await bus.close("r", [("values", "values", b"{}")])
    read += [e async for batch in reader for e in batch]
    size_before = bus.retained_bytes
    await asyncio.sleep(0)  # merged a turn after the close, once its readers had the end
    assert bus.retained_bytes < size_before
    batches = [b async for b in bus.subscribe("r", 0, wait=False)]
    assert len(batches) == 1 and [e for e in batches[0]] == read
    assert [e.seq for e in read] == list(range(1, 202))
    for after in (0, 1, 150, 200):
        tail = [
            e for batch in [b async for b in bus.subscribe("r", after, wait=False)] for e in batch
        ]
        assert tail == read[after:]
    await bus.aclose()


async def test_finished_logs_stay_under_their_byte_budget_oldest_first() -> None:
    bus = MemoryEventBus(max_retained_bytes=20_000)
    for i in range(50):
        await bus.publish(f"r{i}", _items(*(str(n) for n in range(20))))
        await bus.close(f"r{i}")
        assert bus.retained_bytes <= 20_000
    assert await bus.last_seq("r0") == 0  # the oldest went first
    assert await bus.last_seq("r49") == 20
    kept = [i for i in range(50) if await bus.last_seq(f"r{i}")]
    assert kept == list(range(kept[0], 50))  # a run of the newest ones
    assert len(kept) >= 10
    # A log still being written is never counted against the budget or dropped for it.
    await bus.publish("live", _items(*(str(n) for n in range(500))))
    await bus.close("r-more")
    assert await bus.last_seq("live") == 500
    await bus.aclose()


async def test_a_burst_is_read_in_batches_and_a_first_event_at_once() -> None:
    bus = MemoryEventBus()
    batches: list[list[int]] = []
    got_first = asyncio.Event()

    async def read() -> None:
        async for batch in bus.subscribe("r", 0):
            batches.append([e.seq for e in batch])
            got_first.set()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)  # the reader waits on the empty log
    await bus.publish("r", _items("0"))
    await got_first.wait()
    assert batches == [[1]]  # alone, at once: nothing held it back
    # A burst, one event a loop turn, as a model's tokens come: each wakes the reader, until it
    # sees a burst and waits a moment before reading on, taking what came meanwhile at once.
    for n in range(1, 200):
        await bus.publish("r", _items(str(n)))
        await asyncio.sleep(0)
    await bus.close("r")
    await reader
    seqs = [s for batch in batches for s in batch]
    assert seqs == list(range(1, 201))  # all of them, in order, none twice
    assert len(batches) < 100
    assert any(len(batch) > 1 for batch in batches[:10])
    await bus.aclose()


async def test_a_reader_cancelled_mid_wait_leaves_the_others_waiting() -> None:
    bus = MemoryEventBus()
    await bus.publish("r", _items("0"))

    async def read() -> list[int]:
        async for batch in bus.subscribe("r", 1):
            return [e.seq for e in batch]
        return []

    gone, stays = asyncio.create_task(read()), asyncio.create_task(read())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    await bus.publish("r", _items("1"))
    assert await stays == [2]
    assert gone.cancelled()
    await bus.aclose()


def test_redis_commands_pack_as_redis_py_packs_them() -> None:
    """Our packing of plain commands (eventbus/redis.py) is byte for byte redis-py's, large
    arguments and commands of many megabytes included."""
    ours = RedisEventBus(REDIS_URL)._redis.connection_pool.make_connection()
    assert type(ours).__name__.startswith("Counted")  # the bus's own connection class
    theirs = RedisConnection()
    big = bytes(range(256)) * 400  # 100 KiB: sent as a part of its own
    for args in (
        ("XADD", "k", "*", "mode", "custom", "data", b'{"tick":1}'),
        ("EVALSHA", "ab12", 2, "k1", "k2", "héllo ✓", -7, b"", big, b"tail"),
        ("EVALSHA", "ab12", 1, "k", *([b"x" * 1100] * 3000)),  # 3.3 MB in one command
    ):
        assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))
    # What ours does not pack (a float, a two-word name) redis-py still does.
    assert ours.pack_command("SET", "k", 1.5) == theirs.pack_command("SET", "k", 1.5)


async def test_a_batch_of_megabytes_is_published_and_read_back_exactly(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus()
    items = [
        ("messages-tuple", "messages", b'{"n":%d,"pad":"%s"}' % (i, b"p" * 1000))
        for i in range(3000)
    ]
    items.append(("custom", "custom", b'{"big":"' + b"q" * 200_000 + b'"}'))
    assert await bus.publish("r", items) == len(items)
    await bus.close("r")
    read = [e for batch in [b async for b in bus.subscribe("r", 0, wait=False)] for e in batch]
    assert [(e.mode, e.name, e.data) for e in read] == items


async def test_a_burst_goes_out_on_redis_while_it_is_still_translated(
    redis_namespace: str,
) -> None:
    # A model yields its whole reply at once, and the executor drains it without a suspension
    # of its own: its first publish, started at the first token, ran only once the last token
    # was translated, so readers saw nothing until then. Now the loop is handed over every
    # YIELD_EVERY events, and the first tokens are published meanwhile.
    tokens = 8 * YIELD_EVERY
    drawn = 0
    at_publish: list[int] = []

    class Watched(RedisEventBus):
        async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> None:
            at_publish.append(drawn)
            await super().publish(run_id, items)

    bus = Watched(REDIS_URL, key_prefix=redis_namespace)
    executor = Executor(cast(Storage, None), bus, cast(GraphRegistry, None), "http://test")

    async def burst() -> AsyncIterator[int]:
        nonlocal drawn
        for n in range(tokens):
            drawn += 1
            yield n

    run = cast(Run, {"run_id": "r", "created_at": datetime.now(UTC), "kwargs": {}})
    try:
        await executor._publish_all(run, burst(), lambda n: _items(str(n)))
        read = [e for batch in [b async for b in bus.subscribe("r", 0, wait=False)] for e in batch]
    finally:
        await bus.aclose()
    assert len(read) == tokens, "every event, in order, once"
    assert [loads(e.data)["n"] for e in read] == [str(n) for n in range(tokens)]
    assert at_publish[0] < tokens // 2, f"first publish after {at_publish[0]} of {tokens}"


async def test_a_live_log_past_its_bound_lets_its_evicted_blocks_go() -> None:
    # A long run streaming past max_events, its reader keeping up (a block a read): the blocks
    # evicted whole are dropped now and then, so what the log holds stays near its bound.
    bus = MemoryEventBus(max_events=2_000)
    seq = most = 0
    for _ in range(1_000):
        seq = await bus.publish("r", _items(*(str(n) for n in range(100))))
        [b async for b in bus.subscribe("r", seq - 100, wait=False)]
        most = max(most, sum(len(block) for block in bus._logs["r"].blocks))
    assert seq == 100_000
    assert 2_000 <= most <= 2_000 + 1_024 + 100
    kept = [
        e for batch in [b async for b in bus.subscribe("r", seq - 2_000, wait=False)] for e in batch
    ]
    assert [e.seq for e in kept] == list(range(seq - 1_999, seq + 1))
    with pytest.raises(EventsEvicted):
        [b async for b in bus.subscribe("r", seq - 2_001, wait=False)]
    await bus.aclose()


async def test_a_kept_log_leaves_the_collector_nothing_per_event() -> None:
    # A finished log is kept for reconnects, its blocks holding each event's mode and name: in
    # lists, every full collection walked them name by name (with 20,000-event runs' logs kept,
    # a third of the collector's time). What the collector tracks of a log is per block.
    bus = MemoryEventBus()
    for _ in range(50):
        seq = await bus.publish("r", _items(*(str(n) for n in range(100))))
        [b async for b in bus.subscribe("r", seq - 100, wait=False)]  # a block a read
    await bus.close("r")
    gc.collect()
    blocks = bus._logs["r"].blocks
    assert sum(len(block) for block in blocks) == 5_000
    tracked = [s for block in blocks for s in (block.modes, block.names) if gc.is_tracked(s)]
    assert tracked == []
    await bus.aclose()


async def test_kept_logs_go_when_their_time_is_up_oldest_first() -> None:
    # One timer for every kept log, at the oldest's time: each log goes once keep_seconds
    # have passed since its close, not before, and the later ones stay until theirs.
    keep = 0.3
    bus = MemoryEventBus(keep_seconds=keep)
    loop = asyncio.get_running_loop()
    closed: dict[str, float] = {}
    for name in ("a", "b", "c"):
        await bus.publish(name, _items("1", "2"))
        await bus.close(name)
        closed[name] = loop.time()
        await asyncio.sleep(keep / 3)
    gone: dict[str, float] = {}
    async with asyncio.timeout(10):
        while len(gone) < 3:
            for name in closed:
                if name not in gone and await bus.last_seq(name) == 0:
                    gone[name] = loop.time()
            await asyncio.sleep(0.01)
    for name in closed:  # (a millisecond early at most: uvloop's timers run that early)
        assert gone[name] >= closed[name] + keep - 0.001, f"{name} went before its time"
    assert gone["a"] <= gone["b"] <= gone["c"]
    assert bus.retained_bytes == 0
    await bus.aclose()
