"""From a RunCreate body to a queued run: the checks that depend on the route, the kwargs a run
keeps, what a `threads.create_run` auth handler sees and may change, and RunService.create."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from fastapi import Request

from agentstream.api.auth import current_user
from agentstream.api.context import ApiContext
from agentstream.api.errors import ApiError
from agentstream.api.models import RunCreate
from agentstream.execution.runs import new_run
from agentstream.execution.webhooks import WebhookRefused
from agentstream.ids import is_uuid, uuid7
from agentstream.protocol import MULTITASK_STRATEGIES
from agentstream.storage.base import NewRun, NotFound, Run

Route = Literal["stream", "wait", "create"]


def _stream_modes(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return ["values"]
    return [value] if isinstance(value, str) else list(dict.fromkeys(value))


def _check_route_fields(body: RunCreate, route: Route, threaded: bool) -> tuple[str, str]:
    strategy = body.multitask_strategy if threaded else None
    if strategy is None:
        strategy = "enqueue"
    elif strategy not in MULTITASK_STRATEGIES:
        raise ApiError(
            422, f"multitask_strategy: {strategy!r} is not one of {list(MULTITASK_STRATEGIES)}"
        )
    on_disconnect = body.on_disconnect if route == "stream" else None
    if on_disconnect is None:
        on_disconnect = "continue"
    elif on_disconnect not in ("cancel", "continue"):
        raise ApiError(
            422, f'on_disconnect: {on_disconnect!r} is not one of "cancel" or "continue"'
        )
    return strategy, on_disconnect


def _config(body: RunCreate, headers: Mapping[str, str]) -> dict[str, Any]:
    config = body.config.model_dump(exclude_unset=True) if body.config else {}
    if headers:  # http.configurable_headers; a header set by a proxy wins over the body's
        config["configurable"] = {**(config.get("configurable") or {}), **headers}
    return config


def _kwargs(body: RunCreate, temporary: bool, headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        "input": body.input,
        "command": body.command.model_dump(exclude_none=True) if body.command else None,
        "config": _config(body, headers),
        "context": body.context or {},
        "stream_mode": _stream_modes(body.stream_mode),
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "webhook": body.webhook,
        "feedback_keys": body.feedback_keys,
        "temporary": temporary,
        "subgraphs": body.stream_subgraphs,
        "resumable": body.stream_resumable,
        "checkpoint_during": body.checkpoint_during,
        "durability": body.durability,
        "checkpoint_id": body.checkpoint_id,
        "checkpoint": body.checkpoint.model_dump(exclude_none=True) if body.checkpoint else None,
        "after_seconds": body.after_seconds,
        "on_completion": body.on_completion,
    }


def _run_value(
    body: RunCreate, thread_id: str, run_id: str, strategy: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    # What a threads.create_run auth handler sees: langgraph_sdk's Auth.types.RunsCreate.
    return {
        "thread_id": thread_id,
        "assistant_id": body.assistant_id,
        "run_id": run_id,
        "status": "pending",
        "metadata": dict(body.metadata or {}),
        "multitask_strategy": strategy,
        "if_not_exists": body.if_not_exists,
        "after_seconds": body.after_seconds or 0,
        "kwargs": kwargs,
    }


class CreatedRun(NamedTuple):
    run: Run
    temporary: bool  # its thread is the run's own (a stateless run)
    on_disconnect: str  # what a disconnect of its stream does
    # Nothing on its thread goes first, nor is it delayed: a worker takes it as soon as it is
    # free (its stream then begins at once: api/streams.from_start).
    due_now: bool


async def create_run(
    c: ApiContext,
    request: Request,
    body: RunCreate,
    thread_id: str | None,
    route: Route,
    *,
    start_here: bool = True,
) -> CreatedRun:
    """Stores the run: its run, whether its thread is temporary, what a disconnect does, and
    whether it is due now.
    start_here=False keeps it from starting at creation (RunService.create): it is claimed
    after the caller has answered."""
    temporary = thread_id is None
    if thread_id is not None and not is_uuid(thread_id):
        raise ApiError(400, "badly formed hexadecimal UUID string")
    if temporary and body.command is not None:
        raise ApiError(400, "You must provide a thread_id when resuming.")
    strategy, on_disconnect = _check_route_fields(body, route, not temporary)
    if body.webhook is not None:
        try:
            await c.webhooks.check(body.webhook)
        except WebhookRefused as exc:
            raise ApiError(422, str(exc)) from None
    run_id = uuid7()
    thread_id = thread_id or uuid7()
    headers = c.headers.select(request.headers) if c.headers else {}
    value = _run_value(body, thread_id, run_id, strategy, _kwargs(body, temporary, headers))
    filters = await c.authorize(request, "threads", "create_run", value)
    assistant_id = c.assistant_id(body.assistant_id)
    # What the auth handler left in value is what the run keeps.
    metadata = dict(value.get("metadata") or {})
    kwargs = value.get("kwargs")
    if not isinstance(kwargs, dict):
        kwargs = _kwargs(body, temporary, headers)
    run = new_run(run_id, thread_id, assistant_id, kwargs, metadata, strategy)
    # The thread carries what an auth handler stamped (an owner, say), so a thread this run
    # creates, or a stateless run's temporary one, matches its caller's filter at once; the
    # create adds its assistant's graph_id and assistant_id, reading the assistant as it goes.
    thread_metadata = metadata if c.authorizes("threads", "create_run") else {}
    try:
        user = current_user(request)
        new = NewRun(
            run, temporary, body.if_not_exists, user, thread_metadata, filters, with_assistant=True
        )
        queued = await c.runs.create(new, start_here=start_here)
    except NotFound:
        raise ApiError(404, "Thread or assistant not found.") from None
    due_now = not queued.ahead and not kwargs.get("after_seconds")
    return CreatedRun(run, temporary, on_disconnect, due_now)
