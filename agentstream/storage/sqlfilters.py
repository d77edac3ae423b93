"""Owner filters and metadata matches as SQL conditions on JSON columns (SQLite dialect)."""

from __future__ import annotations

from typing import Any

from agentstream import serde
from agentstream.storage.dialect import Bind


def _path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


_INT64 = range(-(2**63), 2**63)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value not in _INT64:
        # SQLite binds 64-bit integers only; its JSON holds a larger one as a REAL anyway.
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return value


def equals(column: str, key: str, value: Any, bind: Bind) -> str:
    path = bind(_path(key))
    if isinstance(value, dict | list):
        return f"json_extract({column}, {path}) = json({bind(serde.dumps(value).decode())})"
    if value is None:
        return f"json_type({column}, {path}) = 'null'"
    return f"json_extract({column}, {path}) = {bind(_scalar(value))}"


def contains(column: str, key: str, value: Any, bind: Bind) -> str:
    items = value if isinstance(value, list) else [value]
    clauses = [
        f"EXISTS (SELECT 1 FROM json_each({column}, {bind(_path(key))}) "
        f"WHERE json_each.value = {bind(_scalar(item))})"
        for item in items
    ]
    return " AND ".join(clauses) or "1"


def key_rows(key: str, value: Any, bind: Bind) -> str | None:
    """thread_keys' rows (migration 6) of `key` equal to a scalar value; None for a value it
    does not keep (null, an object, a list). The same comparison as equals(): json_each gives
    each value as json_extract does, and neither side has an affinity to convert it (the JSON
    string "1" is not the number 1)."""
    if value is None or isinstance(value, dict | list):
        return None
    return f"key = {bind(key)} AND value = {bind(_scalar(value))}"
