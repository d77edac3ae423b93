"""A process's waiting reads of Redis streams: lanes, each one XREAD BLOCK over every log its
readers wait on.

A reader that has read all there is watches its log (Watch) until it stops. Lanes read for
their watches and keep what they read until each reader takes it, reading on meanwhile: a
reader that comes back finds its next events waiting instead of asking again. Ten thousand
idle readers (a chat UI holds its thread's stream open) hold a few connections, not ten
thousand; every reader of one log (joiners of a run) shares the lane that reads it, one read
for all. A new watch goes to a lane that is not reading, else to a new lane while there are
fewer than `lanes`, else to the lane with the fewest; a lane that is reading hears of a new
watch through its wake-up stream (one entry), whichever of the two Redis sees first.

A watch of a log this process writes (its run's executor is here: `dev` on Redis) is handed
each publish as Redis answers it (feed), and while it is, its lane leaves it out of its reads
(Watch.local): reading back what this process had just written was three or four of the 9-10
round trips to Redis of a threaded run streamed in `dev` (6 since). A watch that a publish
from elsewhere left behind, or whose writer here stopped, goes back to its lane's reads, from
where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentstream.eventbus.base import BusUnavailable, EventsEvicted

Entry = tuple[bytes, list[bytes]]
_WAKE_KEEP_MS = 86_400_000  # a dead process's wake-up streams go a day after their last use


def parse_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


def is_marker(entry_id: bytes) -> bool:
    return not entry_id.endswith(b"-0")


def _after(entries: list[Entry], pos: bytes) -> list[Entry]:
    """The entries with ids past pos (entries read from before it, for another reader)."""
    if not entries or parse_id(entries[0][0]) > parse_id(pos):
        return entries
    mine = parse_id(pos)
    return [e for e in entries if parse_id(e[0]) > mine]


def stream_entries(reply: Any) -> list[tuple[bytes, list[Entry]]]:
    """XREAD's reply as (key, entries) pairs: a map on RESP3, a list of pairs on RESP2."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else [(k, e) for k, e in reply]


