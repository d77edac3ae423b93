"""The control plane: waking workers when runs are queued, and reaching the worker of a run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("agentstream.control")

CancelHandler = Callable[[str, str], Awaitable[bool]]


class Control(Protocol):
    async def wake(self) -> None:
        """A run was queued or a thread freed up: idle workers should try to claim."""
        ...

    def woken(self) -> None:
        """This process's workers were woken by someone else (the database, on a run queued):
        they look for work; no other process is told."""
        ...

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Block until woken (or timeout); a wake between clear() and wait() is not lost."""
        ...

    def clear(self) -> None: ...

    async def cancel(self, run_id: str, action: str) -> None:
        """Ask whichever worker executes run_id to cancel it with action."""
        ...

    def on_cancel(self, handler: CancelHandler) -> None: ...

    def on_missed(self, handler: Callable[[], None]) -> None:
        """`handler` is called when messages to this process may have been lost: its listener
        lost Redis and has just subscribed again. Cancels sent meanwhile reached nobody."""
        ...

    async def aclose(self) -> None: ...


class LocalControl:
    """API and workers in one process: an event for wake-ups, direct calls for cancels (none
    is ever missed)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._handlers: list[CancelHandler] = []
        self._missed: list[Callable[[], None]] = []

    async def wake(self) -> None:
        self._event.set()

    def woken(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # lands together with a wake-up, and a worker being stopped would then sleep on.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass

    async def cancel(self, run_id: str, action: str) -> None:
        await self._run_handlers(run_id, action)

    def on_cancel(self, handler: CancelHandler) -> None:
        self._handlers.append(handler)

    def on_missed(self, handler: Callable[[], None]) -> None:
        self._missed.append(handler)

    async def aclose(self) -> None:
        self._handlers.clear()
        self._missed.clear()

    async def _run_handlers(self, run_id: str, action: str) -> bool:
        """Whether a handler of this process owned the run; one that fails is logged and the
        next one asked, so a cancel never turns into an error for whoever sent it."""
        for handler in list(self._handlers):
            try:
                if await handler(run_id, action):
                    return True
            except Exception:
                log.exception("cancel handler failed for run %s", run_id)
        return False
