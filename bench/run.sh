#!/usr/bin/env bash
# Portcullis vs bare hyper vs nginx as HTTP/1.1 reverse proxies, on one core each, in front of
# the same upstream.
#
#   core 0: the proxy under test (Portcullis with worker_threads: 1, the bare hyper example on a
#           current-thread runtime, or nginx with 1 worker)
#   core 1: the load generator (wrk, 1 thread) and the upstream (nginx, 1 worker, fixed 200 body)
#           (and, for some profiles, the /metrics scraper or the OTLP sink)
#
# Every proxy gets the same wrk run (keep-alive on the client and on the upstream side) after a
# warm-up. Reported per proxy: requests/s, p50/p99 latency, the proxy's CPU time per request,
# its peak RSS; for Portcullis also idle RSS and the RSS added by many idle keep-alive clients.
# "bare hyper" (crates/gateway/examples/bare_hyper_proxy.rs) is the floor: hyper's own client
# and server with nothing else, so Portcullis/bare-hyper is what Portcullis adds on top of hyper.
#
# Portcullis profiles (PROFILES, space-separated; `plain` is always measured, first), each a
# separate Portcullis process and measurement against the same upstream:
#   plain          the route and upstream of portcullis.yaml.in, nothing else
#   plugins        plain + global jwt (HS256, claims_to_headers) and local rate_limit (never
#                  reached); wrk sends `Authorization: Bearer <HS256 token made here>`
#   observability  plain + JSON access log to a file; /metrics scraped once per second meanwhile
#   tracing        plain + OTLP/HTTP tracing (sampling 1.0) to a local sink (otlp_sink.py);
#                  skipped with a message when Portcullis refuses the config or exports nothing
#
# TLS handshakes (TLS_HANDSHAKES=1): Portcullis and nginx as TLS servers (ECDSA P-256
# certificate, one core each, a direct 200 answer: no upstream), driven by the tls_handshakes
# example (crates/gateway/examples/tls_handshakes.rs) on the load core: connections made as fast
# as TLS_CONCURRENCY clients can, each one handshake and one small request, with full handshakes
# and with resumed sessions (TLS 1.3 tickets, TLS 1.2 tickets), TLS 1.3 and 1.2. Reported: the
# server's CPU per connection and connections/s, full against resumed.
#
# Environment (defaults): CONNS=64 DURATION=15 (seconds) WARMUP=3 (seconds) IDLE_CONNS=10000
#   PROFILES=plain
#   TLS_HANDSHAKES=1 TLS_DURATION=5 (seconds per run) TLS_CONCURRENCY=8
#   TLS_ONLY=1 runs only the TLS handshake measurement
#   KEEP_TMP=1 keeps the temp dir (configs, logs, raw wrk output). CARGO_TARGET_DIR is honoured.
# Installs nginx-light (or nginx), wrk, curl and openssl with apt-get when missing; builds
# Portcullis and the bare hyper and tls_handshakes examples in release.
set -euo pipefail

CONNS=${CONNS:-64}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
KEEP_TMP=${KEEP_TMP:-0}
PROFILES=${PROFILES:-plain}
TLS_HANDSHAKES=${TLS_HANDSHAKES:-1}
TLS_DURATION=${TLS_DURATION:-5}
TLS_CONCURRENCY=${TLS_CONCURRENCY:-8}
TLS_ONLY=${TLS_ONLY:-0}
[ "$TLS_ONLY" = 1 ] && TLS_HANDSHAKES=1

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# Profiles: known names only, each once, `plain` first (the baseline of the ratios and of the
# backwards-compatible portcullis_* keys).
KNOWN_PROFILES="plain resilience plugins observability tracing"
PROFILE_LIST=(plain)
for p in $PROFILES; do
  case " $KNOWN_PROFILES " in *" $p "*) ;; *) die "unknown profile '$p' in PROFILES (known: $KNOWN_PROFILES)" ;; esac
  case " ${PROFILE_LIST[*]} " in *" $p "*) ;; *) PROFILE_LIST+=("$p") ;; esac
done

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
find_nginx() {
  command -v nginx 2>/dev/null && return 0
  [ -x /usr/sbin/nginx ] && { echo /usr/sbin/nginx; return 0; }
  return 0
}
NGINX=$(find_nginx)
need=()
[ -n "$NGINX" ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt-get)"
  $SUDO apt-get update -qq
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >/dev/null; then
    # Newer Debian releases have no nginx-light; the plain package does as well here.
    need=("${need[@]/nginx-light/nginx}")
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >/dev/null
  fi
  NGINX=$(find_nginx)
fi
[ -n "$NGINX" ] || die "nginx not found after installing it"
command -v wrk >/dev/null 2>&1 || die "wrk not found after installing it"
command -v curl >/dev/null 2>&1 || die "curl not found after installing it"

log "building portcullis (cargo build --release -p portcullis)"
cargo build --release -p portcullis >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/portcullis"
[ -x "$BIN" ] || die "no binary at $BIN"
log "building the bare hyper proxy (cargo build --release -p portcullis --example bare_hyper_proxy)"
cargo build --release -p portcullis --example bare_hyper_proxy >&2
HYPER_BIN="$TARGET_DIR/release/examples/bare_hyper_proxy"
[ -x "$HYPER_BIN" ] || die "no binary at $HYPER_BIN"
if [ "$TLS_HANDSHAKES" = 1 ]; then
  log "building the TLS connection generator (cargo build --release -p portcullis --example tls_handshakes)"
  cargo build --release -p portcullis --example tls_handshakes >&2
  TLS_BIN="$TARGET_DIR/release/examples/tls_handshakes"
  [ -x "$TLS_BIN" ] || die "no binary at $TLS_BIN"
fi

# ---------------------------------------------------------------------------------------------
# Cores, limits, temp dir, cleanup
# ---------------------------------------------------------------------------------------------
NCPU=$(getconf _NPROCESSORS_ONLN)
PROXY_CORE=0
LOAD_CORE=1
if [ "$NCPU" -lt 2 ]; then
  log "warning: only $NCPU CPU online; proxy and load generator share core 0"
  LOAD_CORE=0
fi
CLK_TCK=$(getconf CLK_TCK)

# Portcullis (and the idle-connection helper) need one descriptor per connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE_CONNS + 512)) ]; then
  log "warning: open-files limit is $NOFILE (hard limit), below IDLE_CONNS=$IDLE_CONNS + margin"
fi

# nginx: descriptors per worker as the shell allows (worker_rlimit_nofile above the hard limit fails).
NGX_NOFILE=$([ "$NOFILE" = unlimited ] && echo 65536 || echo "$NOFILE")
NGX_WORKER_CONNECTIONS=$((NGX_NOFILE / 2))   # a proxied request holds a client and an upstream socket

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
chmod 755 "$TMP"   # nginx workers drop privileges when started as root


