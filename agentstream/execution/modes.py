"""Stream-mode translation: LangGraph's astream chunks into the server's named SSE events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message

from agentstream import serde
from agentstream.protocol import STREAM_MODES

Item = tuple[str, str, bytes]  # (requested mode, SSE event name, JSON data)


def graph_modes(
    requested: Sequence[str], *, need_values: bool, need_updates: bool = False
) -> list[str]:
    """LangGraph's stream modes for the requested ones, plus `values` (a run's result) and
    `updates` (where an interrupt, static ones included, shows) when the server needs them."""
    modes: list[str] = []
    for mode in requested:
        lg = STREAM_MODES[mode]
        if lg is not None and lg not in modes:
            modes.append(lg)
    if need_values and "values" not in modes:
        modes.append("values")
    if need_updates and "updates" not in modes:
        modes.append("updates")
    return modes


def _checkpoint_ref(config: Any) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable") or {}
    return {k: configurable.get(k) for k in ("checkpoint_id", "thread_id", "checkpoint_ns")}


def _debug_entry(entry: Any) -> Any:
    # The real server's debug checkpoints also name the checkpoint and its parent directly.
    if not isinstance(entry, dict) or entry.get("type") != "checkpoint":
        return entry
    payload = entry.get("payload") or {}
    payload = {
        **payload,
        "checkpoint": _checkpoint_ref(payload.get("config")),
        "parent_checkpoint": _checkpoint_ref(payload.get("parent_config")),
    }
    return {**entry, "payload": payload}


def _suffix(ns: Sequence[str]) -> str:
    return "|" + "|".join(ns) if ns else ""


class Translator:
    """Turns (namespace, mode, chunk) into events, encoding each one exactly once."""

    def __init__(self, requested: Sequence[str]) -> None:
        self.requested = frozenset(requested)
        self.last_values: Any = None
        # An interrupt anywhere in the run (LangGraph says each one as an `__interrupt__`
        # update, breakpoints included): the run's end then needs the thread's state read.
        self.interrupted = False
        self._seen_message_ids: set[str] = set()
        self._partial: dict[str, BaseMessageChunk] = {}

    def translate(self, ns: Sequence[str], mode: str, chunk: Any) -> list[Item]:
        # A list, not a generator: this runs once per chunk, and most chunks give one item.
        if mode == "values" and not ns:
            self.last_values = chunk
        elif mode == "updates" and type(chunk) is dict and "__interrupt__" in chunk:
            self.interrupted = True
        if mode == "messages":
            return list(self._messages(ns, chunk))
        if mode in self.requested:
            if mode == "debug":
                chunk = _debug_entry(chunk)
            return [(mode, mode + _suffix(ns), serde.dumps(chunk))]
        return []

    def _messages(self, ns: Sequence[str], chunk: Any) -> Iterable[Item]:
        message, metadata = chunk
        if "messages-tuple" in self.requested:
            yield "messages-tuple", "messages" + _suffix(ns), serde.dumps((message, metadata))
        if "messages" in self.requested:
            yield from self._legacy(message, metadata)

    def _legacy(self, message: BaseMessage, metadata: dict[str, Any]) -> Iterable[Item]:
        # The old format is never namespaced: the real server sends subgraph tokens plainly too.
        msg_id = message.id or ""
        if msg_id not in self._seen_message_ids:
            self._seen_message_ids.add(msg_id)
            yield "messages", "messages/metadata", serde.dumps({msg_id: {"metadata": metadata}})
        if isinstance(message, BaseMessageChunk):
            so_far = self._partial.get(msg_id)
            so_far = message if so_far is None else so_far + message
            self._partial[msg_id] = so_far
            yield "messages", "messages/partial", serde.dumps([message_chunk_to_message(so_far)])
        else:
            self._partial.pop(msg_id, None)
            yield "messages", "messages/complete", serde.dumps([message])
