"""No request and no stored row can stop run execution (issue 11, point 1): run-creating fields
are bounded at the edge, and a run that cannot be read or settled ends as `error` while every
later run still runs. Both deployments."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cluster import running_cluster
from tests.conftest import ServerProcess

HI = {"messages": [{"role": "human", "content": "hi"}]}


def run_works(url: str) -> None:
    """A stateless run of the agent answers with its final state: the worker is alive."""
    with httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/runs/wait", json={"assistant_id": "agent", "input": HI})
        assert answer.status_code == 200, answer.text
        assert answer.json()["messages"][-1]["content"] == "bye"


@pytest.mark.parametrize("value", [1e15, 1e300, -1, 10 * 365 * 24 * 3600 + 1, "soon"])
def test_issue_11_an_out_of_range_after_seconds_is_422(server: ServerProcess, value: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        for path in ("/runs", f"/threads/{thread}/runs", "/runs/wait", "/runs/stream"):
            answer = http.post(path, json={"assistant_id": "agent", "after_seconds": value})
            assert answer.status_code == 422, (path, answer.text)
            assert "after_seconds" in answer.json()["detail"]
    run_works(server.url)


@pytest.mark.parametrize(
    "config",
    [
        {"recursion_limit": 0},
        {"recursion_limit": -5},
        {"recursion_limit": 2**64},
        {"recursion_limit": "many"},
        {"recursion_limit": 2.5},
        {"max_concurrency": 0},
        {"tags": "not-a-list"},
        {"configurable": []},
    ],
)
def test_issue_11_a_bad_config_is_422_before_any_run(
    server: ServerProcess, config: dict[str, Any]
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post("/runs/wait", json={"assistant_id": "agent", "config": config})
        assert answer.status_code == 422, answer.text
        assert next(iter(config)) in answer.json()["detail"]


def test_issue_11_a_recursion_limit_in_range_reaches_the_graph(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = {"assistant_id": "agent", "input": HI, "config": {"recursion_limit": 1}}
        answer = http.post("/runs/wait", json=body)
        # One superstep is not enough for the agent: LangGraph's own error, as a run error.
        assert answer.status_code == 200, answer.text
        assert answer.json()["__error__"]["error"] == "GraphRecursionError"


EXTREMES = st.one_of(
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, -(2**63), 1e308, -1e308, 0.5, 1e-308]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
FIELDS: list[Callable[[Any], dict[str, Any]]] = [
    lambda v: {"after_seconds": v},
    lambda v: {"config": {"recursion_limit": v}},
    lambda v: {"config": {"max_concurrency": v}},
    lambda v: {"config": {"configurable": {"n": v}}},
    lambda v: {"stream_subgraphs": v},
    lambda v: {"stream_resumable": v},
    lambda v: {"input": {**HI, "n": v}},
    lambda v: {"metadata": {"n": v}},
    lambda v: {"checkpoint_id": v},
    lambda v: {"feedback_keys": v},
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(value=EXTREMES, field=st.sampled_from(range(len(FIELDS))))
def test_issue_11_extreme_numbers_in_run_fields_never_stop_the_server(
    server: ServerProcess, value: Any, field: int
) -> None:
    # Background runs only: an accepted after_seconds of years would hold a /wait that long.
    body = {"assistant_id": "agent", "input": HI, **FIELDS[field](value)}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post("/runs", json=body)
    assert answer.status_code in (200, 422), (body, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    if answer.status_code == 422:
        assert isinstance(answer.json()["detail"], str)
    else:
        assert answer.json()["status"] == "pending"


def test_issue_11_after_extreme_numbers_runs_still_work(server: ServerProcess) -> None:
    # Runs accepted by the property test (delayed by up to ten years, say) sit in the queue.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        far = http.post("/runs", json={"assistant_id": "agent", "after_seconds": 315360000})
        assert far.status_code == 200, far.text
    run_works(server.url)


# --- faults in stored runs --------------------------------------------------------------------


@dataclass
class Deployment:
    url: str
    dialect: str
    corrupt: Callable[[str, str], None]  # (run_id, SQL SET clause)

    @property
    def due_now(self) -> str:
        return "due_at = 0" if self.dialect == "sqlite" else "due_at = now()"


@pytest.fixture(params=["embedded", "distributed"])
def deployment(
    request: pytest.FixtureRequest, server_factory: Callable[..., ServerProcess]
) -> Iterator[Deployment]:
    if request.param == "embedded":
        proc = server_factory()

        def corrupt_sqlite(run_id: str, assignment: str) -> None:
            with sqlite_file(proc.database) as db:
                db.execute(f"UPDATE runs SET {assignment} WHERE run_id = ?", (run_id,))

        yield Deployment(proc.url, "sqlite", corrupt_sqlite)
        return
    with running_cluster(apis=1, workers=1) as cluster:

        def corrupt_pg(run_id: str, assignment: str) -> None:
            with psycopg.connect(cluster.database_uri, autocommit=True) as conn:
                conn.execute(f"UPDATE runs SET {assignment} WHERE run_id = %s", (run_id,))

        yield Deployment(cluster.apis[0].url, "postgres", corrupt_pg)


@contextmanager
def sqlite_file(path: Any) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def _delayed_run(url: str) -> tuple[str, str]:
    with httpx.Client(base_url=url, timeout=30) as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "agent", "input": HI, "after_seconds": 3600}
        run = http.post(f"/threads/{thread_id}/runs", json=body).json()
        return thread_id, run["run_id"]


def test_issue_11_a_run_that_cannot_be_settled_ends_as_error_and_later_runs_work(
    deployment: Deployment,
) -> None:
    # A stateless run whose kwargs are valid JSON of the wrong shape: the executor fails, and
    # settling it (which reads on_completion from them) raises too.
    thread_id, run_id = _delayed_run(deployment.url)
    temporary = "temporary = 1" if deployment.dialect == "sqlite" else "temporary = true"
    deployment.corrupt(run_id, f"kwargs = '\"garbage\"', {temporary}, {deployment.due_now}")
    run_works(deployment.url)  # wakes the worker, which claims the broken run first
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        log = http.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": "0"})
        assert log.status_code == 200, log.text
        assert "event: error" in log.text  # the stream ended, with the run's error
        # Ended as error and cleaned up as a stateless run is: its thread is gone.
        assert http.get(f"/threads/{thread_id}").status_code == 404
    run_works(deployment.url)


def test_issue_11_a_due_time_past_year_9999_does_not_stop_the_claim_loop(
    deployment: Deployment,
) -> None:
    # As stored by a server without the edge check: the loop asking when it is due died.
    _, run_id = _delayed_run(deployment.url)
    far = "due_at = 1e15" if deployment.dialect == "sqlite" else "due_at = 'infinity'"
    deployment.corrupt(run_id, far)
    run_works(deployment.url)
    run_works(deployment.url)


def test_issue_11_an_unreadable_run_row_ends_as_error_and_later_runs_work(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # Only SQLite can hold a kwargs that is not JSON at all (PostgreSQL's jsonb refuses it).
    proc = server_factory()
    _, run_id = _delayed_run(proc.url)
    with sqlite_file(proc.database) as db:
        db.execute("UPDATE runs SET kwargs = '{broken', due_at = 0 WHERE run_id = ?", (run_id,))
    run_works(proc.url)
    run_works(proc.url)
    with sqlite_file(proc.database) as db:
        (status,) = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert status == "error"