# Free loopback ports (bound together, so they are distinct, then released): 11 fixed, then a
# proxy and an admin port per Portcullis profile after plain (plain uses PC_PORT/PC_ADMIN).
read -r UP_PORT PC_PORT PC_ADMIN NGX_PORT PC2_PORT PC2_ADMIN HY_PORT OTLP_PORT \
  TLS_PC_PORT TLS_PC_ADMIN TLS_NGX_PORT PROFILE_PORTS < <(
  python3 - $((2 * ${#PROFILE_LIST[@]})) <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(11 + int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
read -r -a PROFILE_PORTS <<<"$PROFILE_PORTS"


# ---------------------------------------------------------------------------------------------
# Helpers: waiting, HTTP, /proc readings, wrk parsing
# ---------------------------------------------------------------------------------------------
sys_busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4}' /proc/stat; } # user+nice+system, all CPUs
children_ticks() { # CPU of reaped children of this shell, in ticks (from the `times` builtin)
  times | awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    printf "%d\n", t * hz + 0.5 }'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
wrk_ms() { # percentile (50%, 99%) -> milliseconds
  awk -v p="$2" '$1 == p && NF == 2 {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
    printf "%.3f\n", v * m; exit }' "$1"
}
wrk_field() { # file what -> number
  case "$2" in
    rps) awk '/^Requests\/sec:/ {print $2}' "$1" ;;
    requests) awk '/ requests in / {print $1}' "$1" ;;
    non2xx) awk '/Non-2xx or 3xx responses:/ {print $NF; f=1} END {if (!f) print 0}' "$1" ;;
    sockerr) awk '/Socket errors:/ {gsub(",", ""); s = $4 + $6 + $8 + $10; print s; f=1}
                  END {if (!f) print 0}' "$1" ;;
  esac
}

