#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1, starting them when they
# are installed but stopped. Exits 1 with a clear message when one is missing.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

wait_for() {
  for _ in $(seq 1 30); do "$1" && return 0; sleep 0.5; done
  return 1
}

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is stopped: starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    wait_for pg_up || { echo "error: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  else
    echo "error: PostgreSQL is not installed (Debian: apt install postgresql postgresql-client; see DEVELOPERS.md)" >&2
    exit 1
  fi
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is stopped: starting it"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_for redis_up || { echo "error: Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
  else
    echo "error: Redis is not installed (Debian: apt install redis-server; see DEVELOPERS.md)" >&2
    exit 1
  fi
fi
echo "PostgreSQL and Redis are up on 127.0.0.1"
