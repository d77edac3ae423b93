"""Thread pruning and time to live: `POST /threads/prune`, and a thread's `ttl` on create and
update (threads.py calls apply_ttl)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.requests import JsonRoute
from agentstream.execution.expiry import STRATEGIES, Strategy, TtlPolicy, set_ttl
from agentstream.execution.scheduler import Clock

router = APIRouter(route_class=JsonRoute)


class PruneBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    thread_ids: list[str]
    strategy: str = "delete"


async def apply_ttl(
    c: ApiContext, request: Request, thread_id: str, given: Any, *, default: bool
) -> None:
    """Give a thread the ttl a request names, or langgraph.json's default when it names none
    (only on create: `default` False on update)."""
    policy: TtlPolicy = getattr(request.app.state, "ttl", None) or TtlPolicy()
    if given is None and not default:
        return
    try:
        ttl = policy.thread_ttl(given)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if ttl is not None:
        await set_ttl(c.storage, thread_id, ttl, Clock.from_env().now())


@router.post("/threads/prune")
async def prune(body: PruneBody, request: Request, c: ApiContext = Depends(ctx)) -> dict[str, int]:
    if body.strategy not in STRATEGIES:
        raise ApiError(422, f"strategy: one of {list(STRATEGIES)}")
    pruned = 0
    for thread_id in body.thread_ids:
        require_uuid(thread_id, "thread")
        value = {"thread_id": thread_id}
        filters = await c.authorize(request, "threads", "delete", value)
        strategy: Strategy = "delete" if body.strategy == "delete" else "keep_latest"
        # A busy thread is left alone, as the sweep leaves it.
        if await c.storage.prune_thread(thread_id, strategy, filters=filters):
            pruned += 1
    return {"pruned_count": pruned}
