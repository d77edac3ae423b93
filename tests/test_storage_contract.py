"""The storage contract: every backend stores, filters and queues runs the same way."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
import psycopg
import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from psycopg.conninfo import make_conninfo

from agentstream import metrics
from agentstream.execution.runs import new_run
from agentstream.execution.scheduler import cron_run
from agentstream.storage.base import (
    Assistant,
    Conflict,
    Cron,
    NewRun,
    NotFound,
    Queued,
    RunClaim,
    Storage,
    ThreadBusy,
    UnreadableRun,
    utcnow,
)
from agentstream.storage.dialect import binder, match
from agentstream.storage.pgsaver import HEAVY_SECONDS, LoopSaver
from agentstream.storage.postgres import PostgresStorage
from agentstream.storage.sql_pgverbs import ENDED_CHANNEL, QUEUED_CHANNEL
from agentstream.storage.sql_postgres import MIGRATIONS
from agentstream.storage.sql_sqlite import DIALECT
from agentstream.storage.sql_sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from agentstream.storage.sqlite import SqliteStorage

# The server the postgres backend runs against; each test module gets its own database there.
ADMIN_URI = os.environ.get(
    "AGENTSTREAM_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)

MakeStorage = Callable[[], Awaitable[Storage]]


# --- backends --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh database for this module, dropped at the end, so parallel runs never collide."""
    name = f"agentstream_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(ADMIN_URI, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # Never a skip: a contract that silently drops a backend proves nothing.
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URI} ({exc}); start it with "
            "`bash scripts/services.sh` or set AGENTSTREAM_TEST_POSTGRES_URI"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(ADMIN_URI, dbname=name)
    finally:
        with psycopg.connect(ADMIN_URI, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _fresh_schema(database: str) -> str:
    """A connection string whose tables live in a new, empty schema of the module's database."""
    schema = f"t_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
    return make_conninfo(database, options=f"-c search_path={schema}")


@contextlib.asynccontextmanager
async def _postgres(database: str) -> AsyncIterator[PostgresStorage]:
    """A PostgreSQL storage set up on a fresh schema of `database`, closed after."""
    storage = PostgresStorage(await _fresh_schema(database), pool_min=1, pool_max=4)
    await storage.setup()
    try:
        yield storage
    finally:
        await storage.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
async def make_storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeStorage]:
    """Opens storages that share one fresh database (as processes of one deployment would)."""
    factory: Callable[[], Storage]
    if request.param == "sqlite":
        path = tmp_path / "agentstream.sqlite"
        factory = lambda: SqliteStorage(path)  # noqa: E731
    else:
        uri = await _fresh_schema(request.getfixturevalue("pg_database"))
        factory = lambda: PostgresStorage(uri, pool_min=1, pool_max=6)  # noqa: E731
    opened: list[Storage] = []

    async def make() -> Storage:
        storage = factory()
        await storage.setup()
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        await storage.aclose()


@pytest.fixture
async def storage(make_storage: MakeStorage) -> Storage:
    return await make_storage()


# --- helpers ---------------------------------------------------------------------------------
def _assistant(assistant_id: str, **overrides: Any) -> Assistant:
    now = utcnow()
    fields: dict[str, Any] = {
        "assistant_id": assistant_id,
        "graph_id": "agent",
        "config": {"configurable": {"model": "m"}},
        "context": {},
        "metadata": {},
        "name": assistant_id,
        "description": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **overrides,
    }
    return Assistant(**fields)  # type: ignore[typeddict-item]


async def _enqueue(
    storage: Storage,
    thread_id: str | None = None,
    *,
    strategy: str = "enqueue",
    kwargs: dict[str, Any] | None = None,
    temporary: bool = False,
    filters: dict[str, Any] | None = None,
    thread_metadata: dict[str, Any] | None = None,
    assistant_id: str = "asst",
) -> tuple[str, list[str]]:
    """Queue a run (creating its thread when needed); its id and the ids to preempt."""
    run_id = str(uuid.uuid4())
    thread_id = thread_id or str(uuid.uuid4())
    run = new_run(run_id, thread_id, assistant_id, kwargs or {}, {"m": 1}, strategy)
    queued = await storage.create_run(
        NewRun(run, temporary, "create", {"identity": "u1"}, thread_metadata or {}, filters)
    )
    return run_id, queued.preempted


async def _thread_of(storage: Storage, run_id: str) -> str:
    return (await storage.get_run(None, run_id))["thread_id"]


async def _claim_within(storage: Storage, worker: str, seconds: float = 5.0) -> RunClaim:
    """Claim until something is claimable; time-dependent tests wait on this, never on sleep."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        claim = await storage.claim_run(worker, 30)
        if claim is not None:
            return claim
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing became claimable within {seconds}s")


async def _finish(storage: Storage, run_id: str, values: Any = None) -> bool:
    return await storage.finish_run(
        run_id,
        status="success",
        thread_status="idle",
        values=values,
        interrupts={},
        error=None,
        delete_thread=False,
    )


class _State(TypedDict):
    items: Annotated[list[str], operator.add]


def _graph_builder() -> StateGraph[_State]:
    builder = StateGraph(_State)
    builder.add_node("echo", lambda state: {"items": ["echo"]})
    builder.add_edge(START, "echo")
    return builder


async def _graph_run(storage: Storage, thread_id: str, run_id: str, item: str) -> None:
    async with storage.checkpointer() as saver:
        graph = _graph_builder().compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": thread_id}, "metadata": {"run_id": run_id}}
        await graph.ainvoke({"items": [item]}, config)


async def _graph_items(storage: Storage, thread_id: str) -> list[str]:
    async with storage.checkpointer() as saver:
        graph = _graph_builder().compile(checkpointer=saver)
        state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    return list(state.values.get("items", []))


# --- assistants ------------------------------------------------------------------------------
async def test_assistant_put_get_and_if_exists(storage: Storage) -> None:
    stored = await storage.put_assistant(_assistant("a1", metadata={"k": "v"}), if_exists="raise")
    assert stored["version"] == 1
    assert stored["metadata"] == {"k": "v"}
    assert stored["config"] == {"configurable": {"model": "m"}}
    assert stored["created_at"].tzinfo is not None
    with pytest.raises(Conflict):
        await storage.put_assistant(_assistant("a1"), if_exists="raise")
    again = await storage.put_assistant(_assistant("a1", name="other"), if_exists="do_nothing")
    assert again["name"] == "a1"
    assert await storage.get_assistant("a1") == stored
    with pytest.raises(NotFound):
        await storage.get_assistant("missing")


async def test_assistant_search(storage: Storage) -> None:
    for assistant in (
        _assistant("a1", name="alpha", metadata={"team": "x"}),
        _assistant("a2", name="beta", metadata={"team": "y"}),
        _assistant("a3", name="gamma", graph_id="other", metadata={"team": "x"}),
    ):
        await storage.put_assistant(assistant, if_exists="raise")
    search = storage.search_assistants

    async def ids(**kw: Any) -> tuple[list[str], int]:
        args: dict[str, Any] = {
            "graph_id": None, "name": None, "metadata": None, "limit": 10, "offset": 0,
            "sort_by": "name", "sort_order": "asc", **kw,
        }  # fmt: skip
        found, total = await search(**args)
        return [a["assistant_id"] for a in found], total

    assert await ids() == (["a1", "a2", "a3"], 3)
    assert await ids(graph_id="agent") == (["a1", "a2"], 2)
    assert await ids(metadata={"team": "x"}) == (["a1", "a3"], 2)
    assert await ids(name="ALPH") == (["a1"], 1)
    assert await ids(limit=1, offset=1) == (["a2"], 3)
    assert await ids(sort_order="desc") == (["a3", "a2", "a1"], 3)


async def test_assistant_patch_versions_and_set_latest(storage: Storage) -> None:
    await storage.put_assistant(_assistant("a1", metadata={"a": 1}), if_exists="raise")
    patched = await storage.patch_assistant("a1", {"metadata": {"b": 2}, "name": "renamed"})
    assert patched["version"] == 2
    assert patched["metadata"] == {"a": 1, "b": 2}
    assert patched["name"] == "renamed"
    assert patched["config"] == {"configurable": {"model": "m"}}
    third = await storage.patch_assistant("a1", {"config": {"configurable": {"model": "n"}}})
    assert third["version"] == 3
    versions = await storage.assistant_versions("a1", metadata=None, limit=10, offset=0)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[2]["name"] == "a1"
    with_b = await storage.assistant_versions("a1", metadata={"b": 2}, limit=10, offset=0)
    assert [v["version"] for v in with_b] == [3, 2]

    latest = await storage.set_latest_assistant("a1", 1)
    assert (latest["version"], latest["name"], latest["metadata"]) == (1, "a1", {"a": 1})
    assert (await storage.get_assistant("a1"))["version"] == 1
    with pytest.raises(NotFound):
        await storage.set_latest_assistant("a1", 9)
    after = await storage.patch_assistant("a1", {"description": "d"})
    assert after["version"] == 4
    with pytest.raises(NotFound):
        await storage.patch_assistant("missing", {"name": "x"})


async def test_assistant_delete(storage: Storage) -> None:
    await storage.put_assistant(_assistant("a1"), if_exists="raise")
    await storage.delete_assistant("a1")
    with pytest.raises(NotFound):
        await storage.get_assistant("a1")
    with pytest.raises(NotFound):
        await storage.delete_assistant("a1")
    # Its versions went with it: the id can start over at version 1.
    again = await storage.put_assistant(_assistant("a1"), if_exists="raise")
    versions = await storage.assistant_versions("a1", metadata=None, limit=10, offset=0)
    assert again["version"] == 1
    assert [v["version"] for v in versions] == [1]


# --- threads ---------------------------------------------------------------------------------
async def test_thread_create_sees_only_what_its_filter_lets_it(storage: Storage) -> None:
    # On PostgreSQL the insert and the read are one statement: the filter must still decide.
    mine = {"owner": "a"}
    made = await storage.create_thread("t1", metadata=mine, if_exists="raise", filters=mine)
    assert made["metadata"] == mine
    again = await storage.create_thread("t1", metadata=mine, if_exists="do_nothing", filters=mine)
    assert again == made
    with pytest.raises(Conflict):
        await storage.create_thread("t1", metadata=mine, if_exists="raise", filters=mine)
    await storage.create_thread("t2", metadata={"owner": "b"}, if_exists="raise")
    for if_exists in ("raise", "do_nothing"):
        with pytest.raises(Conflict):  # someone else's id
            await storage.create_thread("t2", metadata=mine, if_exists=if_exists, filters=mine)
    # Made, but not as the caller may see it: refused as a taken id, as before.
    with pytest.raises(Conflict):
        await storage.create_thread("t3", metadata={"owner": "b"}, if_exists="raise", filters=mine)
    assert (await storage.get_thread("t2"))["metadata"] == {"owner": "b"}


async def test_threads_created_at_once_with_one_id_make_one(storage: Storage) -> None:
    attempts = await asyncio.gather(
        *(storage.create_thread("t1", metadata={"n": n}, if_exists="raise") for n in range(6)),
        return_exceptions=True,
    )
    made = [a for a in attempts if not isinstance(a, BaseException)]
    assert len(made) == 1 and all(isinstance(a, Conflict) for a in attempts if a not in made)
    kept = await asyncio.gather(
        *(storage.create_thread("t1", metadata={}, if_exists="do_nothing") for _ in range(6))
    )
    assert all(thread == made[0] for thread in kept)


async def test_thread_create_if_exists(storage: Storage) -> None:
    thread = await storage.create_thread("t1", metadata={"k": "v"}, if_exists="raise")
    assert (thread["thread_id"], thread["status"], thread["metadata"]) == ("t1", "idle", {"k": "v"})
    assert thread["values"] is None
    assert thread["interrupts"] == {}
    assert thread["created_at"].tzinfo is not None
    with pytest.raises(Conflict):
        await storage.create_thread("t1", metadata={}, if_exists="raise")
    same = await storage.create_thread("t1", metadata={"k": "new"}, if_exists="do_nothing")
    assert same["metadata"] == {"k": "v"}
    assert await storage.get_thread("t1") == thread
    with pytest.raises(NotFound):
        await storage.get_thread("missing")


async def test_thread_search_by_metadata_status_and_ids(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={"k": "a", "tags": ["x", "y"]}, if_exists="raise")
    await storage.create_thread("t2", metadata={"k": "b", "n": {"d": 1}}, if_exists="raise")
    await storage.create_thread("t3", metadata={"k": "a", "none": None}, if_exists="raise")
    await _enqueue(storage, "t2")

    async def ids(**kw: Any) -> list[str]:
        args: dict[str, Any] = {
            "ids": None, "metadata": None, "values": None, "status": None, "limit": 10,
            "offset": 0, "sort_by": "thread_id", "sort_order": "asc", **kw,
        }  # fmt: skip
        found, total = await storage.search_threads(**args)
        assert total == len(found)
        return [t["thread_id"] for t in found]

    assert await ids() == ["t1", "t2", "t3"]
    assert await ids(metadata={"k": "a"}) == ["t1", "t3"]
    # Equality, not containment: a list or an object matches only as a whole.
    assert await ids(metadata={"tags": ["x", "y"]}) == ["t1"]
    assert await ids(metadata={"tags": ["x"]}) == []
    assert await ids(metadata={"n": {"d": 1}}) == ["t2"]
    assert await ids(metadata={"none": None}) == ["t3"]
    assert await ids(status="busy") == ["t2"]
    assert await ids(status="idle") == ["t1", "t3"]
    assert await ids(ids=["t3", "t1", "nope"]) == ["t1", "t3"]
    assert await ids(ids=["t3", "t1"], metadata={"k": "b"}) == []
    found, total = await storage.search_threads(
        ids=None, metadata=None, values=None, status=None, limit=1, offset=1,
        sort_by="thread_id", sort_order="desc",
    )  # fmt: skip
    assert ([t["thread_id"] for t in found], total) == (["t2"], 3)


async def test_search_total_is_exact_on_every_page(storage: Storage) -> None:
    """A page that is not full ends the matches, so its total is not counted again; every
    other page (a full one, one past the end) counts them."""
    for i in range(5):
        await storage.create_thread(f"t{i}", metadata={"odd": i % 2}, if_exists="raise")

    async def page(limit: int, offset: int, **kw: Any) -> tuple[list[str], int]:
        found, total = await storage.search_threads(
            ids=None, values=None, status=None, limit=limit, offset=offset,
            sort_by="thread_id", sort_order="asc", metadata=kw.get("metadata"),
        )  # fmt: skip
        return [t["thread_id"] for t in found], total

    assert await page(2, 0) == (["t0", "t1"], 5)
    assert await page(2, 2) == (["t2", "t3"], 5)
    assert await page(2, 4) == (["t4"], 5)
    assert await page(2, 6) == ([], 5)
    assert await page(5, 0) == (["t0", "t1", "t2", "t3", "t4"], 5)
    assert await page(10, 0, metadata={"odd": 1}) == (["t1", "t3"], 2)
    assert await page(10, 1, metadata={"odd": 1}) == (["t3"], 2)
    assert await page(10, 0, metadata={"odd": 7}) == ([], 0)


async def test_thread_search_by_metadata_follows_every_change_of_it(storage: Storage) -> None:
    """A search by metadata finds a thread by what its metadata is now, after a patch, a
    run's merge, a copy and a delete; scalars match by JSON type as the JSON filter does."""
    meta = {"user": "u1", "n": 1, "flag": True, "s": "1", "x": 1.5}
    await storage.create_thread("t1", metadata=meta, if_exists="raise")

    async def ids(metadata: dict[str, Any], filters: dict[str, Any] | None = None) -> list[str]:
        found, total = await storage.search_threads(
            ids=None, metadata=metadata, values=None, status=None, limit=10, offset=0,
            sort_by="thread_id", sort_order="asc", filters=filters,
        )  # fmt: skip
        assert total == len(found)
        return [t["thread_id"] for t in found]

    assert await ids({"user": "u1", "n": 1, "flag": True, "s": "1", "x": 1.5}) == ["t1"]
    assert await ids({"n": "1"}) == await ids({"s": 1}) == []
    assert await ids({"user": {"$eq": "u1"}}) == ["t1"]
    assert await ids({}, filters={"user": "u1"}) == ["t1"]
    await storage.patch_thread("t1", {"user": "u2"})
    assert await ids({"user": "u1"}) == []
    assert await ids({"user": "u2"}) == ["t1"]
    await _enqueue(storage, "t1", thread_metadata={"user": "u3"})
    assert (await ids({"user": "u2"}), await ids({"user": "u3"})) == ([], ["t1"])
    await storage.copy_thread("t1", "t2")
    assert await ids({"user": "u3"}) == ["t1", "t2"]
    await storage.delete_thread("t1")
    assert await ids({"user": "u3"}) == ["t2"]
    assert await ids({"user": "u3"}, filters={"user": "u1"}) == []


