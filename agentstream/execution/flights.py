"""Flights: one run's publishes to a bus that waits (Redis), at most one in flight at a time.

The run's executor, and its Tokens handler when the run streams tokens, append events to
`items` and call soon() when it was empty, as they do with an in-process bus's writer; what
comes while a publish waits (a round trip) goes out with the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agentstream import metrics
from agentstream.eventbus import EventBus
from agentstream.execution.modes import Item

# The most events one publish carries; what is left goes next.
PUBLISH_MOST = 256


class Flights:
    __slots__ = ("_bus", "_due", "_flight", "_run_id", "items", "published")

    def __init__(self, bus: EventBus, run_id: str, due: Callable[[], float]) -> None:
        self._bus = bus
        self._run_id = run_id
        self._due = due  # when the run fell due, for its time to first event
        self._flight: asyncio.Future[None] | None = None
        self.items: list[Item] = []
        self.published = 0

    def soon(self) -> None:
        """A publish of what `items` holds, unless one is on its way (it takes them too when
        it is done) or one failed (finish() raises that)."""
        flight = self._flight
        if flight is None or (flight.done() and flight.exception() is None):
            self._flight = asyncio.ensure_future(self._send())

    def check(self) -> None:
        """Raises what a publish failed with: a failed publish fails the run."""
        flight = self._flight
        if flight is not None and flight.done():
            flight.result()

    def flush(self) -> None:
        """Nothing to do: a flight takes what is there when it starts."""

    async def finish(self) -> None:
        """However the run's stream ended, what it made is published, in order, before the end."""
        try:
            if self._flight is not None:
                await self._flight
            if self.items:
                await self._send()
        finally:
            metrics.EVENTS_PUBLISHED.inc(self.published)

    async def _send(self) -> None:
        # What is pending when the publish starts (its task's first step, a loop turn after it
        # was made), not when it was made: a burst the graph yielded in that turn (a node's
        # events emitted without an await) goes out together instead of its first event
        # alone, a round trip to Redis for it and one more for each reader. At most
        # PUBLISH_MOST at a time, and then what came meanwhile: a model's whole reply at once
        # (thousands of events) reaches its readers in pieces, the first soon.
        items = self.items
        while items:
            batch = items[:PUBLISH_MOST]
            del items[:PUBLISH_MOST]
            if not self.published:
                metrics.TIME_TO_FIRST_EVENT.observe(max(0.0, time.time() - self._due()))
            self.published += len(batch)
            await self._bus.publish(self._run_id, batch)
