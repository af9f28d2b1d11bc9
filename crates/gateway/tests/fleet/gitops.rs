//! `portcullis config push|diff|pull|history|rollback` against a real etcd: exit codes for CI,
//! `pull | push` as a no-op, `--prune`, compare-and-swap refusals, history and rollback; and
//! node files that define what the store holds.

use std::time::Duration;

use super::*;

#[test]
fn diff_exit_codes_pull_push_noop_and_prune() {
    let etcd = Etcd::start();
    let v1 = shared("v1", "127.0.0.1:9");
    // Empty store: differs.
    let (code, out, _) = diff(&etcd, &v1);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("+ route hello: added"), "{out}");
    push_ok(&etcd, &v1, &[]);
    let (code, out, _) = diff(&etcd, &v1);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    // A field-level diff.
    let (code, out, _) = diff(&etcd, &shared("v2", "127.0.0.1:9"));
    assert_eq!(code, 3);
    assert!(
        out.contains("~ route hello: changed\n    direct_response.body: \"v1\" -> \"v2\""),
        "{out}"
    );
    assert!(out.contains("0 added, 1 changed, 0 removed"), "{out}");
    // Invalid input and an unreachable store: 1.
    assert_eq!(diff(&etcd, "routes: 7\n").0, 1);
    let (code, _, err) = with_file(&v1, |f| {
        config_cmd("http://127.0.0.1:1", &["diff", "-c", f])
    });
    assert_eq!(code, 1, "{err}");

    // pull | push is a no-op.
    let (code, pulled, err) = config_cmd(&etcd.url(), &["pull"]);
    assert_eq!(code, 0, "{err}");
    assert!(pulled.contains("name: \"hello\""), "{pulled}");
    let (code, out, _) = push(&etcd, &pulled, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to push"), "{out}");
    assert_eq!(diff(&etcd, &pulled).0, 0);

    // Objects only in the store are kept without --prune, removed with it.
    let extra = format!(
        "{}  - name: extra\n    match: {{ path: /extra }}\n    direct_response: {{ status: 204 }}\n",
        shared("v1", "127.0.0.1:9")
    );
    push_ok(&etcd, &extra, &[]);
    let (code, out, _) = push(&etcd, &v1, &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("route extra: only in the store, kept (--prune removes it)"),
        "{out}"
    );
    assert!(
        !etcd
            .ctl(&["get", "/fleet/routes/extra", "--print-value-only"])
            .1
            .is_empty()
    );
    let (code, out, _) = push(&etcd, &v1, &["--prune", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("- route extra: removed") && out.contains("dry run"),
        "{out}"
    );
    assert!(
        !etcd
            .ctl(&["get", "/fleet/routes/extra", "--print-value-only"])
            .1
            .is_empty()
    );
    push_ok(&etcd, &v1, &["--prune"]);
    assert!(
        etcd.ctl(&["get", "/fleet/routes/extra", "--print-value-only"])
            .1
            .trim()
            .is_empty()
    );
    assert_eq!(diff(&etcd, &v1).0, 0);
}

#[test]
fn compare_and_swap_history_and_rollback() {
    let etcd = Etcd::start();
    push_ok(
        &etcd,
        &shared("v1", "127.0.0.1:9"),
        &["--author", "alice", "--message", "first"],
    );
    push_ok(
        &etcd,
        &shared("v2", "127.0.0.1:9"),
        &["--message", "second"],
    );
    // A diff reviewed at generation 2; someone pushes meanwhile; the reviewed push is refused.
    push_ok(&etcd, &shared("v3", "127.0.0.1:9"), &[]);
    let (code, _, err) = push(
        &etcd,
        &shared("v4", "127.0.0.1:9"),
        &["--if-generation", "2"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("at generation 3, not 2"), "{err}");
    push_ok(
        &etcd,
        &shared("v4", "127.0.0.1:9"),
        &["--if-generation", "3"],
    );

    let (code, out, _) = config_cmd(&etcd.url(), &["history"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("        ")).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].trim_start().starts_with("4 ") && lines[0].contains("ci-bot"),
        "{out}"
    );
    assert!(
        lines[3].contains("alice") && lines[3].contains("— first"),
        "{out}"
    );
    assert!(out.contains("~route hello"), "{out}");

    // Rollback writes generation 1 back as generation 5.
    let (code, out, err) = config_cmd(
        &etcd.url(),
        &["rollback", "--to", "1", "--author", "oncall"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rolled back to generation 1 as generation 5"),
        "{out}"
    );
    assert_eq!(diff(&etcd, &shared("v1", "127.0.0.1:9")).0, 0);
    let (_, out, _) = config_cmd(&etcd.url(), &["history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["generation"], 5);
    assert_eq!(v[0]["via"], "rollback");
    assert_eq!(v[0]["author"], "oncall");
    assert_eq!(v[0]["message"], "rollback to generation 1");
    // Unknown generation: refused.
    assert_eq!(config_cmd(&etcd.url(), &["rollback", "--to", "99"]).0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_reaches_the_nodes_with_its_author() {
    let etcd = Etcd::start();
    push_ok(&etcd, &shared("good", "127.0.0.1:9"), &[]);
    push_ok(&etcd, &shared("bad", "127.0.0.1:9"), &[]);
    let gw = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(all_serve(&[&gw], "/hello", "bad", Duration::from_secs(10)).await);
    let (code, out, err) = config_cmd(
        &etcd.url(),
        &[
            "rollback",
            "--to",
            "1",
            "--author",
            "oncall",
            "-m",
            "bad deploy",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(all_serve(&[&gw], "/hello", "good", Duration::from_secs(5)).await);
    let h = get(&gw.admin_url("/admin/config/history")).await.json();
    assert_eq!(h["entries"][0]["author"], "oncall");
    assert_eq!(
        h["entries"][0]["message"],
        "rollback to generation 1: bad deploy"
    );
    assert_eq!(h["entries"][0]["generation"], 3);
}

#[test]
fn a_node_file_may_not_define_what_the_store_holds() {
    let yaml = format!(
        "{}routes:\n  - name: local\n    match: {{ path: /x }}\n    direct_response: {{ status: 200 }}\n",
        node_yaml("http://127.0.0.1:2379", "")
    );
    let (code, _, err) = validate(&yaml);
    assert_eq!(code, 1);
    assert!(
        err.contains("gw.yaml:11:1: routes: `routes` comes from etcd"),
        "{err}"
    );
    let (code, out, err) = validate(&node_yaml("http://127.0.0.1:2379", ""));
    assert_eq!(code, 0, "{out}{err}");
}
