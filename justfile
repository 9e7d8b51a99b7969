# Tasks for developers and CI. `just --list` shows them.
# Install just once with `cargo install just --locked`; every recipe is a script under scripts/.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# The one-command demo: models, services, platform + built-in engine, a chat and an embedding.
demo:
    bash scripts/demo.sh

# Stop what `just demo` started.
demo-down:
    bash scripts/demo-down.sh

# Fetch the built-in engine's models into $MAAS_MODELS_DIR (default .models).
fetch-models:
    bash scripts/fetch-models.sh

# Start PostgreSQL and Redis on loopback, data in .dev/ (the same start CI uses).
services-up:
    bash scripts/services-up.sh

# Stop them (PURGE=1 also deletes .dev/).
services-down:
    bash scripts/services-down.sh

# Run the platform: services, migrations, maas-worker and maas-api on :8080.
dev:
    bash scripts/dev.sh

# Run every test over real PostgreSQL and Redis (extra args go to nextest).
test *args:
    bash scripts/test.sh {{args}}

# fmt check, clippy with warnings as errors, and the layer rules.
lint:
    cargo fmt --all -- --check
    cargo machete
    cargo clippy --workspace --all-targets -- -D warnings
    bash scripts/check-layers.sh

# Regenerate openapi/openapi.json from the code.
openapi:
    cargo run --quiet -p maas-api -- --print-openapi > openapi/openapi.json

# Benchmarks (release build, real PostgreSQL and Redis); figures go in the closing notes.
bench *args:
    bash scripts/bench.sh {{args}}

# Fuzz the API from its OpenAPI document (schemathesis; bounded in cases and time).
fuzz *args:
    bash scripts/fuzz.sh {{args}}

# The whole CI run, locally.
ci:
    bash .ci/run