async def test_thread_search_by_values(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={}, if_exists="raise")
    await storage.create_thread("t2", metadata={}, if_exists="raise")
    await storage.set_thread_state("t1", values={"answer": 42}, interrupts={}, status="idle")
    found, _ = await storage.search_threads(
        ids=None, metadata=None, values={"answer": 42}, status=None, limit=10, offset=0,
        sort_by=None, sort_order=None,
    )  # fmt: skip
    assert [t["thread_id"] for t in found] == ["t1"]
    assert found[0]["values"] == {"answer": 42}


async def test_thread_patch_merges_metadata(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={"a": 1, "b": 1}, if_exists="raise")
    patched = await storage.patch_thread("t1", {"b": 2, "c": 3})
    assert patched["metadata"] == {"a": 1, "b": 2, "c": 3}
    assert (await storage.get_thread("t1"))["metadata"] == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(NotFound):
        await storage.patch_thread("missing", {"a": 1})


async def test_thread_delete_returns_inflight_runs(storage: Storage) -> None:
    run_a, _ = await _enqueue(storage, "t1")
    run_b, _ = await _enqueue(storage, "t1")
    claim = await storage.claim_run("w", 30)
    assert claim is not None and claim["run"]["run_id"] == run_a
    await _graph_run(storage, "t1", run_a, "one")
    assert sorted(await storage.delete_thread("t1")) == sorted([run_a, run_b])
    with pytest.raises(NotFound):
        await storage.get_thread("t1")
    with pytest.raises(NotFound):
        await storage.get_run(None, run_b)
    assert await _graph_items(storage, "t1") == []
    with pytest.raises(NotFound):
        await storage.delete_thread("t1")
    await storage.create_thread("t2", metadata={}, if_exists="raise")
    assert await storage.delete_thread("t2") == []


async def test_thread_copy_takes_row_and_checkpoints(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={"k": "v"}, if_exists="raise")
    await _graph_run(storage, "t1", "r1", "one")
    await storage.set_thread_state("t1", values={"items": ["x"]}, interrupts={}, status="idle")
    copy = await storage.copy_thread("t1", "t2")
    assert copy["thread_id"] == "t2"
    assert (copy["metadata"], copy["values"], copy["status"]) == (
        {"k": "v"},
        {"items": ["x"]},
        "idle",
    )
    assert await storage.get_thread("t2") == copy
    assert await _graph_items(storage, "t2") == ["one", "echo"]
    # The copy goes its own way.
    await _graph_run(storage, "t2", "r2", "two")
    assert await _graph_items(storage, "t2") == ["one", "echo", "two", "echo"]
    assert await _graph_items(storage, "t1") == ["one", "echo"]
    with pytest.raises(NotFound):
        await storage.copy_thread("missing", "t3")


async def test_rollback_run_removes_its_checkpoints(storage: Storage) -> None:
    first, _ = await _enqueue(storage, "t1")
    await _graph_run(storage, "t1", first, "one")
    second, _ = await _enqueue(storage, "t1")
    await _graph_run(storage, "t1", second, "two")
    assert await _graph_items(storage, "t1") == ["one", "echo", "two", "echo"]
    await storage.rollback_run(second, "t1")
    assert await _graph_items(storage, "t1") == ["one", "echo"]
    with pytest.raises(NotFound):
        await storage.get_run("t1", second)
    assert (await storage.get_run("t1", first))["run_id"] == first
    # The thread carries on from where the first run left it.
    await _graph_run(storage, "t1", "r3", "three")
    assert await _graph_items(storage, "t1") == ["one", "echo", "three", "echo"]


async def test_set_thread_state_keeps_a_busy_thread_busy(storage: Storage) -> None:
    await _enqueue(storage, "t1")
    await storage.set_thread_state("t1", values={"v": 1}, interrupts={"task": []}, status="idle")
    thread = await storage.get_thread("t1")
    assert thread["status"] == "busy"
    assert (thread["values"], thread["interrupts"]) == ({"v": 1}, {"task": []})
    await storage.set_thread_state("t1", values={"v": 2}, interrupts={}, status=None)
    assert (await storage.get_thread("t1"))["status"] == "busy"


# --- owner filters ---------------------------------------------------------------------------
OWNER_FILTERS = [{"owner": "a"}, {"owner": {"$eq": "a"}}, {"tags": {"$contains": "x"}}]
MINE = {"owner": "a", "tags": ["x", "y"]}
THEIRS = {"owner": "b", "tags": ["z"]}


@pytest.mark.parametrize("owner", OWNER_FILTERS, ids=["plain", "eq", "contains"])
async def test_owner_filter_hides_other_threads_and_runs(
    storage: Storage, owner: dict[str, Any]
) -> None:
    await storage.create_thread("mine", metadata=MINE, if_exists="raise")
    await storage.create_thread("theirs", metadata=THEIRS, if_exists="raise")
    my_run, _ = await _enqueue(storage, "mine")
    their_run, _ = await _enqueue(storage, "theirs")

    assert (await storage.get_thread("mine", filters=owner))["thread_id"] == "mine"
    found, total = await storage.search_threads(
        ids=None, metadata=None, values=None, status=None, limit=10, offset=0,
        sort_by=None, sort_order=None, filters=owner,
    )  # fmt: skip
    assert ([t["thread_id"] for t in found], total) == (["mine"], 1)
    for attempt in (
        storage.get_thread("theirs", filters=owner),
        storage.patch_thread("theirs", {"owner": "a"}, filters=owner),
        storage.copy_thread("theirs", "stolen", filters=owner),
        storage.delete_thread("theirs", filters=owner),
        storage.get_run("theirs", their_run, filters=owner),
        storage.get_run(None, their_run, filters=owner),
        storage.list_runs("theirs", limit=10, offset=0, status=None, filters=owner),
        storage.delete_run("theirs", their_run, filters=owner),
        _enqueue(storage, "theirs", filters=owner),
    ):
        with pytest.raises(NotFound):
            await attempt
    # Nor can their thread's id be taken.
    with pytest.raises(Conflict):
        await storage.create_thread("theirs", metadata=MINE, if_exists="do_nothing", filters=owner)

    inflight = await storage.inflight_runs(thread_id=None, run_ids=None, status=None, filters=owner)
    assert [r["run_id"] for r in inflight] == [my_run]
    listed = await storage.list_runs("mine", limit=10, offset=0, status=None, filters=owner)
    assert [r["run_id"] for r in listed] == [my_run]
    # Nothing of theirs changed.
    theirs = await storage.get_thread("theirs")
    assert theirs["metadata"] == THEIRS
    their_runs = await storage.list_runs("theirs", limit=10, offset=0, status=None)
    assert [r["run_id"] for r in their_runs] == [their_run]
    with pytest.raises(NotFound):
        await storage.get_thread("stolen")


@pytest.mark.parametrize("owner", OWNER_FILTERS, ids=["plain", "eq", "contains"])
async def test_owner_filter_hides_other_assistants(storage: Storage, owner: dict[str, Any]) -> None:
    await storage.put_assistant(_assistant("mine", metadata=MINE), if_exists="raise")
    await storage.put_assistant(_assistant("theirs", metadata=THEIRS), if_exists="raise")
    found, total = await storage.search_assistants(
        graph_id=None, name=None, metadata=None, limit=10, offset=0, sort_by=None,
        sort_order=None, filters=owner,
    )  # fmt: skip
    assert ([a["assistant_id"] for a in found], total) == (["mine"], 1)
    assert (await storage.get_assistant("mine", filters=owner))["assistant_id"] == "mine"
    for attempt in (
        storage.get_assistant("theirs", filters=owner),
        storage.patch_assistant("theirs", {"name": "x"}, filters=owner),
        storage.delete_assistant("theirs", filters=owner),
        storage.set_latest_assistant("theirs", 1, filters=owner),
        storage.assistant_versions("theirs", metadata=None, limit=1, offset=0, filters=owner),
        storage.put_assistant(_assistant("theirs"), if_exists="do_nothing", filters=owner),
    ):
        with pytest.raises(NotFound):
            await attempt
    theirs = await storage.get_assistant("theirs")
    assert (theirs["version"], theirs["name"]) == (1, "theirs")


