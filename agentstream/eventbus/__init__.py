"""Per-run ordered event logs: publish once, many readers, subscribe from an id."""

from agentstream.eventbus.base import (
    END_MODES,
    BusUnavailable,
    Event,
    EventBus,
    EventsEvicted,
    encode_frame,
)

__all__ = ["END_MODES", "BusUnavailable", "Event", "EventBus", "EventsEvicted", "encode_frame"]
