#!/usr/bin/env bash
# Instructions per proxied request of a Portcullis binary, counted by valgrind's callgrind.
#
# Instruction counts do not depend on what else the machine is doing, so this compares two
# builds on a busy or shared machine where wall-clock benchmarks (bench/run.sh) are noisy. It
# is not a latency figure: cache misses, syscalls' kernel time and lock contention are not in
# it. The gateway runs under callgrind with one worker thread; h2load sends a fixed number of
# requests over keep-alive connections (HTTP/1.1 and h2c) to a route proxied to
# `portcullis echo`; counters are zeroed after a warm-up and read after the measured batch.
#
#   bench/instructions.sh [BIN ...]     # default: target/release/portcullis
#   REQUESTS=4000 CONNS=4 PROFILE=plain bench/instructions.sh old/portcullis new/portcullis
#
# PROFILE: plain (one prefix route), or edge (the same, requests with paths that need
# normalising: `/x/../api/%7Eitems//1`).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
CONNS=${CONNS:-4}
PROFILE=${PROFILE:-plain}
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("${CARGO_TARGET_DIR:-target}/release/portcullis")

for tool in valgrind h2load callgrind_control; do
  command -v "$tool" >/dev/null || {
    echo "installing valgrind and nghttp2-client" >&2
    apt-get install -y -qq valgrind nghttp2-client >/dev/null
  }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

case "$PROFILE" in
  plain) path=/api/items/1 ;;
  edge) path='/x/../api/%7Eitems//1' ;;
  *) echo "unknown PROFILE $PROFILE (plain | edge)" >&2; exit 2 ;;
esac

printf '%-40s %8s %14s %14s\n' binary protocol instructions "per request"
for bin in "${bins[@]}"; do
  up=$(free_port); gw=$(free_port); adm=$(free_port)
  "$bin" echo --listen "127.0.0.1:$up" 2>/dev/null &
  pids+=($!)
  cat >"$tmp/gw.yaml" <<EOF
listeners: [{ name: http, address: "127.0.0.1:$gw" }]
admin: { address: "127.0.0.1:$adm" }
runtime: { worker_threads: 1 }
observability: { access_log: { path: off } }
upstreams:
  echo: { targets: [{ address: "127.0.0.1:$up" }] }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: echo }
EOF
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$bin" run -c "$tmp/gw.yaml" \
    >"$tmp/gw.log" 2>&1 &
  vg=$!
  pids+=($vg)
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$gw/api/warm" 2>/dev/null && break
    sleep 0.2
  done
  for proto in h1 h2c; do
    flag=(); [ "$proto" = h1 ] && flag=(--h1)
    h2load "${flag[@]}" -n 500 -c "$CONNS" "http://127.0.0.1:$gw$path" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    out=$(h2load "${flag[@]}" -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$gw$path")
    grep -q "succeeded, 0 failed, 0 errored" <<<"$out" || { echo "$out" >&2; exit 1; }
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    last=$(ls -t "$tmp"/cg.*.* 2>/dev/null | head -1)
    ir=$(grep -m1 '^summary:' "$last" | awk '{print $2}')
    printf '%-40s %8s %14s %14s\n' "$bin" "$proto" "$ir" "$((ir / REQUESTS))"
    rm -f "$tmp"/cg.*.*
  done
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
done