# bench NAME PORT PROXY_PID UPSTREAM_WORKER_PID [WRK_ARG...] -> sets R_* variables
# (WRK_ARGs, e.g. -H 'Authorization: Bearer ...', go to both the warm-up and the measured run)
bench() {
  local name=$1 port=$2 pid=$3 upw=$4 out wrk_pid
  shift 4
  out="$TMP/$name.wrk.txt"
  local url="http://127.0.0.1:$port/"
  log "$name: warm-up ${WARMUP}s"
  taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$@" "$url" >"$TMP/$name.warmup.txt" &
  wrk_pid=$!; track "$wrk_pid"; wait "$wrk_pid"; untrack "$wrk_pid"
  R_WARM_REQS=$(wrk_field "$TMP/$name.warmup.txt" requests)
  sleep 1
  alive "$pid" || { log "$name died during warm-up"; return 1; }

  log "$name: wrk -t1 -c$CONNS -d${DURATION}s --latency (load on core $LOAD_CORE, proxy on core $PROXY_CORE)"
  local t0 u0 s0 c0 w0 t1 u1 s1 c1 w1 ns0 ns1
  t0=$(cpu_ticks "$pid"); u0=$(cpu_ticks "$upw"); s0=$(sys_busy_ticks); c0=$(children_ticks)
  ns0=$(date +%s%N)
  taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$out" &
  wrk_pid=$!; track "$wrk_pid"; wait "$wrk_pid"; untrack "$wrk_pid"
  ns1=$(date +%s%N)
  alive "$pid" || { log "$name died under load"; cat "$out" >&2; return 1; }
  t1=$(cpu_ticks "$pid"); u1=$(cpu_ticks "$upw"); s1=$(sys_busy_ticks); c1=$(children_ticks)

  R_REQS=$(wrk_field "$out" requests)
  R_RPS=$(wrk_field "$out" rps)
  R_P50=$(wrk_ms "$out" 50%)
  R_P99=$(wrk_ms "$out" 99%)
  R_NON2XX=$(wrk_field "$out" non2xx)
  R_SOCKERR=$(wrk_field "$out" sockerr)
  [ -n "$R_REQS" ] && [ "$R_REQS" -gt 0 ] || { log "$name: wrk made no requests"; cat "$out" >&2; return 1; }
  R_TICKS=$((t1 - t0))
  R_CPU_US=$(awk -v t="$R_TICKS" -v hz="$CLK_TCK" -v n="$R_REQS" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
  local wall
  wall=$(awk -v a="$ns0" -v b="$ns1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
  R_UTIL=$(awk -v t="$R_TICKS" -v hz="$CLK_TCK" -v w="$wall" 'BEGIN {printf "%.0f", t / hz / w * 100}')
  # CPU used by processes that are not part of the benchmark (e.g. a concurrent cargo build):
  # all user+system time on the machine minus the proxy, the upstream worker and wrk.
  R_OTHER=$(awk -v all=$((s1 - s0)) -v ours=$((t1 - t0 + u1 - u0 + c1 - c0)) -v hz="$CLK_TCK" -v w="$wall" \
    'BEGIN {o = (all - ours) / hz / w * 100; if (o < 0) o = 0; printf "%.0f", o}')
  R_HWM=$(status_kb "$pid" VmHWM)
  R_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  return 0
}

# Results by column (a Portcullis profile name, `hyper` or `nginx`).
declare -A M_REQS M_RPS M_P50 M_P99 M_NON2XX M_SOCKERR M_CPU_US M_UTIL M_OTHER M_HWM M_LOAD
save_result() { # column: copies the R_* variables of the last bench
  M_REQS[$1]=$R_REQS M_RPS[$1]=$R_RPS M_P50[$1]=$R_P50 M_P99[$1]=$R_P99 M_NON2XX[$1]=$R_NON2XX
  M_SOCKERR[$1]=$R_SOCKERR M_CPU_US[$1]=$R_CPU_US M_UTIL[$1]=$R_UTIL M_OTHER[$1]=$R_OTHER
  M_HWM[$1]=$R_HWM M_LOAD[$1]=$R_LOAD
}

# ---------------------------------------------------------------------------------------------
# TLS handshakes: Portcullis and nginx as TLS servers, full against resumed
# ---------------------------------------------------------------------------------------------
declare -A T_CPS T_CPU_US T_RESUMED T_ERRORS T_UTIL
TLS_SERVERS=(portcullis nginx)
TLS_CASES=("1.3 full" "1.3 resumed" "1.2 full" "1.2 resumed")
TLS_PC_METRICS=""

# tls_run server pid port version mode -> T_* under the key "server version mode"
tls_run() {
  local who=$1 pid=$2 port=$3 v=$4 mode=$5 key="$1 $4 $5" out t0 t1 ns0 ns1 cl_pid
  out="$TMP/tls/$who-$v-$mode.txt"
  # Warm-up, not counted: caches, the session cache, the ticket keys.
  taskset -c "$LOAD_CORE" "$TLS_BIN" "127.0.0.1:$port" bench.test "$TMP/tls/ca.pem" "$v" "$mode" 1 \
    "$TLS_CONCURRENCY" >"$out.warmup" 2>&1 &
  cl_pid=$!; track "$cl_pid"
  wait "$cl_pid" || { cat "$out.warmup" >&2; die "tls_handshakes failed ($key)"; }
  untrack "$cl_pid"
  t0=$(cpu_ticks "$pid"); ns0=$(date +%s%N)
  taskset -c "$LOAD_CORE" "$TLS_BIN" "127.0.0.1:$port" bench.test "$TMP/tls/ca.pem" "$v" "$mode" \
    "$TLS_DURATION" "$TLS_CONCURRENCY" >"$out" 2>&1 &
  cl_pid=$!; track "$cl_pid"
  wait "$cl_pid" || { cat "$out" >&2; die "tls_handshakes failed ($key)"; }
  untrack "$cl_pid"
  ns1=$(date +%s%N); t1=$(cpu_ticks "$pid")
  local n r e secs
  tls_field() { tr ' ' '\n' <"$out" | awk -F= -v k="$1" '$1 == k {print $2}'; }
  n=$(tls_field connections); r=$(tls_field resumed); e=$(tls_field errors); secs=$(tls_field seconds)
  [ -n "$n" ] && [ "$n" -gt 0 ] || { cat "$out" >&2; die "tls_handshakes made no connection ($key)"; }
  T_CPS[$key]=$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')
  T_CPU_US[$key]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  T_UTIL[$key]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$ns0" -v b="$ns1" \
    'BEGIN {printf "%.0f", t / hz / ((b - a) / 1e9) * 100}')
  T_RESUMED[$key]=$(awk -v r="$r" -v n="$n" 'BEGIN {printf "%.0f", r / n * 100}')
  T_ERRORS[$key]=$e
  log "TLS $key: ${T_CPS[$key]} connections/s, ${T_CPU_US[$key]} us server CPU each (${T_UTIL[$key]}% of its core), ${T_RESUMED[$key]}% resumed, $e errors"
}

tls_section() {
  local d="$TMP/tls" c
  mkdir -p "$d"
  # A CA and an ECDSA P-256 server certificate for bench.test: what both servers present.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -days 30 -subj "/CN=bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$d/ca.pem" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" 2>/dev/null
  openssl req -new -key "$d/server.key" -subj "/CN=bench.test" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:bench.test\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  [ -s "$d/server.crt" ] || die "could not make the TLS test certificate"

  # Portcullis: a TLS listener answering 200 itself; session resumption on (the default).
  {
    echo "listeners:"
    echo "  - name: tls"
    echo "    address: 127.0.0.1:$TLS_PC_PORT"
    echo "    tls:"
    echo "      certificates: [{ cert: $d/server.crt, key: $d/server.key }]"
    echo "admin:"
    echo "  address: 127.0.0.1:$TLS_PC_ADMIN"
    echo "routes:"
    echo "  - name: all"
    echo "    match: { path_prefix: / }"
    echo '    direct_response: { status: 200, body: "ok\n" }'
    echo "runtime: { worker_threads: 1 }"
  } >"$d/portcullis.yaml"
  PORTCULLIS_LOG=warn taskset -c "$PROXY_CORE" "$BIN" run -c "$d/portcullis.yaml" \
    >"$d/portcullis.stdout" 2>"$d/portcullis.stderr" &
  local pc=$!
  track "$pc"
  wait_port "$TLS_PC_PORT" "$pc" "portcullis (TLS)" "$d/portcullis.stderr"
  log "TLS: portcullis on 127.0.0.1:$TLS_PC_PORT (pid $pc)"
  for c in "${TLS_CASES[@]}"; do
    # shellcheck disable=SC2086
    tls_run portcullis "$pc" "$TLS_PC_PORT" $c
  done
  TLS_PC_METRICS=$(curl -s -m 5 "http://127.0.0.1:$TLS_PC_ADMIN/metrics" | grep '^portcullis_tls_handshakes_total' || true)
  stop_pid "$pc"

  # nginx: one worker, session tickets (its default) and a shared cache for TLS 1.2 session IDs.
  mkdir -p "$d/nginx"
  {
    echo "worker_processes 1;"
    echo "worker_rlimit_nofile $NGX_NOFILE;"
    echo "daemon off;"
    echo "pid $d/nginx/nginx.pid;"
    echo "error_log $d/nginx/error.log warn;"
    echo "events { worker_connections $NGX_WORKER_CONNECTIONS; }"
    echo "http {"
    echo "    access_log off;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $d/nginx/$t;"; done
    echo "    server {"
    echo "        listen 127.0.0.1:$TLS_NGX_PORT ssl backlog=4096;"
    echo "        ssl_certificate $d/server.crt;"
    echo "        ssl_certificate_key $d/server.key;"
    echo "        ssl_protocols TLSv1.2 TLSv1.3;"
    echo "        ssl_session_cache shared:SSL:10m;"
    echo "        ssl_session_tickets on;"
    echo '        location / { return 200 "ok\n"; }'
    echo "    }"
    echo "}"
  } >"$d/nginx/nginx.conf"
  taskset -c "$PROXY_CORE" "$NGINX" -p "$d/nginx/" -c "$d/nginx/nginx.conf" -e "$d/nginx/error.log" \
    >"$d/nginx/stdout" 2>"$d/nginx/stderr" &
  local master=$! worker
  track "$master"
  wait_port "$TLS_NGX_PORT" "$master" "nginx (TLS)" "$d/nginx/stderr"
  worker=$(nginx_worker "$master"); WORKERS+=("$worker:$(start_time "$worker")")
  log "TLS: nginx on 127.0.0.1:$TLS_NGX_PORT (master $master, worker $worker)"
  for c in "${TLS_CASES[@]}"; do
    # shellcheck disable=SC2086
    tls_run nginx "$worker" "$TLS_NGX_PORT" $c
  done
  stop_pid "$master"
}

tls_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

tls_report() {
  local v who c
  echo "TLS handshakes: one connection = TCP + TLS handshake + one small HTTP/1.1 request answered"
  echo "by the server itself; ECDSA P-256; server on core $PROXY_CORE, $TLS_CONCURRENCY clients (tls_handshakes)"
  echo "on core $LOAD_CORE; ${TLS_DURATION}s per run after a 1s warm-up. Resumed: TLS 1.3 tickets, TLS 1.2 tickets."
  printf '%-44s %14s %14s\n' "" Portcullis nginx
  for c in "${TLS_CASES[@]}"; do
    printf '%-44s' "TLS $c: connections/s"
    for who in "${TLS_SERVERS[@]}"; do printf ' %14s' "${T_CPS[$who $c]}"; done
    printf '\n%-44s' "TLS $c: server CPU per connection (us)"
    for who in "${TLS_SERVERS[@]}"; do printf ' %14s' "${T_CPU_US[$who $c]}"; done
    printf '\n%-44s' "TLS $c: server CPU use (% of its core)"
    for who in "${TLS_SERVERS[@]}"; do printf ' %14s' "${T_UTIL[$who $c]}"; done
    printf '\n'
    if [ "${c#* }" = resumed ]; then
      printf '%-44s' "TLS $c: connections resumed (%)"
      for who in "${TLS_SERVERS[@]}"; do printf ' %14s' "${T_RESUMED[$who $c]}"; done
      printf '\n'
    fi
  done
  for v in 1.3 1.2; do
    printf '%-44s' "TLS $v: resumed/full server CPU"
    for who in "${TLS_SERVERS[@]}"; do
      printf ' %14s' "$(tls_ratio "${T_CPU_US[$who $v resumed]}" "${T_CPU_US[$who $v full]}")x"
    done
    printf '\n'
  done
  for c in "${TLS_CASES[@]}"; do
    echo "Portcullis/nginx TLS $c: CPU per connection $(tls_ratio "${T_CPU_US[portcullis $c]}" "${T_CPU_US[nginx $c]}")x"
  done
  echo "Portcullis counted (portcullis_tls_handshakes_total): $(echo "$TLS_PC_METRICS" |
    sed 's/.*result="\([a-z]*\)"} /\1=/' | tr '\n' ' ')"
  for c in "${TLS_CASES[@]}"; do
    for who in "${TLS_SERVERS[@]}"; do
      [ "${T_ERRORS[$who $c]}" = 0 ] || echo "note: $who TLS $c: ${T_ERRORS[$who $c]} connections failed at the client"
    done
  done
}

tls_keys() {
  local c who k v
  for who in "${TLS_SERVERS[@]}"; do
    for c in "${TLS_CASES[@]}"; do
      k="tls_${who}_$(echo "$c" | tr -d '.' | tr ' ' '_')"
      echo "${k}_cps=${T_CPS[$who $c]}"
      echo "${k}_cpu_us=${T_CPU_US[$who $c]}"
      echo "${k}_resumed_pct=${T_RESUMED[$who $c]}"
    done
    for v in 13 12; do
      echo "tls_${who}_${v}_resumed_vs_full_cpu=$(tls_ratio "${T_CPU_US[$who ${v:0:1}.${v:1} resumed]}" "${T_CPU_US[$who ${v:0:1}.${v:1} full]}")"
    done
  done
}

if [ "$TLS_ONLY" = 1 ]; then
  tls_section
  echo
  tls_report
  echo
  tls_keys
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Upstream (core LOAD_CORE)
# ---------------------------------------------------------------------------------------------
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
RUSTC_START=$(pgrep -c -x rustc 2>/dev/null || true)
log "machine: $NCPU CPUs, loadavg $LOADAVG_START, rustc processes running: ${RUSTC_START:-0}"

mkdir -p "$TMP/upstream"
render "$BENCH_DIR/upstream.nginx.conf.in" "$TMP/upstream/nginx.conf" DIR="$TMP/upstream" UPSTREAM_PORT="$UP_PORT" \
  NOFILE="$NGX_NOFILE" WORKER_CONNECTIONS="$NGX_WORKER_CONNECTIONS"
taskset -c "$LOAD_CORE" "$NGINX" -p "$TMP/upstream/" -c "$TMP/upstream/nginx.conf" -e "$TMP/upstream/error.log" \
  >"$TMP/upstream/stdout" 2>"$TMP/upstream/stderr" &
UP_MASTER=$!; track "$UP_MASTER"
wait_port "$UP_PORT" "$UP_MASTER" "upstream nginx" "$TMP/upstream/stderr"
UP_WORKER=$(nginx_worker "$UP_MASTER"); WORKERS+=("$UP_WORKER:$(start_time "$UP_WORKER")")
read -r st body < <(http_get "http://127.0.0.1:$UP_PORT/")
[ "$st" = 200 ] || die "upstream answered $st $body"
log "upstream nginx on 127.0.0.1:$UP_PORT (master $UP_MASTER, worker $UP_WORKER): $st $body"

# ---------------------------------------------------------------------------------------------
# Proxy A: Portcullis (core PROXY_CORE), once per profile
# ---------------------------------------------------------------------------------------------
# plugins: an HS256 key (40 characters) and a token for it, made with the standard library.
JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
JWT_TOKEN=$(python3 - "$JWT_SECRET" <<'EOF'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
enc = lambda o: b64(json.dumps(o, separators=(",", ":")).encode())
signing_input = enc({"alg": "HS256", "typ": "JWT", "kid": "k1"}) + "." + \
    enc({"sub": "bench-user", "exp": int(time.time()) + 3600})
sig = hmac.new(sys.argv[1].encode(), signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + b64(sig))
EOF
)

profile_yaml() { # profile dir -> what the profile adds to portcullis.yaml.in (top-level keys it lacks)
  case $1 in
    plain) ;;
    resilience) ;; # edits the upstream block instead: see start_portcullis
    plugins) cat <<EOF

