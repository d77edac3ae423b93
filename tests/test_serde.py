"""Messages encode exactly as pydantic's model_dump would have them (serde's fast path)."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any

import numpy
import orjson
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from agentstream import serde

MESSAGES: list[BaseMessage] = [
    HumanMessage(content="hi there"),
    HumanMessage(content=[{"type": "text", "text": "hi"}], id="h1", name="me", mood="fine"),
    AIMessage(
        content="calling",
        tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}],
        invalid_tool_calls=[{"name": "bad", "args": "{", "id": "c2", "error": "json"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"model_name": "fake"},
    ),
    AIMessageChunk(content="tok", id="run-1"),
    AIMessageChunk(
        content="", tool_call_chunks=[{"name": "search", "args": '{"q"', "id": "c1", "index": 0}]
    ),
    AIMessageChunk(content="a") + AIMessageChunk(content="b", response_metadata={"x": 1}),
    ToolMessage(content="result", tool_call_id="c1", artifact={"rows": [1, 2]}, status="error"),
    SystemMessage(content="be brief", additional_kwargs={"cache": True}),
    ChatMessage(content="x", role="critic"),
    FunctionMessage(content="{}", name="fn"),
    RemoveMessage(id="h1"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_encodes_as_its_model_dump(message: BaseMessage) -> None:
    expected = orjson.dumps(message.model_dump(mode="python"), default=serde._default)
    assert serde.dumps(message) == expected
    # Inside the tuples and lists a stream carries, too.
    metadata = {"langgraph_node": "model", "langgraph_step": 1}
    pair = orjson.dumps([message.model_dump(mode="python"), metadata], default=serde._default)
    assert serde.dumps((message, metadata)) == pair
    # And as a streamed token's message, without orjson's call back for it.
    assert serde.dumps_message(message) == expected


def test_an_extra_field_is_kept_and_the_message_is_not_changed() -> None:
    message = HumanMessage(content="x", mood="fine")
    before = dict(message.__dict__)
    assert orjson.loads(serde.dumps(message))["mood"] == "fine"
    assert orjson.loads(serde.dumps_message(message))["mood"] == "fine"
    assert message.__dict__ == before
    assert "mood" not in message.__dict__


class _Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class _Point:
    x: int
    y: int


VALUES: list[Any] = [
    {"tick": 1},
    {1: "int key", "s": [1, 2.5, None, True]},
    {"outer": {2: {"deep": (1, 2)}}},
    {_Color.RED: 1, None: 2, 3.5: "float key"},
    {"when": datetime(2026, 12, 4, 15, 30, tzinfo=UTC), "color": _Color.RED},
    {"points": [_Point(1, 2)], "tags": {"a"}, "raw": b"bytes"},
    {"message": AIMessageChunk(content="tok", id="run-1"), 7: "after a message"},
    numpy.arange(6).reshape(2, 3),
    {"array": numpy.array([1.5, 2.5]), "scalar": numpy.float32(0.25), 4: numpy.int64(9)},
    [numpy.bool_(True), numpy.int16(-3)],
    ValueError("boom"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_dumps_gives_what_orjson_gives_with_every_option(value: Any) -> None:
    # serde.dumps tries without orjson's options for non-str keys and numpy first, and falls
    # back to them: either way the bytes are those of the one call with all of them.
    expected = orjson.dumps(value, default=serde._default, option=serde._OPTIONS)
    assert serde.dumps(value) == expected


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_first_try_gives_dumps_bytes_or_raises_type_error(value: Any) -> None:
    # The executor encodes custom events with orjson.dumps(value, FIRST_TRY) and calls dumps
    # only where that raises TypeError: anything else it gives must be dumps's bytes.
    try:
        first = orjson.dumps(value, serde.FIRST_TRY)
    except TypeError:
        return
    assert first == serde.dumps(value)
