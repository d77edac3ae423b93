"""The control contract: wake-ups and cancels reach the right process on every backend."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
import redis.asyncio

from agentstream.execution.control import Control, LocalControl
from agentstream.execution.control_redis import RedisControl

REDIS_URL = os.environ.get("AGENTSTREAM_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")

# Several instances of one backend in one deployment: with LocalControl the API and workers
# share one instance; with Redis each stands for its own process.
MakeControl = Callable[[], Awaitable[Control]]


@pytest.fixture(params=["local", "redis"])
async def make_control(request: pytest.FixtureRequest) -> AsyncIterator[MakeControl]:
    made: list[Control] = []
    # Pub/sub channels span the whole server: a fresh prefix keeps parallel runs apart.
    prefix = f"agentstream-test:{secrets.token_hex(8)}:"
    local = LocalControl()

    async def make() -> Control:
        if request.param == "local":
            return local
        control = RedisControl(REDIS_URL, channel_prefix=prefix)
        made.append(control)
        try:
            await control.start()
        except (redis.ConnectionError, OSError) as exc:
            # Never a skip: a contract that silently drops a backend proves nothing.
            pytest.fail(
                f"Redis is not reachable at {REDIS_URL} ({exc}); start it with "
                "`bash scripts/services.sh` or set AGENTSTREAM_TEST_REDIS_URI"
            )
        return control

    yield make
    for control in [*made, local]:
        await control.aclose()


async def _delivered(sender: Control, receiver: Control) -> None:
    """Return once everything sender sent before has reached receiver (a cancel as a probe)."""
    probe = f"probe-{secrets.token_hex(4)}"
    arrived = asyncio.Event()

    async def handler(run_id: str, action: str) -> bool:
        if run_id == probe:
            arrived.set()
        return run_id == probe

    receiver.on_cancel(handler)
    await sender.cancel(probe, "probe")
    await asyncio.wait_for(arrived.wait(), 10)


async def test_wake_from_another_instance_releases_wait(make_control: MakeControl) -> None:
    sender, receiver = await make_control(), await make_control()
    receiver.clear()
    waiting = asyncio.create_task(receiver.wait(60))
    await sender.wake()
    await asyncio.wait_for(waiting, 10)


async def test_wake_releases_waiters_of_the_same_instance(make_control: MakeControl) -> None:
    control = await make_control()
    control.clear()
    waiting = asyncio.create_task(control.wait(60))
    await control.wake()
    await asyncio.wait_for(waiting, 10)


async def test_wake_between_clear_and_wait_is_not_lost(make_control: MakeControl) -> None:
    sender, receiver = await make_control(), await make_control()
    receiver.clear()
    await sender.wake()
    await _delivered(sender, receiver)  # the wake arrived while nobody was waiting
    await asyncio.wait_for(receiver.wait(60), 10)


async def test_wake_reaches_every_instance(make_control: MakeControl) -> None:
    sender = await make_control()
    receivers = [await make_control() for _ in range(3)]
    for receiver in receivers:
        receiver.clear()
    waiting = [asyncio.create_task(receiver.wait(60)) for receiver in receivers]
    await sender.wake()
    await asyncio.wait_for(asyncio.gather(*waiting), 10)


async def test_wait_without_a_wake_returns_at_its_timeout(make_control: MakeControl) -> None:
    control = await make_control()
    control.clear()
    started = time.monotonic()
    await asyncio.wait_for(control.wait(0.05), 10)
    assert time.monotonic() - started >= 0.04


async def test_cancel_reaches_a_handler_on_another_instance(make_control: MakeControl) -> None:
    sender, receiver = await make_control(), await make_control()
    calls: list[tuple[str, str]] = []
    called = asyncio.Event()

    async def decline(run_id: str, action: str) -> bool:
        return False  # e.g. a worker that does not run it

    async def owner(run_id: str, action: str) -> bool:
        calls.append((run_id, action))
        called.set()
        return True

    sender.on_cancel(decline)
    receiver.on_cancel(owner)
    await sender.cancel("run-1", "rollback")
    await asyncio.wait_for(called.wait(), 10)
    assert calls == [("run-1", "rollback")]


async def test_cancel_stops_at_the_handler_that_owns_the_run(make_control: MakeControl) -> None:
    sender, receiver = await make_control(), await make_control()
    calls: list[str] = []
    owned = asyncio.Event()

    def handler(name: str, owns: bool) -> Callable[[str, str], Awaitable[bool]]:
        async def handle(run_id: str, action: str) -> bool:
            calls.append(name)
            if owns:
                owned.set()
            return owns

        return handle

    for name, owns in [("first", False), ("owner", True), ("after", False)]:
        receiver.on_cancel(handler(name, owns))
    await sender.cancel("run-1", "interrupt")
    await asyncio.wait_for(owned.wait(), 10)
    assert calls == ["first", "owner"]


async def test_a_cancel_that_lands_with_a_wake_up_still_cancels() -> None:
    # A worker being stopped while a run is queued: the wake and the cancel arrive in the same
    # loop iteration, and the waiter must end cancelled, not return as if only woken. (The
    # Redis control waits the same way: it inherits LocalControl.wait.)
    control = LocalControl()
    control.clear()
    waiting = asyncio.create_task(control.wait(60))
    for _ in range(5):
        await asyncio.sleep(0)  # a few loop turns: no time passes, the waiter parks
    assert control._event._waiters, "the waiter is parked on the event"  # type: ignore[attr-defined]
    await control.wake()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_listener_back_from_losing_redis_says_messages_may_be_missed() -> None:
    """Its connection killed, the listener subscribes again and calls its on_missed handlers
    (the worker then looks for cancels kept on its runs' rows); not at its first subscribe."""
    prefix = f"agentstream-test:{secrets.token_hex(8)}:"
    listener = RedisControl(REDIS_URL, channel_prefix=prefix)
    sender = RedisControl(REDIS_URL, channel_prefix=prefix)
    missed = asyncio.Event()
    listener.on_missed(missed.set)
    admin = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await listener.start()
        assert not missed.is_set()
        name = f"agentstream-control:{os.getpid()}"
        [connection] = [
            c["id"] for c in await admin.client_list() if c["name"] == name and int(c["sub"]) > 0
        ]
        await admin.execute_command("CLIENT", "KILL", "ID", connection)
        await asyncio.wait_for(missed.wait(), 10)
        await sender.start()
        await _delivered(sender, listener)  # and it hears cancels again
    finally:
        for control in (listener, sender):
            await control.aclose()
        await admin.aclose()
