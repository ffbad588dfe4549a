# Relay developer recipes. `just` (rust-just) is installed into .venv by scripts/test.

# list the recipes
default:
    @just --list

# run the server with its defaults (extra args go to `relay serve`)
serve *args:
    scripts/serve {{args}}

# lint, type-check and run the whole test suite (args go to pytest)
test *args:
    scripts/test {{args}}

# ruff check, ruff format --check, mypy --strict, the import layers
lint:
    .venv/bin/ruff check relay actors tests scripts docs/examples
    .venv/bin/ruff format --check relay actors tests scripts docs/examples
    .venv/bin/mypy
    .venv/bin/lint-imports --no-cache --no-logo

# apply ruff fixes and formatting
fmt:
    .venv/bin/ruff check --fix relay actors tests scripts docs/examples
    .venv/bin/ruff format relay actors tests scripts docs/examples

# mypy --strict over relay, actors, tests, scripts and docs/examples
typecheck:
    .venv/bin/mypy

# benchmark Relay against peer servers, short run (about 3 min; args go to scripts/bench)
bench *args:
    scripts/bench {{args}}

# benchmark with 15 s measured windows (about 12 min)
bench-full *args:
    scripts/bench --full {{args}}

# create or upgrade the database
db-migrate:
    .venv/bin/relay db migrate
