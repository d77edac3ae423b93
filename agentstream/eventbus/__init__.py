"""Per-run ordered event logs: publish once, many readers, subscribe from an id."""

from agentstream.eventbus.base import Event, EventBus, EventsEvicted

__all__ = ["Event", "EventBus", "EventsEvicted"]
