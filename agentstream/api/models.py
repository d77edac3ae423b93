"""Request bodies, validated the way LangGraph Server validates them (unknown keys ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.protocol import StreamMode, ThreadStatus

# Offsets and versions reach SQL as 64-bit integers; a larger one is a 422, not a crash.
MAX_INT64 = 2**63 - 1
# The furthest a run may be delayed: ten years. Unbounded, a due time past year 9999 once
# stopped every claim loop that looked for the next due run.
MAX_AFTER_SECONDS = 10 * 365 * 24 * 3600
# LangGraph counts supersteps against recursion_limit; past a 32-bit count it means "no limit".
MAX_RECURSION_LIMIT = 2**31 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Command(_Body):
    update: Any = None
    resume: Any = None
    goto: Any = None


class Checkpoint(_Body):
    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class RunConfig(BaseModel):
    """A run's config: the keys LangGraph reads are checked here, so a bad one is a 422 at the
    edge rather than a failed run; anything else is kept as sent."""

    model_config = ConfigDict(extra="allow")

    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    configurable: dict[str, Any] | None = None
    run_name: str | None = None
    recursion_limit: int | None = Field(default=None, ge=1, le=MAX_RECURSION_LIMIT, strict=True)
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_RECURSION_LIMIT, strict=True)


class RunCreate(_Body):
    """The body of every run-creating route; route-specific fields are checked by the route."""

    assistant_id: str
    input: Any = None
    command: Command | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    webhook: str | None = None
    feedback_keys: list[str] | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: str | None = None
    checkpoint_during: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    after_seconds: float | None = Field(
        default=None, ge=0, le=MAX_AFTER_SECONDS, allow_inf_nan=False
    )
    if_not_exists: Literal["create", "reject"] = "reject"
    on_completion: Literal["delete", "keep"] = "delete"
    # Only the threaded routes define multitask_strategy and only the stream routes
    # on_disconnect; elsewhere the real server ignores them, so they are validated per route.
    multitask_strategy: Any = None
    on_disconnect: Any = None


class ThreadCreate(_Body):
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[dict[str, Any]] | None = None
    ttl: Any = None


class ThreadPatch(_Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: Any = None


class ThreadSearch(_Body):
    ids: list[str] | None = None
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatus | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INT64)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


class ThreadCount(_Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatus | None = None


class StateUpdate(_Body):
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: str | None = None


class StateCheckpoint(_Body):
    checkpoint: Checkpoint
    subgraphs: bool = False


class HistoryQuery(_Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: str | Checkpoint | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: Checkpoint | None = None


class AssistantCreate(_Body):
    graph_id: str
    assistant_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: str | None = None
    description: str | None = None


class AssistantPatch(_Body):
    graph_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None


class AssistantSearch(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INT64)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


class AssistantCount(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None


class AssistantVersions(_Body):
    metadata: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INT64)


class SetLatest(_Body):
    version: int = Field(ge=-MAX_INT64, le=MAX_INT64)


class CancelMany(_Body):
    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None
