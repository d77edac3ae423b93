"""Owner filters and metadata matches as SQL conditions on JSONB columns (PostgreSQL dialect)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from agentstream import serde
from agentstream.storage.dialect import Bind


def jsonb(value: Any) -> Jsonb:
    """A JSONB parameter encoded the way every other JSON value of ours is (orjson)."""
    return Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> bytes:
    return serde.dumps(value)


def equals(column: str, key: str, value: Any, bind: Bind) -> str:
    # Containment lets a GIN index on the column answer the query. For a scalar it is exact
    # equality; a dict or list also contains its own subsets, so those also compare the value.
    if isinstance(value, dict | list):
        return (
            f"({column} @> {bind(jsonb({key: value}))} "
            f"AND {column} -> {bind(key)}::text = {bind(jsonb(value))})"
        )
    return f"{column} @> {bind(jsonb({key: value}))}"


def contains(column: str, key: str, value: Any, bind: Bind) -> str:
    items = value if isinstance(value, list) else [value]
    if not items:
        return "TRUE"
    # A lone scalar also matches a scalar (not a list) at the key, as it does in SQLite.
    single = len(items) == 1 and not isinstance(items[0], dict | list)
    return f"{column} -> {bind(key)}::text @> {bind(jsonb(items[0] if single else items))}"
