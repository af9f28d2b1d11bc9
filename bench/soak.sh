#!/usr/bin/env bash
# The chaos soak (not in CI): a steady open-loop load of mixed GET and POST over HTTP/1.1 and h2c
# through one gateway for DURATION seconds while the world around it misbehaves:
#
#   - the shared config changes RELOADS times (pushed to etcd with `portcullis config push`, or,
#     with SOAK_ETCD=0, the config file rewritten), each change checked as served;
#   - one of the two upstream targets is killed (SIGKILL) every KILL_EVERY seconds and started
#     again 20 s later;
#   - Redis (behind a `rate_limit` with `policy: redis`, `on_failure: allow`) is stopped for 30 s
#     every 10 minutes, starting at minute 5;
#   - etcd (the config source) is stopped for 45 s every 10 minutes, starting at minute 7:30.
#
# The upstreams (crates/gateway/examples/soak.rs) append the idempotency key of every POST they
# receive to a file, so a POST that reached an upstream twice is found across targets and
# restarts. Reported at the end: requests, non-2xx and errors by cause, POSTs that reached an
# upstream twice (must be 0), idempotent requests (GET) lost (must be 0), the gateway's RSS and
# open file descriptors every minute, RSS growth after the first 5 minutes (must stay under 10 %),
# panics in its log.
#
#   bench/soak.sh                       # 30 minutes
#   DURATION=180 KILL_EVERY=50 REDIS_FIRST=60 ETCD_FIRST=100 RELOADS=4 bench/soak.sh   # rehearsal
#
# Environment (defaults): DURATION=1800 RATE=150 (per protocol, requests/s) POST_PERCENT=30
#   RELOADS=20 KILL_EVERY=180 REDIS_FIRST=300 ETCD_FIRST=450 (seconds) CHAOS_PERIOD=600 (seconds
#   between Redis stops, and between etcd stops) SOAK_ETCD=1 (0: file mode) KEEP_TMP=0.
#   CARGO_TARGET_DIR honoured.
# Needs redis-server and, with SOAK_ETCD=1, etcd (Debian: redis-server etcd-server).
set -euo pipefail

