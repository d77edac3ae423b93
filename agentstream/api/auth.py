"""Who is calling, and what they may do: the user's langgraph_sdk.Auth (`auth.path` in
langgraph.json), shared API keys, or nobody (an open server).

Authentication is a pure ASGI middleware: it covers every path, unknown ones and wrong methods
included, and passes event streams through untouched. Authorization happens in the routes,
through `ApiContext.authorize`, with the user this middleware left in the request's state.
Over 400 lines, on purpose: every auth decision (authenticate, pick the handler, check what it
returns) is read in this one module.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from fastapi import HTTPException
from langgraph_sdk import Auth
from langgraph_sdk.auth.exceptions import HTTPException as AuthHTTPException
from langgraph_sdk.auth.types import AuthContext
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream import serde
from agentstream.api.errors import response_for
from agentstream.graphs import Config, GraphLoadError, import_object
from agentstream.storage.base import Filter
from agentstream.users import AuthUser

log = logging.getLogger("agentstream.auth")

# Health checks, server information and the API description answer without credentials.
# /metrics does not: it tells how busy the server is, and Prometheus can send a bearer token.
PUBLIC_PATHS = frozenset(
    {"/", "/ok", "/info", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
AUTHENTICATE_PARAMETERS = frozenset(
    {"request", "body", "path", "method", "path_params", "query_params", "headers", "authorization"}
)
FILTER_OPERATORS = frozenset({"$eq", "$contains"})
# Response headers the SDKs read (reconnect locations, pagination), readable cross-origin.

_USER = "agentstream.user"

Handler = Callable[..., Any]


class Denied(StarletteHTTPException):
    """A request that did not authenticate; it leaves as `status {"detail": ...}`."""

    def __init__(
        self, status_code: int, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)


class Incoming:
    """One request as an authenticate handler may ask for it. A body it reads is kept and
    replayed to the route."""

    def __init__(self, scope: Scope, receive: Receive, routes: Sequence[BaseRoute]) -> None:
        self.scope = scope
        self._receive = receive
        self._routes = routes
        self._read: list[Message] = []
        self.request = Request(scope, self._record)

    async def _record(self) -> Message:
        message = await self._receive()
        self._read.append(message)
        return message

    async def replay(self) -> Message:
        if self._read:
            return self._read.pop(0)
        return await self._receive()

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.scope["headers"])

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def body(self) -> Any:
        raw = await self.request.body()
        try:
            return serde.loads(raw) if raw else None
        except ValueError:
            return None

    def path_params(self) -> dict[str, Any]:
        # The route has not been chosen yet: find it the way the router will.
        partial: dict[str, Any] | None = None
        for route in self._routes:
            match, child = route.matches(self.scope)
            if match is Match.FULL:
                return dict(child.get("path_params", {}))
            if match is Match.PARTIAL and partial is None:
                partial = dict(child.get("path_params", {}))
        return partial or {}


class Gate:
    """How requests prove who they are, and what each user may do."""

    description = "open"

    async def authenticate(self, incoming: Incoming) -> AuthUser | None:
        return None

    def authorizes(self, resource: str, action: str) -> bool:
        return False

    async def authorize(
        self, user: AuthUser | None, resource: str, action: str, value: dict[str, Any]
    ) -> Filter | None:
        return None


class KeyGate(Gate):
    """One of a few shared keys, as `x-api-key` or `Authorization: Bearer <key>`."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [key.encode() for key in keys]
        self.description = f"an API key is required ({len(keys)} configured)"

    async def authenticate(self, incoming: Incoming) -> AuthUser | None:
        presented = _presented_key(incoming)
        challenge = {"www-authenticate": "Bearer"}
        if presented is None:
            raise Denied(
                401, "Missing API key: send it as x-api-key or Authorization: Bearer.", challenge
            )
        # Compare with every key, so the time taken does not tell which one nearly matched.
        matches = [hmac.compare_digest(presented, key) for key in self._keys]
        if not any(matches):
            raise Denied(401, "Invalid API key.", challenge)
        return None


def _presented_key(incoming: Incoming) -> bytes | None:
    key = incoming.headers.get(b"x-api-key", b"").strip()
    if key:
        return key
    scheme, _, token = incoming.headers.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return None


