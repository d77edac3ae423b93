"""Scale: what one embedded server costs as the work grows, as curves (issue 17, point 3).

    .venv/bin/python -m benchmarks.scale [--quick] [--json out.json] [--only CURVE] [--distributed]

Four curves, each on a fresh `agentstream dev` process (embedded SQLite, pinned to one core;
this process on the other), one table row per size:

1. idle open streams (`GET /threads/{t}/stream` on idle threads, what a UI holds open): server
   RSS, memory per stream, server CPU while idle, and a new stateless run's time to first event;
2. joiners of one background run (queued behind a blocker that is cancelled once every joiner
   is attached): events each, and each event's lag behind its first arrival at any joiner;
3. threads with about 20 checkpoints each (copied in SQL from one real thread while the server
   is stopped): latency of thread search, state and history, and the database's size;
4. one run of many events: server RSS before, during and after, and a reader that disconnects
   mid-run and resumes with Last-Event-ID gets exactly what an uninterrupted reader got.

With --distributed, curves 1 and 2 on `serve` + `worker` (PostgreSQL + Redis), read off `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from benchmarks import scenarios
from benchmarks.clients import RawClient
from benchmarks.harness import (
    RssSampler,
    ServerProcess,
    cpu_split,
    freeze_client,
    median,
    percentile,
    pin_self,
    rss_kb,
    start_server,
)
from benchmarks.run import _log, _table, distributed_env, machine

T = TypeVar("T")


@dataclass(frozen=True)
class ScaleSizes:
    idle_streams: tuple[int, ...]
    idle_cpu_seconds: float  # the window server CPU is read over, with the streams idle
    ttfe_samples: int
    joiners: tuple[int, ...]
    join_ticks: int
    join_delay: float
    threads: tuple[int, ...]
    checkpoints: int  # per thread, at least
    thread_samples: int  # requests per endpoint and size
    long_events: int
    long_delay: float  # the ticker's pause between events: paces the run over a few seconds
    resume_at: int  # the resuming reader hangs up after this many events


FULL = ScaleSizes(
    idle_streams=(0, 1_000, 5_000, 10_000),
    idle_cpu_seconds=5.0,
    ttfe_samples=20,
    joiners=(10, 100, 1_000),
    join_ticks=200,
    join_delay=0.01,
    threads=(1_000, 10_000, 100_000),
    checkpoints=20,
    thread_samples=100,
    long_events=100_000,
    long_delay=1e-6,
    resume_at=30_000,
)

QUICK = ScaleSizes(
    idle_streams=(0, 250, 1_000),
    idle_cpu_seconds=1.0,
    ttfe_samples=20,
    joiners=(10, 100),
    join_ticks=50,
    join_delay=0.01,
    threads=(1_000, 10_000),
    checkpoints=20,
    thread_samples=30,
    long_events=20_000,
    long_delay=1e-6,
    resume_at=6_000,
)

USERS = 100  # thread metadata {"user": "user-<i % USERS>"}: a filter matches 1 thread in 100
CONNECT_BATCH = 250  # connections opened at once (uvicorn's listen backlog is 2048)
CREATE_BATCH = 50


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _lat(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "median_ms": _ms(median(samples)),
        "p99_ms": _ms(percentile(samples, 99)),
    }


async def _batched(items: Sequence[T], size: int, one: Callable[[T], Awaitable[Any]]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(items), size):
        out += await asyncio.gather(*(one(item) for item in items[i : i + size]))
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    # Each held stream is a socket here and one in the server (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- raw SSE connections ------------------------------------------------------------------------


class Sse:
    """One SSE response over its own HTTP/1.1 connection, read with as little client work as
    possible: chunks timed as they arrive, frames split by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._pending = b""

    @classmethod
    async def open(cls, url: str, path: str, last_event_id: str | None = None) -> Sse:
        parts = httpx.URL(url)
        reader, writer = await asyncio.open_connection(parts.host, parts.port, limit=1 << 20)
        extra = f"last-event-id: {last_event_id}\r\n" if last_event_id is not None else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nhost: {parts.host}:{parts.port}\r\n"
            f"accept: text/event-stream\r\n{extra}\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            writer.close()
            raise RuntimeError(f"GET {path}: HTTP {status}")
        return cls(reader, writer)

    async def chunk(self) -> bytes | None:
        """The next chunk of the chunked body, None at its end."""
        size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            return None
        return (await self.reader.readexactly(size + 2))[:-2]

    def frames(self, chunk: bytes) -> list[tuple[bytes, bytes, bytes]]:
        """(event, data, id) of each whole frame the chunk completes."""
        frames = (self._pending + chunk).split(b"\r\n\r\n")
        self._pending = frames.pop()
        out = []
        for frame in frames:
            event = data = ident = b""
            for line in frame.split(b"\r\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"data: "):
                    data = line[6:]
                elif line.startswith(b"id: "):
                    ident = line[4:]
            if event:
                out.append((event, data, ident))
        return out

    async def drain(self) -> None:
        while await self.chunk() is not None:
            pass

    def close(self) -> None:
        self.writer.close()


# --- 1. idle open streams -----------------------------------------------------------------------


async def _create_threads(client: RawClient, n: int) -> list[str]:
    async def one(i: int) -> str:
        thread = await client.request("POST", "/threads", {"metadata": {"user": f"user-{i}"}})
        return str(thread["thread_id"])

    return await _batched(list(range(n)), CREATE_BATCH, one)


@contextlib.asynccontextmanager
async def _deployment(
    database: Path, cpus: set[int] | None, distributed: bool
) -> AsyncIterator[ServerProcess]:
    """`dev` on SQLite at `database`; or `serve` + `worker` on a fresh PostgreSQL database and
    a flushed Redis, both processes on `cpus`, the figures read off `serve`."""
    if not distributed:
        server = await asyncio.to_thread(start_server, database, cpus=cpus)
        try:
            yield server
        finally:
            await asyncio.to_thread(server.stop)
        return
    env = await distributed_env(f"agentstream_scale_{database.stem}")
    worker = await asyncio.to_thread(start_server, None, cpus=cpus, env=env, command="worker")
    try:
        api = await asyncio.to_thread(start_server, None, cpus=cpus, env=env, command="serve")
        try:
            yield api
        finally:
            await asyncio.to_thread(api.stop)
    finally:
        await asyncio.to_thread(worker.stop)


async def idle_streams(
    sizes: ScaleSizes, cpus: set[int] | None, workdir: Path, distributed: bool = False
) -> dict[str, Any]:
    async with _deployment(workdir / "idle.sqlite", cpus, distributed) as server:
        return await _idle_streams(server, sizes)


async def _idle_streams(server: ServerProcess, sizes: ScaleSizes) -> dict[str, Any]:
    client = RawClient(server.url)
    held: list[Sse] = []
    drains: list[asyncio.Task[None]] = []
    rows = []
    ttfe_sizes = replace(scenarios.QUICK, ttfe_warmup=5, ttfe_samples=sizes.ttfe_samples)
    try:
        await scenarios.batched_runs(client, 50, 10, 20)  # the first runs import and cache
        for n in sizes.idle_streams:
            _log(f"idle streams: {n:,}")
            threads = await _create_threads(client, n - len(held))

            async def open_one(thread_id: str) -> Sse:
                return await Sse.open(server.url, f"/threads/{thread_id}/stream")

            opened = await _batched(threads, CONNECT_BATCH, open_one)
            held += opened
            drains += [asyncio.create_task(s.drain()) for s in opened]
            await asyncio.sleep(1.0)
            rss = rss_kb(server.pid)
            cpu_before, start = _cpu_seconds(server.pid), time.perf_counter()
            await asyncio.sleep(sizes.idle_cpu_seconds)
            cpu = (_cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - start)
            freeze_client()  # the streams held, out of the collector's sight
            ttfe = await scenarios.ttfe_client(client, ttfe_sizes)
            rows.append(
                {
                    "streams": n,
                    "rss_kb": rss,
                    "server_cpu_idle_pct": round(cpu * 100, 1),
                    "ttfe_median_ms": ttfe["median_ms"],
                    "ttfe_p99_ms": ttfe["p99_ms"],
                    "ttfe_errors": ttfe["errors"],
                    "streams_closed": sum(t.done() for t in drains),
                }
            )
    finally:
        for s in held:
            s.close()
        for t in drains:
            t.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        await client.aclose()
    base = rows[0]["rss_kb"]
    for row in rows:
        n = row["streams"]
        row["kb_per_stream"] = round((row["rss_kb"] - base) / n, 2) if n else None
    return {"rows": rows, "errors": sum(r["ttfe_errors"] + r["streams_closed"] for r in rows)}


# --- 2. joiners of one run ----------------------------------------------------------------------


async def _read_ticks(sse: Sse, ticks: int) -> list[float | None]:
    """Arrival time of each tick at this joiner (None: never came)."""
    times: list[float | None] = [None] * ticks
    try:
        while (chunk := await sse.chunk()) is not None:
            now = time.perf_counter()
            for event, data, _ in sse.frames(chunk):
                if event == b"custom":
                    tick = orjson.loads(data)["tick"]
                    if 0 <= tick < ticks and times[tick] is None:
                        times[tick] = now
    finally:
        sse.close()
    return times


async def _blocked_run(
    client: RawClient, thread_id: str, run_input: dict[str, Any]
) -> tuple[str, str]:
    """(blocker, run): a background ticker run queued behind a blocker that sleeps until it
    is cancelled, so that every reader can attach before the run's first event."""
    body = {
        "assistant_id": "ticker",
        "input": {"n": 2, "delay": 3600.0},
        "stream_mode": ["custom"],
        "multitask_strategy": "enqueue",
    }
    blocker = await client.request("POST", f"/threads/{thread_id}/runs", body)
    run = await client.request("POST", f"/threads/{thread_id}/runs", {**body, "input": run_input})
    return str(blocker["run_id"]), str(run["run_id"])


async def joiners(
    sizes: ScaleSizes, cpus: set[int] | None, workdir: Path, distributed: bool = False
) -> dict[str, Any]:
    async with _deployment(workdir / "join.sqlite", cpus, distributed) as server:
        return await _joiners(server, sizes)


async def _joiners(server: ServerProcess, sizes: ScaleSizes) -> dict[str, Any]:
    client = RawClient(server.url)
    rows = []
    ticks = sizes.join_ticks
    try:
        await scenarios.batched_runs(client, 50, 10, 20)
        for n in sizes.joiners:
            _log(f"joiners: {n:,}")
            thread_id = (await _create_threads(client, 1))[0]
            run_input = {"n": ticks, "delay": sizes.join_delay}
            blocker, run_id = await _blocked_run(client, thread_id, run_input)
            path = f"/threads/{thread_id}/runs/{run_id}/stream"
            conns = await _batched([path] * n, CONNECT_BATCH, lambda p: Sse.open(server.url, p))
            freeze_client()  # the joiners' connections, out of the collector's sight
            readers = [asyncio.create_task(_read_ticks(s, ticks)) for s in conns]
            with RssSampler(server.pid) as sampler:
                before = rss_kb(server.pid)
                await client.request("POST", f"/threads/{thread_id}/runs/{blocker}/cancel")
                arrivals = await asyncio.gather(*readers)
            rows.append(_join_row(n, ticks, sizes.join_delay, arrivals, before, sampler.peak))
    finally:
        await client.aclose()
    return {"rows": rows, "errors": sum(r["errors"] for r in rows)}


def _join_row(
    n: int, ticks: int, delay: float, arrivals: list[list[float | None]], before: int, peak: int
) -> dict[str, Any]:
    counts = [sum(t is not None for t in times) for times in arrivals]
    lags: list[float] = []
    for i in range(ticks):
        at = [t for times in arrivals if (t := times[i]) is not None]
        if at:
            first = min(at)
            lags += [t - first for t in at]
    firsts = [times[0] for times in arrivals if times[0] is not None]
    lasts = [times[-1] for times in arrivals if times[-1] is not None]
    return {
        "joiners": n,
        "events_expected": ticks,
        "events_per_joiner_min": min(counts),
        "events_per_joiner_max": max(counts),
        "lag_median_ms": _ms(median(lags)),
        "lag_p99_ms": _ms(percentile(lags, 99)),
        "lag_max_ms": _ms(max(lags)) if lags else None,
        # The run paces its ticks `delay` apart: this is how long it took to reach everyone.
        "run_seconds": round(max(lasts) - min(firsts), 3) if lasts and firsts else None,
        "run_seconds_paced": round((ticks - 1) * delay, 3),
        "rss_before_kb": before,
        "rss_peak_kb": peak,
        "errors": sum(c != ticks for c in counts),
    }


# --- 3. many threads ----------------------------------------------------------------------------


async def _template_thread(url: str, checkpoints: int) -> str:
    """A thread made through the API with real runs, until it has `checkpoints` checkpoints."""
    client = RawClient(url)
    try:
        thread_id = (await _create_threads(client, 1))[0]
        have = 0
        while have < checkpoints:
            async for _ in client.stream("ticker", {"n": 1}, ["values"], None, thread_id):
                pass
            history = await client.request("POST", f"/threads/{thread_id}/history", {"limit": 1000})
            have = len(history)
        return thread_id
    finally:
        await client.aclose()


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]


