"""An auth file written the way the LangGraph docs show: users by token, each user's threads
stamped with an owner on create and filtered by it everywhere else, and one action that needs a
permission. The tests run it unchanged on agentstream."""

from typing import Any

from langgraph_sdk import Auth

auth = Auth()

# In a real deployment these come from your identity provider.
VALID_TOKENS = {
    "alice-token": {"id": "alice", "name": "Alice", "permissions": ["assistants:write"]},
    "bob-token": {"id": "bob", "name": "Bob", "permissions": []},
}


@auth.authenticate
async def get_current_user(
    authorization: str | None,
    headers: dict[bytes, bytes],
    path: str,
    method: str,
    path_params: dict[str, Any],
    query_params: dict[str, Any],
) -> Auth.types.MinimalUserDict:
    # The Python SDK sends api_key as x-api-key; browsers and curl send a Bearer token.
    token = headers.get(b"x-api-key", b"").decode() or None
    if token is None:
        assert authorization, "no credentials"  # any error but HTTPException is a plain 401
        scheme, token = authorization.split()
        assert scheme.lower() == "bearer"
    if token == "banned-token":
        raise Auth.exceptions.HTTPException(status_code=403, detail="This account is suspended")
    if token not in VALID_TOKENS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid token")
    user = VALID_TOKENS[token]
    found: dict[str, Any] = {
        "identity": user["id"],
        "display_name": user["name"],
        "permissions": user["permissions"],
    }
    if b"x-probe" in headers:
        # What this handler was given, for a graph to report back (tests/auth_app/graphs.py).
        kinds = {f"{type(k).__name__}:{type(v).__name__}" for k, v in headers.items()}
        found["probe"] = {
            "header_types": sorted(kinds),
            "path": path,
            "method": method,
            "path_params": path_params,
            "query_params": query_params,
        }
    return found


@auth.on
async def owner_only(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, Any]:
    """Everything not named more precisely below: stamp the caller as owner, see only theirs."""
    filters = {"owner": ctx.user.identity}
    metadata = value.setdefault("metadata", {})
    metadata.update(filters)
    return filters


@auth.on.threads.search
async def search_own_threads(
    ctx: Auth.types.AuthContext, value: Auth.types.on.threads.search.value
) -> Auth.types.FilterType:
    return {"owner": {"$eq": ctx.user.identity}}


@auth.on.assistants
async def shared_assistants(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """Everyone may read and use every assistant."""
    return None


@auth.on.assistants.create
async def editors_create(
    ctx: Auth.types.AuthContext, value: Auth.types.on.assistants.create.value
) -> None:
    if "assistants:write" not in ctx.permissions:
        raise Auth.exceptions.HTTPException(status_code=403, detail="Editors only")
    value["metadata"]["owner"] = ctx.user.identity


@auth.on.assistants.delete
async def editors_delete(
    ctx: Auth.types.AuthContext, value: Auth.types.on.assistants.delete.value
) -> bool:
    return "assistants:write" in ctx.permissions


@auth.on.store
async def own_memories(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """Each user's store lives under their identity, as the LangGraph docs scope it: what alice
    calls ("memories",) is ("alice", "memories") in the store, and nobody can name another's."""
    value["namespace"] = (ctx.user.identity, *(value.get("namespace") or ()))


@auth.on.store.put
async def no_writes_to_the_archive(
    ctx: Auth.types.AuthContext, value: Auth.types.on.store.put.value
) -> bool:
    if value["namespace"][:1] == ("archive",):
        return False
    value["namespace"] = (ctx.user.identity, *value["namespace"])
    return True
