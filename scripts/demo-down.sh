#!/usr/bin/env bash
# Stops what `just demo` started (by pidfile; the databases stay up: `just services-down`):
# the API, the worker, the node agent, and the engines the agent started (their pids are in the
# agent's instances.json; each engine leads its own process group).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.dev/demo"
say() { [ "${1:-}" = "--quiet" ] || echo "$2"; }
for name in api worker agent engine; do
  pidfile="$RUN/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    say "${1:-}" "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
if [ -s "$RUN/agent/instances.json" ]; then
  for pid in $(python3 -c 'import json,sys; [print(i["pid"]) for i in json.load(open(sys.argv[1])) if i.get("pid")]' "$RUN/agent/instances.json"); do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      say "${1:-}" "stopped engine ($pid)"
    fi
  done
fi
