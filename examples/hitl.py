"""The `hitl` example: a node that interrupts with a question and records the resume value."""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class HitlState(TypedDict, total=False):
    question: str
    answer: str


def ask(state: HitlState) -> dict[str, Any]:
    # The first run stops here; resuming with Command(resume=...) makes interrupt() return it.
    resume = interrupt({"question": state.get("question", "proceed?")})
    return {"answer": str(resume)}


def done(state: HitlState) -> dict[str, Any]:
    # A node after the interrupt shows that the run carries on past the resumed node.
    return {"answer": state["answer"] + "!"}


builder = StateGraph(HitlState)
builder.add_node("ask", ask)
builder.add_node("done", done)
builder.add_edge(START, "ask")
builder.add_edge("ask", "done")
builder.add_edge("done", END)

graph = builder.compile()
