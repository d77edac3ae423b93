"""The control plane across processes: Redis pub/sub carries wake-ups and cancels."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from agentstream import serde
from agentstream.execution.control import CancelHandler

CHANNEL_PREFIX = "agentstream:"  # channels "<prefix>wake" and "<prefix>cancel"

log = logging.getLogger("agentstream.control")


class RedisControl:
    """Wake-ups and cancels reach every process; each message carries its sender's id."""

    def __init__(self, url: str, *, channel_prefix: str = CHANNEL_PREFIX) -> None:
        self._redis = Redis.from_url(url)
        # Pub/sub ignores the database number: the prefix is what separates deployments.
        self._wake_channel = f"{channel_prefix}wake"
        self._cancel_channel = f"{channel_prefix}cancel"
        self._id = uuid.uuid4().hex
        self._event = asyncio.Event()
        self._handlers: list[CancelHandler] = []
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._cancels: set[asyncio.Task[bool]] = set()

    async def start(self) -> None:
        """Subscribe, and return only once Redis confirms it: no message after this is missed."""
        pubsub = self._pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._wake_channel, self._cancel_channel)
        confirmed = 0
        async with asyncio.timeout(30):
            while confirmed < 2:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "subscribe":
                    confirmed += 1
                else:
                    self._dispatch(message)
        self._listener = asyncio.create_task(self._listen(), name="agentstream-control")

    async def wake(self) -> None:
        self._event.set()  # workers of this process need no round trip
        await self._redis.publish(self._wake_channel, self._id)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

    async def cancel(self, run_id: str, action: str) -> None:
        if await self._run_handlers(run_id, action):
            return  # the run executes in this process
        message = {"run_id": run_id, "action": action, "sender": self._id}
        await self._redis.publish(self._cancel_channel, serde.dumps(message))

    def on_cancel(self, handler: CancelHandler) -> None:
        self._handlers.append(handler)

    async def aclose(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._cancels]
        if self._listener is not None:
            tasks.append(self._listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        self._handlers.clear()

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                # Reading reconnects a dropped connection and subscribes it again.
                self._dispatch(await self._pubsub.get_message(timeout=None))
            except Exception:
                log.exception("the control listener lost Redis; reconnecting")
                self._event.set()  # wake-ups sent meanwhile are lost: look for work anyway
                await asyncio.sleep(1.0)

    def _dispatch(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        if message["type"] == "subscribe":  # subscribed again after a reconnect
            self._event.set()
            return
        if message["type"] != "message":
            return
        channel, data = message["channel"], message["data"]
        if channel == self._wake_channel.encode():
            if data != self._id.encode():
                self._event.set()
        elif channel == self._cancel_channel.encode():
            body = serde.loads(data)
            if body.get("sender") != self._id:
                # Handlers run beside the listener, so a slow one never holds up wake-ups.
                task = asyncio.create_task(self._run_handlers(body["run_id"], body["action"]))
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)

    async def _run_handlers(self, run_id: str, action: str) -> bool:
        for handler in list(self._handlers):
            try:
                if await handler(run_id, action):
                    return True
            except Exception:
                log.exception("cancel handler failed for run %s", run_id)
        return False
