"""Writes that callers ask for at about the same time, made as one statement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Together(Generic[T]):
    """Writes the items callers hand in, with at most `flights` writes in flight: what is
    handed in while they are goes with the next, all together (`many`); an item alone goes
    alone (`one`).

    Runs of a busy process end together (a round of requests, a burst of slots freed), and
    each end was a statement waiting its turn for a connection of the pool, behind the
    checkpoint writes of every other run: under load that wait was most of the time from a
    threaded run's last event to the end of its stream. Together, they share one statement,
    one connection and one commit. A batch that fails is written again an item at a time, so
    an item the database refuses fails its own caller alone."""

    def __init__(
        self,
        many: Callable[[list[T]], Awaitable[None]],
        one: Callable[[T], Awaitable[None]],
        flights: int = 1,
    ) -> None:
        self._many = many
        self._one = one
        self._flights = flights
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writing = 0
        self._writers: set[asyncio.Task[None]] = set()  # held, so they are not collected

    async def __call__(self, item: T) -> None:
        """Returns once the item is written (or raises why it could not be). A caller that is
        cancelled meanwhile may still have its item written with the others."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writing < self._flights:
            # Counted here, and by the writer once it has nothing left to write, with no
            # suspension in between: an item handed in as a write ends starts the next (a
            # flag cleared by a done callback, a loop turn later, left such an item waiting
            # forever).
            self._writing += 1
            writer = asyncio.ensure_future(self._write_all())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        await future

    async def _write_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
        finally:
            self._writing -= 1
            # Left unwritten only when this task is cancelled (the loop shutting down).
            for _, future in [*batch, *self._pending]:
                future.cancel()  # a no-op for those written
            self._pending = []

    async def _write(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        if len(batch) > 1:
            try:
                await self._many([item for item, _ in batch])
            except Exception:
                pass  # again one at a time, below: each caller learns its own outcome
            else:
                for _, future in batch:
                    _resolve(future, None)
                return
        for item, future in batch:
            try:
                await self._one(item)
            except Exception as exc:
                _resolve(future, exc)
            else:
                _resolve(future, None)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
