#!/usr/bin/env bash
# The load benchmark: valet's release build under wrk, on each configuration.
#
#   scripts/load.sh                    # both configurations, one after the other
#   scripts/load.sh sqlite             # embedded default: SQLite + in-process cache + local store
#   scripts/load.sh postgres           # PostgreSQL + Redis on 127.0.0.1 (scratch database, own key prefix)
#   scripts/load.sh overload [sqlite|postgres]
#                                      # max_in_flight = 32 under 512 connections: every
#                                      # answer must be 2xx or a 503 problem with Retry-After
#
# Each configuration runs REPS rounds; a round runs every scenario once, in this order:
#   healthz   GET /healthz (the HTTP floor)
#   pgbench   single-row INSERTs into valet's own `files` table, in a scratch database
#             with valet's schema (the database ceiling; always PostgreSQL, also for sqlite)
#   create    POST /v1/files, a new name and SHA-256 every request
#   get       GET /v1/files/{id} of seeded files (cache hits)
#   download  GET /v1/files/{id}/download of uploaded seed files (a signed URL)
#   list      GET /v1/files?limit=100
# and prints, per scenario and round, req/s, p50/p99, failures (answers of 400 or more
# plus socket errors), valet's CPU time per request (utime + stime of the valet process
# from /proc/<pid>/stat over the run, divided by the requests served), on postgres the
# CPU time the local PostgreSQL processes spent per request (the same way), the ratio to the
# /healthz floor of the same round and, for create, to the pgbench ceiling; then the
# median of the rounds.
#
# Options through the environment:
#   CONNECTIONS (64)   wrk connections and pgbench clients
#   THREADS (2)        wrk threads and pgbench threads
#   DURATION (10s)     length of every run (s, m or h suffix)
#   REPS (3)           rounds
#   TIMEOUT (5s)       wrk's per-request timeout: slower answers count as failures
#   SEED_FILES (200)   files created before the reads; SEED_UPLOADED (20) of them uploaded
#   BUSY (0)           start that many `yes > /dev/null` for the whole run (a busy machine)
#   PROFILE (0)        1: perf record valet during the first create run of each configuration;
#                      dwarf: the same with DWARF call chains (whole stacks; a callers report too)
#   PROFILE_SCENARIO (create)   the scenario profiled: create, get, download or list
#   OVERLOAD_CONNECTIONS (512), OVERLOAD_MAX_IN_FLIGHT (32)   the overload run
#   POSTGRES_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (redis://127.0.0.1:6379)
#   VALET_BINARY       benchmark this binary instead of building target/release/valet
#   VALET_*            passed to valet as they are (except the bind address, data directory,
#                      database and cache, which the configuration decides)
# Results (raw wrk and pgbench output, results.tsv, the tables, perf reports) go to
# target/load/<timestamp>/. wrk, pgbench, psql, redis-cli, curl, jq and perf are
# installed with apt-get (as root or through sudo) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; }

mode=${1:-all}
case "$mode" in
  all) configs=(sqlite postgres) ;;
  sqlite | postgres) configs=("$mode") ;;
  overload)
    configs=("${2:-sqlite}")
    case "${configs[0]}" in sqlite | postgres) ;; *) usage; exit 2 ;; esac
    ;;
  -h | --help | help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac

connections=${CONNECTIONS:-64}
threads=${THREADS:-2}
duration=${DURATION:-10s}
reps=${REPS:-3}
timeout=${TIMEOUT:-5s}
seed_files=${SEED_FILES:-200}
seed_uploaded=${SEED_UPLOADED:-20}
busy=${BUSY:-0}
profile=${PROFILE:-0}
profile_scenario=${PROFILE_SCENARIO:-create}
overload_connections=${OVERLOAD_CONNECTIONS:-512}
overload_max_in_flight=${OVERLOAD_MAX_IN_FLIGHT:-32}
admin_url=${POSTGRES_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
for option in connections threads reps seed_files seed_uploaded busy overload_connections overload_max_in_flight; do
  is_count "${!option}" || die "${option^^} must be a whole number, not '${!option}'"
done
{ [ "$reps" -ge 1 ] && [ "$connections" -ge 1 ] && [ "$threads" -ge 1 ]; } || die "REPS, CONNECTIONS and THREADS must be at least 1"
[ "$seed_files" -ge 100 ] || die "SEED_FILES must be at least 100 (list reads 100)"
{ [ "$seed_uploaded" -ge 1 ] && [ "$seed_uploaded" -le "$seed_files" ]; } || die "SEED_UPLOADED must be 1 to SEED_FILES"

# Seconds in a wrk duration (10, 10s, 2m, 1h): pgbench and perf want them.
seconds() {
  local d=$1
  case "$d" in
    *[0-9]s) d=${d%s}; m=1 ;; *[0-9]m) d=${d%m}; m=60 ;; *[0-9]h) d=${d%h}; m=3600 ;; *) m=1 ;;
  esac
  { is_count "$d" && [ "$d" -ge 1 ]; } || die "DURATION must be like 10s, 2m or 1h, not '$1'"
  echo $((d * m))
}
duration_secs=$(seconds "$duration")

