"""Every error leaves as {"detail": "<string>"}, the shape the SDKs and the real server use."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentstream.api.responses import JsonResponse
from agentstream.graphs import GraphLoadError
from agentstream.storage.base import Conflict, NotFound

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


# Exceptions worded as they are, with the status their kind means (a ThreadBusy is a Conflict).
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (GraphLoadError, 400),
)
_ANSWERED = (RequestValidationError, StarletteHTTPException, *(cls for cls, _ in _STATUS))


def response_for(exc: Exception) -> JsonResponse | None:
    """The answer to an exception a route raised, for FastAPI's routes and the lane alike; None
    for an unexpected one, which the server's error middleware answers (500) and logs."""
    if isinstance(exc, RequestValidationError):
        return JsonResponse({"detail": validation_message(exc)}, status_code=422)
    if isinstance(exc, StarletteHTTPException):
        return JsonResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return JsonResponse({"detail": str(exc)}, status_code=status)
    return None


def install(app: FastAPI) -> None:
    async def answer(_: Request, exc: Exception) -> JsonResponse:
        response = response_for(exc)
        if response is not None:
            return response
        unavailable = unavailable_detail(exc)
        if unavailable is not None:
            log.warning("answered 503: %s", unavailable)
            return JsonResponse({"detail": unavailable}, status_code=503)
        # Never a traceback on the wire; the log keeps it.
        log.exception("unhandled error", exc_info=exc)
        return JsonResponse({"detail": "Internal server error"}, status_code=500)

    for cls in _ANSWERED:
        app.add_exception_handler(cls, answer)
    app.add_exception_handler(Exception, answer)


# Exceptions that mean a service is away for now (by module and class name: the drivers of
# the distributed deployment are an optional extra), and what the client is told.
_SERVICE_ERRORS = {
    ("psycopg", "OperationalError"): "the database is unavailable",
    ("psycopg_pool", "PoolTimeout"): "the database is unavailable",
    ("redis.exceptions", "ConnectionError"): "the event bus (Redis) is unavailable",
    ("redis.exceptions", "TimeoutError"): "the event bus (Redis) is unavailable",
    ("agentstream.eventbus.base", "BusUnavailable"): "the event bus (Redis) is unavailable",
}
# SQLite's own words for a database it cannot use right now (locked by another process, a
# full disk), as opposed to a bug in a query.
_SQLITE_UNAVAILABLE = ("locked", "full", "disk i/o", "unable to open", "readonly")


def unavailable_detail(exc: BaseException) -> str | None:
    """The 503 detail for an error that a retry later may not meet, else None."""
    for cls in type(exc).__mro__:
        what = _SERVICE_ERRORS.get((cls.__module__.split(".")[0], cls.__name__))
        what = what or _SERVICE_ERRORS.get((cls.__module__, cls.__name__))
        if what is not None:
            return f"{what}; retry shortly ({type(exc).__name__})"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if any(word in text for word in _SQLITE_UNAVAILABLE):
            return f"the database is unavailable: {exc}; retry shortly"
    return None
