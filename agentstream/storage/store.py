"""The run store: assistants, threads and runs, each verb and rule once; the queue is queue.py.

A backend is a connector (how statements run) and a dialect (which statements); see
sqlite.py and postgres.py. Errors carry a kind and a key; api/errors.py words them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from agentstream.protocol import ThreadStatus
from agentstream.storage.base import (
    Assistant,
    Conflict,
    Filter,
    IfExists,
    NotFound,
    Run,
    Thread,
)
from agentstream.storage.dialect import Params, Verb, binder, match, operation
from agentstream.storage.expiry import ExpiryStore
from agentstream.storage.queue import Row, count, rows

_SORTABLE = {
    "assistants": {"created_at", "updated_at", "assistant_id", "graph_id", "name"},
    "threads": {"created_at", "updated_at", "thread_id", "status"},
}


def _order(table: str, sort_by: str | None, sort_order: str | None, key: str) -> str:
    # The key breaks ties, so pages of rows whose sort keys are equal neither overlap nor skip.
    column = sort_by if sort_by in _SORTABLE[table] else "created_at"
    direction = "ASC" if (sort_order or "").lower() == "asc" else "DESC"
    return f"{column} {direction}, {key} {direction}"


def _page(sql: str, count_sql: str, p: Mapping[str, Any]) -> Verb[tuple[Sequence[Row], int]]:
    found, _ = yield sql, p
    if len(found) < p["limit"] and (found or not p["offset"]):
        # A page that is not full is the last one: the total follows without counting every
        # match again (a count of a metadata filter reads every row).
        return found, p["offset"] + len(found)
    total, _ = yield count_sql, p
    return found, total[0][0] if total else 0


class RunStore(ExpiryStore):
    # --- lifecycle ---------------------------------------------------------------------------
    async def setup(self) -> None:
        await self.c.open()

    async def aclose(self) -> None:
        await self.c.close()

    def checkpointer(self) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
        return self.c.checkpointer()

    # --- records -----------------------------------------------------------------------------
    def _version(self, r: Row) -> dict[str, Any]:
        load = self.c.load
        return {"assistant_id": r[0], "version": r[1], "graph_id": r[2], "config": load(r[3]),
                "context": load(r[4]), "metadata": load(r[5]), "name": r[6],
                "description": r[7], "created_at": self.c.load_ts(r[8])}  # fmt: skip

    def _thread(self, r: Row) -> Thread:
        load, ts = self.c.load, self.c.load_ts
        return Thread(
            thread_id=r[0],
            created_at=ts(r[1]),
            updated_at=ts(r[2]),
            state_updated_at=ts(r[3]),
            metadata=load(r[4]),
            status=r[5],
            config=load(r[6]),
            values=load(r[7]),
            interrupts=load(r[8]),
            error=load(r[9]),
        )

    async def _get(self, name: str, column: str, filters: Filter | None, p: Params) -> Row | None:
        cond = match(self.d, column, filters, p)
        return await self.c.get(self.d[name].format(cond=cond), p)

    # --- assistants --------------------------------------------------------------------------
    async def put_assistant(
        self, assistant: Assistant, *, if_exists: IfExists, filters: Filter | None = None
    ) -> Assistant:
        a, ts = assistant, self.c.ts
        p = self._params(**self._contents(a), version=a["version"])
        p.update(created_at=ts(a["created_at"]), updated_at=ts(a["updated_at"]))
        p["at"] = p["created_at"]
        await self.c.write(self._put_assistant(p, if_exists))
        return await self.get_assistant(a["assistant_id"], filters=filters)

    def _contents(self, a: Mapping[str, Any]) -> dict[str, Any]:
        j = self.c.json
        return {"assistant_id": a["assistant_id"], "graph_id": a["graph_id"],
                "config": j(a["config"]), "context": j(a["context"]),
                "metadata": j(a["metadata"]), "name": a["name"],
                "description": a["description"]}  # fmt: skip

    def _put_assistant(self, p: Params, if_exists: IfExists) -> Verb[None]:
        inserted, _ = yield self.d["insert_assistant"], p
        if inserted:
            yield self.d["insert_version"], p
        elif if_exists == "raise":
            raise Conflict("assistant", p["assistant_id"])

    async def get_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> Assistant:
        p = dict(assistant_id=assistant_id)
        row = await self._get("get_assistant", "metadata", filters, p)
        if row is None:
            raise NotFound("assistant", assistant_id)
        return self._assistant(row)

    async def search_assistants(
        self,
        *,
        graph_id: str | None,
        name: str | None,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> tuple[list[Assistant], int]:
        like = None if name is None else f"%{name}%"
        p = dict(graph_id=graph_id, name=like, limit=limit, offset=offset)
        parts = [match(self.d, "metadata", metadata, p), match(self.d, "metadata", filters, p)]
        if graph_id is not None:
            parts.append(self.d["graph_is"])
        if name is not None:
            parts.append(self.d["name_like"])
        where = " AND ".join(parts)
        order = _order("assistants", sort_by, sort_order, "assistant_id")
        sql = self.d["search_assistants"].format(where=where, order=order)
        found, total = await self.c.read(
            _page(sql, self.d["count_assistants"].format(where=where), p)
        )
        return [self._assistant(r) for r in found], total

    async def patch_assistant(
        self, assistant_id: str, changes: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Assistant:
        p = self._params(assistant_id=assistant_id)
        cond = match(self.d, "metadata", filters, p)
        await self.c.write(self._patch_assistant(changes, cond, p))
        return await self.get_assistant(assistant_id)

    def _patch_assistant(self, changes: Mapping[str, Any], cond: str, p: Params) -> Verb[None]:
        # Read, merge and write in one transaction: a concurrent patch waits and loses nothing.
        found, _ = yield self.d["lock_assistant"].format(cond=cond), p
        if not found:
            raise NotFound("assistant", p["assistant_id"])
        current = self._assistant(found[0])
        merged: dict[str, Any] = {**current, **{k: v for k, v in changes.items() if v is not None}}
        if changes.get("metadata") is not None:
            merged["metadata"] = {**current["metadata"], **changes["metadata"]}
        latest, _ = yield self.d["latest_version"], p
        contents = {**p, **self._contents(merged), "version": (latest[0][0] or 0) + 1}
        yield self.d["insert_version"], contents
        yield self.d["update_assistant"], contents

    async def delete_assistant(self, assistant_id: str, *, filters: Filter | None = None) -> None:
        p = dict(assistant_id=assistant_id)
        sql = self.d["delete_assistant"].format(cond=match(self.d, "metadata", filters, p))
        await self.c.write(self._delete_assistant(sql, p))

    def _delete_assistant(self, sql: str, p: Params) -> Verb[None]:
        _, deleted = yield sql, p
        if not deleted:
            raise NotFound("assistant", p["assistant_id"])
        yield self.d["delete_assistant_crons"], p  # a cron of no assistant could never fire

    async def assistant_versions(
        self,
        assistant_id: str,
        *,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        filters: Filter | None = None,
    ) -> list[dict[str, Any]]:
        await self.get_assistant(assistant_id, filters=filters)
        p = dict(assistant_id=assistant_id, limit=limit, offset=offset)
        sql = self.d["assistant_versions"].format(cond=match(self.d, "metadata", metadata, p))
        return [self._version(r) for r in await self.c.read(rows(sql, p))]

    async def set_latest_assistant(
        self, assistant_id: str, version: int, *, filters: Filter | None = None
    ) -> Assistant:
        p = self._params(assistant_id=assistant_id, version=version)
        cond = match(self.d, "metadata", filters, p)
        await self.c.write(self._set_latest(cond, p))
        return await self.get_assistant(assistant_id)

    def _set_latest(self, cond: str, p: Params) -> Verb[None]:
        found, _ = yield self.d["lock_assistant"].format(cond=cond), p
        if not found:
            raise NotFound("assistant", p["assistant_id"])
        chosen, _ = yield self.d["get_version"], p
        if not chosen:
            raise NotFound("version", p["assistant_id"], p["version"])
        keys = ("graph_id", "config", "context", "metadata", "name", "description")
        chosen_contents = dict(zip(keys, chosen[0], strict=True), assistant_id=p["assistant_id"])
        for key in ("config", "context", "metadata"):
            chosen_contents[key] = self.c.load(chosen_contents[key])
        contents = {**p, **self._contents(chosen_contents)}
        yield self.d["update_assistant"], contents

    # --- threads -----------------------------------------------------------------------------
    async def create_thread(
        self,
        thread_id: str,
        *,
        metadata: Mapping[str, Any],
        if_exists: IfExists,
        filters: Filter | None = None,
    ) -> Thread:
        p = self._params(thread_id=thread_id, metadata=self.c.json(dict(metadata)))
        p["temporary"] = False
        if "create_thread" in self.d.queries:  # one statement (PostgreSQL)
            sql = self.d["create_thread"].format(cond=match(self.d, "metadata", filters, p))
            found = await self.c.write(rows(sql, p), single=True)
            made = bool(found) and found[0][0]
            if not made and if_exists == "raise":
                raise Conflict("thread", thread_id)
            if found:
                return self._thread(found[0][1:])
            # Nothing back: a thread the caller may not see, or (rarely) one that a create
            # committing while this one ran made: read as any taken id is.
        elif not await self.c.write(rows(self.d["insert_thread"], p)) and if_exists == "raise":
            raise Conflict("thread", thread_id)
        try:
            return await self.get_thread(thread_id, filters=filters)
        except NotFound:
            # Someone else's thread with this id: the caller may not see it, nor take its id.
            raise Conflict("thread", thread_id) from None

    async def get_thread(self, thread_id: str, *, filters: Filter | None = None) -> Thread:
        p = dict(thread_id=thread_id)
        row = await self._get("get_thread", "metadata", filters, p)
        if row is None:
            raise NotFound("thread", thread_id)
        return self._thread(row)

    async def search_threads(
        self,
        *,
        ids: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        values: Mapping[str, Any] | None,
        status: str | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        filters: Filter | None = None,
    ) -> tuple[list[Thread], int]:
        p = dict(ids=self.c.json(list(ids or ())), status=status)
        p.update(limit=limit, offset=offset)
        order = _order("threads", sort_by, sort_order, "thread_id")
        queries = None  # the page's and the count's
        if not (values or ids or status) and order.startswith("created_at "):
            queries = self._by_key(metadata, filters, order, p)
        if queries is None:
            parts = [
                match(self.d, "metadata", metadata, p, thread=True),
                match(self.d, '"values"', values, p),
                match(self.d, "metadata", filters, p, thread=True),
            ]
            if ids:
                parts.append(self.d["ids_in"])
            if status:
                parts.append(self.d["status_is"])
            where = " AND ".join(parts)
            queries = (
                self.d["search_threads"].format(where=where, order=order),
                self.d["count_threads"].format(where=where),
            )
        found, total = await self.c.read(_page(*queries, p))
        return [self._thread(r) for r in found], total

    def _by_key(
        self,
        metadata: Mapping[str, Any] | None,
        filters: Filter | None,
        order: str,
        p: Params,
    ) -> tuple[str, str] | None:
        """The page and the count of a search by one metadata key alone, in creation order,
        read off the dialect's index of keys (SQLite's thread_keys: the page up to its end, the
        count without a thread's row); None where there is none, or for any other search."""
        conditions = [c for c in (metadata, filters) if c]
        if self.d.key_rows is None or len(conditions) != 1 or len(conditions[0]) != 1:
            return None
        ((key, value),) = conditions[0].items()
        op, operand = operation(value)
        rows = self.d.key_rows(key, operand, binder(self.d, p)) if op == "$eq" else None
        if rows is None:
            return None
        page = self.d["search_threads_by_key"].format(key=rows, order=order)
        return page, self.d["count_threads_by_key"].format(key=rows)

    async def patch_thread(
        self, thread_id: str, metadata: Mapping[str, Any], *, filters: Filter | None = None
    ) -> Thread:
        p = self._params(thread_id=thread_id)
        cond = match(self.d, "metadata", filters, p)
        return self._thread(await self.c.write(self._patch_thread(metadata, cond, p)))

    def _patch_thread(self, metadata: Mapping[str, Any], cond: str, p: Params) -> Verb[Row]:
        # Read, merge and write in one transaction: a concurrent patch waits and loses nothing.
        thread, _ = yield self.d["lock_thread"].format(cond=cond), p
        if not thread:
            raise NotFound("thread", p["thread_id"])
        merged = self.c.json({**self.c.load(thread[0][0]), **metadata})
        patched, _ = yield self.d["set_thread_metadata"], {**p, "metadata": merged}
        return patched[0]

    async def delete_thread(self, thread_id: str, *, filters: Filter | None = None) -> list[str]:
        p = self._params(thread_id=thread_id)
        cond = match(self.d, "metadata", filters, p)
        return await self.c.write(self._delete_thread(cond, p))

    def _delete_thread(self, cond: str, p: Params) -> Verb[list[str]]:
        thread, _ = yield self.d["lock_thread"].format(cond=cond), p
        if not thread:
            raise NotFound("thread", p["thread_id"])
        inflight, _ = yield self.d["thread_inflight"], p
        yield from self._delete_thread_rows(p)
        yield self.d["delete_thread_crons"], p
        return [r[0] for r in inflight]

    async def copy_thread(
        self, thread_id: str, new_thread_id: str, *, filters: Filter | None = None
    ) -> Thread:
        p = self._params(thread_id=thread_id, new_thread_id=new_thread_id)
        cond = match(self.d, "metadata", filters, p)
        return self._thread(await self.c.write(self._copy_thread(cond, p)))

    def _copy_thread(self, cond: str, p: Params) -> Verb[Row]:
        # One transaction: the copy appears with its checkpoints, or not at all.
        thread, _ = yield self.d["lock_thread"].format(cond=cond), p
        if not thread:
            raise NotFound("thread", p["thread_id"])
        copied, _ = yield self.d["copy_thread"], p
        if not copied:
            raise Conflict("thread", p["new_thread_id"])
        for sql in self.d.scripts["copy_checkpoints"]:
            yield sql, p
        return copied[0]

    async def set_thread_state(
        self,
        thread_id: str,
        *,
        values: Any,
        interrupts: Mapping[str, Any],
        status: ThreadStatus | None = None,
        error: Any = None,
    ) -> None:
        p = self._params(thread_id=thread_id, **self._settled(status, values, interrupts, error))
        await self.c.write(self._set_thread_state(p))

    def _set_thread_state(self, p: Params) -> Verb[None]:
        yield self.d["lock_thread"].format(cond=self.d.true), p
        yield self.d["settle_thread"], p

    # --- runs --------------------------------------------------------------------------------
    async def get_run(
        self, thread_id: str | None, run_id: str, *, filters: Filter | None = None
    ) -> Run:
        p = dict(run_id=run_id, thread_id=thread_id)
        row = await self._get("get_run", "t.metadata", filters, p)
        if row is None:
            raise NotFound("run", run_id)
        return self._run(row)

    async def list_runs(
        self,
        thread_id: str,
        *,
        limit: int,
        offset: int,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        await self.get_thread(thread_id, filters=filters)
        p = dict(thread_id=thread_id, status=status or None, limit=limit, offset=offset)
        return [self._run(r) for r in await self.c.read(rows(self.d["list_runs"], p))]

    async def run_numbers(self, thread_id: str, *, limit: int) -> list[tuple[int | None, str]]:
        p = dict(thread_id=thread_id, limit=limit)
        return [(r[0], r[1]) for r in await self.c.read(rows(self.d["run_numbers"], p))]

    async def delete_run(
        self, thread_id: str, run_id: str, *, filters: Filter | None = None
    ) -> None:
        p = dict(run_id=run_id, thread_id=thread_id)
        sql = self.d["delete_run"].format(cond=match(self.d, "t.metadata", filters, p))
        if not await self.c.write(count(sql, p)):
            raise NotFound("run", run_id)

    async def inflight_runs(
        self,
        *,
        thread_id: str | None,
        run_ids: Sequence[str] | None,
        status: str | None,
        filters: Filter | None = None,
    ) -> list[Run]:
        p = dict(thread_id=thread_id, status=status)
        p["run_ids"] = self.c.json(list(run_ids or ()))
        parts = [match(self.d, "t.metadata", filters, p)]
        if thread_id is not None:
            parts.append(self.d["run_on_thread"])
        if run_ids is not None:
            parts.append(self.d["run_ids_in"])
        if status in ("pending", "running"):
            parts.append(self.d["run_status_is"])
        sql = self.d["inflight_runs"].format(where=" AND ".join(parts))
        return [self._run(r) for r in await self.c.read(rows(sql, p))]
