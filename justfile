# Relay developer recipes. `just` (rust-just) is installed into .venv by scripts/serve and
# scripts/test (scripts/bootstrap).

# list the recipes
default:
    @just --list

# run the server with its defaults (extra args go to `relay serve`)
serve *args:
    scripts/serve {{args}}

# Redis, PostgreSQL, three Relay processes and nginx on loopback; prints the URL; Ctrl-C stops all
cluster *args:
    @exec scripts/cluster {{args}}

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

# -- scripting a running server (docs/cli.md). The server is found from the settings (RELAY_*
# -- variables, as for `just serve`) or RELAY_URL / RELAY_REALTIME_URL; creating and closing
# -- rooms log in with RELAY_TOKEN, or RELAY_USERNAME and RELAY_PASSWORD.

# list the running server's public app rooms
rooms:
    @.venv/bin/relay rooms list

# create a public app room (peer: anyone broadcasts; host: only the host); prints its id and secret
room-create max_clients="10" protocol="peer":
    @.venv/bin/relay rooms create --public --max-clients {{ quote(max_clients) }} --protocol {{ quote(protocol) }}

# send MESSAGE to an app room, as a JSON string
room-say room_id secret message:
    @.venv/bin/relay rooms say {{ quote(room_id) }} {{ quote(secret) }} {{ quote(message) }}

# `exec`: relay, not a shell between, takes Ctrl-C, and leaves the room cleanly.
# print what arrives in an app room, one JSON line each, until Ctrl-C
room-tail room_id secret:
    @exec .venv/bin/relay rooms tail {{ quote(room_id) }} {{ quote(secret) }}

# close an app room you created
room-close room_id:
    @.venv/bin/relay rooms close {{ quote(room_id) }}

# Recipes run in the justfile's directory: a relative FILE or PATH is the caller's, as in a shell.
# join a voice channel, play an Ogg Opus file (one frame per 20 ms), leave (args: --protocol websocket, --e2ee)
voice-play server_id channel_id file *args:
    @.venv/bin/relay voice play {{ quote(server_id) }} {{ quote(channel_id) }} {{ quote(join(invocation_directory(), file)) }} {{ args }}

# create user NAME in the database (asks for the password, or reads it from stdin)
user name:
    @.venv/bin/relay user create {{ quote(name) }}

# (PATH: relative to where `just` runs, like voice-play's FILE)
# copy the database to PATH while the server runs (docs/backup.md)
backup path:
    @.venv/bin/relay backup {{ quote(join(invocation_directory(), path)) }}
