"""Request bodies parsed the way they are stored: orjson, with a bound on nesting.

Every body we keep is encoded again by orjson, which stops at 255 levels and at 64-bit
integers; parsing with orjson (larger integers become floats, as on LangGraph Server) and
refusing bodies nested deeper than MAX_DEPTH makes both a 422 up front instead of a 500 later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from agentstream import serde

# Deep enough for any real state or metadata; what we wrap around a body stays under orjson's
# own limit of 255 levels.
MAX_DEPTH = 100


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI answers it with a 422.
            value = serde.loads(raw)
            if too_deep(value):
                raise json.JSONDecodeError(
                    f"nested deeper than {MAX_DEPTH} levels", raw.decode("latin-1")[:200], 0
                )
            self._json = value
        return self._json


class JsonRoute(APIRoute):
    """A route whose JSON body goes through JsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(JsonRequest(request.scope, request.receive))

        return handler


def too_deep(value: Any) -> bool:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False
