"""Per-run ordered event logs: publish once, many readers, subscribe from an id."""

from agentstream.eventbus.base import (
    Batch,
    BusUnavailable,
    Event,
    EventBus,
    EventsEvicted,
    Frames,
    InstantEventBus,
)

__all__ = [
    "Batch",
    "BusUnavailable",
    "Event",
    "EventBus",
    "EventsEvicted",
    "Frames",
    "InstantEventBus",
]
