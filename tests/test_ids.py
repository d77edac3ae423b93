"""Run and thread ids: UUIDv7, strictly increasing in a process, never shared with a fork."""

from __future__ import annotations

import os
import time
from uuid import UUID

from agentstream.ids import uuid7


def _random_bits(value: str) -> int:
    """The 62 random bits of a UUIDv7 (after its variant)."""
    return UUID(value).int & ((1 << 62) - 1)


def test_uuid7_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    parsed = UUID(value)
    assert str(parsed) == value  # canonical: lower case, dashes where UUID puts them
    assert parsed.version == 7
    assert parsed.variant == "specified in RFC 4122"
    assert before <= parsed.int >> 80 <= after + 1  # +1: the sequence may run into the next ms


def test_uuid7_strictly_increases_and_never_repeats() -> None:
    # Many within one millisecond: the sequence orders them, and random bits past the pool's
    # first block (400 ids) keep coming.
    values = [uuid7() for _ in range(5_000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert len({_random_bits(v) for v in values}) == len(values)


def test_a_forked_child_draws_random_bits_of_its_own() -> None:
    uuid7()  # the parent's block of random bits is now drawn, and a child would inherit it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids to the parent, then out without running pytest's exit
        try:
            os.write(write, "\n".join(uuid7() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = [uuid7() for _ in range(50)]
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    assert len(child) == 50
    # Had the child drawn from the parent's block, its k-th id would carry the parent's k-th
    # random bits.
    assert {_random_bits(v) for v in parent}.isdisjoint({_random_bits(v) for v in child})
