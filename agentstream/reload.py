"""Hot reload for `agentstream dev`: when a Python file of the project changes, import the
graphs again and swap them into the registry, in this process.

A run in flight holds the graph object it started with and finishes on that code; the next
run looks its graph up in the registry and gets the new one. Storage, the event bus and open
streams are untouched, so threads and their checkpoints survive a reload. Nothing here runs
per run: the watcher is one task that sleeps until a file changes."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import sysconfig
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from watchfiles import PythonFilter, awatch

import agentstream
from agentstream.graphs import GraphLoadError, GraphRegistry

log = logging.getLogger("agentstream.reload")


@asynccontextmanager
async def watching(graphs: GraphRegistry, *, enabled: bool) -> AsyncIterator[None]:
    """Reload `graphs` whenever a watched file changes, for as long as the block runs."""
    if not enabled:
        yield
        return
    stop = asyncio.Event()
    folders = watched_folders(graphs)
    task = asyncio.create_task(_watch(graphs, folders, stop), name="agentstream-reload")
    # The task's first step sets the watches up (awatch does it before its first wait), so
    # once it has run, an edit is seen: only then is reloading announced.
    await asyncio.sleep(0)
    if not task.done():  # done: it could not watch, and said so
        log.info("reloading graphs when a .py file changes under %s", ", ".join(map(str, folders)))
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def watched_folders(graphs: GraphRegistry) -> list[Path]:
    """The config's folder, its `dependencies` folders, and the folder of every graph file."""
    config = graphs.config
    candidates = [config.root, *((config.root / dep) for dep in config.dependencies)]
    for spec in config.graphs.values():
        target = spec.rpartition(":")[0]
        if target.endswith(".py") or "/" in target:
            candidates.append((config.root / target).parent)
    folders: list[Path] = []
    for folder in sorted({c.resolve() for c in candidates if c.is_dir()}):
        if not any(folder.is_relative_to(kept) for kept in folders):
            folders.append(folder)
    return folders


async def _watch(graphs: GraphRegistry, folders: list[Path], stop: asyncio.Event) -> None:
    try:
        async for changes in awatch(*folders, watch_filter=PythonFilter(), stop_event=stop):
            changed = sorted({Path(path).name for _, path in changes})
            reload(graphs, folders, changed)
    except OSError as exc:  # out of inotify instances or watches, a folder gone: serve on
        log.warning("hot reload stopped: cannot watch %s (%s)", ", ".join(map(str, folders)), exc)


def reload(graphs: GraphRegistry, folders: Iterable[Path], changed: list[str]) -> None:
    """Forget the project's modules and import the graphs again; on failure keep the old
    graphs serving and say why in one line."""
    forget_modules(folders)
    try:
        graphs.reload()
    except Exception as exc:  # whatever the new code does, the watcher and the old graphs stay
        said = str(exc) if isinstance(exc, GraphLoadError) else f"{type(exc).__name__}: {exc}"
        log.error("reload failed, still serving the previous graphs: %s", said)
        return
    log.info("graphs reloaded (%s changed)", ", ".join(changed))


def forget_modules(folders: Iterable[Path]) -> None:
    """Drop from sys.modules what the project's own files defined, so the next import runs the
    edited code (a graph file and the helpers it imports alike). Installed packages, and
    agentstream itself, stay: they may sit under the project folder (a .venv, a checkout)."""
    roots = [Path(folder) for folder in folders]
    keep = [Path(agentstream.__file__).resolve().parent, *_installed()]
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(r) for r in roots) and not any(
            path.is_relative_to(k) for k in keep
        ):
            del sys.modules[name]
    importlib.invalidate_caches()  # a file added since the last import is found


def _installed() -> list[Path]:
    # Not sys.prefix: a project may live below it (/usr/src/app under /usr).
    paths = sysconfig.get_paths()
    places = {paths.get(key, "") for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return [Path(p).resolve() for p in places if p]
