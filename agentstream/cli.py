"""The command line: `agentstream dev` serves a langgraph.json on the embedded backend,
`serve` and `worker` split it across processes, and `stream`, `join` and `runs` are the
terminal client (terminal.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from agentstream import terminal
from agentstream.preflight import ServiceError, check_installed, check_reachable
from agentstream.settings import Settings

# `langgraph dev` flags that mean nothing here: accepted, so a command line carries over, and
# named in one line each.
_IGNORED = {
    "debug_port": "--debug-port: start agentstream under your debugger instead "
    "(python -m debugpy --listen PORT -m agentstream dev)",
    "wait_for_client": "--wait-for-client: start agentstream under your debugger instead",
    "studio_url": "--studio-url: there is no Studio; clients reach this server directly",
    "allow_blocking": "--allow-blocking: agentstream never raises on blocking calls; it warns, "
    "saying where, when one holds the event loop (AGENTSTREAM_LOOP_BLOCKED_SECONDS)",
    "tunnel": "--tunnel: no tunnel is opened; expose the port with a tool of your choice",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="path to langgraph.json")
    parser.add_argument(
        "--max-concurrency", "--n-jobs-per-worker", type=int, default=None, help="runs at once"
    )
    parser.add_argument(
        "--server-log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="the server's log level (default INFO)",
    )


def _http(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        default=None,
        dest="api_keys",
        help="require this key as x-api-key or Authorization: Bearer (repeatable; "
        "replaces AGENTSTREAM_API_KEYS; ignored when langgraph.json sets auth.path)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentstream")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser(
        "dev",
        help="API and workers in one process (SQLite by default)",
        epilog="Accepted for `langgraph dev` command lines and ignored, with a note: "
        "--debug-port, --wait-for-client, --studio-url, --allow-blocking, --tunnel.",
    )
    _common(dev)
    _http(dev)
    dev.add_argument("--database", default=None, help="SQLite file (default .agentstream/)")
    dev.add_argument(
        "--no-reload", action="store_true", help="do not reload graphs when their files change"
    )
    dev.add_argument("--no-browser", action="store_true", help="(no browser is opened anyway)")
    dev.add_argument("--debug-port", type=int, default=None, help=argparse.SUPPRESS)
    for flag in ("--wait-for-client", "--allow-blocking", "--tunnel"):
        dev.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    dev.add_argument("--studio-url", default=None, help=argparse.SUPPRESS)
    serve = sub.add_parser("serve", help="the HTTP API only (DATABASE_URI and REDIS_URI)")
    _common(serve)
    _http(serve)
    worker = sub.add_parser("worker", help="run execution only (DATABASE_URI and REDIS_URI)")
    _common(worker)
    terminal.add_parsers(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if args.config:
        settings.config = Path(args.config)
    if getattr(args, "host", None):
        settings.host = args.host
    if getattr(args, "port", None) is not None:
        settings.port = args.port
    if getattr(args, "database", None):
        settings.database = args.database
    if args.max_concurrency:
        settings.max_concurrency = args.max_concurrency
    if getattr(args, "api_keys", None):
        settings.api_keys = [key for key in args.api_keys if key]
    settings.reload = args.command == "dev" and not args.no_reload
    return settings


def _note_ignored(args: argparse.Namespace) -> None:
    for dest, note in _IGNORED.items():
        if getattr(args, dest, None):
            print(f"agentstream: ignored {note}", file=sys.stderr, flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns on TCP_NODELAY only for sockets that name it, and
    # without it each SSE frame written after another waits for the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening at once holds the port from here: a port bound but not yet listening (uvicorn
    # listens after the app's startup, seconds later) may be bound by another process that
    # also sets SO_REUSEADDR, and then that one answers this server's clients.
    sock.listen(2048)  # uvicorn's default backlog, which its own listen sets again
    sock.set_inheritable(True)
    return sock


def preflight(settings: Settings) -> None:
    """Exit with one line when a service is missing or unreachable."""
    try:
        check_installed(settings)
        asyncio.run(check_reachable(settings))
    except ServiceError as exc:
        sys.exit(f"agentstream: {exc}")


def serve(settings: Settings) -> None:
    from agentstream.api import inspector, socket_writes
    from agentstream.app import create_app
    from agentstream.graphs import GraphLoadError, read_config

    preflight(settings)
    try:
        app = create_app(settings)
    except GraphLoadError as exc:
        sys.exit(f"agentstream: {exc}")
    sock = _bind(settings.host, settings.port)
    settings.port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # The grace is spent in app.drain, before uvicorn's own shutdown begins: by then what is
        # left open is what a drain cut.
        timeout_graceful_shutdown=1,
        ws=socket_writes.Protocol,  # a v2 subscription's batch of events in one write
        ws_per_message_deflate=settings.ws_deflate,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    server = _Server(config, app, settings.shutdown_grace_seconds)
    print(f"agentstream: serving on http://{settings.host}:{settings.port}", flush=True)
    if inspector.enabled(read_config(settings.config)):
        url = f"http://{settings.host}:{settings.port}/inspector/"
        print(f"agentstream: inspector at {url}", flush=True)
    # uvicorn.Config picks uvloop when it is installed; asyncio.run alone would not.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve(sockets=[sock]))


class _Server(uvicorn.Server):
    """uvicorn's server, which on the first SIGTERM or SIGINT drains before it stops (see
    app.drain); a second one stops at once."""

    def __init__(self, config: uvicorn.Config, app: Any, grace: float) -> None:
        super().__init__(config)
        self.agentstream_app = app
        self.grace = grace
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.loop is None or self.draining is not None:
            super().handle_exit(sig, frame)
            return
        self.loop.call_soon_threadsafe(self._start_draining, sig)

    def _start_draining(self, sig: int) -> None:
        if self.draining is None:
            self.draining = asyncio.ensure_future(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        from agentstream.app import drain

        try:
            await drain(self.agentstream_app, self.grace)
        finally:
            super().handle_exit(sig, None)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop uvicorn picks for `dev` and `serve` (uvloop where it is installed), for
    the worker too: on asyncio's own loop it spent about a tenth more CPU on each token it
    published. (No log_config: the Config touches no logging.)"""
    return uvicorn.Config(app=_no_app, log_config=None).get_loop_factory()


def _no_app() -> None:  # a Config needs an app; the worker's serves nothing
    return None


def _require_distributed(settings: Settings, command: str) -> None:
    if not (settings.database_uri and settings.redis_uri):
        sys.exit(
            f"agentstream {command}: set DATABASE_URI (PostgreSQL) and REDIS_URI (Redis); "
            "processes share runs and streams through them. For one machine use `agentstream dev`."
        )


def main(argv: list[str] | None = None) -> None:
    # The server's modules (langgraph, the app) are imported only by the commands that serve:
    # the terminal client starts in half the time without them.
    args = _parser().parse_args(argv)
    if args.command in terminal.COMMANDS:
        sys.exit(terminal.main(args))
    level = getattr(logging, args.server_log_level or "INFO")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _note_ignored(args)
    settings = _settings(args)
    if args.command == "dev":
        serve(settings)
    elif args.command == "serve":
        _require_distributed(settings, "serve")
        settings.run_workers = False
        serve(settings)
    else:
        _require_distributed(settings, "worker")
        from agentstream.app import run_worker_process
        from agentstream.graphs import GraphLoadError

        preflight(settings)
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(run_worker_process(settings))
        except GraphLoadError as exc:
            sys.exit(f"agentstream: {exc}")
