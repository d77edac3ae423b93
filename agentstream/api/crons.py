"""Cron routes: create (on a thread, or stateless), search, count, get, update, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from agentstream.api.auth import current_user
from agentstream.api.context import ApiContext, ctx, require_uuid
from agentstream.api.errors import ApiError
from agentstream.api.models import MAX_INT64
from agentstream.api.requests import JsonRoute
from agentstream.execution.scheduler import Clock, first_slot, valid_schedule, zone
from agentstream.execution.webhooks import WebhookRefused
from agentstream.ids import uuid7
from agentstream.storage.base import Cron, utcnow

router = APIRouter(route_class=JsonRoute)

# The fields of a cron's payload: what each run it creates is made of.
_RUN_FIELDS = ("input", "config", "context", "metadata", "checkpoint_during", "interrupt_before",
               "interrupt_after", "webhook", "stream_mode", "stream_subgraphs",
               "stream_resumable", "durability", "multitask_strategy")  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _CronFields(_Body):
    """What a cron's create and patch both carry: its timing and its runs' payload."""

    timezone: str | None = None
    end_time: datetime | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    input: Any = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    webhook: str | None = None
    stream_mode: str | list[str] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None


class CronCreate(_CronFields):
    assistant_id: str
    schedule: str
    enabled: bool = True
    checkpoint_during: bool | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] | None = None


class CronPatch(_CronFields):
    schedule: str | None = None
    enabled: bool | None = None


class CronSearch(_Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INT64)
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


class CronCount(_Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None


def _out(cron: Cron, fields: list[str] | None = None) -> dict[str, Any]:
    shown = {k: v for k, v in cron.items() if k != "auth_user"}
    if fields:
        shown = {k: v for k, v in shown.items() if k in fields}
    return shown


def _now() -> datetime:
    # The schedulers' clock (driven in tests): a cron's first slot is the one they will see.
    return Clock.from_env().now()


def _check_timing(schedule: str | None, timezone: str | None) -> None:
    if schedule is not None and not valid_schedule(schedule):
        raise ApiError(422, f"Invalid cron schedule: {schedule!r}")
    try:
        zone(timezone)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


async def _check_webhook(c: ApiContext, webhook: str | None) -> None:
    if webhook is not None:
        try:
            await c.webhooks.check(webhook)
        except WebhookRefused as exc:
            raise ApiError(422, str(exc)) from None


async def _create(
    c: ApiContext, request: Request, body: CronCreate, thread_id: str | None
) -> dict[str, Any]:
    _check_timing(body.schedule, body.timezone)
    await _check_webhook(c, body.webhook)
    payload = {k: v for k in _RUN_FIELDS if (v := getattr(body, k)) is not None}
    # What a crons.create auth handler sees; the metadata it leaves is the cron's.
    value: dict[str, Any] = {
        "payload": payload,
        "schedule": body.schedule,
        "cron_id": None,
        "thread_id": thread_id,
        "user_id": None,
        "end_time": body.end_time,
        "metadata": dict(body.metadata or {}),
    }
    await c.authorize(request, "crons", "create", value)
    assistant = await c.resolve_assistant(body.assistant_id, filters=None)
    if thread_id is not None:
        # The thread's runs will be the caller's: it must be a thread the caller may read.
        seen = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
        await c.storage.get_thread(thread_id, filters=seen)  # NotFound: 404, worded in errors
    user = current_user(request)
    now = utcnow()
    cron = Cron(
        cron_id=uuid7(),
        assistant_id=assistant["assistant_id"],
        thread_id=thread_id,
        user_id=user.identity if user is not None else None,
        schedule=body.schedule,
        timezone=body.timezone,
        end_time=_utc(body.end_time),
        payload=payload,
        metadata=dict(value.get("metadata") or {}),
        on_run_completed=None if thread_id else (body.on_run_completed or "delete"),
        enabled=body.enabled,
        next_run_date=None,
        created_at=now,
        updated_at=now,
        auth_user=dict(user) if user is not None else None,
    )
    cron["next_run_date"] = first_slot(cron, _now())
    await c.storage.create_cron(cron)
    return _out(cron)


@router.post("/threads/{thread_id}/runs/crons")
async def create_for_thread(
    thread_id: str, body: CronCreate, request: Request, c: ApiContext = Depends(ctx)
) -> dict[str, Any]:
    return await _create(c, request, body, require_uuid(thread_id, "thread"))


@router.post("/runs/crons")
async def create_stateless(
    body: CronCreate, request: Request, c: ApiContext = Depends(ctx)
) -> dict[str, Any]:
    return await _create(c, request, body, None)


@router.post("/runs/crons/search")
async def search(
    body: CronSearch, request: Request, c: ApiContext = Depends(ctx)
) -> list[dict[str, Any]]:
    value = body.model_dump()
    filters = await c.authorize(request, "crons", "search", value)
    found = await c.storage.search_crons(
        assistant_id=body.assistant_id, thread_id=body.thread_id, enabled=body.enabled,
        metadata=body.metadata, limit=body.limit, offset=body.offset, sort_by=body.sort_by,
        sort_order=body.sort_order, filters=filters,
    )  # fmt: skip
    return [_out(cron, body.select) for cron in found]


@router.post("/runs/crons/count")
async def count(body: CronCount, request: Request, c: ApiContext = Depends(ctx)) -> int:
    filters = await c.authorize(request, "crons", "search", body.model_dump())
    return await c.storage.count_crons(
        assistant_id=body.assistant_id, thread_id=body.thread_id, metadata=body.metadata,
        filters=filters,
    )  # fmt: skip


@router.get("/runs/crons/{cron_id}")
async def get(cron_id: str, request: Request, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    filters = await c.authorize(request, "crons", "read", {"cron_id": cron_id})
    return _out(await c.storage.get_cron(require_uuid(cron_id, "cron"), filters=filters))


@router.patch("/runs/crons/{cron_id}")
async def update(
    cron_id: str, body: CronPatch, request: Request, c: ApiContext = Depends(ctx)
) -> dict[str, Any]:
    require_uuid(cron_id, "cron")
    given = body.model_dump(exclude_unset=True)
    value: dict[str, Any] = {"cron_id": cron_id, **given}
    filters = await c.authorize(request, "crons", "update", value)
    current = await c.storage.get_cron(cron_id, filters=filters)
    _check_timing(body.schedule, body.timezone if "timezone" in given else current["timezone"])
    await _check_webhook(c, body.webhook)
    changes: dict[str, Any] = {}
    for key in ("schedule", "timezone", "enabled", "metadata"):
        if given.get(key) is not None:
            changes[key] = given[key]
    if "end_time" in given:  # null clears it
        changes["end_time"] = _utc(body.end_time)
    if given.get("on_run_completed") is not None and current["thread_id"] is None:
        changes["on_run_completed"] = given["on_run_completed"]
    run_fields = {k: v for k, v in given.items() if k in _RUN_FIELDS and v is not None}
    if run_fields:
        changes["payload"] = {**current["payload"], **run_fields}
    if {"schedule", "timezone", "enabled", "end_time"} & changes.keys():
        merged: Cron = {**current, **changes}  # type: ignore[typeddict-item]
        changes["next_run_date"] = first_slot(merged, _now())
    cron = await c.storage.update_cron(cron_id, changes, filters=filters)
    return _out(cron)


@router.delete("/runs/crons/{cron_id}", status_code=204)
async def delete(cron_id: str, request: Request, c: ApiContext = Depends(ctx)) -> Response:
    filters = await c.authorize(request, "crons", "delete", {"cron_id": cron_id})
    await c.storage.delete_cron(require_uuid(cron_id, "cron"), filters=filters)
    return Response(status_code=204)
