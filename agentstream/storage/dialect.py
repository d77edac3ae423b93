"""What a SQL dialect gives the run store: named queries, placeholders, and JSON conditions."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# One statement of a verb: SQL text and its named parameters. A verb is a generator of steps
# that receives each step's (rows, rowcount) and returns the verb's result: the connector runs
# it (in one transaction, or in one hand-off to SQLite's thread), so the rules exist once.
Step = tuple[str, Mapping[str, Any]]
Result = tuple[Sequence[Sequence[Any]], int]
Verb = Generator[Step, Result, T]

# A condition on one key of a JSON column: (column, key, value, bind) -> SQL, where bind(value)
# adds a parameter and returns its placeholder.
Bind = Callable[[Any], str]
Condition = Callable[[str, str, Any, Bind], str]


@dataclass(frozen=True)
class Dialect:
    queries: Mapping[str, str]  # name -> SQL; a few are templates ({cond}, {where}, {order})
    scripts: Mapping[str, tuple[str, ...]]  # name -> statements run one after the other
    mark: Callable[[str], str]  # a named parameter's placeholder
    equals: Condition
    contains: Condition
    true: str
    # Threads' metadata keys equal to a scalar, as a condition on the rows of an index of
    # their own (key, value, bind) -> SQL, or None for a value it cannot find so: the queries
    # "thread_with_key", "search_threads_by_key" and "count_threads_by_key" take it as {key}.
    # None: the JSON column is indexed itself (PostgreSQL's GIN answers `equals`).
    key_rows: Callable[[str, Any, Bind], str | None] | None = None

    def __getitem__(self, name: str) -> str:
        return self.queries[name]


# How often a claim picks again when another process started the run it picked (PostgreSQL;
# SQLite's write lock makes the pick and the start one step).
CLAIM_TRIES = 8

# A statement's named parameters: a plain dict, which sqlite3 binds fastest.
Params = dict[str, Any]


def binder(d: Dialect, p: Params) -> Bind:
    """Adds a parameter to p under a fresh name and returns its placeholder."""

    def bind(value: Any) -> str:
        name = f"_p{len(p)}"
        p[name] = value
        return d.mark(name)

    return bind


def match(
    d: Dialect,
    column: str,
    conditions: Mapping[str, Any] | None,
    p: Params,
    *,
    thread: bool = False,
) -> str:
    """A condition that holds when the JSON object in `column` matches every key.

    Plain values and {"$eq": v} mean equality; {"$contains": v} means the list at that key
    holds v (or every item of v). With thread=True (a thread's metadata), an equality the
    dialect's key_rows can answer goes through its index instead of the JSON.
    """
    if not conditions:
        return d.true
    bind = binder(d, p)
    keys = d.key_rows if thread else None
    parts: list[str] = []
    for key, value in conditions.items():
        op, operand = operation(value)
        if op == "$eq" and keys is not None and (indexed := keys(key, operand, bind)):
            parts.append(d["thread_with_key"].format(key=indexed))
        else:
            parts.append((d.equals if op == "$eq" else d.contains)(column, key, operand, bind))
    return " AND ".join(parts)


def operation(value: Any) -> tuple[str, Any]:
    """A condition's value as (operator, operand): {"$eq": v} and {"$contains": v} say theirs;
    any other value (a dict too) means equality with itself."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _OPS:
        op, operand = next(iter(value.items()))
        return op, operand
    return "$eq", value


_OPS = ("$eq", "$contains")
