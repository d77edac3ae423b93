"""Time-ordered ids (UUIDv7), as LangGraph Server gives runs and threads."""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

_lock = threading.Lock()
_last_ms = 0
_counter = 0

# Random bits come from os.urandom a block at a time, ten bytes an id: a call for each id was a
# system call each, a fifth of what an id cost (about 1 of 4.9 us), and a stateless run makes
# two. A forked child starts a block of its own (_fresh_pool), so that parent and child never
# hand out the same random bits.
_POOL_BYTES = 4000
_ID_BYTES = 10
_pool = b""
_taken = 0


def _fresh_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_fresh_pool)


def uuid7() -> str:
    """A UUIDv7 whose 12-bit sequence keeps ids from one process strictly increasing."""
    global _last_ms, _counter, _pool, _taken
    with _lock:
        if _taken + _ID_BYTES > len(_pool):
            _pool, _taken = os.urandom(_POOL_BYTES), 0
        random = int.from_bytes(_pool[_taken : _taken + _ID_BYTES], "big")
        _taken += _ID_BYTES
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = (random >> 64) & 0x3FF
        seq = _counter
    rand = random & 0x3FFFFFFFFFFFFFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    # Formatted here: str(UUID(int=...)) builds and checks an object first (2.3 of the 4.9 us).
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
