"""What every route reaches: storage, the event bus, the run service, the graphs, settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from agentstream.api.errors import ApiError
from agentstream.eventbus import EventBus
from agentstream.execution.runs import RunService
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

    async def authorize(
        self, request: Request, resource: str, action: str, value: dict[str, Any]
    ) -> Filter | None:
        """The owner filter for this request and action. Without an auth handler configured
        the server is open, as `langgraph dev` is, and nothing is filtered."""
        return None

    async def resolve_assistant(self, assistant_id: str, *, filters: Filter | None) -> Assistant:
        """A graph name picks its default assistant; otherwise a UUID of a stored one."""
        if assistant_id in self.graphs:
            assistant_id = default_assistant_id(assistant_id)
        elif not is_uuid(assistant_id):
            graphs = ", ".join(self.graphs.ids)
            raise ApiError(
                422,
                f"Invalid assistant: '{assistant_id}'. Must be either:\n- A valid assistant "
                f"UUID, or\n- One of the registered graphs: {graphs}",
            )
        try:
            return await self.storage.get_assistant(assistant_id, filters=filters)
        except NotFound:
            raise ApiError(404, "Thread or assistant not found.") from None


def ctx(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.ctx
    return context


def require_uuid(value: str, what: str) -> str:
    if not is_uuid(value):
        raise ApiError(422, f"Invalid {what} ID: must be a UUID")
    return value
