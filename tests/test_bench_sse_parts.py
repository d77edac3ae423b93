"""The benchmark's raw client reads SSE as any client would, however a body is cut into chunks:
its one-pass reading of agentstream's frames (benchmarks.clients._FRAME) yields what reading
each frame line by line does, and frames of any other shape are read line by line."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import orjson

from benchmarks.clients import Part, _parse_frame, sse_parts


def _frames(rng: random.Random) -> tuple[bytes, list[Part]]:
    """A body of frames of every shape a server may send, and the parts a client must read."""
    body, parts = [], []
    for i in range(300):
        data = {"tick": i, "text": "é\u2028" * rng.randint(0, 3)}
        shape = rng.choice(
            ["ours", "ours", "ours", "no id", "lf", "comment", "two lines", "id first"]
        )
        line = orjson.dumps(data)
        if shape == "ours":
            body.append(b"event: custom\r\ndata: %s\r\nid: %d\r\n\r\n" % (line, i))
        elif shape == "no id":
            body.append(b"event: values\r\ndata: %s\r\n\r\n" % line)
        elif shape == "lf":
            body.append(b"event: custom\ndata: %s\nid: %d\n\n" % (line, i))
        elif shape == "comment":
            body.append(b": heartbeat\r\n\r\n")
            continue
        elif shape == "two lines":  # JSON spread over two data lines
            body.append(b'event: updates\r\ndata: {"tick":\r\ndata: %d}\r\n\r\n' % i)
            parts.append(("updates", {"tick": i}))
            continue
        else:
            body.append(b"id: %d\r\nevent: custom\r\ndata: %s\r\n\r\n" % (i, line))
        parts.append(("values" if shape == "no id" else "custom", data))
    return b"".join(body), parts


async def _chunks(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for cut in [*cuts, len(body)]:
        yield body[at:cut]
        at = cut


async def test_every_frame_read_however_the_body_is_cut() -> None:
    rng = random.Random(17)
    for _ in range(40):
        body, expected = _frames(rng)
        # Line by line, the whole body at once: the reading the fast path must agree with.
        frames = body.replace(b"\r\n", b"\n").split(b"\n\n")
        assert [p for p in map(_parse_frame, frames) if p is not None] == expected
        cuts = sorted(rng.sample(range(1, len(body)), rng.choice([1, 5, 50, 400])))
        assert [part async for part in sse_parts(_chunks(body, cuts))] == expected


async def test_a_body_cut_inside_every_crlf_is_read_whole() -> None:
    body = b"".join(b"event: custom\r\ndata: %d\r\nid: %d\r\n\r\n" % (i, i) for i in range(20))
    cuts = [i + 1 for i in range(len(body) - 1) if body[i : i + 1] == b"\r"]
    parts = [part async for part in sse_parts(_chunks(body, cuts))]
    assert parts == [("custom", i) for i in range(20)]
