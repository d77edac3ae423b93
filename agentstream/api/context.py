"""What every route reaches: storage, the event bus, the run service, the graphs, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from langgraph.store.base import BaseStore

from agentstream.api.auth import Gate, current_user
from agentstream.api.deployment import HeaderPassthrough
from agentstream.api.errors import ApiError
from agentstream.eventbus import EventBus
from agentstream.execution.runs import RunService
from agentstream.execution.webhooks import WebhookPolicy
from agentstream.graphs import GraphRegistry, default_assistant_id
from agentstream.ids import is_uuid
from agentstream.settings import Settings
from agentstream.storage.base import Assistant, Filter, NotFound, Storage


@dataclass
class ApiContext:
    storage: Storage
    bus: EventBus
    runs: RunService
    graphs: GraphRegistry
    settings: Settings
    auth: Gate | None = None
    headers: HeaderPassthrough = field(default_factory=HeaderPassthrough)
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)
    store: BaseStore | None = None

    async def authorize(
        self, request: Request, resource: str, action: str, value: dict[str, Any]
    ) -> Filter | None:
        """The owner filter for this request and action, from the most specific auth handler;
        it may also change `value`, and routes store what it leaves there. It raises 403 when
        the handler says no. Without an auth file nothing is filtered (API keys only admit)."""
        if self.auth is None:
            return None
        if "metadata" in value and value["metadata"] is None:
            # The documented handlers do `value.setdefault("metadata", {})[...] = ...`, on
            # searches too, whose bodies often leave metadata out.
            value["metadata"] = {}
        return await self.auth.authorize(current_user(request), resource, action, value)

    def authorizes(self, resource: str, action: str) -> bool:
        """Whether an auth handler decides this resource and action."""
        return self.auth is not None and self.auth.authorizes(resource, action)

    def assistant_id(self, given: str) -> str:
        """A graph name picks its default assistant; otherwise a UUID of a stored one."""
        if given in self.graphs:
            return default_assistant_id(given)
        if not is_uuid(given):
            graphs = ", ".join(self.graphs.ids)
            raise ApiError(
                422,
                f"Invalid assistant: '{given}'. Must be either:\n- A valid assistant "
                f"UUID, or\n- One of the registered graphs: {graphs}",
            )
        return given

    async def resolve_assistant(self, assistant_id: str, *, filters: Filter | None) -> Assistant:
        """The assistant a graph name or an assistant's UUID names (see assistant_id)."""
        assistant_id = self.assistant_id(assistant_id)
        try:
            return await self.storage.get_assistant(assistant_id, filters=filters)
        except NotFound:
            raise ApiError(404, "Thread or assistant not found.") from None


async def ctx(request: Request) -> ApiContext:
    # Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, one thread
    # hand-off on every request for a dictionary lookup.
    context: ApiContext = request.app.state.ctx
    return context


def require_uuid(value: str, what: str) -> str:
    if not is_uuid(value):
        raise ApiError(422, f"Invalid {what} ID: must be a UUID")
    return value
