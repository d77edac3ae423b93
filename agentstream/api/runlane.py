"""The run lane: the run-creating routes, taken before FastAPI's router for well-formed bodies.

`POST /runs/stream`, `/runs/wait`, `/runs` and their `/threads/{thread_id}/runs...` forms start
every run. Through FastAPI each one went through route matching over every route, dependency
solving, a second body parse and validation, and three more middleware layers wrapping each
frame sent: about 0.2 ms of the server's CPU per run, an eighth of a short stateless run.

This middleware sits inside ours (CORS, body limit, authentication) and outside FastAPI's
router. It takes a request only when the body parses and validates as `RunCreate`; anything
else (bad JSON, a wrong content type, a validation error) goes on to FastAPI with the body
replayed, so every error is worded exactly as before. The handlers are the routes' own
(runs.RUN_CREATE, the one table FastAPI's routes are built from too), and their errors
are answered by errors.response_for, as FastAPI's exception handlers answer them.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import serde
from agentstream.api import errors
from agentstream.api.context import ApiContext
from agentstream.api.models import RunCreate
from agentstream.api.requests import too_deep
from agentstream.api.runs import RUN_CREATE, Handler

# The lane's view of runs.RUN_CREATE: stateless paths as they are; threaded ones by what
# follows "/threads/{thread_id}/".
_STATELESS = {route.path: route.handle for route in RUN_CREATE if not route.threaded}
_THREADED = {
    route.path.removeprefix("/threads/{thread_id}/"): route.handle
    for route in RUN_CREATE
    if route.threaded
}


def match(path: str) -> tuple[Handler, str | None] | None:
    """(handler, thread_id) for a run-creating path, else None."""
    handler = _STATELESS.get(path)
    if handler is not None:
        return handler, None
    # "/threads/T/runs/stream" -> ["", "threads", "T", "runs/stream"]
    parts = path.split("/", 3)
    if len(parts) == 4 and parts[0] == "" and parts[1] == "threads" and parts[2]:
        handler = _THREADED.get(parts[3])
        if handler is not None:
            return handler, parts[2]
    return None


class RunLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = match(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)  # over the size limit: BodyLimit raises 413 here
        except Exception as exc:
            await _answer_error(exc, scope, receive, send)
            return
        if body is None:
            return  # the client left before its body was in; nobody to answer
        parsed = _parse(scope, body)
        if parsed is None:
            await self.app(scope, _replay(body, receive), send)
            return
        handler, thread_id = route
        # The route's only dependency, `ctx`, as FastAPI would give it. The request's body
        # can be read again, as in a FastAPI route.
        context: ApiContext = scope["app"].state.ctx
        try:
            response = await handler(
                context, Request(scope, _replay(body, receive)), parsed, thread_id
            )
        except Exception as exc:
            await _answer_error(exc, scope, receive, send)
            return
        await response(scope, receive, send)


async def _answer_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    response = errors.response_for(exc)
    if response is None:
        raise exc  # the server's error middleware answers it, as for any route
    await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left before sending it all
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(scope: Scope, body: bytes) -> RunCreate | None:
    """The body as RunCreate, or None for anything FastAPI should answer itself."""
    if not body or not _json_content(scope):
        return None
    try:
        value = serde.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or too_deep(value):
        return None
    try:
        return RunCreate.model_validate(value)
    except ValidationError:
        return None


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return True  # FastAPI reads a body without a content type as JSON too


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