# profile plugins
plugins:
  jwt:
    keys:
      - { kid: k1, algorithm: HS256, secret: "$JWT_SECRET" }
    claims_to_headers: { sub: X-User-ID }
  rate_limit: { limit: 100000000, per: 1s, burst: 0, key: ip, policy: local }
EOF
      ;;
    observability) cat <<EOF

# profile observability
observability:
  access_log: { path: "$2/access.log" }
EOF
      ;;
    tracing) cat <<EOF

# profile tracing
observability:
  tracing: { otlp_endpoint: "http://127.0.0.1:$OTLP_PORT", protocol: http, sampling: 1.0 }
EOF
      ;;
    *) die "no config for profile $1" ;;
  esac
}
profile_client_args() { # profile -> CLIENT_ARGS (extra curl/wrk arguments of every request)
  CLIENT_ARGS=()
  if [ "$1" = plugins ]; then CLIENT_ARGS=(-H "Authorization: Bearer $JWT_TOKEN"); fi
  return 0
}

# start_portcullis dir port admin [profile [soft]] -> PC_PID, PC_IDLE_RSS
# Without `soft` any failure exits the script; with it, the process is stopped and 1 returned.
start_portcullis() {
  local dir=$1 port=$2 admin=$3 profile=${4:-plain} soft=${5:-} i st body
  fail() { [ "$soft" = soft ] || exit 1; stop_pid "$PC_PID"; return 0; }
  mkdir -p "$dir"
  render "$BENCH_DIR/portcullis.yaml.in" "$dir/portcullis.yaml" \
    PROXY_PORT="$port" ADMIN_PORT="$admin" UPSTREAM_PORT="$UP_PORT"
  profile_yaml "$profile" "$dir" >>"$dir/portcullis.yaml"
  if [ "$profile" = resilience ]; then
    # Every resilience layer of the client on: retries with a budget, a breaker per target,
    # passive ejection. Nothing fails in the run, so this measures what they cost.
    sed -i 's/^    pool: { max_idle_per_host: 256 }$/    pool: { max_idle_per_host: 256 }\n    retry: { attempts: 2, on: [connect_failure, reset, refused_stream, 503], budget_percent: 20 }\n    circuit_breaker: { failure_rate: 0.5, window: 10s, min_requests: 20, open_for: 5s }\n    health_check: { passive: { consecutive_failures: 5, eject_for: 10s } }/' "$dir/portcullis.yaml"
    grep -q '^    circuit_breaker:' "$dir/portcullis.yaml" || die "resilience profile: could not edit the upstream block"
  fi
  PORTCULLIS_LOG=warn taskset -c "$PROXY_CORE" "$BIN" run -c "$dir/portcullis.yaml" \
    >"$dir/stdout" 2>"$dir/stderr" &
  PC_PID=$!; track "$PC_PID"
  wait_port "$port" "$PC_PID" "portcullis ($profile)" "$dir/stderr" "$soft" || { fail; return 1; }
  for i in $(seq 100); do
    read -r st body < <(http_get "http://127.0.0.1:$admin/readyz")
    [ "$st" = 200 ] && break
    sleep 0.05
  done
  [ "$st" = 200 ] || { log "portcullis /readyz: $st $body; stderr:"; cat "$dir/stderr" >&2; fail; return 1; }
  PC_IDLE_RSS=$(status_kb "$PC_PID" VmRSS)   # right after start, before any proxied request
  profile_client_args "$profile"
  st=$(curl_status "http://127.0.0.1:$port/" "${CLIENT_ARGS[@]}")
  if [ "$st" != 200 ]; then
    log "portcullis ($profile) answered $st to GET /; stderr:"; cat "$dir/stderr" >&2; fail; return 1
  fi
}

