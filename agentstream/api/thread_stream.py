"""GET /threads/{thread_id}/stream: every run of a thread in turn, resumable across runs
(frame ids: protocol.thread_frame_id; the frames: streams.ThreadFollower)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from agentstream import protocol
from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import EventStreamResponse
from agentstream.api.streams import ThreadFollower, heartbeats_only

router = APIRouter(route_class=JsonRoute)


@router.get("/threads/{thread_id}/stream")
async def join_thread_stream(
    thread_id: str, request: Request, c: ApiContext = Depends(ctx)
) -> Response:
    require_uuid(thread_id, "thread")
    filters = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
    await c.storage.get_thread(thread_id, filters=filters)
    # The real server reads `stream_modes`; the Python SDK sends `stream_mode`, which it ignores.
    modes = set(request.query_params.getlist("stream_modes"))
    resume = protocol.thread_resume_point(request.headers.get("last-event-id"))
    follower = ThreadFollower(c.storage, c.bus, thread_id, lifecycle_only=modes == {"lifecycle"})
    body = follower.frames(resume) if modes != {"state_update"} else heartbeats_only()
    return EventStreamResponse(
        body,
        headers={"location": protocol.thread_stream_url(thread_id)},
        heartbeat_seconds=c.settings.heartbeat_seconds,
    )
