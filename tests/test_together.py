"""Together: writes asked for while one is under way go together in the next."""

from __future__ import annotations

import asyncio

import pytest

from agentstream.storage.together import Together


class Writes:
    """Records each write; the first waits for `release`, so callers can pile up behind it."""

    def __init__(self, refuse: str | None = None) -> None:
        self.made: list[list[str]] = []
        self.release = asyncio.Event()
        self.refuse = refuse

    async def many(self, items: list[str]) -> None:
        await self._write(items)

    async def one(self, item: str) -> None:
        await self._write([item])

    async def _write(self, items: list[str]) -> None:
        first = not self.made
        self.made.append(items)
        if first:
            await self.release.wait()
        if self.refuse in items:
            raise ValueError(f"{self.refuse} refused")


async def _until(condition: object) -> None:
    """A few loop turns, until the callers have handed their items in."""
    for _ in range(20):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_items_handed_in_during_a_write_go_together_in_the_next() -> None:
    writes = Writes()
    together = Together(writes.many, writes.one)
    first = asyncio.ensure_future(together("a"))
    await _until(lambda: writes.made == [["a"]])
    rest = [asyncio.ensure_future(together(item)) for item in ("b", "c", "d")]
    await _until(lambda: len(together._pending) == 3)
    writes.release.set()
    await asyncio.gather(first, *rest)
    assert writes.made == [["a"], ["b", "c", "d"]]


async def test_an_item_handed_in_as_a_write_ends_is_written() -> None:
    # The caller of the first item hands in the second the moment the first is written, before
    # the writer's task has ended: the second must start a write of its own, not wait forever.
    writes = Writes()
    writes.release.set()
    together = Together(writes.many, writes.one)

    async def one_then_another() -> None:
        await together("a")
        await together("b")

    await asyncio.wait_for(one_then_another(), 5)
    assert writes.made == [["a"], ["b"]]


async def test_an_item_the_batch_cannot_take_fails_alone() -> None:
    writes = Writes(refuse="bad")
    together = Together(writes.many, writes.one)
    first = asyncio.ensure_future(together("a"))
    await _until(lambda: writes.made == [["a"]])
    rest = {item: asyncio.ensure_future(together(item)) for item in ("b", "bad", "c")}
    await _until(lambda: len(together._pending) == 3)
    writes.release.set()
    await first
    await asyncio.gather(*rest.values(), return_exceptions=True)
    # The batch failed, then each went alone: only the refused one's caller hears of it.
    assert writes.made == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]
    assert rest["b"].result() is None and rest["c"].result() is None
    with pytest.raises(ValueError, match="bad refused"):
        rest["bad"].result()


async def test_a_cancelled_caller_leaves_the_others_written() -> None:
    writes = Writes()
    together = Together(writes.many, writes.one)
    first = asyncio.ensure_future(together("a"))
    await _until(lambda: writes.made == [["a"]])
    gone = asyncio.ensure_future(together("b"))
    kept = asyncio.ensure_future(together("c"))
    await _until(lambda: len(together._pending) == 2)
    gone.cancel()
    writes.release.set()
    await asyncio.gather(first, kept)
    assert gone.cancelled()
    assert writes.made == [["a"], ["b", "c"]]


async def test_with_two_flights_a_write_held_up_holds_up_no_other() -> None:
    writes = Writes()  # its first write waits for release
    together = Together(writes.many, writes.one, flights=2)
    held = asyncio.ensure_future(together("a"))
    await _until(lambda: writes.made == [["a"]])
    await asyncio.wait_for(together("b"), 5)  # written while "a" still waits
    rest = [asyncio.ensure_future(together(item)) for item in ("c", "d")]
    await asyncio.wait_for(asyncio.gather(*rest), 5)
    assert not held.done()
    writes.release.set()
    await held
    assert writes.made == [["a"], ["b"], ["c", "d"]]
