"""The README's runnable examples, run as a user would run them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, ServerProcess


def test_resume_example_gets_every_tick_once(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "resume_stream.py"), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("ticks "))
    assert line == "ticks " + str(list(range(20)))