class AuthGate(Gate):
    """The handlers of a langgraph_sdk.Auth: authenticate on every request, then the most
    specific `on` handler for each resource and action a route touches."""

    def __init__(self, auth: Auth, spec: str) -> None:
        self.auth = auth
        self.description = f"auth handlers from {spec}"
        self._authenticate = auth._authenticate_handler
        self._wanted = _parameters(self._authenticate) if self._authenticate else frozenset()

    async def authenticate(self, incoming: Incoming) -> AuthUser | None:
        if self._authenticate is None:
            return anonymous()
        arguments = await _arguments(self._wanted, incoming)
        try:
            returned: Any = self._authenticate(**arguments)
            result = await returned if inspect.isawaitable(returned) else returned
        except (AuthHTTPException, StarletteHTTPException) as exc:
            raise Denied(exc.status_code, str(exc.detail), exc.headers) from None
        except Exception as exc:
            # The wire learns nothing of the handler; the log keeps what went wrong.
            log.warning("authenticate raised %s: %s; answering 401", type(exc).__name__, exc)
            raise Denied(401, "Unauthorized") from None
        try:
            return normalise_user(result)
        except (TypeError, ValueError) as exc:
            log.error("authenticate returned an unusable user: %s", exc)
            raise Denied(401, "Unauthorized") from None

    def _handler(self, resource: str, action: str) -> Handler | None:
        handlers = self.auth._handlers
        for key in ((resource, action), (resource, "*"), ("*", action)):
            if handlers.get(key):
                return handlers[key][-1]
        return self.auth._global_handlers[-1] if self.auth._global_handlers else None

    def authorizes(self, resource: str, action: str) -> bool:
        return self._handler(resource, action) is not None

    async def authorize(
        self, user: AuthUser | None, resource: str, action: str, value: dict[str, Any]
    ) -> Filter | None:
        handler = self._handler(resource, action)
        if handler is None:
            return None
        who = user if user is not None else anonymous()
        context = AuthContext(
            permissions=who.permissions,
            user=cast(Any, who),
            resource=cast(Any, resource),
            action=cast(Any, action),
        )
        try:
            result = await handler(ctx=context, value=value)
        except AuthHTTPException as exc:
            raise HTTPException(exc.status_code, str(exc.detail), exc.headers) from None
        if result is False:
            raise HTTPException(403, "Forbidden")
        if result is None or result is True:
            return None
        if isinstance(result, Mapping):
            return checked_filter(result, f"{resource}.{action}")
        raise TypeError(
            f"the auth handler for {resource}.{action} returned {type(result).__name__}; "
            "expected None, True, False or a filter dict"
        )


def _parameters(handler: Handler) -> frozenset[str]:
    names = set()
    for param in inspect.signature(handler).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name in AUTHENTICATE_PARAMETERS:
            names.add(param.name)
        elif param.default is param.empty:
            raise GraphLoadError(
                f"the authenticate handler asks for {param.name!r}; it may ask for "
                + ", ".join(sorted(AUTHENTICATE_PARAMETERS))
            )
    return frozenset(names)


async def _arguments(wanted: frozenset[str], incoming: Incoming) -> dict[str, Any]:
    scope = incoming.scope
    arguments: dict[str, Any] = {}
    for name in wanted:
        if name == "request":
            arguments[name] = incoming.request
        elif name == "body":
            arguments[name] = await incoming.body()
        elif name == "path":
            arguments[name] = scope["path"]
        elif name == "method":
            arguments[name] = scope["method"]
        elif name == "path_params":
            arguments[name] = incoming.path_params()
        elif name == "query_params":
            arguments[name] = dict(incoming.request.query_params)
        elif name == "headers":
            arguments[name] = incoming.headers
        elif name == "authorization":
            arguments[name] = incoming.header(b"authorization")
    return arguments


def anonymous() -> AuthUser:
    return AuthUser(identity="", permissions=[], display_name="", is_authenticated=False)


def normalise_user(result: Any) -> AuthUser:
    """A string identity, a dict with `identity`, or a BaseUser-like object, as one JSON dict:
    identity, permissions, display_name, is_authenticated and whatever else it carried."""
    if isinstance(result, str):
        fields: dict[str, Any] = {"identity": result}
    elif isinstance(result, Mapping):
        fields = dict(result)
    elif hasattr(result, "identity"):
        fields = _object_fields(result)
    else:
        raise TypeError(f"{type(result).__name__} is neither an identity, a dict nor a user")
    identity = fields.get("identity")
    if identity is None or identity == "":
        raise ValueError("the user has no identity")
    permissions = fields.get("permissions") or []
    if isinstance(permissions, str):
        permissions = [permissions]
    user = {
        **fields,
        "identity": str(identity),
        "permissions": [str(p) for p in permissions],
        "display_name": str(fields.get("display_name") or identity),
        "is_authenticated": True,
    }
    return AuthUser(serde.to_jsonable(user))


