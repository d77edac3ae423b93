"""The terminal client: `agentstream stream`, `join` and `runs`, through the official
`langgraph_sdk` client, so they work against any server that speaks the LangGraph API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentstream.render import Renderer

COMMANDS = ("stream", "join", "runs")
DEFAULT_URL = "http://127.0.0.1:2024"  # `agentstream dev`'s default address
MODES = (
    "values", "updates", "messages", "messages-tuple", "custom", "events", "debug", "tasks",
    "checkpoints",
)  # fmt: skip
DEFAULT_MODES = ["messages-tuple", "updates", "custom"]


class ClientError(Exception):
    """The request never became a run worth rendering: refused, or the server is unreachable."""


def add_parsers(sub: Any) -> None:
    stream = sub.add_parser("stream", help="start a run and render its stream")
    stream.add_argument("assistant", help="assistant id or graph name")
    stream.add_argument("--input", type=_json_arg, default=None, help="the run's input, JSON")
    stream.add_argument(
        "--resume", type=_json_arg, default=None, help="answer the thread's interrupt, JSON"
    )
    stream.add_argument("--thread", default=None, help="run on this thread (created if missing)")
    stream.add_argument("--config", type=_json_arg, default=None, help="the run's config, JSON")
    _modes(stream, DEFAULT_MODES)
    stream.add_argument("--subgraphs", action="store_true", help="stream subgraph events too")
    _connection(stream)
    join = sub.add_parser("join", help="render the stream of a run that is already going")
    join.add_argument("thread")
    join.add_argument("run")
    join.add_argument("--replay", action="store_true", help="from the run's first event")
    _modes(join, None)
    _connection(join)
    runs = sub.add_parser("runs", help="list recent runs, a thread's runs, or show one run")
    runs.add_argument("thread", nargs="?", default=None)
    runs.add_argument("run", nargs="?", default=None)
    runs.add_argument("--status", default=None, help="only runs with this status")
    runs.add_argument("--limit", type=int, default=20)
    _connection(runs)


def _modes(parser: argparse.ArgumentParser, default: list[str] | None) -> None:
    parser.add_argument(
        "--mode",
        action="append",
        type=_modes_arg,
        default=None,
        dest="modes",
        help=f"stream mode, repeatable or comma-separated: {', '.join(MODES)} "
        f"(default: {', '.join(default or ['those the run was started with'])})",
    )
    parser.set_defaults(default_modes=default)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("AGENTSTREAM_URL") or DEFAULT_URL,
        help=f"the server (default: AGENTSTREAM_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("AGENTSTREAM_API_KEY") or None,
        help="sent as x-api-key (default: AGENTSTREAM_API_KEY)",
    )


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def _modes_arg(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    for mode in modes:
        if mode not in MODES:
            raise argparse.ArgumentTypeError(
                f"unknown stream mode {mode!r}; choose from {', '.join(MODES)}"
            )
    return modes


def _stream_modes(args: argparse.Namespace) -> list[str] | None:
    if not args.modes:
        return list(args.default_modes) if args.default_modes else None
    return [mode for given in args.modes for mode in given]


def main(args: argparse.Namespace) -> int:
    """Run one client command; the exit status: 0, 1 when the run failed, 2 when the server
    refused the request or could not be reached, 130 when interrupted."""
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    try:
        return asyncio.run(_dispatch(args, out, err))
    except ClientError as exc:
        err.print(Text(f"agentstream: {exc}", style="red"))
        return 2
    except KeyboardInterrupt:
        err.print(Text("stopped; the run goes on on the server", style="dim"))
        return 130


async def _dispatch(args: argparse.Namespace, out: Console, err: Console) -> int:
    client = get_client(url=args.url, api_key=args.api_key)
    try:
        if args.command == "stream":
            return await _stream(client, args, out, err)
        if args.command == "join":
            return await _join(client, args, out, err)
        await _runs(client, args, out)
        return 0
    except httpx.HTTPStatusError as exc:
        raise ClientError(_refusal(exc)) from None
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach {args.url} ({exc or type(exc).__name__}); "
                          "set --url or AGENTSTREAM_URL") from None  # fmt: skip
    finally:
        await client.http.client.aclose()


def _refusal(exc: httpx.HTTPStatusError) -> str:
    response = exc.response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"


async def _stream(
    client: LangGraphClient, args: argparse.Namespace, out: Console, err: Console
) -> int:
    parts = client.runs.stream(
        args.thread,
        args.assistant,
        input=args.input,
        command={"resume": args.resume} if args.resume is not None else None,
        config=args.config,
        stream_mode=_stream_modes(args),  # type: ignore[arg-type]
        stream_subgraphs=args.subgraphs,
        if_not_exists="create" if args.thread else None,
    )
    renderer = Renderer(out, err)
    await _render(parts, renderer, out)
    if renderer.interrupts and args.thread:
        out.print(Text(f"the thread waits for an answer: agentstream stream {args.assistant} "
                       f"--thread {args.thread} --resume '<JSON>'", style="dim"))  # fmt: skip
    return 1 if renderer.error else 0


async def _join(
    client: LangGraphClient, args: argparse.Namespace, out: Console, err: Console
) -> int:
    parts = client.runs.join_stream(
        args.thread,
        args.run,
        stream_mode=_stream_modes(args),  # type: ignore[arg-type]
        last_event_id="-1" if args.replay else None,
    )
    renderer = Renderer(out, err)
    await _render(parts, renderer, out)
    run = await client.runs.get(args.thread, args.run)
    out.print(Text(f"run {run['run_id']} {run['status']}", style="dim"))
    if run["status"] == "error" and not renderer.error:
        err.print(Text("error: the run failed", style="bold red"))
    return 1 if renderer.error or run["status"] == "error" else 0


async def _render(parts: AsyncIterator[Any], renderer: Renderer, out: Console) -> None:
    """Render every part; a spinner runs until the first event that is more than the run's
    metadata (on a terminal only: piped output stays plain)."""
    spinner = Live(Spinner("dots", "waiting for the first event…"), console=out, transient=True)
    spinner.start(refresh=True)  # drawn now, before the request, not at the first tick
    try:
        async for part in parts:
            if part.event != "metadata":
                spinner.stop()
            renderer.show(part.event, part.data)
    finally:
        spinner.stop()
        renderer.end_line()


async def _runs(client: LangGraphClient, args: argparse.Namespace, out: Console) -> None:
    if args.thread and args.run:
        out.print_json(data=await client.runs.get(args.thread, args.run), default=str)
        return
    names = {a["assistant_id"]: a["name"] for a in await client.assistants.search(limit=100)}
    table = Table("thread", "run", "assistant", "status", "created", box=None)
    if args.thread:
        threads = [args.thread]
    else:
        found = await client.threads.search(
            limit=args.limit, sort_by="updated_at", sort_order="desc"
        )
        threads = [t["thread_id"] for t in found]
    shown = 0
    for thread_id in threads:
        try:
            runs = await client.runs.list(thread_id, limit=args.limit, status=args.status)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404 and not args.thread:
                continue  # deleted since the search (a stateless run's thread, once it ends)
            raise
        for run in runs[: args.limit - shown]:
            assistant = str(run["assistant_id"])
            created = str(run["created_at"])[:19].replace("T", " ")
            row = [str(run["run_id"]), names.get(assistant, assistant), str(run["status"]), created]
            table.add_row(thread_id, *row)
            shown += 1
    if not out.is_terminal:
        out.width = max(out.width, 160)  # a pipe gets whole ids, not folded columns
    out.print(table if shown else Text("no runs", style="dim"))
