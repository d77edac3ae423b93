"""Owner filters and metadata matches as SQL conditions on JSONB columns (PostgreSQL dialect)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from agentstream import serde


def jsonb(value: Any) -> Jsonb:
    """A JSONB parameter encoded the way every other JSON value of ours is (orjson)."""
    return Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> bytes:
    return serde.dumps(value)


def _equals(column: str, key: str, value: Any) -> tuple[str, list[Any]]:
    # Containment lets a GIN index on the column answer the query. For a scalar it is exact
    # equality; a dict or list also contains its own subsets, so those also compare the value.
    if isinstance(value, dict | list):
        return (
            f"({column} @> %s AND {column} -> %s::text = %s)",
            [jsonb({key: value}), key, jsonb(value)],
        )
    return f"{column} @> %s", [jsonb({key: value})]


def _contains(column: str, key: str, value: Any) -> tuple[str, list[Any]]:
    items = value if isinstance(value, list) else [value]
    if not items:
        return "TRUE", []
    # A lone scalar also matches a scalar (not a list) at the key, as it does in SQLite.
    single = len(items) == 1 and not isinstance(items[0], dict | list)
    return f"{column} -> %s::text @> %s", [key, jsonb(items[0] if single else items)]


def match(column: str, conditions: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """A condition that holds when the JSON object in `column` matches every key.

    Plain values and {"$eq": v} mean equality; {"$contains": v} means the list at that key
    holds v (or every item of v).
    """
    if not conditions:
        return "TRUE", []
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
