#!/usr/bin/env bash
# Load run: upload creations per second and latency against the release build.
#
#   scripts/load.sh sqlite      # embedded default: SQLite + in-process cache
#   scripts/load.sh postgres    # PostgreSQL + Redis (both on 127.0.0.1)
#
# Options through the environment: CONNECTIONS (64), DURATION (20s), THREADS (4),
# POSTGRES_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL
# (redis://127.0.0.1:6379). Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-sqlite}
connections=${CONNECTIONS:-64}
duration=${DURATION:-20s}
threads=${THREADS:-4}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet
valet=$PWD/target/release/valet
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export VALET_SERVER__BIND=127.0.0.1:$port VALET_DATA_DIR=$work/data VALET_LOG__LEVEL=warn

database=""
if [ "$mode" = postgres ]; then
  admin=${POSTGRES_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  database=valet_load_$$
  psql "$admin" -qc "CREATE DATABASE $database"
  export VALET_DATABASE__URL=${admin%/*}/$database
  export VALET_CACHE__URL=${REDIS_URL:-redis://127.0.0.1:6379}
  export VALET_CACHE__KEY_PREFIX="valet-load-$$:"
fi

cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  [ -n "$database" ] && psql "$admin" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && exec "$valet" serve) &
server=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "valet did not become ready" >&2; exit 1; }

VALET_LOAD_TOKEN=$(cd "$work" && "$valet" token mint --tenant load --device dev-1 --ttl 1h)
export VALET_LOAD_TOKEN
echo "== $mode: $connections connections, $threads threads, $duration"
wrk -t"$threads" -c"$connections" -d"$duration" --latency \
  -s scripts/load/create.lua "http://127.0.0.1:$port/v1/files"
