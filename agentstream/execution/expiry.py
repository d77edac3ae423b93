"""Threads' time to live: the policy from langgraph.json (`checkpointer.ttl`), a thread's own
`ttl`, and the sweep that prunes expired threads, leaving busy ones for a later sweep."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from agentstream.graphs import Config, GraphLoadError
from agentstream.storage.base import Storage

log = logging.getLogger("agentstream.expiry")

Strategy = Literal["delete", "keep_latest"]
STRATEGIES: tuple[Strategy, ...] = ("delete", "keep_latest")
_SWEEP_BATCH = 100


@dataclass(frozen=True)
class TtlPolicy:
    default_minutes: float | None = None
    strategy: Strategy = "delete"
    sweep_seconds: float = 300.0

    @classmethod
    def from_config(cls, config: Config) -> TtlPolicy:
        raw = (config.checkpointer or {}).get("ttl") or {}
        if not isinstance(raw, Mapping):
            raise GraphLoadError(f"checkpointer.ttl in {config.path} must be an object")
        strategy = raw.get("strategy", "delete")
        if strategy not in STRATEGIES:
            raise GraphLoadError(f"checkpointer.ttl.strategy must be one of {list(STRATEGIES)}")
        default = raw.get("default_ttl")
        minutes = float(raw.get("sweep_interval_minutes") or 5)
        return cls(None if default is None else float(default), strategy, minutes * 60)

    def thread_ttl(self, given: Any) -> tuple[float, Strategy] | None:
        """(minutes, strategy) from a request's `ttl` (minutes, or {ttl, strategy}), else the
        default; raises ValueError for a malformed one."""
        if given is None:
            if self.default_minutes is None:
                return None
            return self.default_minutes, self.strategy
        if isinstance(given, Mapping):
            minutes, strategy = given.get("ttl"), given.get("strategy", "delete")
        else:
            minutes, strategy = given, "delete"
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
            raise ValueError("ttl: a positive number of minutes")
        if strategy not in STRATEGIES:
            raise ValueError(f"ttl.strategy: one of {list(STRATEGIES)}")
        return float(minutes), cast(Strategy, strategy)


async def set_ttl(
    storage: Storage, thread_id: str, ttl: tuple[float, Strategy], now: datetime
) -> None:
    minutes, strategy = ttl
    expires = now + timedelta(minutes=minutes)
    await storage.set_thread_ttl(thread_id, strategy=strategy, minutes=minutes, expires_at=expires)


async def sweep(storage: Storage, now: datetime) -> int:
    """Prune the threads expired at `now`; a busy one stays (and is looked at again later)."""
    pruned = 0
    for thread_id, strategy in await storage.expired_threads(now, _SWEEP_BATCH):
        if await storage.prune_thread(thread_id, strategy, expired_by=now):
            pruned += 1
    if pruned:
        log.info("pruned %d expired thread(s)", pruned)
    return pruned
