"""Joining a run's stream (PROTOCOL §5): live from the join on, narrowed by stream_mode, resumed
by Last-Event-ID, and what a client hanging up does to the run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamPart

from tests.helpers import read_until, ticked, ticks
from tests.sse import sse_events

N = 40
DELAY = 0.05
TICKER = {"n": N, "delay": DELAY}
FINAL = {"n": N, "delay": DELAY, "count": N}
MODES = ["custom", "values"]
# The Python SDK's own encoding of stream_mode=["custom","values"] is repeated keys.
JSON_ARRAY = "stream_mode=%5B%22custom%22%2C%22values%22%5D"


def assert_rest_of_run(parts: list[StreamPart], joined_after: int) -> None:
    """A joiner's view: no metadata, ticks from after the join to the end with none missing
    or repeated, and the final values last."""
    assert "metadata" not in [p.event for p in parts], "a join does not replay metadata"
    got = ticks(parts)
    assert got, "the joiner received the rest of the run"
    assert got[0] > joined_after, "nothing from before the join is replayed"
    assert got == list(range(got[0], N)), "contiguous, ordered, duplicate-free up to the end"
    assert parts[-1].event == "values"
    assert parts[-1].data == FINAL


async def start_ticker(
    client: LangGraphClient, ticker: dict[str, Any] = TICKER, *, running: bool = True
) -> tuple[str, str]:
    """A background ticker run on a new thread; with running=True, return once it has ticked."""
    thread = await client.threads.create()
    t = thread["thread_id"]
    run = await client.runs.create(t, "ticker", input=ticker, stream_mode=MODES)
    if running:
        await read_until(client.runs.join_stream(t, run["run_id"]), ticked(1))
    return t, run["run_id"]


async def join_all(client: LangGraphClient, t: str, r: str, **kwargs: Any) -> list[StreamPart]:
    return [part async for part in client.runs.join_stream(t, r, **kwargs)]


# --- live joins ------------------------------------------------------------------------------


async def test_join_does_not_replay(client: LangGraphClient) -> None:
    t, r = await start_ticker(client, running=False)
    first_ticked = asyncio.Event()
    first: list[StreamPart] = []

    async def follow() -> None:
        async for part in client.runs.join_stream(t, r):
            first.append(part)
            if len(ticks(first)) >= 3:
                first_ticked.set()

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(first_ticked.wait(), 30)
    seen = ticks(first)[-1]
    second = await join_all(client, t, r)
    await follower
    assert seen >= 2
    assert_rest_of_run(second, joined_after=seen)
    # The first joiner, too, has everything from its own join on.
    assert ticks(first) == list(range(ticks(first)[0], N))
    assert first[-1].data == FINAL


async def test_ten_joiners_each_get_the_rest_of_the_run_from_their_join(
    client: LangGraphClient,
) -> None:
    t, r = await start_ticker(client)
    joiners: list[tuple[int, asyncio.Task[list[StreamPart]]]] = []
    # A pacer follows the run and starts a joiner on each of ten consecutive ticks.
    async for part in client.runs.join_stream(t, r, stream_mode="custom"):
        if part.event == "custom" and part.data["tick"] >= 2:
            task = asyncio.create_task(join_all(client, t, r))
            joiners.append((part.data["tick"], task))
            if len(joiners) == 10:
                break
    results = await asyncio.gather(*(task for _, task in joiners))
    for (joined_after, _), parts in zip(joiners, results, strict=True):
        assert_rest_of_run(parts, joined_after)


async def test_a_joiner_hanging_up_does_not_stop_the_run(client: LangGraphClient) -> None:
    t, r = await start_ticker(client)
    await read_until(client.runs.join_stream(t, r), ticked(2))
    assert await client.runs.join(t, r) == FINAL
    assert (await client.runs.get(t, r))["status"] == "success"


async def test_join_with_cancel_on_disconnect_cancels_the_run_when_the_joiner_leaves(
    client: LangGraphClient,
) -> None:
    t, r = await start_ticker(client)
    parts = await read_until(client.runs.join_stream(t, r, cancel_on_disconnect=True), ticked(2))
    assert ticks(parts)[-1] < N - 1, "the joiner left while the run was still ticking"
    # The run stopped inside its only node, so it never added to count.
    assert await client.runs.join(t, r) == TICKER
    assert (await client.runs.get(t, r))["status"] == "interrupted"
    assert (await client.threads.get(t))["status"] == "interrupted"


async def test_join_stream_mode_custom_narrows_to_custom(client: LangGraphClient) -> None:
    t, r = await start_ticker(client)
    parts = await join_all(client, t, r, stream_mode="custom")
    assert {p.event for p in parts} == {"custom"}
    got = ticks(parts)
    assert got == list(range(got[0], N))
    assert got[0] > 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (JSON_ARRAY, {"custom", "values"}),
        ("stream_mode=custom&stream_mode=values", {"values"}),
        ("stream_mode=values&stream_mode=custom", {"custom"}),
    ],
    ids=[
        "json-array-gives-both",
        "repeated-keys-last-wins-values",
        "repeated-keys-last-wins-custom",
    ],
)
async def test_join_stream_mode_query_encodings(
    client: LangGraphClient, http: httpx.AsyncClient, query: str, expected: set[str]
) -> None:
    t, r = await start_ticker(client)
    response = await http.get(f"/threads/{t}/runs/{r}/stream?{query}")
    assert response.status_code == 200
    events = sse_events(response.text)
    assert {name for name, _ in events} == expected
    if "values" in expected:
        assert events[-1] == ("values", FINAL)
    got = [data["tick"] for name, data in events if name == "custom"]
    if "custom" in expected:
        assert got == list(range(got[0], N))
        assert got[0] > 0


async def test_sdk_join_stream_with_a_mode_list_gets_only_the_last(
    client: LangGraphClient,
) -> None:
    # PROTOCOL §12.1: the SDK repeats the key, and the last one counts, as on the real server.
    t, r = await start_ticker(client)
    parts = await join_all(client, t, r, stream_mode=["custom", "values"])
    assert [(p.event, p.data) for p in parts] == [("values", FINAL)]


# --- finished and unknown runs ---------------------------------------------------------------


async def test_joining_a_finished_run_ends_at_once_with_nothing(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    t, r = await start_ticker(client, {"n": 3, "delay": 0.0}, running=False)
    assert await client.runs.join(t, r) == {"n": 3, "delay": 0.0, "count": 3}
    assert await asyncio.wait_for(join_all(client, t, r), 5) == []
    response = await asyncio.wait_for(http.get(f"/threads/{t}/runs/{r}/stream"), 5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""


async def test_joining_an_unknown_run_is_an_error_event(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    parts = await join_all(client, thread["thread_id"], str(uuid.uuid4()))
    assert [(p.event, p.data) for p in parts] == [
        ("error", {"error": "HTTPException", "message": "404: Run not found"})
    ]


# --- resuming by Last-Event-ID ---------------------------------------------------------------


async def test_last_event_id_minus_one_replays_from_metadata(client: LangGraphClient) -> None:
    t, r = await start_ticker(client)
    parts = await join_all(client, t, r, last_event_id="-1")
    assert [(p.event, p.data) for p in parts[:2]] == [
        ("metadata", {"run_id": r, "attempt": 1}),
        ("values", TICKER),
    ]
    assert ticks(parts) == list(range(N))
    assert parts[-1].data == FINAL
    assert [p.id for p in parts] == [str(i) for i in range(1, len(parts) + 1)]


async def test_last_event_id_resumes_strictly_after_that_id(client: LangGraphClient) -> None:
    t, r = await start_ticker(client, {"n": 10, "delay": 0.0}, running=False)
    await client.runs.join(t, r)
    everything = await join_all(client, t, r, last_event_id="-1")
    assert len(everything) == 1 + 1 + 10 + 1  # metadata, input values, ticks, final values
    for cut in (1, 5, len(everything) - 1):
        rest = await join_all(client, t, r, last_event_id=str(cut))
        assert [(p.event, p.data, p.id) for p in rest] == [
            (p.event, p.data, p.id) for p in everything[cut:]
        ]


async def test_resume_a_live_run_from_the_last_id_seen_loses_and_repeats_nothing(
    client: LangGraphClient,
) -> None:
    t, r = await start_ticker(client)
    before = await read_until(client.runs.join_stream(t, r), ticked(3))
    last_id = before[-1].id
    assert last_id is not None
    after = await join_all(client, t, r, last_event_id=last_id)
    joined = ticks(before) + ticks(after)
    assert joined == list(range(joined[0], N))
    assert int(after[0].id or 0) == int(last_id) + 1


# --- a streaming client hanging up -----------------------------------------------------------


async def _stream_and_hang_up(client: LangGraphClient, t: str, **kwargs: Any) -> str:
    parts = await read_until(
        client.runs.stream(t, "ticker", input=TICKER, stream_mode=MODES, **kwargs), ticked(3)
    )
    assert parts[0].event == "metadata"
    assert ticks(parts) == [0, 1, 2]
    return str(parts[0].data["run_id"])


async def test_stream_hang_up_leaves_the_run_going_by_default(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    r = await _stream_and_hang_up(client, t)
    assert await client.runs.join(t, r) == FINAL
    assert (await client.runs.get(t, r))["status"] == "success"
    assert (await client.threads.get(t))["status"] == "idle"


async def test_stream_hang_up_with_on_disconnect_cancel_stops_the_run(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    t = thread["thread_id"]
    r = await _stream_and_hang_up(client, t, on_disconnect="cancel")
    assert await client.runs.join(t, r) == TICKER
    assert (await client.runs.get(t, r))["status"] == "interrupted"
    assert (await client.threads.get(t))["status"] == "interrupted"
