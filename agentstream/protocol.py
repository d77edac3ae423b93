"""The wire's vocabulary, in one place: SSE frames and their ids, the modes a run's log carries,
the stream-mode table, the URLs responses name, the protocol's Literals (PROTOCOL.md), and
protocol v2's marker, log mode and seq formula (PROTOCOL-V2.md).

A leaf: it imports nothing of ours but serde, so the API, the executor and the event bus all
read the same words from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, count, islice, repeat
from typing import Any, Literal, get_args

from agentstream import serde

# --- the protocol's Literals -------------------------------------------------------------------

StreamMode = Literal[
    "values", "messages", "messages-tuple", "tasks", "checkpoints", "updates", "events", "debug",
    "custom",
]  # fmt: skip
MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
MULTITASK_STRATEGIES: tuple[str, ...] = get_args(MultitaskStrategy)
OnDisconnect = Literal["cancel", "continue"]
CancelAction = Literal["interrupt", "rollback"]
RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]

# The modes a client may ask for, and the LangGraph stream mode each one needs.
STREAM_MODES: dict[str, str | None] = {
    "values": "values",
    "updates": "updates",
    "messages": "messages",
    "messages-tuple": "messages",
    "custom": "custom",
    "tasks": "tasks",
    "checkpoints": "checkpoints",
    "debug": "debug",
    "events": None,  # served by astream_events, not by a LangGraph stream mode
}

# --- a run's log --------------------------------------------------------------------------------

# The run's final result (values, error, status, interrupts): always the last event of a log,
# published just before it closes, read by /wait and /join, never sent to an SSE reader.
RESULT_MODE = "result"
# Modes that every SSE reader receives whatever stream_mode filter it asked for.
END_MODES = frozenset({"error"})


def metadata_item(run_id: str, attempt: int) -> tuple[str, str, bytes]:
    """The log item that begins each attempt of a run, as (mode, event name, data)."""
    return "metadata", "metadata", serde.dumps({"run_id": run_id, "attempt": attempt})


def result_item(
    values: Any, error: dict[str, str] | None, status: str, interrupts: list[Any]
) -> tuple[str, str, bytes]:
    """The log item that ends every run, as (mode, event name, data)."""
    data = serde.dumps(
        {"values": values, "error": error, "status": status, "interrupts": interrupts}
    )
    return RESULT_MODE, RESULT_MODE, data


def wait_body(result: dict[str, Any] | None) -> Any:
    """The JSON body of /wait and /join: values, or {"__error__"}, plus any "__interrupt__"."""
    if result is None:
        return None
    if result.get("error"):
        return {"__error__": result["error"]}
    values = result.get("values")
    interrupts = result.get("interrupts") or []
    if interrupts:
        values = {**(values if isinstance(values, dict) else {}), "__interrupt__": interrupts}
    return values


# --- protocol v2 (PROTOCOL-V2.md) ---------------------------------------------------------------

# The config marker of a run started by run.start: its executor writes protocol v2 events.
V2_MARKER = "__event_streaming_v2"
# The mode of those events in the run's log.
V2_MODE = "v2"
# What a run.start run stores as its stream_mode (the v1 names among the real server's list;
# the executor streams every v3 channel for it whatever this says).
V2_STREAM_MODES = ["values", "updates", "messages", "custom", "tasks", "checkpoints"]
# A v2 event's seq is durable: the run's number in its thread's log times SEQ_BASE, plus the
# event's id in the run's log (room for SEQ_BASE - 1 events a run).
SEQ_BASE = 1_000_000


def v2_seq(run_number: int, event_id: int) -> int:
    return run_number * SEQ_BASE + event_id


def v2_position(seq: int) -> tuple[int, int]:
    """(the run's number in its thread's log, the event's id in the run's log)."""
    run_number, event_id = divmod(seq, SEQ_BASE)
    return run_number, event_id


# --- SSE frames ---------------------------------------------------------------------------------


# A frame's start for each event name seen: most runs use a handful of the same names. Names
# with a subgraph's task id are new each run, so the table stops growing at a bound.
class _Heads(dict[str, bytes]):
    def __missing__(self, name: str) -> bytes:
        head = b"event: %s\r\ndata: " % name.encode()
        if len(self) < _MAX_HEADS:
            self[name] = head
        return head


_HEADS = _Heads()
_MAX_HEADS = 4096
_FRAME = b"%s%s\r\nid: %d\r\n\r\n".__mod__


def encode_frame(event_id: int | str, name: str, data: bytes) -> bytes:
    """The SSE frame, in the real server's field order: event, data, id."""
    if isinstance(event_id, int):
        return _FRAME((_HEADS[name], data, event_id))
    return b"%s%s\r\nid: %s\r\n\r\n" % (_HEADS[name], data, event_id.encode())


# A frame's end (its id and the blank line) for the first thousand ids, and for any id its
# part after the thousands: a burst's frames are joined out of these and the thousands' head,
# instead of each id being formatted (over half of a frame's cost: 0.59 -> 0.27 us a frame).
_ENDS = [b"\r\nid: %d\r\n\r\n" % i for i in range(1000)]
_TAILS = [b"%03d\r\n\r\n" % i for i in range(1000)]


