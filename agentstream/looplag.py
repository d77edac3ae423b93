"""How late this process's event loop runs: a histogram for /metrics, and a warning saying
where, when something blocks the loop.

Every stream and every run of a process share its one event loop. A graph that calls blocking
code in an async node (`time.sleep`, `requests`, a synchronous database driver, a long
computation) stops all of them while the call lasts: tokens stop reaching every client,
heartbeats stop, leases go unrenewed. Nothing fails and nothing says why; everything waits.
LangGraph Server's `langgraph dev` raises on such calls; agentstream runs them, and says so
here, with the place.

- A watchdog thread hands the loop a callback every WATCH seconds and observes how long the
  loop took to run it (EVENT_LOOP_LAG): the rest of the turn the loop was in, and whatever
  was queued before it.
- Once a callback has waited `blocked` seconds, the watchdog logs the innermost frames of the
  loop thread's stack, where the loop is held now: once a stall, and at most once every REPEAT
  seconds (the stalls in between are counted in the next warning). Under the GIL the watchdog
  runs when the loop's thread lets it: at once when that thread waits in a system call (a
  sleep, a socket), within the interpreter's switch interval (5 ms) when it computes, and only
  after a garbage collection, which holds the lock throughout, has ended; so a stall that was a
  collection may show wherever the loop is afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
import traceback
from types import FrameType

from agentstream import metrics

log = logging.getLogger("agentstream")

WATCH = 0.05
REPEAT = 60.0
FRAMES = 12  # the innermost frames a warning shows


class LoopWatch:
    """The watchdog of the loop `start` is called on, until `stop`. With `blocked` at 0 it only
    measures (no warnings)."""

    def __init__(self, blocked: float) -> None:
        self.blocked = blocked
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._posted = 0.0  # when the callback waiting now was handed over; 0.0: none waits
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._reported = -1.0  # the stall (its callback's _posted) reported or counted
        self._warned = -math.inf
        self._unreported = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._watchdog = threading.Thread(
            target=self._watch, name="agentstream-loop-watch", daemon=True
        )
        self._watchdog.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None

    def _ran(self, posted: float) -> None:  # on the loop
        metrics.EVENT_LOOP_LAG.observe(time.monotonic() - posted)
        self._posted = 0.0

    def _watch(self) -> None:
        assert self._loop is not None
        while not self._stopped.wait(WATCH):
            posted = self._posted
            now = time.monotonic()
            if not posted:
                self._posted = now
                try:
                    self._loop.call_soon_threadsafe(self._ran, now)
                except RuntimeError:  # the loop closed
                    return
            elif self.blocked and now - posted >= self.blocked and posted != self._reported:
                self._reported = posted
                self._warn(now - posted, now)

    def _warn(self, held: float, now: float) -> None:
        if now - self._warned < REPEAT:
            self._unreported += 1
            return
        more = f" ({self._unreported} more since the last warning)" if self._unreported else ""
        self._warned, self._unreported = now, 0
        where = _stack(sys._current_frames().get(self._loop_thread))
        log.warning(
            "the event loop has been held for %.1f s%s: every stream and run of this "
            "process waits meanwhile. Blocking code in an async node (time.sleep, requests, "
            "a synchronous driver)? The loop's thread is at:\n%s",
            held,
            more,
            where,
        )


def _stack(frame: FrameType | None) -> str:
    if frame is None:
        return "  (its stack could not be read)"
    return "".join(traceback.format_stack(frame)[-FRAMES:]).rstrip()
