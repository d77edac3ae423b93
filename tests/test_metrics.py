"""/metrics (issue 11, point 4): Prometheus text with LangGraph Server's metric names, so
existing dashboards work, plus the streams' own; a worker process serves its own on a port."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agentstream.execution.executor import PUBLISH_MOST, YIELD_EVERY
from agentstream.storage.sql_pgverbs import ENDED_CHANNEL
from tests.cluster import running_cluster
from tests.conftest import ServerProcess
from tests.services import free_port
from tests.sse import sse_events

HI = {"messages": [{"role": "human", "content": "hi"}]}

LANGGRAPH_NAMES = {
    "lg_api_num_pending_runs",
    "lg_api_num_running_runs",
    "lg_api_pending_runs_wait_time_max",
    "lg_api_pending_runs_wait_time_med",
    "lg_api_pending_unblocked_runs_wait_time_max",
    "lg_api_workers_max",
    "lg_api_workers_active",
    "lg_api_workers_available",
    "lg_api_http_requests_total",
    "lg_api_http_requests_latency_seconds_bucket",
    "lg_api_http_requests_latency_seconds_count",
    "lg_api_pg_pool_max",
    "lg_api_pg_pool_size",
    "lg_api_pg_pool_available",
    "lg_api_redis_pool_max",
    "lg_api_redis_pool_size",
    "lg_api_redis_pool_available",
}
STREAM_NAMES = {
    "agentstream_time_to_first_event_seconds_count",
    "agentstream_queue_wait_seconds_count",
    "agentstream_events_published_total",
    "agentstream_streams_active",
    "agentstream_stream_joins_total",
    "agentstream_stream_resumes_total",
    "agentstream_stream_evictions_total",
    "agentstream_stream_close_seconds_count",
    "agentstream_event_loop_lag_seconds_count",
}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_carry_langgraphs_names_and_the_streams(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "agent", "input": HI, "stream_mode": ["updates"]}
        stream = http.post(f"/threads/{thread}/runs/stream", json=body)
        assert stream.status_code == 200
        run_id = stream.headers["content-location"].rsplit("/", 1)[1]
        joined = http.get(f"/threads/{thread}/runs/{run_id}/stream", headers={"Last-Event-ID": "1"})
        assert joined.status_code == 200
        waiting = http.post("/threads", json={}).json()["thread_id"]
        delayed = {"assistant_id": "agent", "input": HI, "after_seconds": 3600}
        assert http.post(f"/threads/{waiting}/runs", json=delayed).status_code == 200
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    names = {s.name for s in found}
    assert LANGGRAPH_NAMES - names == set()
    assert STREAM_NAMES - names == set()
    assert value(found, "lg_api_num_pending_runs") >= 1  # the delayed run
    path = "/threads/{thread_id}/runs/stream"
    assert value(found, "lg_api_http_requests_total", method="POST", path=path, status="200") >= 1
    join = "/threads/{thread_id}/runs/{run_id}/stream"
    assert value(found, "lg_api_http_requests_total", method="GET", path=join, status="200") >= 1
    assert value(found, "agentstream_stream_joins_total") >= 1
    assert value(found, "agentstream_stream_resumes_total") >= 1
    assert all(s.labels.get("path") != f"/threads/{thread}/runs/stream" for s in found)


def test_each_stream_the_server_ends_reports_its_close_after_its_last_event(
    server: ServerProcess,
) -> None:
    close = "agentstream_stream_close_seconds"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = samples(http.get("/metrics").text)
        thread = http.post("/threads", json={}).json()["thread_id"]
        for path in ("/runs/stream", f"/threads/{thread}/runs/stream"):
            body = {"assistant_id": "agent", "input": HI, "stream_mode": ["values"]}
            response = http.post(path, json=body)
            assert [e for e in sse_events(response.text) if e[0] == "values"]
        after = samples(http.get("/metrics").text)
    assert value(after, f"{close}_count") - value(before, f"{close}_count") == 2
    added = value(after, f"{close}_sum") - value(before, f"{close}_sum")
    assert 0 <= added < 60
    # Each lands in a bucket: the counts by bound add up to the count.
    inf = value(after, f"{close}_bucket", le="+Inf") - value(before, f"{close}_bucket", le="+Inf")
    assert inf == 2


def test_an_unknown_path_counts_as_other_and_adds_no_series(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(3):
            assert http.get(f"/no/such/path/{i}").status_code == 404
        found = samples(http.get("/metrics").text)
    paths = {s.labels.get("path") for s in found if s.name == "lg_api_http_requests_total"}
    assert "other" in paths
    assert not any(p and p.startswith("/no/such") for p in paths)


def test_the_embedded_server_reports_its_runs_first_events(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # Its runs at once under LangGraph Server's variable, which deployments already set.
    proc = server_factory(env={"N_JOBS_PER_WORKER": "7"})
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        for _ in range(3):
            assert http.post("/runs/wait", json={"assistant_id": "agent", "input": HI}).is_success
        found = samples(http.get("/metrics").text)
    assert value(found, "agentstream_time_to_first_event_seconds_count") == 3
    assert value(found, "agentstream_queue_wait_seconds_count") == 3
    assert value(found, "agentstream_events_published_total") >= 3
    assert value(found, "lg_api_workers_max") == 7


def _statements_for_five_runs(http: httpx.Client, port: int) -> float:
    """The worker's PostgreSQL statements for five runs one after another, the fewest of three
    tries: besides the runs' own, its cron scheduler looks for due crons at every minute's start
    and its lease renewals come every third of a lease (2 s in the tests' clusters), and either
    may fall inside a try (one in 25 did, on a slow machine); a cost every run pays is in all
    three."""
    metrics = f"http://127.0.0.1:{port}/metrics"

    def statements() -> float:
        found = samples(httpx.get(metrics, timeout=10).text)
        return value(found, "agentstream_postgres_statements_total")

    spent = []
    for _ in range(3):
        before = statements()
        for _ in range(5):
            body = {"assistant_id": "ticker", "input": {"n": 1}}
            assert http.post("/runs/wait", json=body).json()["count"] == 1
        spent.append(statements() - before)
    return min(spent)


def test_a_worker_process_serves_its_own_metrics_on_a_port() -> None:
    port = free_port()
    # The pool's bound under LangGraph Server's name for it, which deployments already set.
    env = {"AGENTSTREAM_METRICS_PORT": str(port), "LANGGRAPH_POSTGRES_POOL_MAX_SIZE": "9"}
    with running_cluster(apis=1, workers=1, env=env) as cluster:
        with httpx.Client(base_url=cluster.apis[0].url, timeout=30) as http:
            for _ in range(2):
                body = {"assistant_id": "agent", "input": HI}
                assert http.post("/runs/wait", json=body).is_success
            api = samples(http.get("/metrics").text)
            found = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            # One run at a time costs the worker its claim, its finish and the look for the
            # next delayed run before it waits: a claim that came back short (one run for its
            # free slots) is not followed by another that would find nothing.
            spent = _statements_for_five_runs(http, port)
    assert spent <= 5 * 3
    assert value(api, "lg_api_pg_pool_max") == 9
    assert value(found, "agentstream_time_to_first_event_seconds_count") == 2
    assert value(found, "agentstream_events_published_total") >= 2
    # What two runs cost the worker in requests to its services (benchmarks.cpu reports them
    # per run): statements to PostgreSQL, round trips to Redis.
    assert value(found, "agentstream_postgres_statements_total") >= 2 * 3
    assert value(found, "agentstream_redis_round_trips_total") >= 2 * 3


def test_a_burst_of_events_costs_the_worker_one_publish() -> None:
    """A node that emits its events without an await (ticker) has them published together: its
    run costs the worker two round trips to Redis (the burst, led by the run's first event, and
    the end), up to YIELD_EVERY events (the executor hands the loop over after that many, and
    what is translated meanwhile goes next); a larger burst goes out in pieces of at most
    PUBLISH_MOST, so its first events reach readers before the last are sent, in order."""
    port = free_port()
    env = {"AGENTSTREAM_METRICS_PORT": str(port)}

    def trips() -> float:
        found = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        return value(found, "agentstream_redis_round_trips_total")

    with running_cluster(apis=1, workers=1, env=env) as cluster:
        with httpx.Client(base_url=cluster.apis[0].url, timeout=30) as http:
            body = {"assistant_id": "ticker", "input": {"n": 2}}
            assert http.post("/runs/wait", json=body).is_success  # connections made
            for n in (20, YIELD_EVERY - 1):
                before = trips()
                body = {"assistant_id": "ticker", "input": {"n": n}, "stream_mode": ["custom"]}
                assert http.post("/runs/wait", json=body).json()["count"] == n
                assert trips() - before == 2
            before = trips()
            body = {"assistant_id": "ticker", "input": {"n": 1000}, "stream_mode": ["custom"]}
            streamed = http.post("/runs/stream", json=body).text
            ticks = [data["tick"] for name, data in sse_events(streamed) if name == "custom"]
            assert ticks == list(range(1000))
            assert trips() - before >= 1 + math.ceil(1000 / PUBLISH_MOST)


def test_a_stream_where_its_run_executes_is_handed_its_events_without_reading_them_back() -> None:
    """`dev` on Redis runs a threaded run and streams it in one process: the stream is handed
    each publish as Redis takes it (eventbus/redis_reads.py, Reads.feed), instead of reading
    back what the process had just written. A threaded run of the agent cost the process 9 or
    10 round trips to Redis while its stream read them back, 6 since (7 now and then)."""
    with running_cluster(apis=0, workers=0, dev=1) as cluster:
        with httpx.Client(base_url=cluster.apis[0].url, timeout=30) as http:

            def trips() -> float:
                return value(
                    samples(http.get("/metrics").text), "agentstream_redis_round_trips_total"
                )

            spent = []
            for _ in range(7):  # the first two open the connections and lanes
                thread = http.post("/threads", json={}).json()["thread_id"]
                before = trips()
                body = {"assistant_id": "agent", "input": HI, "stream_mode": ["values"]}
                streamed = http.post(f"/threads/{thread}/runs/stream", json=body)
                assert streamed.status_code == 200
                spent.append(trips() - before)
                values = [data for name, data in sse_events(streamed.text) if name == "values"]
                state = http.get(f"/threads/{thread}/state").json()
                assert values and values[-1] == state["values"], "every event, the last too"
    assert sorted(spent[2:])[2] <= 7, spent


def test_serves_streams_end_at_the_commit_of_their_runs_end_in_a_worker() -> None:
    """`serve` + `worker`: the worker's end of a run notifies at its commit (PostgreSQL), and the
    API process ends the run's stream there, before the worker has closed its log in Redis.
    Each stream still ends after the run's end is stored, with every event."""
    with running_cluster(apis=1, workers=1) as cluster:
        with httpx.Client(base_url=cluster.apis[0].url, timeout=30) as http:
            for _ in range(5):
                thread = http.post("/threads", json={}).json()["thread_id"]
                body = {"assistant_id": "agent", "input": HI, "stream_mode": ["values"]}
                streamed = http.post(f"/threads/{thread}/runs/stream", json=body)
                assert streamed.status_code == 200
                run_id = streamed.headers["location"].rsplit("/", 2)[-2]
                # Read at once: a stream ended only at the commit of its run's end.
                run = http.get(f"/threads/{thread}/runs/{run_id}").json()
                assert run["status"] == "success"
                assert http.get(f"/threads/{thread}").json()["status"] == "idle"
                values = [data for name, data in sse_events(streamed.text) if name == "values"]
                state = http.get(f"/threads/{thread}/state").json()
                assert values and values[-1] == state["values"], "every event, the last too"
            noticed = value(
                samples(http.get("/metrics").text), "agentstream_stream_ends_noticed_total"
            )
    # The notice comes at the commit, the log's close a worker's loop turn and a round trip to
    # Redis after it: nearly every stream ends at the notice (one may lose the race).
    assert noticed >= 3


def test_dev_notifies_nobody_of_its_runs_ends() -> None:
    """`dev` ends its own runs' streams: its ends do not notify (a notifying commit holds
    PostgreSQL's one lock for notifiers through its flush), only a worker process's do."""
    with running_cluster(apis=0, workers=0, dev=1) as cluster:
        with (
            psycopg.connect(cluster.database_uri, autocommit=True) as listener,
            httpx.Client(base_url=cluster.apis[0].url, timeout=30) as http,
        ):
            listener.execute(f"LISTEN {ENDED_CHANNEL}")
            for _ in range(3):
                thread = http.post("/threads", json={}).json()["thread_id"]
                body = {"assistant_id": "agent", "input": HI, "stream_mode": ["values"]}
                assert http.post(f"/threads/{thread}/runs/stream", json=body).status_code == 200
                body["input"] = {"n": 2}
                assert http.post("/runs/wait", json={**body, "assistant_id": "ticker"}).is_success
            listener.execute(f"NOTIFY {ENDED_CHANNEL}, 'after the runs'")
            heard = next(listener.notifies(timeout=10))
    assert heard.payload == "after the runs"


def test_fastapis_opentelemetry_hooks_are_on_only_where_opentelemetry_is_set_up() -> None:
    from opentelemetry._logs._internal import ProxyLoggerProvider
    from opentelemetry.metrics._internal import _ProxyMeterProvider
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

    from agentstream.app import fastapi_telemetry

    class ProxyTracerOfAVendor:  # not OpenTelemetry's own: someone set it
        pass

    unset = [ProxyTracerProvider(), _ProxyMeterProvider(), ProxyLoggerProvider()]
    off = {"tracing": False, "metrics": False, "logs": False}
    assert fastapi_telemetry({"PATH": "/bin"}, unset) == off
    # FastAPI's defaults (None) wherever a user has OpenTelemetry running:
    assert fastapi_telemetry({"OTEL_SERVICE_NAME": "agents"}, unset) is None
    assert fastapi_telemetry({"FASTAPI_OTEL_AUTO_CONFIGURE": "true"}, unset) is None
    assert fastapi_telemetry({}, [*unset[:2], NoOpTracerProvider()]) is None
    assert fastapi_telemetry({}, [*unset[:2], ProxyTracerOfAVendor()]) is None
    # And with nothing set up in this process, the global providers read as unset.
    assert fastapi_telemetry({}) == off
