"""Webhooks: when a run that names one ends, POST the run with its final values to that URL.

Sent by the worker that settled the run, after its log is closed, from a task of its own: a
slow or failing receiver never delays a run or its stream. Retried with backoff on timeouts,
network errors, 5xx and 429. URLs are checked when the run is created (WebhookPolicy, from
langgraph.json's `webhooks`, LangGraph Server's keys) and again before sending, against what
the name resolves to then: by default loopback, private and link-local targets are refused,
so a webhook cannot become a way into the server's own network."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentstream import serde
from agentstream.graphs import Config, GraphLoadError

log = logging.getLogger("agentstream.webhooks")

RETRY_DELAYS = (0.5, 2.0, 8.0)  # after the first try: four tries in all
TIMEOUT_SECONDS = 10.0
PAYLOAD_FIELDS = frozenset({
    "run_id", "thread_id", "assistant_id", "created_at", "updated_at", "metadata", "kwargs",
    "multitask_strategy", "status", "run_started_at", "run_ended_at", "webhook_sent_at",
    "values", "error",
})  # fmt: skip
_TEMPLATE = re.compile(r"\$\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class WebhookRefused(Exception):
    """A webhook URL the policy does not allow; the message says why."""


@dataclass(frozen=True)
class WebhookPolicy:
    require_https: bool = False
    allowed_domains: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = ()
    max_url_length: int = 4096
    allow_loopback: bool = False
    allow_private: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    allowed_fields: frozenset[str] | None = None
    disabled: bool = False

    @classmethod
    def from_config(cls, config: Config) -> WebhookPolicy:
        raw = config.webhooks or {}
        if not isinstance(raw, Mapping):
            raise GraphLoadError(f"webhooks in {config.path} must be an object")
        url = raw.get("url")
        policy = url if isinstance(url, Mapping) else {}
        fields = raw.get("allowed_fields")
        return cls(
            # As on LangGraph Server: a url block means https unless it says otherwise.
            require_https=bool(policy.get("require_https", url is not None)),
            allowed_domains=tuple(d.strip().lower() for d in policy.get("allowed_domains") or ()),
            allowed_ports=tuple(int(p) for p in policy.get("allowed_ports") or ()),
            max_url_length=int(policy.get("max_url_length", 4096)),
            allow_loopback=not policy.get("disable_loopback", True),
            allow_private=not policy.get("disable_private_ips", True),
            headers=_headers(raw.get("headers") or {}, str(raw.get("env_prefix", "LG_WEBHOOK_"))),
            allowed_fields=frozenset(fields) & PAYLOAD_FIELDS if fields else None,
            disabled=bool(config.http.get("disable_webhooks")),
        )

    async def check(self, url: str) -> None:
        """Raises WebhookRefused unless url may be called, as it resolves now."""
        if len(url) > self.max_url_length:
            raise WebhookRefused(f"Webhook URL too long (over {self.max_url_length} characters)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookRefused("Webhook must be an absolute http(s) URL")
        if self.require_https and parts.scheme != "https":
            raise WebhookRefused("Webhook must use https")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if self.allowed_ports and port not in self.allowed_ports:
            raise WebhookRefused(f"Webhook port {port} not allowed")
        host = parts.hostname.lower()
        if self.allowed_domains and not any(_matches(host, d) for d in self.allowed_domains):
            raise WebhookRefused("Webhook domain not allowed")
        for address in await _addresses(host, port):
            self._check_address(address)

    def _check_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        if address.is_loopback and not self.allow_loopback:
            raise WebhookRefused(
                "Webhook host blocked: loopback targets are refused unless langgraph.json sets "
                "webhooks.url.disable_loopback to false"
            )
        private = address.is_private or address.is_link_local or address.is_reserved
        if private and not address.is_loopback and not self.allow_private:
            raise WebhookRefused(
                "Webhook host blocked: private and link-local targets are refused unless "
                "langgraph.json sets webhooks.url.disable_private_ips to false"
            )


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookRefused(f"Webhook host {host!r} does not resolve: {exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _headers(raw: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Static headers; "${{ env.VAR }}" is read from the environment, for VAR under prefix."""

    def resolve(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name.startswith(prefix):
            raise GraphLoadError(f"webhooks.headers may only read variables named {prefix}*")
        return os.environ.get(name, "")

    return {str(k): _TEMPLATE.sub(resolve, str(v)) for k, v in raw.items()}


class WebhookSender:
    """Delivers each finished run's webhook from a task of its own; aclose waits for them."""

    def __init__(self, policy: WebhookPolicy) -> None:
        self.policy = policy
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def deliver(self, url: str, payload: dict[str, Any]) -> None:
        if self.policy.disabled:
            return
        run_id = str(payload["run_id"])
        if self.policy.allowed_fields is not None:
            payload = {k: v for k, v in payload.items() if k in self.policy.allowed_fields}
        task = asyncio.create_task(self._send(run_id, url, payload), name=f"webhook-{run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, run_id: str, url: str, payload: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
            await asyncio.sleep(delay)
            try:
                await self.policy.check(url)  # what the name resolves to now, not at creation
                sent = {**payload, "webhook_sent_at": datetime.now(UTC)}
                if self.policy.allowed_fields is not None:
                    sent = {k: v for k, v in sent.items() if k in self.policy.allowed_fields}
                body = serde.dumps(sent)
                headers = {**self.policy.headers, "content-type": "application/json"}
                response = await self._client.post(url, content=body, headers=headers)
            except WebhookRefused as exc:
                log.error("run %s: webhook %s refused: %s", run_id, url, exc)
                return
            except httpx.HTTPError as exc:
                log.warning("run %s: webhook try %d failed: %r", run_id, attempt, exc)
                continue
            if response.status_code < 500 and response.status_code != 429:
                if response.status_code >= 400:
                    log.error("run %s: webhook answered %d", run_id, response.status_code)
                return
            log.warning("run %s: webhook try %d answered %d", run_id, attempt, response.status_code)
        log.error("run %s: webhook %s failed after %d tries", run_id, url, len(RETRY_DELAYS) + 1)

    async def aclose(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()


def payload(
    run: Mapping[str, Any], status: str, values: Any, error: Any, started: datetime
) -> dict[str, Any]:
    """What a webhook receives: the run, how it ended, and its final values."""
    body = {
        **{k: run[k] for k in ("run_id", "thread_id", "assistant_id", "created_at") if k in run},
        "updated_at": datetime.now(UTC),
        "metadata": run.get("metadata"),
        "kwargs": run.get("kwargs"),
        "multitask_strategy": run.get("multitask_strategy"),
        "status": status,
        "run_started_at": started,
        "run_ended_at": datetime.now(UTC),
        "values": values,
    }
    if error is not None:
        body["error"] = error
    return body