# --- creating runs ---------------------------------------------------------------------------
async def test_create_run_reject_on_busy_thread(storage: Storage) -> None:
    first, preempt = await _enqueue(storage, "t1", strategy="reject")
    assert preempt == []
    with pytest.raises(ThreadBusy):
        await _enqueue(storage, "t1", strategy="reject")
    runs = await storage.list_runs("t1", limit=10, offset=0, status=None)
    assert [r["run_id"] for r in runs] == [first]
    assert (await storage.get_thread("t1"))["status"] == "busy"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_create_run_interrupt_and_rollback_return_inflight(
    storage: Storage, strategy: str
) -> None:
    running, _ = await _enqueue(storage, "t1")
    assert (await _claim_within(storage, "w"))["run"]["run_id"] == running
    queued, _ = await _enqueue(storage, "t1")
    new, preempt = await _enqueue(storage, "t1", strategy=strategy)
    assert preempt == [running, queued]
    assert (await storage.get_run("t1", new))["status"] == "pending"


async def test_create_run_enqueue_returns_nothing(storage: Storage) -> None:
    await _enqueue(storage, "t1")
    _, preempt = await _enqueue(storage, "t1", strategy="enqueue")
    assert preempt == []
    assert len(await storage.list_runs("t1", limit=10, offset=0, status="pending")) == 2


async def test_create_run_on_unknown_thread(storage: Storage) -> None:
    run = new_run(str(uuid.uuid4()), "t-new", "asst", {}, {}, "reject")
    with pytest.raises(NotFound):
        await storage.create_run(NewRun(run, False, "reject", None, {}))
    with pytest.raises(NotFound):
        await storage.get_thread("t-new")
    await storage.create_run(NewRun(run, False, "create", None, {"graph_id": "agent"}))
    thread = await storage.get_thread("t-new")
    assert (thread["status"], thread["metadata"]) == ("busy", {"graph_id": "agent"})
    stored = await storage.get_run("t-new", run["run_id"])
    assert (stored["status"], stored["kwargs"]) == ("pending", {})
    assert stored["multitask_strategy"] == "reject"
    assert stored["created_at"].tzinfo is not None


async def test_a_claim_brings_the_run_assistant_unless_it_is_gone(
    storage: Storage,
) -> None:
    # Both read it with the claim (the executor's first read): PostgreSQL in the claim's
    # statement, SQLite in the claim's transaction.
    stored = await storage.put_assistant(_assistant("asst"), if_exists="raise")
    await _enqueue(storage, "t1")
    claim = await _claim_within(storage, "w")
    assert claim["assistant"] == stored
    # A claim of several brings each run's.
    await _enqueue(storage, "t3")
    await _enqueue(storage, "t4")
    claims = await storage.claim_runs("w", 30, 3)
    assert [c["assistant"] for c in claims] == [stored, stored]  # type: ignore[index]
    # Each its own, when the runs taken together have different ones (SQLite reads each
    # assistant once a claim).
    other = await storage.put_assistant(_assistant("other", graph_id="ticker"), if_exists="raise")
    for thread_id, assistant_id in (
        ("t5", "asst"),
        ("t6", "other"),
        ("t7", "asst"),
        ("t8", "other"),
    ):
        await _enqueue(storage, thread_id, assistant_id=assistant_id)
    claims = await storage.claim_runs("w", 30, 4)
    brought = [(c["run"]["assistant_id"], c["assistant"]) for c in claims]  # type: ignore[index]
    expected = [("asst", stored), ("other", other), ("asst", stored), ("other", other)]
    assert brought == expected
    await storage.delete_assistant("asst")
    await _enqueue(storage, "t2")
    assert (await _claim_within(storage, "w"))["assistant"] is None  # gone: looked up, NotFound


@pytest.mark.parametrize("owner", OWNER_FILTERS, ids=["plain", "eq", "contains"])
async def test_create_run_under_an_owner_filter_sees_only_its_threads(
    storage: Storage, owner: dict[str, Any]
) -> None:
    # A hidden thread is not found, even when it is busy (not "busy": that would tell), and
    # nothing is stored; a new thread the filter would hide is not created either.
    await storage.create_thread("mine", metadata=MINE, if_exists="raise")
    await storage.create_thread("theirs", metadata=THEIRS, if_exists="raise")
    theirs, _ = await _enqueue(storage, "theirs", strategy="reject")
    for thread_id in ("theirs", "new"):
        with pytest.raises(NotFound):
            await _enqueue(storage, thread_id, strategy="reject", filters=owner)
    inflight = await storage.inflight_runs(thread_id=None, run_ids=None, status=None)
    assert [r["run_id"] for r in inflight] == [theirs]
    assert (await storage.get_thread("theirs"))["metadata"] == THEIRS
    with pytest.raises(NotFound):
        await storage.get_thread("new")
    mine, _ = await _enqueue(storage, "mine", filters=owner, thread_metadata={"n": 1})
    assert (await storage.get_run("mine", mine))["status"] == "pending"
    assert (await storage.get_thread("mine"))["metadata"] == {**MINE, "n": 1}


async def test_create_run_merges_thread_metadata(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={"a": 1, "b": 1}, if_exists="raise")
    await _enqueue(storage, "t1", thread_metadata={"b": 2})
    assert (await storage.get_thread("t1"))["metadata"] == {"a": 1, "b": 2}


async def test_get_list_delete_and_inflight_runs(storage: Storage) -> None:
    first, _ = await _enqueue(storage, "t1")
    second, _ = await _enqueue(storage, "t1")
    other, _ = await _enqueue(storage, "t2")
    listed = await storage.list_runs("t1", limit=10, offset=0, status=None)
    assert [r["run_id"] for r in listed] == [second, first]
    paged = await storage.list_runs("t1", limit=1, offset=1, status=None)
    assert [r["run_id"] for r in paged] == [first]
    with pytest.raises(NotFound):
        await storage.get_run("t2", first)
    await _claim_within(storage, "w")
    running = await storage.inflight_runs(thread_id=None, run_ids=None, status="running")
    assert [r["run_id"] for r in running] == [first]
    pending = await storage.inflight_runs(thread_id=None, run_ids=None, status="pending")
    assert sorted(r["run_id"] for r in pending) == sorted([second, other])
    chosen = await storage.inflight_runs(thread_id="t1", run_ids=[second, other], status=None)
    assert [r["run_id"] for r in chosen] == [second]
    assert await storage.inflight_runs(thread_id=None, run_ids=[], status=None) == []
    await storage.delete_run("t1", second)
    with pytest.raises(NotFound):
        await storage.get_run("t1", second)
    with pytest.raises(NotFound):
        await storage.delete_run("t1", second)


async def test_a_run_number_is_given_once_on_its_thread(storage: Storage) -> None:
    first, _ = await _enqueue(storage, "t1")
    second, _ = await _enqueue(storage, "t1", strategy="enqueue")
    other, _ = await _enqueue(storage, "t2")
    await storage.delete_run("t1", second)
    third, _ = await _enqueue(storage, "t1")
    # Newest first; the deleted run's number is not given again, and threads count apart.
    assert await storage.run_numbers("t1", limit=10) == [(3, third), (1, first)]
    assert await storage.run_numbers("t1", limit=1) == [(3, third)]
    assert await storage.run_numbers("t2", limit=10) == [(1, other)]
    assert await storage.run_numbers("nobody", limit=10) == []
    # A copy of a thread starts its own count.
    await storage.copy_thread("t1", "t1-copy")
    copied, _ = await _enqueue(storage, "t1-copy")
    assert await storage.run_numbers("t1-copy", limit=10) == [(1, copied)]


# --- the queue -------------------------------------------------------------------------------
async def test_claim_takes_oldest_first_and_one_run_per_thread(storage: Storage) -> None:
    a1, _ = await _enqueue(storage, "ta")
    b1, _ = await _enqueue(storage, "tb")
    a2, _ = await _enqueue(storage, "ta")
    c1, _ = await _enqueue(storage, "tc")
    order = []
    while (claim := await storage.claim_run("w", 30)) is not None:
        order.append(claim["run"]["run_id"])
    assert order == [a1, b1, c1]  # a2 waits behind a1 on its thread
    await _finish(storage, a1)
    claim = await storage.claim_run("w", 30)
    assert claim is not None
    assert (claim["run"]["run_id"], claim["attempt"], claim["run"]["status"]) == (a2, 1, "running")
    assert claim["temporary"] is False
    assert claim["auth_user"] == {"identity": "u1"}
    assert await storage.claim_run("w", 30) is None


async def test_a_run_created_for_a_worker_starts_only_when_first_in_line_and_due(
    storage: Storage,
) -> None:
    """NewRun.start_for: a run due now on a thread with nothing in flight is stored running
    under that worker's lease, its claim returned as a claim would read it; one behind another
    run, or delayed, is queued as always (and claimed in its turn)."""

    async def create(
        thread_id: str, kwargs: dict[str, Any], temporary: bool = False
    ) -> tuple[str, Queued]:
        run = new_run(str(uuid.uuid4()), thread_id, "asst", kwargs, {"m": 1}, "enqueue")
        new = NewRun(run, temporary, "create", {"identity": "u1"}, {}, None, ("w1", 30.0))
        return run["run_id"], await storage.create_run(new)

    first_id, first = await create("t1", {"input": {"n": (1, 2)}})
    claim = first.started
    assert claim is not None and first.preempted == []
    assert claim["run"]["run_id"] == first_id
    assert (claim["attempt"], claim["temporary"]) == (1, False)
    assert claim["auth_user"] == {"identity": "u1"}
    assert claim["run"]["status"] == "running"
    assert claim["run"]["kwargs"] == {
        "input": {"n": [1, 2]}
    }  # as stored: a tuple reads back a list
    assert (await storage.get_run("t1", first_id))["status"] == "running"
    assert await storage.claim_run("w2", 30) is None  # started: nobody claims it
    assert await storage.renew_lease(first_id, "w2", 30) is False  # it is w1's
    assert await storage.renew_lease(first_id, "w1", 30) is True
    behind_id, behind = await create("t1", {})
    assert behind.started is None  # the first is in flight on its thread
    assert (await storage.get_run("t1", behind_id))["status"] == "pending"
    _, delayed = await create("t2", {"after_seconds": 60})
    assert delayed.started is None
    _, temporary = await create(str(uuid.uuid4()), {}, temporary=True)
    assert temporary.started is not None and temporary.started["temporary"] is True
    assert await storage.claim_run("w2", 30) is None
    # An older run a claim would take first (queued while no worker here had a slot): the new
    # one does not overtake it, and the claims take both in order.
    older, _ = await _enqueue(storage, "t3")
    newer_id, newer = await create("t4", {})
    assert newer.started is None
    claims = [await storage.claim_run("w2", 30), await storage.claim_run("w2", 30)]
    assert [c["run"]["run_id"] for c in claims if c is not None] == [older, newer_id]
    await _finish(storage, first_id)
    assert (await _claim_within(storage, "w2"))["run"]["run_id"] == behind_id


async def test_a_create_that_reads_its_assistant_stamps_the_thread_or_stores_nothing(
    storage: Storage,
) -> None:
    """NewRun.with_assistant: the run's assistant read in the same step as the create (the
    API's create, a round trip less), its graph and id stamped on the thread's metadata, and
    handed to the claim of a run started at once; no assistant, nothing stored."""
    stored = await storage.put_assistant(_assistant("a1"), if_exists="raise")

    def new(thread_id: str, assistant_id: str, start_for: tuple[str, float] | None) -> NewRun:
        run = new_run(str(uuid.uuid4()), thread_id, assistant_id, {}, {"m": 1}, "enqueue")
        return NewRun(run, True, "create", None, {"owner": "u1"}, None, start_for, True)

    queued = await storage.create_run(new("t1", "a1", ("w1", 30.0)))
    assert queued.assistant == stored
    assert queued.started is not None and queued.started["assistant"] == stored
    thread = await storage.get_thread("t1")
    assert thread["metadata"] == {"owner": "u1", "graph_id": "agent", "assistant_id": "a1"}
    queued = await storage.create_run(new("t2", "a1", None))  # queued: its claim reads it too
    assert queued.started is None and queued.assistant == stored
    with pytest.raises(NotFound):
        await storage.create_run(new("t3", "missing", None))
    with pytest.raises(NotFound):
        await storage.get_thread("t3")
    assert [c["run"]["thread_id"] for c in await storage.claim_runs("w2", 30, 5)] == ["t2"]


