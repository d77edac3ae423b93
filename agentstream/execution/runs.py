"""The run service: create (with multitask strategies), cancel, and wait for a run's result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from agentstream import serde
from agentstream.eventbus import EventBus, EventsEvicted
from agentstream.execution.control import Control
from agentstream.protocol import RESULT_MODE, result_item
from agentstream.storage.base import Filter, Run, Storage, utcnow


class RunService:
    def __init__(self, storage: Storage, bus: EventBus, control: Control) -> None:
        self.storage = storage
        self.bus = bus
        self.control = control

    async def create(
        self,
        run: Run,
        *,
        temporary: bool,
        if_not_exists: Literal["create", "reject"],
        auth_user: dict[str, Any] | None,
        thread_metadata: Mapping[str, Any],
        filters: Filter | None = None,
    ) -> None:
        preempted = await self.storage.create_run(
            run,
            temporary=temporary,
            if_not_exists=if_not_exists,
            auth_user=auth_user,
            thread_metadata=thread_metadata,
            filters=filters,
        )
        if not temporary:
            # The thread's own log lists its runs in order, for thread streams to follow.
            await self.bus.publish(
                thread_log(run["thread_id"]), [("run", "run", run["run_id"].encode())]
            )
        action = "rollback" if run["multitask_strategy"] == "rollback" else "interrupt"
        for run_id in preempted:
            previous = await self.storage.get_run(run["thread_id"], run_id)
            await self.cancel(previous, action)
        await self.control.wake()

    async def cancel(self, run: Run, action: str) -> None:
        run_id = run["run_id"]
        if run["status"] == "pending" and await self.storage.cancel_pending(
            run_id, status="interrupted"
        ):
            if action == "rollback":
                await self.storage.rollback_run(run_id, run["thread_id"])
            await self.bus.publish(run_id, [result_item(None, None, "interrupted", [])])
            await self.bus.close(run_id)
            await self.control.wake()
            return
        await self.control.cancel(run_id, action)

    async def wait_closed(self, run_id: str) -> None:
        """Return when the run's log is complete (the run has ended and been settled)."""
        await self.result(run_id)

    async def result(self, run_id: str, *, wait: bool = True) -> dict[str, Any] | None:
        """The run's final result event, waiting for it; None if the log ends without one.

        wait=False only reads what the log holds (a finished run whose log may have expired).
        """
        after = 0
        found: dict[str, Any] | None = None
        while True:
            try:
                async for batch in self.bus.subscribe(run_id, after, wait=wait):
                    for event in batch:
                        after = event.seq
                        if event.mode == RESULT_MODE:
                            found = serde.loads(event.data)
                return found
            except EventsEvicted as evicted:
                after = evicted.first_kept - 1


def thread_log(thread_id: str) -> str:
    return f"thread:{thread_id}"


def new_run(
    run_id: str,
    thread_id: str,
    assistant_id: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    strategy: str,
) -> Run:
    now = utcnow()
    return Run(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant_id,
        metadata=metadata,
        status="pending",
        kwargs=kwargs,
        multitask_strategy=strategy,  # type: ignore[typeddict-item]
        created_at=now,
        updated_at=now,
    )
