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


# Modes whose chunks go out as they are, with nothing else to note (values, updates, messages
# and debug each need a step of their own).
_PLAIN = frozenset({"custom", "tasks", "checkpoints"})

# Model calls whose metadata a run keeps encoded at once (calls in parallel nodes interleave),
# and subgraph event names it keeps (one per mode and subgraph task).
_MAX_CALLS = 64
_MAX_NAMES = 1024


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
        # Each model call's metadata, encoded: (the dict, a copy to tell a change by, its JSON).
        self._metadata: dict[int, tuple[dict[str, Any], dict[str, Any], bytes]] = {}
        self._names: dict[tuple[str, tuple[str, ...]], str] = {}
        # The requested modes whose chunks go out as they are: (mode, chunk) parts of these
        # the executor encodes itself, without part().
        self.plain = self.requested & _PLAIN
        # Tokens asked for only as (message, metadata) pairs: each one encoded by pair() alone.
        self.pairs_only = "messages-tuple" in self.requested and "messages" not in self.requested

    def part(self, part: Any) -> list[Item]:
        """translate() of what astream yields: (mode, chunk), or (namespace, mode, chunk) with
        subgraphs; unpacked here, once per event, and a plain mode's chunk (a custom event)
        encoded here at once, without a call in between."""
        if len(part) == 2:
            mode, chunk = part
            if mode in self.plain:
                return [(mode, mode, serde.dumps(chunk))]
            if mode == "messages" and self.pairs_only:  # a token: a third of its cost was calls
                return [("messages-tuple", "messages", self.pair(chunk))]
            return self.translate((), mode, chunk)
        return self.translate(part[0], part[1], part[2])

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
            return [(mode, self._name(mode, ns) if ns else mode, serde.dumps(chunk))]
        return []

    def _name(self, mode: str, ns: Sequence[str]) -> str:
        """A subgraph's event name, one string for all of its events (a finished log keeps each
        event's name: shared, they cost a pointer each)."""
        key = (mode, tuple(ns))
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _MAX_NAMES:
                self._names.clear()
            name = self._names[key] = mode + _suffix(ns)
        return name

    def _messages(self, ns: Sequence[str], chunk: Any) -> Iterable[Item]:
        if "messages-tuple" in self.requested:
            name = self._name("messages", ns) if ns else "messages"
            yield "messages-tuple", name, self.pair(chunk)
        if "messages" in self.requested:
            yield from self._legacy(*chunk)

    def pair(self, chunk: tuple[BaseMessage, dict[str, Any]]) -> bytes:
        """A `messages-tuple` event's data: [message, metadata]."""
        # A join, not b"[%s,%s]" %: the format parsed for every token was a fifth of its cost.
        return b"".join((b"[", serde.dumps_message(chunk[0]), b",", self._encoded(chunk[1]), b"]"))

    def _encoded(self, metadata: dict[str, Any]) -> bytes:
        """serde.dumps(metadata), once per model call rather than once per token: LangGraph
        hands every token of a call the same dict, and with the server's metadata it is most
        of each token's JSON (0.7 of 2.3 us, and the tuple around it another 0.6). A dict
        changed since (compared with a copy, one level deep) is encoded again."""
        if type(metadata) is not dict:
            return serde.dumps(metadata)
        known = self._metadata.get(id(metadata))
        if known is not None and known[0] is metadata and known[1] == metadata:
            return known[2]
        if len(self._metadata) >= _MAX_CALLS:  # many model calls in one run: start over
            self._metadata.clear()
        encoded = serde.dumps(metadata)
        self._metadata[id(metadata)] = (metadata, dict(metadata), encoded)
        return encoded

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
