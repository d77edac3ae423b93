#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; start them if not.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

# The binaries are needed even when the services answer: the outage tests start, kill and
# restart Redis and PostgreSQL servers of their own.
need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! pg_up; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
  # Trust local connections, as the project machine does.
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD NULL\"" >/dev/null 2>&1 || true
fi
if ! redis_up; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
fi
pg_up && echo "postgresql: up" || { echo "postgresql: DOWN" >&2; exit 1; }

# pgvector, for the store's semantic search on PostgreSQL: Debian's package for the running
# server where Debian has one, else built from Debian's pgvector source package (bookworm
# packages none for PostgreSQL 15) against that server's headers.
psql_q() { psql -h 127.0.0.1 -U postgres -d postgres -tAqc "$1"; }
has_vector() { [ "$(psql_q "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")" = 1 ]; }

# Connections: the suite runs many server processes at once, each with pools of its own. Its
# peak, sampled every 0.3 s: 97 connections (79 with the test clusters' pools capped at 8, as
# tests/servers.py now does), against PostgreSQL's default limit of 100, which a CI run once
# reached ("too many clients already"). A local cluster this script can restart gets 300.
if [ "$(psql_q "SHOW max_connections")" -lt 300 ] && command -v pg_lsclusters >/dev/null; then
  cluster=$(pg_lsclusters -h | awk '$3 == 5432 && $4 == "online" {print $1, $2; exit}')
  if [ -n "$cluster" ]; then
    psql_q "ALTER SYSTEM SET max_connections = 300" >/dev/null
    # shellcheck disable=SC2086  # "version name", two words
    pg_ctlcluster --skip-systemctl-redirect $cluster restart
    for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
  fi
fi
pg_up && echo "postgresql: $(psql_q "SHOW max_connections") connections" || {
  echo "postgresql: DOWN after its restart" >&2; exit 1; }
if ! has_vector; then
  major=$(( $(psql_q "SHOW server_version_num") / 10000 ))
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq "postgresql-$major-pgvector" 2>/dev/null; then
    apt-get install -y -qq "postgresql-server-dev-$major" make gcc
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial"
    # The machine's own Debian mirror (its first non-security source), for the next release.
    # (Either file may be absent: sed then fails, which must not end the script.)
    mirror=$( (sed -n -e 's/^URIs: *\([^ ]*\).*/\1/p' -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' \
      /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
      | grep -v security | head -n 1)
    echo "deb-src $mirror trixie main" > "$work/sources.list"
    apt_src=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/none"
             -o "Dir::State::Lists=$work/lists")
    apt-get "${apt_src[@]}" update -qq
    (cd "$work" && apt-get "${apt_src[@]}" source --download-only -qq pgvector 2>/dev/null)
    tar -xzf "$work"/pgvector_*.orig.tar.gz -C "$work"
    make -s -C "$work"/pgvector-*/ PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" \
      OPTFLAGS="" install >/dev/null
    rm -rf "$work"
  fi
fi
has_vector && echo "pgvector: available" || { echo "pgvector: MISSING" >&2; exit 1; }
redis_up && echo "redis: up" || { echo "redis: DOWN" >&2; exit 1; }
