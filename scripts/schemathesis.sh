#!/usr/bin/env bash
# Proves the served OpenAPI description against the server: Schemathesis generates
# requests from /openapi.json (valid and invalid ones, then chains of them along the
# description's links) and checks every answer against it. It runs once with a device
# token and once with a service token, every operation, all of Schemathesis' checks
# (negative_data_rejection among them), and fails on any finding.
#
# The server is the debug binary on the embedded default (SQLite, local store) in a
# temporary directory, on a free port. Schemathesis is installed from PyPI into a
# virtualenv in the tools cache, once.
#
# Usage: scripts/schemathesis.sh    (scripts/test.sh runs it)
# Environment: SCHEMATHESIS_EXAMPLES (default 40) test cases per operation and phase.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/servers.sh
. scripts/lib/servers.sh

SCHEMATHESIS_VERSION=4.32.5
VENV="$TOOLS/schemathesis-venv"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-40}"
VALET="${CARGO_TARGET_DIR:-target}/debug/valet"

if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  say "installing Schemathesis $SCHEMATHESIS_VERSION (pip, into $VENV)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "cannot create a virtualenv: apt-get install python3-venv"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "cannot install Schemathesis: pip install schemathesis==$SCHEMATHESIS_VERSION"
fi
say "cargo build --bin valet"
cargo build -q --bin valet
[ -x "$VALET" ] || die "$VALET is missing after cargo build"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/valet-schemathesis.XXXXXX")
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT

# Every exclusion and adjustment is here, each with its reason. Nothing else is
# turned off: every other check runs on every operation.
cat >"$WORK/schemathesis.toml" <<'TOML'
# 413 is how valet refuses a declared `size` over `uploads.max_upload_bytes` (the
# schema's `maximum`), and a body over `server.json_limit_bytes`: a rejection, which
# the check's default list of statuses does not name.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]

# positive_data_acceptance expects every schema-valid request to succeed. These
# operations also apply rules that JSON Schema cannot state, and refuse requests
# breaking them with a documented 400:
# - POST /v1/files: the part size against the file size and the storage backend's
#   part limits (at most 10,000 parts of 5 MiB to 5 GiB on the local store), and
#   the target root against the token (a service must name one, a device may not
#   name another's); `device_id` with `shared: true` is refused too.
[[operations]]
include-path = "/v1/files"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# - GET /v1/files: `cursor` must be a `next_cursor` this API returned (it is
#   opaque), and `device_id` and `shared=true` exclude each other (a rule across two
#   query parameters).
[[operations]]
include-path = "/v1/files"
include-method = "GET"
checks.positive_data_acceptance.enabled = false

# - POST /v1/files/{id}/parts: part numbers must lie within the file's `part_count`
#   (400 `invalid_part`) and appear once each.
[[operations]]
include-path = "/v1/files/{id}/parts"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# use_after_free expects a deleted resource to answer 404 or 410. A deleted file's
# record stays readable, with status `deleted` (the documented soft delete: the
# record is what lists, events and the reconciler refer to until it is purged).
[[operations]]
include-path = "/v1/files/{id}"
include-method = "GET"
checks.use_after_free.enabled = false
TOML

PORT=$(free_port)
say "starting valet on 127.0.0.1:$PORT (SQLite and the local store in $WORK)"
# The server's configuration is its environment; nothing VALET_* is left exported.
env VALET_DATA_DIR="$WORK/data" VALET_SERVER__BIND="127.0.0.1:$PORT" VALET_LOG__LEVEL=warn \
  "$VALET" serve >"$WORK/valet.log" 2>&1 &
STARTED_PIDS+=("$!")
wait_port 127.0.0.1 "$PORT" "valet (log: $WORK/valet.log)"

mint() { env VALET_DATA_DIR="$WORK/data" "$VALET" token mint --tenant acme --ttl 1h "$@"; }
DEVICE_TOKEN=$(mint --device dev-42)
SERVICE_TOKEN=$(mint --service fleet-manager)

failed=0
for caller in device service; do
  token=$DEVICE_TOKEN
  [ "$caller" = service ] && token=$SERVICE_TOKEN
  say "schemathesis $SCHEMATHESIS_VERSION with a $caller token ($EXAMPLES examples per operation)"
  # No --checks: this version runs every check by default (negative_data_rejection
  # among them), and a --checks list would override the exclusions above.
  if ! (cd "$WORK" && "$VENV/bin/st" --config-file "$WORK/schemathesis.toml" run \
      "http://127.0.0.1:$PORT/openapi.json" \
      --header "Authorization: Bearer $token" \
      --max-examples "$EXAMPLES" \
      --request-timeout 10 \
      --no-color); then
    failed=1
  fi
done
if [ "$failed" != 0 ]; then
  printf -- '--- valet log ---\n' >&2
  tail -n 50 "$WORK/valet.log" >&2
  die "Schemathesis found answers the OpenAPI description does not allow (above)"
fi
say "the served OpenAPI description holds for every operation"
