#!/usr/bin/env bash
# The dependency rules of DESIGN §3 / STYLE §3, checked mechanically and without compiling
# (the workspace build compiles every line once; these checks prove what a build per feature set
# would, from the dependency graph and the sources):
#  1. a context without features pulls in no framework; with only `infra` no HTTP framework, with
#     only `http` no storage or queue framework (cargo tree);
#  2. `infra/` is compiled only with the `infra` feature and `interface/` only with `http`, and
#     neither reaches into the other, so each feature builds on its own;
#  3. a context's domain and app layers name no framework type;
#  4. a context reaches another context only through what that context's lib.rs exports
#     (never `other::domain|app|infra|interface`);
#  5. only the composition root (`maas-platform`) and the binaries read settings, build pools or
#     spawn tasks.
set -euo pipefail
cd "$(dirname "$0")/.."
contexts=(user model inference finetune knowledge apps)
web='actix-web|actix-http|utoipa|utoipa-swagger-ui|validator'
storage='sea-orm|sqlx|redis|deadpool-redis|apalis|apalis-redis|apalis-cron|qdrant-client|reqwest'
fail=0

deps() { # the normal dependencies of maas-$1 with features $2 ("" for none); fails loudly
  local features=() tree
  [ -n "$2" ] && features=(--features "$2")
  tree=$(cargo tree -p "maas-$1" --no-default-features "${features[@]}" -e normal --prefix none) \
    || { echo "cargo tree failed for maas-$1 ${2:-(no features)}" >&2; exit 1; }
  awk '{print $1}' <<<"$tree" | sort -u
}
leaks() { # crates of the dependency list $1 matching the pattern $2
  grep -xE "$2" <<<"$1" | tr '\n' ' ' || true
}

for ctx in "${contexts[@]}"; do
  none=$(deps "$ctx" "") infra=$(deps "$ctx" infra) http=$(deps "$ctx" http)
  grep -qx "maas-$ctx" <<<"$none" || { echo "cargo tree listed nothing for maas-$ctx"; exit 1; }
  leaked=$(leaks "$none" "$web|$storage")
  [ -z "$leaked" ] || { echo "maas-$ctx without features depends on: $leaked"; fail=1; }
  leaked=$(leaks "$infra" "$web")
  [ -z "$leaked" ] || { echo "maas-$ctx with only infra depends on: $leaked"; fail=1; }
  leaked=$(leaks "$http" "$storage")
  [ -z "$leaked" ] || { echo "maas-$ctx with only http depends on: $leaked"; fail=1; }

  src="crates/$ctx/src"
  if [ -d "$src/infra" ] && ! grep -qE '^#\[cfg\(feature = "infra"\)\]$' <(grep -B1 -E '^pub mod infra;' "$src/lib.rs"); then
    echo "maas-$ctx: \`mod infra\` is not behind the infra feature"; fail=1
  fi
  if [ -d "$src/interface" ] && ! grep -qE '^#\[cfg\(feature = "http"\)\]$' <(grep -B1 -E '^pub mod interface;' "$src/lib.rs"); then
    echo "maas-$ctx: \`mod interface\` is not behind the http feature"; fail=1
  fi
  if [ -d "$src/infra" ] && grep -rnE 'crate::interface\b' "$src/infra"; then
    echo "maas-$ctx: infra reaches into interface (above)"; fail=1
  fi
  if [ -d "$src/interface" ] && grep -rnE 'crate::infra\b' "$src/interface"; then
    echo "maas-$ctx: interface reaches into infra (above)"; fail=1
  fi
  for layer in domain app; do
    [ -d "$src/$layer" ] || continue
    if grep -rnE '\b(actix_web|actix_http|sea_orm|sqlx|redis|deadpool_redis|apalis|apalis_redis|apalis_cron|utoipa|validator|reqwest|qdrant_client)::|crate::(infra|interface)\b' "$src/$layer"; then
      echo "maas-$ctx: the $layer layer names a framework or an adapter (above)"; fail=1
    fi
  done
done

for ctx in "${contexts[@]}"; do
  for other in "${contexts[@]}"; do
    [ "$ctx" = "$other" ] && continue
    if grep -rnE "maas_${other}::(domain|app|infra|interface)\b" "crates/$ctx/src" 2>/dev/null; then
      echo "maas-$ctx reaches into maas-$other's internals (above)"; fail=1
    fi
  done
done

# The composition root: contexts and the kernel never read settings, build pools or spawn.
roots='crates/(platform|api|worker|cli|agent|engine)/'
if grep -rnE 'tokio::spawn\b|Settings::load|maas_platform::|Database::connect\(|deadpool_redis::Config::|Client::open\(' \
     crates/{shared,user,model,inference,finetune,knowledge,apps}/src 2>/dev/null \
     | grep -vE '^[^:]+:[0-9]+:\s*//' | grep -vE "$roots" | grep -vE '#\[cfg\(test\)\]' \
     | grep -vE '^crates/shared/src/(tasks|kv)\.rs:' \
     | grep -vE '^[^:]+/(fakes|[a-z_]+_tests)\.rs:'; then
  echo "a context or the kernel reads settings, opens a connection or spawns a task (above): register it with maas-platform"; fail=1
fi

[ "$fail" = 0 ] && echo "layer rules hold"
exit "$fail"
