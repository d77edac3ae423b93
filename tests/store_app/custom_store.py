"""A user's own store (`store.path`): an InMemoryStore opened as a context manager."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.store.memory import InMemoryStore


@asynccontextmanager
async def generate_store() -> AsyncIterator[InMemoryStore]:
    store = InMemoryStore()
    await store.aput(("seeded",), "by", {"who": "custom_store.py"})
    yield store
