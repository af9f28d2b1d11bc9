use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderValue, Request};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::*;

/// A self-signed certificate with `cn` (if any), organisation `Acme, Inc.` and URI SANs.
fn cert(cn: Option<&str>, uris: &[&str]) -> Arc<ClientIdentity> {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    // RFC 4514 writes the last RDN first: O is encoded first, so it is written last.
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme, Inc.");
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().expect("ia5")))
        .collect();
    let c = params.self_signed(&key).expect("cert");
    Arc::new(ClientIdentity::from_der(c.der()).expect("identity"))
}

fn plugin(v: serde_json::Value) -> Arc<dyn Plugin> {
    build(
        &v,
        &BuildCtx {
            scope: "t",
            base_dir: std::path::Path::new("."),
        },
    )
    .expect("config")
}

/// Runs `on_request` with `id` on the context and a client-sent header set; returns the
/// decision, the request headers and the context.
fn run(
    p: &dyn Plugin,
    id: Option<Arc<ClientIdentity>>,
) -> (Option<Reply>, http::HeaderMap, RequestCtx) {
    let mut ctx = RequestCtx::new(
        HeaderValue::from_static("rid"),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Arc::from("l"),
    );
    ctx.client_cert = id;
    let (mut parts, ()) = Request::get("/").body(()).expect("request").into_parts();
    let reply = match p.on_request(&mut ctx, &mut parts) {
        Step::Done(Flow::Continue) => None,
        Step::Done(Flow::Respond(r)) => Some(r),
        Step::Pending(_) => panic!("client_cert decides at once"),
    };
    (reply, parts.headers, ctx)
}

fn status(r: &Option<Reply>) -> Option<(u16, &'static str)> {
    match r {
        Some(Reply::Error { status, code, .. }) => Some((status.as_u16(), *code)),
        Some(Reply::Raw { status, .. }) => Some((status.as_u16(), "raw")),
        None => None,
    }
}

#[test]
fn identity_is_read_from_the_certificate() {
    let id = cert(
        Some("acme-1"),
        &["spiffe://example.org/partner/acme", "https://acme.test/x"],
    );
    assert_eq!(id.subject(), "CN=acme-1,O=Acme\\, Inc.");
    assert_eq!(id.common_name(), Some("acme-1"));
    assert_eq!(
        id.uri_sans(),
        ["spiffe://example.org/partner/acme", "https://acme.test/x"]
    );
    assert_eq!(id.fingerprint().len(), 64);
    assert!(id.fingerprint().bytes().all(|b| b.is_ascii_hexdigit()));
    let pem = id
        .escaped_pem_header()
        .expect("pem")
        .to_str()
        .expect("ascii");
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    assert!(pem.ends_with("-----END%20CERTIFICATE-----%0A"), "{pem}");
}

#[test]
fn globs() {
    for (p, s, want) in [
        ("acme-*", "acme-1", true),
        ("acme-*", "acme-", true),
        ("acme-*", "evil-acme-1", false),
        ("*", "", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        (
            "spiffe://example.org/partner/*",
            "spiffe://example.org/partner/a/b",
            true,
        ),
        (
            "spiffe://example.org/partner/*",
            "spiffe://example.org/other/a",
            false,
        ),
        ("*.b.*", "x.b.y", true),
        ("*b*b", "abab", true),
        ("*b*b", "abba", false),
        ("exact", "exact", true),
        ("exact", "Exact", false),
    ] {
        assert_eq!(glob(p, s), want, "{p} vs {s}");
    }
}

#[test]
fn no_certificate_is_401_and_lists_are_403() {
    let p = plugin(serde_json::json!({
        "subjects": ["acme-*"],
        "sans": ["spiffe://example.org/partner/*"],
    }));
    let (r, _, _) = run(&*p, None);
    assert_eq!(status(&r), Some((401, "client_cert_required")));

    let (r, _, _) = run(
        &*p,
        Some(cert(Some("other"), &["spiffe://example.org/partner/x"])),
    );
    assert_eq!(status(&r), Some((403, "forbidden")));
    // No CN at all cannot match a subject list.
    let (r, _, _) = run(&*p, Some(cert(None, &["spiffe://example.org/partner/x"])));
    assert_eq!(status(&r), Some((403, "forbidden")));
    // Both lists must be satisfied.
    let (r, _, _) = run(
        &*p,
        Some(cert(Some("acme-1"), &["spiffe://example.org/ops/x"])),
    );
    assert_eq!(status(&r), Some((403, "forbidden")));
    let (r, _, ctx) = run(
        &*p,
        Some(cert(Some("acme-1"), &["spiffe://example.org/partner/x"])),
    );
    assert_eq!(status(&r), None);
    assert!(ctx.client_cert_authenticated);
    assert_eq!(ctx.consumer.as_deref(), Some("acme-1"));
}

#[test]
fn identity_headers_and_consumer() {
    let p = plugin(serde_json::json!({
        "headers": {
            "subject": "X-Client-Subject",
            "uri_san": "X-Client-SPIFFE",
            "fingerprint": "X-Client-Cert-SHA256",
            "cert": "X-Client-Cert",
        },
        "consumer": "uri_san",
    }));
    let names: Vec<&str> = p.reserved_headers().iter().map(|h| h.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-client-subject",
            "x-client-spiffe",
            "x-client-cert-sha256",
            "x-client-cert"
        ]
    );
    let id = cert(Some("svc"), &["spiffe://a/1", "spiffe://a/2"]);
    let (r, h, ctx) = run(&*p, Some(id.clone()));
    assert_eq!(status(&r), None);
    assert_eq!(h["x-client-subject"], "CN=svc,O=Acme\\, Inc.");
    let sans: Vec<&str> = h
        .get_all("x-client-spiffe")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(sans, ["spiffe://a/1", "spiffe://a/2"]);
    assert_eq!(h["x-client-cert-sha256"], id.fingerprint());
    assert!(h.contains_key("x-client-cert"));
    assert_eq!(ctx.consumer.as_deref(), Some("spiffe://a/1"));

    // Without a CN, `cn` falls back to the first URI SAN; `none` leaves the consumer alone.
    let p = plugin(serde_json::json!({}));
    let (_, h, ctx) = run(&*p, Some(cert(None, &["spiffe://a/9"])));
    assert!(h.is_empty(), "{h:?}");
    assert_eq!(ctx.consumer.as_deref(), Some("spiffe://a/9"));
    let p = plugin(serde_json::json!({"consumer": "none"}));
    let (_, _, ctx) = run(&*p, Some(cert(Some("x"), &[])));
    assert_eq!(ctx.consumer, None);
}

#[test]
fn config_errors_name_the_field() {
    let err = |v: serde_json::Value| {
        build(
            &v,
            &BuildCtx {
                scope: "t",
                base_dir: std::path::Path::new("."),
            },
        )
        .expect_err("refused")
    };
    let e = err(serde_json::json!({"headers": {"subject": "bad header"}}));
    assert_eq!(e.path, "headers.subject");
    let e = err(serde_json::json!({"headers": {"subject": "X-A", "fingerprint": "x-a"}}));
    assert_eq!(e.path, "headers.fingerprint");
    let e = err(serde_json::json!({"sans": ["ok", ""]}));
    assert_eq!(e.path, "sans[1]");
    let e = err(serde_json::json!({"consumer": "dn"}));
    assert_eq!(e.path, "consumer");
    let e = err(serde_json::json!({"headers": {"pem": "X"}}));
    assert_eq!(e.path, "headers.pem");
}
