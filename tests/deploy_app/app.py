"""A user's own FastAPI app, mounted beside agentstream's routes by `http.app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

started: list[bool] = []


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    started.append(True)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
async def hello() -> dict[str, object]:
    return {"hello": "world", "started": bool(started)}


@app.get("/info")
async def info() -> dict[str, object]:
    # Shadows the server's own /info: a user's route comes first.
    return {"custom": True}