# The tracing profile's OTLP/HTTP sink (core LOAD_CORE), started only when that profile runs.
otlp_stat() { # field -> its count at the sink
  curl -s -m 5 "http://127.0.0.1:$OTLP_PORT/stats" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}
declare -A SKIPPED      # profile -> why it was not measured
declare -A PC_DIR       # profile -> its temp dir
ACCESS_LOG_LINES="" ACCESS_LOG_EXPECTED="" ACCESS_LOG_DROPPED="" ACCESS_LOG_JSON=""
SCRAPES=0 SCRAPES_OK=0
OTLP_POSTS="" OTLP_SPANS="" OTLP_BAD="" OTLP_SPANS_PER_REQ=""

pi=0
for profile in "${PROFILE_LIST[@]}"; do
  if [ "$profile" = plain ]; then
    dir="$TMP/portcullis" port=$PC_PORT admin=$PC_ADMIN name=portcullis soft=""
  else
    dir="$TMP/portcullis-$profile" port=${PROFILE_PORTS[pi]} admin=${PROFILE_PORTS[pi + 1]}
    name="portcullis-$profile" soft=""
    pi=$((pi + 2))
  fi
  PC_DIR[$profile]=$dir
  if [ "$profile" = tracing ]; then
    soft=soft
    mkdir -p "$TMP/otlp-sink"
    taskset -c "$LOAD_CORE" python3 "$BENCH_DIR/otlp_sink.py" "$OTLP_PORT" \
      >"$TMP/otlp-sink/stdout" 2>"$TMP/otlp-sink/stderr" &
    SINK_PID=$!; track "$SINK_PID"
    wait_port "$OTLP_PORT" "$SINK_PID" "OTLP sink" "$TMP/otlp-sink/stderr"
    log "OTLP/HTTP sink on 127.0.0.1:$OTLP_PORT (pid $SINK_PID)"
  fi
  if ! start_portcullis "$dir" "$port" "$admin" "$profile" "$soft"; then
    SKIPPED[$profile]="Portcullis refused or could not serve the $profile config (stderr above)"
    log "skipping profile $profile: ${SKIPPED[$profile]}"
    continue
  fi
  log "portcullis ($profile) on 127.0.0.1:$port (pid $PC_PID, $(taskset -p "$PC_PID" | awk '{print "affinity mask " $NF}'))"
  [ "$profile" = plain ] && PC_IDLE_RSS_A=$PC_IDLE_RSS
  profile_client_args "$profile"

  case $profile in
    plugins)
      st=$(curl_status "http://127.0.0.1:$port/")
      [ "$st" = 401 ] || die "portcullis (plugins) answered $st, not 401, to a request without the token"
      log "portcullis (plugins): 200 with the bearer token, 401 without"
      ;;
    tracing)
      for i in 1 2 3 4 5; do curl_status "http://127.0.0.1:$port/" >/dev/null; done
      posts=0
      for i in $(seq 20); do   # the exporter sends a batch at least once a second
        posts=$(otlp_stat posts); [ "${posts:-0}" -gt 0 ] && break
        sleep 0.25
      done
      if [ "${posts:-0}" -eq 0 ]; then
        SKIPPED[$profile]="Portcullis accepted the tracing config but exported nothing to the OTLP sink within 5 s"
        log "skipping profile $profile: ${SKIPPED[$profile]}; stderr:"; cat "$dir/stderr" >&2
        stop_pid "$PC_PID"
        continue
      fi
      log "portcullis (tracing): the sink received $posts export request(s), $(otlp_stat spans) span(s) before the run"
      ;;
    observability)
      # /metrics scraped once per second from the load core while the profile runs.
      taskset -c "$LOAD_CORE" bash -c 'while :; do
          curl -s -o /dev/null -m 2 -w "%{http_code}\n" "http://127.0.0.1:$1/metrics" >>"$2" || echo 000 >>"$2"
          sleep 1
        done' scrape "$admin" "$dir/scrapes.txt" &
      SCRAPER_PID=$!; track "$SCRAPER_PID"
      ;;
  esac

  if ! bench "$name" "$port" "$PC_PID" "$UP_WORKER" "${CLIENT_ARGS[@]}"; then
    log "portcullis ($profile) stderr:"; cat "$dir/stderr" >&2; exit 1
  fi
  save_result "$profile"

  case $profile in
    observability)
      stop_pid "$SCRAPER_PID"
      SCRAPES=$(wc -l <"$dir/scrapes.txt" 2>/dev/null || echo 0)
      SCRAPES_OK=$(grep -c '^200$' "$dir/scrapes.txt" 2>/dev/null || true)
      sleep 0.5   # the writer thread flushes at least every 200 ms
      metrics=$(curl -s -m 5 "http://127.0.0.1:$admin/metrics" || true)
      ACCESS_LOG_DROPPED=$(awk '$1 == "portcullis_access_log_dropped_total" {print $2}' <<<"$metrics")
      ACCESS_LOG_LINES=$(wc -l <"$dir/access.log" 2>/dev/null || echo 0)
      # every request it served: the startup check, the warm-up and the measured run
      ACCESS_LOG_EXPECTED=$((1 + ${R_WARM_REQS:-0} + R_REQS))
      if head -n 1 "$dir/access.log" 2>/dev/null | python3 -c 'import json, sys; json.loads(sys.stdin.read())' 2>/dev/null; then
        ACCESS_LOG_JSON=yes
      else
        ACCESS_LOG_JSON=no
      fi
      log "access log: $ACCESS_LOG_LINES lines for ~$ACCESS_LOG_EXPECTED requests (JSON: $ACCESS_LOG_JSON, dropped: ${ACCESS_LOG_DROPPED:-?}); /metrics scraped $SCRAPES times ($SCRAPES_OK answered 200)"
      ;;
    tracing)
      sleep 1.5  # let the exporter send its last batch
      OTLP_POSTS=$(otlp_stat posts) OTLP_SPANS=$(otlp_stat spans) OTLP_BAD=$(otlp_stat bad)
      OTLP_SPANS_PER_REQ=$(awk -v s="$OTLP_SPANS" -v n=$((6 + ${R_WARM_REQS:-0} + R_REQS)) \
        'BEGIN {if (n > 0) printf "%.2f", s / n; else print "n/a"}')
      log "OTLP sink: $OTLP_POSTS export requests, $OTLP_SPANS spans ($OTLP_SPANS_PER_REQ per request), $OTLP_BAD unreadable"
      ;;
  esac
  stop_pid "$PC_PID"
