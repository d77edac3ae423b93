"""Hostile input: no request gets a 5xx or a traceback. Schemathesis generates requests from our
own /openapi.json against a real server; then the inputs a generator rarely reaches: nesting,
integers beyond 64 bits, invalid UTF-8, huge headers, and clients that connect and say nothing.

AGENTSTREAM_FUZZ_EXAMPLES, AGENTSTREAM_FUZZ_PHASES and AGENTSTREAM_FUZZ_SEED make the run longer or
different (README, "Securing a server", has the figures of a long run).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from langgraph_sdk import get_client

from tests.conftest import ServerProcess

EXAMPLES_PER_OPERATION = os.environ.get("AGENTSTREAM_FUZZ_EXAMPLES", "3")
SEED = os.environ.get("AGENTSTREAM_FUZZ_SEED", "20260601")


AUTH_APP = Path(__file__).resolve().parent / "auth_app" / "langgraph.json"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth-handlers"])
def test_schemathesis_finds_no_server_error(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, auth: bool
) -> None:
    # With auth handlers every request also runs the user's authenticate and `on` handlers,
    # and the owner filters go into every storage query.
    proc = server_factory(config=AUTH_APP) if auth else server_factory()
    credentials = ["--header", "x-api-key: alice-token"] if auth else []
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{proc.url}/openapi.json",
            *credentials,
            "--checks",
            "not_a_server_error",
            "--phases",
            os.environ.get("AGENTSTREAM_FUZZ_PHASES", "examples,fuzzing"),
            "--max-examples",
            EXAMPLES_PER_OPERATION,
            "--seed",
            SEED,
            "--workers",
            "2",
            # Streams of threads with nothing running stay open by design; past their first
            # seconds a generated request only waits (at 20 s this test spent about 30 s waiting).
            "--request-timeout",
            "2",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=280,
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    tested = re.search(r"(\d+) generated", result.stdout)
    assert tested is not None and int(tested.group(1)) >= 100, summary
    assert "Server error" not in result.stdout
    assert not any("Traceback" in line for line in proc.output), "".join(proc.output)
    if auth:
        # The generated requests got past authenticate: they created threads (counted by the
        # server as they were made: a later generated request may delete what they made), and
        # every thread left is alice's.
        with httpx.Client(base_url=proc.url, headers={"x-api-key": "alice-token"}) as http:
            threads = http.post("/threads/search", json={"limit": 1000}).json()
            metrics = http.get("/metrics").text
        created = re.search(
            r'^lg_api_http_requests_total\{method="POST",path="/threads",status="200"\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
        assert created is not None and float(created.group(1)) >= 1, summary
        assert {t["metadata"]["owner"] for t in threads} <= {"alice"}, threads


async def test_deeply_nested_json_is_422(http: httpx.AsyncClient) -> None:
    for depth in (150, 300, 2000):
        nested = "[" * depth + "]" * depth
        body = '{"metadata": {"deep": ' + nested + "}}"
        for path in ("/threads", "/threads/search", "/assistants/search"):
            res = await http.post(path, content=body, headers={"content-type": "application/json"})
            assert res.status_code == 422, (depth, path, res.text)
            assert res.json() == {"detail": "Invalid JSON in request body"}
    # Nesting within the limit is stored and read back as it came.
    shallow = {"a": [[[[{"b": 1}]]]]}
    res = await http.post("/threads", json={"metadata": shallow})
    assert res.status_code == 200 and res.json()["metadata"] == shallow


async def test_integers_beyond_64_bits_are_no_server_error(http: httpx.AsyncClient) -> None:
    huge = 10**30
    res = await http.post("/threads", json={"metadata": {"n": huge}})
    assert res.status_code == 200
    assert res.json()["metadata"]["n"] == float(huge), "parsed as a float, as orjson does"
    u64 = 2**64 - 1
    res = await http.post("/threads", json={"metadata": {"u64": u64}})
    assert res.status_code == 200
    for metadata in ({"n": huge}, {"u64": u64}, {"tags": {"$contains": huge}}):
        res = await http.post("/threads/search", json={"metadata": metadata})
        assert res.status_code == 200, res.text
    res = await http.post("/threads/search", json={"offset": huge})
    assert res.status_code == 422
    res = await http.post("/runs/wait", json={"assistant_id": "ticker", "input": {"x": huge}})
    assert res.status_code == 200, res.text
    infinite = '{"metadata": {"n": 1e400}}'
    res = await http.post(
        "/assistants/search", content=infinite, headers={"content-type": "application/json"}
    )
    assert res.status_code == 422


async def test_invalid_utf8_is_422(http: httpx.AsyncClient) -> None:
    for body in (b'{"metadata": {"a": "\xff\xfe"}}', b'{"\xc3": 1}', b'\xef\xbb\xbf{"a"'):
        res = await http.post(
            "/threads", content=body, headers={"content-type": "application/json"}
        )
        assert res.status_code == 422, res.text
        assert res.json() == {"detail": "Invalid JSON in request body"}
    res = await http.get("/threads/%ff%fe")
    assert 400 <= res.status_code < 500


async def test_huge_headers_are_431(http: httpx.AsyncClient) -> None:
    res = await http.post("/threads/search", json={}, headers={"x-big": "a" * 100_000})
    assert res.status_code == 431
    assert "larger than the limit" in res.json()["detail"]
    many = {f"x-h{i}": "a" * 100 for i in range(1000)}
    assert (await http.post("/threads/search", json={}, headers=many)).status_code == 431
    assert (await http.post("/threads/search", json={}, headers={"x-ok": "a" * 8000})).is_success


async def test_silent_connections_hold_no_run_slot(
    server_factory: Callable[..., ServerProcess],
) -> None:
    proc = server_factory(extra_args=("--max-concurrency", "1"))
    where = urlparse(proc.url)
    silent = []
    openings = (
        b"",
        b"POST /runs/wait HTTP/1.1\r\nHost: x\r\n",
        b"POST /runs/wait HTTP/1.1\r\nHost: x\r\ncontent-length: 500\r\n\r\n{",
    )
    for sent in openings:
        for _ in range(5):
            conn = socket.create_connection((where.hostname, where.port))
            conn.sendall(sent)
            silent.append(conn)
    client = get_client(url=proc.url)
    try:
        # One slot, fifteen connections that never finish a request: runs still go through.
        results = await asyncio.wait_for(
            asyncio.gather(
                *(client.runs.wait(None, "ticker", input={"n": i}) for i in range(1, 4))
            ),
            timeout=30,
        )
        assert [r["count"] for r in results] == [1, 2, 3]
    finally:
        await client.http.client.aclose()
        for conn in silent:
            conn.close()
