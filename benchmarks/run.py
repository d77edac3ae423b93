"""The agentstream benchmark: one command, a real server over loopback, ratios to in-process.

    .venv/bin/python -m benchmarks.run [--quick] [--json out.json]

Starts `agentstream dev` on the example graphs (pinned to one core), drives it with the official
`langgraph_sdk` client and with raw httpx streaming (pinned to the other core), runs the same
graphs in this process with `graph.astream` as the baseline, and prints each figure next to its
baseline and their ratio. Set AGENTSTREAM_BENCH_REFERENCE_URL to an already running
`langgraph dev` serving examples/langgraph.json to measure it side by side. With --distributed,
`agentstream dev` on PostgreSQL + Redis (a fresh database per server, one Redis database,
flushed) is measured too, in its own columns, and `agentstream serve` + `agentstream worker`
(both processes on the server's core) in columns of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import uvloop
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph_sdk import get_client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agentstream.app import tune_gc
from agentstream.graphs import GraphRegistry, read_config
from agentstream.settings import Settings
from benchmarks import scenarios
from benchmarks.baseline import Beside
from benchmarks.clients import BenchClient, RawClient, make_client
from benchmarks.harness import (
    EXAMPLES,
    Busy,
    RssSampler,
    cpu_split,
    free_port,
    freeze_client,
    median,
    pin_self,
    rss_kb,
    start_server,
    wait_ready,
)
from benchmarks.scenarios import Pace, Sizes

CLIENTS = ("sdk", "http")
V2_TRANSPORTS = ("sse", "websocket")
# The distributed deployments --distributed measures, each in columns of its own: `agentstream
# dev` on PostgreSQL + Redis (API and worker in one process), and `serve` + `worker`.
EXTRA_DEPLOYMENTS = (("distributed", "distributed"), ("split", "serve+worker"))
REFERENCE_ENV = "AGENTSTREAM_BENCH_REFERENCE_URL"
# Memory growth over the second batch of runs that counts as noise: RSS moves by whole pages
# as the allocator grows its arenas, whatever the server does.
MEMORY_NOISE_KB = 2048
EXPIRE_ENV = "AGENTSTREAM_EVENT_LOG_KEEP_SECONDS"
POSTGRES_ENV = "AGENTSTREAM_BENCH_POSTGRES_URI"
REDIS_ENV = "AGENTSTREAM_BENCH_REDIS_URI"
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/7"
EXPIRE_SECONDS = "0.01"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- measuring ----------------------------------------------------------------------------------


async def measure_inprocess(sizes: Sizes, label: str = "in-process") -> dict[str, Any]:
    """Every baseline figure."""
    registry = GraphRegistry(read_config(EXAMPLES))
    ticker = await registry.get("ticker")
    agent = await registry.get("agent")
    _log(f"{label}: time to first event")
    out: dict[str, Any] = {"ttfe": await scenarios.ttfe_inprocess(ticker, sizes)}
    _log(f"{label}: throughput")
    out["ticker_throughput"] = await scenarios.ticker_throughput_inprocess(ticker, sizes)
    messages = await scenarios.agent_messages_inprocess(agent, sizes)
    out["agent_throughput"] = await scenarios.agent_throughput_inprocess(agent, sizes, messages)
    out["concurrency"] = {}
    for n, rounds in sizes.concurrency:
        _log(f"{label}: {n} concurrent runs")
        out["concurrency"][str(n)] = await scenarios.concurrency_inprocess(
            ticker, n, rounds, sizes.ticks_per_run
        )
    out["threaded"] = {}
    with tempfile.TemporaryDirectory(prefix="agentstream-bench-") as tmp:
        # Like for like: every step's checkpoint written to SQLite, as the embedded server does.
        path = str(Path(tmp) / "checkpoints.sqlite")
        async with AsyncSqliteSaver.from_conn_string(path) as saver:
            threaded = agent.copy(update={"checkpointer": saver})
            for n, rounds in sizes.threaded:
                _log(f"{label}: {n} concurrent threaded runs")
                out["threaded"][str(n)] = await scenarios.threaded_inprocess(threaded, n, rounds)
    _log(f"{label}: the joined run")
    out["join"] = await scenarios.joiners_inprocess(ticker, sizes)
    return out


def measure_inprocess_like_server(sizes: Sizes) -> dict[str, Any]:
    """The baseline again, as the server itself runs the graphs: on uvloop, with the garbage
    collector tuned as `agentstream` tunes it (app.tune_gc). In a thread of its own, with its
    own loop; the collector's settings are put back afterwards."""
    before = gc.get_threshold()
    tune_gc(Settings.from_env().gc_threshold)
    try:
        return uvloop.run(measure_inprocess(sizes, "in-process (uvloop, server GC)"))
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def measure_server(
    url: str,
    sizes: Sizes,
    agent_messages: int,
    label: str,
    pids: Sequence[int],
    metrics_urls: Sequence[str] = (),
    *,
    beside: str | None = None,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """The client-side figures against one server, with each client; its service requests
    per run from the /metrics of `url` and of each of `metrics_urls` (a worker's) together;
    and how busy the client's core and the server's processes (`pids`) were during each.

    With beside ("like" or "plain"), that baseline of the first event, throughput and
    concurrent runs is measured in a process of its own (benchmarks.baseline) on the server's
    core (`cpus`), once before each of a client's repetitions of those figures and once after
    the last (`like_beside` or `plain_beside`): each repetition is then judged against the
    baseline's a fraction of a second away (paired_ratios), where the baselines measured
    before and after every server are minutes away, and this machine's speed moves by up to
    half in seconds."""
    out: dict[str, Any] = {}
    counted = [url, *metrics_urls]
    async with Beside(beside, sizes, cpus) if beside else nullcontext() as base:
        for kind in CLIENTS:
            client = make_client(kind, url)
            try:
                out[kind] = await _client_figures(
                    client, kind, sizes, agent_messages, label, pids, counted, base
                )
            finally:
                await client.aclose()
    return out


async def _client_figures(
    client: BenchClient,
    kind: str,
    sizes: Sizes,
    agent_messages: int,
    label: str,
    pids: Sequence[int],
    counted: Sequence[str],
    base: Beside | None,
) -> dict[str, Any]:
    """measure_server's figures with one client."""
    figures: dict[str, Any] = {}
    # The baseline's repetitions beside the client's, by figure (see measure_server).
    reps: dict[str, Any] = {"concurrency": {}}

    def pace(busy: Busy, request: dict[str, Any], where: dict[str, Any], key: str) -> Pace | None:
        """The baseline's Pace for one figure, its repetitions kept as where[key]."""
        if base is None:
            return None
        where[key] = []
        return base.pacer(where[key], request, busy)

    _log(f"{label} ({kind}): time to first event")
    freeze_client()
    with Busy(pids) as busy:
        block = {"figure": "ttfe", "samples": scenarios.ttfe_block(sizes)}
        paced = pace(busy, block, reps, "ttfe")
        figures["ttfe"] = await scenarios.ttfe_client(client, sizes, paced)
    figures["ttfe"]["busy"] = busy.figures
    _log(f"{label} ({kind}): throughput")
    freeze_client()
    with Busy(pids) as busy:
        figures["ticker_throughput"] = await scenarios.ticker_throughput_client(
            client, sizes, pace(busy, {"figure": "ticker_throughput"}, reps, "ticker_throughput")
        )
    figures["ticker_throughput"]["busy"] = busy.figures
    with Busy(pids) as busy:
        request = {"figure": "agent_throughput", "expected": agent_messages}
        figures["agent_throughput"] = await scenarios.agent_throughput_client(
            client, sizes, agent_messages, pace(busy, request, reps, "agent_throughput")
        )
    figures["agent_throughput"]["busy"] = busy.figures
    figures["concurrency"] = {}
    for n, rounds in sizes.concurrency:
        _log(f"{label} ({kind}): {n} concurrent runs")
        freeze_client()
        before = await service_requests(*counted)
        with Busy(pids) as busy:
            request = {"figure": "concurrency", "n": n}
            paced = pace(busy, request, reps["concurrency"], str(n))
            c = await scenarios.concurrency_client(client, n, rounds, sizes.ticks_per_run, paced)
        c["busy"] = busy.figures
        c["services_per_run"] = per_run(before, await service_requests(*counted), c["runs"])
        figures["concurrency"][str(n)] = c
    if base is not None:
        figures[f"{base.which}_beside"] = {"reps": reps, "figures": pooled_figures(reps)}
    figures["threaded"] = {}
    for n, rounds in sizes.threaded:
        _log(f"{label} ({kind}): {n} concurrent threaded runs")
        freeze_client()
        before = await service_requests(*counted)
        seen = await metric_samples(counted[0])  # the closes and the requests so far
        runner = counted[-1]  # the runs' process: the worker, if apart; else the API itself
        lag_seen = seen if runner == counted[0] else await metric_samples(runner)
        with Busy(pids) as busy:
            t = await scenarios.threaded_client(client, n, rounds)
        t["busy"] = busy.figures
        later = await metric_samples(counted[0])
        lag_later = later if runner == counted[0] else await metric_samples(runner)
        lags = buckets(lag_seen, LAG_BUCKETS), buckets(lag_later, LAG_BUCKETS)
        t["loop_lag_p50_ms"] = bucket_bound_ms(*lags, 50)
        t["loop_lag_p99_ms"] = bucket_bound_ms(*lags, 99)
        asked, answered = http_requests(seen), http_requests(later)
        t["requests_per_run"] = requests_per_run(asked, answered, t["runs"])
        closes, closed = buckets(seen, CLOSE_BUCKETS), buckets(later, CLOSE_BUCKETS)
        t["server_close_p50_ms"] = bucket_bound_ms(closes, closed, 50)
        t["server_close_p99_ms"] = bucket_bound_ms(closes, closed, 99)
        t["services_per_run"] = per_run(before, await service_requests(*counted), t["runs"])
        figures["threaded"][str(n)] = t
    figures["join"] = {}
    for joiners in sizes.joiners:
        _log(f"{label} ({kind}): {joiners} joiner(s)")
        freeze_client()
        figures["join"][str(joiners)] = await scenarios.joiners_client(client, joiners, sizes)
    return figures


SERVICE_COUNTERS = {
    "agentstream_postgres_statements_total": "postgres_statements",
    "agentstream_redis_round_trips_total": "redis_round_trips",
}


def read_service_counters(metrics_text: str) -> dict[str, float]:
    """The service-request counters found in a /metrics page, by SERVICE_COUNTERS' names."""
    found: dict[str, float] = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in SERVICE_COUNTERS:
            found[SERVICE_COUNTERS[name]] = float(value)
    return found


async def service_requests(*urls: str) -> dict[str, float] | None:
    """The PostgreSQL statements and Redis round trips so far of the processes serving these
    /metrics, together; None when one of them has no such counters (the reference server)."""
    total: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for url in urls:
                found = read_service_counters((await http.get(f"{url}/metrics")).text)
                if len(found) != len(SERVICE_COUNTERS):
                    return None
                for key, value in found.items():
                    total[key] = total.get(key, 0.0) + value
    except httpx.HTTPError:
        return None
    return total


async def metric_samples(url: str) -> list[Sample] | None:
    """Every sample of the API's /metrics now; None when it cannot be read."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


HTTP_REQUESTS = "lg_api_http_requests_total"


def http_requests(samples: list[Sample] | None) -> dict[str, float] | None:
    """The API's requests so far by method and route ("POST /runs/stream"), its own /metrics
    left out (the benchmark reads it); None when it has no such counter."""
    found: dict[str, float] = {}
    for sample in samples or ():
        if sample.name == HTTP_REQUESTS and sample.labels.get("path") != "/metrics":
            route = f"{sample.labels.get('method')} {sample.labels.get('path')}"
            found[route] = found.get(route, 0.0) + sample.value
    return found or None


def requests_per_run(
    before: dict[str, float] | None, after: dict[str, float] | None, runs: int
) -> dict[str, float] | None:
    """The API's requests per run between two readings, by route (those that moved)."""
    if before is None or after is None or not runs:
        return None
    moved = {route: (n - before.get(route, 0.0)) / runs for route, n in after.items()}
    return {route: round(n, 2) for route, n in sorted(moved.items()) if n}


CLOSE_BUCKETS = "agentstream_stream_close_seconds_bucket"
LAG_BUCKETS = "agentstream_event_loop_lag_seconds_bucket"


def buckets(samples: list[Sample] | None, name: str) -> dict[float, float] | None:
    """A histogram's buckets (`name`: the API's streams' closes after their last event, or a
    process's event loop lag): count by upper bound (seconds, cumulative); None when it has
    none (the reference server)."""
    found: dict[float, float] = {}
    for sample in samples or ():
        if sample.name == name:
            found[float(sample.labels["le"])] = sample.value
    return found or None


def bucket_bound_ms(
    before: dict[float, float] | None, after: dict[float, float] | None, pct: float
) -> float | None:
    """The smallest bucket bound under which at least pct % of the observations between the
    two readings fell (ms), to a bucket's precision."""
    if before is None or after is None:
        return None
    added = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = added.get(math.inf, 0.0)
    if not total:
        return None
    for bound, count in added.items():
        if count >= total * pct / 100:
            return bound * 1000
    return None


def per_run(
    before: dict[str, float] | None, after: dict[str, float] | None, runs: int
) -> dict[str, float] | None:
    if before is None or after is None or not runs:
        return None
    return {key: round((after[key] - before[key]) / runs, 2) for key in after}


async def measure_fresh_server(
    database: Path,
    cpus: set[int] | None,
    sizes: Sizes,
    agent_messages: int,
    label: str,
    env: dict[str, str] | None = None,
    *,
    beside: str | None = None,
) -> dict[str, Any]:
    """measure_server on a server started for it, and stopped after."""
    server = await asyncio.to_thread(start_server, database, cpus=cpus, env=env)
    try:
        return await measure_server(
            server.url, sizes, agent_messages, label, [server.pid], beside=beside, cpus=cpus
        )
    finally:
        await asyncio.to_thread(server.stop)


async def measure_split(
    cpus: set[int] | None, sizes: Sizes, agent_messages: int, env: dict[str, str]
) -> dict[str, Any]:
    """measure_server on `serve` + `worker`, two processes on the server's core(s): the
    distributed deployment as issue 17 names it (its targets are judged on it and on `dev`).
    Its service counters are both processes' (the worker serves its /metrics on a port)."""
    port = free_port()

    def start(command: str, more: dict[str, str]) -> Any:
        return start_server(None, cpus=cpus, env={**env, **more}, command=command)

    worker = await asyncio.to_thread(start, "worker", {"AGENTSTREAM_METRICS_PORT": str(port)})
    try:
        api = await asyncio.to_thread(start, "serve", {})
        try:
            return await measure_server(
                api.url,
                sizes,
                agent_messages,
                "serve + worker",
                [api.pid, worker.pid],
                [f"http://127.0.0.1:{port}"],
                beside="plain",
                cpus=cpus,
            )
        finally:
            await asyncio.to_thread(api.stop)
    finally:
        await asyncio.to_thread(worker.stop)


async def measure_v2(database: Path, cpus: set[int] | None, sizes: Sizes) -> dict[str, Any]:
    """Protocol v2: the agent's reply through `client.threads.stream(...)`, on each transport,
    against a server started for it, and through `astream_events` v3 in this process, one
    repetition of each in turn: the machine's speed drifts over minutes (the in-process v3
    rate moved 5,500-8,200 tokens/s between runs), and side by side it drifts for both."""
    registry = GraphRegistry(read_config(EXAMPLES))
    agent = await registry.get("agent")
    server = await asyncio.to_thread(start_server, database, cpus=cpus)
    client = get_client(url=server.url)
    try:
        runs: dict[str, list[scenarios.V2Run]] = {"inprocess": [], **{t: [] for t in V2_TRANSPORTS}}
        _log("protocol v2: the agent's reply through threads.stream and astream_events v3")
        for _ in range(sizes.throughput_reps):
            freeze_client()  # for both sides: the in-process side runs in this process too
            runs["inprocess"].append(await scenarios.v2_once_inprocess(agent, sizes))
            for transport in V2_TRANSPORTS:
                runs[transport].append(await scenarios.v2_once_client(client, sizes, transport))
        tokens = runs["inprocess"][0][0]  # each run of each side must read this many
        return {key: scenarios.v2_figures(found, tokens) for key, found in runs.items()}
    finally:
        await client.http.client.aclose()
        await asyncio.to_thread(server.stop)


async def measure_memory(
    sizes: Sizes, cpus: set[int] | None, database: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """RSS of a fresh server: idle, after two batches of runs, while many streams are open."""
    server = await asyncio.to_thread(start_server, database, cpus=cpus, env=env)
    client = RawClient(server.url)
    errors = 0
    try:
        await asyncio.sleep(0.5)
        idle = rss_kb(server.pid)
        # The first runs import and cache what every later run reuses.
        errors += await scenarios.batched_runs(
            client, sizes.memory_warmup, sizes.memory_batch, sizes.ticks_per_run
        )
        warm = rss_kb(server.pid)
        after: list[int] = []
        for batch in (1, 2):
            _log(f"memory: {sizes.memory_runs} runs (batch {batch} of 2)")
            errors += await scenarios.batched_runs(
                client, sizes.memory_runs, sizes.memory_batch, sizes.ticks_per_run
            )
            await asyncio.sleep(0.2)
            after.append(rss_kb(server.pid))
        anon = rss_kb(server.pid, "RssAnon")
        _log(f"memory: {sizes.memory_streams} concurrent streams")
        with RssSampler(server.pid) as sampler:
            errors += await scenarios.open_streams(
                client, sizes.memory_streams, sizes.ticks_per_run, sizes.memory_stream_delay
            )
        await asyncio.sleep(0.2)
        settled = rss_kb(server.pid)
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)
    growth = after[1] - after[0]
    return {
        "env": env or {},
        "warmup_runs": sizes.memory_warmup,
        "runs_per_batch": sizes.memory_runs,
        "idle_kb": idle,
        "warm_kb": warm,
        "after_first_batch_kb": after[0],
        "after_second_batch_kb": after[1],
        "anon_after_second_batch_kb": anon,
        "growth_first_batch_kb": after[0] - warm,
        "growth_second_batch_kb": growth,
        "growth_per_run_kb": round(growth / sizes.memory_runs, 3),
        "concurrent_streams": sizes.memory_streams,
        "during_streams_peak_kb": sampler.peak,
        "after_streams_kb": settled,
        "errors": errors,
    }


async def distributed_env(name: str) -> dict[str, str]:
    """DATABASE_URI of a freshly created database `name` and REDIS_URI of a flushed database."""
    import psycopg
    import redis.asyncio as aioredis

    admin = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)
    redis_uri = os.environ.get(REDIS_ENV, REDIS_DEFAULT)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    client = aioredis.from_url(redis_uri)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    database_uri = admin.rsplit("/", 1)[0] + "/" + name
    return {"DATABASE_URI": database_uri, "REDIS_URI": redis_uri}


