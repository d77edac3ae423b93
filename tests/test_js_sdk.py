"""The official JS client, @langchain/langgraph-sdk (pinned in tests/js/package.json), against a
real server: each tests/js/*.mjs script prints JSON lines that these tests check."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import BYE
from tests.helpers import once_per_run

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the pinned SDK installed into tests/js/node_modules if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None, "the JS SDK tests need node and npm"

    def install() -> None:
        if not (JS / "node_modules" / "@langchain" / "langgraph-sdk").is_dir():
            command = "ci" if (JS / "package-lock.json").exists() else "install"
            subprocess.run(
                [npm, command, "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=110
            )

    once_per_run(JS, install)
    return node


async def run_script(node: str, server: ServerProcess, script: str, *args: str) -> list[Any]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS / script),
        server.url,
        *args,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    records = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    failures = [r["failed"] for r in records if isinstance(r, dict) and "failed" in r]
    assert proc.returncode == 0 and not failures, (failures, stderr.decode()[-2000:])
    return records


async def test_stream_updates(node: str, server: ServerProcess) -> None:
    parts = await run_script(node, server, "stream_updates.mjs")
    assert [p["event"] for p in parts] == ["metadata", "updates", "updates"]
    assert parts[0]["data"]["attempt"] == 1
    assert isinstance(parts[0]["data"]["run_id"], str)
    think, finish = parts[1]["data"], parts[2]["data"]
    assert list(think) == ["think"]
    assert [(m["type"], m["content"]) for m in think["think"]["messages"]] == [
        ("ai", "echo: hi there")
    ]
    assert finish == {"finish": {"messages": [BYE]}}


async def test_stream_messages_tuple_tokens_join_to_the_reply(
    node: str, server: ServerProcess
) -> None:
    parts = await run_script(node, server, "stream_messages.mjs")
    assert parts[0]["event"] == "metadata"
    assert {p["event"] for p in parts[1:]} == {"messages"}
    chunks = [p["data"] for p in parts[1:] if p["data"][0]["type"] == "AIMessageChunk"]
    assert "".join(message["content"] for message, _ in chunks) == "echo: hi there"
    assert [message["content"] for message, _ in chunks if message["content"]] == [
        "echo:", " hi", " there"
    ]  # fmt: skip
    assert {meta["langgraph_node"] for _, meta in chunks} == {"think"}
    assert len({message["id"] for message, _ in chunks}) == 1
    # The goodbye is returned whole by its node, so it arrives once as a complete message.
    whole = [p["data"] for p in parts[1:] if p["data"][0]["type"] == "ai"]
    assert [(m["id"], m["content"], meta["langgraph_node"]) for m, meta in whole] == [
        ("final-bye", "bye", "finish")
    ]


async def test_join_stream_mid_run_gets_only_later_events(node: str, server: ServerProcess) -> None:
    n = 60
    records = await run_script(node, server, "join_stream.mjs", str(n), "5")
    created = records[0]
    assert created["status"] == "pending"
    [joined] = [r["joined"] for r in records if "joined" in r]
    assert joined >= 5
    assert records[-1] == {"final_status": "success"}

    everything = [r for r in records if r.get("joiner") == "all"]
    all_ticks = [r["data"]["tick"] for r in everything if r["event"] == "custom"]
    assert all_ticks == list(range(all_ticks[0], n))
    assert everything[-1] == {
        "joiner": "all",
        "event": "values",
        "data": {"n": n, "delay": 0.05, "count": n},
    }

    custom = [r for r in records if r.get("joiner") == "custom"]
    # Narrowed to custom: no metadata (a join never replays it) and no values.
    assert {r["event"] for r in custom} == {"custom"}
    ticks = [r["data"]["tick"] for r in custom]
    # Unbuffered: nothing from before it joined, then every later tick, in order.
    assert ticks
    assert ticks[0] > joined
    assert ticks == list(range(ticks[0], n))


async def test_wait(node: str, server: ServerProcess) -> None:
    records = {r["case"]: r for r in await run_script(node, server, "wait.mjs")}

    stateless = records["stateless"]["values"]["messages"]
    assert [(m["type"], m["content"]) for m in stateless] == [
        ("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye"),
    ]  # fmt: skip
    threaded = records["threaded"]["values"]["messages"]
    assert [(m["type"], m["content"]) for m in threaded] == [
        ("human", "hi there"), ("ai", "echo: hi there"), ("ai", "bye"),
        ("human", "again"), ("ai", "echo: again"),
    ]  # fmt: skip
    assert records["failing"]["raised"] == "ValueError: boom: intentional failure"
    assert records["failing-no-raise"]["values"] == {
        "__error__": {"error": "ValueError", "message": "boom: intentional failure"}
    }
