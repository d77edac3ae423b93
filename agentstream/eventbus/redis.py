"""The Redis Streams event bus: one stream per run, shared by every process of a deployment."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from itertools import accumulate, count
from typing import Any, TypeVar, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentstream import metrics
from agentstream.eventbus.base import Batch, BusUnavailable, Event, EventsEvicted
from agentstream.eventbus.redis_reads import Reads, Watch
from agentstream.eventbus.redis_reads import is_marker as _is_marker
from agentstream.eventbus.redis_reads import parse_id as _parse
from agentstream.protocol import frames_of

log = logging.getLogger("agentstream.eventbus")

END_MODE = "__end__"
KEY_PREFIX = "agentstream:run:"
# Entries per read: a replay of a long log arrives in batches, not one reply. 32 entries of up
# to ENTRY_MOST events: at most 8,192 events a read (a model's reply: 8 MB of 1 KB tokens, 128
# entries would be 32 MB, and a replay's reads are held until sent); a paced run's log, an
# entry per event, 32 events a read (its full 50,000 in about 1,600 reads).
_CHUNK = 32
# The most events one entry holds (a model's reply published at once goes in several).
ENTRY_MOST = 256
# A waiting reader blocks in Redis this long, then blocks again; a finite block lets the socket
# timeout (Redis() has one by default) find a dead connection instead of waiting forever.
_BLOCK_SECONDS = 20.0

# A log's events go in entries of up to ENTRY_MOST events each, a publish's batch in as few as
# it takes: an entry's id is its last event's, "n-0"; its fields are "h", the JSON of the
# events' modes, names and data lengths, the lengths of the data ends they share and which one
# each has ([[mode...], [name...], [length...], [length...], [n...] or null], see
# _shared_ends), and "d", the shared ends then the data, end to end. (An entry per event cost
# Redis 3 us an event, most of a token's publish, and each reader a reply element per field.)
# An entry of fields "mode", "name" and "data" is one event (as an older version wrote them):
# readers take both. Closing the log after event n appends the end marker "n-1". Redis rejects
# any id not above the newest entry, and the next event after a marker is "(n+1)-0", so a new
# attempt continues the ids and a marker never takes one. The ids are assigned inside one
# script: several processes append to the same log (a thread's log gets its runs from every
# API process) and each batch still lands whole, with no id given twice. Trimming by MINID
# keeps at least the newest max_events events (whole entries: up to ENTRY_MOST - 1 more),
# whatever the markers among them.
#
# Outages: a publish is retried until Redis answers again, so it must be idempotent. KEYS[2], a
# hash beside the log, keeps each publisher's last batch token and the id it ended at: a retry of
# a batch that did land (its reply was lost) returns that id instead of appending it twice. And
# ARGV[2], the last id this publisher was given, is a floor: should Redis come back empty (a
# restart without persistence), the log goes on from there, so no id a reader has seen is
# given to another event; what was lost before it, a reader is told (EventsEvicted).
_APPEND = """
local function append(first)
  local last = redis.call('HGET', KEYS[2], ARGV[3])
  if last then
    local token, done = string.match(last, '^(.-):(%d+)$')
    if token == ARGV[4] then return tonumber(done) end
  end
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  local seq = tonumber(ARGV[2])
  if top then seq = math.max(seq, tonumber(string.match(top[1], '^%d+'))) end
  for i = first, #ARGV, 3 do
    seq = seq + tonumber(ARGV[i])
    redis.call('XADD', KEYS[1], string.format('%d-0', seq), 'h', ARGV[i + 1], 'd', ARGV[i + 2])
  end
  local oldest = seq - tonumber(ARGV[1]) + 1
  if oldest > 1 then redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', oldest)) end
  redis.call('PERSIST', KEYS[1])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ':' .. seq)
  redis.call('PERSIST', KEYS[2])
  return seq
end
"""
# ARGV[at] counts the entries after it that go first only into a log with nothing in it (see
# lead()): where the entries to append begin. Each entry is three arguments: its count of
# events, "h" and "d".
_LED = """
local function after_lead(at)
  local lead = tonumber(ARGV[at])
  if lead > 0 and redis.call('XLEN', KEYS[1]) > 0 then return at + 1 + 3 * lead end
  return at + 1
