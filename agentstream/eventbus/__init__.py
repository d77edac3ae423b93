"""Per-run ordered event logs: publish once, many readers, subscribe from an id."""

from agentstream.eventbus.base import (
    BusUnavailable,
    Event,
    EventBus,
    EventsEvicted,
    InstantEventBus,
)

__all__ = ["BusUnavailable", "Event", "EventBus", "EventsEvicted", "InstantEventBus"]
