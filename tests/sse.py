"""One lenient reader of raw SSE bodies for the tests that look past the SDKs (test_wire.py
keeps its own strict one, which also checks the bytes)."""

from __future__ import annotations

import json
from typing import Any


def sse_events(body: str) -> list[tuple[str, Any]]:
    """(event, parsed data) of each frame of a raw SSE body; comments and heartbeats skipped."""
    return [(event, data) for _, event, data in sse_frames(body)]


def sse_frames(body: str) -> list[tuple[str | None, str, Any]]:
    """sse_events() with each frame's id first (None where it has none)."""
    frames = []
    for frame in body.split("\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in frame.split("\r\n") if ": " in line)
        if "event" in fields:
            frames.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return frames
