"""The authenticated user as auth handlers and graphs see it: a dict that answers by attribute."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AuthUser(dict[str, Any]):
    """`user["identity"]` and `user.identity` both work, as langgraph_sdk's BaseUser protocol
    asks. A plain dict underneath, so it is stored with a run as JSON and rebuilt from it by
    whichever process executes the run."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # Dunder lookups (copy, pickle) must fall through to the defaults, never to a key.
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def identity(self) -> str:
        return str(self.get("identity") or "")

    @property
    def permissions(self) -> list[str]:
        return list(self.get("permissions") or [])

    @property
    def display_name(self) -> str:
        return str(self.get("display_name") or self.identity)

    @property
    def is_authenticated(self) -> bool:
        return bool(self.get("is_authenticated"))


def rebuild(stored: Mapping[str, Any] | None) -> AuthUser | None:
    return None if stored is None else AuthUser(stored)
