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
    an item the database refuses fails its own caller alone.

    A caller that finds a flight free and nobody waiting writes its item itself, at once, and
    goes on in the turn its answer arrives. Through a writer task it waited two turns more of
    its loop (the task's start, then its own wake-up), and a worker busy with other runs takes
    milliseconds a turn: on `serve` + `worker` a threaded run's stream closed 1.0-2.5 ms
    sooner after its last event on the median (benchmarks.cpu --threaded --split --distributed
    --concurrent 50, seven pairs: 12.1-14.2 -> 10.2-12.1 ms; p99 within its noise), for 0.4
    more statements a run (ends that fall in one turn with flights free go apart)."""

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
        cancelled while it waits may still have its item written with the others; one
        cancelled while it writes its own item cancels that write."""
        if self._writing < self._flights and not self._pending:
            self._writing += 1
            try:
                await self._one(item)
            finally:
                self._writing -= 1
                if self._pending:  # handed in while every flight was taken
                    self._start_writer()
            return
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writing < self._flights:
            self._start_writer()
        await future

    def _start_writer(self) -> None:
        # Counted here, and by the writer once it has nothing left to write, with no
        # suspension in between: an item handed in as a write ends starts the next (a flag
        # cleared by a done callback, a loop turn later, left such an item waiting forever).
        self._writing += 1
        writer = asyncio.ensure_future(self._write_all())
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)

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
