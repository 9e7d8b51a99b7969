#!/usr/bin/env bash
# Runs the platform on this machine: PostgreSQL + Redis (in .dev/), migrations, maas-worker in
# the background and maas-api in the foreground on http://127.0.0.1:8080 (Ctrl-C stops both).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/services-up.sh
# shellcheck disable=SC1091
. "${SVC_DIR:-$PWD/.dev}/env"
export DATABASE_URL REDIS_URL
cargo build --bins
"$TARGET"/debug/maas migrate up
# First run: creates the admin (MAAS_ADMIN_USERNAME, default `admin`) with MAAS_ADMIN_PASSWORD,
# or prints a generated password once. Later runs change nothing.
"$TARGET"/debug/maas seed
"$TARGET"/debug/maas-worker &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT
echo "maas-api starting on http://${MAAS__SERVER__HOST:-127.0.0.1}:${MAAS__SERVER__PORT:-8080} (docs at /docs)"
"$TARGET"/debug/maas-api
