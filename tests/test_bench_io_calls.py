"""What benchmarks.cpu counts of a process's system calls (harness.io_calls): each write and
each read, as they happen, from /proc without tracing the process."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.harness import io_calls

# Says it is ready, waits for a line, writes five times and reads three times, says so, then
# waits for another line.
_CHILD = """
import os, sys
os.write(1, b"ready\\n")
sys.stdin.readline()
r, w = os.pipe()
for _ in range(5):
    os.write(w, b"x")
for _ in range(3):
    os.read(r, 1)
os.write(1, b"done\\n")
sys.stdin.readline()
"""


def test_each_write_and_read_of_the_process_is_counted() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"  # started: its imports read no more
        reads, writes = io_calls(child.pid)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"done\n"
        after_reads, after_writes = io_calls(child.pid)
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    assert after_writes - writes == 6  # five to the pipe, then "done"
    assert after_reads - reads == 4  # the line "go", then three from the pipe
