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

from agentstream.api.v2_stream import Out, Subscription, ThreadTape
from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.control import LocalControl
from agentstream.execution.runs import RunService, new_run, thread_log
from agentstream.protocol import RESULT_MODE, SEQ_BASE, V2_MARKER, V2_MODE, result_item
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


@pytest.mark.parametrize("action", ["interrupt", "rollback", "abandon"])
async def test_a_v2_run_cancelled_while_pending_ends_with_one_root_terminal(
    storage: SqliteStorage, action: str
) -> None:
    """Cancelled before a worker took it (and deleted, with rollback), a v2 run never ran:
    every reader, from the start or from its end on, gets one root terminal, at one seq."""
    bus = MemoryEventBus()
    thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    kwargs = {"config": {"configurable": {V2_MARKER: True}}}
    run = new_run(run_id, thread_id, "asst", kwargs, {}, "enqueue")
    await storage.create_run(NewRun(run, False, "create", {}, {}, None))
    runs = RunService(storage, bus, LocalControl())
    await bus.publish(thread_log(thread_id), [("run", "run", run_id.encode())])
    if action == "abandon":  # what Executor.abandon leaves: an error and the result
        error = {"error": "RuntimeError", "message": "lost"}
        await bus.publish(
            run_id, [("error", "error", orjson.dumps(error)), result_item(None, error, "error", [])]
        )
        await bus.close(run_id)
    else:
        await runs.cancel(await storage.get_run(thread_id, run_id), action)
    # A later run on the thread: what a reader gets after the first run's end comes from it.
    later = str(uuid.uuid4())
    await bus.publish(thread_log(thread_id), [("run", "run", later.encode())])
    await bus.publish(later, [_lifecycle("running", later)])
    c = SimpleNamespace(bus=bus, storage=storage)
    sub = Subscription({"channels": ["lifecycle"]})
    ended = 2 if action == "abandon" else 1  # the result's id, or the cancel's terminal's
    firsts = []
    for since in (SEQ_BASE, SEQ_BASE + ended):
        tape = ThreadTape(c, thread_id, sub, None)  # type: ignore[arg-type]
        batches = cast(AsyncGenerator[list[Out], None], tape.batches(since))
        async with aclosing(batches):
            # Empty batches say how far the tape has read (for ordering several tapes).
            async for batch in batches:
                if batch:
                    break
        firsts.append(orjson.loads(batch[0][2]))
    error = "lost" if action == "abandon" else "cancelled"
    data = {"event": "failed", "graph_name": "", "run_id": run_id, "error": error}
    assert (firsts[0]["seq"], firsts[0]["params"]["data"]) == (SEQ_BASE + ended, data)
    assert firsts[0]["event_id"] == f"{run_id}:{ended}"
    assert firsts[1]["seq"] == 2 * SEQ_BASE + 1  # the end is not given twice
