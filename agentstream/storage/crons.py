"""The crons' verbs, once for every backend: create, read, change, delete, search, and claim."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from agentstream.storage.base import Cron, CronFiring, Filter, NewRun, NotFound, ThreadBusy, utcnow
from agentstream.storage.dialect import Params, Verb, match
from agentstream.storage.queue import QueueStore, Row, count, rows
from agentstream.storage.sql_crons import CRON_COLUMNS

_SORTABLE = {"cron_id", "assistant_id", "thread_id", "created_at", "updated_at",
             "next_run_date", "end_time"}  # fmt: skip
_JSON = {"payload", "metadata", "auth_user"}
_TIMES = {"end_time", "next_run_date", "created_at", "updated_at"}


class CronStore(QueueStore):
    def _cron(self, r: Row) -> Cron:
        load, ts = self.c.load, self.c.load_ts
        cron: dict[str, Any] = dict(zip(CRON_COLUMNS, r, strict=True))
        for key in _JSON:
            cron[key] = load(cron[key])
        for key in _TIMES:
            cron[key] = None if cron[key] is None else ts(cron[key])
        cron["enabled"] = bool(cron["enabled"])
        return cron  # type: ignore[return-value]

    def _column(self, key: str, value: Any) -> Any:
        if key in _JSON:
            return self.c.json(value)
        if key in _TIMES and value is not None:
            return self.c.ts(value)
        return value

    async def create_cron(self, cron: Cron) -> None:
        p = {key: self._column(key, cron[key]) for key in CRON_COLUMNS}  # type: ignore[literal-required]
        await self.c.write(count(self.d["insert_cron"], p))

    async def get_cron(self, cron_id: str, *, filters: Filter | None = None) -> Cron:
        p: Params = dict(cron_id=cron_id)
        sql = self.d["get_cron"].format(cond=match(self.d, "metadata", filters, p))
        row = await self.c.get(sql, p)
        if row is None:
            raise NotFound("cron", cron_id)
        return self._cron(row)

    async def update_cron(
        self, cron_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Cron:
        fields = {k: v for k, v in changes.items() if k in CRON_COLUMNS and k != "cron_id"}
        fields["updated_at"] = utcnow()
        p: Params = {f"set_{k}": self._column(k, v) for k, v in fields.items()}
        p["cron_id"] = cron_id
        sets = ", ".join(f"{k} = {self.d.mark('set_' + k)}" for k in fields)
        cond = match(self.d, "metadata", filters, p)
        found = await self.c.write(rows(self.d["update_cron"].format(sets=sets, cond=cond), p))
        if not found:
            raise NotFound("cron", cron_id)
        return self._cron(found[0])

    async def delete_cron(self, cron_id: str, *, filters: Filter | None = None) -> None:
        p: Params = dict(cron_id=cron_id)
        sql = self.d["delete_cron"].format(cond=match(self.d, "metadata", filters, p))
        if not await self.c.write(count(sql, p)):
            raise NotFound("cron", cron_id)

    def _where(
        self,
        p: Params,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
        metadata: Mapping[str, Any] | None,
        filters: Filter | None,
    ) -> str:
        p.update(assistant_id=assistant_id, thread_id=thread_id, enabled=enabled)
        parts = [match(self.d, "metadata", metadata, p), match(self.d, "metadata", filters, p)]
        for name, value in (("assistant", assistant_id), ("thread", thread_id),
                            ("enabled", enabled)):  # fmt: skip
            if value is not None:
                parts.append(self.d[f"cron_{name}_is"])
        return " AND ".join(parts)

    async def search_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> list[Cron]:
        p: Params = dict(limit=limit, offset=offset)
        where = self._where(p, assistant_id, thread_id, enabled, metadata, filters)
        column = sort_by if sort_by in _SORTABLE else "created_at"
        direction = "ASC" if (sort_order or "").lower() == "asc" else "DESC"
        order = f"{column} {direction}, cron_id {direction}"
        sql = self.d["search_crons"].format(where=where, order=order)
        return [self._cron(r) for r in await self.c.read(rows(sql, p))]

    async def count_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        metadata: Mapping[str, Any] | None,
        filters: Filter | None = None,
    ) -> int:
        p: Params = {}
        where = self._where(p, assistant_id, thread_id, None, metadata, filters)
        found = await self.c.read(rows(self.d["count_crons"].format(where=where), p))
        return int(found[0][0]) if found else 0

    async def claim_cron(
        self,
        now: datetime,
        advance: Callable[[Cron], datetime | None],
        make_run: Callable[[Cron, str], NewRun],
    ) -> CronFiring | None:
        p: Params = dict(clock=self.c.ts(now))
        return await self.c.write(self._claim_cron(p, advance, make_run))

    def _claim_cron(
        self,
        p: Params,
        advance: Callable[[Cron], datetime | None],
        make_run: Callable[[Cron, str], NewRun],
    ) -> Verb[CronFiring | None]:
        found, _ = yield self.d["pick_cron"], p
        if not found:
            return None
        cron = self._cron(found[0])
        following = advance(cron)
        step = dict(cron_id=cron["cron_id"], next_run_date=self._column("next_run_date", following))
        yield self.d["advance_cron"], step
        graph, _ = yield self.d["cron_graph"], dict(assistant_id=cron["assistant_id"])
        if not graph:
            return CronFiring(cron, None, [], f"its assistant {cron['assistant_id']} is gone")
        new = make_run(cron, graph[0][0])
        try:  # nothing is written before either refusal: the slot is skipped, not lost
            queued = yield from self._queue_run(new)
        except (NotFound, ThreadBusy) as exc:
            return CronFiring(cron, None, [], str(exc))
        return CronFiring(cron, new, queued.preempted)

    async def next_cron_due(self) -> datetime | None:
        found = await self.c.read(rows(self.d["next_cron"], {}))
        value = found[0][0] if found else None
        return None if value is None else self.c.load_ts(value)