done
if [ -n "${SINK_PID:-}" ]; then stop_pid "$SINK_PID"; fi
PC_REQS=${M_REQS[plain]} PC_RPS=${M_RPS[plain]} PC_P50=${M_P50[plain]} PC_P99=${M_P99[plain]}
PC_NON2XX=${M_NON2XX[plain]} PC_SOCKERR=${M_SOCKERR[plain]} PC_CPU_US=${M_CPU_US[plain]}
PC_UTIL=${M_UTIL[plain]} PC_OTHER=${M_OTHER[plain]} PC_HWM=${M_HWM[plain]} PC_LOAD=${M_LOAD[plain]}
PC_STDERR_A="$TMP/portcullis/stderr"

# ---------------------------------------------------------------------------------------------
# Proxy C: bare hyper, the floor (core PROXY_CORE)
# ---------------------------------------------------------------------------------------------
mkdir -p "$TMP/bare-hyper"
taskset -c "$PROXY_CORE" "$HYPER_BIN" "127.0.0.1:$HY_PORT" "127.0.0.1:$UP_PORT" \
  >"$TMP/bare-hyper/stdout" 2>"$TMP/bare-hyper/stderr" &
HY_PID=$!; track "$HY_PID"
wait_port "$HY_PORT" "$HY_PID" "bare hyper proxy" "$TMP/bare-hyper/stderr"
read -r st body < <(http_get "http://127.0.0.1:$HY_PORT/")
[ "$st" = 200 ] || die "bare hyper proxy answered $st $body"
log "bare hyper proxy on 127.0.0.1:$HY_PORT (pid $HY_PID, $(taskset -p "$HY_PID" | awk '{print "affinity mask " $NF}'))"
if ! bench bare-hyper "$HY_PORT" "$HY_PID" "$UP_WORKER"; then
  log "bare hyper stderr:"; cat "$TMP/bare-hyper/stderr" >&2; exit 1
fi
save_result hyper
stop_pid "$HY_PID"

# ---------------------------------------------------------------------------------------------
# Proxy B: nginx (core PROXY_CORE)
# ---------------------------------------------------------------------------------------------
mkdir -p "$TMP/proxy-nginx"
render "$BENCH_DIR/proxy.nginx.conf.in" "$TMP/proxy-nginx/nginx.conf" \
  DIR="$TMP/proxy-nginx" UPSTREAM_PORT="$UP_PORT" PROXY_PORT="$NGX_PORT" \
  NOFILE="$NGX_NOFILE" WORKER_CONNECTIONS="$NGX_WORKER_CONNECTIONS"
taskset -c "$PROXY_CORE" "$NGINX" -p "$TMP/proxy-nginx/" -c "$TMP/proxy-nginx/nginx.conf" \
  -e "$TMP/proxy-nginx/error.log" >"$TMP/proxy-nginx/stdout" 2>"$TMP/proxy-nginx/stderr" &
NGX_MASTER=$!; track "$NGX_MASTER"
wait_port "$NGX_PORT" "$NGX_MASTER" "proxy nginx" "$TMP/proxy-nginx/stderr"
NGX_WORKER=$(nginx_worker "$NGX_MASTER"); WORKERS+=("$NGX_WORKER:$(start_time "$NGX_WORKER")")
read -r st body < <(http_get "http://127.0.0.1:$NGX_PORT/")
[ "$st" = 200 ] || die "proxy nginx answered $st $body"
log "proxy nginx on 127.0.0.1:$NGX_PORT (master $NGX_MASTER, worker $NGX_WORKER)"
bench nginx "$NGX_PORT" "$NGX_WORKER" "$UP_WORKER" || { cat "$TMP/proxy-nginx/error.log" >&2; exit 1; }
NG_REQS=$R_REQS NG_RPS=$R_RPS NG_P50=$R_P50 NG_P99=$R_P99 NG_NON2XX=$R_NON2XX NG_SOCKERR=$R_SOCKERR
NG_CPU_US=$R_CPU_US NG_UTIL=$R_UTIL NG_OTHER=$R_OTHER NG_HWM=$R_HWM NG_LOAD=$R_LOAD
save_result nginx
stop_pid "$NGX_MASTER"

if [ "$TLS_HANDSHAKES" = 1 ]; then tls_section; fi

# ---------------------------------------------------------------------------------------------
# Portcullis with many idle keep-alive clients (a fresh process, so the load run does not mix in)
# ---------------------------------------------------------------------------------------------
start_portcullis "$TMP/portcullis-idle" "$PC2_PORT" "$PC2_ADMIN"
log "idle connections: $IDLE_CONNS keep-alive clients to a fresh portcullis (pid $PC_PID)"
taskset -c "$LOAD_CORE" python3 "$BENCH_DIR/idle_conns.py" 127.0.0.1 "$PC2_PORT" "$PC_PID" "$IDLE_CONNS" \
  >"$TMP/idle.txt" 2>"$TMP/idle.err" &
