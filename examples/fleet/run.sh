#!/usr/bin/env bash
# A fleet in five minutes: etcd, Redis, an echo upstream and three gateways on loopback. Pushes
# a shared config to etcd and prints what to try. Ctrl-C stops everything.
#
#   examples/fleet/run.sh                      # builds the release binary first
#   PORTCULLIS=path/to/portcullis examples/fleet/run.sh
#
# Needs etcd and etcdctl (Debian: etcd-server etcd-client) and redis-server.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
if [ -z "${PORTCULLIS:-}" ]; then
  (cd "$root" && cargo build --release --quiet --bin portcullis)
  PORTCULLIS="${CARGO_TARGET_DIR:-$root/target}/release/portcullis"
fi
for bin in etcd etcdctl redis-server; do
  command -v "$bin" >/dev/null || { echo "needs $bin (apt-get install etcd-server etcd-client redis-server)"; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

ETCD=http://127.0.0.1:23791
export PORTCULLIS_ETCD=$ETCD ETCDCTL_API=3
etcd --data-dir "$work/etcd" --listen-client-urls $ETCD --advertise-client-urls $ETCD \
  --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
  --initial-cluster default=http://127.0.0.1:23801 --max-txn-ops 10000 --log-level error \
  >"$work/etcd.log" 2>&1 &
pids+=($!)
redis-server --port 26391 --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
"$PORTCULLIS" echo --listen 127.0.0.1:29001 2>"$work/echo.log" &
pids+=($!)
until etcdctl --endpoints $ETCD endpoint health >/dev/null 2>&1; do sleep 0.2; done

cat >"$work/shared.yaml" <<'YAML'
upstreams:
  echo:
    targets: [{ address: "127.0.0.1:29001" }]
routes:
  - name: hello
    match: { path: /hello }
    direct_response: { status: 200, body: "hello from the fleet, generation 1\n" }
  - name: api
    match: { path_prefix: /api }
    upstream: echo
    rewrite: { strip_prefix: /api }
    slo: { success_rate: 99.5 }
    plugins:
      # shared by the three gateways through Redis: 5 per 10 s per client, fleet-wide
      rate_limit: { limit: 5, per: 10s, key: ip, policy: redis, redis: { url: "redis://127.0.0.1:26391" } }
YAML
"$PORTCULLIS" config push -c "$work/shared.yaml" --author "$USER" --message "first config"

for i in 1 2 3; do
  mkdir -p "$work/gw$i"
  cat >"$work/gw$i/node.yaml" <<YAML
listeners:
  - { name: http, address: 127.0.0.1:2808$i }
admin:
  address: 127.0.0.1:2990$i
config_source:
  etcd:
    endpoints: ["$ETCD"]
    cache: shared-cache.yaml
    node_id: gw$i
YAML
  PORTCULLIS_ZONE="zone-$i" "$PORTCULLIS" run -c "$work/gw$i/node.yaml" 2>"$work/gw$i/log" &
  pids+=($!)
done
for i in 1 2 3; do until curl -sf "http://127.0.0.1:2990$i/readyz" >/dev/null; do sleep 0.2; done; done

cat <<TXT

Three gateways (:28081 :28082 :28083, admin :29901 :29902 :29903) follow etcd at $ETCD.
Files and logs: $work

  curl localhost:28081/hello; curl localhost:28083/hello
  for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{http_code} ' localhost:2808\$((i%3+1))/api/x; done; echo
                                              # 5 pass fleet-wide, then 429 (shared Redis limit)
  curl localhost:29901/admin/fleet            # every node, the generation it serves, who lags

Change the config and watch all three follow within a second:

  export PORTCULLIS_ETCD=$ETCD
  sed -i 's/generation 1/generation 2/' $work/shared.yaml
  $PORTCULLIS config diff -c $work/shared.yaml; echo "exit \$?"   # 3: differences
  $PORTCULLIS config push -c $work/shared.yaml -m "say generation 2"
  curl localhost:28082/hello
  $PORTCULLIS config history
  curl localhost:29902/admin/config/history
  $PORTCULLIS config rollback --to 1 -m "back"

Break it on purpose, with etcdctl (every node refuses, keeps serving, and says why):

  etcdctl --endpoints $ETCD put /portcullis/routes/bad '{"match":{"path":"/bad"},"upstream":"nowhere"}'
  curl localhost:29903/admin/config | grep -A2 rejected
  curl -s localhost:29903/metrics | grep changes_rejected
  etcdctl --endpoints $ETCD del /portcullis/routes/bad

Kill etcd (the gateways keep serving), or change one object through the admin API:

  curl -X PUT localhost:29901/admin/routes/hello -H 'If-Match: 2' \\
       -d '{"match":{"path":"/hello"},"direct_response":{"status":200,"body":"from the admin API\n"}}'

Ctrl-C stops everything.
TXT
wait
