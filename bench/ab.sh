#!/usr/bin/env bash
# Two Portcullis builds against each other: the before/after figure of a change to the request
# path. Both run the plain profile (bench/portcullis.yaml.in: one route, one upstream, nothing
# else) on core 0, in turn; the load generator (h2load) and the upstream (nginx, fixed 200) run
# on core 1. Each row is measured alternately, A B A B ..., ROUNDS times per build, so drift on
# the machine hits both builds alike; CPU per request is the process's utime+stime over the
# measured run divided by the requests h2load completed.
#
#   bench/ab.sh BIN_A BIN_B        e.g. a release build of the last landed commit and one of
#                                  the working tree (copy each binary out of the target dir)
#
# Rows (ROWS, space-separated):
#   get    GET / over HTTP/1.1 keep-alive, CONNS connections
#   post   POST of bench/openapi/order.json (1.1 KiB JSON) over HTTP/1.1 keep-alive
#   h2     GET / over h2c, H2_CONNS connections of H2_STREAMS streams each
# Environment (defaults): ROWS="get post" ROUNDS=3 DURATION=8 WARMUP=2 (seconds) CONNS=64
#   H2_CONNS=8 H2_STREAMS=16 KEEP_TMP=1 keeps the temp dir.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BIN_A BIN_B" >&2; exit 2; }
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
ROWS=${ROWS:-get post}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-16}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
for b in "$BIN_A" "$BIN_B"; do [ -x "$b" ] || die "not an executable: $b"; done
for r in $ROWS; do
  case $r in get | post | h2) ;; *) die "unknown row '$r' (known: get post h2)" ;; esac
done
ensure_tools h2load:nghttp2-client nginx:nginx-light curl:curl taskset:util-linux

PROXY_CORE=0
LOAD_CORE=1
[ "$(getconf _NPROCESSORS_ONLN)" -ge 2 ] || { log "warning: one CPU; everything shares core 0"; LOAD_CORE=0; }
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-ab.XXXXXX")
chmod 755 "$TMP"   # nginx workers drop privileges when started as root

read -r UP PORT_A ADMIN_A PORT_B ADMIN_B <<<"$(free_ports 5)"
mkdir -p "$TMP/upstream"
render "$BENCH_DIR/upstream.nginx.conf.in" "$TMP/upstream/nginx.conf" DIR="$TMP/upstream" UPSTREAM_PORT="$UP" \
  NOFILE=4096 WORKER_CONNECTIONS=2048
taskset -c "$LOAD_CORE" "$NGINX" -p "$TMP/upstream/" -c "$TMP/upstream/nginx.conf" -e "$TMP/upstream/error.log" \
  >"$TMP/upstream/stdout" 2>"$TMP/upstream/stderr" &
UP_PID=$!; track "$UP_PID"
wait_port "$UP" "$UP_PID" "upstream nginx" "$TMP/upstream/stderr"

# start side bin port admin -> sets PID_<side>
start() {
  local side=$1 bin=$2 port=$3 admin=$4 d="$TMP/$1"
  mkdir -p "$d"
  render "$BENCH_DIR/portcullis.yaml.in" "$d/portcullis.yaml" PROXY_PORT="$port" ADMIN_PORT="$admin" \
    UPSTREAM_PORT="$UP"
  run_portcullis "$bin" "$d" "$port" "$admin" "portcullis $side"
  [ "$(curl_status "http://127.0.0.1:$port/")" = 200 ] || die "portcullis $side does not answer 200; stderr: $(cat "$d/stderr")"
  printf -v "PID_$side" '%s' "$STARTED_PID"
}
start A "$BIN_A" "$PORT_A" "$ADMIN_A"
start B "$BIN_B" "$PORT_B" "$ADMIN_B"
log "A = $BIN_A (pid $PID_A), B = $BIN_B (pid $PID_B), both on core $PROXY_CORE"

row_args() { # row -> ARGS (h2load arguments) and URL path
  case $1 in
    get) ARGS=(--h1 -c "$CONNS") ;;
    post) ARGS=(--h1 -c "$CONNS" -d "$BENCH_DIR/openapi/order.json" -H 'content-type: application/json') ;;
    h2) ARGS=(-c "$H2_CONNS" -m "$H2_STREAMS") ;;
  esac
}

for row in $ROWS; do
  row_args "$row"
  for r in $(seq "$ROUNDS"); do
    log "$row round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    measure "$row-A" "$PID_A" "http://127.0.0.1:$PORT_A/" "${ARGS[@]}"
    measure "$row-B" "$PID_B" "http://127.0.0.1:$PORT_B/" "${ARGS[@]}"
  done
done

{
  echo
  echo "A = $BIN_A"
  echo "B = $BIN_B"
  echo "$ROUNDS rounds of ${DURATION}s per build and row, alternating; proxy on core $PROXY_CORE"
  printf '%-6s %-4s %12s %24s %10s %10s %10s\n' row side "CPU us/req" rounds "req/s" "p50 ms" "p99 ms"
  for row in $ROWS; do
    for side in A B; do
      awk -v row="$row" -v side="$side" '{c += $1; r += $2; a += $3; b += $4; e += $6; l = l (NR > 1 ? " " : "") $1}
        END {printf "%-6s %-4s %12.2f %24s %10.0f %10.3f %10.3f%s\n", row, side, c / NR, l, r / NR, a / NR, b / NR,
             (e > 0 ? "   (" e " not 2xx)" : "")}' "$TMP/$row-$side.results"
    done
    paste -d' ' "$TMP/$row-A.results" "$TMP/$row-B.results" | awk -v row="$row" '
      {a += $1; b += $7; pa += $4; pb += $10}
      END {a /= NR; b /= NR; pa /= NR; pb /= NR
           printf "%s: B/A CPU per request %.3f (%+.1f %%), p99 %.2f\n", row, b / a, (b - a) / a * 100, pb / pa
           printf "%s_a_cpu_us=%.2f\n%s_b_cpu_us=%.2f\n%s_b_over_a=%.3f\n", row, a, row, b, row, b / a}'
  done
} | tee "$TMP/report.txt"
echo
echo "machine: $(getconf _NPROCESSORS_ONLN) CPUs, loadavg now $(cut -d' ' -f1-3 /proc/loadavg)"
