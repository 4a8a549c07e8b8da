#!/usr/bin/env bash
# The large-file benchmark: valet's release build, files sent through `valet upload`.
#
#   scripts/bench-large.sh             # local store and S3 (s3s-fs), then the memory run
#
# For each store (a fresh valet and data directory each) it uploads one SIZE_MIB file
# with --parallel 1 and again with --parallel 4, in parts of the default size, and
# reports per run:
#   upload MB/s   the file's size over the CLI's wall time, from `valet upload` to
#                 `uploaded` (local hashing, parts, completion, verification)
#   parts MB/s    the size over the time the parts took (the CLI start to the
#                 completion the server logged)
#   verify MB/s   the size over the server's verification (completion accepted to
#                 `file uploaded` in its log: assembling the parts and streaming the
#                 whole object through SHA-256)
# Then the memory run: a fresh valet on the local store takes a MEMORY_SIZE_MIB file
# (--parallel 4) and verifies it; the script prints valet's peak resident memory
# (VmHWM) over the whole run. Results go to target/bench-large/<timestamp>/.
#
# Options through the environment:
#   SIZE_MIB (1024)          size of the throughput runs' file
#   MEMORY_SIZE_MIB (2048)   size of the memory run's file
#   STORES ("local s3")      stores to run on
#   VALET_BINARY             benchmark this binary instead of building target/release/valet
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/servers.sh
. scripts/lib/servers.sh

SIZE_MIB=${SIZE_MIB:-1024}
MEMORY_SIZE_MIB=${MEMORY_SIZE_MIB:-2048}
STORES=${STORES:-local s3}
command -v jq >/dev/null || die "jq is missing: apt-get install jq"

if [ -n "${VALET_BINARY:-}" ]; then
  valet=$VALET_BINARY
else
  say "cargo build --release"
  cargo build --release --bin valet >&2
  valet=$repo/target/release/valet
fi
# valet reads VALET_* variables as configuration: this one is the script's.
unset VALET_BINARY

out=$repo/target/bench-large/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/valet-bench-large.XXXXXX")
cleanup() { stop_started; rm -rf "$work"; }
trap cleanup EXIT

# Seconds since the epoch (with fractions) of a log line's leading RFC 3339 timestamp.
log_time() { date -u -d "$(cut -d' ' -f1 <<<"$1")" +%s.%N; }
now() { date -u +%s.%N; }
rate() { awk -v mib="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", mib * 1.048576 / s; else print "-" }'; }

# Starts valet on `store` in a fresh data directory; sets VALET_PID, API, TOKEN, LOG.
start_valet() { # store
  local store=$1 port dir
  port=$(free_port)
  dir=$work/$store-$port
  mkdir -p "$dir"
  {
    printf 'data_dir = "%s"\ndefault_backend = "bench"\n' "$dir/data"
    printf '[server]\nbind = "127.0.0.1:%s"\npublic_url = "http://127.0.0.1:%s"\n' "$port" "$port"
    case "$store" in
      local) printf '[backends.bench]\nkind = "local"\n' ;;
      s3)
        local bucket="bench-$port"
        # CreateBucket, SigV4-signed by curl; the empty body's SHA-256 is sent as S3 asks.
        curl -fsS -X PUT "$TEST_S3_ENDPOINT/$bucket" --aws-sigv4 "aws:amz:us-east-1:s3" \
          --user "$TEST_S3_ACCESS_KEY:$TEST_S3_SECRET_KEY" \
          -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" >/dev/null \
          || die "cannot create bucket $bucket"
        printf '[backends.bench]\nkind = "s3"\nbucket = "%s"\nendpoint = "%s"\npath_style = true\naccess_key_id = "%s"\nsecret_access_key = "%s"\n' \
          "$bucket" "$TEST_S3_ENDPOINT" "$TEST_S3_ACCESS_KEY" "$TEST_S3_SECRET_KEY"
        ;;
    esac
  } >"$dir/valet.toml"
  LOG=$dir/valet.log
  "$valet" --config "$dir/valet.toml" serve >"$LOG" 2>&1 &
  VALET_PID=$!
  STARTED_PIDS+=("$VALET_PID")
  wait_port 127.0.0.1 "$port" "valet (log: $LOG)"
  API=http://127.0.0.1:$port
  TOKEN=$("$valet" --config "$dir/valet.toml" token mint --tenant bench --device dev-1 --ttl 2h)
}

stop_valet() { kill "$VALET_PID" 2>/dev/null || true; wait "$VALET_PID" 2>/dev/null || true; }

peak_rss_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$VALET_PID/status"; }

# Uploads `file` with --parallel `n`; prints a results row.
run_upload() { # store file mib n
  local store=$1 file=$2 mib=$3 n=$4 start end id completed uploaded
  start=$(now)
  id=$("$valet" upload "$file" --url "$API" --token "$TOKEN" --parallel "$n" 2>>"$out/$store-cli.log" | jq -r .id)
  end=$(now)
  completed=$(grep -a "file completed; verifying it" "$LOG" | grep -a "$id" | head -n 1)
  uploaded=$(grep -a "file uploaded" "$LOG" | grep -a "$id" | head -n 1)
  [ -n "$completed" ] && [ -n "$uploaded" ] || die "no completion or verification of $id in $LOG"
  local total parts verify
  total=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  parts=$(awk -v a="$start" -v b="$(log_time "$completed")" 'BEGIN { print b - a }')
  verify=$(awk -v a="$(log_time "$completed")" -v b="$(log_time "$uploaded")" 'BEGIN { print b - a }')
  printf '%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n' "$store" "$mib" "$n" "$total" \
    "$(rate "$mib" "$total")" "$(rate "$mib" "$parts")" "$(rate "$mib" "$verify")" | tee -a "$out/results.tsv"
}

say "writing a $SIZE_MIB MiB test file"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/file.bin"
printf 'store\tMiB\tparallel\tseconds\tupload MB/s\tparts MB/s\tverify MB/s\n' | tee "$out/results.tsv"
for store in $STORES; do
  [ "$store" = s3 ] && ensure_s3
  start_valet "$store"
  for n in 1 4; do run_upload "$store" "$work/file.bin" "$SIZE_MIB" "$n"; done
  printf '# %s: valet peak RSS %s MiB\n' "$store" "$(peak_rss_mib)" | tee -a "$out/results.tsv"
  stop_valet
done
rm -f "$work/file.bin"

say "memory run: $MEMORY_SIZE_MIB MiB on the local store"
head -c $((MEMORY_SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/memory.bin"
start_valet local
run_upload local "$work/memory.bin" "$MEMORY_SIZE_MIB" 4 >/dev/null
printf '# memory run: %s MiB uploaded in parts and verified; valet peak RSS %s MiB\n' \
  "$MEMORY_SIZE_MIB" "$(peak_rss_mib)" | tee -a "$out/results.tsv"
stop_valet
say "results in $out"
