"""Captures the inspector's main views into docs/ for the README: a run's lanes with its tokens,
a dropped and resumed stream, an interrupt waiting for its answer, a thread's state and history.

    .venv/bin/python scripts/screenshots.py

Starts an embedded server on the examples (a fresh database in a temporary folder) and drives
the page with the same headless Chromium the tests use (tests/test_inspector.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import EXAMPLES, serving  # noqa: E402
from tests.test_inspector import ENDED, Browser, build_inspector  # noqa: E402

DOCS = ROOT / "docs"


def capture(browser: Browser, url: str) -> None:
    browser.open(f"{url}/inspector/?assistant=agent")
    browser("waitFor", selector="#graph .node[data-node=think]")
    browser("fill", selector="#config", value='{"configurable": {"delay": 0.05}}')
    question = {"messages": [{"role": "human", "content": "how do streams survive a reconnect?"}]}
    browser.start("agent", question, target="stateless")
    browser.until(ENDED)
    browser("screenshot", path=str(DOCS / "inspector-run.png"))

    browser.open(f"{url}/inspector/?assistant=ticker")
    browser.start("ticker", {"n": 30, "delay": 0.05}, protocol="v2")
    browser.until("document.querySelectorAll('.lane[data-lane=custom] .event').length >= 8")
    browser("click", selector="#drop")
    browser.until("document.querySelector('#status').dataset.status === 'dropped'")
    browser("click", selector="#resume")
    browser("waitFor", selector="#check")
    browser("screenshot", path=str(DOCS / "inspector-resume.png"))

    browser.open(f"{url}/inspector/?assistant=hitl")
    browser.start("hitl", {"question": "Deploy to production?"})
    browser("waitFor", selector="#interrupt")
    browser("screenshot", path=str(DOCS / "inspector-interrupt.png"))
    thread = browser.text("#watch-thread")
    browser("fill", selector="#interrupt-answer", value=json.dumps("yes, after lunch"))
    browser("click", selector="#interrupt-send")
    browser.until(ENDED)
    browser("click", selector="#tab-threads")
    browser("click", selector=f".thread[data-thread='{thread}'] button")
    browser("waitFor", selector=f"#thread-detail[data-thread='{thread}']")
    browser("screenshot", path=str(DOCS / "inspector-threads.png"))


def main() -> None:
    build_inspector()
    DOCS.mkdir(exist_ok=True)
    browser = Browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with serving("embedded", EXAMPLES, Path(tmp) / "shots.sqlite") as (url,):
                capture(browser, url)
    finally:
        browser.close()
    print("wrote", ", ".join(sorted(p.name for p in DOCS.glob("inspector-*.png"))))


if __name__ == "__main__":
    main()
