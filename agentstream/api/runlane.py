"""The run lane: the run-creating routes, and thread creation, taken before FastAPI's router
for well-formed bodies.

`POST /runs/stream`, `/runs/wait`, `/runs` and their `/threads/{thread_id}/runs...` forms start
every run. Through FastAPI each one went through route matching over every route, dependency
solving, a second body parse and validation, and three more middleware layers wrapping each
frame sent: about 0.2 ms of the server's CPU per run, an eighth of a short stateless run.
`POST /threads` comes before most threaded runs (a client creates its thread, then streams a
run on it), and paid the same.

This middleware sits inside ours (CORS, body limit, authentication) and outside FastAPI's
router. It takes a request only when the body parses and validates as the route's model; anything
else (bad JSON, a wrong content type, a validation error) goes on to FastAPI with the body
replayed, so every error is worded exactly as before. The handlers are the routes' own
(runs.RUN_CREATE, the one table FastAPI's routes are built from too; threads.create_thread),
and their errors are answered by errors.response_for, as FastAPI's exception handlers answer
them. Each route is the lane's only while its family of routes is served (`families`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import serde
from agentstream.api import errors, threads
from agentstream.api.context import ApiContext
from agentstream.api.models import RunCreate, ThreadCreate
from agentstream.api.requests import too_deep
from agentstream.api.runs import RUN_CREATE

# (context, request, body, thread_id or None): runs.Handler, and thread creation's the same way.
Handler = Callable[[ApiContext, Request, Any, "str | None"], Awaitable[Response]]


class Route(NamedTuple):
    """A route the lane takes."""

    handle: Handler
    model: type[BaseModel]  # what its body must validate as
    family: str  # its family of routes (http.disable_<family> turns it off)


async def _create_thread(
    c: ApiContext, request: Request, body: ThreadCreate, thread_id: str | None
) -> Response:
    return await threads.create_thread(request, body, c)


# The lane's routes: paths without a thread as they are; a thread's by what follows
# "/threads/{thread_id}/".
_EXACT: dict[str, Route] = {
    route.path: Route(route.handle, RunCreate, "runs") for route in RUN_CREATE if not route.threaded
}
_EXACT["/threads"] = Route(_create_thread, ThreadCreate, "threads")
_THREADED: dict[str, Route] = {
    route.path.removeprefix("/threads/{thread_id}/"): Route(route.handle, RunCreate, "runs")
    for route in RUN_CREATE
    if route.threaded
}


def match(path: str) -> tuple[Route, str | None] | None:
    """(route, thread_id) for a path the lane takes, else None."""
    route = _EXACT.get(path)
    if route is not None:
        return route, None
    # "/threads/T/runs/stream" -> ["", "threads", "T", "runs/stream"]
    parts = path.split("/", 3)
    if len(parts) == 4 and parts[0] == "" and parts[1] == "threads" and parts[2]:
        route = _THREADED.get(parts[3])
        if route is not None:
            return route, parts[2]
    return None


class RunLane:
    def __init__(self, app: ASGIApp, families: Collection[str]) -> None:
        self.app = app
        self.families = frozenset(families)  # the families of routes the server serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = match(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST" or found[0].family not in self.families:
            await self.app(scope, receive, send)
            return
        route, thread_id = found
        try:
            body = await _read_body(receive)  # over the size limit: BodyLimit raises 413 here
        except Exception as exc:
            await _answer_error(exc, scope, receive, send)
            return
        if body is None:
            return  # the client left before its body was in; nobody to answer
        parsed = _parse(scope, body, route.model)
        if parsed is None:
            await self.app(scope, _replay(body, receive), send)
            return
        # The route's only dependency, `ctx`, as FastAPI would give it. The request's body
        # can be read again, as in a FastAPI route.
        context: ApiContext = scope["app"].state.ctx
        try:
            response = await route.handle(
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


def _parse(scope: Scope, body: bytes, model: type[BaseModel]) -> BaseModel | None:
    """The body as `model`, or None for anything FastAPI should answer itself."""
    if not body or not _json_content(scope):
        return None
    try:
        value = serde.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or too_deep(value):
        return None
    try:
        return model.model_validate(value)
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