class Watch:
    """One reader's wait on one log: what its lane read after `pos`, not yet taken."""

    __slots__ = (
        "end",
        "error",
        "heard",
        "hidden",
        "key",
        "lane",
        "local",
        "paused",
        "pos",
        "taken",
        "waiter",
    )

    def __init__(self, key: str, pos: bytes, hidden: frozenset[str] = frozenset()) -> None:
        self.key = key
        self.hidden = hidden  # modes its reader leaves out (EventBus.subscribe)
        # The last event of its log, once this process closed the log with only hidden events
        # after it (RedisEventBus.close): its reader ends once it has read through it.
        self.end: int | None = None
        self.pos = pos  # read through (by the lane, or by the reader itself)
        self.taken: list[Entry] = []  # read, waiting for the reader
        self.lane: _Lane | None = None
        self.paused = False  # not read on: a full buffer, or an end (a marker) read
        self.local = False  # handed this process's publishes (Reads.feed), not read for
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.heard = asyncio.get_running_loop().time()  # when its lane last read it something

    def _give(self, entries: list[Entry], chunk: int, since: bytes) -> None:
        """Entries a read from `since` found. A watch behind `since` came (or came back)
        after the read was sent: those are not its next entries, and the lane's next read
        starts from its position (given them, it skipped the ones in between and was told
        they were no longer kept)."""
        if self.pos != since and parse_id(self.pos) < parse_id(since):  # (most: one reader)
            return
        entries = _after(entries, self.pos)  # another watch of the log may have been behind
        if not entries:
            return
        self.taken += entries
        self.pos = entries[-1][0]
        self.heard = asyncio.get_running_loop().time()
        if len(self.taken) >= chunk or is_marker(self.pos):
            self.paused = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.lane = None
        # Out of its lane, it is handed nothing (Reads.feed finds watches by lane): back, it
        # reads for itself, whatever was handed meanwhile.
        self.local = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Reads:
    """The lanes of one process (one RedisEventBus): watches made, read for, stopped."""

    def __init__(
        self,
        readers: Redis,
        waker: Redis,
        wake_prefix: str,
        lanes: int,
        block_ms: int,
        chunk: int,
        current: Callable[[str, int], bool] = lambda key, n: False,
    ) -> None:
        self._readers = readers  # a pool of at most `lanes` connections
        # Whether this process writes the log at key and a reader through event n has all it
        # wrote: such a watch need not be read for (feed hands it the rest).
        self.current = current
        self._waker = waker
        self._wake_prefix = wake_prefix
        self._max_lanes = lanes
        self._block_ms = block_ms
        self._quiet = block_ms / 1000
        self._chunk = chunk
        self._lanes: list[_Lane] = []
        self._home: dict[str, _Lane] = {}  # a watched log's lane
        self._tasks: set[asyncio.Task[None]] = set()  # wake-ups and checks in flight

    def watch(
        self, key: str, pos: bytes, hidden: frozenset[str] = frozenset(), *, local: bool = False
    ) -> Watch:
        watch = Watch(key, pos, hidden)
        watch.local = local
        self._attach(watch)
        return watch

    async def read(self, watch: Watch, pos: bytes) -> list[Entry]:
        """The entries after pos (the reader's position), waiting for some if there are none;
        none once the reader has read through its log's end (Watch.end)."""
        if parse_id(pos) > parse_id(watch.pos):  # the reader read on by itself
            watch.taken, watch.pos = [], pos
        else:
            watch.taken = _after(watch.taken, pos)
        while not watch.taken:
            if watch.end is not None and parse_id(watch.pos)[0] >= watch.end:
                return []
            if watch.error is not None:
                error, watch.error = watch.error, None
                raise error
            if watch.lane is None:
                self._attach(watch)
            elif watch.paused:
                watch.paused = False
                if not watch.local:
                    watch.lane.kick()
            watch.waiter = asyncio.get_running_loop().create_future()
            try:
                await watch.waiter
            finally:
                watch.waiter = None
        found, watch.taken = watch.taken, []
        return found

    def feed(self, key: str, before: int, entries: list[Entry]) -> None:
        """This process wrote `entries` (at least one) to the log at `key`, the events after
        `before`. Each watch that has read through `before` is given them, and is local from
        then on, as is one its lane gave them first (Redis answers a waiting read and the
        publish at once); any other that was local reads again: something it has not been
        handed came first. A watch whose reader has not taken what it holds (paused) is handed
        nothing more: it reads again when it comes back, as a lane would have paused it, so a
        slow client holds no more than a read's."""
        lane = self._home.get(key)
        if lane is None:
            return
        last = parse_id(entries[-1][0])
        for watch in lane.watches.get(key, ()):
            if watch.paused:
                if watch.local:
                    self.unlocal(watch)
                continue
            at = parse_id(watch.pos)
            if at[0] == before:
                watch.local = True
                watch._give(entries, self._chunk, watch.pos)
            elif at == last:
                watch.local = True
            elif watch.local:
                self.unlocal(watch)

    def unlocal(self, watch: Watch) -> None:
        """The watch is read for again (its log's writer here stopped, or it fell behind)."""
        watch.local = False
        if watch.lane is not None and not watch.paused:
            watch.lane.kick()

    def release(self, key: str) -> None:
        """No more publishes to the log at `key` are handed over: its local watches read it."""
        lane = self._home.get(key)
        if lane is None:
            return
        for watch in lane.watches.get(key, ()):
            if watch.local:
                self.unlocal(watch)

    def stop(self, watch: Watch) -> None:
        lane, watch.lane = watch.lane, None
        if lane is not None:
            lane.remove(watch)
            if lane.count_of(watch.key) == 0 and self._home.get(watch.key) is lane:
                del self._home[watch.key]

    def wake(self, lane: _Lane) -> None:
        self._background(lane.wake())

    def check(self, lane: _Lane, now: float) -> None:
        """Looks, for each of the lane's watches quiet for a whole block, whether its log was
        begun again below it (Redis came back empty and a publisher with no floor for it
        started over): waiting for ids past its own would skip that attempt's events without a
        word. Such a reader is told (EventsEvicted)."""
        quiet = [w for ws in lane.watches.values() for w in ws if now - w.heard >= self._quiet]
        if quiet:
            self._background(self._check(lane, quiet))

    async def _check(self, lane: _Lane, quiet: list[Watch]) -> None:
        keys = list({w.key: None for w in quiet})
        try:
            async with self._waker.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.xrevrange(key, count=1)
                tops = dict(zip(keys, await pipe.execute(), strict=True))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return  # the lane's own read hears of it
        for watch in quiet:
            top = tops[watch.key]
            if top and watch.lane is lane and parse_id(top[0][0]) < parse_id(watch.pos):
                self.stop(watch)
                watch._fail(EventsEvicted(parse_id(watch.pos)[0], 1))

    async def aclose(self) -> None:
        tasks = [lane.task for lane in self._lanes if lane.task is not None] + [*self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes:  # a reader still waiting is told, not left waiting
            lane.fail(BusUnavailable("the event bus was closed"))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def _attach(self, watch: Watch) -> None:
        watch.paused = False
        lane = self._home.get(watch.key) or self._pick()
        self._home[watch.key] = lane
        lane.add(watch)

    def _pick(self) -> _Lane:
        idle = next((lane for lane in self._lanes if lane.task is None), None)
        if idle is not None:
            return idle
        if len(self._lanes) < self._max_lanes:
            lane = _Lane(self, f"{self._wake_prefix}{len(self._lanes)}")
            self._lanes.append(lane)
            return lane
        return min(self._lanes, key=_Lane.size)


class _Lane:
    """One connection's XREAD BLOCK at a time over its watches' logs and its wake-up stream."""

    def __init__(self, reads: Reads, wake_key: str) -> None:
        self.reads = reads
        self.watches: dict[str, list[Watch]] = {}
        self.task: asyncio.Task[None] | None = None
        self.reading = False  # an XREAD out whose keys were fixed when it was sent
        self.waking = False  # a wake-up sent since
        self.wake_key = wake_key
        self.wake_id = b"0-0"
        self._size = 0

    def size(self) -> int:
        return self._size

    def count_of(self, key: str) -> int:
        return len(self.watches.get(key, ()))

    def add(self, watch: Watch) -> None:
        watch.lane = self
        self.watches.setdefault(watch.key, []).append(watch)
        self._size += 1
        if not watch.local:
            self.kick()

    def remove(self, watch: Watch) -> None:
        found = self.watches.get(watch.key)
        if found is not None and watch in found:
            found.remove(watch)
            self._size -= 1
            if not found:
                del self.watches[watch.key]

    def kick(self) -> None:
        """Have the lane's reads include its watches as they are now."""
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        elif self.reading and not self.waking:
            self.waking = True
            self.reads.wake(self)

    async def wake(self) -> None:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            async with self.reads._waker.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {b"w": b""}, maxlen=1, approximate=False)
                pipe.pexpire(self.wake_key, _WAKE_KEEP_MS)
                await pipe.execute()
        # Unanswered, the lane is failing too: its watches hear of it and come back.

    async def _run(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self.reads._quiet
        try:
            while streams := self._streams():
                streams[self.wake_key] = self.wake_id
                self.reading, self.waking = True, False
                try:
                    reply = await self.reads._readers.xread(
                        streams, count=self.reads._chunk, block=self.reads._block_ms
                    )
                except Exception as exc:  # Redis away, or an answer no watch can use
                    self.fail(exc)
                    return
                finally:
                    self.reading = False
                if task.cancelling():  # a cancel the read above swallowed: honour it
                    raise asyncio.CancelledError
                self._deliver(reply, streams)
                if (now := loop.time()) >= check_at:
                    check_at = now + self.reads._quiet
                    self.reads.check(self, now)
        finally:
            self.task = None

    def _streams(self) -> dict[Any, Any]:
        streams: dict[Any, Any] = {}
        for key, watches in self.watches.items():
            positions = [w.pos for w in watches if not w.paused and not w.local]
            if positions:
                streams[key] = min(positions, key=parse_id)
        return streams

    def _deliver(self, reply: Any, sent: dict[Any, Any]) -> None:
        """Gives each watch what the read found of its log; `sent` is where the read began."""
        chunk = self.reads._chunk
        for raw_key, entries in stream_entries(reply):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key == self.wake_key:
                self.wake_id = entries[-1][0]
                continue
            for watch in self.watches.get(key, ()):
                if not watch.paused and entries:
                    watch._give(entries, chunk, sent[key])
                    # Read up to what this process wrote, it is handed the rest (Redis
                    # answers a waiting read before the publish it waited for, often).
                    at = watch.pos
                    if not is_marker(at) and self.reads.current(key, parse_id(at)[0]):
                        watch.local = True

    def fail(self, error: BaseException) -> None:
        """Every watch of the lane hears of it; each comes back on its own (to a new read)."""
        home = self.reads._home
        for key, watches in self.watches.items():
            for watch in watches:
                watch._fail(error)
            if home.get(key) is self:
                del home[key]
        self.watches.clear()
        self._size = 0
