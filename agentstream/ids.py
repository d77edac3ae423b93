"""Time-ordered ids (UUIDv7), as LangGraph Server gives runs and threads."""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 whose 12-bit sequence keeps ids from one process strictly increasing."""
    global _last_ms, _counter
    random = int.from_bytes(os.urandom(10), "big")  # one system call for all its random bits
    with _lock:
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
    return str(UUID(int=value))


def is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