def frames_of(first_id: int, names: Sequence[str], datas: Iterable[bytes]) -> Iterator[bytes]:
    """encode_frame() of names and datas side by side, numbered from first_id, in C iterators
    without a Python step per event: a burst's frames cost about half as much made together."""
    heads = map(_HEADS.__getitem__, names)
    if first_id < 0:  # never made by a log: formatted one by one
        return map(_FRAME, zip(heads, datas, count(first_id)))
    datas = iter(datas)
    blocks = []  # the frames of each thousand ids in turn, off the same two iterators
    n, end = first_id, first_id + len(names)
    while n < end:
        thousands, low = divmod(n, 1000)
        upto = min(end - thousands * 1000, 1000)
        # islice first: zip stops there without taking an item of datas too many.
        block = islice(heads, upto - low)
        if thousands:
            head = repeat(b"\r\nid: %d" % thousands)
            blocks.append(map(b"".join, zip(block, datas, head, _TAILS[low:upto], strict=False)))
        else:
            blocks.append(map(b"".join, zip(block, datas, _ENDS[low:upto], strict=False)))
        n += upto - low
    return chain.from_iterable(blocks)


def frame_data(frame: bytes, name: str, event_id: int) -> bytes:
    """The data a frame of encode_frame(event_id, name, data) carries, sliced back out of it
    (data is one-line JSON, so its position follows from the name and the id alone)."""
    start = len(b"event: \r\ndata: ") + len(name.encode())
    return frame[start : len(frame) - len(b"\r\nid: %d\r\n\r\n" % event_id)]


def error_frame(error: str, message: str) -> bytes:
    """An `error` event the server adds to a stream itself; it carries no id."""
    data = serde.dumps({"error": error, "message": message})
    return b"event: error\r\ndata: " + data + b"\r\n\r\n"


def evicted_frame(reason: object) -> bytes:
    """What a reader gets instead of events its log no longer keeps."""
    return error_frame("EventsEvicted", f"{reason}. Read the thread state to catch up.")


def unavailable_frame(reason: object) -> bytes:
    """What a reader gets when the event bus stays away past an outage it rides out."""
    return error_frame("BusUnavailable", f"{reason}. Resume with Last-Event-ID later.")


RUN_NOT_FOUND = {"error": "HTTPException", "message": "404: Run not found"}


def run_not_found_frame() -> bytes:
    """The open server's answer to joining a run it does not know: 200 and this one event."""
    return error_frame(RUN_NOT_FOUND["error"], RUN_NOT_FOUND["message"])


# --- event ids ----------------------------------------------------------------------------------


def last_event_id(raw: str | None) -> int | None:
    """A run stream's resume point: None for none (join live), else replay after this id."""
    if raw is None or not raw.strip():
        return None
    try:
        return max(int(raw.strip()), 0)
    except ValueError:
        return 0  # an id from another server: replay what we have rather than guess


# A thread stream's frame id is `<thread seq>.<run seq>`: the run's position in the thread's
# own log and the event's in the run's log, so a reconnect resumes exactly, even between runs.
# `<thread seq>.done` marks a run's end; as a resume point it means "resume with the next run".
RUN_DONE = -1


def thread_frame_id(thread_seq: int, run_seq: int) -> str:
    return f"{thread_seq}.{run_seq}" if run_seq != RUN_DONE else f"{thread_seq}.done"


def thread_resume_point(raw: str | None) -> tuple[int, int] | None:
    """(thread seq, run seq) from a Last-Event-ID; -1 or 0 means from the thread's first run."""
    if raw is None or not raw.strip():
        return None
    head, _, tail = raw.strip().partition(".")
    try:
        thread_seq = int(head)
        run_seq = RUN_DONE if tail == "done" else int(tail or 0)
    except ValueError:
        return (0, 0)
    return (0, 0) if thread_seq <= 0 else (thread_seq, run_seq)


def join_modes(values: list[str]) -> frozenset[str] | None:
    """The modes a join asks for in its `stream_mode` query values; None for all of them.

    Repeated keys: the last one counts; a JSON array (the JS SDK) names several modes."""
    raw = values[-1] if values else ""
    if not raw:
        return None
    if raw.startswith("["):
        try:
            parsed = serde.loads(raw)
        except ValueError:
            return frozenset()
        if isinstance(parsed, list):
            return frozenset(str(m) for m in parsed) or None
        return frozenset()
    return frozenset({raw})


# --- the URLs a response names (PROTOCOL.md, "Routes") ------------------------------------------

Answer = Literal["stream", "wait", "create", "join", "cancel"]
# answer: (what Location adds to the run's URL, or None for no Location; whether
# Content-Location names the run). Quirks as the real server has them: a background create
# sends no Location, cancel?wait=1 no Content-Location, and a /wait names its run under the
# thread even when the run is stateless (its temporary thread's id).
_LOCATIONS: dict[Answer, tuple[str | None, bool]] = {
    "stream": ("/stream", True),
    "wait": ("/join", True),
    "create": (None, True),
    "join": ("/join", True),
    "cancel": ("/join", False),
}


def run_url(thread_id: str | None, run_id: str) -> str:
    """A run's URL: under its thread, or `/runs/{run_id}` for a stateless run."""
    return f"/threads/{thread_id}/runs/{run_id}" if thread_id else f"/runs/{run_id}"


def location_headers(answer: Answer, thread_id: str | None, run_id: str) -> dict[str, str]:
    """Location and Content-Location, in the order the real server sends them; `thread_id` is
    None where the URLs name a stateless run (all but a /wait's)."""
    suffix, content = _LOCATIONS[answer]
    base = run_url(thread_id, run_id)
    headers = {} if suffix is None else {"location": base + suffix}
    if content:
        headers["content-location"] = base
    return headers


def thread_stream_url(thread_id: str) -> str:
    return f"/threads/{thread_id}/stream"
