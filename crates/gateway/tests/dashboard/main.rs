//! The dashboard in a real browser (Debian's headless chromium through chromedriver) against
//! the real gateway binary and real upstreams: live state, a target killed, the token prompt,
//! 10,000 routes, escaping, and the admin stream it reads. Screenshots of each page go to
//! `$CARGO_TARGET_DIR/ui-screenshots/`.

#[path = "../e2e/harness.rs"]
mod harness;
#[path = "../e2e/stores.rs"]
mod stores;
mod webdriver;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use webdriver::Browser;

const XSS: &str = "<img src=x onerror=alert(1)>";

/// A `portcullis echo` upstream in its own process, so killing it closes every connection.
struct EchoProcess {
    child: Child,
    address: String,
}

impl EchoProcess {
    fn start() -> EchoProcess {
        let mut child = Command::new(bin())
            .args(["echo", "--listen", "127.0.0.1:0"])
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo");
        let err = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(err).lines();
        let address = loop {
            let line = lines.next().expect("echo exited").expect("read echo log");
            if let Some(i) = line.find("address=") {
                let rest = &line[i + "address=".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        EchoProcess { child, address }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ui_config(a: &str, b: &str, extra: &str) -> String {
    config(&format!(
        r#"upstreams:
  app:
    targets: [{{ address: "{a}" }}, {{ address: "{b}" }}]
    health_check:
      active: {{ path: /healthz, interval: 200ms, timeout: 300ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: app
    slo: {{ success_rate: 99.9, p99: 300ms }}
  - name: "{XSS}"
    match: {{ path: /xss }}
    upstream: app
{extra}"#
    ))
}

async fn traffic(gw: &Gateway, n: usize) {
    for i in 0..n {
        let path = if i % 5 == 0 { "/xss" } else { "/api/x" };
        let got = get(&gw.url(path)).await;
        assert!(got.status.is_success(), "{path}: {}", got.status);
    }
}

/// Asserts the page met no error (its own hook and the browser console).
async fn no_errors(b: &Browser, page: &str) {
    no_errors_but(b, page, &[]).await;
}

/// `no_errors`, allowing console lines that contain one of `expected`.
async fn no_errors_but(b: &Browser, page: &str, expected: &[&str]) {
    let own = b
        .js("return window.__ptErrors || ['no hook'];", json!([]))
        .await;
    assert_eq!(own, json!([]), "page errors on {page}");
    let console: Vec<String> = b
        .console_errors()
        .await
        .into_iter()
        .filter(|l| !expected.iter().any(|e| l.contains(e)))
        .collect();
    assert!(console.is_empty(), "console errors on {page}: {console:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_show_live_state_and_a_killed_target_turns_unhealthy() {
    if !webdriver::available() {
        panic!("chromium and chromedriver are required (apt-get install chromium chromium-driver)");
    }
    let a = EchoProcess::start();
    let mut b = EchoProcess::start();
    let gw = Gateway::start(&ui_config(&a.address, &b.address, ""));
    traffic(&gw, 50).await;

    // The page itself: strict CSP, no data in it.
    let page = get(&gw.admin_url("/ui/")).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let br = Browser::start().await;
    br.goto(&gw.admin_url("/ui/")).await;
    br.wait_for(
        "overview",
        Duration::from_secs(10),
        "return document.querySelector('#main .cards') && document.getElementById('live').textContent === 'live';",
    )
    .await;
    // Traffic while the page watches, so the live figures move.
    traffic(&gw, 30).await;
    br.wait_for(
        "a live rate",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('.card')].some(c => /req\\/s/.test(c.textContent) && !/^0 req/.test(c.querySelector('.v').textContent));",
    )
    .await;
    let text = br
        .js(
            "return document.getElementById('main').textContent;",
            json!([]),
        )
        .await;
    let text = text.as_str().unwrap_or("");
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("Routes"), "{text}");
    br.screenshot("overview").await;
    no_errors(&br, "overview").await;

    // Routes: both appear; the script-like name is text, not an element.
    br.goto(&gw.admin_url("/ui/#/routes")).await;
    let names = br
        .wait_for(
            "route rows",
            Duration::from_secs(5),
            "const r = [...document.querySelectorAll('#route-list .vrow .name')].map(e => e.textContent); return r.length >= 2 ? r : null;",
        )
        .await;
    assert!(
        names
            .as_array()
            .is_some_and(|n| n.contains(&json!("api")) && n.contains(&json!(XSS))),
        "{names}"
    );
    let imgs = br
        .js(
            "return document.querySelectorAll('#main img').length;",
            json!([]),
        )
        .await;
    assert_eq!(imgs, json!(0), "the route name became markup");
    br.screenshot("routes").await;

    // Route detail with its charts.
    br.goto(&gw.admin_url("/ui/#/routes/api")).await;
    br.wait_for(
        "route detail",
        Duration::from_secs(5),
        "return document.querySelectorAll('.chart svg').length === 3;",
    )
    .await;
    traffic(&gw, 20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    br.screenshot("route-detail").await;
    br.goto(&gw.admin_url(&format!("/ui/#/routes/{}", XSS.replace(' ', "%20"))))
        .await;
    let h1 = br
        .wait_for(
            "xss detail",
            Duration::from_secs(5),
            "const h = document.querySelector('#main h1'); return h && h.textContent;",
        )
        .await;
    assert_eq!(h1, json!(XSS));
    assert_eq!(
        br.js(
            "return document.querySelectorAll('#main img').length;",
            json!([])
        )
        .await,
        json!(0)
    );
    no_errors(&br, "routes").await;

    // Upstreams: both targets healthy; one killed turns unhealthy without a reload.
    br.goto(&gw.admin_url("/ui/#/upstreams")).await;
    let health_of = format!(
        "const r = document.querySelector('tr[data-target=\"{}\"]'); return r && r.children[1].textContent;",
        b.address
    );
    let h = br
        .wait_for("targets", Duration::from_secs(5), &health_of)
        .await;
    assert_eq!(h, json!("healthy"));
    br.js("window.__sameDocument = true;", json!([])).await;
    br.screenshot("upstreams").await;
    b.kill();
    let killed = Instant::now();
    let unhealthy = format!(
        "const r = document.querySelector('tr[data-target=\"{}\"]'); return r && r.children[1].textContent === 'unhealthy' && r.querySelector('.badge.bad') !== null;",
        b.address
    );
    br.wait_for(
        "the killed target unhealthy",
        Duration::from_secs(3),
        &unhealthy,
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(
        br.js("return window.__sameDocument === true;", json!([]))
            .await,
        json!(true),
        "the page was reloaded"
    );
    eprintln!("killed target shown unhealthy after {took:?}");
    br.screenshot("upstreams-target-down").await;
    no_errors(&br, "upstreams").await;

    // Every page renders without an error.
    for p in ["topology", "slo", "policies", "history", "edit"] {
        br.goto(&gw.admin_url(&format!("/ui/#/{p}"))).await;
        br.wait_for(
            p,
            Duration::from_secs(5),
            "const h = document.querySelector('#main h1'); return h && h.textContent;",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        br.screenshot(p).await;
        if p == "slo" {
            let row = br
                .wait_for("the api SLO", Duration::from_secs(5), "const r = document.querySelector('#slo-table tr[data-route=\"api\"]'); return r && r.textContent;")
                .await;
            assert!(row.as_str().unwrap_or("").contains("met"), "{row}");
        }
        if p == "policies" {
            // Shown when the endpoint answers, a clear "not available" while it does not.
            let shown = br
                .wait_for("policies or their absence", Duration::from_secs(5), "const n = document.getElementById('policies-unavailable'); return (n && n.textContent) || document.getElementById('policies-table') || /No policies/.test(document.getElementById('main').textContent);")
                .await;
            assert!(shown != json!(false), "{shown}");
            no_errors_but(&br, p, &["/admin/policies - Failed to load resource: the server responded with a status of 404"]).await;
        } else {
            no_errors(&br, p).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_asked_for_and_nothing_shows_without_it() {
    let a = EchoProcess::start();
    let b = EchoProcess::start();
    let gw = Gateway::start_env(
        &ui_config(&a.address, &b.address, "").replace(
            "admin:\n  address: 127.0.0.1:0\n",
            "admin:\n  address: 127.0.0.1:0\n  token: ${UI_TOKEN}\n",
        ),
        &[("UI_TOKEN", "s3cret-token")],
    );
    // The stream is protected like every admin endpoint.
    assert_eq!(get(&gw.admin_url("/admin/stream")).await.status, 401);

    let br = Browser::start().await;
    br.goto(&gw.admin_url("/ui/")).await;
    br.wait_for(
        "the prompt",
        Duration::from_secs(5),
        "return !document.getElementById('login').hidden;",
    )
    .await;
    let shown = br
        .js("return {main: document.getElementById('main').hidden, nav: document.getElementById('nav').hidden, text: document.getElementById('main').textContent};", json!([]))
        .await;
    assert_eq!(shown, json!({"main": true, "nav": true, "text": ""}));
    br.screenshot("token-prompt").await;

    let sign_in = "document.getElementById('token').value = arguments[0]; document.getElementById('login-form').requestSubmit();";
    br.js(sign_in, json!(["wrong"])).await;
    let msg = br
        .wait_for(
            "refusal",
            Duration::from_secs(5),
            "return document.getElementById('login-error').textContent;",
        )
        .await;
    assert!(msg.as_str().unwrap_or("").contains("refused"), "{msg}");
    assert_eq!(
        br.js("return document.getElementById('main').hidden;", json!([]))
            .await,
        json!(true)
    );

    br.js(sign_in, json!(["s3cret-token"])).await;
    br.wait_for(
        "overview after sign-in",
        Duration::from_secs(5),
        "return document.querySelector('#main .cards') && document.getElementById('live').textContent === 'live';",
    )
    .await;
    br.screenshot("signed-in").await;
    // The browser logs the refused calls made before and with the wrong token.
    no_errors_but(&br, "signed in", &["status of 401"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_routes_list_and_search_within_two_seconds() {
    let a = EchoProcess::start();
    let b = EchoProcess::start();
    let mut extra = String::with_capacity(10_000 * 90);
    for i in 0..9_998 {
        extra.push_str(&format!(
            "  - name: svc-{i:05}\n    match: {{ path_prefix: /svc/{i:05} }}\n    upstream: app\n"
        ));
    }
    // Parsing 10,000 routes takes seconds on a debug build of a busy machine.
    let gw = Gateway::start_within(
        &ui_config(&a.address, &b.address, &extra),
        |_| {},
        &[],
        Duration::from_secs(120),
    );
    let br = Browser::start().await;
    br.goto(&gw.admin_url("/ui/#/overview")).await;
    br.wait_for(
        "overview",
        Duration::from_secs(10),
        "return document.querySelector('#main .cards');",
    )
    .await;
    // The page fetches the route list in the background once it is up; how long the admin API
    // takes to answer it (a debug build here) is reported, the page's own work is timed.
    br.wait_for(
        "the route list fetched",
        Duration::from_secs(60),
        "return window.__ptRoutes === 10000;",
    )
    .await;
    let fetch_ms = br
        .js("const e = performance.getEntriesByType('resource').find(e => e.name.endsWith('/admin/routes')); return e ? e.duration : null;", json!([]))
        .await;

    let started = Instant::now();
    br.js("location.hash = '#/routes';", json!([])).await;
    br.wait_for(
        "10,000 routes listed",
        Duration::from_secs(2),
        "const c = document.getElementById('route-count'); return c && c.textContent === '10000 of 10000' && document.querySelectorAll('#route-list .vrow').length > 10;",
    )
    .await;
    let listed = started.elapsed();

    let started = Instant::now();
    br.js(
        "const s = document.getElementById('route-search'); s.value = 'svc-07321'; s.dispatchEvent(new Event('input'));",
        json!([]),
    )
    .await;
    let first = br
        .wait_for(
            "search answer",
            Duration::from_secs(2),
            "const c = document.getElementById('route-count'); return c && c.textContent === '1 of 10000' && document.querySelector('#route-list .vrow .name').textContent;",
        )
        .await;
    let searched = started.elapsed();
    assert_eq!(first, json!("svc-07321"));
    // The DOM holds a window of rows, not 10,000.
    br.js("const s = document.getElementById('route-search'); s.value = ''; s.dispatchEvent(new Event('input'));", json!([])).await;
    let rows = br
        .wait_for("all again", Duration::from_secs(2), "const c = document.getElementById('route-count'); return c.textContent === '10000 of 10000' && document.querySelectorAll('#route-list .vrow').length;")
        .await;
    assert!(
        rows.as_u64().is_some_and(|n| n < 200),
        "{rows} rows in the DOM"
    );
    eprintln!(
        "10,000 routes: GET /admin/routes {fetch_ms} ms, listed in {listed:?}, search answered in {searched:?}"
    );
    br.screenshot("routes-10000").await;
    no_errors(&br, "10,000 routes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_and_series_carry_one_second_figures() {
    let a = EchoProcess::start();
    let b = EchoProcess::start();
    let gw = Gateway::start(&ui_config(&a.address, &b.address, ""));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    traffic(&gw, 40).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // The stream replays the kept seconds first: raw SSE over curl.
    let (code, out, err) = curl(&["-sN", "-m", "3", &gw.admin_url("/admin/stream?backfill=10")]);
    assert!(code == 0 || code == 28, "curl {code}: {err}");
    let frames: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("frame JSON"))
        .collect();
    assert!(out.contains("event: sample"), "{out}");
    assert!(frames.len() >= 3, "{out}");
    let api_requests: f64 = frames
        .iter()
        .filter_map(|f| f["routes"]["api"]["rate"].as_f64())
        .sum();
    assert!(
        (31.0..=33.0).contains(&api_requests),
        "api requests in the frames: {api_requests}"
    );
    let with_xss = frames
        .iter()
        .find(|f| f["routes"][XSS].is_object())
        .expect("xss route frame");
    assert!(
        with_xss["routes"][XSS]["p99_ms"]
            .as_f64()
            .is_some_and(|p| p > 0.0),
        "{with_xss}"
    );
    let targets = frames.last().expect("frame")["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(targets.len(), 2);
    assert!(
        targets
            .iter()
            .all(|t| t["health"] == "healthy" && t["upstream"] == "app")
    );

    let s = get(&gw.admin_url("/admin/series?route=api")).await.json();
    let pts = s["points"].as_array().expect("points");
    assert!(pts.len() >= 3);
    let sum: f64 = pts.iter().filter_map(|p| p["rate"].as_f64()).sum();
    assert!((31.0..=33.0).contains(&sum), "{s}");
    let t = get(&gw.admin_url(&format!("/admin/series?upstream=app&target={}", a.address)))
        .await
        .json();
    assert!(
        t["points"]
            .as_array()
            .is_some_and(|p| !p.is_empty() && p[0]["health"] == "healthy"),
        "{t}"
    );
    let bad = get(&gw.admin_url("/admin/series")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");

    let st = get(&gw.admin_url("/admin/status")).await.json();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["totals"]["routes"], 2);
    assert_eq!(st["totals"]["targets"], 2);
    assert_eq!(st["totals"]["requests"], 40);
    assert!(st["config"]["hash"].as_str().is_some_and(|h| !h.is_empty()));
}

/// Runs `portcullis config push` of `yaml` to the store under `/fleet`.
fn push(etcd: &stores::Etcd, yaml: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("shared.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(bin())
        .args(["config", "push", "-c"])
        .arg(&path)
        .env("PORTCULLIS_ETCD", etcd.url())
        .env("PORTCULLIS_ETCD_PREFIX", "/fleet")
        .env("USER", "ci-bot")
        .output()
        .expect("run portcullis config push");
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shared(body: &str, upstream: &str) -> String {
    format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{upstream}\" }}]\nroutes:\n  - name: hello\n    match: {{ path: /hello }}\n    direct_response: {{ status: 200, body: \"{body}\" }}\n  - name: app\n    match: {{ path_prefix: /app }}\n    upstream: app\n"
    )
}

async fn serves(gw: &Gateway, path: &str, want: &str) -> bool {
    eventually(Duration::from_secs(10), async || {
        String::from_utf8_lossy(&get(&gw.url(path)).await.body) == want
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_an_edit_through_the_page_applies_and_a_stale_one_is_refused() {
    let etcd = stores::Etcd::start();
    let a = EchoProcess::start();
    push(&etcd, &shared("v1", &a.address));
    let gw = Gateway::start(&format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nconfig_source:\n  etcd:\n    endpoints: [\"{}\"]\n    prefix: /fleet\n    cache: shared-cache.yaml\n",
        etcd.url()
    ));
    assert!(serves(&gw, "/hello", "v1").await);

    let br = Browser::start().await;
    // The overview lists the fleet's nodes with their generation.
    br.goto(&gw.admin_url("/ui/#/overview")).await;
    br.wait_for("fleet table", Duration::from_secs(10), "return [...document.querySelectorAll('#main td')].some(td => td.textContent === 'in sync');").await;
    br.screenshot("overview-etcd").await;

    br.goto(&gw.admin_url("/ui/#/edit/routes/hello")).await;
    let text = br
        .wait_for(
            "the route as YAML",
            Duration::from_secs(10),
            "const t = document.getElementById('edit-yaml'); return t && t.value;",
        )
        .await;
    assert!(text.as_str().unwrap_or("").contains("\"v1\""), "{text}");
    let set_yaml = "const t = document.getElementById('edit-yaml'); t.value = t.value.replace(arguments[0], arguments[1]); t.dispatchEvent(new Event('input'));";
    let click = "document.getElementById(arguments[0]).click();";

    // An invalid change: refused by the gateway's validation, with the reason.
    br.js(
        set_yaml,
        json!(["direct_response", "upstream: nosuch\ndirect_response"]),
    )
    .await;
    br.js(click, json!(["edit-preview"])).await;
    let refusal = br
        .wait_for(
            "the refusal",
            Duration::from_secs(10),
            "const e = document.getElementById('edit-invalid'); return e && e.textContent;",
        )
        .await;
    assert!(
        refusal
            .as_str()
            .unwrap_or("")
            .contains("nothing was written"),
        "{refusal}"
    );
    assert_eq!(
        br.js(
            "return document.getElementById('edit-apply').disabled;",
            json!([])
        )
        .await,
        json!(true)
    );
    br.js(
        set_yaml,
        json!(["upstream: nosuch\ndirect_response", "direct_response"]),
    )
    .await;

    // A valid change: previewed as a diff, then applied and served.
    br.js(set_yaml, json!(["\"v1\"", "\"v2 from the page\""]))
        .await;
    br.js(click, json!(["edit-preview"])).await;
    let diff = br
        .wait_for(
            "the diff",
            Duration::from_secs(10),
            "const d = document.querySelector('#edit-diff pre'); return d && d.textContent;",
        )
        .await;
    assert!(
        diff.as_str().unwrap_or("").contains("v2 from the page"),
        "{diff}"
    );
    assert!(
        serves(&gw, "/hello", "v1").await,
        "a preview must not write"
    );
    br.screenshot("edit-preview").await;
    br.js(click, json!(["edit-apply"])).await;
    let done = br.wait_for("applied", Duration::from_secs(10), "const r = document.getElementById('edit-result'); return r && /Applied/.test(r.textContent) && r.textContent;").await;
    assert!(
        done.as_str().unwrap_or("").contains("generation 2"),
        "{done}"
    );
    assert!(serves(&gw, "/hello", "v2 from the page").await);
    let h = get(&gw.admin_url("/admin/config/history")).await.json();
    assert_eq!(h["entries"][0]["author"], "dashboard");
    assert_eq!(h["entries"][0]["via"], "admin");

    // Someone else changes the store; the page's edit (made at generation 2) is refused.
    push(&etcd, &shared("v3 from the CLI", &a.address));
    assert!(serves(&gw, "/hello", "v3 from the CLI").await);
    br.js(set_yaml, json!(["v2 from the page", "v4 stale"]))
        .await;
    br.js(click, json!(["edit-preview"])).await;
    let stale = br
        .wait_for(
            "the stale refusal",
            Duration::from_secs(10),
            "const e = document.getElementById('edit-stale'); return e && e.textContent;",
        )
        .await;
    let stale = stale.as_str().unwrap_or("").to_owned();
    assert!(
        stale.contains("changed since you loaded it") && stale.contains("generation 3"),
        "{stale}"
    );
    br.screenshot("edit-stale").await;
    assert!(serves(&gw, "/hello", "v3 from the CLI").await);
    no_errors_but(&br, "edit", &["status of 412", "status of 422"]).await;

    // The history page shows the page's change with its author and diff.
    br.goto(&gw.admin_url("/ui/#/history/2")).await;
    let d = br
        .wait_for(
            "history diff",
            Duration::from_secs(10),
            "const d = document.querySelector('#history-detail pre'); return d && d.textContent;",
        )
        .await;
    assert!(d.as_str().unwrap_or("").contains("v2 from the page"), "{d}");
    br.screenshot("history-etcd").await;
}
