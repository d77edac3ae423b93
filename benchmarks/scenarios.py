"""What is measured, twice: over a client against a server, and in-process with `astream`.

Every function returns a plain dict of figures (JSON-ready). Times are seconds unless a key
says `_ms`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.pregel import Pregel
from langgraph_sdk.client import LangGraphClient

from benchmarks.clients import BenchClient, Part
from benchmarks.harness import median, percentile

AGENT_INPUT = {"messages": [{"role": "human", "content": "hi there"}]}
# A call between a client's repetitions of a figure (benchmarks.baseline: the in-process
# baseline's own repetition, beside each of them), made before each and after the last.
Pace = Callable[[], Awaitable[None]]
# The first event's samples are timed in this many blocks, each between two such calls.
TTFE_BLOCKS = 6
Graph = Pregel[Any, Any, Any, Any]


@dataclass(frozen=True)
class Sizes:
    ttfe_warmup: int
    ttfe_samples: int
    ticker_events: int
    agent_repeat: int
    throughput_reps: int
    concurrency: tuple[tuple[int, int], ...]  # (concurrent runs, rounds)
    threaded: tuple[tuple[int, int], ...]  # (concurrent create-thread-and-stream clients, rounds)
    ticks_per_run: int
    join_ticks: int
    join_delay: float
    joiners: tuple[int, ...]
    blocker_seconds: float
    memory_warmup: int
    memory_runs: int
    memory_batch: int
    memory_streams: int
    memory_stream_delay: float


FULL = Sizes(
    ttfe_warmup=20,
    ttfe_samples=300,
    ticker_events=20_000,
    agent_repeat=1000,
    throughput_reps=9,
    concurrency=((10, 20), (50, 9), (200, 9)),
    threaded=((50, 20),),  # 1,000 closes: their p99 the tenth slowest, not the third
    ticks_per_run=20,
    join_ticks=200,
    join_delay=0.01,
    joiners=(1, 10, 50),
    blocker_seconds=1.0,
    memory_warmup=100,
    memory_runs=1000,
    memory_batch=10,
    memory_streams=200,
    memory_stream_delay=0.01,
)

QUICK = Sizes(
    ttfe_warmup=3,
    ttfe_samples=20,
    ticker_events=2_000,
    agent_repeat=100,
    throughput_reps=1,
    concurrency=((10, 1), (50, 1), (200, 1)),
    threaded=((50, 1),),
    ticks_per_run=20,
    join_ticks=20,
    join_delay=0.01,
    joiners=(1, 10, 50),
    blocker_seconds=0.5,
    memory_warmup=20,
    memory_runs=100,
    memory_batch=10,
    memory_streams=200,
    memory_stream_delay=0.0,
)


def _ticker(n: int, delay: float = 0.0) -> dict[str, Any]:
    return {"n": n, "delay": delay}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- time to first event ----------------------------------------------------------------------


async def ttfe_client(
    client: BenchClient, sizes: Sizes, pace: Pace | None = None
) -> dict[str, Any]:
    """A trivial stateless run (ticker n=1): request sent -> first SSE frame (`metadata`).
    With pace, the samples are taken in TTFE_BLOCKS blocks with pace() around each, and each
    block's median is kept too (`median_ms_blocks`)."""
    samples: list[float] = []
    size = ttfe_block(sizes)
    blocks: list[list[float]] = []
    errors = 0
    for i in range(sizes.ttfe_warmup + sizes.ttfe_samples):
        if pace is not None and i >= sizes.ttfe_warmup and (i - sizes.ttfe_warmup) % size == 0:
            await pace()
            blocks.append([])
        start = time.perf_counter()
        first: float | None = None
        first_event = ""
        ticks = 0
        try:
            async for event, _ in client.stream("ticker", _ticker(1), ["custom"]):
                if first is None:
                    first = time.perf_counter() - start
                    first_event = event
                ticks += event == "custom"
                errors += event == "error"
        except Exception:
            errors += 1
            continue
        if first is None or first_event != "metadata" or ticks != 1:
            errors += 1
        elif i >= sizes.ttfe_warmup:
            samples.append(first)
            if blocks:
                blocks[-1].append(first)
    figures = _ttfe_figures(samples, errors)
    if pace is not None:
        await pace()
        figures["median_ms_blocks"] = [_ms(median(b)) if b else None for b in blocks]
    return figures


