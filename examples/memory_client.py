"""Cross-thread memory: remember something in one conversation, recall it in another.

    python examples/memory_client.py http://127.0.0.1:2024

Runs the `memory` graph on a first thread with a fact to keep, then on a second, new thread
with nothing, and prints what the second run recalled and what the store API holds.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from langgraph_sdk import get_client


async def main(url: str) -> dict[str, object]:
    client = get_client(url=url)
    user = f"user-{uuid.uuid4().hex[:8]}"
    first = await client.threads.create()
    await client.runs.wait(
        first["thread_id"], "memory", input={"user": user, "remember": "likes green tea"}
    )
    second = await client.threads.create()
    state = await client.runs.wait(second["thread_id"], "memory", input={"user": user})
    assert isinstance(state, dict)
    print("recalled", state["recalled"])
    found = await client.store.search_items([user, "memories"])
    print("stored", [item["value"]["text"] for item in found["items"]])
    return state


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:2024"))
