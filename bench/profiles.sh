#!/usr/bin/env bash
# What the body-reading plugins cost: Portcullis's CPU per request with the plugin against the
# same request without it, on one core (core 0), load generator and upstream on core 1.
#
#   openapi    POST of bench/openapi/order.json (1.1 KiB, nested objects and arrays) over
#              HTTP/1.1 keep-alive, to a route that validates it against bench/openapi/shop.yaml
#              (20 operations, mode enforce), against the same POST to a route without the
#              plugin. Upstream: nginx answering a fixed 200.
#   transcode  the unary call bench.v1.Items/GetItem (bench/transcode/items.proto) over h2c: as
#              JSON (POST /v1/items:get, bench/transcode/request.json) transcoded by
#              grpc_transcode, against the same call made in gRPC through the same route (gRPC
#              passes through untouched). Upstream: crates/gateway/examples/grpc_upstream.rs
#              (tonic, current-thread runtime).
#
# Both sides of a pair are served by one Portcullis process (worker_threads: 1) and measured
# alternately, ROUNDS times each (A B A B ...), so drift on the machine hits both alike. h2load
# drives both; CPU per request is the process's utime+stime over the measured run divided by the
# requests h2load completed. Latency percentiles come from h2load's per-request log.
#
# Environment (defaults): PROFILES="openapi transcode" DURATION=10 WARMUP=2 (seconds) ROUNDS=3
#   CONNS=32 (HTTP/1.1 connections) H2_CONNS=8 H2_STREAMS=16 (h2c connections, streams each)
#   KEEP_TMP=1 keeps the temp dir. CARGO_TARGET_DIR is honoured.
set -euo pipefail

PROFILES=${PROFILES:-openapi transcode}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-16}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for p in $PROFILES; do
  case $p in openapi | transcode) ;; *) die "unknown profile '$p' (known: openapi transcode)" ;; esac
done

ensure_tools h2load:nghttp2-client nginx:nginx-light curl:curl taskset:util-linux

log "building portcullis and the gRPC upstream (release)"
cargo build --release -p portcullis >&2
cargo build --release -p portcullis --example grpc_upstream >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/portcullis"
GRPC_BIN="$TARGET_DIR/release/examples/grpc_upstream"

PROXY_CORE=0
LOAD_CORE=1
[ "$(getconf _NPROCESSORS_ONLN)" -ge 2 ] || { log "warning: one CPU; everything shares core 0"; LOAD_CORE=0; }
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-profiles.XXXXXX")
chmod 755 "$TMP"   # nginx workers drop privileges when started as root

# start_gateway dir -> GW_PID (dir/portcullis.yaml written by the caller; PORT and ADMIN set)
start_gateway() {
  run_portcullis "$BIN" "$1" "$PORT" "$ADMIN" portcullis
  GW_PID=$STARTED_PID
}

# pair profile base_label base_url plugin_label plugin_url: h2load arguments of each side in the
# arrays BASE_ARGS and PLUGIN_ARGS
pair() {
  local profile=$1 bl=$2 bu=$3 pl=$4 pu=$5 r
  for r in $(seq "$ROUNDS"); do
    log "$profile round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    measure "$profile-$bl" "$GW_PID" "$bu" "${BASE_ARGS[@]}"
    measure "$profile-$pl" "$GW_PID" "$pu" "${PLUGIN_ARGS[@]}"
  done
  report "$profile" "$bl" "$pl"
}

# report profile base_label plugin_label: a table and key=value lines
report() {
  local profile=$1 bl=$2 pl=$3
  {
    echo
    echo "profile $profile: ${ROUNDS} rounds of ${DURATION}s each side, Portcullis on core $PROXY_CORE"
    printf '%-12s %14s %22s %10s %10s %10s\n' side "CPU us/req" "rounds" "req/s" "p50 ms" "p99 ms"
    local side
    for side in "$bl" "$pl"; do
      awk -v side="$side" '{c += $1; r += $2; a += $3; b += $4; e += $6; l = l (NR > 1 ? " " : "") $1}
        END {printf "%-12s %14.2f %22s %10.0f %10.3f %10.3f%s\n", side, c / NR, l, r / NR, a / NR, b / NR,
             (e > 0 ? "   (" e " not 2xx)" : "")}' "$TMP/$profile-$side.results"
    done
    paste -d' ' "$TMP/$profile-$bl.results" "$TMP/$profile-$pl.results" | awk -v p="$profile" '
      {b += $1; w += $7}
      END {b /= NR; w /= NR
           printf "%s adds %.2f us of CPU per request (%+.1f %%)\n", p, w - b, (w - b) / b * 100
           printf "%s_base_cpu_us=%.2f\n%s_cpu_us=%.2f\n%s_added_cpu_us=%.2f\n%s_added_percent=%.1f\n", p, b, p, w, p, w - b, p, (w - b) / b * 100}'
  } | tee -a "$TMP/report.txt"
}

