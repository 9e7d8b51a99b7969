#!/usr/bin/env bash
# Start PostgreSQL 15 + Redis on loopback with data under a project-local dir (default .dev/).
# Debian 12, as root, no systemd needed. Idempotent: re-running while up is a no-op.
# Writes $SVC_DIR/env with DATABASE_URL and REDIS_URL for the app and the tests.
set -euo pipefail

SVC_DIR="${SVC_DIR:-$PWD/.dev}"               # project-local state (git-ignored)
PG_PORT="${PG_PORT:-54329}"
REDIS_PORT="${REDIS_PORT:-63799}"
PG_DB="${PG_DB:-maas}"
PG_USER="${PG_USER:-maas}"
PG_PASSWORD="${PG_PASSWORD:-maas}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# 1. packages (only if missing; apt-get update only when we must install)
need=()
[ -x "$PG_BIN/initdb" ] || need+=(postgresql-15)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$SVC_DIR"
SVC_DIR="$(cd "$SVC_DIR" && pwd)"
PGDATA="$SVC_DIR/pg/data"; PGRUN="$SVC_DIR/pg/run"; PGLOG="$SVC_DIR/pg/postgres.log"
RDIR="$SVC_DIR/redis"

# postgres refuses to run as root: everything PG runs as the 'postgres' user,
# which must be able to traverse every parent dir of $SVC_DIR (fails under /root, mode 700).
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
mkdir -p "$SVC_DIR/pg" "$RDIR"
chown postgres:postgres "$SVC_DIR/pg"
if ! runuser -u postgres -- test -w "$SVC_DIR/pg"; then
  echo "services-up: user postgres cannot reach $SVC_DIR (a parent dir is not o+x?); set SVC_DIR elsewhere" >&2
  exit 1
fi
runuser -u postgres -- mkdir -p "$PGRUN"

# 2. PostgreSQL
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"; echo "$PG_PASSWORD" > "$pwfile"; chown postgres "$pwfile"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
fi
if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  # -w waits for startup; fsync=off etc.: test-only speedups
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGRUN -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null
fi
for _ in $(seq 1 60); do
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.5
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { echo "postgres did not come up; see $PGLOG" >&2; exit 1; }

# role + database (idempotent), over the unix socket as superuser (trust)
psql_su() { runuser -u postgres -- "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGRUN" -p "$PG_PORT" -U postgres -d postgres "$@"; }
if [ "$(psql_su -tAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]; then
  psql_su -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD' CREATEDB"
fi
if [ "$(psql_su -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != 1 ]; then
  psql_su -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
fi

# 3. Redis (as root is fine; loopback only). The settlement stream lives here until the worker
#    drains it, so the append-only file is on and fsynced every second.
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --dir "$RDIR" --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log" \
    --save "" --appendonly yes --appendfsync everysec
fi
for _ in $(seq 1 50); do
  [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping)" = PONG ] || { echo "redis did not come up; see $RDIR/redis.log" >&2; exit 1; }

# 4. connection strings for the app/tests
cat > "$SVC_DIR/env" <<EOF
export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/
EOF
echo "services up: $(cat "$SVC_DIR/env" | tr '\n' ' ')"
