# Shell helpers shared by the benchmark scripts (sourced by run.sh, profiles.sh, protocols.sh, ab.sh):
# logging, the processes a script started (stopped in reverse order at exit), waiting for ports,
# templates, and /proc readings. The sourcing script sets TMP (and KEEP_TMP) before any process
# is started; cleanup removes TMP unless KEEP_TMP=1.
log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()            # processes this script started and has not reaped yet
WORKERS=()         # nginx workers of those (stopped by their master; killed only if left over)
track() { PIDS+=("$1"); }
untrack() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
alive() { # running and not a zombie
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [ "${s:0:1}" != Z ]
}
start_time() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; set -- $s; echo "${20}"; }
stop_pid() { # TERM, up to 10 s grace, then KILL; reaps it if it is our child
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  untrack "$pid"
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  # Reverse start order. nginx masters stop their own workers; a worker is only signalled if it
  # outlived its master (a master that had to be killed).
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    if alive "$p"; then stop_pid "$p"; else wait "$p" 2>/dev/null || true; fi
  done
  for p in "${WORKERS[@]}"; do   # pid:starttime, so a recycled pid is never hit
    if alive "${p%%:*}" && [ "$(start_time "${p%%:*}")" = "${p#*:}" ]; then
      kill -KILL "${p%%:*}" 2>/dev/null || true
    fi
  done
  if [ -n "${TMP:-}" ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

render() { # template out KEY=VALUE...
  local tmpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tmpl" >"$out"
  if grep -v '^ *#' "$out" | grep -q '@[A-Z_]*@'; then die "unfilled placeholder in $out"; fi
}

wait_port() { # port pid name logfile [soft: return 1 instead of exiting]
  local i
  for i in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! alive "$2"; then
      log "$3 exited during startup; its stderr:"
      cat "$4" >&2 || true
      [ "${5:-}" = soft ] && return 1
      exit 1
    fi
    sleep 0.05
  done
  log "$3 did not listen on 127.0.0.1:$1 within 10 s; its stderr:"
  cat "$4" >&2 || true
  [ "${5:-}" = soft ] && return 1
  exit 1
}
# run_portcullis bin dir port admin name -> STARTED_PID: bin with dir/portcullis.yaml on
# PROXY_CORE (logs in dir), once its port is open and /readyz answers 200; dies otherwise.
run_portcullis() {
  local bin=$1 dir=$2 port=$3 admin=$4 name=$5 i
  PORTCULLIS_LOG=warn taskset -c "$PROXY_CORE" "$bin" run -c "$dir/portcullis.yaml" >"$dir/stdout" 2>"$dir/stderr" &
  STARTED_PID=$!; track "$STARTED_PID"
  wait_port "$port" "$STARTED_PID" "$name" "$dir/stderr"
  for i in $(seq 100); do
    [ "$(curl_status "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
    sleep 0.05
  done
  die "$name not ready; stderr: $(cat "$dir/stderr")"
}
curl_status() { # url [curl args...] -> HTTP status (000 when there was no answer)
  local url=$1
  shift
  curl -s -o /dev/null -m 5 -w '%{http_code}' "$@" "$url" || true
}
http_get() { # url -> "STATUS BODY" (body's first line)
  python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except Exception as e:
    status, body = 0, repr(e).encode()
print(status, body.decode(errors="replace").strip().splitlines()[0] if body.strip() else "")
EOF
}
children_of() {
  if [ -r "/proc/$1/task/$1/children" ]; then cat "/proc/$1/task/$1/children"; else pgrep -P "$1" || true; fi
}
nginx_worker() { # master pid -> worker pid
  local i w
  for i in $(seq 100); do
    w=$(children_of "$1" | awk '{print $1}')
    [ -n "$w" ] && { echo "$w"; return 0; }
    sleep 0.05
  done
  die "nginx master $1 has no worker"
}
cpu_ticks() { # utime + stime of a process (all its threads), in clock ticks
  local s
  s=$(cat "/proc/$1/stat")
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# measure name pid url [h2load args...] -> appends "cpu_us rps p50_ms p99_ms requests non2xx" to
# $TMP/name.results: the CPU of process `pid` per request h2load completed, h2load's request
# rate, latency percentiles from its per-request log, requests, answers that were not 2xx.
# One warm-up of WARMUP seconds (not counted), then DURATION seconds measured; h2load runs on
# LOAD_CORE. Needs TMP, LOAD_CORE, WARMUP, DURATION and CLK_TCK.
measure() {
  local name=$1 pid=$2 url=$3 out t0 t1
  shift 3
  touch "$TMP/$name.results"
  out="$TMP/$name.$(wc -l <"$TMP/$name.results")"
  taskset -c "$LOAD_CORE" h2load -D "$WARMUP" "$@" "$url" >"$out.warmup" 2>&1 || { cat "$out.warmup" >&2; die "h2load failed ($name)"; }
  t0=$(cpu_ticks "$pid")
  taskset -c "$LOAD_CORE" h2load -D "$DURATION" --log-file="$out.log" "$@" "$url" >"$out" 2>&1 || { cat "$out" >&2; die "h2load failed ($name)"; }
  t1=$(cpu_ticks "$pid")
  local done ok
  done=$(awk '/^requests:/ {print $8}' "$out")
  ok=$(awk '/^status codes:/ {print $3}' "$out")
  [ -n "$done" ] && [ "$done" -gt 0 ] || { cat "$out" >&2; die "h2load completed no request ($name)"; }
  # per-request log: start (us since epoch) <TAB> status <TAB> duration (us)
  read -r p50 p99 < <(cut -f3 "$out.log" | sort -n | awk '
    function at(q) { i = int(NR * q); if (i < 1) i = 1; return v[i] / 1000 }
    {v[NR] = $1} END {printf "%.3f %.3f\n", at(0.50), at(0.99)}')
  rm -f "$out.log"
  awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$done" -v ok="$ok" -v p50="$p50" -v p99="$p99" -v d="$DURATION" \
    'BEGIN {printf "%.2f %.0f %s %s %d %d\n", t / hz * 1e6 / n, n / d, p50, p99, n, n - ok}' >>"$TMP/$name.results"
  log "$name: $(tail -1 "$TMP/$name.results" | awk '{printf "%s us/req, %s req/s, p50 %s ms, p99 %s ms, %s requests, %s not 2xx", $1, $2, $3, $4, $5, $6}')"
}

# free_ports N -> N distinct free loopback ports (bound together, then released)
free_ports() { python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"; }

# ensure_tools COMMAND:PACKAGE... -> installs with apt-get the packages of the commands that are
# missing (also looked for in /usr/sbin); nginx-light falls back to nginx on releases without it.
# Sets NGINX to nginx's path.
ensure_tools() {
  local sudo="" need=() kv
  [ "$(id -u)" = 0 ] || sudo="sudo"
  for kv in "$@"; do
    command -v "${kv%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${kv%%:*}" ] || need+=("${kv#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (apt-get)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]/nginx-light/nginx}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}
