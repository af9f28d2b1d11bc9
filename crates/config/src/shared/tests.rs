use serde_json::json;

use super::diff::{Diff, Op};
use super::etcd::{Layout, StoreKey};
use super::*;

fn doc(v: Value) -> SharedDoc {
    let (d, errs) = SharedDoc::from_value(&v);
    assert!(errs.is_empty(), "{errs:?}");
    d
}

#[test]
fn key_order_does_not_matter() {
    let a = doc(
        json!({"upstreams": {"u": {"targets": [{"address": "a:1", "weight": 1}], "protocol": "http1"}}}),
    );
    let b = doc(
        json!({"upstreams": {"u": {"protocol": "http1", "targets": [{"weight": 1, "address": "a:1"}]}}}),
    );
    assert_eq!(a, b);
    assert_eq!(a.hash(), b.hash());
    assert!(Diff::between(&a, &b).is_empty());
}

#[test]
fn diff_lists_objects_and_fields_with_secrets_redacted() {
    let old = doc(json!({
        "upstreams": {"u": {"targets": [{"address": "127.0.0.1:1"}]}, "gone": {"targets": []}},
        "routes": [{"name": "a", "upstream": "u"}, {"name": "b", "upstream": "u"}],
        "plugins": {"key_auth": {"consumers": [{"name": "x", "key": "old-secret"}]}},
    }));
    let new = doc(json!({
        "upstreams": {"u": {"targets": [{"address": "127.0.0.1:2"}]}},
        "routes": [{"name": "a", "upstream": "u"}, {"name": "b", "upstream": "u"}, {"name": "c", "upstream": "u"}],
        "plugins": {"key_auth": {"consumers": [{"name": "x", "key": "new-secret"}]}},
    }));
    let d = Diff::between(&old, &new);
    assert_eq!(d.counts(), (1, 2, 1));
    let text = d.to_string();
    assert!(text.contains("~ upstream u: changed"), "{text}");
    assert!(
        text.contains("targets[0].address: \"127.0.0.1:1\" -> \"127.0.0.1:2\""),
        "{text}"
    );
    assert!(text.contains("- upstream gone: removed"), "{text}");
    assert!(text.contains("+ route c: added"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.ends_with("1 added, 2 changed, 1 removed"), "{text}");
    assert!(d.touches(Kind::Plugin, "key_auth") && d.touches_plugins());
    assert_eq!(d.objects[0].op, Op::Removed);
    assert_eq!(d.objects[1].op, Op::Changed);
}

#[test]
fn route_order_is_a_change() {
    let a = doc(json!({"routes": [{"name": "a"}, {"name": "b"}]}));
    let b = doc(json!({"routes": [{"name": "b"}, {"name": "a"}]}));
    let d = Diff::between(&a, &b);
    assert!(!d.is_empty());
    assert!(d.to_string().contains("route order: [a, b] -> [b, a]"));
}

#[test]
fn overlay_keeps_store_objects_and_adds_new_ones() {
    let store = doc(json!({"routes": [{"name": "a", "x": 1}, {"name": "keep"}, {"name": "b"}]}));
    let file = doc(json!({"routes": [{"name": "b"}, {"name": "a", "x": 2}, {"name": "new"}]}));
    let out = store.overlay(&file);
    assert_eq!(out.order(Kind::Route), ["b", "keep", "a", "new"]);
    assert_eq!(out.get(Kind::Route, "a").unwrap()["x"], 2);
}

#[test]
fn layout_round_trip() {
    let l = Layout::new("/pc/");
    assert_eq!(l.prefix(), "/pc");
    let d = doc(json!({
        "upstreams": {"u": {"targets": []}},
        "routes": [{"name": "z"}, {"name": "a"}],
        "plugins": {"cors": {"origins": ["*"]}},
    }));
    let kvs = l.encode(&d);
    assert!(kvs.iter().any(|(k, _)| k == "/pc/routes/z"));
    assert!(
        kvs.iter()
            .any(|(k, v)| k == "/pc/order/routes" && v == "[\"z\",\"a\"]")
    );
    let mut with_gen = kvs.clone();
    with_gen.push(("/pc/generation".into(), "7".into()));
    with_gen.push(("/pc/nodes/n1".into(), "{}".into()));
    let back = l
        .decode(with_gen.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
        .unwrap();
    assert_eq!(back.generation, 7);
    assert_eq!(back.doc, d);
    assert_eq!(
        l.parse("/pc/history/00000000000000000012"),
        StoreKey::History(12)
    );
    assert_eq!(l.parse("/pc/nodes/a"), StoreKey::Node("a".into()));
    assert_eq!(l.parse("/pcx/routes/a"), StoreKey::Other);
    assert!(l.is_config_key("/pc/order/routes"));
    assert!(!l.is_config_key("/pc/history/1"));
}

#[test]
fn decode_refuses_bad_values_naming_the_key() {
    let l = Layout::new("/p");
    let errs = l
        .decode([
            ("/p/routes/a", b"{not json".as_slice()),
            ("/p/routes/b", br#"{"name": "c"}"#.as_slice()),
        ])
        .unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(text[0].starts_with("etcd:/p/routes/a:"), "{text:?}");
    assert!(text[1].contains("differs from the key"), "{text:?}");
    // Routes written without an order entry come after the ordered ones, by name.
    let d = l
        .decode([
            ("/p/routes/b", br#"{}"#.as_slice()),
            ("/p/routes/a", br#"{}"#.as_slice()),
            ("/p/routes/z", br#"{}"#.as_slice()),
            ("/p/order/routes", br#"["z"]"#.as_slice()),
        ])
        .unwrap();
    assert_eq!(d.doc.order(Kind::Route), ["z", "a", "b"]);
}

#[test]
fn a_node_file_with_a_store_may_not_define_shared_sections() {
    let text = "listeners:\n  - { name: http, address: 127.0.0.1:0 }\nconfig_source:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\nroutes:\n  - name: a\n    direct_response: { status: 200 }\n";
    let errs = crate::load_str(
        text,
        Some(std::path::Path::new("n.yaml")),
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        errs.starts_with("n.yaml:6:1: routes: `routes` comes from etcd"),
        "{errs}"
    );
}

#[test]
fn errors_in_store_objects_name_the_key() {
    let text = "listeners:\n  - { name: http, address: 127.0.0.1:0 }\nconfig_source:\n  etcd:\n    endpoints: [\"127.0.0.1:2379\"]\n    prefix: /fleet/\n";
    let shared = doc(
        json!({"routes": [{"name": "ok", "direct_response": {"status": 200}}, {"name": "bad", "upstream": "nowhere"}]}),
    );
    let input = crate::SharedInput {
        doc: &shared,
        origin: "etcd:/fleet",
    };
    let errs = crate::load_str_with(
        text,
        Some(std::path::Path::new("n.yaml")),
        std::path::Path::new("."),
        &|_| None,
        Some(input),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errs.starts_with("etcd:/fleet/routes/bad: routes[1].upstream:"),
        "{errs}"
    );
    let good = doc(json!({"routes": [{"name": "ok", "direct_response": {"status": 200}}]}));
    let cfg = crate::load_str_with(
        text,
        None,
        std::path::Path::new("."),
        &|_| None,
        Some(crate::SharedInput {
            doc: &good,
            origin: "etcd:/fleet",
        }),
    )
    .unwrap();
    assert_eq!(cfg.routes.len(), 1);
    let e = cfg.etcd.unwrap();
    assert_eq!(e.prefix, "/fleet");
    assert_eq!(e.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(cfg.shared_hash, good.hash());
}

#[test]
fn check_shared_names_the_object() {
    let d = doc(json!({"upstreams": {"u": {"targets": [{"address": "nope"}]}}}));
    let errs = crate::check_shared(&d, "etcd:/p", std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        errs.starts_with("etcd:/p/upstreams/u: upstreams.u.targets[0].address"),
        "{errs}"
    );
}

#[test]
fn streamed_hashes_equal_the_hashes_of_the_json_text() {
    // Nodes of a fleet compare these hashes: streaming must not change a single one.
    let v = json!({
        "upstreams": {"b": {"targets": [{"address": "b:1"}]}, "a": {"targets": [{"address": "a:1"}]}},
        "routes": [
            {"name": "r1", "match": {"path_prefix": "/x/é"}, "upstream": "a"},
            {"name": "r0", "match": {"path": "/y"}, "direct_response": {"status": 200, "body": "q\"\n"}}
        ],
        "plugins": {"cors": {"allow_origins": ["*"]}},
    });
    let d = doc(v.clone());
    let text = d.to_value().to_string();
    assert_eq!(d.hash(), format!("{:016x}", crate::digest(text.as_bytes())));
    assert_eq!(
        crate::json_digest(&v),
        crate::digest(v.to_string().as_bytes())
    );
    assert_eq!(
        doc(json!({})).hash(),
        format!("{:016x}", crate::digest(b"{}"))
    );
}
