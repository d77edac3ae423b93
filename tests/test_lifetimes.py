"""Backends and the app live in async context managers (agentstream/app.py): opened in order,
closed in reverse, and what opened is closed when something after it fails to open."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import ConnectionError

from agentstream import app as app_module
from agentstream.app import open_backends
from agentstream.graphs import read_config
from agentstream.settings import Settings
from agentstream.storage.sqlite import SqliteStorage
from agentstream.storeconfig import store_options

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "langgraph.json"


async def test_storage_is_closed_when_redis_fails_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []

    class Recorded(SqliteStorage):
        async def aclose(self) -> None:
            closed.append("storage")
            await super().aclose()

    monkeypatch.setattr(app_module, "SqliteStorage", Recorded)
    settings = Settings(
        config=EXAMPLES,
        database=str(tmp_path / "db.sqlite"),
        redis_uri="redis://127.0.0.1:1/0",  # nothing listens there
    )
    config = read_config(EXAMPLES)
    with pytest.raises(ConnectionError):  # redis-py's, not the builtin
        async with open_backends(settings, config, store_options(config)):
            pass
    assert closed == ["storage"]
