use std::path::Path;

use super::*;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    let env = |k: &str| match k {
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    load_str(text, Some(Path::new("gw.yaml")), Path::new("."), &env)
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .expect_err("config should be refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const BASE: &str = "listeners:\n  - { name: http, address: 127.0.0.1:0 }\n";

#[test]
fn full_contract_example_loads() {
    let text = format!(
        "{BASE}admin:\n  address: 127.0.0.1:9901\n  token: ${{TOKEN}}\n\
upstreams:\n  users:\n    targets:\n      - {{ address: \"127.0.0.1:9001\", weight: 2 }}\n      - {{ address: users-2.internal:9001 }}\n    protocol: http1\n    load_balancer: {{ policy: consistent_hash, key: header:x-user }}\n    timeouts: {{ connect: 2s, response_header: 15s, read_idle: 30s }}\n    pool: {{ max_idle_per_host: 64, idle_timeout: 90s }}\n    retry: {{ attempts: 3, on: [connect_failure, reset, 502, 503, 504], backoff: {{ base: 25ms, max: 1s }}, budget_percent: 20 }}\n    circuit_breaker: {{ failure_rate: 0.5, window: 60s, min_requests: 20, open_for: 30s, half_open_requests: 3 }}\n    health_check:\n      active: {{ path: /healthz, interval: 5s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3 }}\n      passive: {{ consecutive_failures: 5, eject_for: 30s }}\n\
routes:\n  - name: users\n    match:\n      hosts: [api.example.com, \"*.example.com\"]\n      path_prefix: /api/v1/users\n      methods: [GET, POST]\n      headers: {{ x-release-tag: v2-beta }}\n      query: {{ debug: \"1\" }}\n    upstream: users\n    rewrite:\n      strip_prefix: /api\n      host: users.internal\n    request_headers: {{ set: {{ x-a: b }}, add: {{}}, remove: [x-c] }}\n    timeout: 30s\n  - name: ok\n    match: {{ path: /ok }}\n    direct_response: {{ status: 200, body: ok }}\n"
    );
    let c = load(&text).unwrap();
    assert_eq!(c.upstreams[0].targets.len(), 2);
    assert_eq!(c.upstreams[0].targets[0].weight, 2);
    assert_eq!(c.upstreams[0].retry.as_ref().unwrap().on.len(), 5);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
    let redacted: serde_json::Value = serde_json::from_str(c.redacted.get()).unwrap();
    assert_eq!(redacted["admin"]["token"], "<redacted>");
    assert!(matches!(c.routes[0].action, Action::Upstream(0)));
    assert_eq!(c.hash.len(), 16);
}

#[test]
fn unknown_keys_are_refused_with_position() {
    let e = errors(&format!(
        "{BASE}routes:\n  - name: a\n    match:\n      path_prefx: /x\n    direct_response: {{ status: 200 }}\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("gw.yaml:6:7: routes[0].match"),
        "got {}",
        e[0]
    );
    assert!(e[0].contains("unknown field `path_prefx`"), "{}", e[0]);
}

#[test]
fn bad_values_name_file_line_column_and_field() {
    let e = errors(&format!(
        "{BASE}upstreams:\n  u:\n    targets: [{{ address: 127.0.0.1:1 }}]\n    timeouts: {{ connect: soon }}\nroutes:\n  - name: a\n    upstream: u\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("gw.yaml:6:17: upstreams.u.timeouts.connect: invalid duration"),
        "{}",
        e[0]
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = errors(&format!(
        "{BASE}routes:\n  - name: a\n    upstream: nowhere\n  - name: a\n    match: {{ path_template: \"/x/{{id\" }}\n    direct_response: {{ status: 200 }}\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.iter().any(|m| m.contains("unknown upstream `nowhere`")));
    assert!(
        e.iter()
            .any(|m| m.contains("route name `a` is already used"))
    );
    assert!(e.iter().any(|m| m.contains("invalid path template")));
}

#[test]
fn lint_policies() {
    // shadowed route
    let e = errors(&format!(
        "{BASE}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200 }}\n  - name: never\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200 }}\n"
    ));
    assert!(e[0].contains("route `never` can never match"), "{e:?}");
    assert!(e[0].starts_with("gw.yaml:8:5:"), "{e:?}");
    // old TLS
    let e = errors(
        "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls: { certificates: [], min_version: \"1.1\" }\n",
    );
    assert!(e.iter().any(|m| m.contains("TLS 1.1 is insecure")), "{e:?}");
    // exposed admin
    let e = errors(&format!("{BASE}admin: {{ address: 0.0.0.0:9901 }}\n"));
    assert!(e[0].contains("needs a `token`"), "{e:?}");
    // warnings do not block
    let c = load(&format!(
        "{BASE}upstreams:\n  u:\n    targets: [{{ address: 127.0.0.1:1 }}]\n    tls: {{ insecure_skip_verify: true }}\nroutes:\n  - name: a\n    upstream: u\n    plugins: {{ jwt: {{}} }}\n"
    ))
    .unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .any(|m| m.contains("warning[insecure-upstream-tls]"))
    );
    assert!(w.iter().any(|m| m.contains("warning[auth-without-host]")));
}

#[test]
fn client_cert_without_an_mtls_listener_is_warned() {
    let c = load(&format!(
        "{BASE}routes:\n  - name: a\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200 }}\n    plugins: {{ client_cert: {{}} }}\n"
    ))
    .expect("loads: a warning only");
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("warning[client-cert-without-client-auth]")
            && w[0].contains("routes[0].plugins.client_cert"),
        "{w:?}"
    );
}

#[test]
fn env_interpolation_errors_are_placed() {
    let e = errors(&format!(
        "{BASE}admin:\n  address: 127.0.0.1:1\n  token: ${{MISSING}}\n"
    ));
    assert_eq!(
        e[0],
        "gw.yaml:5:10: admin.token: environment variable `MISSING` is not set"
    );
}

#[test]
fn type_errors_are_placed() {
    let e = errors(&format!(
        "{BASE}routes:\n  - name: a\n    match: {{ methods: GET }}\n    direct_response: {{ status: 200 }}\n"
    ));
    assert!(e[0].contains("routes[0].match.methods"), "{e:?}");
    assert!(e[0].starts_with("gw.yaml:5:14:"), "{e:?}");
}

#[test]
fn route_plugins_override_global_ones() {
    let c = load(&format!(
        "{BASE}plugins: {{ a: {{ x: 1 }}, b: {{ x: 2 }} }}\nroutes:\n  - name: r\n    match: {{ hosts: [h.example.com] }}\n    direct_response: {{ status: 200 }}\n    plugins: {{ b: {{ x: 3 }} }}\n"
    ))
    .unwrap();
    let p = c.plugins_for(&c.routes[0]);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].config["x"], 3);
    assert_eq!(p[1].field, "routes[0].plugins.b");
}

#[test]
fn failure_statuses_take_codes_ranges_and_classes() {
    let up = |cb: &str| {
        format!(
            "{BASE}upstreams:\n  u:\n    targets: [{{ address: 127.0.0.1:1 }}]\n    circuit_breaker: {cb}\n"
        )
    };
    let c = load(&up("{ failure_rate: 0.5 }")).unwrap();
    let cb = c.upstreams[0].circuit_breaker.as_ref().unwrap();
    assert_eq!(cb.failure_statuses, vec![(502, 504)]);
    let c = load(&up("{ failure_statuses: [500, 502-504, 4xx, \"429\"] }")).unwrap();
    let cb = c.upstreams[0].circuit_breaker.as_ref().unwrap();
    assert_eq!(
        cb.failure_statuses,
        vec![(500, 500), (502, 504), (400, 499), (429, 429)]
    );
    let e = errors(&up("{ failure_statuses: [500, 504-502, 7xx, 99] }"));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("gw.yaml:6:")
            && e[0].contains("upstreams.u.circuit_breaker.failure_statuses[1]"),
        "{e:?}"
    );
    assert!(e[0].contains("a range (502-504)"), "{e:?}");
}