async def test_claims_taken_together_are_those_one_claim_after_another_would_take(
    storage: Storage,
) -> None:
    a1, _ = await _enqueue(storage, "ta")
    b1, _ = await _enqueue(storage, "tb")
    a2, _ = await _enqueue(storage, "ta")
    c1, _ = await _enqueue(storage, "tc")
    d1, _ = await _enqueue(storage, "td")
    taken = await storage.claim_runs("w", 30, 3)
    claims = [c for c in taken if not isinstance(c, UnreadableRun)]
    assert len(claims) == len(taken)
    # All three in one call (one statement on PostgreSQL, one transaction on SQLite), in
    # queue order, a2 passed over: its thread has a1 in flight, started within the same call.
    expected = [a1, b1, c1]
    assert [c["run"]["run_id"] for c in claims] == expected
    assert all((c["attempt"], c["run"]["status"]) == (1, "running") for c in claims)
    rest = await storage.claim_runs("w", 30, 10)
    ids = [c["run"]["run_id"] for c in rest if not isinstance(c, UnreadableRun)]
    while more := await storage.claim_runs("w", 30, 10):
        ids += [c["run"]["run_id"] for c in more if not isinstance(c, UnreadableRun)]
    assert expected + ids == [a1, b1, c1, d1]  # a2 waits behind a1 on its thread
    await _finish(storage, a1)
    again = await storage.claim_runs("w", 30, 5)
    assert [c["run"]["run_id"] for c in again if not isinstance(c, UnreadableRun)] == [a2]


async def test_claim_respects_after_seconds(storage: Storage) -> None:
    before = datetime.now(UTC)
    delayed, _ = await _enqueue(storage, "t1", kwargs={"after_seconds": 1.0})
    assert await storage.claim_run("w", 30) is None
    due = await storage.next_due()
    assert due is not None and due.tzinfo is not None
    # The database's clock decides; allow for it to differ a little from ours.
    assert abs((due - before).total_seconds() - 1.0) < 5
    # A later run on the same thread waits behind the delayed one.
    later, _ = await _enqueue(storage, "t1")
    assert await storage.claim_run("w", 30) is None
    claim = await _claim_within(storage, "w")
    assert claim["run"]["run_id"] == delayed
    assert await storage.next_due() is None
    await _finish(storage, delayed)
    assert (await _claim_within(storage, "w"))["run"]["run_id"] == later


async def test_next_due_is_none_without_delayed_runs(storage: Storage) -> None:
    assert await storage.next_due() is None
    await _enqueue(storage, "t1")
    assert await storage.next_due() is None


