"""Which failures mean a service is away for now (a restart, a failover, a full disk) rather than
a bug: the API answers them 503, and a run they stop is handed back to run again, not failed."""

from __future__ import annotations

import importlib
import sqlite3

# By module and class name: the drivers of the distributed deployment are an optional extra.
_SERVICE_ERRORS = {
    ("psycopg", "OperationalError"): "the database is unavailable",
    ("psycopg_pool", "PoolTimeout"): "the database is unavailable",
    ("redis.exceptions", "ConnectionError"): "the event bus (Redis) is unavailable",
    ("redis.exceptions", "TimeoutError"): "the event bus (Redis) is unavailable",
    ("agentstream.eventbus.base", "BusUnavailable"): "the event bus (Redis) is unavailable",
}
# SQLite's own words for a database it cannot use right now (locked by another process, a full
# disk), as opposed to a mistake in a query.
_SQLITE_UNAVAILABLE = ("locked", "full", "disk i/o", "unable to open", "readonly")


def service_unavailable(exc: BaseException) -> str | None:
    """What is away and that a retry may succeed, for such an error (or one it was raised
    from); None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _describe(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: BaseException) -> str | None:
    for cls in type(exc).__mro__:
        module = cls.__module__
        what = _SERVICE_ERRORS.get((module.split(".")[0], cls.__name__))
        what = what or _SERVICE_ERRORS.get((module, cls.__name__))
        if what is not None:
            return f"{what}; retry shortly ({type(exc).__name__})"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if any(word in text for word in _SQLITE_UNAVAILABLE):
            return f"the database is unavailable: {exc}; retry shortly"
    return None


def service_error_classes() -> list[type[Exception]]:
    """The exception classes above that this installation has (the extra may be absent)."""
    found: list[type[Exception]] = [sqlite3.OperationalError]
    for module_name, class_name in _SERVICE_ERRORS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            found.append(cls)
    return found
