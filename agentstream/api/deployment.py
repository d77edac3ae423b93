"""Fitting a deployment, from langgraph.json's `http` block: CORS, the request headers that reach
a run's config, the user's own app mounted beside ours, and the route families switched off."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream.graphs import Config, GraphLoadError, import_object

log = logging.getLogger("agentstream")

# What browsers may read of our responses: pagination and the stream's reconnect target.
EXPOSED_HEADERS = ["content-location", "location", "x-pagination-total", "x-pagination-next"]
# Credentials that never reach a graph's config, whatever the patterns say.
NEVER_PASSED = frozenset({"authorization", "x-api-key", "x-tenant-id", "x-service-key"})
# The route families `http.disable_<family>` switches off.
FAMILIES = ("assistants", "threads", "runs", "store", "meta")


def cors_options(config: Config) -> dict[str, Any]:
    """CORSMiddleware's options. Without `http.cors` any origin may call the API, as on
    LangGraph's own server (a frontend served from another origin works out of the box);
    `http.cors` narrows it."""
    cors = config.http.get("cors")
    if not cors:
        return {
            "allow_origins": ["*"],
            "allow_methods": ["*"],
            "allow_headers": ["*"],
            "expose_headers": EXPOSED_HEADERS,
        }
    if not isinstance(cors, Mapping):
        raise GraphLoadError(f"http.cors in {config.path} must be an object")
    return {
        "allow_origins": list(cors.get("allow_origins") or []),
        "allow_origin_regex": cors.get("allow_origin_regex"),
        "allow_methods": list(cors.get("allow_methods") or ["*"]),
        "allow_headers": list(cors.get("allow_headers") or ["*"]),
        "allow_credentials": bool(cors.get("allow_credentials", False)),
        "expose_headers": list(cors.get("expose_headers") or EXPOSED_HEADERS),
        "max_age": int(cors.get("max_age", 600)),
    }


class Cors(CORSMiddleware):
    """Starlette's CORS, with a short way through for a request that names no Origin (the SDKs,
    RemoteGraph, curl: every client but a browser). For those Starlette only adds `Vary: Origin`
    to the response, but it reads the request's headers into a Headers and the response's into
    a MutableHeaders to do it: about 60,000 instructions a stateless run (1.1 %), for one
    header. Here the same header, the same way; a request with an Origin goes through
    Starlette's own code."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def vary_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_vary_origin(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, vary_origin)


def _with_vary_origin(given: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with Origin added to Vary as Starlette adds it: every Vary joined into the
    first one's place, Origin last."""
    headers = list(given)
    found = [i for i, (name, _) in enumerate(headers) if name == b"vary"]
    if not found:
        headers.append((b"vary", b"Origin"))
        return headers
    joined = b", ".join([headers[i][1] for i in found] + [b"Origin"])
    for i in reversed(found[1:]):
        del headers[i]
    headers[found[0]] = (b"vary", joined)
    return headers


@dataclass(frozen=True)
class HeaderPassthrough:
    """Which request headers a run gets in `config["configurable"]` (`http.configurable_headers`:
    lower-cased names matching an `include` pattern and no `exclude` one; `*` is a wildcard).
    With no patterns, none: as LangGraph's server 0.16 behaves."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> HeaderPassthrough:
        raw = config.http.get("configurable_headers") or {}
        if not isinstance(raw, Mapping):
            raise GraphLoadError(f"http.configurable_headers in {config.path} must be an object")
        include = raw.get("includes") or raw.get("include") or []
        exclude = raw.get("excludes") or raw.get("exclude") or []
        return cls(tuple(p.lower() for p in include), tuple(p.lower() for p in exclude))

    def __bool__(self) -> bool:
        return bool(self.include)

    def select(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            name: value
            for name, value in ((k.lower(), v) for k, v in headers.items())
            if name not in NEVER_PASSED
            and any(fnmatch.fnmatchcase(name, p) for p in self.include)
            and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        }


def disabled_families(config: Config) -> frozenset[str]:
    return frozenset(f for f in FAMILIES if config.http.get(f"disable_{f}"))


def load_custom_app(config: Config) -> Any:
    """The user's Starlette or FastAPI app named by `http.app` ("./file.py:app")."""
    spec = config.http.get("app")
    if not spec:
        return None
    try:
        app = import_object(str(spec), config.root)
    except GraphLoadError as exc:
        raise GraphLoadError(f"http.app: {exc}") from None
    except Exception as exc:
        raise GraphLoadError(f"http.app: importing {spec} failed: {exc!r}") from exc
    if not hasattr(app, "router") or not hasattr(app.router, "routes"):
        raise GraphLoadError(f"http.app: {spec} is not a Starlette or FastAPI app")
    return app


class CustomRoutes:
    """Requests that one of the user's routes matches go to the user's app, ahead of ours (so a
    user's route may shadow one of ours, as on LangGraph's server); all others to ours. With
    `enable_custom_route_auth` the user's routes sit behind our authentication too."""

    def __init__(self, app: ASGIApp, *, user_app: Any, entry: ASGIApp) -> None:
        self.app = app
        self.user_app = user_app
        self.entry = entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self._matches(scope):
            await self.entry(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _matches(self, scope: Scope) -> bool:
        for route in self.user_app.router.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return True
        return False
