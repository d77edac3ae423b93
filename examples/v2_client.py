"""Protocol v2 with the official Python SDK: a reply token by token (SSE), an interrupt answered
(WebSocket), then a stream dropped mid-run and resumed with `since`.

    python examples/v2_client.py http://127.0.0.1:2024
"""

import asyncio
import json
import sys
import uuid
from typing import Any

import httpx
from langgraph_sdk import get_client


async def chat(url: str) -> None:
    client = get_client(url=url)
    async with client.threads.stream(assistant_id="agent") as thread:
        await thread.run.start(input={"messages": [{"role": "user", "content": "hello there"}]})
        readers = []
        async for message in thread.messages:  # one per streamed message; read each on its own
            readers.append(asyncio.create_task(tokens(message)))
        print("tokens", await asyncio.gather(*readers))
        print("last", (await thread.output)["messages"][-1]["content"])
    # The same over a WebSocket: one socket per subscription, commands over HTTP.
    async with client.threads.stream(assistant_id="hitl", transport="websocket") as thread:
        await thread.run.start(input={"question": "proceed?"})
        async for _ in thread.values:
            pass  # ends when the run pauses for input
        print("asked", thread.interrupts[0]["value"])
        await thread.run.respond("yes")
        print("answer", (await thread.output)["answer"])


async def tokens(message: Any) -> list[str]:
    return [token async for token in message.text]


async def read(http: httpx.AsyncClient, thread_id: str, body: dict, drop_at: int = -1) -> list:
    """Events until the run ends, or until the tick `drop_at` (then the connection drops)."""
    out = []
    async with http.stream("POST", f"/threads/{thread_id}/stream/events", json=body) as s:
        async for line in s.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                data = out[-1]["params"]["data"]
                if data.get("payload", {}).get("tick") == drop_at:
                    break
                if data.get("event") in ("completed", "failed"):
                    break
    return out


async def resume(url: str) -> None:
    thread_id = str(uuid.uuid4())  # clients mint thread ids; run.start creates the thread
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        command = {"assistant_id": "ticker", "input": {"n": 6, "delay": 0.05}}
        started = await http.post(
            f"/threads/{thread_id}/commands",
            json={"id": 1, "method": "run.start", "params": command},
        )
        # The seq this run's events come after: a stream from it skips the thread's history.
        body = {
            "channels": ["lifecycle", "custom"],
            "since": started.json()["meta"]["applied_through_seq"],
        }
        head = await read(http, thread_id, body, drop_at=2)
        tail = await read(http, thread_id, {**body, "since": head[-1]["seq"]})
    print(
        "ticks",
        [e["params"]["data"]["payload"]["tick"] for e in head + tail if e["method"] == "custom"],
    )


if __name__ == "__main__":
    asyncio.run(chat(sys.argv[1]))
    asyncio.run(resume(sys.argv[1]))