def _copy_threads(database: Path, template: str, start: int, stop: int) -> None:
    """Threads start..stop-1, each a copy of the template's row and checkpoints, in SQL."""
    base = datetime.now(UTC) - timedelta(days=1)
    db = sqlite3.connect(database, isolation_level=None)
    try:
        # No journal while the server is stopped: the copy is written once, not to the WAL and
        # then again into the database (the server turns WAL back on when it opens the file).
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        db.execute("CREATE TEMP TABLE new_threads (thread_id TEXT, at TEXT, user TEXT)")
        db.executemany(
            "INSERT INTO new_threads VALUES (?, ?, ?)",
            (
                (
                    str(uuid.uuid4()),
                    (base + timedelta(milliseconds=i)).isoformat(),
                    f"user-{i % USERS}",
                )
                for i in range(start, stop)
            ),
        )
        swap = {
            "thread_id": "n.thread_id",
            "created_at": "n.at",
            "updated_at": "n.at",
            "state_updated_at": "n.at",
            "metadata": "json_set(replace(t.metadata, :template, n.thread_id), '$.user', n.user)",
            "config": "replace(t.config, :template, n.thread_id)",
        }
        for table in ("threads", "checkpoints", "writes"):
            own = swap if table == "threads" else {"thread_id": swap["thread_id"]}
            picked = ", ".join(own.get(c, f't."{c}"') for c in _columns(db, table))
            db.execute(
                f'INSERT INTO "{table}" SELECT {picked} FROM new_threads n '
                f'CROSS JOIN "{table}" t WHERE t.thread_id = :template',
                {"template": template},
            )
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def _db_bytes(database: Path) -> int:
    return sum(p.stat().st_size for p in (database, Path(f"{database}-wal")) if p.exists())