for profile in $PROFILES; do
  d="$TMP/$profile"
  mkdir -p "$d"
  read -r PORT ADMIN UP <<<"$(free_ports 3)"
  case $profile in
    openapi)
      mkdir -p "$d/upstream"
      render "$BENCH_DIR/upstream.nginx.conf.in" "$d/upstream/nginx.conf" DIR="$d/upstream" UPSTREAM_PORT="$UP" \
        NOFILE=4096 WORKER_CONNECTIONS=2048
      taskset -c "$LOAD_CORE" "$NGINX" -p "$d/upstream/" -c "$d/upstream/nginx.conf" -e "$d/upstream/error.log" \
        >"$d/upstream/stdout" 2>"$d/upstream/stderr" &
      UP_PID=$!; track "$UP_PID"
      wait_port "$UP" "$UP_PID" "upstream nginx" "$d/upstream/stderr"
      cp "$BENCH_DIR/openapi/shop.yaml" "$d/"
      cat >"$d/portcullis.yaml" <<EOF
listeners: [{ name: bench, address: "127.0.0.1:$PORT" }]
admin: { address: "127.0.0.1:$ADMIN" }
upstreams:
  upstream:
    targets: [{ address: "127.0.0.1:$UP" }]
    pool: { max_idle_per_host: 256 }
routes:
  - name: validated
    match: { path_prefix: /v1/ }
    upstream: upstream
    plugins:
      openapi: { spec: shop.yaml, mode: enforce }
  - name: plain
    match: { path_prefix: / }
    upstream: upstream
runtime: { worker_threads: 1 }
EOF
      start_gateway "$d"
      body="$BENCH_DIR/openapi/order.json"
      st=$(curl_status "http://127.0.0.1:$PORT/v1/orders" -H 'content-type: application/json' --data-binary "@$body")
      [ "$st" = 200 ] || die "validated POST answered $st, not 200: $(curl -s "http://127.0.0.1:$PORT/v1/orders" -H 'content-type: application/json' --data-binary "@$body")"
      st=$(curl_status "http://127.0.0.1:$PORT/v1/orders" -H 'content-type: application/json' --data-binary '{"items":[]}')
      [ "$st" = 400 ] || die "an invalid order answered $st, not 400: the plugin does not validate"
      st=$(curl_status "http://127.0.0.1:$PORT/plain/v1/orders" -H 'content-type: application/json' --data-binary "@$body")
      [ "$st" = 200 ] || die "plain POST answered $st"
      log "openapi: the order validates (200), an invalid one is refused (400), the plain route answers 200"
      BASE_ARGS=(--h1 -c "$CONNS" -d "$body" -H 'content-type: application/json')
      PLUGIN_ARGS=("${BASE_ARGS[@]}")
      pair openapi plain "http://127.0.0.1:$PORT/plain/v1/orders" openapi "http://127.0.0.1:$PORT/v1/orders"
      ;;
    transcode)
      taskset -c "$LOAD_CORE" "$GRPC_BIN" serve "127.0.0.1:$UP" >"$d/upstream.log" 2>&1 &
      UP_PID=$!; track "$UP_PID"
      wait_port "$UP" "$UP_PID" "gRPC upstream" "$d/upstream.log"
      "$GRPC_BIN" request "$d/request.bin"
      cp "$BENCH_DIR/transcode/items.proto" "$d/"
      cat >"$d/portcullis.yaml" <<EOF
listeners: [{ name: bench, address: "127.0.0.1:$PORT" }]
admin: { address: "127.0.0.1:$ADMIN" }
upstreams:
  items:
    targets: [{ address: "127.0.0.1:$UP" }]
    protocol: h2c
routes:
  - name: items
    match: { path_prefix: / }
    upstream: items
    plugins:
      grpc_transcode:
        proto: { files: [items.proto] }
        services: [bench.v1.Items]
runtime: { worker_threads: 1 }
EOF
      start_gateway "$d"
      json="$BENCH_DIR/transcode/request.json"
      got=$(curl -s --http2-prior-knowledge -m 5 -H 'content-type: application/json' --data-binary "@$json" \
        "http://127.0.0.1:$PORT/v1/items:get")
      case $got in *'"name":"item 42"'*'"stock":7'*) ;; *) die "the JSON call answered: $got" ;; esac
      trailers=$(curl -s --http2-prior-knowledge -m 5 -D - -o /dev/null -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary "@$d/request.bin" "http://127.0.0.1:$PORT/bench.v1.Items/GetItem")
      grep -qi '^grpc-status: 0' <<<"$trailers" || die "the gRPC call did not end in grpc-status 0: $trailers"
      log "transcode: JSON call answered $got; gRPC call ended with grpc-status 0"
      BASE_ARGS=(-c "$H2_CONNS" -m "$H2_STREAMS" -d "$d/request.bin" -H 'content-type: application/grpc' -H 'te: trailers')
      PLUGIN_ARGS=(-c "$H2_CONNS" -m "$H2_STREAMS" -d "$json" -H 'content-type: application/json')
      pair transcode grpc "http://127.0.0.1:$PORT/bench.v1.Items/GetItem" json "http://127.0.0.1:$PORT/v1/items:get"
      ;;
  esac
  stop_pid "$GW_PID"
  stop_pid "$UP_PID"
done
echo
echo "machine: $(getconf _NPROCESSORS_ONLN) CPUs, loadavg now $(cut -d' ' -f1-3 /proc/loadavg)"
