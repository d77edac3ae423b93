"""GET /threads/{t}/stream: every run of a thread in turn, live or resumed by id."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from langgraph_sdk.client import LangGraphClient

from tests.conftest import ServerProcess


def _parse(raw: str) -> list[dict[str, Any]]:
    frames = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(("event: ", "data: ", "id: ")):
                key, _, value = line.partition(": ")
                fields[key] = value
        if "event" in fields:
            frames.append(fields)
    return frames


async def _read_until_done(
    http: httpx.AsyncClient, url: str, runs: int, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read the thread stream until `runs` run_done markers have arrived."""
    frames: list[dict[str, Any]] = []
    buffer = ""
    async with http.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        async for text in response.aiter_text():
            buffer += text
            *complete, buffer = buffer.replace("\r\n", "\n").split("\n\n")
            frames += _parse("\n\n".join(complete) + "\n\n")
            if sum('"run_done"' in f["data"] for f in frames if f["event"] == "metadata") >= runs:
                return frames
    raise AssertionError("thread stream closed early")


async def test_thread_stream_follows_every_run_in_turn(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    first = await client.runs.create(
        t, "ticker", input={"n": 60, "delay": 0.02}, stream_mode=["custom", "values"]
    )
    async for part in client.runs.join_stream(t, first["run_id"]):
        if part.event == "custom":
            break  # the first run is running: a live thread stream joins it midway
    reader = asyncio.create_task(_read_until_done(http, f"/threads/{t}/stream", runs=2))
    second = await client.runs.create(t, "ticker", input={"n": 2, "delay": 0.0})
    frames = await asyncio.wait_for(reader, 60)
    starts = [f for f in frames if f["event"] == "metadata" and '"attempt"' in f["data"]]
    dones = [f for f in frames if f["event"] == "metadata" and '"run_done"' in f["data"]]
    # Live from the join: the first run's start is not replayed, its end and the second run are.
    assert len(starts) == 1 and second["run_id"] in starts[0]["data"]
    assert [first["run_id"] in dones[0]["data"], second["run_id"] in dones[1]["data"]] == [
        True,
        True,
    ]
    ticks = [f["data"] for f in frames if f["event"] == "custom"]
    assert ticks and '"tick":0' not in ticks[0], "the first run was joined midway"


async def test_thread_stream_resumes_exactly_across_runs(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    for n in (2, 3):
        run = await client.runs.create(t, "ticker", input={"n": n, "delay": 0.0})
        await client.runs.join(t, run["run_id"])
    everything = await _read_until_done(
        http, f"/threads/{t}/stream", runs=2, headers={"Last-Event-ID": "-1"}
    )
    ids = [f["id"] for f in everything]
    assert len(ids) == len(set(ids)), "ids are unique"
    for cut in range(len(everything) - 1):
        rest = await _read_until_done(
            http,
            f"/threads/{t}/stream",
            runs=2 - sum('"run_done"' in f["data"] for f in everything[: cut + 1]),
            headers={"Last-Event-ID": everything[cut]["id"]},
        )
        assert rest == everything[cut + 1 :], f"resume after {everything[cut]['id']}"


async def test_thread_stream_lifecycle_only(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    run = await client.runs.create(t, "ticker", input={"n": 4, "delay": 0.0})
    await client.runs.join(t, run["run_id"])
    frames = await _read_until_done(
        http, f"/threads/{t}/stream?stream_modes=lifecycle", 1, {"Last-Event-ID": "0"}
    )
    assert [f["event"] for f in frames] == ["metadata", "metadata"]


async def test_thread_stream_of_unknown_thread_is_404(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/threads/00000000-0000-4000-8000-000000000000/stream")
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)
