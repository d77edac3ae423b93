"""The web inspector's files at /inspector: served ahead of authentication (the page carries no
secret; its API calls carry the user's key), or a page saying how to build them."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from agentstream.graphs import Config

PREFIX = "/inspector"
# Built by `npm run build` in inspector/ (scripts/test.sh does it); shipped in the wheel.
STATIC = Path(__file__).resolve().parent.parent / "inspector" / "static"

_NOT_BUILT = """<!doctype html>
<html><head><meta charset="utf-8"><title>agentstream inspector: not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The inspector is not built</h1>
<p>This agentstream runs from a source checkout whose web inspector has not been built
(a wheel ships it built). Build it once with Node.js 20 or later:</p>
<pre>cd inspector
npm ci
npm run build</pre>
<p>It writes <code>agentstream/inspector/static/</code>; then reload this page.
The API itself works without it.</p>
</body></html>
"""


def enabled(config: Config) -> bool:
    """On unless langgraph.json says `http.disable_inspector`."""
    return not config.http.get("disable_inspector")


class InspectorFiles:
    """GET /inspector/... answers from the built files; every other request passes on."""

    def __init__(self, app: ASGIApp, directory: Path = STATIC) -> None:
        self.app = app
        self.directory = directory
        self.files = StaticFiles(directory=directory, html=True, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if path == PREFIX:
            # Relative asset URLs in the page resolve against the folder.
            await RedirectResponse(PREFIX + "/", status_code=307)(scope, receive, send)
            return
        if not (self.directory / "index.html").is_file():
            await HTMLResponse(_NOT_BUILT, status_code=404)(scope, receive, send)
            return
        inner = dict(scope, path=path[len(PREFIX) :], root_path="")
        await self.files(inner, receive, send)
