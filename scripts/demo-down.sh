#!/usr/bin/env bash
# Stops what `just demo` started (by pidfile; the databases stay up: `just services-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.dev/demo"
for name in api worker engine; do
  pidfile="$RUN/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    [ "${1:-}" = "--quiet" ] || echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
