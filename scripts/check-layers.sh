#!/usr/bin/env bash
# The dependency rules of DESIGN §3 / STYLE §3, checked mechanically:
#  1. every context compiles without its framework features, and then pulls in no framework;
#  2. a context's domain layer names no framework type;
#  3. a context reaches another context only through what that context's lib.rs exports
#     (never `other::domain|app|infra|interface`).
set -euo pipefail
cd "$(dirname "$0")/.."
contexts=(user model inference finetune knowledge apps)
frameworks='actix-web|actix-http|sea-orm|sqlx|redis|deadpool-redis|apalis|apalis-redis|utoipa|qdrant-client'
fail=0

for ctx in "${contexts[@]}"; do
  cargo check --quiet -p "maas-$ctx" --no-default-features
  # Each feature must build on its own, as the binaries that enable only one use it.
  cargo check --quiet -p "maas-$ctx" --no-default-features --features infra
  cargo check --quiet -p "maas-$ctx" --no-default-features --features http
  leaked=$(cargo tree -p "maas-$ctx" --no-default-features -e normal --prefix none 2>/dev/null \
    | awk '{print $1}' | grep -xE "$frameworks" | sort -u || true)
  if [ -n "$leaked" ]; then
    echo "maas-$ctx without features still depends on: $leaked"; fail=1
  fi
done

if grep -rnE '\b(actix_web|actix_http|sea_orm|sqlx|redis|deadpool_redis|apalis|apalis_redis|utoipa|qdrant_client)::' \
     crates/*/src/domain 2>/dev/null; then
  echo "a domain module names a framework (above)"; fail=1
fi

for ctx in "${contexts[@]}"; do
  for other in "${contexts[@]}"; do
    [ "$ctx" = "$other" ] && continue
    if grep -rnE "maas_${other}::(domain|app|infra|interface)\b" "crates/$ctx/src" 2>/dev/null; then
      echo "maas-$ctx reaches into maas-$other's internals (above)"; fail=1
    fi
  done
done

[ "$fail" = 0 ] && echo "layer rules hold"
exit "$fail"