def ttfe_block(sizes: Sizes) -> int:
    """How many of the first event's samples ttfe_client takes between two paces."""
    return max(1, -(-sizes.ttfe_samples // TTFE_BLOCKS))


async def ttfe_inprocess(graph: Graph, sizes: Sizes) -> dict[str, Any]:
    """The same graph and input: `astream` called -> its first chunk."""
    samples: list[float] = []
    for i in range(sizes.ttfe_warmup + sizes.ttfe_samples):
        start = time.perf_counter()
        first: float | None = None
        async for _ in graph.astream(_ticker(1), stream_mode="custom"):
            if first is None:
                first = time.perf_counter() - start
        if first is not None and i >= sizes.ttfe_warmup:
            samples.append(first)
    return _ttfe_figures(samples, 0)


def _ttfe_figures(samples: list[float], errors: int) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "median_ms": _ms(median(samples)),
        "p99_ms": _ms(percentile(samples, 99)),
        "errors": errors,
    }


# --- event throughput -------------------------------------------------------------------------


async def _timed_stream(
    parts: AsyncIterator[Part], counted: str, firsts: list[float] | None = None
) -> tuple[int, float, int]:
    """(events named `counted`, seconds from the call to the stream's end, error events); with
    firsts, the seconds to the first of them are appended to it."""
    start = time.perf_counter()
    count = errors = 0
    async for event, _ in parts:
        if event == counted:
            count += 1
            if count == 1 and firsts is not None:
                firsts.append(time.perf_counter() - start)
        errors += event == "error"
    return count, time.perf_counter() - start, errors


async def _best_of(
    reps: int,
    once: Callable[[], Awaitable[tuple[int, float, int]]],
    expected: int,
    pace: Pace | None = None,
) -> dict[str, Any]:
    """`reps` repetitions: the median rate, every rate, and each repetition's rate in turn
    (None for one that raised), with pace() before each and after the last."""
    per_rep: list[float | None] = []
    counts: list[int] = []
    errors = 0
    for _ in range(reps):
        if pace is not None:
            await pace()
        try:
            count, seconds, errs = await once()
        except Exception:
            errors += 1
            per_rep.append(None)
            continue
        errors += errs + (count != expected)
        counts.append(count)
        per_rep.append(count / seconds)
    if pace is not None:
        await pace()
    rates = [r for r in per_rep if r is not None]
    return {
        "events": counts[0] if counts else 0,
        "reps": reps,
        "events_per_s": round(median(rates)),
        "events_per_s_all": [round(r) for r in rates],
        "events_per_s_reps": [None if r is None else round(r) for r in per_rep],
        "errors": errors,
    }


async def ticker_throughput_client(
    client: BenchClient, sizes: Sizes, pace: Pace | None = None
) -> dict[str, Any]:
    """One run emitting `ticker_events` custom events, `stream_mode=custom`."""
    n = sizes.ticker_events

    async def once() -> tuple[int, float, int]:
        return await _timed_stream(client.stream("ticker", _ticker(n), ["custom"]), "custom")

    return await _best_of(sizes.throughput_reps, once, n, pace)


async def ticker_throughput_inprocess(graph: Graph, sizes: Sizes) -> dict[str, Any]:
    n = sizes.ticker_events

    async def once() -> tuple[int, float, int]:
        parts = graph.astream(_ticker(n), stream_mode="custom")
        return await _timed_stream(_label(parts, "custom"), "custom")

    return await _best_of(sizes.throughput_reps, once, n)


async def agent_messages_inprocess(graph: Graph, sizes: Sizes) -> int:
    """How many `messages` chunks the agent streams in-process: what every client must get."""
    config: Any = {"configurable": {"repeat": sizes.agent_repeat}}
    count = 0
    async for _ in graph.astream(AGENT_INPUT, config, stream_mode="messages"):
        count += 1
    return count


async def agent_throughput_client(
    client: BenchClient, sizes: Sizes, expected: int, pace: Pace | None = None
) -> dict[str, Any]:
    """One agent run streaming a long reply, `stream_mode=messages-tuple`: `messages` events,
    and how soon the first of them came (the model makes its reply in one burst)."""
    config = {"configurable": {"repeat": sizes.agent_repeat}}
    firsts: list[float] = []

    async def once() -> tuple[int, float, int]:
        parts = client.stream("agent", AGENT_INPUT, ["messages-tuple"], config)
        return await _timed_stream(parts, "messages", firsts)

    return _with_first(await _best_of(sizes.throughput_reps, once, expected, pace), firsts)


async def agent_throughput_inprocess(graph: Graph, sizes: Sizes, expected: int) -> dict[str, Any]:
    config: Any = {"configurable": {"repeat": sizes.agent_repeat}}
    firsts: list[float] = []

    async def once() -> tuple[int, float, int]:
        parts = graph.astream(AGENT_INPUT, config, stream_mode="messages")
        return await _timed_stream(_label(parts, "messages"), "messages", firsts)

    return _with_first(await _best_of(sizes.throughput_reps, once, expected), firsts)


def _with_first(figures: dict[str, Any], firsts: list[float]) -> dict[str, Any]:
    """A throughput's figures with the median time to its first counted event."""
    figures["first_ms"] = _ms(median(firsts)) if firsts else None
    return figures


async def _label(chunks: AsyncIterator[Any], event: str) -> AsyncIterator[Part]:
    async for chunk in chunks:
        yield event, chunk


# --- concurrent streaming runs ----------------------------------------------------------------


def _raised(exc: BaseException) -> str:
    """A run's failure as the benchmark reports it: the exception's type and its message."""
    return f"{type(exc).__name__}: {exc}"[:200]


def _short(count: int, expected: int, errors: int, others: Sequence[str] = ()) -> str | None:
    """None for a run that streamed every event and no error event; else what it lacked, and
    the names of its other events (a stream that ended after its `metadata` alone says so)."""
    if count == expected and not errors:
        return None
    besides = f"; besides: {', '.join(others)}" if others else ""
    return f"{count} of {expected} events, {errors} error events{besides}"


async def _noting(
    parts: AsyncIterator[Part], counted: str, others: list[str]
) -> AsyncIterator[Part]:
    """parts, the names of those not named `counted` noted in `others` (at most 10)."""
    async for part in parts:
        if part[0] != counted and len(others) < 10:
            others.append(part[0])
        yield part


async def _concurrent(
    one: Callable[[], Awaitable[tuple[float, str | None]]],
    n: int,
    rounds: int,
    pace: Pace | None = None,
) -> dict[str, Any]:
    """`rounds` rounds of `n` runs at once, with pace() before each and after the last. The
    rate is the median of the rounds' rates: one round that a garbage collection or the
    machine's neighbours slowed down moves it little (in-process rounds of 200 ranged
    924-1,582 runs/s in one process, pooled)."""
    latencies: list[float] = []
    rates: list[float] = []
    errors = 0
    kinds: Counter[str] = Counter()  # what went wrong, each kind with its count
    for _ in range(rounds):
        if pace is not None:
            await pace()
        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - start
        completed = 0
        for latency, problem in results:
            if problem is None:
                completed += 1
                latencies.append(latency)
            else:
                errors += 1
                kinds[problem] += 1
        rates.append(completed / wall if wall else 0.0)
    if pace is not None:
        await pace()
    return {
        "concurrent": n,
        "runs": n * rounds,
        "runs_per_s": round(median(rates), 1),
        "runs_per_s_rounds": [round(r, 1) for r in rates],
        "median_ms": _ms(median(latencies)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "errors": errors,
        "error_kinds": dict(kinds),
    }


async def concurrency_client(
    client: BenchClient, n: int, rounds: int, ticks: int, pace: Pace | None = None
) -> dict[str, Any]:
    """`n` stateless ticker runs streamed at once; latency = request sent -> stream ended."""

    async def one() -> tuple[float, str | None]:
        start = time.perf_counter()
        others: list[str] = []
        try:
            parts = _noting(client.stream("ticker", _ticker(ticks), ["custom"]), "custom", others)
            count, _, errs = await _timed_stream(parts, "custom")
        except Exception as exc:
            return time.perf_counter() - start, _raised(exc)
        return time.perf_counter() - start, _short(count, ticks, errs, others)

    return await _concurrent(one, n, rounds, pace)


async def concurrency_inprocess(graph: Graph, n: int, rounds: int, ticks: int) -> dict[str, Any]:
    """The same `n` runs as `n` `astream` calls under one `asyncio.gather`."""

    async def one() -> tuple[float, str | None]:
        start = time.perf_counter()
        count = 0
        async for _ in graph.astream(_ticker(ticks), stream_mode="custom"):
            count += 1
        return time.perf_counter() - start, _short(count, ticks, 0)

    return await _concurrent(one, n, rounds)


# --- concurrent threaded runs -----------------------------------------------------------------


@dataclass
class ThreadedStream:
    """One client's create-a-thread-and-stream-the-agent, in `time.perf_counter()` seconds:
    when it began (before the thread was created), when it asked for the stream, its first
    `values` event, its last event of any kind, and the stream's close."""

    began: float
    asked: float
    first: float | None = None
    last: float | None = None
    closed: float = 0.0
    errors: int = 0


async def stream_on_a_new_thread(client: BenchClient, times: ThreadedStream) -> None:
    """Creates a thread and streams the agent on it (`values`: every step checkpointed),
    filling `times` in as it goes (what it holds when this raises is how far it got)."""
    thread_id = await client.create_thread()
    times.asked = time.perf_counter()
    async for event, _ in client.stream("agent", AGENT_INPUT, ["values"], None, thread_id):
        times.last = time.perf_counter()
        if times.first is None and event == "values":
            times.first = times.last
        times.errors += event == "error"
    times.closed = time.perf_counter()


async def threaded_client(client: BenchClient, n: int, rounds: int) -> dict[str, Any]:
    """`n` clients at once, each creating a thread and streaming the agent on it (`values`):
    runs/s, each stream's first event after its client began (thread created, stream asked
    for), and how long after its last event each stream closed (the run's settling: its final
    state read and stored before the stream ends). The latency is the whole: began to closed."""
    closes: list[float] = []
    firsts: list[float] = []

    async def one() -> tuple[float, str | None]:
        began = time.perf_counter()
        times = ThreadedStream(began, began)
        try:
            await stream_on_a_new_thread(client, times)
        except Exception as exc:
            return time.perf_counter() - began, _raised(exc)
        if times.first is not None:
            firsts.append(times.first - began)
        if times.last is None:
            return times.closed - began, "no events"
        closes.append(times.closed - times.last)
        return times.closed - began, f"{times.errors} error events" if times.errors else None

    figures = await _concurrent(one, n, rounds)
    return {**figures, **_p50_p99("close", closes), **_p50_p99("first", firsts)}


async def threaded_inprocess(graph: Graph, n: int, rounds: int) -> dict[str, Any]:
    """The same `n` runs in-process, each on a thread of its own of `graph` (which carries a
    checkpointer: like for like, every step's checkpoint is written)."""
    firsts: list[float] = []

    async def one() -> tuple[float, str | None]:
        start = time.perf_counter()
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
        count = 0
        async for _ in graph.astream(AGENT_INPUT, config, stream_mode="values"):
            if not count:
                firsts.append(time.perf_counter() - start)
            count += 1
        return time.perf_counter() - start, None if count else "no events"

    figures = await _concurrent(one, n, rounds)
    return {**figures, **_p50_p99("first", firsts)}


def _p50_p99(name: str, samples: list[float]) -> dict[str, float | None]:
    """`{name}_p50_ms` and `{name}_p99_ms` of `samples` (seconds); None when there are none."""
    return {
        f"{name}_p50_ms": _ms(median(samples)) if samples else None,
        f"{name}_p99_ms": _ms(percentile(samples, 99)) if samples else None,
    }


# --- one background run, many joiners ---------------------------------------------------------


async def joiners_client(client: BenchClient, joiners: int, sizes: Sizes) -> dict[str, Any]:
    """A background ticker run (`join_ticks` events, `join_delay` apart) queued behind a short
    blocker run on the same thread, so that all `joiners` join before it produces anything."""
    ticks = sizes.join_ticks
    blocker_ticks = 3
    thread_id = await client.create_thread()
    await client.create_run(
        thread_id, "ticker", _ticker(blocker_ticks, sizes.blocker_seconds / 2), ["custom"]
    )
    run_id = await client.create_run(
        thread_id, "ticker", _ticker(ticks, sizes.join_delay), ["custom"]
    )
    final = {"tick": ticks - 1}

    async def join() -> tuple[int, float | None, float | None]:
        count = 0
        first: float | None = None
        last: float | None = None
        async for event, data in client.join(thread_id, run_id):
            if event == "custom":
                count += 1
                if first is None:
                    first = time.perf_counter()
                if data == final:
                    last = time.perf_counter()
        return count, first, last

    results = await asyncio.gather(*(join() for _ in range(joiners)), return_exceptions=True)
    counts: list[int] = []
    firsts: list[float] = []
    finals: list[float] = []
    errors = 0
    for result in results:
        if isinstance(result, BaseException):
            errors += 1
            continue
        count, first, last = result
        counts.append(count)
        if count != ticks or first is None or last is None:
            errors += 1
            continue
        firsts.append(first)
        finals.append(last)
    return {
        "joiners": joiners,
        "events_expected": ticks,
        "events_per_joiner_min": min(counts) if counts else 0,
        "events_per_joiner_max": max(counts) if counts else 0,
        "final_event_lag_ms": _ms(max(finals) - min(finals)) if finals else None,
        "run_seconds": round(min(finals) - min(firsts), 3) if finals else None,
        "errors": errors,
    }


async def joiners_inprocess(graph: Graph, sizes: Sizes) -> dict[str, Any]:
    """The same run once in-process: first tick -> final tick, for the run_seconds ratio."""
    first: float | None = None
    last = 0.0
    count = 0
    async for _ in graph.astream(_ticker(sizes.join_ticks, sizes.join_delay), stream_mode="custom"):
        count += 1
        last = time.perf_counter()
        if first is None:
            first = last
    return {
        "events": count,
        "run_seconds": round(last - (first or last), 3),
        "errors": int(count != sizes.join_ticks),
    }


# --- load for the memory figures --------------------------------------------------------------


async def batched_runs(client: BenchClient, runs: int, batch: int, ticks: int) -> int:
    """`runs` stateless ticker streams, `batch` at a time; the number that failed."""
    errors = 0

    async def one() -> bool:
        try:
            count, _, errs = await _timed_stream(
                client.stream("ticker", _ticker(ticks), ["custom"]), "custom"
            )
        except Exception:
            return False
        return count == ticks and not errs

    done = 0
    while done < runs:
        size = min(batch, runs - done)
        results = await asyncio.gather(*(one() for _ in range(size)))
        errors += results.count(False)
        done += size
    return errors


async def open_streams(client: BenchClient, streams: int, ticks: int, delay: float) -> int:
    """`streams` stateless ticker streams open at once; the number that failed."""

    async def one() -> bool:
        try:
            count, _, errs = await _timed_stream(
                client.stream("ticker", _ticker(ticks, delay), ["custom"]), "custom"
            )
        except Exception:
            return False
        return count == ticks and not errs

    results = await asyncio.gather(*(one() for _ in range(streams)))
    return results.count(False)


# --- protocol v2 --------------------------------------------------------------------------------


async def _tokens(messages: AsyncIterable[Any], start: float) -> tuple[int, float | None]:
    """The text deltas of a run's first streamed message (the model's reply; in-process, the
    node's whole `bye` comes as a message too, which v2 leaves to `values`, as the reference
    does), read in its own task as the clients need, and the time from `start` to the first."""
    first: list[float] = []

    async def read(message: Any) -> int:
        count = 0
        async for _ in message.text:
            if not first:
                first.append(time.perf_counter() - start)
            count += 1
        return count

    readers = [asyncio.create_task(read(m)) async for m in messages]
    counts = await asyncio.gather(*readers)
    return (counts[0] if counts else 0), (first[0] if first else None)


def v2_figures(runs: list[V2Run], expected: int) -> dict[str, Any]:
    firsts = [f for _, _, f in runs if f is not None]
    return {
        "tokens": runs[0][0] if runs else 0,
        "reps": len(runs),
        "tokens_per_s": round(median([n / s for n, s, _ in runs])) if runs else None,
        "first_token_ms": _ms(median(firsts)) if firsts else None,
        "errors": sum(n != expected for n, _, _ in runs),
    }


V2Run = tuple[int, float, float | None]  # (tokens, seconds, first token after seconds)


async def v2_once_inprocess(graph: Graph, sizes: Sizes) -> V2Run:
    """The agent's long reply through `astream_events(version="v3")`: its text deltas."""
    config: Any = {"configurable": {"repeat": sizes.agent_repeat}}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LangGraph marks v3 streaming as beta
        stream = await graph.astream_events(AGENT_INPUT, config, version="v3")
    async with stream as run:
        count, first = await _tokens(run.messages, start)
    return count, time.perf_counter() - start, first


async def v2_once_client(client: LangGraphClient, sizes: Sizes, transport: str) -> V2Run:
    """The same through `client.threads.stream(...)` (protocol v2): from opening the thread
    stream to the last delta of the reply."""
    config = {"configurable": {"repeat": sizes.agent_repeat}}
    start = time.perf_counter()
    async with client.threads.stream(assistant_id="agent", transport=transport) as thread:  # type: ignore[arg-type]
        await thread.run.start(input=AGENT_INPUT, config=config)
        count, first = await _tokens(thread.messages, start)
    return count, time.perf_counter() - start, first
