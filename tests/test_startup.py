"""Clear startup errors (issue 11, point 6): a missing extra, an unreachable service, a graph that
fails to import, an unwritable database: the process exits with one line saying what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agentstream.cli import _bind
from tests.cluster import ADMIN_URI, REDIS_URI
from tests.conftest import EXAMPLES
from tests.services import free_port  # bound, then released: nothing listens there


def start(command: str, env: dict[str, str], config: Path = EXAMPLES, *extra: str) -> str:
    args = [sys.executable, "-m", "agentstream", command, "--config", str(config), *extra]
    if command != "worker":
        args += ["--port", "0"]
    done = subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "serving on" not in done.stdout
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unreachable_postgres_is_one_line(command: str) -> None:
    uri = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/agentstream"
    line = start(command, {"DATABASE_URI": uri, "REDIS_URI": REDIS_URI})
    assert line.startswith("agentstream: cannot reach PostgreSQL at 127.0.0.1:"), line
    assert "DATABASE_URI" in line and "secret" not in line


def test_a_missing_database_is_one_line() -> None:
    uri = ADMIN_URI.rsplit("/", 1)[0] + "/agentstream_no_such_database"
    line = start("serve", {"DATABASE_URI": uri, "REDIS_URI": REDIS_URI})
    assert "agentstream_no_such_database" in line and "does not exist" in line, line


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unreachable_redis_is_one_line(command: str) -> None:
    env = {"DATABASE_URI": ADMIN_URI, "REDIS_URI": f"redis://127.0.0.1:{free_port()}/0"}
    line = start(command, env)
    assert line.startswith("agentstream: cannot reach Redis at 127.0.0.1:"), line


def test_database_uri_without_the_postgres_extra_is_one_line(tmp_path: Path) -> None:
    # A meta path finder stands in for an environment where the extra was never installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('psycopg', 'psycopg_pool'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {"DATABASE_URI": ADMIN_URI, "REDIS_URI": REDIS_URI, "PYTHONPATH": str(tmp_path)}
    line = start("serve", env)
    assert line == (
        "agentstream: DATABASE_URI is set but psycopg is not installed: "
        "pip install 'agentstream[postgres]'"
    )


def test_a_graph_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "graph.py").write_text("import not_a_real_package\ngraph = None\n")
    config = tmp_path / "langgraph.json"
    config.write_text('{"graphs": {"g": "./graph.py:graph"}}')
    line = start("dev", {}, config, "--database", str(tmp_path / "db.sqlite"))
    assert "ModuleNotFoundError: No module named 'not_a_real_package'" in line, line
    assert f"{tmp_path / 'graph.py'}:1" in line


def test_an_unwritable_sqlite_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = start("dev", {}, EXAMPLES, "--database", str(blocker / "db.sqlite"))
    assert line.startswith("agentstream: cannot create"), line


def test_a_taken_metrics_port_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:  # held: no other process binds it
        port = taken.getsockname()[1]
        env = {"DATABASE_URI": ADMIN_URI, "REDIS_URI": REDIS_URI}
        line = start("worker", {**env, "AGENTSTREAM_METRICS_PORT": str(port)})
    assert line == f"agentstream: metrics port 127.0.0.1:{port}: Address already in use", line


def test_the_servers_port_is_held_from_its_bind() -> None:
    """Listening from the bind on, so no other process can bind the port while the app starts
    (with SO_REUSEADDR, as uvicorn and prometheus_client's server both set, Linux lets a second
    socket bind a port whose first is bound but not listening)."""
    sock = _bind("127.0.0.1", 0)
    with sock, socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError, match="Address already in use"):
            other.bind(("127.0.0.1", sock.getsockname()[1]))
