"""JSON encoding for everything that crosses the wire: orjson plus LangChain and LangGraph types."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from langchain_core.messages import BaseMessage
from langgraph.types import Send
from pydantic import BaseModel

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseMessage):
        # What model_dump gives (fields in order, then extras), without its walk of every
        # field: a third of the cost of encoding a streamed token. Nested models still come
        # back here. tests/test_serde.py holds it to model_dump's output.
        extra = obj.__pydantic_extra__
        return {**obj.__dict__, **extra} if extra else obj.__dict__
    # Other pydantic models: model_dump gives the dict shape the SDKs expect.
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="python")
    if isinstance(obj, Send):
        return {"node": obj.node, "arg": obj.arg}
    if hasattr(obj, "_asdict"):  # named tuples such as langgraph's PregelTask
        return obj._asdict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Sequence):
        return list(obj)
    if hasattr(obj, "to_json"):
        return obj.to_json()
    # Anything else a graph puts in its state still encodes instead of failing the run.
    return repr(obj)


def _common(obj: Any) -> Any:
    """_default for the first try, which leaves numpy's values to the second."""
    if type(obj).__module__ == "numpy":
        raise TypeError("numpy")
    return _default(obj)


# orjson's default for the first try: orjson.dumps(obj, FIRST_TRY) is dumps(obj) unless it
# raises TypeError (then dumps(obj) gives the bytes). For a loop that encodes every event of
# a run and cannot afford dumps's own call (a fifth of a custom event's encoding).
FIRST_TRY = _common


def dumps(obj: Any) -> bytes:
    try:
        # Without options first: asking orjson for non-str keys and numpy costs every call
        # about 40 % more (700 of 1,900 instructions for a custom event's dict), and what
        # a run streams almost never has either.
        return orjson.dumps(obj, _common)
    except TypeError:  # a key that is not a str, or a numpy value: the same bytes as ever
        return orjson.dumps(obj, _default, _OPTIONS)


# Whether each type met is a message, found once per type: isinstance against pydantic's
# metaclass, and dumps's own call, were 2,400 of a token's 6,000 instructions of encoding.
_MESSAGE_TYPES: dict[type, bool] = {}


def dumps_message(message: Any) -> bytes:
    """dumps() of a streamed message: its fields handed to orjson as _default would give them,
    without orjson's call back for the message (a quarter of a token's encoding)."""
    kind = type(message)
    plain = _MESSAGE_TYPES.get(kind)
    if plain is None:
        if len(_MESSAGE_TYPES) >= 256:
            _MESSAGE_TYPES.clear()
        plain = _MESSAGE_TYPES[kind] = issubclass(kind, BaseMessage)
    if plain and not message.__pydantic_extra__:
        fields = message.__dict__
        try:
            return orjson.dumps(fields, _common)
        except TypeError:
            return dumps(fields)
    return dumps(message)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def to_jsonable(obj: Any) -> Any:
    """A plain JSON value (dicts, lists, scalars) for storing alongside rows."""
    return orjson.loads(dumps(obj))
