#!/usr/bin/env bash
# Benchmarks over real PostgreSQL and Redis (started in .dev/ when DATABASE_URL is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  bash scripts/services-up.sh >/dev/null
  # shellcheck disable=SC1091
  . "${SVC_DIR:-$PWD/.dev}/env"
fi
export DATABASE_URL REDIS_URL
cargo run --quiet --release -p maas-cli -- migrate up
# The gateway bench runs the release maas-api in its own process (pinned to one core).
cargo build --release --bins
cargo bench -p maas-api --bench http_stack "$@"
cargo bench -p maas-api --bench gateway "$@"
cargo bench -p maas-api --bench auth_path "$@"
cargo bench -p maas-api --bench heartbeats "$@"
cargo bench -p maas-tests --bench deployments "$@"
cargo bench -p maas-tests --bench knowledge "$@"
bash scripts/bench-engine.sh "$@"
