//! Admin writes (validated, `If-Match` honoured, 409 without etcd), the file-mode history
//! with git attribution, and `suspect_change` in `/admin/slo`.

use std::time::Duration;

use http_body_util::Full;
use serde_json::json;

use super::*;

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut b = req(method, url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        &h1_client(),
        b.body(Full::from(body.to_owned())).expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_are_validated_and_honour_if_match() {
    let etcd = Etcd::start();
    push_ok(&etcd, &shared("v1", "127.0.0.1:9"), &[]);
    let gw = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(all_serve(&[&gw], "/hello", "v1", Duration::from_secs(10)).await);
    let route =
        json!({"match": {"path": "/new"}, "direct_response": {"status": 200, "body": "new"}})
            .to_string();

    // Stale If-Match: 412 with the current generation.
    let got = call(
        "PUT",
        &gw.admin_url("/admin/routes/new"),
        &[("if-match", "0")],
        &route,
    )
    .await;
    assert_eq!(got.status, 412, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("etag"), Some("\"1\""));
    assert_eq!(got.json()["error"]["code"], "stale_generation");

    // Current If-Match: committed, served, attributed.
    let got = call(
        "PUT",
        &gw.admin_url("/admin/routes/new"),
        &[("if-match", "1"), ("x-portcullis-message", "add /new")],
        &route,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["generation"], 2);
    assert!(all_serve(&[&gw], "/new", "new", Duration::from_secs(5)).await);
    let (_, out, _) = config_cmd(&etcd.url(), &["history", "--json"]);
    let h: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(h[0]["author"], "admin");
    assert_eq!(h[0]["via"], "admin");
    assert_eq!(h[0]["message"], "add /new");

    // A change that would make the config invalid: 422, nothing written.
    let bad = json!({"match": {"path": "/bad"}, "upstream": "nowhere"}).to_string();
    let got = call("PUT", &gw.admin_url("/admin/routes/bad"), &[], &bad).await;
    assert_eq!(got.status, 422);
    assert!(
        got.json()["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("etcd:/fleet/routes/bad")),
        "{}",
        got.json()
    );
    // Deleting an upstream a route uses: refused too.
    let got = call("DELETE", &gw.admin_url("/admin/upstreams/app"), &[], "").await;
    assert_eq!(got.status, 422);
    // Deleting the route: fine.
    let got = call(
        "DELETE",
        &gw.admin_url("/admin/routes/new"),
        &[("if-match", "2")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(
        eventually(Duration::from_secs(5), async || {
            body(&gw.url("/new"))
                .await
                .is_some_and(|b| b.contains("no_route"))
        })
        .await
    );
    // Secrets in objects are never shown: a plugin with a key.
    let plugin = json!({"consumers": [{"name": "team", "key": "s3cr3t-key"}]}).to_string();
    let got = call(
        "PUT",
        &gw.admin_url("/admin/plugins/key_auth"),
        &[],
        &plugin,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let entry = eventually(Duration::from_secs(5), async || {
        get(&gw.admin_url("/admin/config/history")).await.json()["entries"][0]["generation"] == 4
    })
    .await;
    assert!(entry);
    let detail = get(&gw.admin_url("/admin/config/history/4")).await;
    let cfg = get(&gw.admin_url("/admin/config")).await;
    for text in [&detail.body, &cfg.body] {
        assert!(!String::from_utf8_lossy(text).contains("s3cr3t-key"));
    }
    assert!(!gw.logs().contains("s3cr3t-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_writes_are_409_and_the_file_history_names_the_git_author() {
    let dir = tempfile::tempdir().expect("tmp");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args([
                "-c",
                "user.name=Ada Lovelace",
                "-c",
                "user.email=ada@example.com",
            ])
            .args(args)
            .output()
            .expect("git")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    let base = config(&shared("v1", "127.0.0.1:9"));
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, &base).expect("write");
    git(&["init", "-q"]);
    git(&["add", "gw.yaml"]);
    git(&["commit", "-q", "-m", "first routes"]);
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("PORTCULLIS_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let admin = wait_admin(&mut child);
    let url = |p: &str| format!("http://{admin}{p}");
    let got = call("PUT", &url("/admin/routes/x"), &[], "{}").await;
    assert_eq!(got.status, 409);
    assert_eq!(got.json()["error"]["code"], "read_only_config");
    let h = get(&url("/admin/config/history")).await.json();
    assert_eq!(h["entries"][0]["author"], "Ada Lovelace");
    assert_eq!(h["entries"][0]["message"], "first routes");
    assert_eq!(h["entries"][0]["via"], "file");

    std::fs::write(&path, config(&shared("v2", "127.0.0.1:9"))).expect("write");
    git(&["commit", "-q", "-am", "say v2"]);
    let ok = eventually(Duration::from_secs(5), async || {
        get(&url("/admin/config/history")).await.json()["entries"][0]["message"] == "say v2"
    })
    .await;
    assert!(ok, "{}", get(&url("/admin/config/history")).await.json());
    let h = get(&url("/admin/config/history")).await.json();
    assert_eq!(h["entries"][0]["generation"], 2);
    assert_eq!(h["entries"][0]["changes"][0], "~route hello");
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the child's log until the admin address shows up.
fn wait_admin(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("a log line").expect("utf-8");
        if line.contains("admin listening")
            && let Some(a) = line.split("address=").nth(1)
        {
            break a.split(' ').next().expect("addr").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_that_breaks_a_route_is_named_as_suspect_change() {
    let etcd = Etcd::start();
    let good = echo_upstream("good").await;
    let failing = upstream(|_req| async {
        http::Response::builder()
            .status(500)
            .body(Full::new(bytes::Bytes::from_static(b"boom")))
            .expect("response")
    })
    .await;
    let with_slo =
        |target: &str| format!("{}    slo: {{ success_rate: 99.0 }}\n", shared("v", target));
    push_ok(&etcd, &with_slo(&good.address()), &[]);
    let gw = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(all_serve(&[&gw], "/hello", "v", Duration::from_secs(10)).await);
    for _ in 0..30 {
        assert_eq!(get(&gw.url("/app/x")).await.status, 200);
    }
    let slo = get(&gw.admin_url("/admin/slo")).await.json();
    assert!(slo["routes"][0].get("suspect_change").is_none(), "{slo}");

    push_ok(
        &etcd,
        &with_slo(&failing.address()),
        &["--author", "mallory", "--message", "move app"],
    );
    let moved = eventually(Duration::from_secs(5), async || {
        get(&gw.url("/app/x")).await.status == 500
    })
    .await;
    assert!(moved);
    for _ in 0..30 {
        get(&gw.url("/app/x")).await;
    }
    let slo = get(&gw.admin_url("/admin/slo")).await.json();
    let s = &slo["routes"][0]["suspect_change"];
    assert_eq!(s["generation"], 2, "{slo}");
    assert_eq!(s["author"], "mallory");
    assert_eq!(s["message"], "move app");
    assert_eq!(s["changes"][0], "~upstream app");
    assert!(
        s["error_rate_after"].as_f64().is_some_and(|r| r > 0.5),
        "{slo}"
    );
    assert!(gw.wait_for_log("suspect change", Duration::from_secs(2)));
    get(&gw.admin_url("/admin/slo")).await;
    let once = gw
        .log_lines()
        .iter()
        .filter(|l| l.contains("suspect change"))
        .count();
    assert_eq!(once, 1);
}
