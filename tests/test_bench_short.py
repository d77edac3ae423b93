"""What the benchmark reports of a concurrent run that came back short: its counts, and the
names of the other events it did get (a stream ended after its metadata alone says so)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from benchmarks.scenarios import _noting, _short


async def _parts(*names: str) -> AsyncIterator[tuple[str, Any]]:
    for name in names:
        yield name, {}


def test_a_whole_run_reports_nothing_and_a_short_one_what_it_got() -> None:
    assert _short(20, 20, 0, ["metadata"]) is None
    assert _short(0, 20, 0, ["metadata"]) == "0 of 20 events, 0 error events; besides: metadata"
    assert _short(19, 20, 1, []) == "19 of 20 events, 1 error events"


async def test_the_other_events_are_noted_in_order_at_most_ten() -> None:
    others: list[str] = []
    names = ["metadata", "custom", "custom", *["values"] * 12, "end"]
    passed = [name async for name, _ in _noting(_parts(*names), "custom", others)]
    assert passed == names  # every part goes on, in order
    assert others == ["metadata", *["values"] * 9]
