"""Cors (api/deployment.py) answers what Starlette's CORSMiddleware answers, whichever way a
request goes through it: held to Starlette's own output on a tiny app."""

from __future__ import annotations

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from agentstream.api.deployment import EXPOSED_HEADERS, Cors

ORIGIN = "https://chat.example"
# A default server's (api/deployment.cors_options without http.cors).
OPTIONS = {
    "allow_origins": ["*"],
    "allow_methods": ["*"],
    "allow_headers": ["*"],
    "expose_headers": EXPOSED_HEADERS,
}


def _answering(vary: list[bytes]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        for value in vary:
            headers += [(b"vary", value), (b"x-after", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _headers(middleware: type, vary: list[bytes], request: dict[str, str]) -> list[tuple[str, str]]:
    client = TestClient(middleware(_answering(vary), **OPTIONS))
    return list(client.get("/", headers=request).headers.multi_items())


@pytest.mark.parametrize("vary", [[], [b"Accept"], [b"Accept", b"Cookie"]])
@pytest.mark.parametrize("origin", [None, ORIGIN])
def test_cors_answers_as_starlettes_cors_middleware(vary: list[bytes], origin: str | None) -> None:
    request = {} if origin is None else {"origin": origin}
    ours = _headers(Cors, vary, request)
    assert ours == _headers(CORSMiddleware, vary, request)
    assert ("vary", ", ".join([v.decode() for v in vary] + ["Origin"])) in ours
