#!/usr/bin/env bash
# Portcullis against nginx as reverse proxies on every client protocol: HTTP/1.1 in clear,
# HTTP/1.1 over TLS and HTTP/2 over TLS, one core each (core 0), in front of the same upstream
# (nginx answering a fixed 200, HTTP/1.1 keep-alive, core 1 with the load generator).
#
# Both proxies get an ECDSA P-256 certificate, ALPN h2 and http/1.1, TLS session resumption as
# they come, keep-alive without a request cap on both sides. h2load drives every row (`--h1`
# for HTTP/1.1: CONNS connections, one request in flight each; HTTP/2: H2_CONNS connections with
# H2_STREAMS streams each), the two proxies alternately, ROUNDS times. Reported per row and proxy:
# CPU per request (the proxy process's utime+stime over the run / requests completed), req/s,
# p50/p99, and Portcullis/nginx.
#
# Environment (defaults): ROWS="h1 h1-tls h2-tls" DURATION=10 WARMUP=2 (seconds) ROUNDS=2
#   CONNS=64 H2_CONNS=16 H2_STREAMS=16 KEEP_TMP=1 keeps the temp dir. CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROWS=${ROWS:-h1 h1-tls h2-tls}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-16}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for r in $ROWS; do
  case $r in h1 | h1-tls | h2-tls) ;; *) die "unknown row '$r' (known: h1 h1-tls h2-tls)" ;; esac
done
ensure_tools h2load:nghttp2-client nginx:nginx-light openssl:openssl curl:curl

log "building portcullis (release)"
cargo build --release -p portcullis >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/portcullis"

PROXY_CORE=0
LOAD_CORE=1
[ "$(getconf _NPROCESSORS_ONLN)" -ge 2 ] || { log "warning: one CPU; everything shares core 0"; LOAD_CORE=0; }
CLK_TCK=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || true
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-protocols.XXXXXX")
chmod 755 "$TMP"   # nginx workers drop privileges when started as root
read -r UP PC PC_TLS PC_ADMIN NG NG_TLS <<<"$(free_ports 6)"

# The certificate both proxies present.
d="$TMP/tls"
mkdir -p "$d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=bench.test" \
  -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
[ -s "$d/cert.pem" ] || die "could not make the TLS test certificate"

start_nginx() { # dir conf core -> NGX_MASTER, NGX_WORKER
  taskset -c "$3" "$NGINX" -p "$1/" -c "$2" -e "$1/error.log" >"$1/stdout" 2>"$1/stderr" &
  NGX_MASTER=$!; track "$NGX_MASTER"
}

# Upstream: nginx, fixed 200 (core LOAD_CORE).
mkdir -p "$TMP/upstream"
render "$BENCH_DIR/upstream.nginx.conf.in" "$TMP/upstream/nginx.conf" DIR="$TMP/upstream" UPSTREAM_PORT="$UP" \
  NOFILE=65536 WORKER_CONNECTIONS=32768
start_nginx "$TMP/upstream" "$TMP/upstream/nginx.conf" "$LOAD_CORE"
wait_port "$UP" "$NGX_MASTER" "upstream nginx" "$TMP/upstream/stderr"

# Proxy nginx: the clear listener of proxy.nginx.conf.in plus a TLS one (HTTP/2 and 1.1).
mkdir -p "$TMP/nginx"
render "$BENCH_DIR/proxy.nginx.conf.in" "$TMP/nginx/nginx.conf" DIR="$TMP/nginx" UPSTREAM_PORT="$UP" \
  PROXY_PORT="$NG" NOFILE=65536 WORKER_CONNECTIONS=32768