async def _timed(samples: int, call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    for _ in range(3):
        await call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return _lat(times)


async def _thread_latencies(url: str, ids: list[str], samples: int) -> dict[str, Any]:
    client = RawClient(url)
    rnd = random.Random(17)
    try:
        out: dict[str, Any] = {}
        out["search_metadata"] = await _timed(
            samples,
            lambda: client.request(
                "POST",
                "/threads/search",
                {"metadata": {"user": f"user-{rnd.randrange(USERS)}"}, "limit": 10},
            ),
        )
        out["search_plain"] = await _timed(
            samples, lambda: client.request("POST", "/threads/search", {"limit": 10})
        )
        out["state"] = await _timed(
            samples, lambda: client.request("GET", f"/threads/{rnd.choice(ids)}/state")
        )
        out["history"] = await _timed(
            samples,
            lambda: client.request("POST", f"/threads/{rnd.choice(ids)}/history", {"limit": 10}),
        )
        # Sanity: a filter finds threads, state has the ticker's count.
        found = await client.request(
            "POST", "/threads/search", {"metadata": {"user": "user-1"}, "limit": 10}
        )
        state = await client.request("GET", f"/threads/{rnd.choice(ids)}/state")
        history = await client.request("POST", f"/threads/{rnd.choice(ids)}/history", {"limit": 10})
        out["search_metadata_found"] = len(found)
        out["state_has_values"] = bool(state.get("values"))
        out["history_length"] = len(history)
        return out
    finally:
        await client.aclose()


async def many_threads(sizes: ScaleSizes, cpus: set[int] | None, workdir: Path) -> dict[str, Any]:
    database = workdir / "threads.sqlite"
    server = await asyncio.to_thread(start_server, database, cpus=cpus)
    try:
        template = await _template_thread(server.url, sizes.checkpoints)
    finally:
        await asyncio.to_thread(server.stop)
    db = sqlite3.connect(database)
    per_thread = db.execute(
        "SELECT count(*) FROM checkpoints WHERE thread_id = ?", (template,)
    ).fetchone()[0]
    db.close()
    rows = []
    have = 1
    errors = 0
    for n in sizes.threads:
        _log(f"threads: populating {n:,}")
        start = time.perf_counter()
        await asyncio.to_thread(_copy_threads, database, template, have, n)
        have = n
        populate = time.perf_counter() - start
        db = sqlite3.connect(database)
        ids = [r[0] for r in db.execute("SELECT thread_id FROM threads")]
        db.close()
        server = await asyncio.to_thread(start_server, database, cpus=cpus)
        try:
            _log(f"threads: measuring at {n:,}")
            figures = await _thread_latencies(server.url, ids, sizes.thread_samples)
        finally:
            await asyncio.to_thread(server.stop)
        ok = (
            figures["search_metadata_found"] == 10
            and figures["state_has_values"]
            and figures["history_length"] == 10
        )
        errors += not ok
        rows.append(
            {
                "threads": len(ids),
                "checkpoints_per_thread": per_thread,
                "populate_seconds": round(populate, 1),
                "db_mb": round(_db_bytes(database) / 2**20, 1),
                **figures,
                "ok": ok,
            }
        )
    return {"rows": rows, "errors": errors}


# --- 4. one long run ----------------------------------------------------------------------------


async def _read_all(
    sse: Sse, hang_up_after: int | None = None
) -> tuple[list[int], list[int], float, str | None]:
    """(ticks, event ids, time of the last frame read, an error frame's data) of the run's
    custom events, until the stream ends or, with hang_up_after, until that many were read
    (then the socket is closed)."""
    ticks: list[int] = []
    ids: list[int] = []
    last = 0.0
    error = None
    try:
        while (chunk := await sse.chunk()) is not None:
            last = time.perf_counter()
            for event, data, ident in sse.frames(chunk):
                if event == b"custom":
                    ticks.append(orjson.loads(data)["tick"])
                    ids.append(int(ident))
                elif event == b"error":
                    error = data.decode()
            if hang_up_after is not None and len(ticks) >= hang_up_after:
                break
    finally:
        sse.close()
    return ticks, ids, last, error


async def _long_once(
    url: str, pid: int, client: RawClient, n: int, delay: float, resume_at: int
) -> dict[str, Any]:
    """One run of n events read by two readers attached before it starts: one reads it all,
    the other hangs up after resume_at events and reconnects with Last-Event-ID."""
    thread_id = (await _create_threads(client, 1))[0]
    blocker, run_id = await _blocked_run(client, thread_id, {"n": n, "delay": delay})
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    whole_sse, cut_sse = await asyncio.gather(Sse.open(url, path), Sse.open(url, path))
    await asyncio.sleep(0.5)
    before = rss_kb(pid)
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        await client.request("POST", f"/threads/{thread_id}/runs/{blocker}/cancel")
        whole = asyncio.create_task(_read_all(whole_sse))
        head_ticks, head_ids, _, head_error = await _read_all(cut_sse, resume_at)
        resumed_at = time.perf_counter()
        last_id = str(head_ids[-1]) if head_ids else "0"
        tail_ticks, tail_ids, _, tail_error = await _read_all(await Sse.open(url, path, last_id))
        ticks, ids, whole_end, whole_error = await whole
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    status = (await client.request("GET", f"/threads/{thread_id}/runs/{run_id}"))["status"]
    joined = head_ticks + tail_ticks
    exact = joined == ticks == list(range(n)) and head_ids + tail_ids == ids
    return {
        "events": n,
        "delay": delay,
        "status": status,
        "uninterrupted_events": len(ticks),
        "resumed_events": len(joined),
        "hung_up_after": len(head_ticks),
        "repeated": len(joined) - len(set(joined)),
        "skipped": n - len(set(joined)),
        "resume_exact": exact,
        "resumed_mid_run": resumed_at < whole_end,
        "resume_after_ms": _ms(resumed_at - started),
        "run_seconds": round(whole_end - started, 3),
        "rss_before_kb": before,
        "rss_peak_kb": sampler.peak,
        "rss_after_kb": after,
        "error_frames": [e for e in (whole_error, head_error, tail_error) if e],
    }


async def long_run(sizes: ScaleSizes, cpus: set[int] | None, workdir: Path) -> dict[str, Any]:
    """The run paced (the ticker sleeps `long_delay` between events: readers keep up, and the
    resume happens mid-run), then the same run as one burst (no pause: the graph produces
    every event before anyone reads one), each on a fresh server."""
    out: dict[str, Any] = {}
    for name, delay in (("paced", sizes.long_delay), ("burst", 0.0)):
        _log(f"long run: {sizes.long_events:,} events, {name}")
        server = await asyncio.to_thread(start_server, workdir / f"long-{name}.sqlite", cpus=cpus)
        client = RawClient(server.url)
        try:
            await scenarios.batched_runs(client, 50, 10, 20)
            out[name] = await _long_once(
                server.url, server.pid, client, sizes.long_events, delay, sizes.resume_at
            )
        finally:
            await client.aclose()
            await asyncio.to_thread(server.stop)
    out["errors"] = sum(
        int(not r["resume_exact"]) + int(r["status"] != "success")
        for r in (out["paced"], out["burst"])
    )
    return out


# --- report -------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ml(fig: dict[str, Any]) -> str:
    return f"{_f(fig['median_ms'], 2)} / {_f(fig['p99_ms'], 2)}"


def _idle_table(result: dict[str, Any]) -> str:
    idle = result["idle_streams"]["rows"]
    return "1. idle open streams (GET /threads/{t}/stream, each on its own idle thread)\n" + _table(
        [
            "streams",
            "server RSS (KiB)",
            "KiB per stream",
            "server CPU idle (%)",
            "new run TTFE median / p99 (ms)",
        ],
        [
            [
                _f(r["streams"]),
                _f(r["rss_kb"]),
                _f(r["kb_per_stream"]),
                _f(r["server_cpu_idle_pct"]),
                f"{_f(r['ttfe_median_ms'], 2)} / {_f(r['ttfe_p99_ms'], 2)}",
            ]
            for r in idle
        ],
    )


def _join_table(result: dict[str, Any]) -> str:
    join = result["joiners"]["rows"]
    return "2. joiners of one background run\n" + _table(
        [
            "joiners",
            "events each (min/max of expected)",
            "lag median / p99 / max (ms)",
            "first->last tick at anyone (s, paced)",
            "server RSS before -> peak (KiB)",
        ],
        [
            [
                _f(r["joiners"]),
                f"{r['events_per_joiner_min']}/{r['events_per_joiner_max']} of "
                f"{r['events_expected']}",
                f"{_f(r['lag_median_ms'], 2)} / {_f(r['lag_p99_ms'], 2)} / "
                f"{_f(r['lag_max_ms'], 2)}",
                f"{_f(r['run_seconds'], 3)} ({_f(r['run_seconds_paced'], 2)})",
                f"{_f(r['rss_before_kb'])} -> {_f(r['rss_peak_kb'])}",
            ]
            for r in join
        ],
    )


def _threads_table(result: dict[str, Any]) -> str:
    threads = result["many_threads"]["rows"]
    return "3. many threads (latency median / p99, ms)\n" + _table(
        [
            "threads",
            "checkpoints each",
            "db (MiB)",
            "search by metadata",
            "search, plain",
            "GET state",
            "POST history",
            "populated in (s)",
        ],
        [
            [
                _f(r["threads"]),
                _f(r["checkpoints_per_thread"]),
                _f(r["db_mb"]),
                _ml(r["search_metadata"]),
                _ml(r["search_plain"]),
                _ml(r["state"]),
                _ml(r["history"]),
                _f(r["populate_seconds"]),
            ]
            for r in threads
        ],
    )


def _long_table(result: dict[str, Any]) -> str:
    long = result["long_run"]
    kinds = [k for k in ("paced", "burst") if k in long]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("run time, first request to last event (s)", lambda r: _f(r["run_seconds"], 3)),
        (
            "server RSS before / peak during / 1 s after (KiB)",
            lambda r: (
                f"{_f(r['rss_before_kb'])} / {_f(r['rss_peak_kb'])} / {_f(r['rss_after_kb'])}"
            ),
        ),
        ("uninterrupted reader: events", lambda r: _f(r["uninterrupted_events"])),
        (
            "resuming reader: hung up after / reconnected at (ms)",
            lambda r: f"{_f(r['hung_up_after'])} / {_f(r['resume_after_ms'])}",
        ),
        (
            "resuming reader: events, repeated, skipped",
            lambda r: f"{_f(r['resumed_events'])}, {r['repeated']}, {r['skipped']}",
        ),
        (
            "resumed mid-run / sequence equals the uninterrupted one",
            lambda r: f"{_f(r['resumed_mid_run'])} / {_f(r['resume_exact'])}",
        ),
        ("error frames", lambda r: "; ".join(r["error_frames"])[:60] or "none"),
    ]
    n = long[kinds[0]]["events"]
    return f"4. one run of {n:,} events\n" + _table(
        ["figure", *kinds], [[name, *(pick(long[k]) for k in kinds)] for name, pick in rows]
    )