def _object_fields(user: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if callable(getattr(user, "keys", None)) or callable(getattr(user, "__iter__", None)):
        try:
            fields = {str(key): user[key] for key in user}
        except Exception:
            fields = {}
    for name in ("identity", "permissions", "display_name"):
        try:
            fields[name] = getattr(user, name)
        except Exception:
            continue
    return fields


def checked_filter(result: Mapping[str, Any], where: str) -> Filter:
    """A handler's filter, refused loudly if storage could not apply it as meant."""
    for key, condition in result.items():
        if not isinstance(key, str) or not _supported(condition):
            raise ValueError(
                f"the auth handler for {where} returned the filter {key!r}: {condition!r}; "
                "a filter maps a metadata key to a value, {'$eq': value} or {'$contains': value}"
            )
    return dict(result)


def _supported(condition: Any) -> bool:
    if not isinstance(condition, Mapping):
        return True
    operators = [op for op in condition if str(op).startswith("$")]
    return not operators or (len(condition) == 1 and operators[0] in FILTER_OPERATORS)


# --- the middleware --------------------------------------------------------------------------


class Authenticate:
    """Every request but the public paths and CORS preflights must authenticate; the user is
    left in the request's state for the routes."""

    def __init__(self, app: ASGIApp, gate: Gate, router: Router) -> None:
        self.app = app
        self.gate = gate
        self.router = router
        self._routes: list[BaseRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._socket(scope, receive, send)
            return
        if scope["type"] != "http" or _exempt(scope):
            await self.app(scope, receive, send)
            return
        if self._routes is None:
            # Routes are all included by the first request.
            self._routes = flat_routes(self.router.routes)
        incoming = Incoming(scope, receive, self._routes)
        try:
            user = await self.gate.authenticate(incoming)
        except Denied as exc:
            response = response_for(exc)
            assert response is not None  # an HTTPException always has its answer
            await response(scope, incoming.replay, send)
            return
        scope.setdefault("state", {})[_USER] = user
        await self.app(scope, incoming.replay, send)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake authenticates as a GET with its headers and no body. A refused
        one is accepted and closed with 4000 + the status (4401, 4403), which clients can read,
        unlike a refused handshake; the app never sees it, so no command is read."""
        if self._routes is None:
            self._routes = flat_routes(self.router.routes)
        state = scope.setdefault("state", {})
        handshake = {**scope, "type": "http", "method": "GET", "state": state}

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        try:
            user = await self.gate.authenticate(Incoming(handshake, no_body, self._routes))
        except Denied as exc:
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                code = 4000 + exc.status_code if 400 <= exc.status_code < 1000 else 4401
                await send({"type": "websocket.close", "code": code, "reason": exc.detail[:120]})
            return
        state[_USER] = user
        await self.app(scope, receive, send)


def flat_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """Every route, in the router's order, with included routers opened up: recent FastAPI
    keeps an included router as one entry whose match does not say the path parameters."""
    flat: list[BaseRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if isinstance(included, Router):
            flat += flat_routes(included.routes)
        else:
            flat.append(route)
    return flat


def _exempt(scope: Scope) -> bool:
    if scope["path"] in PUBLIC_PATHS:
        return True
    headers = dict(scope["headers"])
    return scope["method"] == "OPTIONS" and b"access-control-request-method" in headers


def current_user(request: Request) -> AuthUser | None:
    """Who sent this request; None on an open server or with shared API keys."""
    state = request.scope.get("state")
    user = state.get(_USER) if isinstance(state, Mapping) else None
    return user if isinstance(user, AuthUser) else None


# --- configuration ---------------------------------------------------------------------------


def load_gate(config: Config, api_keys: Sequence[str]) -> Gate | None:
    """`auth.path` in langgraph.json, else the shared API keys, else None: an open server."""
    if config.auth is not None and not isinstance(config.auth, Mapping):
        raise GraphLoadError(f"auth in {config.path} must be an object")
    spec = (config.auth or {}).get("path")
    if spec:
        if api_keys:
            log.warning("langgraph.json sets auth.path, so the API keys given are not used")
        return AuthGate(_load_auth(str(spec), config), str(spec))
    if api_keys:
        return KeyGate(api_keys)
    return None


def _load_auth(spec: str, config: Config) -> Auth:
    try:
        found = import_object(spec, config.root)
    except GraphLoadError as exc:
        raise GraphLoadError(f"auth.path {spec!r}: {exc}") from None
    if not isinstance(found, Auth):
        raise GraphLoadError(
            f"auth.path {spec!r} is a {type(found).__name__}, not a langgraph_sdk.Auth"
        )
    if found._authenticate_handler is None:
        log.warning("%s has no authenticate handler: every request is anonymous", spec)
    return found