IDLE_PID=$!; track "$IDLE_PID"
IDLE_RC=0; wait "$IDLE_PID" || IDLE_RC=$?; untrack "$IDLE_PID"
cat "$TMP/idle.err" >&2
[ "$IDLE_RC" = 0 ] || { log "idle_conns.py failed ($IDLE_RC); portcullis stderr:"; cat "$TMP/portcullis-idle/stderr" >&2; exit 1; }
kv() { awk -F= -v k="$1" '$1 == k {print $2}' "$TMP/idle.txt"; }
IC_OPENED=$(kv conns_opened); IC_FAILED=$(kv conns_failed); IC_STILL=$(kv conns_still_open)
IC_SECS=$(kv open_seconds); IC_BEFORE=$(kv rss_before_kb); IC_WITH=$(kv rss_with_conns_kb)
IC_AFTER=$(kv rss_after_close_kb)
IC_ADDED=$((IC_WITH - IC_BEFORE))
IC_PER_CONN=$(awk -v a="$IC_ADDED" -v n="$IC_OPENED" 'BEGIN {if (n > 0) printf "%.0f", a * 1024 / n; else print "n/a"}')
alive "$PC_PID" || { log "portcullis died in the idle-connection test; stderr:"; cat "$TMP/portcullis-idle/stderr" >&2; exit 1; }
IC_HWM=$(status_kb "$PC_PID" VmHWM)
stop_pid "$PC_PID"

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
R_CPU=$(ratio "$PC_CPU_US" "$NG_CPU_US")
R_P99=$(ratio "$PC_P99" "$NG_P99")
R_RPS=$(ratio "$PC_RPS" "$NG_RPS")
HY_CPU=$(ratio "$PC_CPU_US" "${M_CPU_US[hyper]}")
HY_P99=$(ratio "$PC_P99" "${M_P99[hyper]}")
HY_RPS=$(ratio "$PC_RPS" "${M_RPS[hyper]}")
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT+dirty"
NGINX_VER=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Columns: the Portcullis profiles (plain first), bare hyper, nginx.
COLS=("${PROFILE_LIST[@]}" hyper nginx)
col_label() { case $1 in plain) echo Portcullis ;; hyper) echo "bare hyper" ;; nginx) echo nginx ;; *) echo "+$1" ;; esac; }
measured() { [ -z "${SKIPPED[$1]:-}" ] && [ -n "${M_REQS[$1]:-}" ]; }
cell() { # column field
  local c=$1 l
  measured "$c" || { echo skipped; return 0; }
  case $2 in
    rps) echo "${M_RPS[$c]}" ;;
    reqs) echo "${M_REQS[$c]}" ;;
    p50) echo "${M_P50[$c]}" ;;
    p99) echo "${M_P99[$c]}" ;;
    cpu) echo "${M_CPU_US[$c]}" ;;
    cpu_vs_plain) echo "$(ratio "${M_CPU_US[$c]}" "$PC_CPU_US")x" ;;
    util) echo "${M_UTIL[$c]}" ;;
    hwm) mib "${M_HWM[$c]}" ;;
    non2xx) echo "${M_NON2XX[$c]}" ;;
    sockerr) echo "${M_SOCKERR[$c]}" ;;
    other) echo "${M_OTHER[$c]}" ;;
    load) l=${M_LOAD[$c]}; echo "${l// //}" ;;
  esac
}
row() { # label field
  local c
  printf '%-34s' "$1"
  for c in "${COLS[@]}"; do printf ' %14s' "$(cell "$c" "$2")"; done
  printf '\n'
}

echo
echo "Portcullis vs bare hyper vs nginx reverse proxy — $(date -u +%Y-%m-%dT%H:%MZ)"
echo "portcullis $COMMIT (release), nginx $NGINX_VER, $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')"
echo "wrk -t1 -c$CONNS -d${DURATION}s --latency after a ${WARMUP}s warm-up; proxy on core $PROXY_CORE;" \
     "wrk + upstream nginx on core $LOAD_CORE; keep-alive both sides; open-files limit $NOFILE"
echo "Portcullis profiles: ${PROFILE_LIST[*]}; bare hyper = crates/gateway/examples/bare_hyper_proxy.rs"
echo
printf '%-34s' ""
for c in "${COLS[@]}"; do printf ' %14s' "$(col_label "$c")"; done
printf '\n'
row "requests/s" rps
row "requests (total)" reqs
row "p50 latency (ms)" p50
row "p99 latency (ms)" p99
row "proxy CPU per request (us)" cpu
row "  vs Portcullis plain" cpu_vs_plain
row "proxy CPU use (% of its core)" util
row "peak RSS, VmHWM (MiB)" hwm
row "non-2xx responses" non2xx
row "socket errors" sockerr
row "other processes' CPU (% of a core)" other
row "loadavg after the run" load
echo
echo "Portcullis/nginx: CPU per request ${R_CPU}x, p99 ${R_P99}x, requests/s ${R_RPS}x"
echo "Portcullis/bare hyper: CPU per request ${HY_CPU}x, p99 ${HY_P99}x, requests/s ${HY_RPS}x"
for p in "${PROFILE_LIST[@]}"; do
  [ "$p" = plain ] && continue
  if measured "$p"; then
    echo "Portcullis $p/plain: CPU per request $(ratio "${M_CPU_US[$p]}" "$PC_CPU_US")x," \
         "p99 $(ratio "${M_P99[$p]}" "$PC_P99")x, requests/s $(ratio "${M_RPS[$p]}" "$PC_RPS")x"
  else
    echo "Portcullis $p: skipped — ${SKIPPED[$p]}"
  fi
done
echo
for p in "${PROFILE_LIST[@]}"; do
  case $p in
    plugins)
      measured plugins && echo "plugins: jwt (HS256, claims_to_headers sub -> X-User-ID) + rate_limit (local, by ip, 1e8/s);" \
        "200 with the bearer token, 401 without, checked before the run" ;;
    observability)
      measured observability && {
        echo "observability: JSON access log to a file: $ACCESS_LOG_LINES lines for ~$ACCESS_LOG_EXPECTED requests" \
             "(warm-up + run + check; $(ratio "$ACCESS_LOG_LINES" "$ACCESS_LOG_EXPECTED")x), first line JSON: $ACCESS_LOG_JSON," \
             "dropped: ${ACCESS_LOG_DROPPED:-?}"
        echo "  /metrics scraped $SCRAPES times during warm-up + run ($SCRAPES_OK answered 200)"
      } ;;
    tracing)
      if measured tracing; then
        echo "tracing: OTLP/HTTP sink received $OTLP_POSTS export requests, $OTLP_SPANS spans" \
             "($OTLP_SPANS_PER_REQ per request served), $OTLP_BAD unreadable"
      else
        echo "tracing: skipped — ${SKIPPED[tracing]}"
      fi ;;
  esac
done
[ "${#PROFILE_LIST[@]}" -gt 1 ] && echo
echo "Portcullis memory"
printf '  %-44s %10s MiB\n' "idle RSS right after start" "$(mib "$PC_IDLE_RSS_A")"
printf '  %-44s %10s MiB\n' "RSS before the idle clients (fresh process)" "$(mib "$IC_BEFORE")"
printf '  %-44s %10s MiB\n' "RSS with $IC_OPENED idle keep-alive clients" "$(mib "$IC_WITH")"
printf '  %-44s %10s MiB  (%s bytes per connection)\n' "added by the idle clients" "$(mib "$IC_ADDED")" "$IC_PER_CONN"
printf '  %-44s %10s MiB\n' "RSS after closing them" "$(mib "$IC_AFTER")"
printf '  %-44s %10s MiB\n' "VmHWM of that process" "$(mib "$IC_HWM")"
printf '  %s\n' "connections: $IC_OPENED opened in ${IC_SECS}s, $IC_FAILED failed, $IC_STILL still open when RSS was read"
echo
if [ "$TLS_HANDSHAKES" = 1 ]; then tls_report; echo; fi
NOTES=()
if [ "${PC_OTHER%.*}" -gt 10 ] || [ "${NG_OTHER%.*}" -gt 10 ]; then
  NOTES+=("other processes used CPU during the runs (${PC_OTHER}% / ${NG_OTHER}% of a core): figures are noisy")
fi
for c in "${COLS[@]}"; do
  { [ "$c" = plain ] || [ "$c" = nginx ]; } && continue
  measured "$c" || continue
  if [ "${M_OTHER[$c]}" -gt 10 ]; then
    NOTES+=("other processes used ${M_OTHER[$c]}% of a core during the $(col_label "$c") run: figures are noisy")
  fi
done
if measured observability || measured tracing; then
  NOTES+=("the /metrics scraper and the OTLP sink run on the load core and count as other processes' CPU")
