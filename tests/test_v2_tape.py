"""The v2 thread tape against real storage and the in-process bus, where ordering matters:
a v2 run's worker stores the run as ended before it publishes the terminal event, so a reader
that finds the run ended must still wait for that event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from agentstream.api.v2_stream import SEQ_BASE, Out, Subscription, ThreadTape
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.runs import new_run, thread_log
from agentstream.execution.v3events import V2_MODE
from agentstream.protocol import RESULT_MODE
from agentstream.storage.base import NewRun
from agentstream.storage.sqlite import SqliteStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    opened = SqliteStorage(tmp_path / "agentstream.sqlite")
    await opened.setup()
    yield opened
    await opened.aclose()


def _lifecycle(event: str, run_id: str) -> tuple[str, str, bytes]:
    data = {"namespace": [], "timestamp": 0, "data": {"event": event, "run_id": run_id}}
    return (V2_MODE, "lifecycle", orjson.dumps(data))


async def test_a_run_stored_as_ended_is_read_through_its_terminal_event(
    storage: SqliteStorage,
) -> None:
    bus = MemoryEventBus()
    thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    run = new_run(run_id, thread_id, "asst", {}, {}, "reject")
    await storage.create_run(NewRun(run, False, "create", {}, {}, None))
    assert await storage.claim_run("w1", 30) is not None
    await bus.publish(thread_log(thread_id), [("run", "run", run_id.encode())])
    await bus.publish(run_id, [_lifecycle("running", run_id)])
    # What a worker does between storing the end and publishing it.
    await storage.finish_run(
        run_id, status="interrupted", thread_status="idle", values=None, interrupts={},
        error=None, delete_thread=False,
    )  # fmt: skip
    tape = ThreadTape(SimpleNamespace(bus=bus, storage=storage), thread_id,  # type: ignore[arg-type]
                      Subscription({"channels": ["lifecycle"]}), None)  # fmt: skip
    seen: list[dict[str, Any]] = []
    first = asyncio.Event()

    async def read() -> None:
        batches = cast(AsyncGenerator[list[Out], None], tape.batches(SEQ_BASE))
        async with aclosing(batches):
            async for batch in batches:
                for _, _, envelope in batch:
                    seen.append(orjson.loads(envelope))
                    first.set()
                    if seen[-1]["params"]["data"]["event"] == "failed":
                        return

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), 10)  # the reader has read the log as it stood
    assert not reader.done()
    await bus.publish(run_id, [_lifecycle("failed", run_id), (RESULT_MODE, "end", b"{}")])
    await bus.close(run_id)
    await asyncio.wait_for(reader, 10)
    assert [e["params"]["data"]["event"] for e in seen] == ["running", "failed"]
    assert [e["seq"] for e in seen] == [SEQ_BASE + 1, SEQ_BASE + 2]
