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


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTIONS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def to_jsonable(obj: Any) -> Any:
    """A plain JSON value (dicts, lists, scalars) for storing alongside rows."""
    return orjson.loads(dumps(obj))