fi
if [ "${RUSTC_START:-0}" -gt 0 ]; then
  NOTES+=("$RUSTC_START rustc processes were running when the benchmark started (loadavg $LOADAVG_START)")
fi
for who in PC NG; do
  util_var="${who}_UTIL"
  name=$([ "$who" = PC ] && echo Portcullis || echo nginx)
  if [ "${!util_var}" -lt 90 ]; then
    NOTES+=("$name used ${!util_var}% of its core: the load core (wrk + upstream) or other processes limited its requests/s; compare CPU per request")
  fi
done
if [ "$PC_NON2XX" != 0 ] || [ "$PC_SOCKERR" != 0 ]; then
  NOTES+=("Portcullis had errors under load (non-2xx $PC_NON2XX, socket $PC_SOCKERR)")
fi
for c in "${COLS[@]}"; do
  { [ "$c" = plain ] || [ "$c" = nginx ]; } && continue
  measured "$c" || continue
  if [ "${M_UTIL[$c]}" -lt 90 ]; then
    NOTES+=("$(col_label "$c") used ${M_UTIL[$c]}% of its core: the load core (wrk + upstream) or other processes limited its requests/s; compare CPU per request")
  fi
  if [ "${M_NON2XX[$c]}" != 0 ] || [ "${M_SOCKERR[$c]}" != 0 ]; then
    NOTES+=("$(col_label "$c") had errors under load (non-2xx ${M_NON2XX[$c]}, socket ${M_SOCKERR[$c]})")
  fi
done
for p in "${PROFILE_LIST[@]}"; do
  if [ -n "${SKIPPED[$p]:-}" ]; then NOTES+=("profile $p skipped: ${SKIPPED[$p]}"); fi
done
if [ ${#NOTES[@]} -gt 0 ]; then
  echo "Notes"
  printf '  - %s\n' "${NOTES[@]}"
  echo
fi
STDERRS=("$PC_STDERR_A")
for p in "${PROFILE_LIST[@]}"; do [ "$p" = plain ] || STDERRS+=("${PC_DIR[$p]}/stderr"); done
STDERRS+=("$TMP/portcullis-idle/stderr" "$TMP/bare-hyper/stderr")
for f in "${STDERRS[@]}"; do
  if [ -s "$f" ]; then
    echo "$([ "$f" = "$TMP/bare-hyper/stderr" ] && echo "bare hyper" || echo Portcullis) stderr ($(basename "$(dirname "$f")"), last 40 lines):"
    tail -n 40 "$f" | sed 's/^/  | /'
    echo
  fi
done

cat <<EOF
bench_commit=$COMMIT
bench_conns=$CONNS
bench_duration_s=$DURATION
bench_loadavg_start=${LOADAVG_START// //}
bench_loadavg_end=${LOADAVG_END// //}
portcullis_rps=$PC_RPS
portcullis_p50_ms=$PC_P50
portcullis_p99_ms=$PC_P99
portcullis_cpu_us_per_req=$PC_CPU_US
portcullis_cpu_util_pct=$PC_UTIL
portcullis_peak_rss_mib=$(mib "$PC_HWM")
portcullis_errors=$((PC_NON2XX + PC_SOCKERR))
portcullis_idle_rss_mib=$(mib "$PC_IDLE_RSS_A")
portcullis_idle_conns=$IC_OPENED
portcullis_idle_conns_rss_added_mib=$(mib "$IC_ADDED")
portcullis_idle_conn_bytes_each=$IC_PER_CONN
nginx_rps=$NG_RPS
nginx_p50_ms=$NG_P50
nginx_p99_ms=$NG_P99
nginx_cpu_us_per_req=$NG_CPU_US
nginx_cpu_util_pct=$NG_UTIL
nginx_peak_rss_mib=$(mib "$NG_HWM")
nginx_errors=$((NG_NON2XX + NG_SOCKERR))
other_cpu_pct_portcullis_run=$PC_OTHER
other_cpu_pct_nginx_run=$NG_OTHER
ratio_cpu_per_req=$R_CPU
ratio_p99=$R_P99
ratio_rps=$R_RPS
hyper_rps=${M_RPS[hyper]}
hyper_p50_ms=${M_P50[hyper]}
hyper_p99_ms=${M_P99[hyper]}
hyper_cpu_us_per_req=${M_CPU_US[hyper]}
hyper_cpu_util_pct=${M_UTIL[hyper]}
hyper_peak_rss_mib=$(mib "${M_HWM[hyper]}")
hyper_errors=$((M_NON2XX[hyper] + M_SOCKERR[hyper]))
other_cpu_pct_hyper_run=${M_OTHER[hyper]}
ratio_vs_hyper_cpu_per_req=$HY_CPU
ratio_vs_hyper_p99=$HY_P99
ratio_vs_hyper_rps=$HY_RPS
bench_profiles=$(IFS=,; echo "${PROFILE_LIST[*]}")
EOF
if [ "$TLS_HANDSHAKES" = 1 ]; then tls_keys; fi
for p in "${PROFILE_LIST[@]}"; do
  k="portcullis_$p"
  if measured "$p"; then
    cat <<EOF
${k}_status=ok
${k}_rps=${M_RPS[$p]}
${k}_p50_ms=${M_P50[$p]}
${k}_p99_ms=${M_P99[$p]}
${k}_cpu_us_per_req=${M_CPU_US[$p]}
${k}_cpu_util_pct=${M_UTIL[$p]}
${k}_peak_rss_mib=$(mib "${M_HWM[$p]}")
${k}_errors=$((M_NON2XX[$p] + M_SOCKERR[$p]))
other_cpu_pct_${k}_run=${M_OTHER[$p]}
EOF
    if [ "$p" != plain ]; then
      echo "ratio_${p}_vs_plain_cpu=$(ratio "${M_CPU_US[$p]}" "$PC_CPU_US")"
      echo "ratio_${p}_vs_plain_p99=$(ratio "${M_P99[$p]}" "$PC_P99")"
      echo "ratio_${p}_vs_plain_rps=$(ratio "${M_RPS[$p]}" "$PC_RPS")"
    fi
    case $p in
      observability)
        echo "${k}_access_log_lines=$ACCESS_LOG_LINES"
        echo "${k}_access_log_expected=$ACCESS_LOG_EXPECTED"
        echo "${k}_access_log_dropped=${ACCESS_LOG_DROPPED:-n/a}"
        echo "${k}_metrics_scrapes=$SCRAPES"
        echo "${k}_metrics_scrapes_ok=$SCRAPES_OK" ;;
      tracing)
        echo "${k}_otlp_posts=$OTLP_POSTS"
        echo "${k}_otlp_spans=$OTLP_SPANS"
        echo "${k}_otlp_spans_per_req=$OTLP_SPANS_PER_REQ" ;;
    esac
  else
    echo "${k}_status=skipped"
    for f in rps p50_ms p99_ms cpu_us_per_req cpu_util_pct peak_rss_mib errors; do echo "${k}_$f=n/a"; done
    echo "ratio_${p}_vs_plain_cpu=n/a"
  fi
done