end
"""
_PUBLISH = _APPEND + _LED + "return append(after_lead(5))"
# To a log with nothing in it only; if it has an entry (an event or an end), minus its id.
_PUBLISH_FIRST = (
    _APPEND
    + """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if top then return -tonumber(string.match(top[1], '^%d+')) end
return append(5)
"""
)

# A second close in a row adds no second marker; either way the log expires keep_ms later.
# floor is the closer's, as for _PUBLISH: an emptied log still ends after the last id. Returns
# n of the log's end marker "n-1".
_END = """
local function close(floor, keep_ms, mode)
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  local seq, closed = floor, false
  if top then
    local n, k = string.match(top[1], '^(%d+)-(%d+)$')
    if tonumber(n) >= seq then seq, closed = tonumber(n), k ~= '0' end
  end
  if not closed then
    redis.call('XADD', KEYS[1], string.format('%d-1', seq), 'mode', mode, 'name', '', 'data', '')
  end
  redis.call('PEXPIRE', KEYS[1], keep_ms)
  redis.call('PEXPIRE', KEYS[2], keep_ms)
  return seq
end
"""
_CLOSE = _END + "close(tonumber(ARGV[3]), ARGV[1], ARGV[2])"
# A run's last events and the end of its log in one round trip (and one reply to its readers):
# ARGV as for _PUBLISH, with the close's keep_ms and end mode before the count of led items. A
# retry whose batch had landed appends nothing and closes again, which adds nothing. Returns the
# last event's id and the end marker's n (the same unless another publisher came after).
_FINISH = (
    _APPEND
    + _LED
    + _END
    + "local last = append(after_lead(7)) return {last, close(last, ARGV[5], ARGV[6])}"
)
# How long publishes and reads ride out Redis not answering before they give up.
OUTAGE_SECONDS = 30.0
# Floors remembered per process (run and thread logs): the newest this many.
_FLOORS = 10_000

_Entry = tuple[bytes, list[bytes]]
_T = TypeVar("_T")


class _Counted:
    """Counts each request its connection sends (metrics.REDIS_ROUND_TRIPS): a command, or a
    whole pipeline, is one send and one round trip. And packs a command of plain arguments in
    one go: a publish carries three arguments per event, and redis-py's own packing (an
    encoder call and a join per argument, to cut very large values into chunks) took about a
    sixth of the distributed server's CPU on a burst of custom events."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        metrics.REDIS_ROUND_TRIPS.inc()
        limit = self.socket_timeout
        if not limit:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        # Under a socket timeout redis-py sends through asyncio.wait_for, which on Python 3.11
        # runs the send in a task of its own and wakes the caller through a callback: two
        # loop turns more a command, and under load a turn of a busy loop is a millisecond
        # or more (a distributed threaded run's close, a command after its run's end stored,
        # waited 3.0 ms p50 and 15.9 ms p99 for it; 2.1 and 7.5 ms without). The same
        # timeout, kept here with asyncio.timeout, costs no turn; redis-py's own then finds
        # none set. (Its reads already time out without a task.)
        self.socket_timeout = None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            # The send was cancelled, and redis-py dropped the connection as it does on a
            # timeout of its own: the same error as its own.
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit

    def pack_command(self, *args: Any) -> list[bytes]:
        packed = _pack(args)
        if packed is None:  # a command name with a space, a float...
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]
        return packed


# An argument this large is sent as a part of its own rather than copied into the command's
# buffer (redis-py does the same with its own smaller cut-off).
_OWN_PART = 1 << 16


def _pack(args: tuple[Any, ...]) -> list[bytes] | None:
    """RESP for a command whose arguments are all bytes, str or int, as parts to send in
    order; None for anything else. Commands of any size: a publish of a model's whole
    reply at once (thousands of events, megabytes) went through redis-py's packing, an
    encoder call per argument, at a tenth of the distributed server's CPU on such a reply."""
    if not args or type(args[0]) is not str or " " in args[0]:  # "CONFIG GET": two words
        return None
    parts: list[bytes] = []
    pending = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is int:
            arg = b"%d" % arg
        elif kind is not bytes:
            return None
        if len(arg) > _OWN_PART:
            pending.append(b"$%d\r\n" % len(arg))
            parts += (b"".join(pending), arg)
            pending = [b"\r\n"]
        else:
            pending.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    parts.append(b"".join(pending))
    return parts


