"""The wire's vocabulary (agentstream/protocol.py): its tables agree with each other, and its
parsers read ids as PROTOCOL.md says clients send them."""

from __future__ import annotations

from typing import get_args

import pytest

from agentstream import protocol


def test_every_stream_mode_a_client_may_name_has_a_row_in_the_table() -> None:
    assert set(get_args(protocol.StreamMode)) == set(protocol.STREAM_MODES)


@pytest.mark.parametrize(
    ("raw", "after"),
    [(None, None), ("", None), ("  ", None), ("-1", 0), ("0", 0), ("7", 7), (" 7 ", 7), ("x", 0)],
)
def test_last_event_id(raw: str | None, after: int | None) -> None:
    assert protocol.last_event_id(raw) == after


@pytest.mark.parametrize(
    ("raw", "point"),
    [
        (None, None),
        ("-1", (0, 0)),
        ("0", (0, 0)),
        ("3.5", (3, 5)),
        ("3", (3, 0)),
        ("3.done", (3, protocol.RUN_DONE)),
        ("junk", (0, 0)),
    ],
)
def test_thread_resume_point(raw: str | None, point: tuple[int, int] | None) -> None:
    assert protocol.thread_resume_point(raw) == point


def test_thread_frame_ids_read_back_as_resume_points() -> None:
    for run_seq in (4, protocol.RUN_DONE):
        assert protocol.thread_resume_point(protocol.thread_frame_id(3, run_seq)) == (3, run_seq)


def test_frame_data_inverts_encode_frame() -> None:
    frame = protocol.encode_frame(12, "custom|sub:1", b'{"a":1}')
    assert frame == b'event: custom|sub:1\r\ndata: {"a":1}\r\nid: 12\r\n\r\n'
    assert protocol.frame_data(frame, "custom|sub:1", 12) == b'{"a":1}'


@pytest.mark.parametrize("first", [0, 1, 998, 999, 1000, 1999, 12_345, 999_998, 1_000_000])
@pytest.mark.parametrize("n", [0, 1, 3, 1000, 2_500])
def test_frames_made_together_are_the_frames_made_one_by_one(first: int, n: int) -> None:
    """A burst's ids come out of tables (a thousand's head and a tail): across thousands and
    digit counts, each frame is what encode_frame makes of its id."""
    names = [("custom", "values", "messages|sub:1")[i % 3] for i in range(n)]
    datas = [b'{"i":%d}' % i for i in range(n)]
    together = list(protocol.frames_of(first, names, datas))
    assert together == [protocol.encode_frame(first + i, names[i], datas[i]) for i in range(n)]


def test_locations_keep_the_real_servers_quirks() -> None:
    t, r = "T", "R"
    assert protocol.location_headers("stream", None, r) == {
        "location": "/runs/R/stream",
        "content-location": "/runs/R",
    }
    assert protocol.location_headers("wait", t, r) == {
        "location": "/threads/T/runs/R/join",
        "content-location": "/threads/T/runs/R",
    }
    assert protocol.location_headers("create", t, r) == {"content-location": "/threads/T/runs/R"}
    assert protocol.location_headers("cancel", t, r) == {"location": "/threads/T/runs/R/join"}


@pytest.mark.parametrize(
    ("values", "modes"),
    [
        ([], None),
        ([""], None),
        (["custom"], {"custom"}),
        (["values", "custom"], {"custom"}),
        (['["custom","values"]'], {"custom", "values"}),
        (["[]"], None),
        (["[oops"], set()),
    ],
)
def test_join_modes(values: list[str], modes: set[str] | None) -> None:
    found = protocol.join_modes(values)
    assert (None if found is None else set(found)) == modes
