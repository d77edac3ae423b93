"""Threads' time to live and pruning: which threads expired, and removing one that is idle."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from agentstream.storage.base import Filter
from agentstream.storage.crons import CronStore
from agentstream.storage.dialect import Params, Verb, match
from agentstream.storage.queue import count, rows

PruneStrategy = Literal["delete", "keep_latest"]


class ExpiryStore(CronStore):
    async def set_thread_ttl(
        self, thread_id: str, *, strategy: PruneStrategy, minutes: float, expires_at: datetime
    ) -> None:
        p = dict(thread_id=thread_id, strategy=strategy, ttl_minutes=minutes,
                 expires_at=self.c.ts(expires_at))  # fmt: skip
        await self.c.write(count(self.d["set_thread_ttl"], p))

    async def expired_threads(self, now: datetime, limit: int) -> list[tuple[str, PruneStrategy]]:
        p = dict(clock=self.c.ts(now), limit=limit)
        return [(r[0], r[1]) for r in await self.c.read(rows(self.d["expired_threads"], p))]

    async def prune_thread(
        self,
        thread_id: str,
        strategy: PruneStrategy,
        *,
        expired_by: datetime | None = None,
        filters: Filter | None = None,
    ) -> bool:
        """Delete an idle thread (or all its checkpoints but the latest); False when it is busy,
        gone, hidden by the filter, or (with expired_by) no longer expired then."""
        p: Params = self._params(thread_id=thread_id)
        if expired_by is not None:
            p["clock"] = self.c.ts(expired_by)
        cond = match(self.d, "metadata", filters, p)
        return await self.c.write(self._prune(strategy, cond, p, expired_by is not None))

    def _prune(self, strategy: PruneStrategy, cond: str, p: Params, expiring: bool) -> Verb[bool]:
        thread, _ = yield self.d["lock_thread"].format(cond=cond), p
        if not thread:
            if expiring:  # its thread was deleted otherwise: forget its time to live
                yield self.d["drop_thread_ttl"], p
            return False
        inflight, _ = yield self.d["thread_inflight"], p
        if inflight or thread[0][3] == "busy":
            return False
        if expiring:
            expired, _ = yield self.d["thread_expired"], p
            if not expired:  # its time to live changed meanwhile
                return False
        if strategy == "delete":
            yield from self._delete_thread_rows(p)
            yield self.d["delete_thread_crons"], p
        else:
            for sql in self.d.scripts["keep_latest_checkpoint"]:
                yield sql, p
        yield self.d["drop_thread_ttl"], p
        return True
