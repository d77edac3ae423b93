"""A token's `messages-tuple` event encodes its model call's metadata once per call (modes.py),
and says exactly what encoding the pair whole would."""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk

from agentstream import serde
from agentstream.execution.modes import Translator


def _token(translator: Translator, content: str, metadata: object, ns: tuple[str, ...] = ()):
    [(mode, name, data)] = translator.translate(
        ns, "messages", (AIMessageChunk(content=content, id="m1"), metadata)
    )
    assert mode == "messages-tuple"
    return name, data


def test_tokens_of_one_call_encode_as_the_pair_would() -> None:
    translator = Translator(["messages-tuple"])
    metadata = {"langgraph_node": "think", "langgraph_path": ("__pregel_pull", "think"), "n": 1}
    for content in ("a", " b", " c"):
        name, data = _token(translator, content, metadata)
        message = AIMessageChunk(content=content, id="m1")
        assert (name, data) == ("messages", serde.dumps((message, metadata)))


def test_metadata_changed_between_tokens_is_encoded_again() -> None:
    translator = Translator(["messages-tuple"])
    metadata: dict[str, object] = {"langgraph_node": "think", "tags": ["x"]}
    _token(translator, "a", metadata)
    metadata["langgraph_node"] = "act"
    _, data = _token(translator, "b", metadata)
    assert serde.loads(data)[1] == {"langgraph_node": "act", "tags": ["x"]}
    metadata["extra"] = 1
    _, data = _token(translator, "c", metadata)
    assert serde.loads(data)[1]["extra"] == 1


def test_interleaved_calls_keep_their_own_metadata() -> None:
    translator = Translator(["messages-tuple"])
    first = {"langgraph_node": "left"}
    second = {"langgraph_node": "right"}
    seen = [
        serde.loads(_token(translator, str(i), first if i % 2 else second, ("sub:1",))[1])[1]
        for i in range(6)
    ]
    assert [m["langgraph_node"] for m in seen] == ["right", "left"] * 3


def test_metadata_that_is_not_a_dict_still_encodes() -> None:
    translator = Translator(["messages-tuple"])
    _, data = _token(translator, "a", None)
    assert serde.loads(data)[1] is None
