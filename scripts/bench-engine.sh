#!/usr/bin/env bash
# The built-in engine's benchmark (part of `just bench`): alone, then behind a release maas-api
# for the time to first token the gateway adds. Needs the models (just fetch-models), the dev
# services and release binaries (scripts/bench.sh provides both).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
export MAAS_MODELS_DIR="${MAAS_MODELS_DIR:-$PWD/.models}"
if [ ! -f "$MAAS_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  echo "engine bench skipped: no models in $MAAS_MODELS_DIR (just fetch-models)"
  exit 0
fi
ENGINE_PORT=18777 API_PORT=18780
export MAAS_BENCH_ENGINE_PORT=$ENGINE_PORT
MAAS="$TARGET"/release/maas
# A bench admin with room for the calls, and a fresh key for it.
echo 'bench engine password 0123' | $MAAS user create bench-engine --role admin --password-stdin >/dev/null 2>&1 || true
$MAAS quota set bench-engine --requests-per-minute 100000 --requests-per-hour 1000000 --requests-per-day 1000000 >/dev/null
KEY=$($MAAS key create --user bench-engine --name "bench-$(date +%s)" --scopes inference,manage | sed -n 's/^secret (shown once, store it now): //p')
MAAS__SERVER__PORT=$API_PORT MAAS__REDIS__KEY_PREFIX="bench-engine:" "$TARGET"/release/maas-api > /tmp/maas-bench-api.log 2>&1 &
api=$!
trap 'kill $api 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$API_PORT/ready" 2>/dev/null && break; sleep 0.2; done
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/api/v1/providers" \
  -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d "{\"name\":\"bench-engine\",\"base_url\":\"http://127.0.0.1:$ENGINE_PORT/v1\",\"api_key\":\"unused\",
       \"models\":[{\"model\":\"bench-smollm2\",\"upstream_model\":\"smollm2-135m-instruct\"}]}")
case "$status" in 201|409) ;; *) echo "registering the bench provider answered $status" >&2; exit 1 ;; esac
MAAS_BENCH_GATEWAY_URL="http://127.0.0.1:$API_PORT" MAAS_BENCH_GATEWAY_KEY="$KEY" \
  cargo bench -p maas-engine --bench engine "$@"
