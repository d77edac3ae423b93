"""Before a process starts serving: are the services it was pointed at installed and reachable?
Each failure is one line saying what to do, instead of a traceback after a 30 s pool timeout."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from urllib.parse import urlsplit

from agentstream.settings import Settings

CONNECT_SECONDS = 5


class ServiceError(Exception):
    pass


def _where(uri: str) -> str:
    """host:port of a URI, never its password."""
    parts = urlsplit(uri)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")


def check_installed(settings: Settings) -> None:
    wanted: dict[str, tuple[str, ...]] = {
        "DATABASE_URI": ("psycopg", "psycopg_pool", "langgraph.checkpoint.postgres"),
        "REDIS_URI": ("redis",),
    }
    for variable, modules in wanted.items():
        if not getattr(settings, variable.lower()):
            continue
        for module in modules:
            if not _importable(module):
                raise ServiceError(
                    f"{variable} is set but {module} is not installed: "
                    "pip install 'agentstream[postgres]'"
                )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


async def check_reachable(settings: Settings) -> None:
    if settings.database_uri:
        await _check_postgres(settings.database_uri)
    if settings.redis_uri:
        await _check_redis(settings.redis_uri)
    if not settings.database_uri:
        _check_sqlite(Path(settings.database_path()))


async def _check_postgres(uri: str) -> None:
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(uri, connect_timeout=CONNECT_SECONDS)
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = " ".join(lines) or type(exc).__name__
        raise ServiceError(
            f"cannot reach PostgreSQL at {_where(uri)} (DATABASE_URI): {reason} "
            "(start it, or fix DATABASE_URI; the database must exist)"
        ) from None
    await conn.close()


async def _check_redis(uri: str) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(uri, socket_connect_timeout=CONNECT_SECONDS)
    try:
        await asyncio.wait_for(client.ping(), CONNECT_SECONDS * 2)
    except (RedisError, OSError, TimeoutError) as exc:
        raise ServiceError(
            f"cannot reach Redis at {_where(uri)} (REDIS_URI): {exc} (start it, or fix REDIS_URI)"
        ) from None
    finally:
        await client.aclose()


def _check_sqlite(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot create {folder} for the SQLite database: {exc}") from None
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise ServiceError(f"the SQLite database {path} is not writable (--database to move it)")
