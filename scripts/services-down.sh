#!/usr/bin/env bash
# Stop what services-up.sh started (by pidfile / pg_ctl, never by process name).
# PURGE=1 also deletes the data dir.
set -uo pipefail
SVC_DIR="${SVC_DIR:-$PWD/.dev}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -d "$SVC_DIR" ] || exit 0
SVC_DIR="$(cd "$SVC_DIR" && pwd)"
PGDATA="$SVC_DIR/pg/data"

if [ -f "$PGDATA/postmaster.pid" ]; then
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null || true
fi

pidfile="$SVC_DIR/redis/redis.pid"
if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
fi

[ "${PURGE:-0}" = 1 ] && rm -rf "$SVC_DIR"
echo "services down"
