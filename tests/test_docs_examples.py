"""The README's runnable examples, run as a user would run them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from tests.conftest import ROOT, ServerProcess


def test_resume_example_gets_every_tick_once(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "resume_stream.py"), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("ticks "))
    assert line == "ticks " + str(list(range(20)))


def test_the_readme_memory_example_recalls_across_threads(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "memory_client.py"), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "recalled ['likes green tea']" in done.stdout.splitlines()
    assert "stored ['likes green tea']" in done.stdout.splitlines()


def _block_after(text: str, marker: str, lang: str) -> str:
    start = text.index(marker)
    block = re.search(rf"```{lang}\n(.*?)```", text[start:], re.S)
    assert block is not None, f"no {lang} block after {marker!r} in the README"
    return block[1]


async def test_readme_auth_example_keeps_users_apart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    marker = "**Your own `langgraph_sdk.Auth`**"
    (tmp_path / "langgraph.json").write_text(_block_after(readme, marker, "json"))
    (tmp_path / "auth.py").write_text(_block_after(readme, marker, "python"))
    for name in ("agent.py", "fake_model.py"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    srv = server_factory(config=tmp_path / "langgraph.json")

    alice = get_client(url=srv.url, api_key="alice-token")
    bob = get_client(url=srv.url, api_key="bob-token")
    try:
        thread = await alice.threads.create()
        assert thread["metadata"]["owner"] == "alice"
        state = await alice.runs.wait(
            thread["thread_id"], "agent", input={"messages": [{"role": "user", "content": "x"}]}
        )
        assert isinstance(state, dict) and state["messages"][1]["content"] == "echo: x"
        with pytest.raises(httpx.HTTPStatusError) as denied:
            await bob.threads.get(thread["thread_id"])
        assert denied.value.response.status_code == 404
        # The handler stamps metadata on a search body that has none: no 500.
        assert await bob.threads.search() == []
        assert [t["thread_id"] for t in await alice.threads.search()] == [thread["thread_id"]]
        # The store handler files each user's memories under their identity.
        await alice.store.put_item(["memories"], "m", {"text": "alice's"})
        assert await bob.store.get_item(["memories"], "m") is None
        assert (await alice.store.get_item(["memories"], "m"))["namespace"] == [
            "alice",
            "memories",
        ]
        async with httpx.AsyncClient(base_url=srv.url) as anonymous:
            response = await anonymous.post("/threads/search", json={})
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token"}
    finally:
        await alice.http.client.aclose()
        await bob.http.client.aclose()


def test_the_readme_v2_example_streams_answers_and_resumes(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "v2_client.py"), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "tokens [['echo:', ' hello', ' there']]",
        "last bye",
        "asked {'question': 'proceed?'}",
        "answer yes!",
        "ticks [0, 1, 2, 3, 4, 5]",
    ]
