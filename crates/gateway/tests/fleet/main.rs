//! The fleet config plane end to end: real `etcd` processes, three real gateways, the real
//! `portcullis config` CLI and `etcdctl`, real upstreams and clients, all on loopback.

#[path = "../e2e/harness.rs"]
mod harness;
#[path = "../e2e/stores.rs"]
mod stores;

mod admin;
mod convergence;
mod failures;
mod gitops;

use std::process::Command;
use std::time::Duration;

use harness::*;
use stores::Etcd;

/// A node's file: one listener, admin, the shared part from `etcd` under `prefix`, a cache.
pub fn node_yaml(etcd: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nconfig_source:\n  etcd:\n    endpoints: [\"{etcd}\"]\n    prefix: /fleet\n    cache: shared-cache.yaml\n{extra}"
    )
}

/// A shared config: `/hello` answers `body`, `/app` goes to `upstream`.
pub fn shared(body: &str, upstream: &str) -> String {
    format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{upstream}\" }}]\nroutes:\n  - name: hello\n    match: {{ path: /hello }}\n    direct_response: {{ status: 200, body: \"{body}\" }}\n  - name: app\n    match: {{ path_prefix: /app }}\n    upstream: app\n"
    )
}

/// Runs `portcullis config ARGS` with the store under `/fleet`: (exit code, stdout, stderr).
pub fn config_cmd(etcd: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("config")
        .args(args)
        .env("PORTCULLIS_ETCD", etcd)
        .env("PORTCULLIS_ETCD_PREFIX", "/fleet")
        .env("USER", "ci-bot")
        .output()
        .expect("run portcullis config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `yaml` to a temp file and runs `config push -c FILE ARGS`.
pub fn push(etcd: &Etcd, yaml: &str, args: &[&str]) -> (i32, String, String) {
    with_file(yaml, |f| {
        let mut a = vec!["push", "-c", f];
        a.extend_from_slice(args);
        config_cmd(&etcd.url(), &a)
    })
}

/// Writes `yaml` to a temp file and runs `config diff -c FILE`.
pub fn diff(etcd: &Etcd, yaml: &str) -> (i32, String, String) {
    with_file(yaml, |f| config_cmd(&etcd.url(), &["diff", "-c", f]))
}

/// Runs `f` with the path of a temp file holding `yaml`.
pub fn with_file<T>(yaml: &str, f: impl FnOnce(&str) -> T) -> T {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("shared.yaml");
    std::fs::write(&path, yaml).expect("write");
    f(path.to_str().expect("utf-8 path"))
}

/// Pushes and asserts success.
pub fn push_ok(etcd: &Etcd, yaml: &str, args: &[&str]) {
    let (code, out, err) = push(etcd, yaml, args);
    assert_eq!(code, 0, "push failed:\n{out}\n{err}");
}

/// The body of `GET url` as text, or `None` when the request failed.
pub async fn body(url: &str) -> Option<String> {
    let resp = h1_client()
        .request(
            req("GET", url)
                .body(http_body_util::Full::default())
                .expect("request"),
        )
        .await
        .ok()?;
    let got = collect(resp).await;
    Some(String::from_utf8_lossy(&got.body).into_owned())
}

/// Waits until every gateway answers `path` with `want`.
pub async fn all_serve(nodes: &[&Gateway], path: &str, want: &str, timeout: Duration) -> bool {
    eventually(timeout, async || {
        for n in nodes {
            if body(&n.url(path)).await.as_deref() != Some(want) {
                return false;
            }
        }
        true
    })
    .await
}

/// A metric's value on a gateway (sum over matching series; 0 when absent).
pub async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&metrics_text(gw).await, name, labels).unwrap_or(0.0)
}
