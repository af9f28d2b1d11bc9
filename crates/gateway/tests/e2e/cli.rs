//! The commands: run, validate, echo, version, exit codes.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

#[test]
fn version_prints_the_version() {
    let out = Command::new(bin()).arg("version").output().expect("run");
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("portcullis 0."), "{s}");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(bin()).arg("frobnicate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin()).arg("validate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_accepts_a_good_config() {
    let (code, out, err) = validate(&config(
        "upstreams:\n  u:\n    targets: [{ address: \"127.0.0.1:1\" }]\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: u\n",
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 routes, 1 upstreams"), "{out}");
}

#[test]
fn validate_names_file_line_column_and_field_for_every_problem() {
    let (code, _, err) = validate(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    upstream: missing\n  - name: b\n    match:\n      path_prefx: /b\n    direct_response: { status: 200 }\n",
    );
    assert_eq!(code, 1, "{err}");
    // serde stops at the first structural error; the unknown key is the one reported.
    assert!(err.contains("gw.yaml:10:7: routes[1].match"), "{err}");
    assert!(err.contains("unknown field `path_prefx`"), "{err}");

    let (code, _, err) = validate(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    upstream: missing\n  - name: a\n    match: { path_prefix: /b }\n    timeout: forever\n    direct_response: { status: 200 }\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        err.contains("gw.yaml:7:5: routes[0].upstream: unknown upstream `missing`"),
        "{err}"
    );
    assert!(
        err.contains("gw.yaml:8:5: routes[1].name: route name `a` is already used"),
        "{err}"
    );
    assert!(
        err.contains("gw.yaml:10:5: routes[1].timeout: invalid duration `forever`"),
        "{err}"
    );
}

#[test]
fn validate_runs_lint_policies() {
    // Errors: shadowed route, TLS below 1.2, exposed admin without token.
    let (code, _, err) = validate(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nadmin: { address: 0.0.0.0:9901 }\nroutes:\n  - name: all\n    match: { path_prefix: / }\n    direct_response: { status: 200 }\n  - name: never\n    match: { path_prefix: /x }\n    direct_response: { status: 200 }\n    priority: -1\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("route `never` can never match"), "{err}");
    assert!(err.contains("needs a `token`"), "{err}");
    // Warnings: insecure upstream TLS and an auth plugin on a route without exact hosts; exit 0.
    let (code, out, err) = validate(&config(
        "upstreams:\n  u:\n    targets: [{ address: \"127.0.0.1:1\" }]\n    tls: { insecure_skip_verify: true }\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: u\n",
    ));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning[insecure-upstream-tls]"), "{err}");
    assert!(out.contains("1 warnings"), "{out}");
}

#[test]
fn validate_checks_plugin_configs_and_certificates() {
    let (code, _, err) = validate(&config(
        "routes:\n  - name: r\n    match: { path_prefix: / }\n    direct_response: { status: 200 }\n    plugins:\n      request_termination: { status: 42 }\n      no_such_plugin: {}\n",
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains("routes[0].plugins.request_termination.status: not an HTTP status"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].plugins.no_such_plugin: unknown plugin `no_such_plugin`"),
        "{err}"
    );
}

#[test]
fn echo_command_serves_json() {
    let mut child = Command::new(bin())
        .args(["echo", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("echo");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines.next().expect("a log line").expect("utf8");
        if let Some(i) = line.find("address=") {
            break line[i + 8..].trim().to_owned();
        }
    };
    let (code, body, _) = curl(&["-d", "hello", &format!("http://{addr}/x?y=1")]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["query"], "y=1");
    assert_eq!(v["body_length"], 5);
}

#[test]
fn run_without_config_serves_the_quick_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(bin())
        .arg("run")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining so the gateway never writes into a closed pipe.
        for l in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut text = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(20)) {
        text.push_str(&l);
        text.push('\n');
        if l.contains("curl http://127.0.0.1:9901/metrics") {
            break;
        }
    }
    assert!(text.contains("quick-start is running"), "{text}");
    let (code, body, _) = curl(&["http://127.0.0.1:8080/hello"]);
    let (_, echoed, _) = curl(&["http://127.0.0.1:8080/api/users/7"]);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert_eq!(code, 0);
    assert_eq!(body, "hello from portcullis\n");
    let v: serde_json::Value = serde_json::from_str(&echoed).expect("json");
    assert_eq!(v["path"], "/users/7");
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
}
