"""The run-creating routes, taken before FastAPI's router when their body is well-formed.

`POST /runs/stream`, `/runs/wait`, `/runs` and their `/threads/{thread_id}/runs...` forms start
every run. Through FastAPI each one went through route matching over every route, dependency
solving, a second body parse and validation, and three more middleware layers wrapping each
frame sent: about 0.2 ms of the server's CPU per run, an eighth of a short stateless run.

This middleware sits inside ours (CORS, body limit, authentication) and outside FastAPI's
router. It takes a request only when the body parses and validates as `RunCreate`; anything
else (bad JSON, a wrong content type, a validation error) goes on to FastAPI with the body
replayed, so every error is worded exactly as before. The handlers are the routes' own
(`runs.stream_response` and the others), and their errors go to the app's exception
handlers, as FastAPI would send them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import serde
from agentstream.api import runs
from agentstream.api.context import ApiContext
from agentstream.api.models import RunCreate
from agentstream.api.requests import too_deep

Handler = Callable[[ApiContext, Request, RunCreate, "str | None"], Awaitable[Response]]

_HANDLERS: dict[str, Handler] = {
    "stream": runs.stream_response,
    "wait": runs.wait_response,
    "": runs.background_response,
}


def match(path: str) -> tuple[Handler, str | None] | None:
    """(handler, thread_id) for a run-creating path, else None."""
    parts = path.split("/")
    # "/runs/stream" -> ["", "runs", "stream"]; "/threads/T/runs" -> ["", "threads", "T", "runs"]
    if parts[0] != "":
        return None
    if parts[1:2] == ["runs"]:
        thread_id, rest = None, parts[2:]
    elif parts[1:2] == ["threads"] and len(parts) >= 4 and parts[2] and parts[3] == "runs":
        thread_id, rest = parts[2], parts[4:]
    else:
        return None
    if len(rest) > 1 or rest == [""]:  # "/runs/" is FastAPI's to redirect
        return None
    handler = _HANDLERS.get(rest[0] if rest else "")
    return None if handler is None else (handler, thread_id)


class RunRoutes:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = match(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            body = await _read_body(receive)  # over the size limit: BodyLimit raises 413 here
        except Exception as exc:
            await self._answer_error(request, exc, scope, receive, send)
            return
        if body is None:
            return  # the client left before its body was in; nobody to answer
        parsed = _parse(scope, body)
        if parsed is None:
            await self.app(scope, _replay(body, receive), send)
            return
        handler, thread_id = route
        context: ApiContext = self.api.state.ctx
        try:
            response = await handler(context, request, parsed, thread_id)
        except Exception as exc:
            await self._answer_error(request, exc, scope, receive, send)
            return
        await response(scope, receive, send)

    async def _answer_error(
        self, request: Request, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        answer = self._exception_handler(exc)
        if answer is None:
            raise exc  # FastAPI's outer error middleware answers it, as for any route
        result = answer(request, exc)
        response = await result if inspect.isawaitable(result) else result
        await response(scope, receive, send)

    def _exception_handler(self, exc: Exception) -> Callable[..., Any] | None:
        handlers = self.api.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = handlers.get(cls)
            if handler is not None:
                return handler
        return None


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
