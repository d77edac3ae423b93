"""Small helpers several test modules share."""

from __future__ import annotations

from typing import Any

import httpx


def summary(values: Any) -> list[tuple[str, str]]:
    """A state's messages as (type, content) pairs."""
    return [(m["type"], m["content"]) for m in values["messages"]]


async def new_thread(http: httpx.AsyncClient) -> str:
    response = await http.post("/threads", json={})
    assert response.status_code == 200
    return str(response.json()["thread_id"])