# ---------------------------------------------------------------------------- tools

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}
apt_updated=""
# ensure_tool COMMAND PACKAGE: installs PACKAGE with apt-get when COMMAND is missing.
ensure_tool() {
  command -v "$1" >/dev/null && return
  say "installing $2 (apt-get install $2) for $1"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2 || true; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2 \
    || die "$1 is missing and could not be installed: apt-get install $2 (as root)"
  command -v "$1" >/dev/null || die "$1 is still missing after apt-get install $2"
}

ensure_tool wrk wrk
ensure_tool curl curl
ensure_tool jq jq
ensure_tool sha256sum coreutils
if [ "$mode" != overload ]; then
  ensure_tool psql postgresql-client
  ensure_tool pgbench postgresql-client
fi
if [[ " ${configs[*]} " == *" postgres "* ]]; then ensure_tool redis-cli redis-tools; fi
case "$profile" in
  0) ;;
  1 | dwarf) ensure_tool perf linux-perf ;;
  *) die "PROFILE must be 0, 1 or dwarf" ;;
esac

# The PostgreSQL the benchmark needs: at POSTGRES_ADMIN_URL, or (the default) on
# 127.0.0.1:5432, started or installed (as root) when missing.
ensure_postgres() {
  psql "$admin_url" -Atqc 'select 1' >/dev/null 2>&1 && return
  [ -z "${POSTGRES_ADMIN_URL:-}" ] || die "cannot reach PostgreSQL at POSTGRES_ADMIN_URL"
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    ensure_tool pg_ctlcluster postgresql
  fi
  local version
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 30); do psql "$admin_url" -Atqc 'select 1' >/dev/null 2>&1 && return; sleep 1; done
  die "cannot reach PostgreSQL at $admin_url; start it or set POSTGRES_ADMIN_URL"
}

# The Redis the postgres configuration caches in: at REDIS_URL, or (the default) on
# 127.0.0.1:6379, started or installed (as root) when missing.
ensure_redis() {
  redis-cli -u "$redis_url" ping >/dev/null 2>&1 && return
  [ -z "${REDIS_URL:-}" ] || die "cannot reach Redis at REDIS_URL"
  ensure_tool redis-server redis-server
  say "starting Redis on 127.0.0.1:6379"
  mkdir -p "${TMPDIR:-/tmp}/valet-load-redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}/valet-load-redis" --logfile "${TMPDIR:-/tmp}/valet-load-redis/redis.log" >&2 || true
  for _ in $(seq 30); do redis-cli -u "$redis_url" ping >/dev/null 2>&1 && return; sleep 0.5; done
  die "cannot reach Redis at $redis_url; start it or set REDIS_URL"
}

if [ "$mode" != overload ] || [ "${configs[0]}" = postgres ]; then ensure_postgres; fi
if [[ " ${configs[*]} " == *" postgres "* ]]; then ensure_redis; fi

if [ -n "${VALET_BINARY:-}" ]; then
  valet=$(realpath "$VALET_BINARY")
  [ -x "$valet" ] || die "VALET_BINARY is not an executable: $VALET_BINARY"
  unset VALET_BINARY # not an option: valet would refuse to start with it set
else
  command -v cargo >/dev/null || die "cargo is not installed: install the Rust toolchain (https://rustup.rs)"
  say "cargo build --release"
  cargo build --release --quiet
  valet=$repo/target/release/valet
fi

# Connections beyond the default 1024 descriptors, for wrk and valet alike.
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

