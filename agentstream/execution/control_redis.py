"""The control plane across processes: Redis pub/sub carries wake-ups and cancels."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from agentstream import serde
from agentstream.eventbus.redis import counted
from agentstream.execution.control import LocalControl

CHANNEL_PREFIX = "agentstream:"  # channels "<prefix>wake" and "<prefix>cancel"

log = logging.getLogger("agentstream.control")


class RedisControl(LocalControl):
    """Wake-ups and cancels reach every process; each message carries its sender's id. Waiting
    and the cancel handlers of this process are LocalControl's."""

    def __init__(self, url: str, *, channel_prefix: str = CHANNEL_PREFIX) -> None:
        super().__init__()
        # Named, with its process: an operator (and a test) can tell its connections apart.
        self._redis = counted(Redis.from_url(url, client_name=f"agentstream-control:{os.getpid()}"))
        # Pub/sub ignores the database number: the prefix is what separates deployments.
        self._wake_channel = f"{channel_prefix}wake"
        self._cancel_channel = f"{channel_prefix}cancel"
        self._id = uuid.uuid4().hex
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

    async def cancel(self, run_id: str, action: str) -> None:
        if await self._run_handlers(run_id, action):
            return  # the run executes in this process
        message = {"run_id": run_id, "action": action, "sender": self._id}
        await self._redis.publish(self._cancel_channel, serde.dumps(message))

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
        await super().aclose()

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
            for handler in self._missed:  # the worker looks for cancels kept on its runs' rows
                handler()
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