python3 - "$TMP/nginx/nginx.conf" "$NG_TLS" "$d" <<'EOF'
import sys
path, port, d = sys.argv[1:]
conf = open(path).read()
server = f"""
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
i = conf.rstrip().rfind("}")
open(path, "w").write(conf[:i] + server.lstrip("\n"))
EOF
start_nginx "$TMP/nginx" "$TMP/nginx/nginx.conf" "$PROXY_CORE"
NG_MASTER=$NGX_MASTER
wait_port "$NG_TLS" "$NG_MASTER" "proxy nginx" "$TMP/nginx/stderr"
NG_WORKER=$(awk '{print $1}' "/proc/$NG_MASTER/task/$NG_MASTER/children")
[ -n "$NG_WORKER" ] || die "proxy nginx has no worker"
WORKERS+=("$NG_WORKER:$(start_time "$NG_WORKER")")

# Proxy Portcullis: the same two listeners, one worker thread.
mkdir -p "$TMP/portcullis"
cat >"$TMP/portcullis/portcullis.yaml" <<EOF
listeners:
  - { name: clear, address: "127.0.0.1:$PC" }
  - name: tls
    address: "127.0.0.1:$PC_TLS"
    tls: { certificates: [{ cert: "$d/cert.pem", key: "$d/key.pem" }] }
admin: { address: "127.0.0.1:$PC_ADMIN" }
upstreams:
  upstream:
    targets: [{ address: "127.0.0.1:$UP" }]
    pool: { max_idle_per_host: 256 }
routes:
  - { name: all, match: { path_prefix: / }, upstream: upstream }
runtime: { worker_threads: 1 }
EOF
PORTCULLIS_LOG=warn taskset -c "$PROXY_CORE" "$BIN" run -c "$TMP/portcullis/portcullis.yaml" \
  >"$TMP/portcullis/stdout" 2>"$TMP/portcullis/stderr" &
PC_PID=$!; track "$PC_PID"
wait_port "$PC_TLS" "$PC_PID" portcullis "$TMP/portcullis/stderr"

for url in "http://127.0.0.1:$PC/" "https://127.0.0.1:$PC_TLS/" "http://127.0.0.1:$NG/" "https://127.0.0.1:$NG_TLS/"; do
  st=$(curl_status "$url" -k)
  [ "$st" = 200 ] || die "$url answered $st"
  case $url in https*) v=$(curl -sk -o /dev/null -w '%{http_version}' --http2 "$url"); [ "$v" = 2 ] || die "$url did not speak HTTP/2 ($v)" ;; esac
done
log "both proxies answer 200 in clear and over TLS, and speak HTTP/2 over TLS"

row_args() { # row -> ARGS, URL suffix port for each proxy
  case $1 in
    h1) ARGS=(--h1 -c "$CONNS"); PC_URL="http://127.0.0.1:$PC/"; NG_URL="http://127.0.0.1:$NG/" ;;
    h1-tls) ARGS=(--h1 -c "$CONNS"); PC_URL="https://127.0.0.1:$PC_TLS/"; NG_URL="https://127.0.0.1:$NG_TLS/" ;;
    h2-tls) ARGS=(-c "$H2_CONNS" -m "$H2_STREAMS"); PC_URL="https://127.0.0.1:$PC_TLS/"; NG_URL="https://127.0.0.1:$NG_TLS/" ;;
  esac
}
for row in $ROWS; do
  row_args "$row"
  for r in $(seq "$ROUNDS"); do
    log "$row round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    measure "$row-portcullis" "$PC_PID" "$PC_URL" "${ARGS[@]}"
    measure "$row-nginx" "$NG_WORKER" "$NG_URL" "${ARGS[@]}"
  done
done

avg() { awk -v c="$2" '{s += $c} END {printf "%.2f", s / NR}' "$TMP/$1.results"; }
echo
echo "h2load, ${ROUNDS} rounds of ${DURATION}s per row and proxy; proxies on core $PROXY_CORE, load and upstream on core $LOAD_CORE"
echo "HTTP/1.1: $CONNS connections; HTTP/2: $H2_CONNS connections x $H2_STREAMS streams"
printf '%-8s %16s %12s %10s %10s %10s %10s %10s\n' row "proxy" "CPU us/req" "rounds" "req/s" "p50 ms" "p99 ms" "ratio"
for row in $ROWS; do
  for who in portcullis nginx; do
    f="$row-$who"
    ratio=""
    [ "$who" = portcullis ] && ratio=$(awk -v a="$(avg "$row-portcullis" 1)" -v b="$(avg "$row-nginx" 1)" 'BEGIN {printf "%.2fx", a / b}')
    printf '%-8s %16s %12s %10s %10.0f %10s %10s %10s\n' "$row" "$who" "$(avg "$f" 1)" \
      "$(awk '{printf "%s%s", (NR > 1 ? "/" : ""), $1}' "$TMP/$f.results")" "$(avg "$f" 2)" \
      "$(avg "$f" 3)" "$(avg "$f" 4)" "$ratio"
  done
done
echo
for row in $ROWS; do
  k=${row//-/_}
  echo "${k}_portcullis_cpu_us=$(avg "$row-portcullis" 1)"
  echo "${k}_nginx_cpu_us=$(avg "$row-nginx" 1)"
  echo "${k}_portcullis_p99_ms=$(avg "$row-portcullis" 4)"
  echo "${k}_nginx_p99_ms=$(avg "$row-nginx" 4)"
done
echo "machine: $(getconf _NPROCESSORS_ONLN) CPUs, loadavg now $(cut -d' ' -f1-3 /proc/loadavg)"