def _raw(response: Any, **options: Any) -> Any:
    return response


def counted(client: Redis) -> Redis:
    """The client, its pool's connections counting their requests (the class its URL chose:
    plain, TLS or a Unix socket), and the stream reads answered as the parser gives them
    (lists of [id, [field, value, ...]]): redis-py's own shaping into dicts cost a fifth of a
    reader's time per event."""
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Counted{base.__name__}", (_Counted, base), {})
    for command in ("XRANGE", "XREVRANGE", "XREAD"):
        client.set_response_callback(command, _raw)
    return client


class RedisEventBus:
    instant = False

    def __init__(
        self,
        url: str,
        max_events: int = 50_000,
        keep_seconds: float = 600.0,
        *,
        key_prefix: str = KEY_PREFIX,
        read_lanes: int = 256,
        outage_seconds: float = OUTAGE_SECONDS,
        block_seconds: float = _BLOCK_SECONDS,
    ) -> None:
        # No retries inside redis-py: ours (_retrying) resend a publish with its token, so a
        # batch whose reply was lost is not appended twice.
        self._redis = counted(Redis.from_url(url, retry=Retry(NoBackoff(), 0)))
        # Waiting readers share read_lanes connections of their own (redis_reads), each with
        # one XREAD BLOCK out at a time: however many readers wait, publishers get through.
        # A read that outlives its block by far is a connection gone silent. (_Counted sends
        # under this timeout without redis-py's asyncio.wait_for, which on Python 3.11 swallowed
        # a cancel landing as the send completed: a lane being closed sat out its whole block.)
        readers = counted(
            Redis.from_url(
                url,
                max_connections=read_lanes,
                socket_timeout=block_seconds + 10,
                retry=Retry(NoBackoff(), 0),
            )
        )
        self._publish = self._redis.register_script(_PUBLISH)
        self._publish_first = self._redis.register_script(_PUBLISH_FIRST)
        self._close = self._redis.register_script(_CLOSE)
        self._finish = self._redis.register_script(_FINISH)
        self._max_events = max_events
        self._keep_ms = max(int(keep_seconds * 1000), 1)
        self._prefix = key_prefix
        self._outage_seconds = outage_seconds
        self._block_ms = int(block_seconds * 1000)
        self._publisher = uuid.uuid4().hex  # this process, as a publisher
        wakes = f"{key_prefix}reads:{self._publisher}:"
        self._reads = Reads(
            readers, self._redis, wakes, read_lanes, self._block_ms, _CHUNK, self._current
        )
        self._readers = readers
        self._tokens = itertools.count(1)  # its batches
        self._floors: OrderedDict[str, int] = OrderedDict()
        self._leads: dict[str, Sequence[tuple[str, str, bytes]]] = {}  # see lead()
        self._hiding: dict[str, set[Watch]] = {}  # see close(): this process's readers that hide
        # The logs of runs whose executor is here (own(): their readers here are handed their
        # publishes), each with its run's id.
        self._own: dict[str, str] = {}

    def pool_stats(self) -> tuple[int, int, int]:
        """(max, in use, idle) connections of the publishing pool, for /metrics. redis-py
        keeps these counts in the pool's private lists; absent, they read as 0."""
        pool: Any = self._redis.connection_pool
        idle = len(getattr(pool, "_available_connections", ()))
        in_use = len(getattr(pool, "_in_use_connections", ()))
        return int(getattr(pool, "max_connections", 0) or 0), in_use, idle

    def key(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:events"

    async def publish(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        led = self._leads.get(run_id, ())
        args = self._batch(run_id, items, led=led)
        keys = [self.key(run_id), self._meta(run_id)]
        seq: int = await self._retrying(lambda: self._publish(keys=keys, args=args))
        self._leads.pop(run_id, None)
        self._remember(run_id, seq)
        if keys[0] in self._own:
            self._hand(keys[0], seq, items, args)
        return seq

    def own(self, run_id: str) -> None:
        self._own[self.key(run_id)] = run_id

    def release(self, run_id: str) -> None:
        key = self.key(run_id)
        if self._own.pop(key, None) is not None:
            self._reads.release(key)

    def _current(self, key: str, seen: int) -> bool:
        """Whether this process's executor writes the log at key, and a reader through event
        `seen` has every event it published there (a publish not yet answered is handed over
        when it is: Reads.feed). Not while this process knows no floor of it (none published
        yet, or forgotten among _FLOORS others): the reader reads, and the next publish it
        is through is handed over."""
        run_id = self._own.get(key)
        floor = None if run_id is None else self._floors.get(run_id)
        return floor is not None and seen >= floor

    def _hand(
        self,
        key: str,
        seq: int,
        items: Sequence[tuple[str, str, bytes]],
        args: list[str | bytes | int],
        end: int | None = None,
    ) -> None:
        """Hands this process's readers of an owned log (at key) what a publish of items (its
        arguments, `args`, ending with their entries) appended, the last at `seq`; with
        `end`, the log's end marker after them too."""
        before = seq - len(items)
        count = -(-len(items) // ENTRY_MOST)
        entries: list[_Entry] = []
        at = before
        tail = args[len(args) - 3 * count :]
        for i in range(0, len(tail), 3):
            at += cast(int, tail[i])
            entries.append(
                (b"%d-0" % at, [b"h", cast(bytes, tail[i + 1]), b"d", cast(bytes, tail[i + 2])])
            )
        if end is not None:
            entries.append(
                (b"%d-1" % end, [b"mode", END_MODE.encode(), b"name", b"", b"data", b""])
            )
        if entries:  # (a publish of nothing appends nothing)
            self._reads.feed(key, before, entries)

    def lead(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> None:
        if not items:
            self._leads.pop(run_id, None)
            return
        if len(self._leads) >= _FLOORS:  # runs that never published: the oldest forgotten
            self._leads.pop(next(iter(self._leads)))
        self._leads[run_id] = items

    async def publish_first(self, run_id: str, items: Sequence[tuple[str, str, bytes]]) -> int:
        if self._floors.get(run_id, 0) > 0:
            # This process has published to the log (`dev`: the run's executor was first), so
            # the log has an event: the round trip would only say so.
            return 0
        args = self._batch(run_id, items)
        keys = [self.key(run_id), self._meta(run_id)]
        seq: int = await self._retrying(lambda: self._publish_first(keys=keys, args=args))
        # Either way the floor of this publisher's next publish (see _APPEND): the log's end.
        self._remember(run_id, abs(seq))
        if seq > 0 and keys[0] in self._own:
            self._hand(keys[0], seq, items, args)
        return max(seq, 0)

    async def close(self, run_id: str, items: Sequence[tuple[str, str, bytes]] = ()) -> None:
        keys = [self.key(run_id), self._meta(run_id)]
        led = self._leads.get(run_id, ())
        last = self._floors.get(run_id)
        if not led and last is not None:
            self._end_here(run_id, last, {mode for mode, _, _ in items})
        if items or led:
            args = self._batch(run_id, items, self._keep_ms, END_MODE, led=led)
            last, end = await self._retrying(lambda: self._finish(keys=keys, args=args))
            self._leads.pop(run_id, None)
            self._floors.pop(run_id, None)
            if keys[0] in self._own:
                if end == last:
                    self._hand(keys[0], last, items, args, end)
                else:  # another publisher's events after ours: read from the log
                    self._reads.release(keys[0])
            return
        self._reads.release(keys[0])  # what the close adds is read from the log
        close_args: list[str | int] = [self._keep_ms, END_MODE, self._floors.pop(run_id, 0)]
        await self._retrying(lambda: self._close(keys=keys, args=close_args))

    def end_notice(self, run_id: str, modes: set[str]) -> str | None:
        last = self._floors.get(run_id)
        if last is None or self._leads.get(run_id):  # (led events go out with the close)
            return None
        return f"{self._publisher} {run_id} {last} {','.join(sorted(modes))}"

    def ended(self, notice: str) -> None:
        """See EventBus.ended. A notice is `publisher run_id last modes`, as end_notice()
        makes it (modes comma-separated); one that is not is ignored, as is one of this
        process's own, whose close ends its readers here itself (_end_here)."""
        parts = notice.split(" ")
        if len(parts) != 4 or parts[0] == self._publisher or not parts[2].isdigit():
            return
        ended = self._end_here(parts[1], int(parts[2]), set(filter(None, parts[3].split(","))))
        if ended:
            metrics.STREAM_ENDS_NOTICED.inc(ended)

    def _end_here(self, run_id: str, last: int, modes: set[str]) -> int:
        """Ends this process's readers of the log that hide every mode the close adds once they
        have read through `last`, its closer's last publish to it, before Redis has the close:
        this process's, or another's that told ended() when it stored the run's end.

        A run's stream (SSE) hides its result, the only event of a v1 run's close: those of a
        run executed here (`dev` on Redis, API and worker in one process) end as soon as the run's
        end is stored, without the close's round trip to Redis and the wake-up of the lane
        that reads it (`benchmarks.cpu --threaded --concurrent 50 --distributed`, two pairs:
        the stream's close after its last event 5.7 / 6.5 -> 4.7 / 4.9 ms p50, 19.2 / 20.5 ->
        14.2 / 14.0 ms p99). A log's closer published its last event: the run's executor, or
        the API process cancelling a run no worker took (its log holds that process's first
        event alone, if anything); a process that published nothing to it ends nobody here.
        In `serve`, whose streams read the runs of worker processes, the notice comes from the
        database at the end's commit (Storage.ended_notices), not a round trip to Redis after
        it from a worker that shares the machine with every other run's work. Returns how
        many readers it ended."""
        ended = 0
        for watch in self._hiding.get(run_id, ()):
            if modes <= watch.hidden and watch.end is None:
                watch.end = last
                watch._wake()
                ended += 1
        return ended

    def _batch(
        self,
        run_id: str,
        items: Sequence[tuple[str, str, bytes]],
        *more: str | int,
        led: Sequence[tuple[str, str, bytes]] | None = None,
    ) -> list[str | bytes | int]:
        """_APPEND's arguments: the log's bound, this publisher's floor and a new batch token,
        then any more (the script's own), then, given led (even empty), the count of its
        entries and its entries (see lead()), and the items' entries."""
        args: list[str | bytes | int] = [self._max_events, self._floors.get(run_id, 0)]
        args += (self._publisher, next(self._tokens), *more)
        if led is not None:
            led_args = _entries_of(led)
            args.append(len(led_args) // 3)
            args += led_args
        args += _entries_of(items)
        return args

    async def last_seq(self, run_id: str) -> int:
        top = await self._retrying(lambda: self._top(self.key(run_id)))
        return 0 if top is None else _seq(top)

    async def subscribe(
        self,
        run_id: str,
        after: int | None,
        *,
        wait: bool = True,
        held: bool = False,
        hidden: frozenset[str] = frozenset(),
    ) -> AsyncIterator[Sequence[Event]]:
        key = self.key(run_id)
        seen = await self.last_seq(run_id) if after is None else max(after, 0)
        pos = b"%d-0" % seen
        # A reader from the start, or from an event it knows the log holds, has no end of the
        # log to be beyond (an end after that event is an entry after it): the first read may
        # block at once (it returns at once what there is), saving the look that finds out.
        block = wait and (seen == 0 or held)
        watch: Watch | None = None
        try:
            while True:
                ended = False
                if block:
                    if watch is None:
                        # Handed this process's publishes from the start when the run's
                        # executor is here and it has read through the last of them.
                        local = self._current(key, seen) and not _is_marker(pos)
                        watch = self._reads.watch(key, pos, hidden, local=local)
                        if hidden:
                            self._hiding.setdefault(run_id, set()).add(watch)
                    entries = await self._retrying(partial(self._reads.read, watch, pos))
                    if not entries:  # its log's end, told by this process (_end_here)
                        return
                else:
                    entries, ended = await self._retrying(partial(self._read, key, pos, wait))
                if not entries:  # only a read that does not block returns nothing
                    if not wait or _is_marker(pos) or ended:
                        return
                    block = True
                    continue
                pos = entries[-1][0]
                events = _batch(entries, seen)
                if events:
                    seen = events[-1].seq
                    yield events
                # A read short of _CHUNK got all there was: when it ends at a marker (or the
                # reader does not wait), reading on would only ask again. A marker stops the
                # reader only while it is the last entry: past it, look once (without
                # blocking) for a new attempt's events.
                if len(entries) < _CHUNK and (not wait or _is_marker(pos)):
                    return
                block = wait and not _is_marker(pos)
        finally:
            if watch is not None:
                self._reads.stop(watch)
                hiding = self._hiding.get(run_id)
                if hiding is not None:
                    hiding.discard(watch)
                    if not hiding:
                        del self._hiding[run_id]

    async def delete(self, run_id: str) -> None:
        self._floors.pop(run_id, None)
        self._leads.pop(run_id, None)
        await self._retrying(lambda: self._redis.delete(self.key(run_id), self._meta(run_id)))

    async def aclose(self) -> None:
        await self._reads.aclose()
        await self._readers.aclose()
        await self._redis.aclose()

    def _meta(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:publishers"

    def _remember(self, run_id: str, seq: int) -> None:
        # Never lower: a log's ids only grow, and two publishes to it from this process (the
        # request streaming a run, its first event; the run's executor, the rest) may be
        # answered in either order. Lowered, the close here ended its readers early (_end_here).
        self._floors[run_id] = max(seq, self._floors.get(run_id, 0))
        self._floors.move_to_end(run_id)
        if len(self._floors) > _FLOORS:
            self._floors.popitem(last=False)

    async def _retrying(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """Runs command; while Redis does not answer, again (backing off to 1 s) for up to
        outage_seconds, then BusUnavailable."""
        try:
            return await command()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            failure: Exception = exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._outage_seconds
        delay = 0.05
        while loop.time() + delay <= deadline:
            log.warning("Redis did not answer (%s); retrying in %.2f s", failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                return await command()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failure = exc
        raise BusUnavailable(
            f"Redis did not answer for {self._outage_seconds:.0f} s: {failure}"
        ) from failure

    async def _top(self, key: str) -> bytes | None:
        entries = _entries(await self._redis.xrevrange(key, count=1))
        return entries[0][0] if entries else None

    async def _read(self, key: str, pos: bytes, wait: bool) -> tuple[list[_Entry], bool]:
        """Entries after pos (up to _CHUNK) and, for a reader that would wait, whether the log
        was closed before pos (a reader that starts beyond the end of a closed log has nothing
        to wait for): one round trip either way."""
        if not wait:
            found = await honour_cancel(self._redis.xrange(key, b"(" + pos, "+", count=_CHUNK))
            return _entries(found), False
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, b"(" + pos, "+", count=_CHUNK)
            pipe.xrevrange(key, count=1)
            found, newest = await honour_cancel(pipe.execute())
        top = _entries(newest)[0][0] if newest else None
        ended = top is not None and _is_marker(top) and _parse(top) < _parse(pos)
        return _entries(found), ended


async def honour_cancel(awaitable: Awaitable[_T]) -> _T:
    """Await, then raise a cancel that arrived meanwhile even if something swallowed it.

    On Python 3.11 asyncio.wait_for (which redis-py awaited inside every command sent under
    a socket timeout, before _Counted kept the timeout itself) returns its result instead of
    raising when a cancel lands just as its inner await completes; the task is left
    "cancelling" and a reader whose client went away would go on reading. Kept as a guard.
    """
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    result = await awaitable
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


def _seq(entry_id: bytes) -> int:
    return _parse(entry_id)[0]


def _entries_of(items: Sequence[tuple[str, str, bytes]]) -> list[int | bytes]:
    """Items as _APPEND's entries: for each ENTRY_MOST of them, their count, "h" and "d"."""
    args: list[int | bytes] = []
    for at in range(0, len(items), ENTRY_MOST):
        part = items[at : at + ENTRY_MOST]
        modes, names, datas = zip(*part, strict=True)
        parts, shared, which = _shared_ends(datas)
        lengths = list(map(len, parts))
        head = orjson.dumps((modes, names, lengths, list(map(len, shared)), which))
        args += (len(part), head, b"".join((*shared, *parts)))
    return args


# A data's end that others of its entry share is sent once, when it is at least this long.
_SHARED_LEAST = 64


def _shared_ends(datas: Sequence[bytes]) -> tuple[Sequence[bytes], list[bytes], list[int] | None]:
    """Each data as (part, end), the ends its entry shares kept once: the parts, the shared
    ends, and for each data which one is its end (1 for the first; 0: none). A model's tokens
    are each [message, metadata], the metadata the same for all of a call's tokens and about
    two thirds of each (the run's ids, the node, the versions): sent once an entry, a token's
    publish and each read of it carry a third of the bytes (Redis reads a script's arguments
    at about a nanosecond a byte). The end is a data's last `,{` on (any split is exact: a
    reader joins part and end). None when no end is shared: the data as they are."""
    if sum(map(len, datas)) < 2 * _SHARED_LEAST * len(datas):  # short data: custom events
        return datas, [], None
    parts: list[bytes] = []
    shared: list[bytes] = []
    which: list[int] = []
    known: dict[bytes, int] = {}
    end, n = b"", 0  # the last end found, and its number
    for data in datas:
        if n and data.endswith(end):
            parts.append(data[: len(data) - len(end)])
            which.append(n)
            continue
        at = data.rfind(b",{")
        if at < 0 or len(data) - at < _SHARED_LEAST:
            parts.append(data)
            which.append(0)
            continue
        end = data[at:]
        n = known.get(end, 0)
        if not n:
            shared.append(end)
            n = known[end] = len(shared)
        parts.append(data[:at])
        which.append(n)
    if not shared:
        return datas, [], None
    return parts, shared, which


_Events = tuple[int, list[str], list[str], list[bytes]]


def _unpacked(entry_id: bytes, fields: list[bytes]) -> _Events:
    """An entry's events: the first one's id, their modes, names and data."""
    last = _seq(entry_id)
    if len(fields) == 4 and fields[0] == b"h" and fields[2] == b"d":
        modes, names, lengths, shared, which = orjson.loads(fields[1])
        ends = list(accumulate(shared + lengths))
        blob = fields[3]
        pieces = list(map(blob.__getitem__, map(slice, [0, *ends[:-1]], ends)))
        datas = pieces[len(shared) :]
        if which is not None:
            table = [b"", *pieces[: len(shared)]]
            datas = list(map(bytes.__add__, datas, map(table.__getitem__, which)))
        return last - len(datas) + 1, modes, names, datas
    # One event, as an older version wrote them (fields in any order).
    found = dict(zip(fields[::2], fields[1::2], strict=True))
    return last, [found[b"mode"].decode()], [found[b"name"].decode()], [found[b"data"]]


def _batch(entries: list[_Entry], seen: int) -> Sequence[Event]:
    """The events after seen among entries, read after the entry that holds event seen (the
    first may hold some before it), markers left out: one Batch when their ids follow each
    other (always, for a log our publishes wrote), otherwise one Event at a time. Events after
    seen that the log no longer keeps raise EventsEvicted: ids have no gaps, so the first entry
    tells, whatever the trimming did (a marker "n-1" means event n existed)."""
    modes: list[str] = []
    names: list[str] = []
    datas: list[bytes] = []
    others: list[Event] = []  # events whose ids do not follow (never from our publishes)
    m: list[str]
    n: list[str]
    d: list[bytes]
    for entry_id, fields in entries:
        if _is_marker(entry_id):
            start, m, n, d = _seq(entry_id) + 1, [], [], []
        else:
            start, m, n, d = _unpacked(entry_id, fields)
        if start > seen + 1 and not (datas or others):
            raise EventsEvicted(seen, start)
        if start <= seen:  # what the reader has of the first entry, read from inside it
            skip = seen + 1 - start
            start, m, n, d = start + skip, m[skip:], n[skip:], d[skip:]
        if not d:
            continue
        if start != seen + 1 + len(datas):
            others += map(Event, count(start), m, n, frames_of(start, n, d))
            continue
        modes += m
        names += n
        datas += d
    if not datas:
        return others
    batch = Batch(seen + 1, list(frames_of(seen + 1, names, datas)), modes, names)
    return [*batch, *others] if others else batch


def _entries(reply: Any) -> list[_Entry]:
    # The client types entries loosely (str or bytes); without decode_responses they are bytes.
    return list(reply or ())