# --- reporting ----------------------------------------------------------------------------------


def mean_figures(a: Any, b: Any) -> Any:
    """Two measurements of the same figures as one: numbers averaged (error counts added),
    anything else taken from the first."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: (a[k] + b[k] if k == "errors" else mean_figures(a[k], b.get(k))) for k in a}
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if isinstance(a, int) and isinstance(b, int):
            return round((a + b) / 2)  # counts and rates measured as whole numbers stay so
        return a if a == b else round((a + b) / 2, 3)
    return a


def median_figures(measured: Sequence[Any]) -> Any:
    """Several measurements of the same figures as one: each number the median of theirs
    (error counts added), anything else taken from the first."""
    first = measured[0]
    if isinstance(first, dict):
        return {
            k: (
                sum(m[k] for m in measured)
                if k == "errors"
                else median_figures([m.get(k) for m in measured])
            )
            for k in first
        }
    numbers = [m for m in measured if isinstance(m, (int, float)) and not isinstance(m, bool)]
    if numbers and len(numbers) == len(measured):
        middle = median(numbers)
        if all(isinstance(m, int) for m in numbers):
            return round(middle)  # counts and rates measured as whole numbers stay so
        return round(middle, 3)
    return first


def pooled_figures(reps: dict[str, Any]) -> dict[str, Any]:
    """The baseline's repetitions beside a client's figures (measure_server) as one set of
    figures, in the shape of measure_inprocess's."""
    return {
        **{key: median_figures(reps[key]) for key in PAIRED if key in reps},
        "concurrency": {n: median_figures(r) for n, r in reps["concurrency"].items()},
    }


