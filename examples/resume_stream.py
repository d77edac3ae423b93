"""Resume a stream after a dropped connection, losing and repeating nothing.

    python examples/resume_stream.py http://127.0.0.1:2024

Starts a 20-tick run on a new thread, reads 5 events and hangs up (the run keeps going:
on_disconnect defaults to "continue"), then reconnects with the id of the last event seen
and prints the ticks of both halves joined together.
"""

from __future__ import annotations

import asyncio
import sys

from langgraph_sdk import get_client


async def main(url: str) -> list[int]:
    client = get_client(url=url)
    thread = await client.threads.create()
    ticks: list[int] = []
    last_id = None
    run_id = None
    async for part in client.runs.stream(
        thread["thread_id"],
        "ticker",
        input={"n": 20, "delay": 0.02},
        stream_mode="custom",
        on_run_created=lambda meta: print("run", meta["run_id"]),
    ):
        if part.event == "metadata":
            run_id = part.data["run_id"]
        if part.event == "custom":
            ticks.append(part.data["tick"])
        last_id = part.id
        if len(ticks) == 5:
            break  # the connection drops here
    assert run_id is not None and last_id is not None
    async for part in client.runs.join_stream(thread["thread_id"], run_id, last_event_id=last_id):
        if part.event == "custom":
            ticks.append(part.data["tick"])
    print("ticks", ticks)
    return ticks


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:2024"))
