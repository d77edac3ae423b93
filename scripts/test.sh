#!/usr/bin/env bash
# Install agentstream with its test dependencies and run every check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,postgres]'
bash scripts/services.sh
# Debian's Chromium, for the tests where a real frontend in a browser is the client.
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
# The web inspector served at /inspector: its pinned packages, then its bundle, written into
# agentstream/inspector/static (gitignored; a wheel ships it).
if [ ! -d inspector/node_modules/playwright-core ]; then
  (cd inspector && npm ci --no-audit --no-fund)
fi
(cd inspector && npm run build)

.venv/bin/ruff check agentstream tests examples benchmarks
.venv/bin/ruff format --check agentstream tests examples benchmarks
.venv/bin/mypy agentstream benchmarks
# Two test processes, each with its own servers (clusters on databases of their own): the
# suite spends much of its time waiting on them, so two keep both cores busy. Then the few
# tests that need the machine to themselves (marked `alone`), in one process.
# (Exit status 5: none of them among the tests asked for.)
.venv/bin/python -m pytest -n "${AGENTSTREAM_TEST_PROCESSES:-2}" -m "not benchmark and not alone" \
  "$@" || [ $? -eq 5 ]
.venv/bin/python -m pytest -m alone "$@" || [ $? -eq 5 ]
