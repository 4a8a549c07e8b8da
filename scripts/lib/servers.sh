# Shell functions shared by scripts/test.sh and scripts/bench-large.sh: free ports,
# waiting for a server, and the S3 server (s3s-fs) the cloud-backend tests and the
# large-file benchmark run against. Sourced; expects say() and die().

# Tools installed for the project's checks live outside the clone, reused across runs.
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/valet-test"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

STARTED_PIDS=()
stop_started() { for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_started EXIT

wait_port() { # host port what
  for _ in $(seq 120); do port_open "$1" "$2" && return; sleep 0.5; done
  die "$3 did not come up on $1:$2"
}

# S3 for the cloud-backend tests: s3s-fs 0.17.0 (it verifies SigV4 and presigned
# expiry, signed content-length/content-type and x-amz-checksum-sha256, and
# If-None-Match), built once into the tools cache, run on a free port.
ensure_s3() {
  if [ -n "${TEST_S3_ENDPOINT:-}" ]; then return; fi
  local bin="$TOOLS/s3s-fs/bin/s3s-fs"
  if [ ! -x "$bin" ]; then
    say "installing s3s-fs 0.17.0 (cargo install; a few minutes, once)"
    cargo install s3s-fs@0.17.0 --features binary --locked --ignore-rust-version --root "$TOOLS/s3s-fs" \
      || die "cannot install s3s-fs: cargo install s3s-fs@0.17.0 --features binary"
  fi
  local port dir
  port=$(free_port)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/valet-test-s3.XXXXXX")
  "$bin" --host 127.0.0.1 --port "$port" --access-key valet-test --secret-key valet-test-secret-key "$dir" \
    >"$dir.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_port 127.0.0.1 "$port" "s3s-fs (log: $dir.log)"
  export TEST_S3_ENDPOINT="http://127.0.0.1:$port" TEST_S3_ACCESS_KEY=valet-test TEST_S3_SECRET_KEY=valet-test-secret-key
}