# The figures judged against a baseline beside them: (the key its repetitions are kept under,
# the client's figure's value for each repetition, the baseline's figure, the ratio's name).
PAIRED = {
    "ttfe": ("median_ms_blocks", "median_ms", "ttfe_median"),
    "ticker_throughput": ("events_per_s_reps", "events_per_s", "ticker_throughput"),
    "agent_throughput": ("events_per_s_reps", "events_per_s", "agent_throughput"),
}
CONCURRENCY_PAIRED = ("runs_per_s_rounds", "runs_per_s", "concurrency_runs_per_s")


def paired(client: Sequence[float | None], baseline: Sequence[float | None]) -> dict[str, Any]:
    """A client's repetitions of a figure against the baseline's measured around them (one
    before each, one after the last): the ratio of their medians, both taken over the same
    seconds turn about; and the noise around it, each repetition over the mean of the
    baseline's just before and just after it (baseline[i], baseline[i + 1]), lowest and
    highest. Medians, not the pairs' own ratios: the plain baseline's collector stops a
    repetition now and then for longer than the repetition itself (2,003 tokens at 14,000/s
    where its others read 41,000), and such a repetition moved both its pairs. The pairs'
    median is given too: on a machine whose speed changes for seconds at a time, both sides
    alike, each median may land in another state, and the ratio of the two then falls far
    from the pairs, even outside their range (see benchmarks/README.md, "The twenty-eighth
    session")."""
    ours = [c for c in client if c is not None]
    theirs = [b for b in baseline if b]
    each = [
        c / ((a + b) / 2)
        for c, a, b in zip(client, baseline, baseline[1:], strict=False)
        if c is not None and a and b
    ]
    if not ours or not theirs or not each:
        return {"ratio": None, "low": None, "high": None, "median": None, "pairs": 0}
    return {
        "ratio": round(median(ours) / median(theirs), 3),
        "low": round(min(each), 3),
        "high": round(max(each), 3),
        "median": round(median(each), 3),
        "pairs": len(each),
    }