async def test_expired_lease_is_claimable_again(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    first = await storage.claim_run("w1", 0.01)
    assert first is not None and first["attempt"] == 1
    again = await _claim_within(storage, "w2")
    assert (again["run"]["run_id"], again["attempt"]) == (run_id, 2)
    # The lease now belongs to w2 only.
    assert await storage.renew_lease(run_id, "w1", 30) is False
    assert await storage.renew_lease(run_id, "w2", 30) is True
    assert await storage.claim_run("w3", 30) is None


async def test_negative_lease_expires_at_once(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    assert await storage.claim_run("w1", -1) is not None
    again = await storage.claim_run("w2", 30)
    assert again is not None and (again["run"]["run_id"], again["attempt"]) == (run_id, 2)


async def test_a_claim_takes_the_older_of_a_lapsed_run_and_the_queues_head(
    storage: Storage,
) -> None:
    """A run whose lease ran out and the oldest runnable pending run are both candidates;
    the older goes first, whichever kind it is."""
    lapsed, _ = await _enqueue(storage, "t1")
    assert await storage.claim_run("w1", -1) is not None  # lapsed at once
    pending, _ = await _enqueue(storage, "t2")
    first = await storage.claim_run("w2", 30)
    assert first is not None and (first["run"]["run_id"], first["attempt"]) == (lapsed, 2)
    second = await storage.claim_run("w2", -1)  # lapsed at once, and now the younger
    assert second is not None and second["run"]["run_id"] == pending
    newer, _ = await _enqueue(storage, "t3")
    third = await storage.claim_run("w3", 30)
    assert third is not None and (third["run"]["run_id"], third["attempt"]) == (pending, 2)
    fourth = await storage.claim_run("w3", 30)
    assert fourth is not None and fourth["run"]["run_id"] == newer


async def test_renewed_lease_keeps_the_run(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    assert await storage.claim_run("w1", -1) is not None
    assert await storage.renew_lease(run_id, "w1", 30) is True
    assert await storage.claim_run("w2", 30) is None
    await _finish(storage, run_id)
    assert await storage.renew_lease(run_id, "w1", 30) is False


async def test_a_cancel_kept_on_a_running_run_comes_back_with_each_renewal(
    storage: Storage,
) -> None:
    """What a worker that missed a cancel's message finds when it next renews the lease, the
    new holder too once the run is taken over; a run not running keeps none."""
    run_id, _ = await _enqueue(storage, "t1")
    queued_id, _ = await _enqueue(storage, "t2")
    assert await storage.ask_cancel(queued_id, "interrupt") is False  # pending: not kept
    assert await storage.claim_run("w1", -1) is not None
    assert await storage.renew_lease(run_id, "w1", -1) is True
    assert await storage.ask_cancel(run_id, "rollback") is True
    assert await storage.renew_lease(run_id, "w1", -1) == "rollback"
    taken = await storage.claim_run("w2", 30)  # its lease ran out: a new attempt
    assert taken is not None and taken["run"]["run_id"] == run_id
    assert await storage.renew_lease(run_id, "w1", 30) is False
    assert await storage.renew_lease(run_id, "w2", 30) == "rollback"
    await _finish(storage, run_id)
    assert await storage.renew_lease(run_id, "w2", 30) is False
    assert await storage.ask_cancel(run_id, "interrupt") is False  # ended: not kept


async def test_expire_leases_frees_running_runs(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    await _enqueue(storage, "t2")
    assert await storage.claim_run("w1", 3600) is not None
    assert await storage.claim_run("w1", 3600) is not None
    assert await storage.expire_leases() == 2
    again = await storage.claim_run("w2", 30)
    assert again is not None and (again["run"]["run_id"], again["attempt"]) == (run_id, 2)


async def test_finish_run_settles_run_and_thread(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    await storage.finish_run(
        run_id, status="success", thread_status="interrupted", values={"v": 1},
        interrupts={"task": [{"id": "i", "value": "q"}]}, error=None, delete_thread=False,
    )  # fmt: skip
    assert (await storage.get_run("t1", run_id))["status"] == "success"
    thread = await storage.get_thread("t1")
    assert (thread["status"], thread["values"]) == ("interrupted", {"v": 1})
    assert thread["interrupts"] == {"task": [{"id": "i", "value": "q"}]}
    assert thread["error"] is None

    failed, _ = await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    error = {"error": "ValueError", "message": "boom"}
    await storage.finish_run(
        failed, status="error", thread_status="error", values=None, interrupts={},
        error=error, delete_thread=False,
    )  # fmt: skip
    assert (await storage.get_run("t1", failed))["status"] == "error"
    thread = await storage.get_thread("t1")
    assert (thread["status"], thread["error"]) == ("error", error)
    # Finishing a run that is gone is not an error.
    await _finish(storage, "no-such-run")


async def test_finish_run_keeps_thread_busy_while_runs_queue(storage: Storage) -> None:
    first, _ = await _enqueue(storage, "t1")
    await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    await _finish(storage, first, {"v": 1})
    thread = await storage.get_thread("t1")
    assert (thread["status"], thread["values"]) == ("busy", {"v": 1})


async def test_finish_run_deletes_temporary_thread(storage: Storage) -> None:
    thread_id = str(uuid.uuid4())
    run_id, _ = await _enqueue(storage, thread_id, temporary=True)
    claim = await _claim_within(storage, "w")
    assert claim["temporary"] is True
    await _graph_run(storage, thread_id, run_id, "one")
    await storage.finish_run(
        run_id, status="success", thread_status="idle", values={}, interrupts={}, error=None,
        delete_thread=True,
    )  # fmt: skip
    with pytest.raises(NotFound):
        await storage.get_thread(thread_id)
    with pytest.raises(NotFound):
        await storage.get_run(None, run_id)
    assert await _graph_items(storage, thread_id) == []


async def test_a_stateless_runs_end_removes_its_thread_without_looking_for_checkpoints(
    storage: Storage,
) -> None:
    # A run with no checkpointer (the executor's stateless runs) wrote none: its end removes
    # its thread and itself as any temporary thread's does, with no statement on the
    # checkpoint tables (SQLite runs them one by one; PostgreSQL ends runs in one statement).
    thread_id = str(uuid.uuid4())
    run_id, _ = await _enqueue(storage, thread_id, temporary=True)
    await _claim_within(storage, "w")
    sent: list[str] = []
    if isinstance(storage, SqliteStorage):
        db = storage.c._db  # type: ignore[attr-defined]
        await db._execute(db._conn.set_trace_callback, sent.append)  # on the connection's thread
    await storage.finish_run(
        run_id, status="success", thread_status="idle", values={}, interrupts={}, error=None,
        delete_thread=True, checkpointed=False,
    )  # fmt: skip
    with pytest.raises(NotFound):
        await storage.get_thread(thread_id)
    with pytest.raises(NotFound):
        await storage.get_run(None, run_id)
    if isinstance(storage, SqliteStorage):
        # Its runs, then its thread: nothing read first (the write transaction excludes
        # every other writer), nothing looked for in the checkpoint tables. (A trigger's
        # program is traced again with its statement's text.)
        done = dict.fromkeys(s for s in sent if s not in ("BEGIN IMMEDIATE", "COMMIT"))
        assert [s.split(" WHERE")[0] for s in done] == [
            "DELETE FROM runs",
            "DELETE FROM threads",
        ], sent


async def test_a_stateless_runs_thread_is_busy_with_its_run_counted(storage: Storage) -> None:
    # Made busy, its one run numbered 1 (SQLite inserts it so, with no update after); kept on
    # completion, the thread's next run is its second.
    thread_id = str(uuid.uuid4())
    first, _ = await _enqueue(storage, thread_id, temporary=True, thread_metadata={"k": 1})
    thread = await storage.get_thread(thread_id)
    assert (thread["status"], thread["metadata"]["k"]) == ("busy", 1)
    await _claim_within(storage, "w")
    await _finish(storage, first, {"v": 1})
    second, _ = await _enqueue(storage, thread_id)
    assert await storage.run_numbers(thread_id, limit=10) == [(2, second), (1, first)]


async def test_runs_ending_together_each_settle_their_own_thread(storage: Storage) -> None:
    # On PostgreSQL their ends share one statement (storage/together.py); every run and
    # thread must still end as its own finish said, and a temporary one be removed.
    kept = {f"t{n}": (await _enqueue(storage, f"t{n}"))[0] for n in range(6)}
    gone_thread = str(uuid.uuid4())
    gone, _ = await _enqueue(storage, gone_thread, temporary=True)
    for _ in range(7):
        await _claim_within(storage, "w")
    statements = metrics.POSTGRES_STATEMENTS._value.get()

    async def finish(thread_id: str, run_id: str) -> None:
        n = int(thread_id[1:])
        await storage.finish_run(
            run_id, status="success" if n % 2 else "error",
            thread_status="idle" if n % 2 else "error", values={"n": n},
            interrupts={"task": [{"value": n}]} if n == 4 else {},
            error=None if n % 2 else {"error": "E", "message": str(n)}, delete_thread=False,
        )  # fmt: skip

    await asyncio.gather(
        *(finish(thread_id, run_id) for thread_id, run_id in kept.items()),
        storage.finish_run(
            gone, status="success", thread_status="idle", values={}, interrupts={},
            error=None, delete_thread=True,
        ),
    )  # fmt: skip
    statements = metrics.POSTGRES_STATEMENTS._value.get() - statements
    for thread_id, run_id in kept.items():
        n = int(thread_id[1:])
        assert (await storage.get_run(thread_id, run_id))["status"] == (
            "success" if n % 2 else "error"
        )
        thread = await storage.get_thread(thread_id)
        assert (thread["status"], thread["values"]) == ("idle" if n % 2 else "error", {"n": n})
        assert thread["interrupts"] == ({"task": [{"value": n}]} if n == 4 else {})
        assert thread["error"] == (None if n % 2 else {"error": "E", "message": str(n)})
    with pytest.raises(NotFound):
        await storage.get_thread(gone_thread)
    if isinstance(storage, PostgresStorage):  # seven ends, far fewer statements
        assert statements <= 2


async def test_postgres_refusing_one_runs_end_fails_that_finish_alone(
    make_storage: MakeStorage,
) -> None:
    # PostgreSQL's jsonb refuses the NUL character; SQLite stores it. Ending together with
    # others, a run whose end cannot be stored fails its own finish only.
    storage = await make_storage()
    runs = {f"t{n}": (await _enqueue(storage, f"t{n}"))[0] for n in range(3)}
    for _ in range(3):
        await _claim_within(storage, "w")
    values = {t: {"text": "nul\x00" if t == "t1" else t} for t in runs}
    outcomes = await asyncio.gather(
        *(_finish(storage, run_id, values[t]) for t, run_id in runs.items()),
        return_exceptions=True,
    )
    refused = isinstance(storage, PostgresStorage)
    assert [isinstance(o, Exception) for o in outcomes] == [False, refused, False]
    for thread_id in ("t0", "t2"):
        assert (await storage.get_run(thread_id, runs[thread_id]))["status"] == "success"
        assert (await storage.get_thread(thread_id))["values"] == {"text": thread_id}
    expected = "running" if refused else "success"
    assert (await storage.get_run("t1", runs["t1"]))["status"] == expected


async def test_postgres_a_runs_end_waits_for_no_connection_of_the_pool(pg_database: str) -> None:
    # Under load every connection of the pool can be busy with the checkpoint writes of the
    # process's other runs; a run's end, which its stream's close waits for, must not queue
    # behind them (connections kept apart for ends).
    storage = PostgresStorage(await _fresh_schema(pg_database), pool_min=1, pool_max=2)
    await storage.setup()
    try:
        run_id, _ = await _enqueue(storage, "t1")
        await _claim_within(storage, "w")
        pool = storage.connector.pool
        async with pool.connection(), pool.connection():  # every connection of the pool
            await asyncio.wait_for(_finish(storage, run_id, {"done": True}), 5)
        assert (await storage.get_run("t1", run_id))["status"] == "success"
        assert (await storage.get_thread("t1"))["values"] == {"done": True}
    finally:
        await storage.aclose()


async def test_cancel_pending_only_cancels_pending_runs(storage: Storage) -> None:
    running, _ = await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    assert await storage.cancel_pending(running, status="interrupted") is False
    assert (await storage.get_run("t1", running))["status"] == "running"

    queued, _ = await _enqueue(storage, "t2")
    assert await storage.cancel_pending(queued, status="interrupted") is True
    assert (await storage.get_run("t2", queued))["status"] == "interrupted"
    assert (await storage.get_thread("t2"))["status"] == "idle"
    assert await storage.cancel_pending(queued, status="interrupted") is False
    assert await storage.claim_run("w", 30) is None
    assert await storage.cancel_pending("no-such-run", status="interrupted") is False


async def test_cancelled_head_of_queue_lets_the_next_run_go(storage: Storage) -> None:
    head, _ = await _enqueue(storage, "t1", kwargs={"after_seconds": 3600})
    nxt, _ = await _enqueue(storage, "t1")
    assert await storage.claim_run("w", 30) is None
    assert await storage.cancel_pending(head, status="interrupted") is True
    assert (await storage.get_thread("t1"))["status"] == "busy"
    assert (await _claim_within(storage, "w"))["run"]["run_id"] == nxt


async def test_calls_made_at_once_succeed_and_fail_each_on_its_own(storage: Storage) -> None:
    """Many writes at once (SQLite commits them as one group): a failing one leaves nothing
    behind and takes no other with it, and each caller gets its own answer."""
    await storage.create_thread("busy", metadata={}, if_exists="raise")
    await _enqueue(storage, "busy")

    async def refused_after_a_write(i: int) -> tuple[str, list[str]]:
        # The thread is inserted, then fails the caller's owner filter: NotFound, and the
        # inserted thread must go with the rest of the call.
        return await _enqueue(storage, f"missing-{i}", filters={"owner": "someone else"})

    calls: list[Awaitable[Any]] = []
    for i in range(10):
        calls.append(_enqueue(storage, f"fresh-{i}"))
        calls.append(refused_after_a_write(i))
        calls.append(_enqueue(storage, "busy", strategy="reject"))
        calls.append(storage.get_thread("busy"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i in range(10):
        created, unknown, rejected, read = results[4 * i : 4 * i + 4]
        assert isinstance(created, tuple), created
        assert (await storage.get_run(f"fresh-{i}", created[0]))["status"] == "pending"
        assert isinstance(unknown, NotFound), unknown
        with pytest.raises(NotFound):
            await storage.get_thread(f"missing-{i}")
        assert isinstance(rejected, ThreadBusy), rejected
        assert isinstance(read, dict) and read["thread_id"] == "busy"
    assert len(await storage.list_runs("busy", limit=50, offset=0, status=None)) == 1


# --- many processes --------------------------------------------------------------------------
async def test_concurrent_claims_hand_out_each_run_once(make_storage: MakeStorage) -> None:
    first, second = await make_storage(), await make_storage()
    queued = [(await _enqueue(first))[0] for _ in range(20)]
    claimed: list[str] = []

    async def claimer(storage: Storage, worker: str) -> None:
        while (claim := await storage.claim_run(worker, 30)) is not None:
            claimed.append(claim["run"]["run_id"])

    await asyncio.gather(*(claimer(s, f"w{i}") for i, s in enumerate([first, second] * 4)))
    assert sorted(claimed) == sorted(queued)


async def test_concurrent_claims_start_one_run_per_thread(make_storage: MakeStorage) -> None:
    first, second = await make_storage(), await make_storage()
    queued = [(await _enqueue(first, "t1"))[0] for _ in range(6)]
    for expected in queued:
        results = await asyncio.gather(
            *(s.claim_run(f"w{i}", 30) for i, s in enumerate([first, second] * 4))
        )
        claims = [c for c in results if c is not None]
        assert [c["run"]["run_id"] for c in claims] == [expected]
        await _finish(second, expected)


async def test_concurrent_batched_claims_start_each_thread_s_head_once(
    make_storage: MakeStorage,
) -> None:
    first, second = await make_storage(), await make_storage()
    threads = [f"t{n}" for n in range(5)]
    queued = {t: [(await _enqueue(first, t))[0] for _ in range(3)] for t in threads}
    for turn in range(3):
        batches = await asyncio.gather(
            *(s.claim_runs(f"w{i}", 30, 4) for i, s in enumerate([first, second] * 4))
        )
        claimed = [
            c["run"]["run_id"] for b in batches for c in b if not isinstance(c, UnreadableRun)
        ]
        # Each thread's next run, once, whoever claimed it: never two runs of one thread.
        assert sorted(claimed) == sorted(queued[t][turn] for t in threads)
        for run_id in claimed:
            await _finish(second, run_id)


async def test_concurrent_reject_lets_one_run_in(make_storage: MakeStorage) -> None:
    first, second = await make_storage(), await make_storage()
    await first.create_thread("t1", metadata={}, if_exists="raise")
    results = await asyncio.gather(
        *(_enqueue(s, "t1", strategy="reject") for s in [first, second] * 5),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ThreadBusy) for r in results if isinstance(r, BaseException))
    assert len(await second.list_runs("t1", limit=20, offset=0, status=None)) == 1


# --- what the two backends once did differently ----------------------------------------------
async def test_equal_sort_keys_are_ordered_by_id(storage: Storage) -> None:
    """Pages stay stable: rows whose sort keys are equal come in id order, the same direction."""
    now = utcnow()
    for assistant_id in ("a3", "a1", "a5", "a2", "a4"):
        same = _assistant(assistant_id, created_at=now, updated_at=now)
        await storage.put_assistant(same, if_exists="raise")
        await storage.create_thread(f"t{assistant_id[1]}", metadata={}, if_exists="raise")

    async def assistant_page(order: str, offset: int, limit: int = 1) -> list[str]:
        found, _ = await storage.search_assistants(
            graph_id=None, name=None, metadata=None, limit=limit, offset=offset,
            sort_by="created_at", sort_order=order,
        )  # fmt: skip
        return [a["assistant_id"] for a in found]

    async def thread_page(order: str, offset: int, limit: int = 1) -> list[str]:
        found, _ = await storage.search_threads(
            ids=None, metadata=None, values=None, status=None, limit=limit, offset=offset,
            sort_by="status", sort_order=order,
        )  # fmt: skip
        return [t["thread_id"] for t in found]

    for page, prefix in ((assistant_page, "a"), (thread_page, "t")):
        ascending = [f"{prefix}{i}" for i in range(1, 6)]
        assert await page("asc", 0, 10) == ascending
        assert await page("desc", 0, 10) == ascending[::-1]
        assert [(await page("desc", i))[0] for i in range(5)] == ascending[::-1]


async def test_concurrent_thread_patches_lose_nothing(make_storage: MakeStorage) -> None:
    first, second = await make_storage(), await make_storage()
    await first.create_thread("t1", metadata={"base": 0}, if_exists="raise")
    await asyncio.gather(
        *(s.patch_thread("t1", {f"k{i}": i}) for i, s in enumerate([first, second] * 5))
    )
    expected = {"base": 0, **{f"k{i}": i for i in range(10)}}
    assert (await first.get_thread("t1"))["metadata"] == expected


async def test_concurrent_assistant_patches_lose_nothing(make_storage: MakeStorage) -> None:
    first, second = await make_storage(), await make_storage()
    await first.put_assistant(_assistant("a1", metadata={"base": 0}), if_exists="raise")
    await asyncio.gather(
        *(
            s.patch_assistant("a1", {"metadata": {f"k{i}": i}})
            for i, s in enumerate([first, second] * 5)
        )
    )
    patched = await first.get_assistant("a1")
    assert patched["metadata"] == {"base": 0, **{f"k{i}": i for i in range(10)}}
    assert patched["version"] == 11
    versions = await first.assistant_versions("a1", metadata=None, limit=20, offset=0)
    assert [v["version"] for v in versions] == list(range(11, 0, -1))


async def test_concurrent_copies_to_one_id_copy_once(storage: Storage) -> None:
    await storage.create_thread("t1", metadata={"k": "v"}, if_exists="raise")
    await _graph_run(storage, "t1", "r1", "one")
    results = await asyncio.gather(
        *(storage.copy_thread("t1", "t2") for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert await _graph_items(storage, "t2") == ["one", "echo"]


async def test_concurrent_deletes_of_a_run_delete_it_once(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    await _finish(storage, run_id)
    results = await asyncio.gather(
        *(storage.delete_run("t1", run_id) for _ in range(5)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, NotFound) for r in results if r is not None)


async def test_next_due_survives_a_due_time_beyond_datetime(storage: Storage) -> None:
    """A run queued with an after_seconds too large for a datetime (stored before the API
    checked it) must not stop the worker from asking when the next run falls due."""
    await _enqueue(storage, "t1", kwargs={"after_seconds": 1e12})
    due = await storage.next_due()
    assert due is not None and due.tzinfo is not None
    assert due >= datetime(9999, 1, 1, tzinfo=UTC)


# --- sqlite only -----------------------------------------------------------------------------
async def test_sqlite_an_unreadable_run_never_blocks_the_queue(tmp_path: Path) -> None:
    """Only SQLite can hold a row that is not JSON: claiming it says which run it is (for the
    worker to end as error), and the claims after it go on to the next run."""
    path = tmp_path / "agentstream.sqlite"
    storage = SqliteStorage(path)
    await storage.setup()
    try:
        broken, _ = await _enqueue(storage, "t1")
        fine, _ = await _enqueue(storage, "t2")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("UPDATE runs SET kwargs = '{broken' WHERE run_id = ?", (broken,))
        db.close()
        with pytest.raises(UnreadableRun) as caught:
            await storage.claim_run("w", 30)
        assert caught.value.run_id == broken
        claim = await storage.claim_run("w", 30)
        assert claim is not None and claim["run"]["run_id"] == fine
    finally:
        await storage.aclose()


def _where(seen: list[tuple[int | None, bool]], release: threading.Event) -> Any:
    """A verb recording the thread it runs on and whether `release` was set by then."""
    seen.append((threading.get_ident(), release.is_set()))
    rows, _ = yield "SELECT 1 AS one", {}
    return rows


async def _until(check: Callable[[], bool]) -> None:
    async def turns() -> None:
        # Looked at each turn of the loop: what it waits for sets no event.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0)

    await asyncio.wait_for(turns(), 30)  # a bound for a failure, never a pace


@contextlib.asynccontextmanager
async def _shared_connection(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, threading.Event]]:
    """A SQLite storage's connector, its aiosqlite connection (the saver's too), and the event
    that releases a call held on that connection's thread: set at the end, failed or not."""
    storage = SqliteStorage(tmp_path / "agentstream.sqlite")
    await storage.setup()
    release = threading.Event()
    try:
        connector: Any = storage.c
        yield connector, connector._db, release
    finally:
        release.set()
        await storage.aclose()


async def _held(db: Any, release: threading.Event) -> asyncio.Future[Any]:
    """A call on the connection's thread, as a saver's would be, running until `release`."""
    held = asyncio.ensure_future(db._execute(release.wait))
    await _until(lambda: not db.idle())
    return held


async def _written_while_held(
    connector: Any, db: Any, release: threading.Event
) -> list[tuple[int | None, bool]]:
    """Where a verb written while the connection's thread holds a call until `release` ran:
    `release` is set once the verb's batch is handed to the thread (or, wrongly, done)."""
    seen: list[tuple[int | None, bool]] = []
    verb = asyncio.ensure_future(connector.write(_where(seen, release)))
    handed = db.handed
    await _until(lambda: db.handed > handed or verb.done())
    release.set()
    assert await verb == [(1,)]
    return seen


async def test_sqlite_verbs_run_on_the_loop_while_the_connections_thread_is_idle(
    tmp_path: Path,
) -> None:
    """The connection is shared with LangGraph's checkpoint saver, whose calls run on
    aiosqlite's thread: a batch of verbs runs on the loop only while that thread has nothing
    to do, and otherwise on the thread, after what it was given, never beside it."""
    async with _shared_connection(tmp_path) as (connector, db, release):
        seen: list[tuple[int | None, bool]] = []
        assert await connector.write(_where(seen, release)) == [(1,)]
        assert seen == [(threading.get_ident(), False)]  # the loop's own thread

        held = await _held(db, release)
        seen = await _written_while_held(connector, db, release)
        await held
        assert seen == [(db._thread.ident, True)]  # on the thread, once it was free


async def test_sqlite_a_cancelled_call_keeps_the_connection_from_the_loop_until_it_ran(
    tmp_path: Path,
) -> None:
    # A saver's call cancelled (its run was) goes on running on aiosqlite's thread: the
    # loop's next batch must wait for it there, not run beside it.
    async with _shared_connection(tmp_path) as (connector, db, release):
        held = await _held(db, release)
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held
        assert not db.idle()
        seen = await _written_while_held(connector, db, release)
        assert seen == [(db._thread.ident, True)]
        assert db.idle()


async def test_sqlite_the_log_is_checkpointed_on_the_connections_thread(tmp_path: Path) -> None:
    """SQLite's own checkpoints are off (they would run in a commit, some on the loop); ours
    run on aiosqlite's thread as the rows written add up, and keep the log short."""
    path = tmp_path / "agentstream.sqlite"
    storage = SqliteStorage(path)
    await storage.setup()
    try:
        connector: Any = storage.c
        db = connector._db
        checkpoints_on: list[int | None] = []
        traced = db._execute  # every call its thread runs, the checkpoints' among them

        async def execute(fn: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(fn, "__name__", "") == "_checkpoint_now":
                checkpoints_on.append(db._thread.ident)
            return await traced(fn, *args, **kwargs)

        db._execute = execute
        for _ in range(5000):  # each a thread and a run, in a commit of its own
            await _enqueue(storage)
            if len(checkpoints_on) == 3:
                break
        await _until(lambda: connector._checkpointing is None)
        assert checkpoints_on == [db._thread.ident] * 3
        # What a commit leaves in the log is checkpointed: nothing past the last checkpoint's
        # rows and the next one's.
        left = sqlite3.connect(path).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert left[1] < 2 * 1000, left
    finally:
        await storage.aclose()


def _sqlite_migrated_to(path: Path, version: int) -> sqlite3.Connection:
    """A database at `path` with the SQLite schema's first `version` migrations, as an older
    release left it; open, in autocommit."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in enumerate(SQLITE_MIGRATIONS[:version], start=1):
        db.executescript(f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;")
    return db


async def test_sqlite_runs_stored_before_run_numbers_get_theirs_in_order(
    tmp_path: Path,
) -> None:
    """A database from before runs had numbers: its runs are numbered in the order they were
    created, each thread apart, and the next run of a thread goes on from there."""
    path = tmp_path / "agentstream.sqlite"
    db = _sqlite_migrated_to(path, 3)
    at = "2026-01-01T00:00:00+00:00"
    for thread_id in ("ta", "tb"):
        db.execute(
            "INSERT INTO threads VALUES (?, ?, ?, ?, '{}', 'idle', '{}', NULL, '{}', NULL)",
            (thread_id, at, at, at),
        )
    for run_id, thread_id in [("a1", "ta"), ("b1", "tb"), ("a2", "ta"), ("a3", "ta")]:
        db.execute(
            "INSERT INTO runs (run_id, thread_id, assistant_id, metadata, status, kwargs, "
            "multitask_strategy, created_at, updated_at) "
            "VALUES (?, ?, 'asst', '{}', 'success', '{}', 'enqueue', ?, ?)",
            (run_id, thread_id, at, at),
        )
    db.close()
    storage = SqliteStorage(path)
    await storage.setup()
    try:
        assert await storage.run_numbers("ta", limit=10) == [(3, "a3"), (2, "a2"), (1, "a1")]
        assert await storage.run_numbers("tb", limit=10) == [(1, "b1")]
        await storage.delete_run("ta", "a3")
        later, _ = await _enqueue(storage, "ta")
        assert await storage.run_numbers("ta", limit=1) == [(4, later)]
    finally:
        await storage.aclose()


def test_sqlite_timestamps_are_written_as_isoformat_writes_them() -> None:
    """The stored text is what ordering and filters compare: any datetime, microseconds or
    none, UTC or another offset or none, reads as `isoformat()` would write it."""
    from datetime import UTC, datetime, timedelta, timezone

    from agentstream.storage.sqlite import _iso

    moments = [
        datetime(2026, 12, 6, 18, 29, 10, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 18, 29, 10, tzinfo=UTC),
        datetime(2026, 12, 6, 18, 29, 10, 5, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 6, 18, 29, 10, 120000, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 12, 6, 18, 29, 10, 120000),
        datetime.fromisoformat("2026-12-06T18:29:10.000001+00:00"),
    ]
    for moment in moments:
        assert _iso(moment) == moment.isoformat()


async def test_sqlite_thread_search_page_walks_an_index(tmp_path: Path) -> None:
    """The default order (newest first) reads threads off an index and stops at the page's
    end: without it every search sorted all threads (benchmarks.scale, many threads)."""
    path = tmp_path / "agentstream.sqlite"
    storage = SqliteStorage(path)
    await storage.setup()
    await storage.aclose()
    db = sqlite3.connect(path)
    try:
        sql = DIALECT["search_threads"].format(where="1", order="created_at DESC, thread_id DESC")
        plan = db.execute(f"EXPLAIN QUERY PLAN {sql}", {"limit": 10, "offset": 0}).fetchall()
    finally:
        db.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "threads_created" in details and "TEMP B-TREE" not in details, details


async def test_sqlite_thread_search_by_metadata_reads_an_index(tmp_path: Path) -> None:
    """A search by metadata (a user's threads; every search under an owner filter) finds and
    counts its threads through thread_keys' index, not by reading every thread's JSON (101 ms
    at 100,000 threads, benchmarks.scale). A database from before the index gets its keys."""
    path = tmp_path / "agentstream.sqlite"
    db = _sqlite_migrated_to(path, 5)
    at = "2026-01-01T00:00:00+00:00"
    for n in range(20):
        metadata = orjson.dumps({"user": f"u{n % 4}", "nested": {"user": "u0"}}).decode()
        db.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, "
            "status, config, interrupts) VALUES (?, ?, ?, ?, ?, 'idle', '{}', '{}')",
            (f"t{n:02}", at, at, at, metadata),
        )
    db.close()
    storage = SqliteStorage(path)
    await storage.setup()
    try:
        found, total = await storage.search_threads(
            ids=None, metadata={"user": "u1"}, values=None, status=None, limit=2, offset=0,
            sort_by="thread_id", sort_order="asc",
        )  # fmt: skip
        assert ([t["thread_id"] for t in found], total) == (["t01", "t05"], 5)
    finally:
        await storage.aclose()
    db = sqlite3.connect(path)
    try:
        p: dict[str, Any] = {}
        where = match(DIALECT, "metadata", {"user": "u1"}, p, thread=True)
        plan = db.execute(
            f"EXPLAIN QUERY PLAN {DIALECT['count_threads'].format(where=where)}", p
        ).fetchall()
        rows = db.execute("SELECT count(*) FROM thread_keys").fetchone()[0]
    finally:
        db.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "thread_keys_page" in details and "SCAN threads" not in details, details
    assert "json_extract" not in where
    assert rows == 20  # the scalar keys only: no row for an object


async def test_sqlite_thread_search_by_one_key_reads_its_page_off_the_index(
    tmp_path: Path,
) -> None:
    """A search by one metadata key in creation order (a user's newest threads) reads its page
    off thread_keys' index, stopping at the page's end, and counts off it (a user with 1,000
    threads of 100,000: 3.6 -> 0.3 ms); pages and totals as a search without the index gives
    them. A database from before the index gets its keys' creation times."""
    path = tmp_path / "agentstream.sqlite"
    db = _sqlite_migrated_to(path, 6)
    made = []
    for n in range(30):
        at = f"2026-01-01T00:00:{n:02}+00:00"
        db.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, "
            "status, config, interrupts) VALUES (?, ?, ?, ?, ?, 'idle', '{}', '{}')",
            (f"t{n:02}", at, at, at, orjson.dumps({"user": f"u{n % 3}"}).decode()),
        )
        made.append((at, f"t{n:02}", f"u{n % 3}"))
    db.close()
    storage = SqliteStorage(path)
    await storage.setup()

    async def page(order: str, offset: int, **search: Any) -> tuple[list[str], int]:
        args = dict(ids=None, metadata=None, values=None, status=None, limit=4, offset=offset)
        found, total = await storage.search_threads(
            **{**args, **search}, sort_by="created_at", sort_order=order
        )
        return [t["thread_id"] for t in found], total

    try:
        mine = sorted((at, t) for at, t, user in made if user == "u1")
        for order, ordered in (("desc", mine[::-1]), ("asc", mine)):
            for offset in (0, 4, 8):
                expected = [t for _, t in ordered[offset : offset + 4]]
                assert await page(order, offset, metadata={"user": "u1"}) == (expected, 10)
        by_filter = await page("desc", 0, filters={"user": {"$eq": "u1"}})
        assert by_filter == ([t for _, t in mine[::-1][:4]], 10)
        # A thread made since, and one whose metadata changed to the key, in their places.
        await storage.create_thread("t-new", metadata={"user": "u1"}, if_exists="raise")
        await storage.patch_thread("t00", {"user": "u1"})
        newest, total = await page("desc", 0, metadata={"user": "u1"})
        oldest, _ = await page("asc", 0, metadata={"user": "u1"})
        assert (newest[0], oldest[0], total) == ("t-new", "t00", 12)
    finally:
        await storage.aclose()
    db = sqlite3.connect(path)
    try:
        p: dict[str, Any] = {"limit": 4, "offset": 0}
        assert DIALECT.key_rows is not None
        rows = DIALECT.key_rows("user", "u1", binder(DIALECT, p))
        sql = DIALECT["search_threads_by_key"].format(key=rows, order="created_at DESC")
        plan = " ".join(str(r[-1]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", p))
        backfilled = db.execute("SELECT count(*) FROM thread_keys WHERE created_at IS NULL")
        missing = backfilled.fetchone()[0]
    finally:
        db.close()
    # The page read off the index in order: the only sort is of the page's own rows.
    assert "COVERING INDEX thread_keys_page" in plan and plan.count("TEMP B-TREE") == 1, plan
    assert missing == 0


async def test_sqlite_in_memory_keeps_checkpoints_with_the_rows() -> None:
    storage = SqliteStorage(":memory:")
    await storage.setup()
    try:
        await storage.create_thread("t1", metadata={}, if_exists="raise")
        await _graph_run(storage, "t1", "r1", "one")
        await storage.copy_thread("t1", "t2")
        assert await _graph_items(storage, "t2") == ["one", "echo"]
        await storage.delete_thread("t1")
        assert await _graph_items(storage, "t1") == []
    finally:
        await storage.aclose()


# --- postgres only ---------------------------------------------------------------------------
async def test_postgres_setup_from_many_processes_at_once(pg_database: str) -> None:
    uri = await _fresh_schema(pg_database)
    storages = [PostgresStorage(uri, pool_min=1, pool_max=2) for _ in range(6)]
    try:
        await asyncio.gather(*(s.setup() for s in storages))
        await storages[0].create_thread("t1", metadata={}, if_exists="raise")
        assert (await storages[-1].get_thread("t1"))["thread_id"] == "t1"
    finally:
        for s in storages:
            await s.aclose()
    async with await psycopg.AsyncConnection.connect(uri) as conn:
        cur = await conn.execute("SELECT version FROM schema_version")
        assert await cur.fetchall() == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


async def test_postgres_tells_listeners_of_each_run_it_queues(pg_database: str) -> None:
    """A create that queues a run notifies at commit (with the run's id), one that starts it
    for its own worker does not; queued_notices calls back on each, and once on listening."""
    uri = await _fresh_schema(pg_database)
    storage = PostgresStorage(uri, pool_min=1, pool_max=2)
    await storage.setup()
    try:
        async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as listener:
            await listener.execute(f"LISTEN {QUEUED_CHANNEL}")
            run = new_run(str(uuid.uuid4()), "t1", "asst", {}, {}, "enqueue")
            started = await storage.create_run(
                NewRun(run, False, "create", None, {}, None, ("w", 30))
            )
            assert started.started is not None and not started.notified
            queued_id, _ = await _enqueue(storage, "t2")
            async with contextlib.aclosing(listener.notifies()) as notices:
                first = await asyncio.wait_for(anext(notices), 5)
            assert first.payload == queued_id  # the started run's create told nobody
        heard = asyncio.Event()
        async with storage.queued_notices(heard.set):
            await asyncio.wait_for(heard.wait(), 5)  # on listening: what was queued meanwhile
            heard.clear()
            await _enqueue(storage, "t3")
            await asyncio.wait_for(heard.wait(), 5)
    finally:
        await storage.aclose()


async def test_postgres_tells_listeners_of_the_run_a_finished_one_leaves_waiting(
    pg_database: str,
) -> None:
    """A run's end that leaves its thread's next run claimable notifies at commit with that
    run's id (its worker then wakes nobody: finish_run says so); an end with nothing waiting,
    or whose thread goes, notifies nobody."""
    uri = await _fresh_schema(pg_database)
    storage = PostgresStorage(uri, pool_min=1, pool_max=2)
    await storage.setup()
    try:
        first, _ = await _enqueue(storage, "t1")
        waiting, _ = await _enqueue(storage, "t1")
        alone, _ = await _enqueue(storage, "t2")
        gone, _ = await _enqueue(storage, str(uuid.uuid4()), temporary=True)
        for _ in range(3):
            await _claim_within(storage, "w")
        async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as listener:
            await listener.execute(f"LISTEN {QUEUED_CHANNEL}")
            for run_id in (alone, gone):
                told = await storage.finish_run(
                    run_id, status="success", thread_status="idle", values={}, interrupts={},
                    error=None, delete_thread=run_id == gone,
                )  # fmt: skip
                assert told is True
            assert await _finish(storage, first) is True
            async with contextlib.aclosing(listener.notifies()) as notices:
                heard = await asyncio.wait_for(anext(notices), 5)
            assert heard.payload == waiting  # the first notice: the two ends before told nobody
    finally:
        await storage.aclose()


async def test_postgres_tells_listeners_of_a_runs_end_with_its_notice(pg_database: str) -> None:
    """A finish_run given a notice has it told to ended_notices' listeners at its commit: alone,
    and as one of several ends in one statement; an end without one tells nobody."""
    uri = await _fresh_schema(pg_database)
    storage = PostgresStorage(uri, pool_min=1, pool_max=2)
    await storage.setup()
    heard: list[str] = []
    try:
        runs = [(await _enqueue(storage, f"t{n}"))[0] for n in range(9)]
        for _ in runs:
            await _claim_within(storage, "w")
        async with storage.ended_notices(heard.append):
            await _listening(uri, ENDED_CHANNEL)

            async def finish(run_id: str, notice: str | None) -> None:
                await storage.finish_run(
                    run_id, status="success", thread_status="idle", values={}, interrupts={},
                    error=None, delete_thread=False, notice=notice,
                )  # fmt: skip

            await finish(runs[0], None)
            await finish(runs[1], f"one {runs[1]}")
            await _until(lambda: len(heard) >= 1)
            await asyncio.gather(*(finish(run_id, f"together {run_id}") for run_id in runs[2:]))
            await _until(lambda: len(heard) >= 8)
        assert heard[0] == f"one {runs[1]}", "the end without a notice told nobody"
        assert sorted(heard[1:]) == sorted(f"together {run_id}" for run_id in runs[2:])
        for run_id in runs:
            assert (await storage.get_run(None, run_id))["status"] == "success"
    finally:
        await storage.aclose()


async def _listening(uri: str, channel: str) -> None:
    """Returns once a connection LISTENs to channel (its last statement, now idle)."""
    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as conn:
        for _ in range(500):
            cur = await conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'idle' "
                "AND datname = current_database()",
                (f"LISTEN {channel}",),
            )
            if await cur.fetchone() is not None:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"nobody came to listen to {channel}")


async def test_finish_says_whether_the_backend_woke_the_workers(storage: Storage) -> None:
    run_id, _ = await _enqueue(storage, "t1")
    await _claim_within(storage, "w")
    told = await _finish(storage, run_id)
    assert told is isinstance(storage, PostgresStorage)


async def test_postgres_runs_do_not_share_a_saver_lock(pg_database: str) -> None:
    async with _postgres(pg_database) as storage:
        await _graph_run(storage, "t1", "r1", "one")
        async with storage.checkpointer() as busy, storage.checkpointer() as other:
            async with busy.lock:  # type: ignore[attr-defined]
                found = await asyncio.wait_for(
                    other.aget_tuple({"configurable": {"thread_id": "t1"}}), 5
                )
        assert found is not None


class _WaitingSerde(JsonPlusSerializer):
    """Serialises as LangGraph does, each value longer than HEAVY_SECONDS on the wall clock
    but not on the CPU."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        time.sleep(HEAVY_SECONDS * 1.2)  # as a process the machine left unscheduled
        return super().dumps_typed(obj)


class _SlowSerde(JsonPlusSerializer):
    """Serialises as LangGraph does, each value taking more than HEAVY_SECONDS of CPU."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        done = time.thread_time() + HEAVY_SECONDS * 1.2
        while time.thread_time() < done:  # the work of a heavy state: CPU, not a wait
            pass
        return super().dumps_typed(obj)


async def test_postgres_saver_serialises_without_a_thread(pg_database: str) -> None:
    # A step's checkpoint and writes, and a read's pending writes, are (de)serialised on the
    # loop (storage/pgsaver.py); LangGraph's own saver, run the same way, hops to a thread for
    # each, which is what shows that the count below can see a hop. A run whose state takes
    # long to serialise holds the loop once: its saver hops from then on.
    storage = PostgresStorage(await _fresh_schema(pg_database), pool_min=1, pool_max=4)
    await storage.setup()
    loop = asyncio.get_running_loop()
    hops: list[Any] = []
    run_in_executor = loop.run_in_executor

    def counted(executor: Any, func: Any, *args: Any) -> Any:
        target = getattr(func, "args", (func,))[0]  # to_thread's partial(context.run, target)
        hops.append(getattr(target, "__self__", None))
        return run_in_executor(executor, func, *args)

    async def steps(saver: Any, thread_id: str) -> list[str]:
        graph = _graph_builder().compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": thread_id}}
        await graph.ainvoke({"items": ["one"]}, config)
        await graph.ainvoke({"items": ["two"]}, config)
        return list((await graph.aget_state(config)).values["items"])

    try:
        await _graph_run(storage, "t0", "r0", "warm")  # the pool's connection made
        loop.run_in_executor = counted  # type: ignore[method-assign]
        async with storage.checkpointer() as saver:
            assert await steps(saver, "t1") == ["one", "echo", "two", "echo"]
        assert [hop for hop in hops if isinstance(hop, AsyncPostgresSaver)] == []
        assert await steps(AsyncPostgresSaver(storage.pool), "t2") == ["one", "echo", "two", "echo"]
        library = len([hop for hop in hops if isinstance(hop, AsyncPostgresSaver)])
        assert library >= 4
        hops.clear()
        heavy = LoopSaver(storage.pool, serde=_SlowSerde())
        assert await steps(heavy, "t3") == ["one", "echo", "two", "echo"]
        assert heavy.heavy
        assert [hop for hop in hops if isinstance(hop, AsyncPostgresSaver)] == [heavy] * (
            library - 1
        )
        # Time spent off the CPU (the process unscheduled on a loaded machine; here, a sleep)
        # is not a heavy state: that saver stays on the loop.
        hops.clear()
        waited = LoopSaver(storage.pool, serde=_WaitingSerde())
        assert await steps(waited, "t4") == ["one", "echo", "two", "echo"]
        assert not waited.heavy
        assert [hop for hop in hops if isinstance(hop, AsyncPostgresSaver)] == []
    finally:
        loop.run_in_executor = run_in_executor  # type: ignore[method-assign]
        await storage.aclose()


def _chain_builder() -> StateGraph[_State]:
    """Three nodes in a row, each adding its name: three tasks' writes, four checkpoints."""
    builder = StateGraph(_State)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda state, name=name: {"items": [name]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    return builder


async def _stored_rows(uri: str, thread_id: str) -> tuple[list[Any], list[Any]]:
    """A thread's checkpoint writes and blobs as stored, but for the ids a run makes afresh:
    (step, task path, idx, channel, type, blob) and (channel, version number, type, blob),
    sorted."""
    async with await psycopg.AsyncConnection.connect(uri) as conn:
        cur = await conn.execute(
            "SELECT (c.metadata->>'step')::int, w.task_path, w.idx, w.channel, w.type, w.blob"
            " FROM checkpoint_writes w JOIN checkpoints c USING (thread_id, checkpoint_ns,"
            " checkpoint_id) WHERE w.thread_id = %s ORDER BY 1, 2, 3",
            (thread_id,),
        )
        writes = [tuple(row) for row in await cur.fetchall()]
        cur = await conn.execute(  # a version is its number and a random fraction
            "SELECT channel, split_part(version, '.', 1), type, blob FROM checkpoint_blobs"
            " WHERE thread_id = %s ORDER BY 1, 2",
            (thread_id,),
        )
        return writes, [tuple(row) for row in await cur.fetchall()]


async def _stored_writes(uri: str, thread_id: str) -> list[Any]:
    """A thread's checkpoint writes as _stored_rows gives them."""
    writes, _ = await _stored_rows(uri, thread_id)
    return writes


async def test_postgres_saver_sends_a_tasks_writes_with_its_next_statement(
    pg_database: str,
) -> None:
    # LoopSaver holds a task's writes for the checkpoint after them (storage/pgsaver.py): the
    # same rows as LangGraph's own saver stores, in fewer trips to the pool.
    async with _postgres(pg_database) as storage:
        uri = storage.uri

        async def run(saver: Any, thread_id: str) -> tuple[list[Any], int]:
            graph = _chain_builder().compile(checkpointer=saver)
            config: Any = {"configurable": {"thread_id": thread_id}}
            before = storage.pool.get_stats()["requests_num"]
            await graph.ainvoke({"items": ["start"]}, config)
            trips = storage.pool.get_stats()["requests_num"] - before
            history = [s.values async for s in graph.aget_state_history(config)]
            return history, trips

        await _graph_run(storage, "t0", "r0", "warm")
        async with storage.checkpointer() as saver:
            ours, our_trips = await run(saver, "t1")
        library, library_trips = await run(AsyncPostgresSaver(storage.pool), "t2")
        assert ours == library
        assert ours[0] == {"items": ["start", "a", "b", "c"]}
        assert await _stored_writes(uri, "t1") == await _stored_writes(uri, "t2")
        assert len(await _stored_writes(uri, "t1")) >= 6  # the input's and each node's
        # The three nodes' writes (and the input's) went with the checkpoints after them.
        assert our_trips <= library_trips - 3


def _fan_builder() -> StateGraph[_State]:
    """Three nodes at once, then one after them: a step of three tasks' writes together."""
    builder = StateGraph(_State)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda state, name=name: {"items": [name]})
        builder.add_edge(START, name)
    builder.add_node("d", lambda state: {"items": ["d"]})
    builder.add_edge(["a", "b", "c"], "d")
    return builder


async def test_postgres_saver_stores_a_tables_rows_in_one_statement(pg_database: str) -> None:
    # LoopSaver sends the rows the library inserts one statement each (a task's writes, a
    # checkpoint's blobs) as one statement a table (storage/pgsaver.py): the same rows, in
    # fewer statements.
    async with _postgres(pg_database) as storage:
        uri = storage.uri

        async def run(saver: Any, thread_id: str) -> tuple[list[Any], float]:
            graph = _fan_builder().compile(checkpointer=saver)
            config: Any = {"configurable": {"thread_id": thread_id}}
            before = metrics.POSTGRES_STATEMENTS._value.get()
            await graph.ainvoke({"items": ["start"]}, config)
            await graph.ainvoke({"items": ["again"]}, config)
            sent = metrics.POSTGRES_STATEMENTS._value.get() - before
            return [s.values async for s in graph.aget_state_history(config)], sent

        await _graph_run(storage, "t0", "r0", "warm")
        async with storage.checkpointer() as saver:
            ours, our_statements = await run(saver, "t1")
        library, library_statements = await run(AsyncPostgresSaver(storage.pool), "t2")
        assert ours == library
        assert sorted(ours[0]["items"][1:4]) == ["a", "b", "c"]
        our_writes, our_blobs = await _stored_rows(uri, "t1")
        assert (our_writes, our_blobs) == await _stored_rows(uri, "t2")
        assert len(our_writes) >= 10 and len(our_blobs) >= 4
        # Each step's three writes, and the input's, went with the checkpoint after them in
        # one statement, where the library sent a statement a row (psycopg's executemany).
        assert our_statements <= library_statements - 6


async def _after_one_run(saver: Any, config: Any) -> Any:
    """The checkpoint the chain graph leaves on config's thread after one run with `saver`."""
    await _chain_builder().compile(checkpointer=saver).ainvoke({"items": ["start"]}, config)
    latest = await saver.aget_tuple(config)
    assert latest is not None
    return latest


async def test_postgres_saver_rows_sent_together_keep_the_first_of_a_key_and_any_count(
    pg_database: str,
) -> None:
    # A statement a row left a row already stored as it was; one statement of them must too,
    # and rows past what one statement takes parameters for go in more.
    async with _postgres(pg_database) as storage:
        config: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        async with storage.checkpointer() as saver:
            latest = await _after_one_run(saver, config)
            await saver.aput_writes(latest.config, [("items", ["first"]), ("x", 1)], "task-1")
            await saver.aput_writes(latest.config, [("items", ["second"])], "task-1")
            again = await saver.aget_tuple(config)  # the held writes stored first, together
            assert again is not None
            mine = [(channel, value) for task, channel, value in again.pending_writes]
            assert mine.count(("items", ["first"])) == 1
            assert ("items", ["second"]) not in mine and ("x", 1) in mine
            # More rows than one statement takes parameters for: stored all the same.
            many = [(f"channel-{i}", i) for i in range(8_000)]
            await saver.aput_writes(latest.config, many, "task-2")
            again = await saver.aget_tuple(config)
            assert again is not None
            stored = sorted(v for task, _, v in again.pending_writes if task == "task-2")
            assert stored == list(range(8_000))


async def test_postgres_saver_held_writes_are_read_and_flushed(pg_database: str) -> None:
    async with _postgres(pg_database) as storage:
        uri = storage.uri
        config: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        async with storage.checkpointer() as saver:
            latest = await _after_one_run(saver, config)
            stored = len(await _stored_writes(uri, "t1"))
            await saver.aput_writes(latest.config, [("items", ["held"])], "task-1")
            assert len(await _stored_writes(uri, "t1")) == stored  # held
            # A read sees it (and stores it first).
            again = await saver.aget_tuple(config)
            assert again is not None
            assert ("task-1", "items", ["held"]) in again.pending_writes
            assert len(await _stored_writes(uri, "t1")) == stored + 1
            # An interrupt's writes go at once.
            await saver.aput_writes(latest.config, [("__interrupt__", ["asked"])], "task-2")
            assert len(await _stored_writes(uri, "t1")) == stored + 2
            # What is still held when the saver's use ends is stored then.
            await saver.aput_writes(latest.config, [("items", ["last"])], "task-3")
            assert len(await _stored_writes(uri, "t1")) == stored + 2
        assert len(await _stored_writes(uri, "t1")) == stored + 3


async def test_postgres_rollback_drops_only_its_blobs(pg_database: str) -> None:
    uri = await _fresh_schema(pg_database)
    storage = PostgresStorage(uri, pool_min=1, pool_max=2)
    await storage.setup()

    async def counts() -> tuple[int, ...]:
        async with await psycopg.AsyncConnection.connect(uri) as conn:
            found = []
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                cur = await conn.execute(f"SELECT count(*) FROM {table}")
                row = await cur.fetchone()
                found.append(row[0] if row else 0)
            return tuple(found)

    try:
        await _graph_run(storage, "t1", "r1", "one")
        after_first = await counts()
        await _graph_run(storage, "t1", "r2", "two")
        assert await counts() != after_first
        await storage.rollback_run("r2", "t1")
        assert await counts() == after_first
        assert await _graph_items(storage, "t1") == ["one", "echo"]
    finally:
        await storage.aclose()


# --- crons -----------------------------------------------------------------------------------
def _cron(cron_id: str, due: datetime, **changes: Any) -> Cron:
    now = datetime.now(UTC)
    cron = Cron(
        cron_id=cron_id, assistant_id="a", thread_id=None, user_id=None, schedule="* * * * *",
        timezone=None, end_time=None, payload={"input": 1}, metadata={"owner": "alice"},
        on_run_completed="delete", enabled=True, next_run_date=due, created_at=now,
        updated_at=now, auth_user={"identity": "alice"},
    )  # fmt: skip
    return {**cron, **changes}  # type: ignore[typeddict-item]


async def test_concurrent_cron_claims_hand_out_each_due_cron_once(
    make_storage: MakeStorage,
) -> None:
    storages = [await make_storage() for _ in range(4)]
    due = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    for i in range(20):
        await storages[0].create_cron(_cron(f"c{i:02}", due))
    await storages[0].create_cron(_cron("off", due, enabled=False))
    await storages[0].create_cron(_cron("ended", due, end_time=due.replace(minute=0)))
    await storages[0].create_cron(_cron("later", due.replace(minute=2)))
    await storages[0].put_assistant(_assistant("a"), if_exists="raise")
    following = due.replace(minute=2)

    async def drain(storage: Storage) -> list[str]:
        claimed = []
        while (fired := await storage.claim_cron(due, lambda _: following, cron_run)) is not None:
            claimed.append(fired.cron["cron_id"])
            assert fired.new is not None and fired.skipped is None
        return claimed

    batches = await asyncio.gather(*(drain(s) for s in storages))
    claimed = [cron_id for batch in batches for cron_id in batch]
    assert sorted(claimed) == [f"c{i:02}" for i in range(20)]
    # Each slot queued exactly one run, in the claim's own transaction.
    queued = await storages[3].inflight_runs(thread_id=None, run_ids=None, status="pending")
    assert len(queued) == 20 and {r["assistant_id"] for r in queued} == {"a"}
    assert await storages[1].next_cron_due() == following
    got = await storages[2].get_cron("c00", filters={"owner": "alice"})
    assert got["next_run_date"] == following and got["auth_user"] == {"identity": "alice"}
    with pytest.raises(NotFound):
        await storages[2].get_cron("c00", filters={"owner": "bob"})


async def test_a_deleted_thread_or_assistant_takes_its_crons_along(storage: Storage) -> None:
    due = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    await storage.put_assistant(_assistant("a1"), if_exists="raise")
    await storage.put_assistant(_assistant("a2"), if_exists="raise")
    await storage.create_thread("t1", metadata={}, if_exists="raise")
    await storage.create_cron(_cron("on-t1", due, assistant_id="a2", thread_id="t1"))
    await storage.create_cron(_cron("of-a1", due, assistant_id="a1"))
    await storage.create_cron(_cron("kept", due, assistant_id="a2"))
    await storage.delete_thread("t1")
    await storage.delete_assistant("a1")
    for gone in ("on-t1", "of-a1"):
        with pytest.raises(NotFound):
            await storage.get_cron(gone)
    assert (await storage.get_cron("kept"))["assistant_id"] == "a2"
    with pytest.raises(NotFound):
        await storage.delete_assistant("a1")


async def test_a_cron_slot_on_a_busy_thread_under_reject_is_skipped_and_advanced(
    storage: Storage,
) -> None:
    due = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    following = due.replace(minute=2)
    await storage.put_assistant(_assistant("a"), if_exists="raise")
    await storage.create_thread("t1", metadata={}, if_exists="raise")
    await _enqueue(storage, "t1")  # the thread is busy
    payload = {"input": 1, "multitask_strategy": "reject"}
    await storage.create_cron(_cron("c", due, thread_id="t1", payload=payload))
    fired = await storage.claim_cron(due, lambda _: following, cron_run)
    assert fired is not None and fired.new is None and fired.skipped
    assert (await storage.get_cron("c"))["next_run_date"] == following
    assert await storage.claim_cron(due, lambda _: following, cron_run) is None
    await storage.create_cron(_cron("orphan", due, assistant_id="gone"))
    fired = await storage.claim_cron(due, lambda _: following, cron_run)
    assert fired is not None and fired.new is None and "gone" in (fired.skipped or "")


async def test_crons_are_searched_counted_updated_and_deleted_under_a_filter(
    storage: Storage,
) -> None:
    due = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    await storage.create_cron(_cron("a", due, thread_id="t1"))
    await storage.create_cron(_cron("b", due, metadata={"owner": "bob"}))
    mine = {"owner": "alice"}
    found = await storage.search_crons(
        assistant_id="a", thread_id=None, enabled=None, metadata=None, limit=10, offset=0,
        sort_by="cron_id", sort_order="asc", filters=mine,
    )  # fmt: skip
    assert [c["cron_id"] for c in found] == ["a"]
    assert await storage.count_crons(assistant_id=None, thread_id="t1", metadata=None) == 1
    changed = await storage.update_cron("a", {"enabled": False, "end_time": due}, filters=mine)
    assert changed["enabled"] is False and changed["end_time"] == due
    with pytest.raises(NotFound):
        await storage.update_cron("b", {"enabled": False}, filters=mine)
    with pytest.raises(NotFound):
        await storage.delete_cron("b", filters=mine)
    await storage.delete_cron("a", filters=mine)
    assert await storage.count_crons(assistant_id=None, thread_id=None, metadata=None) == 1


async def test_postgres_runs_a_single_statement_verb_without_a_transaction_and_refuses_a_second(
    pg_database: str,
) -> None:
    """The run path's verbs of one statement (create, claim, finish, renew) run in autocommit
    on PostgreSQL; one that sent a second statement would run it outside any transaction, so
    the connector refuses it."""
    storage = PostgresStorage(await _fresh_schema(pg_database), pool_min=1, pool_max=2)
    await storage.setup()
    try:

        def one() -> Any:
            found, _ = yield "SELECT now() = statement_timestamp()", {}
            return found[0][0]

        def two() -> Any:
            yield "SELECT 1", {}
            yield "SELECT 2", {}

        # Outside a transaction block, now() is the statement's own start; inside one it is
        # the transaction's, which the statement's start follows.
        assert await storage.connector.write(one(), single=True) is True
        assert await storage.connector.write(one()) is False
        with pytest.raises(RuntimeError, match="one statement"):
            await storage.connector.write(two(), single=True)
    finally:
        await storage.aclose()