# ------------------------------------------------------------------ state, cleanup

stamp=$(date +%Y%m%d-%H%M%S)
results=$repo/target/load/$stamp
[ -e "$results" ] && results=$results-$$
mkdir -p "$results"
work=$(mktemp -d "${TMPDIR:-/tmp}/valet-load.XXXXXX")
run_id=$$-$RANDOM
tsv=$results/results.tsv

server=""        # valet's pid
perf_pid=""
busy_pids=()
scratch_dbs=()
redis_prefixes=()

stop_valet() {
  [ -n "$server" ] || return 0
  kill -TERM "$server" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}

cleanup() {
  local status=$?
  set +e
  [ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null && wait "$perf_pid" 2>/dev/null
  stop_valet
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for db in "${scratch_dbs[@]}"; do
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      || printf 'warning: could not drop the scratch database %s\n' "$db" >&2
  done
  for prefix in "${redis_prefixes[@]}"; do
    redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null \
      | xargs -r -n 500 redis-cli -u "$redis_url" unlink >/dev/null 2>&1
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$busy" -gt 0 ]; then
  say "BUSY=$busy: $busy × yes > /dev/null for the whole run"
  for _ in $(seq "$busy"); do
    yes >/dev/null &
    busy_pids+=("$!")
  done
fi

# ------------------------------------------------------------------ valet

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    port_open 127.0.0.1 "$port" || { echo "$port"; return; }
  done
  die "found no free port"
}

# A scratch PostgreSQL database, dropped on exit; sets scratch_url. (Not a command
# substitution: the name must reach scratch_dbs in this shell.)
scratch_database() {
  local name=valet_load_${run_id//-/_}_$1
  psql "$admin_url" -qc "CREATE DATABASE $name" >/dev/null || die "cannot create the scratch database $name"
  scratch_dbs+=("$name")
  scratch_url=${admin_url%/*}/$name
}

# start_valet CONFIG [EXTRA VALET_*=VALUE…]: starts valet in its own directory and
# waits until it is ready. Sets server, api, token, dir.
start_valet() {
  local config=$1
  shift
  dir=$work/$config
  mkdir -p "$dir"
  local port
  port=$(free_port)
  api=http://127.0.0.1:$port
  local env=(VALET_SERVER__BIND="127.0.0.1:$port" VALET_DATA_DIR="$dir/data"
    VALET_LOG__LEVEL="${VALET_LOG__LEVEL:-warn}" "$@")
  local unset=(-u VALET_DATABASE__URL -u VALET_CACHE__URL -u VALET_CACHE__KEY_PREFIX)
  if [ "$config" = postgres ]; then
    local prefix="valet-load-$run_id-$config:"
    redis_prefixes+=("$prefix")
    scratch_database "$config"
    env+=(VALET_DATABASE__URL="$scratch_url" VALET_CACHE__URL="$redis_url"
      VALET_CACHE__KEY_PREFIX="$prefix")
  fi
  valet_env=(env "${unset[@]}" "${env[@]}")
  (cd "$dir" && exec "${valet_env[@]}" "$valet" serve) >"$results/valet-$config.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do
    curl -fs "$api/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { tail -n 20 "$results/valet-$config.log" >&2; die "valet ($config) exited at start"; }
    sleep 0.1
  done
  curl -fs "$api/readyz" >/dev/null || { tail -n 20 "$results/valet-$config.log" >&2; die "valet ($config) did not become ready"; }
  token=$(cd "$dir" && "${valet_env[@]}" "$valet" token mint --tenant load --device dev-1 --ttl 4h)
}

# Creates SEED_FILES files (one curl, one connection), uploads SEED_UPLOADED of them
# exactly as the create answer says and completes them. Writes $dir/ids (all) and
# $dir/uploaded (the uploaded ones).
seed() {
  local content=$dir/seed.bin size sha
  printf 'valet load seed %s\n' "$run_id" >"$content"
  size=$(wc -c <"$content")
  sha=$(sha256sum "$content" | cut -d' ' -f1)
  local i
  for i in $(seq "$seed_files"); do
    printf 'url = "%s/v1/files"\nrequest = "POST"\nheader = "Authorization: Bearer %s"\n' "$api" "$token"
    printf 'header = "Content-Type: application/json"\n'
    printf 'data = "{\\"name\\":\\"seed-%d.txt\\",\\"size\\":%d,\\"sha256\\":\\"%s\\",\\"content_type\\":\\"text/plain\\"}"\n' "$i" "$size" "$sha"
    printf 'write-out = "\\n"\n'
    if [ "$i" -lt "$seed_files" ]; then printf 'next\n'; fi
  done >"$dir/seed.curl"
  curl -sS -K "$dir/seed.curl" >"$dir/created.json" || die "seeding: creating files failed"
  jq -r '.file.id // empty' "$dir/created.json" >"$dir/ids"
  [ "$(wc -l <"$dir/ids")" -eq "$seed_files" ] \
    || { head -c 600 "$dir/created.json" >&2; die "seeding: created $(wc -l <"$dir/ids") of $seed_files files"; }
  : >"$dir/uploaded"
  local id method url headers status
  while IFS=$'\t' read -r id method url; do
    headers=()
    while IFS= read -r h; do headers+=(-H "$h"); done \
      < <(jq -r --arg id "$id" 'select(.file.id == $id) | .upload.headers | to_entries[] | "\(.key): \(.value)"' "$dir/created.json")
    curl -fsS -o /dev/null -X "$method" "$url" "${headers[@]}" --data-binary "@$content" \
      || die "seeding: uploading $id failed"
    status=$(curl -fsS -X POST "$api/v1/files/$id/complete" -H "Authorization: Bearer $token" | jq -r .status) \
      || die "seeding: completing $id failed"
    [ "$status" = uploaded ] || die "seeding: $id is $status after complete"
    echo "$id" >>"$dir/uploaded"
  done < <(jq -r '[.file.id, .upload.method, .upload.url] | @tsv' "$dir/created.json" | head -n "$seed_uploaded")
}

# CPU time (utime + stime, in clock ticks) valet has used so far.
ticks_per_sec=$(getconf CLK_TCK)
cpu_ticks() {
  local stat
  stat=$(<"/proc/$server/stat")
  stat=${stat##*) }            # the fields after "(comm)", from field 3 (state) on
  read -r -a fields <<<"$stat"
  echo $((fields[11] + fields[12]))
}

# CPU time (clock ticks) every local PostgreSQL server process has used so far: the
# database's share of a request, which valet's own figure leaves out. Empty when
# PostgreSQL runs elsewhere (no such processes here).
db_ticks() {
  local pid stat total=0 found=0
  for pid in $(pgrep -x postgres 2>/dev/null); do
    stat=$(<"/proc/$pid/stat") 2>/dev/null || continue
    stat=${stat##*) }
    read -r -a fields <<<"$stat"
    total=$((total + fields[11] + fields[12]))
    found=1
  done
  [ "$found" = 1 ] && echo "$total" || echo ""
}

# ------------------------------------------------------------------ scenarios

# Answers of 400 or more valet has counted so far, by status ("503 2" lines), from
# /metrics: which failures a run had, without a response() hook slowing wrk down.
error_statuses() {
  curl -fs "$api/metrics" 2>/dev/null | awk '
    /^valet_http_requests_total\{/ && match($0, /status="[0-9]+"/) {
      status = substr($0, RSTART + 8, RLENGTH - 9)
      if (status + 0 >= 400) n[status] += $NF
    }
    END { for (status in n) print status, n[status] }' || true
}

# run_wrk CONFIG REP SCENARIO LUA URL CONNECTIONS [LOAD_*=VALUE…]: one wrk run; appends
# a row to results.tsv: config rep scenario req/s p50_ms p99_ms failures cpu_us/req db_cpu_us/req
# requests, and what the failures were.
run_wrk() {
  local config=$1 rep=$2 scenario=$3 lua=$4 url=$5 conns=$6
  shift 6
  local out=$results/$config-$scenario-$rep.txt before after seen db_before db_after
  error_statuses >"$work/statuses.before"
  db_before=$(db_ticks)
  before=$(cpu_ticks)
  env LOAD_LUA_DIR="$repo/scripts/load" LOAD_TOKEN="$token" LOAD_SALT="$(printf '%08x' $((RANDOM * 32768 + RANDOM)))" "$@" \
    wrk -t"$threads" -c"$conns" -d"$duration" --timeout "$timeout" --latency \
    -s "$repo/scripts/load/$lua" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk failed ($config $scenario, rep $rep)"; }
  after=$(cpu_ticks)
  db_after=$(db_ticks)
  error_statuses >"$work/statuses.after"
  seen=$(awk 'FILENAME == ARGV[1] { b[$1] = $2; next }
    { d = $2 - b[$1]; if (d > 0) { printf "%s%s:%d", sep, $1, d; sep = "," } }' \
    "$work/statuses.before" "$work/statuses.after")
  local line
  line=$(grep '^VALET_LOAD ' "$out") || { cat "$out" >&2; die "no result from wrk ($config $scenario, rep $rep)"; }
  # The database's CPU only where it is PostgreSQL (SQLite is inside valet's figure).
  local db_cpu=-
  if [ "$config" = postgres ] && [ -n "$db_before" ] && [ -n "$db_after" ]; then
    db_cpu=$((db_after - db_before))
  fi
  awk -v config="$config" -v rep="$rep" -v scenario="$scenario" -v cpu=$((after - before)) \
    -v hz="$ticks_per_sec" -v seen="$seen" -v db_cpu="$db_cpu" '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END {
      fails = v["status"] + v["connect"] + v["read"] + v["write"] + v["timeout"]
      rps = v["duration_us"] > 0 ? v["requests"] / (v["duration_us"] / 1e6) : 0
      cpu_us = v["requests"] > 0 ? cpu / hz * 1e6 / v["requests"] : 0
      db_us = db_cpu == "-" || v["requests"] == 0 ? "-" : sprintf("%.1f", db_cpu / hz * 1e6 / v["requests"])
      # statuses valet counted, answers of 400 or more it did not (the HTTP layer
      # refusing a request before valet sees it), socket errors
      detail = seen == "" ? "" : "status " seen
      counted = 0; n = split(seen, parts, ","); for (i = 1; i <= n; i++) { split(parts[i], sc, ":"); counted += sc[2] }
      if (v["status"] > counted) detail = detail (detail == "" ? "" : ", ") "not counted by valet " v["status"] - counted
      split("connect read write timeout", kinds, " ")
      for (i = 1; i <= 4; i++) if (v[kinds[i]] > 0) detail = detail (detail == "" ? "" : ", ") "socket " kinds[i] " " v[kinds[i]]
      printf "%s\t%s\t%s\t%.1f\t%.2f\t%.2f\t%d\t%.1f\t%s\t%d\t%s\n", config, rep, scenario, rps,
        v["p50_us"] / 1000, v["p99_us"] / 1000, fails, cpu_us, db_us, v["requests"], detail == "" ? "-" : detail
    }' <<<"$line" >>"$tsv"
}

# run_pgbench CONFIG REP BENCH_URL: the database ceiling, one row in results.tsv.
run_pgbench() {
  local config=$1 rep=$2 url=$3
  local out=$results/$config-pgbench-$rep.txt logs=$work/pgbench-log
  rm -f "$logs".*
  pgbench -n -f "$repo/scripts/load/insert-file.sql" -c "$connections" -j "$threads" \
    -T "$duration_secs" -l --log-prefix="$logs" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "pgbench failed ($config, rep $rep)"; }
  local tps processed failed
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  { [ -n "$tps" ] && [ -n "$processed" ]; } || { cat "$out" >&2; die "cannot read pgbench's output"; }
  # Per-transaction log: the third field is the latency in µs.
  local percentiles
  percentiles=$(cat "$logs".* | awk '{ print $3 }' | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "0 0"; exit }
      p50 = int(NR * 0.50); if (p50 < 1) p50 = 1
      p99 = int(NR * 0.99); if (p99 < 1) p99 = 1
      printf "%.2f %.2f\n", v[p50] / 1000, v[p99] / 1000
    }')
  rm -f "$logs".*
  printf '%s\t%s\tpgbench\t%s\t%s\t%s\t%s\t-\t-\t%s\t%s\n' "$config" "$rep" "$tps" \
    "${percentiles% *}" "${percentiles#* }" "${failed:-0}" "$processed" \
    "$([ "${failed:-0}" -gt 0 ] && echo "failed transactions" || echo -)" >>"$tsv"
}

# The per-configuration table: every round, then the median; ratios per round.
print_table() {
  local config=$1 description=$2
  {
    printf '\n== %s: %s\n' "$config" "$description"
    printf '   %s connections, %s wrk threads, %s a run, %s rounds%s; pgbench: %s clients on PostgreSQL%s\n' \
      "$connections" "$threads" "$duration" "$reps" "${busy_note}" "$connections" \
      "$([ "$config" = sqlite ] && echo ' (the same ceiling as for postgres, so the ratios compare)')"
    awk -F'\t' -v config="$config" -v reps="$reps" '
      function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        if (n == 0 || a[1] == "-") return "-"
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      function add(key, value) { col[key] = (key in col) ? col[key] " " value : value }
      function row(name, rep, rps, p50, p99, fails, cpu, db, floor, ceil) {
        printf "%-9s %6s %11s %8s %8s %8s %10s %10s %7s %9s\n", name, rep, rps, p50, p99, fails, cpu, db, floor, ceil
      }
      function num(x, fmt) { return x == "-" ? "-" : sprintf(fmt, x) }
      $1 == config {
        n++; r[n] = $0
        if ($3 == "healthz") floor[$2] = $4
        if ($3 == "pgbench") ceiling[$2] = $4
        if (!($3 in seen)) { seen[$3] = 1; order[++scenarios] = $3 }
      }
      END {
        row("scenario", "round", "req/s", "p50 ms", "p99 ms", "failed", "CPU us/req", "PG us/req", "x floor", "x pgbench")
        for (s = 1; s <= scenarios; s++) {
          name = order[s]
          for (i = 1; i <= n; i++) {
            split(r[i], f, "\t")
            if (f[3] != name) continue
            xf = (f[2] in floor) && floor[f[2]] > 0 ? f[4] / floor[f[2]] : "-"
            xc = name == "create" && (f[2] in ceiling) && ceiling[f[2]] > 0 ? f[4] / ceiling[f[2]] : "-"
            if (name == "pgbench") xf = "-"
            row(name, f[2], num(f[4], "%.0f"), num(f[5], "%.2f"), num(f[6], "%.2f"), f[7],
              num(f[8], "%.1f"), num(f[9], "%.1f"), num(xf, "%.3f"), num(xc, "%.3f"))
            add(name SUBSEP 4, f[4]); add(name SUBSEP 5, f[5]); add(name SUBSEP 6, f[6])
            add(name SUBSEP 7, f[7]); add(name SUBSEP 8, f[8]); add(name SUBSEP 9, f[9])
            add(name SUBSEP "xf", xf); add(name SUBSEP "xc", xc)
          }
          if (reps > 1)
            row(name, "median", num(median(col[name SUBSEP 4]), "%.0f"), num(median(col[name SUBSEP 5]), "%.2f"),
              num(median(col[name SUBSEP 6]), "%.2f"), median(col[name SUBSEP 7]),
              num(median(col[name SUBSEP 8]), "%.1f"), num(median(col[name SUBSEP 9]), "%.1f"),
              num(median(col[name SUBSEP "xf"]), "%.3f"),
              num(median(col[name SUBSEP "xc"]), "%.3f"))
        }
        for (i = 1; i <= n; i++) {
          split(r[i], f, "\t")
          if (f[7] > 0) printf "   failed, %s round %s: %s\n", f[3], f[2], f[11]
        }
      }' "$tsv"
  } | tee -a "$results/table.txt"
}

# Runs the command after the first three arguments (config, round, scenario), under
# perf when PROFILE asks for this scenario in the first round.
profiled() {
  local config=$1 rep=$2 scenario=$3
  shift 3
  if [ "$profile" = 0 ] || [ "$rep" != 1 ] || [ "$scenario" != "$profile_scenario" ]; then
    "$@"
    return
  fi
  start_profile "$config"
  "$@"
  finish_profile "$config"
}

# perf during one run: records valet for DURATION, then writes the reports.
start_profile() {
  local graph=(-g)
  # Release builds keep no frame pointers: DWARF unwinding gives whole call chains.
  if [ "$profile" = dwarf ]; then graph=(--call-graph dwarf,16384 -F 499); fi
  perf record "${graph[@]}" -p "$server" -o "$results/perf-$1.data" -- sleep "$duration_secs" \
    >"$results/perf-$1.record.txt" 2>&1 &
  perf_pid=$!
}
finish_profile() {
  local config=$1
  wait "$perf_pid" || true
  perf_pid=""
  local data=$results/perf-$config.data
  [ -s "$data" ] || { printf 'warning: perf recorded nothing (%s)\n' "$results/perf-$config.record.txt" >&2; return 0; }
  # Self time by shared object and symbol (--sort dso,symbol, with only these columns:
  # without them perf pads every line for IPC columns a VM cannot fill), then by
  # thread name (the kernel keeps 15 characters of it).
  perf report -i "$data" --no-children -F overhead,dso,sym -g none --percent-limit 0.2 --stdio \
    2>/dev/null | grep -v '^$' | sed -E 's/[[:space:]]+$//' >"$results/perf-$config-symbols.txt" || true
  perf report -i "$data" --no-children -F overhead,comm -g none --stdio \
    2>/dev/null | grep -v '^$' | sed -E 's/[[:space:]]+$//' >"$results/perf-$config-threads.txt" || true
  if [ "$profile" = dwarf ]; then
    perf report -i "$data" --children -F overhead_children,overhead,sym -g none --percent-limit 1 --stdio \
      2>/dev/null | grep -v '^$' | sed -E 's/[[:space:]]+$//' >"$results/perf-$config-callers.txt" || true
  fi
  {
    printf '\n== %s: where valet spends its CPU during %s (perf; all of it in %s)\n' \
      "$config" "$profile_scenario" "${results#"$repo"/}/perf-$config-symbols.txt"
    grep -v '^#' "$results/perf-$config-symbols.txt" | head -n 25 | cut -c1-150
    printf -- '-- by thread name\n'
    grep -v '^#' "$results/perf-$config-threads.txt" | head -n 12
    if [ "$profile" = dwarf ]; then
      printf -- '-- including callees (valet'"'"'s own code and the crates it calls)\n'
      grep -v '^#' "$results/perf-$config-callers.txt" | grep -vE '\[k\]|0x0000' | head -n 40 | cut -c1-150
    fi
  } | tee -a "$results/profile.txt"
}

busy_note=""
if [ "$busy" -gt 0 ]; then busy_note=", BUSY=$busy"; fi

passthrough=$(env | grep -E '^VALET_' | grep -vE '^VALET_(SERVER__BIND|DATA_DIR|DATABASE__URL|CACHE__URL|CACHE__KEY_PREFIX|BINARY)=' \
  | sed 's/=.*//' | sort | tr '\n' ' ' || true)
{
  echo "valet load run $stamp: $(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown), binary $valet"
  echo "machine: $(nproc) CPUs, $(uname -sr)${busy_note}"
  if [ -n "$passthrough" ]; then echo "VALET_* settings passed through: $passthrough"; fi
} | tee "$results/run.txt"

describe() {
  case "$1" in
    sqlite) echo "embedded default (SQLite + in-process cache + local store)" ;;
    postgres) echo "PostgreSQL + Redis on 127.0.0.1 (scratch database, own key prefix)" ;;
  esac
}

# ------------------------------------------------------------------ the benchmark

benchmark() {
  local config=$1
  say "$config: starting valet and seeding $seed_files files ($seed_uploaded uploaded)"
  start_valet "$config"
  seed
  scratch_database "pgbench_$config"
  local bench_url=$scratch_url
  (cd "$dir" && VALET_DATABASE__URL="$bench_url" "$valet" migrate) >"$results/migrate-$config.log" 2>&1 \
    || { cat "$results/migrate-$config.log" >&2; die "valet migrate failed on the pgbench database"; }
  local rep
  for rep in $(seq "$reps"); do
    say "$config: round $rep of $reps"
    run_wrk "$config" "$rep" healthz healthz.lua "$api/healthz" "$connections"
    run_pgbench "$config" "$rep" "$bench_url"
    profiled "$config" "$rep" create run_wrk "$config" "$rep" create create.lua "$api/v1/files" "$connections"
    profiled "$config" "$rep" get run_wrk "$config" "$rep" get get.lua "$api/v1/files/" "$connections" LOAD_IDS="$dir/ids"
    profiled "$config" "$rep" download run_wrk "$config" "$rep" download download.lua "$api/v1/files/" "$connections" LOAD_IDS="$dir/uploaded"
    profiled "$config" "$rep" list run_wrk "$config" "$rep" list list.lua "$api/v1/files?limit=100" "$connections"
  done
  stop_valet
  print_table "$config" "$(describe "$config")"
}

# Overload: every answer must be 2xx or a 503 problem document with Retry-After.
overload() {
  local config=$1
  say "$config overload: max_in_flight = $overload_max_in_flight, $overload_connections connections"
  start_valet "$config" VALET_SERVER__MAX_IN_FLIGHT="$overload_max_in_flight"
  seed
  local rep scenario out others=0
  : >"$results/overload.tsv"
  for rep in $(seq "$reps"); do
    for scenario in create get; do
      local before after line counts
      out=$results/overload-$config-$scenario-$rep.txt
      before=$(cpu_ticks)
      env LOAD_LUA_DIR="$repo/scripts/load" LOAD_TOKEN="$token" LOAD_COUNT=1 LOAD_IDS="$dir/ids" \
        LOAD_SALT="$(printf '%08x' $((RANDOM * 32768 + RANDOM)))" \
        wrk -t"$threads" -c"$overload_connections" -d"$duration" --timeout "$timeout" --latency \
        -s "$repo/scripts/load/$scenario.lua" "$api/v1/files/" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed (overload $scenario, rep $rep)"; }
      after=$(cpu_ticks)
      { line=$(grep '^VALET_LOAD ' "$out") && counts=$(grep '^VALET_LOAD_COUNTS ' "$out"); } \
        || { cat "$out" >&2; die "no result from wrk (overload $scenario, rep $rep)"; }
      awk -v scenario="$scenario" -v rep="$rep" -v cpu=$((after - before)) -v hz="$ticks_per_sec" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END {
          sockets = v["connect"] + v["read"] + v["write"] + v["timeout"]
          rps = v["duration_us"] > 0 ? v["requests"] / (v["duration_us"] / 1e6) : 0
          printf "%s\t%s\t%.1f\t%.2f\t%.2f\t%d\t%d\t%d\t%s\t%d\t%.1f\n", scenario, rep, rps,
            v["p50_us"] / 1000, v["p99_us"] / 1000, v["ok"], v["problem503"], v["other"] + sockets,
            "statuses " v["statuses"] ", empty bodies " v["empty"] ", sockets " sockets " (connect " v["connect"] \
              ", read " v["read"] ", write " v["write"] ", timeout " v["timeout"] ")",
            v["requests"], (v["requests"] > 0 ? cpu / hz * 1e6 / v["requests"] : 0)
        }' <<<"$line $counts" >>"$results/overload.tsv"
    done
  done
  stop_valet
  {
    printf '\n== overload, %s: %s\n' "$config" "$(describe "$config")"
    printf '   max_in_flight = %s, %s connections, %s wrk threads, %s a run, %s rounds%s\n' \
      "$overload_max_in_flight" "$overload_connections" "$threads" "$duration" "$reps" "$busy_note"
    awk -F'\t' '
      BEGIN { printf "%-8s %5s %10s %8s %8s %9s %11s %9s %10s\n", "scenario", "round", "req/s", "p50 ms", "p99 ms", "2xx", "503 problem", "other", "CPU us/req" }
      {
        printf "%-8s %5s %10.0f %8.2f %8.2f %9d %11d %9d %10.1f\n", $1, $2, $3, $4, $5, $6, $7, $8, $11
        if ($8 > 0) printf "         other: %s\n", $9
      }' "$results/overload.tsv"
  } | tee -a "$results/table.txt"
  others=$(awk -F'\t' '{ s += $8 } END { print s + 0 }' "$results/overload.tsv")
  if [ "$others" -gt 0 ]; then
    printf '\nFAIL: %s answers were neither 2xx nor a 503 problem with Retry-After (raw output in %s)\n' \
      "$others" "$results" | tee -a "$results/table.txt"
    exit 1
  fi
  printf '\nOK: every answer was 2xx or a 503 problem with Retry-After\n' | tee -a "$results/table.txt"
}

printf 'config\trep\tscenario\treq_per_s\tp50_ms\tp99_ms\tfailed\tcpu_us_per_req\tdb_cpu_us_per_req\trequests\tfailures\n' >"$tsv"
if [ "$mode" = overload ]; then
  overload "${configs[0]}"
else
  for config in "${configs[@]}"; do benchmark "$config"; done
fi
say "results in ${results#"$repo"/}"
