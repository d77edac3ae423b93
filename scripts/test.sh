#!/usr/bin/env bash
# Install agentstream with its test dependencies and run every check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,postgres]'
bash scripts/services.sh

.venv/bin/ruff check agentstream tests examples benchmarks
.venv/bin/ruff format --check agentstream tests examples benchmarks
.venv/bin/mypy agentstream
.venv/bin/python -m pytest "$@"
