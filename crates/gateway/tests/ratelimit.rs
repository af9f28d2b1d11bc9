//! End-to-end rate limits against the real binary: the local policy (counts, headers, keys by
//! IP, header, consumer and JWT claim, state kept across reloads) and the Redis policy (three
//! gateways sharing one real `redis-server`, accuracy against the GCRA, one key per client, and
//! Redis dying and coming back with `on_failure: allow` and `deny`).

#[path = "e2e/harness.rs"]
mod harness;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::*;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "an-hs256-secret-that-is-long-enough-0123";

async fn call(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = req("GET", url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&h1_client(), b.body(Full::default()).expect("request")).await
}

fn num(got: &Got, name: &str) -> u64 {
    got.header(name)
        .unwrap_or_else(|| panic!("no {name} on a {} response", got.status))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// Asserts a 429 `rate_limited` with `Retry-After` and the RateLimit headers.
fn assert_limited(got: &Got, limit: u64) {
    assert_eq!(got.status, 429, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "rate_limited");
    assert!(num(got, "retry-after") >= 1);
    assert_eq!(num(got, "ratelimit-limit"), limit);
    assert_eq!(num(got, "ratelimit-remaining"), 0);
    num(got, "ratelimit-reset");
}

/// One route `limited` on `/` answered by the gateway itself, with `plugins` (YAML, indented
/// for a route's `plugins:`), and `extra` routes after it.
fn limited_config(plugins: &str, extra: &str) -> String {
    config(&format!(
        "routes:\n  - name: limited\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200, body: \"ok\" }}\n    plugins:\n{plugins}{extra}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limit_lets_the_limit_through_then_429_with_headers() {
    // `/` as asked: 5 per second. `/slow`: 5 per 10 s, for checks that take a while.
    let gw = Gateway::start(&limited_config(
        "      rate_limit: { limit: 5, per: 1s, burst: 0, key: ip }\n",
        "  - name: slow\n    match: { path_prefix: /slow }\n    direct_response: { status: 200, body: \"ok\" }\n    plugins:\n      rate_limit: { limit: 5, per: 10s, burst: 0, key: ip }\n",
    ));
    let url = gw.url("/x");

    // A burst of 20 at once: 5 pass (one more per 200 ms the burst may have taken).
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { call(&url, &[]).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let refills = (started.elapsed().as_millis() / 200) as usize;
    let passed: Vec<&Got> = results.iter().filter(|g| g.status == 200).collect();
    assert!(
        (5..=5 + refills).contains(&passed.len()),
        "{} of 20 passed in {:?}",
        passed.len(),
        started.elapsed()
    );
    for g in &results {
        if g.status != 200 {
            assert_limited(g, 5);
            assert_eq!(num(g, "retry-after"), 1, "the next request is 200 ms away");
        }
        assert_eq!(num(g, "ratelimit-limit"), 5);
        assert!(num(g, "ratelimit-reset") <= 1, "a full refill takes 1 s");
    }
    if refills == 0 {
        // The allowed ones counted down 4, 3, 2, 1, 0. Each count is measured at the time its
        // request read the clock, and concurrent requests may take their turn in another order
        // than they read it, so a count can be one below its place (the limit itself is exact:
        // five passed).
        let mut remaining: Vec<u64> = passed
            .iter()
            .map(|g| num(g, "ratelimit-remaining"))
            .collect();
        remaining.sort_unstable();
        assert!(
            remaining
                .iter()
                .zip(0u64..)
                .all(|(r, want)| *r <= want && want - r <= 1)
                && remaining[4] >= 3
                && remaining[0] == 0,
            "{remaining:?}"
        );
    }

    // Retry-After is honoured: waiting that long lets requests through again.
    let got = call(&url, &[]).await;
    assert_limited(&got, 5);
    tokio::time::sleep(Duration::from_secs(num(&got, "retry-after"))).await;
    let got = call(&url, &[]).await;
    assert_eq!(got.status, 200);

    // One after another on a keep-alive connection: a countdown, then 429s that say when.
    let slow = gw.url("/slow");
    let client = h1_client();
    let mut seen = Vec::new();
    for _ in 0..7 {
        let got = send(
            &client,
            req("GET", &slow).body(Full::default()).expect("req"),
        )
        .await;
        seen.push((got.status.as_u16(), num(&got, "ratelimit-remaining")));
        assert!(num(&got, "ratelimit-reset") <= 10);
        if got.status == 429 {
            assert_limited(&got, 5);
            assert!(
                (1..=2).contains(&num(&got, "retry-after")),
                "one request per 2 s"
            );
        }
    }
    assert_eq!(
        seen,
        [
            (200, 4),
            (200, 3),
            (200, 2),
            (200, 1),
            (200, 0),
            (429, 0),
            (429, 0)
        ],
    );
    // `/` and `/slow` have their own limits: `/` was not touched by these.
    assert_eq!(call(&url, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_give_each_tenant_its_own_budget() {
    let gw = Gateway::start(&limited_config(
        "      rate_limit: { limit: 3, per: 1m, key: \"header:X-Tenant\" }\n",
        "",
    ));
    let url = gw.url("/x");
    for i in 0..3 {
        let got = call(&url, &[("x-tenant", "acme")]).await;
        assert_eq!(got.status, 200, "acme #{i}");
    }
    assert_limited(&call(&url, &[("x-tenant", "acme")]).await, 3);
    for _ in 0..3 {
        assert_eq!(call(&url, &[("x-tenant", "globex")]).await.status, 200);
    }
    assert_limited(&call(&url, &[("x-tenant", "globex")]).await, 3);
    assert_limited(&call(&url, &[("x-tenant", "acme")]).await, 3);

    // Leaving the header out is not a way around the limit: such requests are limited by
    // client address (as Kong does).
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(call(&url, &[]).await.status.as_u16());
    }
    assert_eq!(outcomes, [200, 200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keys_with_key_auth() {
    let gw = Gateway::start(&limited_config(
        "      key_auth:\n        consumers: [{ name: team-a, key: \"key-a-0123456789\" }, { name: team-b, key: \"key-b-0123456789\" }]\n      rate_limit: { limit: 2, per: 1m, key: consumer }\n",
        "",
    ));
    let url = gw.url("/x");
    let a = [("x-api-key", "key-a-0123456789")];
    let b = [("x-api-key", "key-b-0123456789")];
    assert_eq!(call(&url, &a).await.status, 200);
    assert_eq!(call(&url, &a).await.status, 200);
    assert_limited(&call(&url, &a).await, 2);
    // Same client address, another consumer: its own budget.
    let got = call(&url, &b).await;
    assert_eq!(got.status, 200);
    assert_eq!(num(&got, "ratelimit-remaining"), 1);
    assert_eq!(call(&url, &b).await.status, 200);
    assert_limited(&call(&url, &b).await, 2);
    // Authentication runs first: no key is 401, not 429.
    assert_eq!(call(&url, &[]).await.status, 401);
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn claims_for(sub: Option<&str>) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut c = json!({ "exp": now + 300, "jti": fastrand::u64(..).to_string() });
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_keys_with_jwt() {
    let gw = Gateway::start(&limited_config(
        &format!(
            "      jwt: {{ keys: [{{ algorithm: HS256, secret: \"{SECRET}\" }}] }}\n      rate_limit: {{ limit: 2, per: 1m, key: \"claim:sub\" }}\n"
        ),
        "",
    ));
    let url = gw.url("/x");
    let bearer = |t: String| format!("Bearer {t}");
    // Every request with a fresh token: the budget is the subject's, not the token's.
    for _ in 0..2 {
        let t = bearer(token(claims_for(Some("alice"))));
        assert_eq!(call(&url, &[("authorization", &t)]).await.status, 200);
    }
    let t = bearer(token(claims_for(Some("alice"))));
    assert_limited(&call(&url, &[("authorization", &t)]).await, 2);
    for _ in 0..2 {
        let t = bearer(token(claims_for(Some("bob"))));
        assert_eq!(call(&url, &[("authorization", &t)]).await.status, 200);
    }
    let t = bearer(token(claims_for(Some("bob"))));
    assert_limited(&call(&url, &[("authorization", &t)]).await, 2);

    // Tokens without the claim are limited too (by client address), not let through.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let t = bearer(token(claims_for(None)));
        outcomes.push(call(&url, &[("authorization", &t)]).await.status.as_u16());
    }
    assert_eq!(outcomes, [200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_survive_a_config_reload() {
    let plugins = "      rate_limit: { limit: 5, per: 1m, key: ip }\n";
    let v1 = limited_config(plugins, "").replace("watch_interval: 200ms", "watch_interval: 0s");
    let gw = Gateway::start(&v1);
    let url = gw.url("/x");
    for expect in [4, 3, 2] {
        let got = call(&url, &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(num(&got, "ratelimit-remaining"), expect);
    }

    let extra = "  - name: other\n    match: { path_prefix: /other }\n    direct_response: { status: 200, body: \"other\" }\n";
    gw.write_config(
        &limited_config(plugins, extra).replace("watch_interval: 200ms", "watch_interval: 0s"),
    );
    let reload = gw.reload().await;
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    let got = call(&gw.url("/other"), &[]).await;
    assert_eq!(&got.body[..], b"other", "the new config serves");

    // The counter went on where it was: 1, 0, then 429.
    for expect in [1, 0] {
        let got = call(&url, &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(num(&got, "ratelimit-remaining"), expect);
    }
    assert_limited(&call(&url, &[]).await, 5);
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A `redis-server` on a loopback port, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    async fn start() -> Redis {
        let port = StdListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tmp"),
        };
        r.restart().await;
        r
    }

    /// (Re)starts the server on its port and waits until it answers.
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let ok = eventually(Duration::from_secs(10), async || {
            self.cli(&["ping"]).trim() == "PONG"
        })
        .await;
        assert!(ok, "redis-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of every series of a counter on /metrics.
async fn counter_sum(gw: &Gateway, name: &str) -> f64 {
    metric_sum(&metrics_text(gw).await, name, &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limit_is_shared_by_three_gateways_and_accurate() {
    const LIMIT: u64 = 100;
    const PER_MS: u64 = 1000;
    const DRIVE: Duration = Duration::from_secs(3);
    let redis = Redis::start().await;
    let yaml = limited_config(
        &format!(
            "      rate_limit: {{ limit: {LIMIT}, per: 1s, burst: 0, key: ip, policy: redis, redis: {{ url: \"{}\", timeout: 2s }} }}\n",
            redis.url()
        ),
        "",
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&yaml)).collect();

    let passed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + DRIVE;
    let mut tasks = Vec::new();
    for gw in &gws {
        let client = h1_client();
        for _ in 0..6 {
            let (client, url) = (client.clone(), gw.url("/x"));
            let (passed, refused) = (passed.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let got = send(
                        &client,
                        req("GET", &url).body(Full::default()).expect("req"),
                    )
                    .await;
                    match got.status.as_u16() {
                        200 => passed.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&got.body)),
                    };
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("driver");
    }
    let elapsed = started.elapsed();
    // Right away, while the key lives: one key for the one client, whichever gateway asked.
    let keys = redis.cli(&["--scan", "--pattern", "portcullis:rl:*"]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();

    let passed = passed.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    // GCRA from idle: limit + burst at once, then one per per/limit.
    let expected = LIMIT + elapsed.as_millis() as u64 * LIMIT / PER_MS;
    let tolerance = expected as f64 * 0.05;
    eprintln!(
        "redis accuracy: {passed} passed, {refused} refused in {elapsed:?}; expected {expected}"
    );
    assert!(
        (passed as f64 - expected as f64).abs() <= tolerance,
        "{passed} passed, expected {expected} ± 5% ({refused} refused, {elapsed:?})"
    );
    assert!(
        passed + refused >= 3 * expected,
        "the gateways were not driven hard enough: {} requests",
        passed + refused
    );
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(":127.0.0.1"), "{keys:?}");
    for gw in &gws {
        assert_eq!(
            counter_sum(gw, "portcullis_rate_limit_redis_errors_total").await,
            0.0,
            "every decision was Redis's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_allow_and_deny_then_recovery() {
    let mut redis = Redis::start().await;
    let rl = |on_failure: &str| {
        format!(
            "      rate_limit: {{ limit: 3, per: 1m, key: ip, policy: redis, on_failure: {on_failure}, redis: {{ url: \"{}\", timeout: 1s }} }}\n",
            redis.url()
        )
    };
    let yaml = config(&format!(
        "routes:\n  - name: open\n    match: {{ path_prefix: /open }}\n    direct_response: {{ status: 200, body: \"ok\" }}\n    plugins:\n{}  - name: closed\n    match: {{ path_prefix: /closed }}\n    direct_response: {{ status: 200, body: \"ok\" }}\n    plugins:\n{}",
        rl("allow"),
        rl("deny"),
    ));
    let gw = Gateway::start(&yaml);
    let open = gw.url("/open");
    let closed = gw.url("/closed");

    // Enforced while Redis is up.
    for _ in 0..3 {
        assert_eq!(call(&open, &[]).await.status, 200);
    }
    assert_limited(&call(&open, &[]).await, 3);
    assert_eq!(call(&closed, &[]).await.status, 200);
    assert_eq!(
        counter_sum(&gw, "portcullis_rate_limit_redis_errors_total").await,
        0.0
    );

    redis.kill();
    let errors_before = counter_sum(&gw, "portcullis_rate_limit_redis_errors_total").await;
    let outage = Instant::now();
    // on_failure: allow — requests pass, quickly (no hang on a dead Redis).
    for i in 0..20 {
        let t = Instant::now();
        let got = call(&open, &[]).await;
        assert_eq!(got.status, 200, "request {i} with Redis down");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    // Many at once while it is down: they do not queue behind reconnects, each paying the
    // 1 s decision timeout; Redis counts as down and is retried by one decision a second.
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let open = open.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                (call(&open, &[]).await.status, t.elapsed())
            })
        })
        .collect();
    let mut quick = 0;
    for task in burst {
        let (status, took) = task.await.expect("task");
        assert_eq!(status, 200);
        quick += usize::from(took < Duration::from_millis(500));
    }
    assert!(
        quick >= 28,
        "only {quick} of 30 decisions answered without waiting"
    );
    // on_failure: deny — refused, quickly.
    for i in 0..5 {
        let t = Instant::now();
        let got = call(&closed, &[]).await;
        assert_eq!(got.status, 429, "request {i}");
        assert_eq!(got.json()["error"]["code"], "rate_limited");
        assert!(
            got.header("retry-after").is_some(),
            "429 comes with Retry-After"
        );
        assert_eq!(got.header("ratelimit-limit"), Some("3"));
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    let errors = counter_sum(&gw, "portcullis_rate_limit_redis_errors_total").await;
    assert!(
        errors >= errors_before + 55.0,
        "redis errors went from {errors_before} to {errors}"
    );
    // Counted against the route whose decision failed.
    let text = metrics_text(&gw).await;
    let scoped = |route: &str| {
        metric_sum(
            &text,
            "portcullis_rate_limit_redis_errors_total",
            &[("scope", route)],
        )
        .unwrap_or(0.0)
    };
    assert!(scoped("open") >= 20.0, "{text}");
    assert!((5.0..20.0).contains(&scoped("closed")), "{text}");
    // Logged once, not per request.
    let warned = |gw: &Gateway| {
        gw.log_lines()
            .iter()
            .filter(|l| l.contains("Redis unavailable"))
            .count()
    };
    assert!(gw.wait_for_log("Redis unavailable", Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    if outage.elapsed() < Duration::from_secs(10) {
        assert_eq!(warned(&gw), 1, "{}", gw.logs());
    }

    // Redis back on the same port (empty): limits are enforced again.
    redis.restart().await;
    let enforced = eventually(Duration::from_secs(15), async || {
        let got = call(&open, &[]).await;
        got.status == 429 && got.header("ratelimit-limit") == Some("3")
    })
    .await;
    assert!(enforced, "limits not enforced after Redis came back");
    let recovered = eventually(Duration::from_secs(5), async || {
        call(&closed, &[]).await.status == 200
    })
    .await;
    assert!(
        recovered,
        "on_failure: deny still refusing after Redis came back"
    );
    assert!(
        !redis
            .cli(&["--scan", "--pattern", "portcullis:rl:*"])
            .trim()
            .is_empty(),
        "decisions are in Redis again"
    );
}