def paired_ratios(figures: dict[str, Any], reps: dict[str, Any]) -> dict[str, Any]:
    """A client's figures against the baseline's repetitions beside them, pair by pair."""
    out: dict[str, Any] = {}
    for key, (each, field, name) in PAIRED.items():
        if key in reps:
            out[name] = paired(figures[key][each], [r[field] for r in reps[key]])
    each, field, name = CONCURRENCY_PAIRED
    out[name] = {
        n: paired(figures["concurrency"][n][each], [r[field] for r in r_n])
        for n, r_n in reps["concurrency"].items()
    }
    return out


DRIFT_FIGURES = (
    ("custom events/s", ("ticker_throughput", "events_per_s")),
    ("tokens/s", ("agent_throughput", "events_per_s")),
    ("200 concurrent runs/s", ("concurrency", "200", "runs_per_s")),
    ("TTFE median ms", ("ttfe", "median_ms")),
)


def _at(figures: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        figures = figures.get(key) if isinstance(figures, dict) else None
    return figures


def _moved(before: Any, after: Any) -> str:
    """How far each of DRIFT_FIGURES moved from one measurement of a baseline to the next."""
    return ", ".join(
        f"{name} {_f(_at(before, path))} -> {_f(_at(after, path))}" for name, path in DRIFT_FIGURES
    )


def drift_line(result: dict[str, Any]) -> str:
    """How far each baseline moved between its measurement before the servers and after."""
    said = []
    for label, key in (
        ("in-process", "inprocess_before_after"),
        ("like for like", "inprocess_like_server_before_after"),
    ):
        said.append(f"{label}: " + _moved(*result[key]))
    line = "baselines before the servers -> after them (the ratios use their mean): " + "; ".join(
        said
    )
    for key, label, which in (
        ("agentstream", "embedded", "like"),
        *((key, label, "plain") for key, label in EXTRA_DEPLOYMENTS),
    ):
        beside = [
            (kind, figures[f"{which}_beside"]["reps"])
            for kind, figures in (result.get(key) or {}).items()
            if figures.get(f"{which}_beside")
        ]
        if not beside:
            continue
        spread = [f"{kind}: " + _spread(reps) for kind, reps in beside]
        line += (
            f"\n{label}: the {'like-for-like' if which == 'like' else 'plain'} baseline beside "
            "each client's figures, its lowest - highest repetition: " + "; ".join(spread)
        )
    return line


def _spread(reps: dict[str, Any]) -> str:
    """The lowest and highest of the baseline's repetitions beside a client's figures, for
    each of DRIFT_FIGURES."""
    said = []
    for name, path in DRIFT_FIGURES:
        measured = _at(reps, path[:-1]) or []  # the figure's repetitions, by its path's head
        values = [m[path[-1]] for m in measured if m.get(path[-1]) is not None]
        if values:
            said.append(f"{name} {_f(min(values))} - {_f(max(values))}")
    return ", ".join(said)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def ratios(server: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Server figure / in-process figure, per client."""
    out: dict[str, Any] = {}
    for kind, f in server.items():
        r: dict[str, Any] = {
            "ttfe_median": _ratio(f["ttfe"]["median_ms"], base["ttfe"]["median_ms"]),
            "ttfe_p99": _ratio(f["ttfe"]["p99_ms"], base["ttfe"]["p99_ms"]),
        }
        for key in ("ticker_throughput", "agent_throughput"):
            r[key] = _ratio(f[key]["events_per_s"], base[key]["events_per_s"])
        r["agent_first"] = _ratio(
            f["agent_throughput"].get("first_ms"), base["agent_throughput"].get("first_ms")
        )
        r["concurrency_runs_per_s"] = {
            n: _ratio(c["runs_per_s"], base["concurrency"][n]["runs_per_s"])
            for n, c in f["concurrency"].items()
        }
        r["concurrency_median_latency"] = {
            n: _ratio(c["median_ms"], base["concurrency"][n]["median_ms"])
            for n, c in f["concurrency"].items()
        }
        if "threaded" in base:  # a baseline measured beside the figures has none, nor joins
            r["threaded_runs_per_s"] = {
                n: _ratio(t["runs_per_s"], base["threaded"][n]["runs_per_s"])
                for n, t in f["threaded"].items()
            }
            r["threaded_median_latency"] = {
                n: _ratio(t["median_ms"], base["threaded"][n]["median_ms"])
                for n, t in f["threaded"].items()
            }
            r["threaded_first_p50"] = {
                n: _ratio(t.get("first_p50_ms"), base["threaded"][n].get("first_p50_ms"))
                for n, t in f["threaded"].items()
            }
        if "join" in base:
            r["join_run_seconds"] = {
                n: _ratio(j["run_seconds"], base["join"]["run_seconds"])
                for n, j in f["join"].items()
            }
        out[kind] = r
    return out


def beside_ratios(server: dict[str, Any], which: str = "like") -> dict[str, Any]:
    """Each client's figures over the baseline measured beside them (`like` or `plain`): the
    first event, throughput and concurrent runs turn about (`paired`: the ratio of the two
    medians, with the pairs' range), the rest against the baseline's repetitions pooled; {}
    where there is none."""
    out: dict[str, Any] = {}
    for kind, f in server.items():
        beside = f.get(f"{which}_beside")
        if not beside:
            continue
        r = ratios({kind: f}, beside["figures"])[kind]
        r["paired"] = pairs = paired_ratios(f, beside["reps"])
        for name, pair in pairs.items():
            if name == CONCURRENCY_PAIRED[2]:
                r[name] = {n: p["ratio"] for n, p in pair.items()}
            else:
                r[name] = pair["ratio"]
        out[kind] = r
    return out


def _judge(value: float | None, threshold: float, higher_is_better: bool = True) -> dict[str, Any]:
    met = value is not None and (value >= threshold if higher_is_better else value <= threshold)
    return {"value": value, "met": met}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The targets of issue 17 (each judged per client, on the deployments it names) and the
    leak check. Embedded speed is judged against the like-for-like baseline (in-process on
    uvloop with the server's collector settings); the distributed figures against the plain
    in-process baseline, as the issue quoted them; threaded runs against like for like on both."""
    emb = result["agentstream"]
    # The first event, throughput and concurrent runs against the baseline measured beside
    # them where there is one (seconds away); threaded runs against the run's own.
    like = result.get("ratios_like_beside") or result["ratios_like_server"]
    like_threaded = result["ratios_like_server"]
    # Each distributed deployment measured: (its column label, figures, ratios, like for like).
    like_base = result["inprocess_like_server"]
    # Their throughput against the plain baseline measured beside them, where there is one.
    extras = [
        (
            label,
            result[key],
            result.get(f"{key}_ratios_beside") or result[f"{key}_ratios"],
            ratios(result[key], like_base),
        )
        for key, label in EXTRA_DEPLOYMENTS
        if result.get(key)
    ]
    plain_beside = any(result.get(f"{key}_ratios_beside") for key, _ in EXTRA_DEPLOYMENTS)
    rows: list[dict[str, Any]] = []

    def add(name: str, baseline: str, cells: dict[str, dict[str, Any]]) -> None:
        rows.append({"target": name, "baseline": baseline, "cells": cells})

    def embedded(pick: Any, threshold: float, higher: bool = True) -> dict[str, Any]:
        return {k: _judge(pick(k), threshold, higher) for k in CLIENTS}

    def distributed(pick: Any, threshold: float, higher: bool = True) -> dict[str, Any]:
        """pick(figures, ratios, like-for-like ratios, client) on every distributed deployment."""
        return {
            f"{label} {k}": _judge(pick(figures, ratio, dlike, k), threshold, higher)
            for label, figures, ratio, dlike in extras
            for k in CLIENTS
        }

    def c200(figures: dict[str, Any], ratio: dict[str, Any], k: str) -> float | None:
        errors = figures[k]["concurrency"].get("200", {}).get("errors", 1)
        return None if errors else ratio[k]["concurrency_runs_per_s"].get("200")

    like_name = "in-process, like for like"
    beside_name = like_name + (", beside" if result.get("ratios_like_beside") else "")
    add(
        "custom events/s >= 0.6x",
        beside_name,
        embedded(lambda k: like[k]["ticker_throughput"], 0.6),
    )
    add(
        "messages-tuple tokens/s >= 0.8x",
        beside_name,
        embedded(lambda k: like[k]["agent_throughput"], 0.8),
    )
    add(
        "200 concurrent runs/s >= 0.5x, no errors",
        beside_name,
        embedded(lambda k: c200(emb, like, k), 0.5),
    )
    add("TTFE median <= 2x", beside_name, embedded(lambda k: like[k]["ttfe_median"], 2.0, False))
    for n in emb["sdk"]["threaded"]:
        add(
            f"{n} threaded runs/s >= 0.5x",
            like_name,
            {
                **embedded(lambda k, n=n: like_threaded[k]["threaded_runs_per_s"][n], 0.5),
                **distributed(lambda f, r, dl, k, n=n: dl[k]["threaded_runs_per_s"][n], 0.5),
            },
        )
        add(
            f"{n} threaded: close after last event p99 < 20 ms",
            "absolute",
            {
                **embedded(lambda k, n=n: emb[k]["threaded"][n]["close_p99_ms"], 20.0, False),
                **distributed(
                    lambda f, r, dl, k, n=n: f[k]["threaded"][n]["close_p99_ms"], 20.0, False
                ),
            },
        )
    if extras:
        plain = "in-process, beside" if plain_beside else "in-process"
        add(
            "custom events/s >= 0.5x",
            plain,
            distributed(lambda f, r, dl, k: r[k]["ticker_throughput"], 0.5),
        )
        add(
            "messages-tuple tokens/s >= 0.6x",
            plain,
            distributed(lambda f, r, dl, k: r[k]["agent_throughput"], 0.6),
        )
        add(
            "200 concurrent runs/s >= 0.4x, no errors",
            plain,
            distributed(lambda f, r, dl, k: c200(f, r, k), 0.4),
        )
        add(
            "TTFE median <= 3 ms",
            "absolute",
            distributed(lambda f, r, dl, k: f[k]["ttfe"]["median_ms"], 3.0, False),
        )
    base_v2 = result["v2"]["inprocess"]["tokens_per_s"]
    add(
        "protocol v2: threads.stream tokens/s >= 0.8x",
        "astream_events v3",
        {
            f"v2 {t}": _judge(_ratio(result["v2"][t]["tokens_per_s"], base_v2), 0.8)
            for t in V2_TRANSPORTS
        },
    )
    # The leak check: the embedded server with finished runs' logs expiring at once (with the
    # defaults it keeps each finished run's log for reconnects, by design; reported beside).
    memory = {"embedded": result["memory_logs_expire"]["growth_second_batch_kb"] <= MEMORY_NOISE_KB}
    if result.get("memory_distributed"):
        memory["distributed"] = (
            result["memory_distributed"]["growth_second_batch_kb"] <= MEMORY_NOISE_KB
        )
    return {"issue17": rows, "memory_no_growth_beyond_noise": memory}


def count_errors(node: Any) -> int:
    if isinstance(node, dict):
        return sum(
            (v if k == "errors" and isinstance(v, int) else count_errors(v))
            for k, v in node.items()
        )
    return 0


def error_kinds(node: Any, where: str = "") -> list[tuple[str, str, int]]:
    """(where, what, how many) of every failed run the figures counted, as each scenario
    recorded it (its `error_kinds`)."""
    found: list[tuple[str, str, int]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "error_kinds" and isinstance(v, dict):
                found += [(where, kind, count) for kind, count in v.items()]
            else:
                found += error_kinds(v, f"{where}/{k}" if where else str(k))
    return found


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _x(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _range(pair: dict[str, Any]) -> str:
    """A paired ratio (paired()) with the range of its pairs' ratios, the noise around it, and
    their median."""
    if pair["ratio"] is None:
        return "-"
    return f"{_x(pair['ratio'])} ({pair['low']:.2f}-{pair['high']:.2f}, {pair['median']:.2f})"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    server = result["agentstream"]
    base = result["inprocess"]
    ratio = result["ratios"]
    ref = result.get("reference")
    extras = [(key, label) for key, label in EXTRA_DEPLOYMENTS if result.get(key)]
    headers = ["figure", "in-process"]
    for kind in CLIENTS:
        headers += [f"agentstream {kind}", "ratio"]
    for _, label in extras:
        headers += [h for kind in CLIENTS for h in (f"{label} {kind}", "ratio")]
    if ref:
        headers += [f"reference {kind}" for kind in CLIENTS]
    rows: list[list[str]] = []

    def row(name: str, base_value: str, pick: Any, rpick: Any) -> None:
        cells = [name, base_value]
        for kind in CLIENTS:
            cells += [pick(server[kind]), rpick(ratio[kind])]
        for key, _ in extras:
            for kind in CLIENTS:
                cells += [pick(result[key][kind]), rpick(result[f"{key}_ratios"][kind])]
        if ref:
            cells += [pick(ref[kind]) for kind in CLIENTS]
        rows.append(cells)

    row(
        "TTFE median (ms)",
        _f(base["ttfe"]["median_ms"], 3),
        lambda f: _f(f["ttfe"]["median_ms"], 3),
        lambda r: _x(r["ttfe_median"]),
    )
    row(
        "TTFE p99 (ms)",
        _f(base["ttfe"]["p99_ms"], 3),
        lambda f: _f(f["ttfe"]["p99_ms"], 3),
        lambda r: _x(r["ttfe_p99"]),
    )
    for key, name in (
        ("ticker_throughput", f"custom events/s ({result['sizes']['ticker_events']:,} events)"),
        ("agent_throughput", f"messages-tuple events/s ({base['agent_throughput']['events']:,})"),
    ):
        row(
            name,
            _f(base[key]["events_per_s"]),
            lambda f, k=key: _f(f[k]["events_per_s"]),
            lambda r, k=key: _x(r[k]),
        )
    row(
        "messages-tuple: first token, median (ms)",
        _f(base["agent_throughput"].get("first_ms"), 1),
        lambda f: _f(f["agent_throughput"].get("first_ms"), 1),
        lambda r: _x(r.get("agent_first")),
    )
    for n in base["concurrency"]:
        row(
            f"{n} concurrent: runs/s",
            _f(base["concurrency"][n]["runs_per_s"], 1),
            lambda f, n=n: _f(f["concurrency"][n]["runs_per_s"], 1),
            lambda r, n=n: _x(r["concurrency_runs_per_s"][n]),
        )
        row(
            f"{n} concurrent: latency median / p99 (ms)",
            f"{_f(base['concurrency'][n]['median_ms'], 1)} / "
            f"{_f(base['concurrency'][n]['p99_ms'], 1)}",
            lambda f, n=n: (
                f"{_f(f['concurrency'][n]['median_ms'], 1)} / "
                f"{_f(f['concurrency'][n]['p99_ms'], 1)}"
            ),
            lambda r, n=n: _x(r["concurrency_median_latency"][n]),
        )
        row(
            f"{n} concurrent: errors",
            "0",
            lambda f, n=n: _f(f["concurrency"][n]["errors"]),
            lambda r: "",
        )
    for n in base["threaded"]:
        row(
            f"{n} threaded (create thread + stream agent): runs/s",
            _f(base["threaded"][n]["runs_per_s"], 1),
            lambda f, n=n: _f(f["threaded"][n]["runs_per_s"], 1),
            lambda r, n=n: _x(r["threaded_runs_per_s"][n]),
        )
        row(
            f"{n} threaded: latency, began to closed, median / p99 (ms)",
            f"{_f(base['threaded'][n]['median_ms'], 1)} / {_f(base['threaded'][n]['p99_ms'], 1)}",
            lambda f, n=n: (
                f"{_f(f['threaded'][n]['median_ms'], 1)} / {_f(f['threaded'][n]['p99_ms'], 1)}"
            ),
            lambda r, n=n: _x(r.get("threaded_median_latency", {}).get(n)),
        )
        row(
            f"{n} threaded: first event after the client began p50 / p99 (ms)",
            f"{_f(base['threaded'][n].get('first_p50_ms'), 1)} / "
            f"{_f(base['threaded'][n].get('first_p99_ms'), 1)}",
            lambda f, n=n: (
                f"{_f(f['threaded'][n].get('first_p50_ms'), 1)} / "
                f"{_f(f['threaded'][n].get('first_p99_ms'), 1)}"
            ),
            lambda r, n=n: _x(r.get("threaded_first_p50", {}).get(n)),
        )
        row(
            f"{n} threaded: stream close after its last event p50 / p99 (ms)",
            "-",
            lambda f, n=n: (
                f"{_f(f['threaded'][n]['close_p50_ms'], 1)} / "
                f"{_f(f['threaded'][n]['close_p99_ms'], 1)}"
            ),
            lambda r: "",
        )
        row(
            f"{n} threaded: the same, the server's side p50 / p99 (ms, within a bucket: <=)",
            "-",
            lambda f, n=n: (
                f"{_f(f['threaded'][n].get('server_close_p50_ms'), 0)} / "
                f"{_f(f['threaded'][n].get('server_close_p99_ms'), 0)}"
            ),
            lambda r: "",
        )
        row(
            f"{n} threaded: the runs' event loop lag p50 / p99 (ms, within a bucket: <=)",
            "-",
            lambda f, n=n: (
                f"{_f(f['threaded'][n].get('loop_lag_p50_ms'), 1)} / "
                f"{_f(f['threaded'][n].get('loop_lag_p99_ms'), 1)}"
            ),
            lambda r: "",
        )
    for j in result["sizes"]["joiners"]:
        n = str(j)
        row(
            f"{n} joiner(s): events each (min/max of {base['join']['events']})",
            _f(base["join"]["events"]),
            lambda f, n=n: (
                f"{f['join'][n]['events_per_joiner_min']}/{f['join'][n]['events_per_joiner_max']}"
            ),
            lambda r: "",
        )
        row(
            f"{n} joiner(s): final-event lag first->last (ms)",
            "-",
            lambda f, n=n: _f(f["join"][n]["final_event_lag_ms"], 1),
            lambda r: "",
        )
        row(
            f"{n} joiner(s): run first->last tick (s)",
            _f(base["join"]["run_seconds"], 3),
            lambda f, n=n: _f(f["join"][n]["run_seconds"], 3),
            lambda r, n=n: _x(r["join_run_seconds"][n]),
        )
    parts = [_table(headers, rows), _busy_table(result)]
    if result.get("inprocess_like_server"):
        parts.append(_like_table(result))
    plain_beside = _plain_beside_table(result)
    if plain_beside:
        parts.append(plain_beside)
    parts.append(_v2_table(result))
    m = result["memory"]
    e = result["memory_logs_expire"]
    mem_rows = [
        ["idle (just started)", "idle_kb"],
        [f"after {m['warmup_runs']:,} warm-up runs", "warm_kb"],
        [f"after {m['runs_per_batch']:,} more runs", "after_first_batch_kb"],
        [f"after {m['runs_per_batch']:,} more runs again", "after_second_batch_kb"],
        [f"growth over the second {m['runs_per_batch']:,} runs", "growth_second_batch_kb"],
        ["growth per run", "growth_per_run_kb"],
        [f"peak during {m['concurrent_streams']} concurrent streams", "during_streams_peak_kb"],
        ["after those streams", "after_streams_kb"],
    ]
    mem_headers = ["server RSS (VmRSS, KiB)", "defaults", f"{EXPIRE_ENV}={EXPIRE_SECONDS}"]
    mems = [m, e]
    if result.get("memory_distributed"):
        mem_headers.append("distributed, defaults")
        mems.append(result["memory_distributed"])
    parts.append(
        _table(mem_headers, [[name, *(_f(x[key]) for x in mems)] for name, key in mem_rows])
    )
    if not ref:
        parts.append("reference: not measured")

    parts.append(_targets_table(result))
    memory = result["targets"]["memory_no_growth_beyond_noise"]
    verdicts = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in memory.items())
    lines = [
        f"no memory growth across {m['runs_per_batch']:,} runs beyond noise "
        f"(<= {MEMORY_NOISE_KB} KiB; embedded with finished logs expiring): {verdicts}",
        f"(with the defaults the embedded server keeps each finished run's log for "
        f"reconnects: {_f(m['growth_per_run_kb'])} KiB per run, until it expires or the "
        f"retention budget drops it)",
    ]
    lines.append(drift_line(result))
    lines += _services_lines(result)
    lines += _requests_lines(result)
    lines.append(f"errors in total: {result['errors']}")
    lines += [f"  {where}: {count} x {kind}" for where, kind, count in error_kinds(result)]
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _targets_table(result: dict[str, Any]) -> str:
    """Issue 17's targets, a row each: the figure per client and deployment, and met or not."""
    rows = result["targets"]["issue17"]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row["cells"] if c not in columns]
    table = []
    for row in rows:
        cells = []
        for column in columns:
            cell = row["cells"].get(column)
            if cell is None:
                cells.append("")
                continue
            value = cell["value"]
            if value is None:
                shown = "-"
            else:
                shown = _f(value, 1) if row["baseline"] == "absolute" else f"{value:.2f}x"
            cells.append(f"{shown} {'met' if cell['met'] else 'NOT met'}")
        table.append([row["target"], row["baseline"], *cells])
    return _table(["targets (issue 17)", "against", *columns], table)


def _services_lines(result: dict[str, Any]) -> list[str]:
    """PostgreSQL statements and Redis round trips per run on each distributed deployment."""
    lines = []
    for key, name in (("distributed", "distributed (dev)"), ("split", "serve + worker")):
        said = _services_said(result.get(key))
        if said:
            lines.append(f"{name}, per run: PostgreSQL statements / Redis round trips: {said}")
    return lines


def _requests_lines(result: dict[str, Any]) -> list[str]:
    """The API's requests per threaded run, by client: the SDK checks a run after its stream
    ends without an `end` event (LangGraph Server sends none either), and the threaded close
    it measures waits for that check."""
    lines = []
    for key, name in (("agentstream", "agentstream"), ("distributed", "distributed (dev)"),
                      ("split", "serve + worker")):  # fmt: skip
        figures = result.get(key)
        if not figures:
            continue  # not measured (no --distributed)
        said = []
        for k in CLIENTS:
            for n, t in figures[k]["threaded"].items():
                per = t.get("requests_per_run")
                if per:
                    routes = ", ".join(f"{route} {count:g}" for route, count in per.items())
                    said.append(f"{k} {n}: {sum(per.values()):g} ({routes})")
        if said:
            lines.append(f"{name}, API requests per threaded run: {'; '.join(said)}")
    return lines


def _services_said(dist: dict[str, Any] | None) -> str | None:
    if not dist:
        return None
    said = []
    for k in CLIENTS:
        for scenario in ("concurrency", "threaded"):
            for n, figures in dist[k][scenario].items():
                per = figures.get("services_per_run")
                if per:
                    kind = "stateless" if scenario == "concurrency" else "threaded"
                    said.append(
                        f"{k} {n} {kind}: {per['postgres_statements']:.1f} / "
                        f"{per['redis_round_trips']:.1f}"
                    )
    return "; ".join(said) or None


def _like_table(result: dict[str, Any]) -> str:
    """The embedded figures against the like-for-like baseline: the run's own (measured before
    and after every server) and, where measured, the one beside each client's figures."""
    like, lratio = result["inprocess_like_server"], result["ratios_like_server"]
    server = result["agentstream"]
    beside = result.get("ratios_like_beside") or {}
    kinds = [k for k in CLIENTS if k in beside]

    def base_of(kind: str) -> dict[str, Any]:
        pooled: dict[str, Any] = server[kind]["like_beside"]["figures"]
        return pooled

    def row(name: str, value: Any, digits: int, ratio: Any) -> list[str]:
        cells = [name, _f(value(like), digits), *(_x(ratio(lratio[k])) for k in CLIENTS)]
        for k in kinds:
            cells += [_f(value(base_of(k)), digits), _range(ratio(beside[k]["paired"]))]
        return cells

    rows = [
        row("TTFE median (ms)", lambda b: b["ttfe"]["median_ms"], 3, lambda r: r["ttfe_median"]),
        *(
            row(name, lambda b, key=key: b[key]["events_per_s"], 2, lambda r, key=key: r[key])
            for key, name in (
                ("ticker_throughput", "custom events/s"),
                ("agent_throughput", "messages-tuple events/s"),
            )
        ),
        *(
            row(
                f"{n} concurrent: runs/s",
                lambda b, n=n: b["concurrency"][n]["runs_per_s"],
                1,
                lambda r, n=n: r["concurrency_runs_per_s"][n],
            )
            for n in like["concurrency"]
        ),
    ]
    headers = ["like for like: in-process on uvloop, server GC", "in-process"]
    headers += [f"agentstream {k} ratio" for k in CLIENTS]
    for k in kinds:
        headers += [f"beside {k}: in-process", "ratio"]
    return _table(headers, rows)


def _plain_beside_table(result: dict[str, Any]) -> str | None:
    """The distributed deployments' throughput against the plain in-process baseline measured
    beside each client's figures: baseline, ratio."""
    columns = [
        (key, label, kind)
        for key, label in EXTRA_DEPLOYMENTS
        if result.get(key)
        for kind in CLIENTS
        if result[key][kind].get("plain_beside")
    ]
    if not columns:
        return None
    picks: list[tuple[str, Any, int, Any]] = [
        (
            "custom events/s",
            lambda f: f["ticker_throughput"]["events_per_s"],
            0,
            lambda r: r["ticker_throughput"],
        ),
        (
            "messages-tuple events/s",
            lambda f: f["agent_throughput"]["events_per_s"],
            0,
            lambda r: r["agent_throughput"],
        ),
    ]
    for n, _ in result["sizes"]["concurrency"]:
        picks.append(
            (
                f"{n} concurrent: runs/s",
                lambda f, n=str(n): f["concurrency"][n]["runs_per_s"],
                1,
                lambda r, n=str(n): r["concurrency_runs_per_s"][n],
            )
        )
    rows = []
    for name, pick, digits, pick_ratio in picks:
        cells = [name]
        for key, _, kind in columns:
            base = pick(result[key][kind]["plain_beside"]["figures"])
            pair = pick_ratio(result[f"{key}_ratios_beside"][kind]["paired"])
            cells.append(f"{_f(base, digits)} / {_range(pair)}")
        rows.append(cells)
    headers = ["against in-process measured beside: baseline / ratio"]
    headers += [f"{label} {kind}" for _, label, kind in columns]
    return _table(headers, rows)


def _busy_table(result: dict[str, Any]) -> str:
    """How busy the client's core and the server's were during each figure, and the whole
    machine (200 % with two cores: the services, PostgreSQL and Redis, share them): where the
    client was near 100 % and the server was not, the figure is the client's limit."""
    columns = [("agentstream", "agentstream")]
    columns += [(key, label) for key, label in EXTRA_DEPLOYMENTS if result.get(key)]
    headers = ["cores busy during the figure: client % / server % / machine %"]
    headers += [f"{label} {kind}" for _, label in columns for kind in CLIENTS]
    sizes = result["sizes"]
    picks: list[tuple[str, Any]] = [
        ("TTFE", lambda f: f["ttfe"]),
        (f"custom events ({sizes['ticker_events']:,})", lambda f: f["ticker_throughput"]),
        ("messages-tuple tokens", lambda f: f["agent_throughput"]),
    ]
    for n, _ in sizes["concurrency"]:
        picks.append((f"{n} concurrent", lambda f, n=str(n): f["concurrency"][n]))
    for n, _ in sizes["threaded"]:
        picks.append((f"{n} threaded", lambda f, n=str(n): f["threaded"][n]))

    def cell(figure: dict[str, Any]) -> str:
        busy = figure.get("busy") or {}
        if not busy:
            return "-"
        shares = (busy.get("client_pct"), busy.get("server_pct"), busy.get("machine_pct"))
        return " / ".join(_f(share) for share in shares)

    rows = [
        [name, *(cell(pick(result[key][kind])) for key, _ in columns for kind in CLIENTS)]
        for name, pick in picks
    ]
    return _table(headers, rows)


def _v2_table(result: dict[str, Any]) -> str:
    base, v2 = result["v2"]["inprocess"], result["v2"]
    headers = [f"protocol v2: the agent's reply ({base['tokens']:,} tokens)", "astream_events v3"]
    for transport in V2_TRANSPORTS:
        headers += [f"threads.stream {transport}", "ratio"]
    rows = []
    for key, name, digits in (
        ("tokens_per_s", "tokens/s, median", 0),
        ("first_token_ms", "open stream -> first token (ms), median", 1),
    ):
        cells = [name, _f(base[key], digits)]
        for transport in V2_TRANSPORTS:
            cells += [_f(v2[transport][key], digits), _x(_ratio(v2[transport][key], base[key]))]
        rows.append(cells)
    return _table(headers, rows)


def machine(server_cpus: set[int] | None, bench_cpus: set[int] | None) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_cpus": sorted(server_cpus) if server_cpus else None,
        "benchmark_cpus": sorted(bench_cpus) if bench_cpus else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- the command --------------------------------------------------------------------------------


async def main_async(sizes: Sizes, quick: bool, distributed: bool = False) -> dict[str, Any]:
    server_cpus, bench_cpus = cpu_split()
    pin_self(bench_cpus)
    result: dict[str, Any] = {
        "machine": machine(server_cpus, bench_cpus),
        "quick": quick,
        "sizes": asdict(sizes),
    }
    started = time.perf_counter()
    gc.collect()
    # Each baseline is measured before the servers and again after them, and the ratios are
    # against the two's mean: the machine's speed drifts over minutes, and the report says by
    # how much it did.
    before = await measure_inprocess(sizes)
    like_before = await asyncio.to_thread(measure_inprocess_like_server, sizes)
    result["inprocess"] = before
    agent_messages = before["agent_throughput"]["events"]
    with tempfile.TemporaryDirectory(prefix="agentstream-bench-") as tmp:
        workdir = Path(tmp)
        result["agentstream"] = await measure_fresh_server(
            workdir / "bench.sqlite",
            server_cpus,
            sizes,
            agent_messages,
            "agentstream",
            beside="like",
        )
        result["v2"] = await measure_v2(workdir / "v2.sqlite", server_cpus, sizes)
        _log("memory: a fresh server with the default settings")
        result["memory"] = await measure_memory(sizes, server_cpus, workdir / "memory.sqlite")
        # The same load with finished runs' event logs dropped at once: growth that remains
        # here is not the logs' retention.
        _log(f"memory: a fresh server with {EXPIRE_ENV}={EXPIRE_SECONDS}")
        result["memory_logs_expire"] = await measure_memory(
            sizes, server_cpus, workdir / "expire.sqlite", {EXPIRE_ENV: EXPIRE_SECONDS}
        )
        result["distributed"] = result["memory_distributed"] = result["split"] = None
        if distributed:
            _log("distributed: agentstream dev on PostgreSQL + Redis")
            env = await distributed_env("agentstream_bench")
            result["distributed"] = await measure_fresh_server(
                workdir / "unused.sqlite",
                server_cpus,
                sizes,
                agent_messages,
                "distributed",
                env,
                beside="plain",
            )
            _log("distributed: agentstream serve + agentstream worker on PostgreSQL + Redis")
            env = await distributed_env("agentstream_bench_split")
            result["split"] = await measure_split(server_cpus, sizes, agent_messages, env)
            _log("memory: a fresh distributed server with the default settings")
            env = await distributed_env("agentstream_bench_memory")
            result["memory_distributed"] = await measure_memory(
                sizes, server_cpus, workdir / "unused.sqlite", env
            )
    reference = os.environ.get(REFERENCE_ENV)
    if reference:
        reference = reference.rstrip("/")
        await asyncio.to_thread(wait_ready, reference)
        result["reference"] = await measure_server(
            reference, sizes, agent_messages, "reference", ()
        )
        result["reference_url"] = reference
    else:
        result["reference"] = None
    after = await measure_inprocess(sizes, "in-process (again)")
    like_after = await asyncio.to_thread(measure_inprocess_like_server, sizes)
    result["inprocess_before_after"] = [before, after]
    result["inprocess_like_server_before_after"] = [like_before, like_after]
    result["inprocess"] = mean_figures(before, after)
    result["inprocess_like_server"] = mean_figures(like_before, like_after)
    result["ratios"] = ratios(result["agentstream"], result["inprocess"])
    result["ratios_like_server"] = ratios(result["agentstream"], result["inprocess_like_server"])
    result["ratios_like_beside"] = beside_ratios(result["agentstream"])
    if result["reference"]:
        result["reference_ratios"] = ratios(result["reference"], result["inprocess"])
    for key, _ in EXTRA_DEPLOYMENTS:
        if result[key]:
            result[f"{key}_ratios"] = ratios(result[key], result["inprocess"])
            result[f"{key}_ratios_beside"] = beside_ratios(result[key], "plain")
    result["targets"] = targets(result)
    result["errors"] = count_errors(
        {
            k: result[k]
            for k in (
                "inprocess",
                "inprocess_like_server",
                "agentstream",
                "memory",
                "memory_logs_expire",
                "distributed",
                "split",
                "memory_distributed",
                "reference",
                "v2",
            )
            if result[k]
        }
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help=f"also measure PostgreSQL + Redis ({POSTGRES_ENV}, {REDIS_ENV}; defaults "
        f"{POSTGRES_DEFAULT} and {REDIS_DEFAULT}, which is flushed)",
    )
    args = parser.parse_args(argv)
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    result = asyncio.run(main_async(sizes, args.quick, args.distributed))
    m = result["machine"]
    print(
        f"agentstream benchmark{' (quick)' if args.quick else ''}: {m['date']}, "
        f"{m['nproc']} cores ({m['cpu']}), Python {m['python']}; server on CPU "
        f"{m['server_cpus']}, client and in-process baseline on CPU {m['benchmark_cpus']}; "
        f"{result['seconds']} s\n"
    )
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