DURATION=${DURATION:-1800}
RATE=${RATE:-150}
POST_PERCENT=${POST_PERCENT:-30}
RELOADS=${RELOADS:-20}
KILL_EVERY=${KILL_EVERY:-180}
REDIS_FIRST=${REDIS_FIRST:-300}
ETCD_FIRST=${ETCD_FIRST:-450}
CHAOS_PERIOD=${CHAOS_PERIOD:-600}
SOAK_ETCD=${SOAK_ETCD:-1}
KEEP_TMP=${KEEP_TMP:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
log() { printf '[soak %5ss] %s\n' "$(( $(date +%s) - ${T0:-$(date +%s)} ))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v redis-server >/dev/null || die "needs redis-server (apt-get install redis-server)"
if [ "$SOAK_ETCD" = 1 ]; then
  command -v etcd >/dev/null || die "needs etcd (apt-get install etcd-server), or SOAK_ETCD=0"
fi

log "building the gateway and the soak example (release)"
(cd "$REPO" && cargo build --release --quiet -p portcullis --bin portcullis --example soak)
PC="$TARGET_DIR/release/portcullis"
SOAK="$TARGET_DIR/release/examples/soak"

WORK=$(mktemp -d /tmp/portcullis-soak.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}" ${UP_A:-} ${UP_B:-} ${REDIS:-} ${ETCD_PID:-} ${GW:-}; do
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$KEEP_TMP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

# Ports: a fixed block above the ephemeral range's usual start, shifted by the PID so two soaks
# on one machine do not collide.
BASE=$(( 20000 + ($$ % 200) * 10 ))
GW_PORT=$BASE ADMIN_PORT=$((BASE + 1)) UP_A_PORT=$((BASE + 2)) UP_B_PORT=$((BASE + 3))
REDIS_PORT=$((BASE + 4)) ETCD_PORT=$((BASE + 5)) ETCD_PEER=$((BASE + 6))
ETCD_URL=http://127.0.0.1:$ETCD_PORT

start_upstream() { # name port -> pid on stdout
  "$SOAK" upstream --listen "127.0.0.1:$2" --log "$WORK/keys-$1" --name "$1" \
    >>"$WORK/upstream-$1.log" 2>&1 &
  echo $!
}
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >>"$WORK/redis.log" 2>&1 &
  REDIS=$!
}
start_etcd() {
  etcd --data-dir "$WORK/etcd" --name soak \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "soak=http://127.0.0.1:$ETCD_PEER" --log-level error \
    >>"$WORK/etcd.log" 2>&1 &
  ETCD_PID=$!
}
wait_port() { # port
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# The shared part; GEN changes on every reload (a direct answer at /version says which is served).
shared_config() { # generation
  cat <<YAML
upstreams:
  app:
    targets: [{ address: "127.0.0.1:$UP_A_PORT" }, { address: "127.0.0.1:$UP_B_PORT" }]
    retry: { attempts: 3 }
    health_check:
      active: { path: /healthz, interval: 1s, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 1 }
      passive: { consecutive_failures: 3, eject_for: 5s }
routes:
  - name: version
    match: { path: /version }
    direct_response: { status: 200, body: "generation $1" }
  - name: api
    match: { path_prefix: /api }
    upstream: app
    timeout: 10s
    plugins:
      rate_limit:
        limit: 1000000
        per: 1s
        key: ip
        policy: redis
        redis: { url: "redis://127.0.0.1:$REDIS_PORT", timeout: 50ms }
        on_failure: allow
YAML
}
node_config() {
  cat <<YAML
listeners:
  - { name: http, address: "127.0.0.1:$GW_PORT" }
admin:
  address: "127.0.0.1:$ADMIN_PORT"
YAML
  if [ "$SOAK_ETCD" = 1 ]; then
    cat <<YAML
config_source:
  etcd:
    endpoints: ["$ETCD_URL"]
    cache: shared-cache.yaml
    node_id: soak
YAML
  fi
}

UP_A=$(start_upstream a "$UP_A_PORT")
UP_B=$(start_upstream b "$UP_B_PORT")
start_redis
wait_port "$UP_A_PORT" && wait_port "$UP_B_PORT" && wait_port "$REDIS_PORT" || die "helpers did not start"
GEN=1
if [ "$SOAK_ETCD" = 1 ]; then
  start_etcd
  wait_port "$ETCD_PORT" || die "etcd did not start"
  shared_config $GEN >"$WORK/shared.yaml"
  for _ in $(seq 50); do
    "$PC" config push -c "$WORK/shared.yaml" --etcd "$ETCD_URL" --author soak -m "generation $GEN" \
      >>"$WORK/push.log" 2>&1 && break
    sleep 0.2
  done
  node_config >"$WORK/gateway.yaml"
else
  { node_config; shared_config $GEN; } >"$WORK/gateway.yaml"
fi
(cd "$WORK" && exec "$PC" run -c gateway.yaml >"$WORK/gateway.log" 2>&1) &
GW=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$GW_PORT/version" | grep -q "generation 1" || die "gateway not serving (see $WORK/gateway.log)"

T0=$(date +%s)
log "gateway pid $GW on :$GW_PORT; $RATE req/s per protocol (h1, h2c) for ${DURATION}s, ${POST_PERCENT}% POST; work dir $WORK"
"$SOAK" load --url "http://127.0.0.1:$GW_PORT" --rate "$RATE" --duration "$DURATION" \
  --post-percent "$POST_PERCENT" --run h1 >"$WORK/load-h1.json" 2>"$WORK/load-h1.log" &
L1=$!
"$SOAK" load --url "http://127.0.0.1:$GW_PORT" --rate "$RATE" --duration "$DURATION" --h2 \
  --post-percent "$POST_PERCENT" --run h2 >"$WORK/load-h2.json" 2>"$WORK/load-h2.log" &
L2=$!
PIDS+=("$L1" "$L2")

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$GW/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$GW/fd" 2>/dev/null | wc -l; }
echo "minute,rss_kib,fds" >"$WORK/rss.csv"
echo "0,$(rss_kib),$(fds)" >>"$WORK/rss.csv"

reload_every=$(( DURATION / (RELOADS + 1) ))
next_reload=$reload_every next_kill=$KILL_EVERY next_minute=60
next_redis=$REDIS_FIRST next_etcd=$ETCD_FIRST
b_down_until=0 redis_down_until=0 etcd_down_until=0
reloads_done=0 reloads_failed=0 reload_ms=()
kills=0 redis_stops=0 etcd_stops=0

reload() {
  GEN=$((GEN + 1))
  local t0 ok=0
  t0=$(date +%s%N)
  if [ "$SOAK_ETCD" = 1 ]; then
    shared_config $GEN >"$WORK/shared.yaml"
    "$PC" config push -c "$WORK/shared.yaml" --etcd "$ETCD_URL" --author soak \
      -m "generation $GEN" >>"$WORK/push.log" 2>&1 || { log "push $GEN failed"; }
  else
    { node_config; shared_config $GEN; } >"$WORK/gateway.yaml.new"
    mv "$WORK/gateway.yaml.new" "$WORK/gateway.yaml"
  fi
  for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$GW_PORT/version" | grep -q "generation $GEN\$"; then ok=1; break; fi
    sleep 0.05
  done
  if [ $ok = 1 ]; then
    reloads_done=$((reloads_done + 1))
    reload_ms+=($(( ($(date +%s%N) - t0) / 1000000 )))
  else
    reloads_failed=$((reloads_failed + 1))
    log "generation $GEN not served within 5 s"
  fi
}

while :; do
  now=$(( $(date +%s) - T0 ))
  [ "$now" -ge "$DURATION" ] && break
  kill -0 "$GW" 2>/dev/null || die "the gateway exited (see $WORK/gateway.log)"
  if [ "$now" -ge "$next_minute" ]; then
    echo "$((now / 60)),$(rss_kib),$(fds)" >>"$WORK/rss.csv"
    next_minute=$((next_minute + 60))
  fi
  if [ "$b_down_until" -gt 0 ] && [ "$now" -ge "$b_down_until" ]; then
    UP_B=$(start_upstream b "$UP_B_PORT"); b_down_until=0; log "target b started again"
  elif [ "$b_down_until" = 0 ] && [ "$now" -ge "$next_kill" ]; then
    kill -9 "$UP_B" 2>/dev/null || true; wait "$UP_B" 2>/dev/null || true
    kills=$((kills + 1)); b_down_until=$((now + 20)); next_kill=$((next_kill + KILL_EVERY))
    log "target b killed ($kills)"
  fi
  if [ "$redis_down_until" -gt 0 ] && [ "$now" -ge "$redis_down_until" ]; then
    start_redis; redis_down_until=0; log "redis started again"
  elif [ "$redis_down_until" = 0 ] && [ "$now" -ge "$next_redis" ]; then
    kill "$REDIS" 2>/dev/null || true; wait "$REDIS" 2>/dev/null || true
    redis_stops=$((redis_stops + 1)); redis_down_until=$((now + 30)); next_redis=$((next_redis + CHAOS_PERIOD))
    log "redis stopped ($redis_stops)"
  fi
  if [ "$SOAK_ETCD" = 1 ]; then
    if [ "$etcd_down_until" -gt 0 ] && [ "$now" -ge "$etcd_down_until" ]; then
      start_etcd; wait_port "$ETCD_PORT" || true; etcd_down_until=0; log "etcd started again"
    elif [ "$etcd_down_until" = 0 ] && [ "$now" -ge "$next_etcd" ]; then
      kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true
      etcd_stops=$((etcd_stops + 1)); etcd_down_until=$((now + 45)); next_etcd=$((next_etcd + CHAOS_PERIOD))
      log "etcd stopped ($etcd_stops)"
    fi
  fi
  # A reload falls due; with etcd down it waits until etcd is back (a push needs the store).
  if [ "$reloads_done" -lt "$RELOADS" ] && [ "$now" -ge "$next_reload" ] && [ "$etcd_down_until" = 0 ]; then
    reload; next_reload=$((next_reload + reload_every))
  fi
  sleep 1
done
echo "$((DURATION / 60)),$(rss_kib),$(fds)" >>"$WORK/rss.csv"
log "load ends; waiting for in-flight requests"
wait "$L1" "$L2" || true
sleep 1
echo "end,$(rss_kib),$(fds)" >>"$WORK/rss.csv"

dup_posts=$(cat "$WORK"/keys-* 2>/dev/null | sort | uniq -d | wc -l)
posts_received=$(cat "$WORK"/keys-* 2>/dev/null | wc -l)
panics=$(grep -c -i 'panicked' "$WORK/gateway.log" || true)

python3 - "$WORK" "$dup_posts" "$posts_received" "$panics" "$reloads_done" "$reloads_failed" \
  "$kills" "$redis_stops" "$etcd_stops" "${reload_ms[*]:-}" <<'PY'
import json, sys, csv
work, dup, received, panics, rel_ok, rel_fail, kills, rstops, estops, rms = sys.argv[1:11]
loads = [json.load(open(f"{work}/load-{p}.json")) for p in ("h1", "h2")]
rows = list(csv.DictReader(open(f"{work}/rss.csv")))
print("\n== chaos soak")
print(f"chaos: target killed {kills}x, redis stopped {rstops}x, etcd stopped {estops}x, "
      f"reloads served {rel_ok} (not served in 5 s: {rel_fail}); reload→served ms: {rms or '-'}")
for l in loads:
    print(f"{l['protocol']:>9}: sent {l['sent']}, ok {l['ok']}, GET lost {l['get_lost']} of "
          f"{l['get_sent']}, POST failed {l['post_failed']} of {l['post_sent']}, skipped "
          f"(2,000 in flight) {l['overload_skipped']}; latency ms p50 {l['latency_ms']['p50']:.2f} "
          f"p99 {l['latency_ms']['p99']:.2f} p99.9 {l['latency_ms']['p999']:.2f} max {l['latency_ms']['max']:.1f}")
    for cause, n in l["failures_by_cause"].items():
        print(f"{'':>11}{n:>7}  {cause}")
print(f"POSTs received by the upstreams {received}; received twice: {dup} (must be 0)")
lost = sum(l["get_lost"] for l in loads)
print(f"idempotent requests lost: {lost} (must be 0)")
print(f"panics in the gateway log: {panics}")
print("minute  RSS MiB  fds")
for r in rows:
    print(f"{r['minute']:>6}  {int(r['rss_kib'])/1024:7.1f}  {r['fds']:>4}")
by_min = {int(r["minute"]): int(r["rss_kib"]) for r in rows if r["minute"].isdigit()}
if 5 in by_min and len(by_min) > 6:
    after = max(v for m, v in by_min.items() if m >= 5)
    growth = (after / by_min[5] - 1) * 100
    print(f"RSS growth after minute 5: {growth:+.1f} % (max {after/1024:.1f} MiB vs {by_min[5]/1024:.1f} MiB; must stay under 10 %)")
PY
