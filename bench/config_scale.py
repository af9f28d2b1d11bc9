#!/usr/bin/env python3
"""What a big config costs, independent of traffic: one gateway with ROUTES routes over
UPSTREAMS upstreams (all to one local echo upstream), then

  - RSS right after start, per configured route;
  - one /metrics scrape before any traffic, and after ACTIVE routes saw a few requests each:
    bytes and series (lines that are samples);
  - RELOADS reloads through POST /admin/reload (each one a real change: one more route), the time
    each takes as the admin API answers it, and RSS after each and once more SETTLE_S seconds
    after the last.

usage: config_scale.py PORTCULLIS_BINARY [ROUTES] [UPSTREAMS] [ACTIVE] [RELOADS]
Prints key=value lines (sizes in bytes, RSS in KiB, times in ms).
"""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time


# Seconds to wait after the last reload before the settled RSS reading.
SETTLE_S = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def config(gw, admin, echo, routes, upstreams, extra):
    out = [
        "runtime: { worker_threads: 1 }",
        "listeners:",
        f'  - {{ name: http, address: "127.0.0.1:{gw}" }}',
        f'admin: {{ address: "127.0.0.1:{admin}" }}',
        "upstreams:",
    ]
    for u in range(upstreams):
        out.append(f'  u{u}: {{ targets: [{{ address: "127.0.0.1:{echo}" }}] }}')
    out.append("routes:")
    for r in range(routes):
        out.append(f"  - {{ name: r{r}, match: {{ path_prefix: /r{r}/ }}, upstream: u{r % upstreams} }}")
    for k in range(extra):
        out.append(
            f"  - {{ name: extra{k}, match: {{ path: /extra{k} }}, "
            f"direct_response: {{ status: 200, body: x }} }}"
        )
    return "\n".join(out) + "\n"


def scrape(admin):
    status, body = get(admin, "/metrics")
    assert status == 200, status
    series = sum(1 for l in body.splitlines() if l and not l.startswith(b"#"))
    return len(body), series


def main():
    binary = sys.argv[1]
    routes = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    upstreams = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    active = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    reloads = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    gw, admin, echo = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="portcullis-scale.")
    path = os.path.join(tmp, "gateway.yaml")
    with open(path, "w") as f:
        f.write(config(gw, admin, echo, routes, upstreams, 0))
    procs = [
        subprocess.Popen([binary, "echo", "--listen", f"127.0.0.1:{echo}"],
                         stderr=subprocess.DEVNULL),
    ]
    t0 = time.time()
    pc = subprocess.Popen([binary, "run", "-c", path], stderr=open(os.path.join(tmp, "log"), "w"))
    procs.append(pc)
    try:
        for _ in range(600):
            try:
                if get(admin, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        print(f"start_ms={(time.time() - t0) * 1000:.0f}")
        time.sleep(1)
        idle = rss_kb(pc.pid)
        print(f"routes={routes}")
        print(f"rss_idle_kb={idle}")
        print(f"rss_per_route_bytes={idle * 1024 // routes}")
        size, series = scrape(admin)
        print(f"scrape_before_traffic_bytes={size}")
        print(f"scrape_before_traffic_series={series}")
        c = http.client.HTTPConnection("127.0.0.1", gw, timeout=10)
        for r in range(active):
            for _ in range(5):
                c.request("GET", f"/r{r * (routes // active)}/x")
                resp = c.getresponse()
                resp.read()
                assert resp.status == 200, resp.status
        c.close()
        size, series = scrape(admin)
        print(f"active_routes={active}")
        print(f"scrape_after_traffic_bytes={size}")
        print(f"scrape_after_traffic_series={series}")
        rss = [rss_kb(pc.pid)]
        took = []
        for k in range(1, reloads + 1):
            with open(path, "w") as f:
                f.write(config(gw, admin, echo, routes, upstreams, k))
            t = time.time()
            status, body = get(admin, "/admin/reload", "POST")
            took.append((time.time() - t) * 1000)
            assert status == 200, body
            time.sleep(0.2)
            rss.append(rss_kb(pc.pid))
        print(f"reloads={reloads}")
        print(f"reload_ms_median={sorted(took)[len(took) // 2]:.0f}")
        print(f"reload_ms_max={max(took):.0f}")
        print(f"rss_after_traffic_kb={rss[0]}")
        print(f"rss_after_reloads_kb={rss[-1]}")
        print(f"rss_max_over_reloads_kb={max(rss)}")
        print(f"rss_growth_over_reloads_pct={(rss[-1] / rss[0] - 1) * 100:.1f}")
        print("rss_each_reload_kb=" + ",".join(str(r) for r in rss))
        # The same figure once the allocator has had time to hand freed pages back (jemalloc
        # does so from a background thread after `dirty_decay_ms`; glibc keeps them).
        time.sleep(SETTLE_S)
        settled = rss_kb(pc.pid)
        print(f"rss_settled_after_reloads_kb={settled}")
        print(f"rss_settled_growth_over_reloads_pct={(settled / rss[0] - 1) * 100:.1f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
