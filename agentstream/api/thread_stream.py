"""GET /threads/{thread_id}/stream: every run of a thread in turn, resumable across runs.

A frame id is `<thread seq>.<run seq>`: the position of the run in the thread's own log and
of the event in the run's log, so a reconnect resumes exactly, even between runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request, Response

from agentstream import serde
from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import EventStreamResponse
from agentstream.eventbus import BusUnavailable, EventsEvicted, encode_frame
from agentstream.execution.executor import RESULT_MODE
from agentstream.execution.runs import thread_log

router = APIRouter(route_class=JsonRoute)


_DONE = -1  # a run seq meaning "that run was complete": resume with the next run


def _resume_point(raw: str | None) -> tuple[int, int] | None:
    """(thread seq, run seq) from a Last-Event-ID; -1 or 0 means from the thread's first run."""
    if raw is None or not raw.strip():
        return None
    head, _, tail = raw.strip().partition(".")
    try:
        thread_seq = int(head)
        run_seq = _DONE if tail == "done" else int(tail or 0)
    except ValueError:
        return (0, 0)
    return (0, 0) if thread_seq <= 0 else (thread_seq, run_seq)


class _ThreadFollower:
    def __init__(self, c: ApiContext, thread_id: str, lifecycle_only: bool) -> None:
        self.c = c
        self.thread_id = thread_id
        self.lifecycle_only = lifecycle_only
        self._followed: set[str] = set()

    async def frames(self, resume: tuple[int, int] | None) -> AsyncIterator[bytes]:
        log = thread_log(self.thread_id)
        if resume is None:
            # Live: the runs in flight now, from now on, then every later run.
            start = await self.c.bus.last_seq(log)
            async for chunk in self._in_flight(start):
                yield chunk
            resume = (start, 0)
        else:
            start = max(resume[0] - 1, 0)
        try:
            async for batch in self.c.bus.subscribe(log, start):
                for entry in batch:
                    after = resume[1] if entry.seq == resume[0] else 0
                    run_id = entry.data.decode()
                    if after != _DONE and run_id not in self._followed:
                        async for chunk in self._run(entry.seq, run_id, after):
                            yield chunk
        except EventsEvicted as exc:
            yield _error("EventsEvicted", f"{exc}. Read the thread state to catch up.")
        except BusUnavailable as exc:
            yield _error("BusUnavailable", f"{exc}. Resume with Last-Event-ID later.")

    async def _in_flight(self, thread_seq: int) -> AsyncIterator[bytes]:
        runs = await self.c.storage.inflight_runs(
            thread_id=self.thread_id, run_ids=None, status=None
        )
        for run in runs:
            # A run created while the stream was opening is in flight and in the thread log.
            self._followed.add(run["run_id"])
            after = await self.c.bus.last_seq(run["run_id"])
            async for chunk in self._run(thread_seq, run["run_id"], after):
                yield chunk

    async def _run(self, thread_seq: int, run_id: str, after: int) -> AsyncIterator[bytes]:
        try:
            async for batch in self.c.bus.subscribe(run_id, after):
                chunk = b"".join(
                    encode_frame(f"{thread_seq}.{e.seq}", e.name, e.data)
                    for e in batch
                    if e.mode != RESULT_MODE and (not self.lifecycle_only or e.mode == "metadata")
                )
                if chunk:
                    yield chunk
        except EventsEvicted as exc:
            yield _error("EventsEvicted", f"{exc}. Read the thread state to catch up.")
        except BusUnavailable as exc:
            yield _error("BusUnavailable", f"{exc}. Resume with Last-Event-ID later.")
        done = serde.dumps({"status": "run_done", "run_id": run_id})
        yield encode_frame(f"{thread_seq}.done", "metadata", done)


def _error(error: str, message: str) -> bytes:
    data = serde.dumps({"error": error, "message": message})
    return b"event: error\r\ndata: " + data + b"\r\n\r\n"


@router.get("/threads/{thread_id}/stream")
async def join_thread_stream(
    thread_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
    await c.storage.get_thread(thread_id, filters=filters)
    # The real server reads `stream_modes`; the Python SDK sends `stream_mode`, which it ignores.
    modes = set(request.query_params.getlist("stream_modes"))
    resume = _resume_point(request.headers.get("last-event-id"))
    follower = _ThreadFollower(c, thread_id, lifecycle_only=modes == {"lifecycle"})
    body = follower.frames(resume) if modes != {"state_update"} else _nothing()
    return EventStreamResponse(
        body,
        headers={"location": f"/threads/{thread_id}/stream"},
        heartbeat_seconds=c.settings.heartbeat_seconds,
    )


async def _nothing() -> AsyncIterator[bytes]:
    # Stays open with heartbeats only, like the real server's state_update stream.
    await asyncio.Event().wait()
    yield b""
