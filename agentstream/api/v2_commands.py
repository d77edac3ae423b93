"""POST /threads/{thread_id}/commands: protocol v2 commands, one JSON envelope in and out.

run.start and input.respond create ordinary runs (the same creation, queue, workers and logs
as POST /threads/{thread_id}/runs), marked so their executor also writes protocol events.
Protocol errors are HTTP 200 with an error envelope; a malformed envelope is a 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from agentstream.api.context import ApiContext, ctx
from agentstream.api.errors import ApiError
from agentstream.api.models import RunCreate
from agentstream.api.requests import JsonRoute
from agentstream.api.responses import JsonResponse
from agentstream.api.run_create import create_run
from agentstream.api.v2_stream import valid_channel
from agentstream.execution.runs import thread_seq
from agentstream.ids import is_uuid
from agentstream.protocol import V2_MARKER, V2_STREAM_MODES, v2_seq
from agentstream.storage.base import Conflict, NotFound, Thread

router = APIRouter(route_class=JsonRoute)

Params = dict[str, Any]
# A command's result and its applied_through_seq: for a command that starts a run, the seq
# after which that run's events come (so a client's `since` from it skips earlier runs).
Reply = tuple[Params, int]
Handler = Callable[[ApiContext, Request, str, Params], Awaitable[Reply]]


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_envelope(command_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": command_id, "error": code, "message": message}


def _from_api_error(exc: ApiError) -> CommandError:
    code = {400: "invalid_argument", 422: "invalid_argument", 403: "forbidden"}
    return CommandError(
        code.get(exc.status_code, "unknown_error"), f"{exc.status_code}: {exc.detail}"
    )


async def _thread(c: ApiContext, request: Request, thread_id: str) -> Thread | None:
    filters = await c.authorize(request, "threads", "read", {"thread_id": thread_id})
    try:
        return await c.storage.get_thread(thread_id, filters=filters)
    except NotFound:
        return None


def _pending(thread: Thread | None) -> dict[str, Any]:
    """The thread's pending interrupts by id."""
    if thread is None:
        return {}
    return {i["id"]: i for found in (thread["interrupts"] or {}).values() for i in found}


async def _start(c: ApiContext, request: Request, thread_id: str, body: Params) -> Reply:
    config = dict(body.get("config") or {})
    config["configurable"] = {**(config.get("configurable") or {}), V2_MARKER: True}
    body = {
        **body,
        "config": config,
        "stream_mode": V2_STREAM_MODES,
        "stream_subgraphs": True,
        "stream_resumable": True,
        "if_not_exists": "create",
    }
    try:
        model = RunCreate.model_validate(body)
    except ValidationError as exc:
        raise CommandError("invalid_argument", str(exc.errors()[0].get("msg"))) from None
    # The thread log lists runs in order: this run comes after the last one listed now.
    before = await thread_seq(c.storage, c.bus, thread_id)
    # Queued, not started here: the client takes the run's events, on its thread stream, as
    # of this reply (its projections opened after the run's end get nothing).
    run = (await create_run(c, request, model, thread_id, "create", start_here=False)).run
    return {"run_id": run["run_id"]}, v2_seq(before + 1, 0)