def report(result: dict[str, Any]) -> str:
    tables = {
        "idle_streams": _idle_table,
        "joiners": _join_table,
        "many_threads": _threads_table,
        "long_run": _long_table,
    }
    parts = [table(result) for name, table in tables.items() if name in result]
    parts.append(f"errors in total: {result['errors']}")
    return "\n\n".join(parts)


# --- the command --------------------------------------------------------------------------------


Curve = Callable[[ScaleSizes, set[int] | None, Path], Awaitable[dict[str, Any]]]
CURVES: dict[str, Curve] = {
    "idle_streams": idle_streams,
    "joiners": joiners,
    "many_threads": many_threads,
    "long_run": long_run,
}
# The curves that --distributed measures on `serve` + `worker` (the others are SQLite's).
DISTRIBUTED_CURVES: dict[str, Curve] = {
    "idle_streams": partial(idle_streams, distributed=True),
    "joiners": partial(joiners, distributed=True),
}


async def main_async(
    sizes: ScaleSizes, quick: bool, only: Sequence[str] = (), distributed: bool = False
) -> dict[str, Any]:
    server_cpus, bench_cpus = cpu_split()
    pin_self(bench_cpus)
    _raise_fd_limit()
    result: dict[str, Any] = {
        "machine": machine(server_cpus, bench_cpus),
        "quick": quick,
        "sizes": asdict(sizes),
        "deployment": "serve + worker" if distributed else "dev",
    }
    curves = DISTRIBUTED_CURVES if distributed else CURVES
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agentstream-scale-") as tmp:
        workdir = Path(tmp)
        for name in [n for n in only if n in curves] if only else curves:
            result[name] = await curves[name](sizes, server_cpus, workdir)
    result["errors"] = sum(result[k]["errors"] for k in CURVES if k in result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--only", action="append", choices=list(CURVES), default=[], help="just this curve"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="idle streams and joiners on `serve` + `worker` (PostgreSQL + Redis)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    result = asyncio.run(main_async(sizes, args.quick, args.only, args.distributed))
    m = result["machine"]
    print(
        f"agentstream scale{' (quick)' if args.quick else ''} on {result['deployment']}: "
        f"{m['date']}, {m['nproc']} cores "
        f"({m['cpu']}), Python {m['python']}; server on CPU {m['server_cpus']}, client on CPU "
        f"{m['benchmark_cpus']}; {result['seconds']} s\n"
    )
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
