#!/usr/bin/env bash
# The test suite: unit tests, doc tests and the end-to-end tests over real PostgreSQL and Redis.
# Uses DATABASE_URL/REDIS_URL when both are set; otherwise starts the dev services in .dev/.
# Extra arguments go to nextest (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  bash scripts/services-up.sh >/dev/null
  # shellcheck disable=SC1091
  . "${SVC_DIR:-$PWD/.dev}/env"
fi
export DATABASE_URL REDIS_URL
# The test runner: the only tool beyond the Rust toolchain, installed on first use.
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
# The engine tests use the real models when they have been fetched (just fetch-models).
if [ -z "${MAAS_MODELS_DIR:-}" ] && [ -d .models ]; then
  export MAAS_MODELS_DIR="$PWD/.models"
fi
# The console page's xterm.js (npm, integrity-checked, git-ignored) for the terminal page test.
bash scripts/fetch-console-assets.sh >/dev/null
# The end-to-end tests run the real binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace --doc --quiet
cargo nextest run --workspace ${NEXTEST_PROFILE:+--profile "$NEXTEST_PROFILE"} "$@"