async def run_start(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    assistant_id = params.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise CommandError("invalid_argument", "run.start needs an assistant_id")
    body: Params = {
        "assistant_id": assistant_id,
        "input": params.get("input"),
        "multitask_strategy": params.get("multitask_strategy") or "enqueue",
    }
    for key in ("config", "metadata", "context"):
        if params.get(key) is not None:
            body[key] = params[key]
    if body["input"] is not None and _pending(await _thread(c, request, thread_id)):
        # Input on a thread waiting for an answer is the answer.
        body["command"] = {"resume": body.pop("input")}
    return await _start(c, request, thread_id, body)


async def input_respond(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    entries = params.get("responses")
    if entries is None:
        entries = [params]
    if not isinstance(entries, list) or not entries:
        raise CommandError("invalid_argument", "input.respond needs responses")
    thread = await _thread(c, request, thread_id)
    if thread is None:
        raise CommandError("no_such_run", f"No interrupted run on thread {thread_id}")
    pending = _pending(thread)
    resume: dict[str, Any] = {}
    for entry in entries:
        interrupt_id = entry.get("interrupt_id") if isinstance(entry, dict) else None
        if not isinstance(interrupt_id, str) or interrupt_id not in pending:
            raise CommandError(
                "no_such_interrupt", f"Unknown or already-consumed interrupt: {interrupt_id}"
            )
        resume[interrupt_id] = entry.get("response")
    command: Params = {"resume": resume}
    for key in ("update", "goto"):
        if params.get(key) is not None:
            command[key] = params[key]
    body: Params = {
        "assistant_id": (thread["metadata"] or {}).get("assistant_id") or "",
        "command": command,
    }
    for key in ("config", "metadata"):
        if params.get(key) is not None:
            body[key] = params[key]
    _, applied = await _start(c, request, thread_id, body)
    return {}, applied


async def subscribe(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    # Over HTTP nothing flows on the command's own request: events come on stream/events.
    channels = params.get("channels")
    if not isinstance(channels, list) or not channels or not all(map(valid_channel, channels)):
        raise CommandError("invalid_argument", "channels must be a non-empty list of channels")
    return {"subscription_id": str(uuid4()), "replayed_events": 0}, 0


async def unsubscribe(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    return {}, 0


_TREE_STATUS = {"idle": "completed", "busy": "running", "interrupted": "interrupted"}


async def get_tree(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    thread = await _thread(c, request, thread_id)
    if thread is None:
        raise CommandError("no_such_run", f"No run on thread {thread_id}")
    status = _TREE_STATUS.get(thread["status"], "failed")
    graph_name = (thread["metadata"] or {}).get("graph_id") or ""
    return {"tree": {"namespace": [], "status": status, "graph_name": graph_name}}, 0


async def state_get(c: ApiContext, request: Request, thread_id: str, params: Params) -> Reply:
    thread = await _thread(c, request, thread_id)
    if thread is None:
        raise CommandError("no_such_run", f"No state on thread {thread_id}")
    values = thread["values"] if isinstance(thread["values"], dict) else {}
    keys = params.get("keys")
    if isinstance(keys, list):
        values = {k: v for k, v in values.items() if k in keys}
    return {"values": values}, 0


COMMANDS: dict[str, Handler] = {
    "run.start": run_start,
    "input.respond": input_respond,
    "subscription.subscribe": subscribe,
    "subscription.reconnect": subscribe,
    "subscription.unsubscribe": unsubscribe,
    "agent.getTree": get_tree,
    "state.get": state_get,
}


async def dispatch(c: ApiContext, request: Request, thread_id: str, command: Any) -> Params:
    """One command's answer envelope (the seam a WebSocket transport reuses per frame)."""
    command_id = command.get("id")
    handler = COMMANDS.get(command["method"])
    if handler is None:
        return error_envelope(
            command_id, "unknown_command", f"Unknown command: {command['method']}"
        )
    params = command.get("params")
    if not isinstance(params, dict):
        params = {}
    try:
        result, applied = await handler(c, request, thread_id, params)
    except CommandError as exc:
        return error_envelope(command_id, exc.code, exc.message)
    except ApiError as exc:
        converted = _from_api_error(exc)
        return error_envelope(command_id, converted.code, converted.message)
    except Conflict as exc:  # a busy thread and multitask_strategy "reject"
        return error_envelope(command_id, "unknown_error", f"409: {exc}")
    return {
        "type": "success",
        "id": command_id,
        "result": result,
        "meta": {"applied_through_seq": applied},
    }


def well_formed(command: Any) -> bool:
    """A command envelope: a JSON object with an integer id and a string method (HTTP and the
    WebSocket answer any other with invalid_argument)."""
    if not isinstance(command, dict):
        return False
    command_id = command.get("id")
    return (
        isinstance(command_id, int)
        and not isinstance(command_id, bool)
        and isinstance(command.get("method"), str)
    )


@router.post("/threads/{thread_id}/commands")
async def commands(thread_id: str, request: Request, c: ApiContext = Depends(ctx)) -> Response:
    try:
        command = await request.json()
    except ValueError:
        return JsonResponse({"detail": "Invalid JSON body"}, status_code=400)
    command_id = command.get("id") if isinstance(command, dict) else None
    if not well_formed(command):
        envelope = error_envelope(
            command_id, "invalid_argument", "a command needs an integer id and a method"
        )
        return JsonResponse(envelope, status_code=400)
    if not is_uuid(thread_id):
        return JsonResponse(
            error_envelope(command_id, "invalid_argument", "thread id must be a UUID")
        )
    return JsonResponse(await dispatch(c, request, thread_id, command))
