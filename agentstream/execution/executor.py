"""One run, start to finish: build its config, stream the graph, publish events, settle state.

Over 400 lines because a run's ways of ending live beside its way of running: settling,
cancelling, handing back (ServiceLost) and abandoning all write the same final state. The
failure half (abandon, ride_out) is the part to move out when it grows again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import langgraph.version
import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command

from agentstream import __version__, metrics, serde
from agentstream.eventbus import EventBus, InstantEventBus
from agentstream.eventbus.base import Writer
from agentstream.execution import dispatch
from agentstream.execution.bound import bound, interrupts_by_task
from agentstream.execution.flights import PUBLISH_MOST, Flights
from agentstream.execution.modes import Item, Translator, graph_modes
from agentstream.execution.pace import YIELD_EVERY, Pace
from agentstream.execution.tokens import SUPPORTED as TOKENS_SUPPORTED
from agentstream.execution.tokens import Tokens
from agentstream.execution.v3events import V3Run, is_v2
from agentstream.execution.webhooks import WebhookSender
from agentstream.execution.webhooks import payload as webhook_payload
from agentstream.graphs import GraphRegistry
from agentstream.outages import service_unavailable
from agentstream.protocol import ThreadStatus, metadata_item, result_item
from agentstream.storage.base import TERMINAL, NotFound, Run, RunClaim, Storage
from agentstream.users import rebuild as rebuild_user

log = logging.getLogger("agentstream.executor")

# YIELD_EVERY (pace.py): the loop is also handed over after this many events translated in a
# row (a burst: a graph that emitted them without awaiting), so that they reach readers while
# the rest is translated.


class RunAttemptsExceeded(Exception):
    """A run whose workers kept dying is ended instead of being retried forever."""


class ServiceLost(Exception):
    """The database or the event bus went away under a run: the worker hands it back, to be
    run again from its last checkpoint once the service answers (each time counts as an
    attempt, so a service that never comes back ends it as error)."""


@dataclass
class Cancellation:
    """Why a run's task was cancelled; set before the task is cancelled. And whether the run
    is settling: from the moment it handles a cancel, or its end is being stored, nothing may
    stop it (its row may be gone or no longer running, so a lease renewal finds it so, and a
    cancel comes too late) before its stream is closed, or that stream would never end."""

    action: str = "interrupt"
    settling: bool = False
    # Whether the run's task has begun, and whether a cancel was asked for (the worker's
    # _cancel: one asked before the task began, the task asks of itself as it begins).
    started: bool = False
    asked: bool = False
    # Whether storing the run's end told the workers of the thread's next run itself
    # (Storage.finish_run): then the worker wakes nobody when the run is done.
    woken: bool = False


@dataclass
class RunOutcome:
    status: str
    thread_status: ThreadStatus
    values: Any = None
    interrupts: dict[str, Any] = field(default_factory=dict)
    pending_interrupts: list[Any] = field(default_factory=list)
    error: dict[str, str] | None = None


def due(run: Run) -> float:
    """When a run fell due (epoch seconds): its creation, plus any after_seconds."""
    kwargs = run["kwargs"] if isinstance(run["kwargs"], dict) else {}
    delay = kwargs.get("after_seconds")
    return run["created_at"].timestamp() + (delay if isinstance(delay, int | float) else 0)


def error_payload(exc: BaseException) -> dict[str, str]:
    return {"error": type(exc).__name__, "message": str(exc)}


def _input(kwargs: Mapping[str, Any]) -> Any:
    command = kwargs.get("command")
    if command:
        return Command(
            resume=command.get("resume"),
            update=command.get("update"),
            goto=command.get("goto") or (),
        )
    return kwargs.get("input")


def stateless(claim: RunClaim) -> bool:
    """A run that keeps no state: its thread is its own and goes with it when it ends (but for
    a rollback), so it runs without a checkpointer (bound's persist=False)."""
    return bool(claim["temporary"]) and claim["run"]["kwargs"].get("on_completion") != "keep"


def _interrupts_of(values: Any) -> list[Any]:
    if isinstance(values, dict):
        found = values.get("__interrupt__")
        if found:
            return list(found)
    return []


class Executor:
    def __init__(
        self,
        storage: Storage,
        bus: EventBus,
        graphs: GraphRegistry,
        host: str,
        *,
        max_attempts: int = 3,
        webhooks: WebhookSender | None = None,
        notify_ends: bool = False,
    ) -> None:
        self.storage = storage
        self.bus = bus
        self.graphs = graphs
        self.host = host
        self.max_attempts = max_attempts
        self.webhooks = webhooks
        # Whether each run's end tells the API processes streaming it (`serve`) at its commit
        # (_settle): a worker process's runs. A process with an API of its own (`dev`) ends
        # its own streams, and a notifying commit holds PostgreSQL's one lock for notifiers
        # until it is flushed (pgbench here: 5,700-6,300 small commits/s, 1,900-2,900 with
        # a notify each).
        self.notify_ends = notify_ends
        # The runs' models hand their tokens to our handlers and LangGraph's in place, not
        # through LangChain's generic dispatch (dispatch.py): from the process's first executor
        # on, not at import, so a script importing this module keeps LangChain's (the
        # benchmark's in-process baselines are LangChain's own).
        dispatch.install()
        # Runs started through protocol v2, by run id, while they run: their terminal events.
        self._v3: dict[str, V3Run] = {}

    def build_config(
        self, claim: RunClaim, graph_id: str, assistant_config: Mapping[str, Any]
    ) -> RunnableConfig:
        run = claim["run"]
        kwargs = run["kwargs"]
        user_config: Mapping[str, Any] = kwargs.get("config") or {}
        configurable = {
            **(assistant_config.get("configurable") or {}),
            **(user_config.get("configurable") or {}),
            "run_id": run["run_id"],
            "thread_id": run["thread_id"],
            "graph_id": graph_id,
            "assistant_id": run["assistant_id"],
            "run_attempt": claim["attempt"],
        }
        # Stored as JSON with the run; graphs read it as user.identity or user["identity"].
        auth_user = rebuild_user(claim["auth_user"])
        if auth_user is not None:
            configurable["langgraph_auth_user"] = auth_user
            configurable["langgraph_auth_user_id"] = auth_user.identity
            configurable["langgraph_auth_permissions"] = auth_user.permissions
        metadata = {
            "created_by": "system",
            **(assistant_config.get("metadata") or {}),
            **(user_config.get("metadata") or {}),
            **(run["metadata"] or {}),
            "graph_id": graph_id,
            "assistant_id": run["assistant_id"],
            "run_attempt": claim["attempt"],
            "langgraph_version": langgraph.version.__version__,
            "agentstream_version": __version__,
            "langgraph_host": "self-hosted",
            "langgraph_api_url": self.host,
            "run_id": run["run_id"],
            "thread_id": run["thread_id"],
        }
        config: dict[str, Any] = {
            **{k: v for k, v in assistant_config.items() if k not in ("configurable", "metadata")},
            **{k: v for k, v in user_config.items() if k not in ("configurable", "metadata")},
            "configurable": configurable,
            "metadata": metadata,
            "run_id": UUID(run["run_id"]),
        }
        if kwargs.get("checkpoint_id"):
            configurable["checkpoint_id"] = kwargs["checkpoint_id"]
        checkpoint = kwargs.get("checkpoint") or {}
        for key in ("checkpoint_id", "checkpoint_ns"):
            if checkpoint.get(key):
                configurable[key] = checkpoint[key]
        return config  # type: ignore[return-value]

    async def run(self, claim: RunClaim, cancellation: Cancellation) -> None:
        run_id = claim["run"]["run_id"]
        self.bus.own(run_id)  # readers here may be handed its events as they are published
        try:
            await self._run(claim, cancellation)
        finally:
            self.bus.release(run_id)

    async def _run(self, claim: RunClaim, cancellation: Cancellation) -> None:
        run = claim["run"]
        run_id = run["run_id"]
        started = datetime.now(UTC)
        attempt = claim["attempt"]
        try:
            # The first attempt's metadata goes first with the run's first publish, without a
            # round trip of its own, unless the request streaming the run published it already
            # (api/streams.from_start): a log has one, whoever comes first. A later attempt's
            # is published now, inside the try as every suspension of a run: on Redis a round
            # trip, and a cancel landing in it must end the run, not leave it unsettled.
            metadata = [metadata_item(run_id, attempt)]
            if attempt == 1:
                self.bus.lead(run_id, metadata)
            else:
                self.bus.lead(run_id, ())  # an earlier attempt's here, if it published nothing
                await self.bus.publish(run_id, metadata)
            if self.bus.instant:
                # Let the stream's reader send this first event now: LangGraph sets a run up
                # (about half a millisecond of CPU) without a suspension, and on the in-process
                # bus (where a publish does not suspend either) the first frame waited for
                # that.
                await asyncio.sleep(0)
            if claim["attempt"] > self.max_attempts:
                raise RunAttemptsExceeded(
                    f"run {run_id} was started {self.max_attempts} times and its worker "
                    "stopped each time; it will not be retried"
                )
            outcome = await self._execute(claim)
        except asyncio.CancelledError:
            if cancellation.action == "release":
                self._v3.pop(run_id, None)
                raise  # handed back (a graceful stop): the run stays running until claimed again
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # Settling from here: a second cancel (a stop clicked twice, a lease renewal that
            # finds a rolled-back run's row gone) landing in _cancelled's reads stopped the run
            # unsettled, its stream open until another worker ran it again a lease later.
            cancellation.settling = True
            outcome = await self._cancelled(claim, cancellation)
        except Exception as exc:
            lost = service_unavailable(exc)
            if lost is not None:  # not the graph's fault: it runs again once the service is back
                self._v3.pop(run_id, None)
                raise ServiceLost(f"run {run_id} stopped: {lost}") from exc
            log.info("run %s failed: %r", run_id, exc)
            outcome = RunOutcome("error", "error", error=error_payload(exc))
            await self.bus.publish(run_id, [("error", "error", serde.dumps(outcome.error))])
            # What the checkpoints hold (the nodes that did finish), as the real server shows.
            outcome.values = await self._current_values(claim)
        await self._settle(claim, outcome, cancellation)
        self._call_webhook(claim, outcome, started)

    def _call_webhook(self, claim: RunClaim, outcome: RunOutcome, started: datetime) -> None:
        url = claim["run"]["kwargs"].get("webhook")
        if not url or self.webhooks is None or outcome.status not in TERMINAL:
            return
        values = serde.to_jsonable(outcome.values)
        body = webhook_payload(claim["run"], outcome.status, values, outcome.error, started)
        self.webhooks.deliver(url, body)

    async def _execute(self, claim: RunClaim) -> RunOutcome:
        run = claim["run"]
        kwargs = run["kwargs"]
        assistant = claim["assistant"] or await self.storage.get_assistant(run["assistant_id"])
        config = self.build_config(claim, assistant["graph_id"], assistant["config"])
        persist = not stateless(claim)
        graph_id = assistant["graph_id"]
        async with bound(self.storage, self.graphs, graph_id, config, persist=persist) as graph:
            context = {**(assistant.get("context") or {}), **(kwargs.get("context") or {})}
            requested = list(kwargs.get("stream_mode") or ["values"])
            translator = Translator(requested)
            sink = self._sink(run)
            # On Redis, as often as a publish fills: handing over every YIELD_EVERY tokens
            # there split a burst into twice the publishes, 1-4 µs more of the worker's CPU a
            # token, for no more tokens a second.
            every = YIELD_EVERY if self.bus.instant else PUBLISH_MOST
            tokens = None
            if _by_handler(kwargs, requested):
                tokens = Tokens(
                    translator,
                    sink.items,
                    sink.soon,
                    sink.flush,
                    root=UUID(run["run_id"]),
                    subgraphs=bool(kwargs.get("subgraphs")),
                    every=every,
                )
                if not _add_handler(config, tokens):
                    tokens = None
            if tokens is None and (is_v2(kwargs) or not _TOKENS.isdisjoint(requested)):
                _add_handler(config, Pace(every))
            graph_input = _input(kwargs)
            if claim["attempt"] > 1 and persist and await _wrote_checkpoints(graph, config):
                graph_input = None  # a taken-over run continues from its own last checkpoint
            if is_v2(kwargs):
                v3 = self._v3[run["run_id"]] = V3Run(run["run_id"], assistant["graph_id"])
                parts = v3.stream(graph, graph_input, config, _options(kwargs, context or None))
                translate: Callable[[Any], list[Item]] = v3.translate
                direct: Translator | None = None
            else:
                parts, translate, direct = self._stream(
                    graph,
                    config,
                    kwargs,
                    graph_input,
                    requested,
                    translator,
                    context or None,
                    persist=persist,
                    tokens=tokens is not None,
                )
            if tokens is not None:
                tokens.reads(parts)
            try:
                async with aclosing(parts):
                    await self._publish_all(run, parts, translate, direct, sink)
            finally:
                if tokens is not None and self.bus.instant:  # Flights counts what it sends
                    metrics.EVENTS_PUBLISHED.inc(tokens.count)
            return await self._outcome(graph, config, translator, persist)

    def _sink(self, run: Run) -> Writer | Flights:
        """Where a run's events go on their way to its log: the in-process bus's writer of it,
        or, on a bus whose publish waits, its Flights."""
        if self.bus.instant:
            return cast(InstantEventBus, self.bus).writer(run["run_id"])
        return Flights(self.bus, run["run_id"], lambda: due(run))

    async def _publish_all(
        self,
        run: Run,
        parts: AsyncIterator[Any],
        translate: Callable[[Any], list[Item]],
        direct: Translator | None = None,
        sink: Writer | Flights | None = None,
    ) -> None:
        """Translates and publishes what the graph streams, in order, through `sink` (the run's
        Tokens handler appends to it too). On the in-process bus in place, through its writer;
        otherwise through Flights: at most one publish in flight, what the graph yields while
        a publish waits (on Redis, a round trip) going out with the next one. `direct`: the
        translator of parts that are (mode, chunk) pairs, some of which the in-process bus's
        loop turns into events itself."""
        if sink is None:
            sink = self._sink(run)
        published = 0
        if not isinstance(sink, Flights):  # nothing to wait for: no task nor coroutine a publish
            write = sink
            items, soon = write.items, write.soon
            encode, first_try = orjson.dumps, serde.FIRST_TRY
            plain = direct.plain if direct is not None else frozenset()
            pair = direct.pair if direct is not None and direct.pairs_only else None
            turn = 0
            try:
                async for part in parts:
                    # A custom event (or tasks, checkpoints) and a model's token as a
                    # (message, metadata) pair are made here, without translate()'s call and
                    # list in between: a tenth of what a custom event cost the server on its
                    # way to the client.
                    if plain and part[0] in plain:
                        mode = part[0]
                        try:
                            item = (mode, mode, encode(part[1], first_try))
                        except TypeError:  # numpy, or keys that are not str
                            item = (mode, mode, serde.dumps(part[1]))
                    elif pair is not None and part[0] == "messages":
                        item = ("messages-tuple", "messages", pair(part[1]))
                    else:
                        batch = translate(part)
                        if not batch:  # modes nobody asked for (values, kept for the result)
                            continue
                        item = None
                    if not published:
                        metrics.TIME_TO_FIRST_EVENT.observe(max(0.0, time.time() - due(run)))
                    if item is None:
                        if not items:
                            soon()
                        items += batch
                        published += len(batch)
                    else:
                        items.append(item)
                        if len(items) == 1:
                            soon()
                        published += 1
                    if published - turn >= YIELD_EVERY:
                        # A graph that emitted a burst without awaiting is drained here
                        # without a single suspension: hand the loop over now and then, so
                        # that readers keep up with the log (past its bound they were cut
                        # off), the first events are on their way while the rest are
                        # translated (with 1,024 a model's 2,003-token reply reached the
                        # client 10 ms after its first token was in the log), and other
                        # requests are served meanwhile.
                        turn = published
                        write.flush()
                        await asyncio.sleep(0)
            finally:
                write.flush()
                metrics.EVENTS_PUBLISHED.inc(published)
            return
        flights = sink
        pending = flights.items
        since = 0  # events translated since the loop was last handed over here
        try:
            async for part in parts:
                batch = translate(part)
                if batch:
                    if not pending:
                        flights.soon()
                    pending.extend(batch)
                    flights.check()
                since += len(batch)
                if since >= YIELD_EVERY:
                    # A burst, as above: without this the publish started at its first event
                    # ran only once the whole burst was translated. (A burst of up to
                    # YIELD_EVERY events still goes in one publish; with PUBLISH_MOST here
                    # instead, a model's first token reached its client 5 ms later.)
                    since = 0
                    await asyncio.sleep(0)
        finally:
            await flights.finish()

    def _stream(
        self,
        graph: Pregel[Any, Any, Any, Any],
        config: RunnableConfig,
        kwargs: Mapping[str, Any],
        graph_input: Any,
        requested: list[str],
        translator: Translator,
        context: Any,
        *,
        persist: bool,
        tokens: bool = False,
    ) -> tuple[AsyncGenerator[Any, None], Callable[[Any], list[Item]], Translator | None]:
        """The graph's stream, how to turn each of its parts into events (called in the
        publishing loop itself: a generator in between cost a hop per event), and the
        translator when the parts are (mode, chunk) pairs. A run that keeps its thread's state
        also streams `updates`, for the interrupts (see ran_to_end). `tokens`: the run's
        `messages` events are made by its Tokens handler, not by LangGraph's mode."""
        modes = graph_modes(requested, need_values=True, need_updates=persist)
        if tokens:
            modes.remove("messages")
        options = {
            "stream_mode": modes,
            "subgraphs": bool(kwargs.get("subgraphs")),
            **_options(kwargs, context),
        }
        if "events" not in requested:
            stream = graph.astream(graph_input, config, **options)
            direct = None if options["subgraphs"] else translator
            return cast(AsyncGenerator[Any, None], stream), translator.part, direct
        root = str(config["run_id"])  # type: ignore[typeddict-item]

        def translate_event(event: Any) -> list[Item]:
            if event["event"] == "on_chain_stream" and event["run_id"] == root:
                return translator.part(event["data"]["chunk"])
            return [("events", "events", serde.dumps(event))]

        events = graph.astream_events(graph_input, config, version="v2", **options)
        return cast(AsyncGenerator[Any, None], events), translate_event, None

    async def _outcome(
        self,
        graph: Pregel[Any, Any, Any, Any],
        config: RunnableConfig,
        translator: Translator,
        persist: bool,
    ) -> RunOutcome:
        if not persist:
            values = translator.last_values
            found = _interrupts_of(values)
            status: ThreadStatus = "interrupted" if found else "idle"
            return RunOutcome(
                "success", status, values=_without_interrupt(values), pending_interrupts=found
            )
        if ran_to_end(translator):
            # What reading the thread's state back would say, without reading it: under load
            # that read (a checkpoint read and the next tasks worked out again) was most of
            # the time between a threaded run's last event and the end of its stream.
            return RunOutcome("success", "idle", values=translator.last_values)
        state = await graph.aget_state(config)
        interrupts = interrupts_by_task(state.tasks)
        thread_status: ThreadStatus = "interrupted" if state.next or interrupts else "idle"
        return RunOutcome(
            "success",
            thread_status,
            values=state.values,
            interrupts=interrupts,
            pending_interrupts=[i for task in state.tasks for i in task.interrupts],
        )

    async def _state_values(self, claim: RunClaim) -> Any:
        try:
            thread = await self.storage.get_thread(claim["run"]["thread_id"])
        except NotFound:
            return None
        return thread["values"]

    async def _cancelled(self, claim: RunClaim, cancellation: Cancellation) -> RunOutcome:
        run = claim["run"]
        if cancellation.action == "rollback":
            await self.storage.rollback_run(run["run_id"], run["thread_id"])
            return RunOutcome("interrupted", "idle", values=await self._state_values(claim))
        values = await self._current_values(claim)
        return RunOutcome("interrupted", "interrupted", values=values)

    async def _current_values(self, claim: RunClaim) -> Any:
        run = claim["run"]
        try:
            assistant = await self.storage.get_assistant(run["assistant_id"])
            config = self.build_config(claim, assistant["graph_id"], assistant["config"])
            async with bound(self.storage, self.graphs, assistant["graph_id"], config) as graph:
                state = await graph.aget_state(config)
            return state.values
        except Exception:  # a cancelled run's state is a courtesy, never a reason to fail
            return await self._state_values(claim)

    async def _settle(
        self, claim: RunClaim, outcome: RunOutcome, cancellation: Cancellation
    ) -> None:
        run = claim["run"]
        run_id = run["run_id"]
        result = result_item(
            outcome.values, outcome.error, outcome.status, outcome.pending_interrupts
        )
        v3 = self._v3.pop(run_id, None)
        end = (
            []
            if v3 is None
            else v3.terminal(outcome.status, outcome.pending_interrupts, outcome.error)
        )
        delete_thread = stateless(claim)
        cancellation.settling = True
        if cancellation.action == "rollback" and outcome.status == "interrupted":
            await self._settle_rolled_back(claim)
        else:
            cancellation.woken = await self.storage.finish_run(
                run_id,
                status=outcome.status,  # type: ignore[arg-type]
                thread_status=outcome.thread_status,
                values=serde.to_jsonable(outcome.values),
                interrupts=serde.to_jsonable(outcome.interrupts),
                error=outcome.error,
                delete_thread=delete_thread,
                checkpointed=not delete_thread,
                # Told, at the commit, to the API processes streaming the run (`serve`): their
                # streams hide the result, so they end there, not a round trip to Redis later.
                notice=self._end_notice(run_id, [*end, result]),
            )
        # Only now that the run's end is stored does its stream end: a client may start the
        # thread's next run the moment it closes (under `reject`, refused were the run still
        # stored as running) or read the thread's state.
        await self.bus.close(run_id, [*end, result])

    def _end_notice(self, run_id: str, items: list[Item]) -> str | None:
        if not self.notify_ends:
            return None
        return self.bus.end_notice(run_id, {mode for mode, _, _ in items})

    async def abandon(self, run_id: str, exc: BaseException, *, temporary: bool = False) -> None:
        """Ends a run that failed outside the graph (its row unreadable, or settling it raised)
        as error, as far as the services let it: its readers get an `error` event and the end
        of the log, and it never stays `running`. Each step is tried on its own."""
        error = error_payload(exc)
        try:  # stored first, as _settle does: when its stream ends, the run is stored as ended
            await ride_out(lambda: self._store_error(run_id, error, temporary))
        except Exception:
            log.exception("run %s: storing its error failed; its lease will end it", run_id)
        try:
            await self.bus.publish(
                run_id,
                [("error", "error", serde.dumps(error)), result_item(None, error, "error", [])],
            )
        except Exception:
            log.exception("run %s: publishing its error failed", run_id)
        try:
            await self.bus.close(run_id)
        except Exception:
            log.exception("run %s: closing its log failed", run_id)

    async def _store_error(self, run_id: str, error: dict[str, str], temporary: bool) -> None:
        try:
            status = (await self.storage.get_run(None, run_id))["status"]
        except NotFound:
            return  # deleted meanwhile: nothing to store
        except Exception as exc:
            if service_unavailable(exc):
                raise
            status = "running"  # unreadable, and claimed by this worker
        if status not in TERMINAL:
            await self.storage.finish_run(
                run_id, status="error", thread_status="error", values=None, interrupts={},
                error=error, delete_thread=temporary,
            )  # fmt: skip

    async def _settle_rolled_back(self, claim: RunClaim) -> None:
        # The run row is gone; the thread goes back to what its checkpoints now say.
        run = claim["run"]
        values: Any = None
        try:
            assistant = await self.storage.get_assistant(run["assistant_id"])
            config: RunnableConfig = {"configurable": {"thread_id": run["thread_id"]}}
            async with bound(self.storage, self.graphs, assistant["graph_id"]) as graph:
                state = await graph.aget_state(config)
            values = state.values or None
        except NotFound:
            pass
        await self.storage.set_thread_state(
            run["thread_id"], values=serde.to_jsonable(values), interrupts={}, status="idle"
        )


async def ride_out(step: Callable[[], Awaitable[Any]], seconds: float = 60.0) -> Any:
    """Runs step, and again while it fails because a service is away (backing off to 2 s), for
    up to `seconds`; any other failure, or the last one, is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.05
    while True:
        try:
            return await step()
        except Exception as exc:
            if service_unavailable(exc) is None or loop.time() + delay > deadline:
                raise
            log.warning("waiting for a service to come back: %s", service_unavailable(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def ran_to_end(translator: Translator) -> bool:
    """Whether a run's stream, now ended, ran its graph to the end: no interrupt on the way,
    and a last `values` chunk, which holds what the thread's state does (LangGraph streams
    and snapshots the same channels, whatever the graph's output schema leaves out)."""
    return not translator.interrupted and translator.last_values is not None


async def _wrote_checkpoints(graph: Pregel[Any, Any, Any, Any], config: RunnableConfig) -> bool:
    state = await graph.aget_state(config)
    run_id = str(config["configurable"]["run_id"])  # type: ignore[index]
    return bool(state.metadata) and state.metadata.get("run_id") == run_id  # type: ignore[union-attr]


# The modes whose events carry a model's tokens: their runs are paced (pace.py).
_TOKENS = frozenset({"messages", "messages-tuple", "events"})


def _by_handler(kwargs: Mapping[str, Any], requested: list[str]) -> bool:
    """Whether a run's tokens are made by a Tokens handler: runs that stream them as
    `messages` events, through astream (not astream_events, nor protocol v2's events)."""
    return (
        TOKENS_SUPPORTED
        and not is_v2(kwargs)
        and "events" not in requested
        and ("messages-tuple" in requested or "messages" in requested)
    )


def _add_handler(config: RunnableConfig, handler: Any) -> bool:
    """A callback handler more for the run, beside any its config names; False where the
    config holds a callback manager instead of a list."""
    callbacks = config.get("callbacks")
    if callbacks is None or isinstance(callbacks, list):
        config["callbacks"] = [*(callbacks or ()), handler]
        return True
    return False


def _options(kwargs: Mapping[str, Any], context: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "interrupt_before": kwargs.get("interrupt_before"),
        "interrupt_after": kwargs.get("interrupt_after"),
    }
    if kwargs.get("durability"):
        options["durability"] = kwargs["durability"]
    if context is not None:
        options["context"] = context
    return options


def _without_interrupt(values: Any) -> Any:
    if isinstance(values, dict) and "__interrupt__" in values:
        return {k: v for k, v in values.items() if k != "__interrupt__"}
    return values
