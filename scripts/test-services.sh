#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond Python: a PostgreSQL server and Debian's
# Chromium (for the browser tests). Writes .services.env, read by tests/conftest.py.
# Without root or apt-get, it says so and the tests that need these servers skip, except in CI
# (CI=true), where they fail instead.
set -uo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=.services.env
: > "$ENV_FILE"

have_root_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

need=()
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if have_root_apt; then
    echo "test-services: installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || echo "test-services: apt-get install ${need[*]} failed"
  else
    echo "test-services: cannot install ${need[*]} (needs root and apt-get); those tests will skip"
  fi
fi

if command -v chromium >/dev/null; then
  echo "CHROMIUM_PATH=$(command -v chromium)" >> "$ENV_FILE"
fi

if command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ]; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$ver" main >/dev/null
  fi
  pg_ctlcluster "$ver" main start 2>/dev/null || true
  for _ in $(seq 1 30); do
    su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
    sleep 1
  done
  su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='ibdtest'\"" | grep -q 1 \
    || su postgres -c "psql -qc \"create role ibdtest login superuser password 'ibdtest'\""
  su postgres -c "psql -qAtc \"select 1 from pg_database where datname='ibdtest'\"" | grep -q 1 \
    || su postgres -c "createdb -O ibdtest ibdtest"
  port=$(su postgres -c "psql -qAtc 'show port'")
  echo "HITSERVER_TEST_PG_URL=postgresql+psycopg://ibdtest:ibdtest@127.0.0.1:${port}/ibdtest" >> "$ENV_FILE"
  echo "test-services: PostgreSQL $ver on port $port"
fi
exit 0
