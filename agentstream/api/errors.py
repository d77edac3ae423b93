"""Every error leaves as {"detail": "<string>"}, the shape the SDKs and the real server use."""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentstream.api.responses import JsonResponse
from agentstream.graphs import GraphLoadError
from agentstream.outages import service_error_classes, service_unavailable
from agentstream.storage.base import NotFound, StorageError

log = logging.getLogger("agentstream.api")


class ApiError(HTTPException):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "Invalid JSON in request body"
    first = errors[0] if errors else {}
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return "Invalid JSON in request body"  # an empty body, as the real server words it
    where = _location(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return f'"{where}" is a required property'
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"{where}: {first.get('msg', 'invalid value')} (got {shown})"


# What a client reads for each storage error kind; the one place storage errors are worded.
# The key's parts fill the placeholders ({0} is the id; a version's {1} is its number).
_NOT_FOUND = {
    "assistant": "Assistant '{0}' not found",
    "version": "Version {1} of assistant '{0}' not found",
    "thread": "Thread with ID {0} not found",
    "run": "Run not found",
    "cron": "Cron with ID {0} not found",
}
_CONFLICT = {
    "assistant": "Assistant {0} already exists",
    "thread": "Thread with ID {0} already exists",
    "busy": "Thread is already running a task. Wait for it to finish or choose a different "
    "multitask strategy.",
}


def storage_answer(exc: StorageError) -> tuple[int, str]:
    """The status and detail of the answer to a storage error no route handled itself."""
    if isinstance(exc, NotFound):
        return 404, _NOT_FOUND[exc.what].format(*exc.key)
    return 409, _CONFLICT[exc.what].format(*exc.key)


@functools.cache
def _service_errors() -> tuple[type[Exception], ...]:
    # A service away (database, Redis): by class, so that it is answered where it is raised
    # rather than by the catch-all, which Starlette re-raises after answering (and uvicorn then
    # drops the client's keep-alive connection).
    return tuple(service_error_classes())


def response_for(exc: Exception) -> JsonResponse | None:
    """The answer to an exception a route raised, for FastAPI's routes and the lane alike; None
    for an unexpected one, which the server's error middleware answers (unexpected_response)
    and logs."""
    if isinstance(exc, RequestValidationError):
        return JsonResponse({"detail": validation_message(exc)}, status_code=422)
    if isinstance(exc, StarletteHTTPException):
        return JsonResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )
    if isinstance(exc, StorageError):
        status, detail = storage_answer(exc)
        return JsonResponse({"detail": detail}, status_code=status)
    if isinstance(exc, GraphLoadError):
        return JsonResponse({"detail": str(exc)}, status_code=400)
    if isinstance(exc, _service_errors()):
        return unexpected_response(exc)
    return None


def unexpected_response(exc: Exception) -> JsonResponse:
    """503 for a service that is away (a retry may succeed), else 500; never a traceback on the
    wire, the log keeps it."""
    unavailable = service_unavailable(exc)
    if unavailable is not None:
        log.warning("answered 503: %s", unavailable)
        return JsonResponse({"detail": unavailable}, status_code=503)
    log.exception("unhandled error", exc_info=exc)
    return JsonResponse({"detail": "Internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    async def answer(_: Request, exc: Exception) -> JsonResponse:
        return response_for(exc) or unexpected_response(exc)

    answered = (RequestValidationError, StarletteHTTPException, StorageError, GraphLoadError)
    for cls in (*answered, *_service_errors()):
        app.add_exception_handler(cls, answer)
    app.add_exception_handler(Exception, answer)
