"""Graceful shutdown (issue 11, point 3): on SIGTERM a process claims nothing new, answers 503 on
/ok, lets running runs finish for the grace period, then hands the rest back, to be resumed from
their last checkpoint by another worker or by the restarted server. No run is left `running`."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from langgraph_sdk import get_client

from tests.cluster import running_cluster
from tests.conftest import ServerProcess


def sigterm(proc: ServerProcess) -> None:
    proc.proc.send_signal(signal.SIGTERM)


def wait_exit(proc: ServerProcess, within: float) -> None:
    proc.proc.wait(within)
    proc.stop()  # closes its pipe


def read_status(database: Path, run_id: str) -> str:
    db = sqlite3.connect(database, timeout=10)
    try:
        (status,) = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(status)
    finally:
        db.close()


async def test_sigterm_finishes_short_runs_and_the_restarted_server_resumes_the_rest(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    database = tmp_path / "drain.sqlite"
    env = {"AGENTSTREAM_SHUTDOWN_GRACE_SECONDS": "3"}
    first = server_factory(database=database, env=env)
    client = get_client(url=first.url)
    short_thread = (await client.threads.create())["thread_id"]
    long_thread = (await client.threads.create())["thread_id"]
    short = await client.runs.create(
        short_thread, "ticker", input={"n": 20, "delay": 0.05}, stream_mode="custom"
    )
    long = await client.runs.create(
        long_thread, "ticker", input={"n": 100, "delay": 0.05}, stream_mode="custom"
    )
    ticks: list[int] = []
    stream = client.runs.join_stream(short_thread, short["run_id"], last_event_id="0")
    async for part in stream:
        if part.event == "custom":
            ticks.append(part.data["tick"])
            if len(ticks) == 1:
                sigterm(first)  # while both runs are running
                async with httpx.AsyncClient(base_url=first.url) as http:
                    # Draining: still serving (this stream goes on), but not ready.
                    for _ in range(200):
                        if (await http.get("/ok")).status_code == 503:
                            break
                    assert (await http.get("/ok")).json() == {"ok": False, "draining": True}
    await client.http.client.aclose()
    assert ticks == list(range(20)), "the short run finished within the grace period"
    wait_exit(first, within=15)
    assert read_status(database, short["run_id"]) == "success"
    assert read_status(database, long["run_id"]) == "running", "handed back, not settled"

    second = server_factory(database=database)
    client = get_client(url=second.url)
    try:
        attempts = [
            part.data["attempt"]
            async for part in client.runs.join_stream(
                long_thread, long["run_id"], last_event_id="0"
            )
            if part.event == "metadata"
        ]
        assert attempts == [2]
        assert (await client.runs.get(long_thread, long["run_id"]))["status"] == "success"
        assert (await client.threads.get_state(long_thread))["values"]["count"] == 100
    finally:
        await client.http.client.aclose()


async def test_sigterm_hands_a_workers_run_to_another_worker_before_its_lease_ends() -> None:
    # A lease of 60 s: a takeover within it can only come from the hand-back.
    env = {"AGENTSTREAM_LEASE_SECONDS": "60", "AGENTSTREAM_SHUTDOWN_GRACE_SECONDS": "1"}
    with running_cluster(apis=1, workers=2, env=env) as cluster:
        client = get_client(url=cluster.apis[0].url)
        thread = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread, "ticker", input={"n": 200, "delay": 0.02}, stream_mode="custom"
        )
        attempts: list[int] = []
        ticks = 0
        stopped_at = handed_over_at = 0.0
        async for part in client.runs.join_stream(thread, run["run_id"], last_event_id="0"):
            if part.event == "metadata":
                attempts.append(part.data["attempt"])
                if len(attempts) == 2:
                    handed_over_at = time.monotonic()
            if part.event == "custom":
                ticks += 1
                if ticks == 10:
                    [(worker_id,)] = cluster.rows(
                        "SELECT worker_id FROM runs WHERE run_id = %s", run["run_id"]
                    )
                    holder = next(w for w in cluster.workers if w.url == worker_id)
                    sigterm(holder)
                    stopped_at = time.monotonic()
        await client.http.client.aclose()
        assert attempts == [1, 2]
        assert handed_over_at - stopped_at < 15, "resumed long before the 60 s lease ran out"
        wait_exit(holder, within=15)
        assert holder.proc.returncode == 0
        final = cluster.rows("SELECT status FROM runs WHERE run_id = %s", run["run_id"])
        assert final == [("success",)]


async def test_sigterm_on_an_api_process_cuts_its_streams_and_they_resume_on_another() -> None:
    with running_cluster(apis=2, workers=1) as cluster:
        first, second = cluster.apis
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            thread = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "ticker", "input": {"n": 100, "delay": 0.02},
                    "stream_mode": ["custom"]}  # fmt: skip
            ids: list[int] = []
            cut = False
            try:
                async with http.stream(
                    "POST", f"/threads/{thread}/runs/stream", json=body
                ) as response:
                    location = response.headers["location"]
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            ids.append(int(line[4:]))
                            if len(ids) == 5:
                                sigterm(first)
            except httpx.RemoteProtocolError:
                cut = True  # no closing chunk: the client knows the stream broke
        assert cut, "the stream was cut, not ended as if the run had finished"
        wait_exit(first, within=15)
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            headers = {"Last-Event-ID": str(ids[-1])}
            response = await http.get(location, headers=headers)
        rest = [int(line[4:]) for line in response.text.splitlines() if line.startswith("id: ")]
        assert rest, "the resumed stream carried the rest of the run"
        assert ids + rest == list(range(1, len(ids) + len(rest) + 1))
        assert "event: custom" in response.text
        final = cluster.rows("SELECT status FROM runs WHERE thread_id = %s", thread)
        assert final == [("success",)]
