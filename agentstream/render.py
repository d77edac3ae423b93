"""How the terminal client shows a run's stream: tokens inline as they arrive, one readable
line per update, custom event and anything else, errors on stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

# What one line may show of a value before it is cut; the whole value is one request away
# (`agentstream runs`, the thread's state).
_MAX_VALUE = 400


class Renderer:
    """Turns stream parts (event name, data) into terminal output. Tokens of one message go on
    one line, in arrival order; any other event first ends that line."""

    def __init__(self, out: Console, err: Console) -> None:
        self.out = out
        self.err = err
        self.run_id: str | None = None
        self.error: str | None = None
        self.interrupts: list[Any] = []
        self._open_message: str | None = None  # id of the message whose tokens are on screen
        self._shown: dict[str, int] = {}  # messages/partial: characters already printed per id

    def show(self, event: str, data: Any) -> None:
        mode, _, namespace = event.partition("|")
        where = f"[{namespace}] " if namespace else ""
        if mode == "messages":
            self._tuple_token(where, data)
        elif mode in ("messages/partial", "messages/complete"):
            self._partial(where, data, complete=mode == "messages/complete")
        elif mode == "messages/metadata":
            pass  # what the message tokens already carry, per message id
        else:
            self.end_line()
            self._event(mode, where, data)

    def end_line(self) -> None:
        if self._open_message is not None:
            self._open_message = None
            self.out.print()

    def _event(self, mode: str, where: str, data: Any) -> None:
        if mode == "metadata":
            if isinstance(data, dict) and data.get("run_id"):
                self.run_id = str(data["run_id"])
                self._line(("run ", "dim"), (self.run_id, "dim"))
        elif mode == "updates" and isinstance(data, dict):
            for node, update in data.items():
                if node == "__interrupt__":
                    self._interrupt(where, update)
                else:
                    self._line((where, "dim"), ("● ", "cyan"), (node, "bold cyan"), (" ", ""),
                               (brief(update), ""))  # fmt: skip
        elif mode == "custom":
            self._line((where, "dim"), ("◆ ", "magenta"), (brief(data), ""))
        elif mode == "values":
            if isinstance(data, dict) and "__interrupt__" in data:
                self._interrupt(where, data["__interrupt__"])
            self._line((where, "dim"), ("■ values ", "green"), (brief(data), ""))
        elif mode == "error":
            self._failed(data)
        else:
            self._line((where, "dim"), (f"{mode} ", "yellow"), (brief(data), ""))

    def _tuple_token(self, where: str, data: Any) -> None:
        """messages-tuple: [message chunk, metadata], one token (or a whole message) each."""
        if not (isinstance(data, list | tuple) and data and isinstance(data[0], dict)):
            self.end_line()
            self._line((where, "dim"), ("messages ", "yellow"), (brief(data), ""))
            return
        message = data[0]
        meta = data[1] if len(data) > 1 and isinstance(data[1], dict) else {}
        self._open(str(message.get("id")), where, message, meta.get("langgraph_node"))
        self.out.print(Text(message_text(message)), end="")

    def _partial(self, where: str, data: Any, *, complete: bool) -> None:
        """messages: each event holds the whole message so far; print only what is new."""
        for message in data if isinstance(data, list) else []:
            if not isinstance(message, dict):
                continue
            key = str(message.get("id"))
            text = message_text(message)
            self._open(key, where, message, None)
            self.out.print(Text(text[self._shown.get(key, 0) :]), end="")
            self._shown[key] = len(text)
            if complete:
                self.end_line()

    def _open(self, key: str, where: str, message: dict[str, Any], node: Any) -> None:
        if self._open_message == key:
            return
        self.end_line()
        self._open_message = key
        role = str(message.get("type", "message")).removesuffix("Chunk").lower()
        role = {"aimessage": "ai", "toolmessage": "tool", "humanmessage": "human"}.get(role, role)
        label = f"{role} ({node})" if node else role
        self.out.print(Text.assemble((where, "dim"), (f"{label}: ", "bold")), end="")

    def _interrupt(self, where: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        self.interrupts.extend(items)
        for item in items:
            shown = item.get("value", item) if isinstance(item, dict) else item
            self._line((where, "dim"), ("⏸ interrupt ", "bold yellow"), (brief(shown), ""))

    def _failed(self, data: Any) -> None:
        if isinstance(data, dict):
            kind, message = data.get("error") or "Error", data.get("message") or ""
            self.error = f"{kind}: {message}" if message else str(kind)
        else:
            self.error = str(data)
        self.err.print(Text.assemble(("error: ", "bold red"), (self.error, "red")))

    def _line(self, *parts: tuple[str, str]) -> None:
        self.out.print(Text.assemble(*parts))


def message_text(message: dict[str, Any]) -> str:
    """A message's text: its string content, or the text blocks of a list content, then any
    tool-call pieces it carries."""
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(
            b if isinstance(b, str) else str(b.get("text", ""))
            for b in content
            if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")
        )
    else:
        text = ""
    for call in message.get("tool_call_chunks") or []:
        if isinstance(call, dict):
            text += (f"→ {call['name']}" if call.get("name") else "") + str(call.get("args") or "")
    return text


def brief(value: Any) -> str:
    """A value on one line: messages as `type: text`, the rest as compact JSON, cut when long."""
    text = json.dumps(_shorten(value), ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _shorten(value: Any) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("type"), str) and "content" in value:
            return f"{value['type']}: {message_text(value)}"
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value
