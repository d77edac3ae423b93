"""The scheduler on the real clock (no driven clock file): a cron comes due between two
minute wake-ups and fires within moments of its slot, its run queued; the end-to-end cron tests
drive the clock instead, so that no test waits for a minute to turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentstream.eventbus.memory import MemoryEventBus
from agentstream.execution.control import LocalControl
from agentstream.execution.runs import RunService
from agentstream.execution.scheduler import Clock, Scheduler
from agentstream.storage.base import Assistant, Cron
from agentstream.storage.sqlite import SqliteStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    opened = SqliteStorage(tmp_path / "agentstream.sqlite")
    await opened.setup()
    yield opened
    await opened.aclose()


async def test_a_cron_fires_within_moments_of_its_slot_on_the_real_clock(
    storage: SqliteStorage,
) -> None:
    now = datetime.now(UTC)
    assistant = Assistant(
        assistant_id="a", graph_id="agent", config={}, context={}, metadata={}, name="a",
        description=None, version=1, created_at=now, updated_at=now,
    )  # fmt: skip
    await storage.put_assistant(assistant, if_exists="raise")
    slot = now + timedelta(seconds=1.5)
    cron = Cron(
        cron_id="c", assistant_id="a", thread_id=None, user_id=None, schedule="0 0 1 1 *",
        timezone=None, end_time=None, payload={"input": {}}, metadata={},
        on_run_completed="delete", enabled=True, next_run_date=slot, created_at=now,
        updated_at=now, auth_user=None,
    )  # fmt: skip
    await storage.create_cron(cron)
    scheduler = Scheduler(storage, RunService(storage, MemoryEventBus(), LocalControl()), Clock())
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while not (queued := await storage.inflight_runs(thread_id=None, run_ids=None,
                                                         status="pending")):  # fmt: skip
            assert time.monotonic() < deadline, "the due cron did not fire"
            await asyncio.sleep(0.05)
        fired_at = datetime.now(UTC)
    finally:
        await scheduler.stop()
    assert slot <= fired_at < slot + timedelta(seconds=3)
    assert len(queued) == 1 and queued[0]["assistant_id"] == "a"
    # Moved to its next slot: the first of January at midnight.
    following = (await storage.get_cron("c"))["next_run_date"]
    assert following is not None and (following.month, following.day) == (1, 1)
