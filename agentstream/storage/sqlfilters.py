"""Owner filters and metadata matches as SQL conditions on JSON columns (SQLite dialect)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstream import serde


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


def _equals(column: str, key: str, value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, dict | list):
        return f"json_extract({column}, ?) = json(?)", [_path(key), serde.dumps(value).decode()]
    if value is None:
        return f"json_type({column}, ?) = 'null'", [_path(key)]
    return f"json_extract({column}, ?) = ?", [_path(key), _scalar(value)]


def _contains(column: str, key: str, value: Any) -> tuple[str, list[Any]]:
    items = value if isinstance(value, list) else [value]
    clauses = [
        f"EXISTS (SELECT 1 FROM json_each({column}, ?) WHERE json_each.value = ?)" for _ in items
    ]
    params: list[Any] = []
    for item in items:
        params += [_path(key), _scalar(item)]
    return " AND ".join(clauses) or "1", params


def match(column: str, conditions: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """A condition that holds when the JSON object in `column` matches every key.

    Plain values and {"$eq": v} mean equality; {"$contains": v} means the list at that key
    holds v (or every item of v).
    """
    if not conditions:
        return "1", []
    parts: list[str] = []
    params: list[Any] = []
    for key, value in conditions.items():
        if (
            isinstance(value, dict)
            and len(value) == 1
            and next(iter(value)) in ("$eq", "$contains")
        ):
            op, operand = next(iter(value.items()))
            sql, p = (_equals if op == "$eq" else _contains)(column, key, operand)
        else:
            sql, p = _equals(column, key, value)
        parts.append(sql)
        params += p
    return " AND ".join(parts), params
