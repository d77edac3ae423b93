"""Protocol v2 events of a run started by run.start: LangGraph's own v3 event stream, in the
protocol's shapes, into the run's ordinary log (mode V2_MODE, one item per protocol event).

Only runs whose config carries V2_MARKER take this path; every other run streams as before.
Each item's data is the event's params `{"namespace", "timestamp", "data"}`; the API adds the
envelope (method, event_id and a durable seq) when it reads the log.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, ClassVar

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.stream import ProtocolEvent, StreamTransformer

from agentstream import serde
from agentstream.protocol import V2_MARKER, V2_MODE

Item = tuple[str, str, bytes]


def is_v2(kwargs: Mapping[str, Any]) -> bool:
    configurable = (kwargs.get("config") or {}).get("configurable") or {}
    return bool(configurable.get(V2_MARKER))


class _ExtraModes(StreamTransformer):
    """Asks the graph for the modes LangGraph's built-in transformers leave out, and keeps
    their events in the main log (no projection: nothing buffers them twice). LangGraph folds
    `tasks` events into its lifecycle and drops them from the main log, so this one, running
    before the built-ins, keeps a copy of the root's for the run's log."""

    required_stream_modes: ClassVar[tuple[str, ...]] = (
        "updates", "custom", "tasks", "checkpoints", "tools",
    )  # fmt: skip
    before_builtins: ClassVar[bool] = True

    def __init__(self, scope: tuple[str, ...] = (), tasks: list[ProtocolEvent] | None = None):
        super().__init__(scope)
        self.tasks = tasks if not scope else None

    def init(self) -> dict[str, Any]:
        return {}

    def process(self, event: ProtocolEvent) -> bool:
        if event["method"] == "tasks" and self.tasks is not None:
            self.tasks.append(event)
        return True


def _item(method: str, namespace: Sequence[str], data: Any, ts: int | None = None) -> Item:
    """A log item: its name is the channel and the namespace joined by "|" (as v1 names
    subgraph events), so readers filter without decoding; its data is the event's params."""
    channel = "input" if method == "input.requested" else method
    if method == "custom" and isinstance(data, dict) and data.get("name"):
        channel = f"custom:{data['name']}"
    params = {
        "namespace": list(namespace),
        "timestamp": ts if ts is not None else int(time.time() * 1000),
        "data": data,
    }
    return (V2_MODE, "|".join([channel, *namespace]), serde.dumps(params))


def cancelled_before_start(run_id: str, graph_name: str) -> Item:
    """The one root terminal of a v2 run cancelled before it ran: no `running` came before."""
    data = {"event": "failed", "graph_name": graph_name, "run_id": run_id, "error": "cancelled"}
    return _item("lifecycle", (), data)


def _checkpoint(data: Any) -> dict[str, Any]:
    def ref(config: Any) -> Any:
        return ((config or {}).get("configurable") or {}).get("checkpoint_id")

    metadata = data.get("metadata") or {}
    out = {
        "id": ref(data.get("config")),
        "step": metadata.get("step"),
        "source": metadata.get("source"),
    }
    parent = ref(data.get("parent_config"))
    if parent:
        out["parent_id"] = parent
    return out


class V3Run:
    """One run's translation: LangGraph protocol events in, log items out."""

    def __init__(self, run_id: str, graph_name: str) -> None:
        self.run_id = run_id
        self.graph_name = graph_name
        self.open_children: dict[tuple[str, ...], str] = {}
        self._started = False
        self._tasks: list[ProtocolEvent] = []  # seen by _ExtraModes, not yet translated

    def stream(
        self,
        graph: Pregel[Any, Any, Any, Any],
        graph_input: Any,
        config: RunnableConfig,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[Any, None]:
        extra = {k: v for k, v in options.items() if k not in ("stream_mode", "subgraphs")}

        async def events() -> AsyncGenerator[Any, None]:
            yield None  # the root's `running`, before the graph does anything
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # LangGraph marks v3 streaming as beta
                run = await graph.astream_events(
                    graph_input,
                    config,
                    version="v3",
                    transformers=[lambda scope: _ExtraModes(scope, self._tasks)],
                    **extra,
                )
            async with run:
                async for event in run:
                    yield event
            yield None  # the tasks events after the last one in the main log
            error = run._mux._events._error  # the mux keeps a graph's error, not raising it
            if error is not None:
                raise error

        return events()

    def translate(self, event: ProtocolEvent | None) -> list[Item]:
        items = self._flush_tasks()  # they came before this event
        if event is None:
            if not self._started:
                self._started = True
                running = {"event": "running", "graph_name": self.graph_name, "run_id": self.run_id}
                items.append(_item("lifecycle", (), running))
            return items
        return items + self._translate(event)

    def _flush_tasks(self) -> list[Item]:
        if not self._tasks:  # most events: a token's
            return []
        tasks, self._tasks[:] = list(self._tasks), []
        return [
            _item("tasks", t["params"]["namespace"], t["params"]["data"], t["params"]["timestamp"])
            for t in tasks
        ]

    def _translate(self, event: ProtocolEvent) -> list[Item]:
        method = event["method"]
        params = event["params"]
        ns, ts, data = params["namespace"], params["timestamp"], params["data"]
        if method == "messages":
            # (protocol event, metadata); whole messages a node returns are not streamed
            part = data[0] if isinstance(data, (list, tuple)) and data else data
            return [_item(method, ns, part, ts)] if isinstance(part, dict) else []
        if method == "updates":
            return [
                _item(method, ns, {"node": node, "values": values}, ts)
                for node, values in (data or {}).items()
                if node != "__interrupt__"
            ]
        if method == "custom":
            return [_item(method, ns, {"payload": data}, ts)]
        if method == "checkpoints":
            return [_item(method, ns, _checkpoint(data), ts)]
        if method == "lifecycle":
            child = tuple(data.get("namespace") or ns)
            if data.get("event") == "started":
                self.open_children[child] = data.get("graph_name") or ""
            else:
                self.open_children.pop(child, None)
            return [_item(method, child, data, ts)]
        if method in ("values", "tools"):
            return [_item(method, ns, data, ts)]
        # A compiled stream transformer's named channel.
        return [_item("custom", ns, {"name": method, "payload": data}, ts)]

    def terminal(
        self, status: str, pending_interrupts: Sequence[Any], error: Mapping[str, str] | None
    ) -> list[Item]:
        """The run's last events: its open subgraphs closed, then exactly one root terminal."""
        if status == "success" and pending_interrupts:
            event, message = "interrupted", None
        elif status == "success":
            event, message = "completed", None
        else:
            event = "failed"
            message = (error or {}).get("message") or ("cancelled" if status != "error" else "")
        items = self._flush_tasks()  # a failed node's own, when the graph raised
        # `value` beside the protocol's `payload`: the Python SDK reads its interrupts' value there.
        items += [
            _item(
                "input.requested", (), {"interrupt_id": i.id, "payload": i.value, "value": i.value}
            )
            for i in pending_interrupts
        ]
        for child in reversed(list(self.open_children)):
            child_event = "interrupted" if event == "interrupted" else "failed"
            items.append(_item("lifecycle", child, {"event": child_event}))
        root: dict[str, Any] = {
            "event": event,
            "graph_name": self.graph_name,
            "run_id": self.run_id,
        }
        if event == "failed":
            root["error"] = message
        items.append(_item("lifecycle", (), root))
        return items
