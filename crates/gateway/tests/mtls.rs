//! End-to-end mutual TLS: client certificates verified at the handshake (`require` and
//! `optional`, CA bundle, CRL) with the TLS alert and the counted reason of each refusal; the
//! `client_cert` plugin (401, 403 on subject or URI SAN, identity headers at the upstream,
//! spoofed copies removed on every route, the consumer for rate limits and the access log);
//! session resumption (TLS 1.3 tickets, TLS 1.2 tickets and session IDs; on by default, off
//! with `session_tickets: false`); TLS files swapped in when they change on disk. Every
//! certificate and the CRL are made here with rcgen; the clients are curl, `openssl s_client`
//! and a rustls client, over HTTP/1.1 and HTTP/2.

#[path = "e2e/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The name the gateway's server certificate is for; curl resolves it to the listener.
const HOST: &str = "mtls.example.test";
/// Serial number of the client certificate the CRL revokes.
const REVOKED_SERIAL: u64 = 666;

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

/// What a leaf certificate says.
#[derive(Default)]
struct Spec<'a> {
    cn: Option<&'a str>,
    org: Option<&'a str>,
    uris: &'a [&'a str],
    dns: &'a [&'a str],
    serial: u64,
    expired: bool,
    server: bool,
    /// Valid until 1 January of this year (default 2090).
    until: Option<i32>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, s: Spec<'_>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let dns: Vec<String> = s.dns.iter().map(|d| (*d).to_owned()).collect();
        let mut params = CertificateParams::new(dns).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        if let Some(o) = s.org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        if let Some(cn) = s.cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for u in s.uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().expect("URI SAN")));
        }
        params.extended_key_usages = vec![if s.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from(s.serial));
        if s.expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = date_time_ymd(2024, 1, 1);
            params.not_after = date_time_ymd(s.until.unwrap_or(2090), 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A PEM CRL revoking `serials`.
    fn crl(&self, number: u64, serials: &[u64]) -> String {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2024, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("CRL")
        .pem()
        .expect("CRL PEM")
    }
}

/// Every certificate the tests use.
struct Pki {
    server_ca: Ca,
    clients: Ca,
    other: Ca,
    server: Leaf,
    /// Client certificates by file name: `acme` (CN acme-1, O Acme, SPIFFE
    /// partner/acme), `globex` (CN globex-1, SPIFFE partner/globex), `ops` (CN acme-ops,
    /// SPIFFE ops/b), `nocn` (no CN, SPIFFE partner/nocn), `expired`, `revoked` (on the CRL),
    /// `foreign` (CN acme-2, signed by the other CA).
    clients_certs: Vec<(&'static str, Leaf)>,
}

impl Pki {
    fn new() -> Pki {
        let server_ca = Ca::new("Portcullis Test Server CA");
        let clients = Ca::new("Portcullis Test Clients CA");
        let other = Ca::new("Some Other CA");
        let server = server_ca.leaf(Spec {
            cn: Some(HOST),
            dns: &[HOST],
            serial: 1,
            server: true,
            ..Spec::default()
        });
        let clients_certs = vec![
            (
                "acme",
                clients.leaf(Spec {
                    cn: Some("acme-1"),
                    org: Some("Acme"),
                    uris: &["spiffe://example.org/partner/acme"],
                    serial: 10,
                    ..Spec::default()
                }),
            ),
            (
                "globex",
                clients.leaf(Spec {
                    cn: Some("globex-1"),
                    uris: &["spiffe://example.org/partner/globex"],
                    serial: 11,
                    ..Spec::default()
                }),
            ),
            (
                "ops",
                clients.leaf(Spec {
                    cn: Some("acme-ops"),
                    uris: &["spiffe://example.org/ops/b"],
                    serial: 12,
                    ..Spec::default()
                }),
            ),
            (
                "nocn",
                clients.leaf(Spec {
                    uris: &["spiffe://example.org/partner/nocn"],
                    serial: 13,
                    ..Spec::default()
                }),
            ),
            (
                "expired",
                clients.leaf(Spec {
                    cn: Some("acme-old"),
                    serial: 14,
                    expired: true,
                    ..Spec::default()
                }),
            ),
            (
                "revoked",
                clients.leaf(Spec {
                    cn: Some("acme-revoked"),
                    serial: REVOKED_SERIAL,
                    ..Spec::default()
                }),
            ),
            (
                "foreign",
                other.leaf(Spec {
                    cn: Some("acme-2"),
                    uris: &["spiffe://example.org/partner/acme2"],
                    serial: 15,
                    ..Spec::default()
                }),
            ),
        ];
        Pki {
            server_ca,
            clients,
            other,
            server,
            clients_certs,
        }
    }

    fn client(&self, name: &str) -> &Leaf {
        &self
            .clients_certs
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no client certificate {name}"))
            .1
    }

    /// Writes `server.crt`/`.key`, `server-ca.pem`, `clients-ca.pem`, `other-ca.pem`,
    /// `clients.crl` (revoking `revoked`) and `<name>.crt`/`.key` of every client.
    fn write(&self, dir: &Path) {
        let w = |name: &str, s: &str| std::fs::write(dir.join(name), s).expect("write PEM");
        w("server.crt", &self.server.cert);
        w("server.key", &self.server.key);
        w("server-ca.pem", &self.server_ca.pem);
        w("clients-ca.pem", &self.clients.pem);
        w("other-ca.pem", &self.other.pem);
        w("clients.crl", &self.clients.crl(1, &[REVOKED_SERIAL]));
        for (name, leaf) in &self.clients_certs {
            w(&format!("{name}.crt"), &leaf.cert);
            w(&format!("{name}.key"), &leaf.key);
        }
    }
}

/// What curl got: exit code, status (0 without an answer), HTTP version, body, stderr.
#[derive(Debug)]
struct Got {
    code: i32,
    status: u16,
    version: String,
    body: String,
    /// curl's own messages, shown when an assertion fails.
    #[allow(dead_code)]
    err: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// curl to `path` on TLS listener `listener`, as client `who` (a certificate name of the Pki)
/// or anonymously, with `extra` arguments (`--http1.1`, `--http2`, `-H ...`).
fn call(gw: &Gateway, listener: &str, path: &str, who: Option<&str>, extra: &[&str]) -> Got {
    let addr = gw.listeners[listener];
    let dir = gw.dir.path();
    let ca = dir.join("server-ca.pem");
    let resolve = format!("{HOST}:{}:127.0.0.1", addr.port());
    let url = format!("https://{HOST}:{}{path}", addr.port());
    let cert = who.map(|w| dir.join(format!("{w}.crt")));
    let key = who.map(|w| dir.join(format!("{w}.key")));
    let mut args: Vec<&str> = vec![
        "--cacert",
        ca.to_str().expect("utf-8 path"),
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code} %{http_version}",
    ];
    if let (Some(c), Some(k)) = (&cert, &key) {
        args.extend([
            "--cert",
            c.to_str().expect("utf-8"),
            "--key",
            k.to_str().expect("utf-8"),
        ]);
    }
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out, err) = curl(&args);
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let mut tail = tail.split(' ');
    let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = tail.next().unwrap_or("").to_owned();
    Got {
        code,
        status,
        version,
        body: body.to_owned(),
        err,
    }
}

/// `openssl s_client` to listener `listener` as `who`, trusting the server CA, with `extra`.
fn s_client_as(gw: &Gateway, listener: &str, who: Option<&str>, extra: &[&str]) -> String {
    s_client_send(gw, listener, who, extra, b"")
}

/// `s_client_as`, writing `input` on the connection.
fn s_client_send(
    gw: &Gateway,
    listener: &str,
    who: Option<&str>,
    extra: &[&str],
    input: &[u8],
) -> String {
    let dir = gw.dir.path();
    let ca = dir.join("server-ca.pem");
    let cert = who.map(|w| dir.join(format!("{w}.crt")));
    let key = who.map(|w| dir.join(format!("{w}.key")));
    let mut args: Vec<&str> = vec!["-servername", HOST, "-CAfile", ca.to_str().expect("utf-8")];
    if let (Some(c), Some(k)) = (&cert, &key) {
        args.extend([
            "-cert",
            c.to_str().expect("utf-8"),
            "-key",
            k.to_str().expect("utf-8"),
        ]);
    }
    args.extend_from_slice(extra);
    s_client(gw.listeners[listener], &args, input).1
}

/// An upstream answering with the path, the HTTP version and every value of every header.
async fn headers_upstream() -> Upstream {
    upstream(|req: Request<Incoming>| async move {
        let mut headers = serde_json::Map::new();
        for name in req.headers().keys() {
            let values: Vec<serde_json::Value> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                .collect();
            headers.insert(name.as_str().to_owned(), values.into());
        }
        let out = serde_json::json!({
            "path": req.uri().path(),
            "headers": headers,
        });
        Response::new(Full::new(Bytes::from(out.to_string())))
    })
    .await
}

/// The config's TLS block for a listener: the server certificate and `extra` lines.
fn tls_block(extra: &str) -> String {
    format!("    tls:\n      certificates: [{{ cert: server.crt, key: server.key }}]\n{extra}")
}

/// The value of a metric series (sum over the labels not given); 0 when absent.
async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&metrics_text(gw).await, name, labels).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// require mode
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_mode_refuses_missing_unknown_expired_and_revoked_certificates() {
    let pki = Pki::new();
    let up = echo_upstream("echo").await;
    let yaml = format!(
        "listeners:\n  - name: strict\n    address: 127.0.0.1:0\n{}admin:\n  address: 127.0.0.1:0\nupstreams:\n  echo:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: echo\n",
        tls_block("      client_auth: { ca: clients-ca.pem, mode: require, crl: clients.crl }\n"),
        up.address()
    );
    let gw = Gateway::start_with(&yaml, |d| pki.write(d));

    for v in ["--http1.1", "--http2"] {
        // A valid certificate: the request goes through.
        let got = call(&gw, "strict", "/ok", Some("acme"), &[v]);
        assert_eq!((got.code, got.status), (0, 200), "{v}: {got:?}");
        assert_eq!(got.version, if v == "--http2" { "2" } else { "1.1" });
        assert_eq!(got.json()["path"], "/ok");
        // No certificate, another CA, expired, revoked: no handshake, no request.
        for who in [None, Some("foreign"), Some("expired"), Some("revoked")] {
            let got = call(&gw, "strict", "/refused", who, &[v]);
            assert_ne!(got.code, 0, "{v} {who:?} was admitted: {got:?}");
            assert_eq!(got.status, 0, "{v} {who:?}: {got:?}");
        }
    }

    // The client hears why, in the TLS alert (TLS 1.2: the alert ends the client's handshake).
    for (who, alert) in [
        (None, "certificate required"),
        (Some("foreign"), "unknown ca"),
        (Some("expired"), "certificate expired"),
        (Some("revoked"), "certificate revoked"),
    ] {
        let out = s_client_as(&gw, "strict", who, &["-tls1_2"]);
        assert!(out.contains(alert), "{who:?}: want alert `{alert}`:\n{out}");
    }
    // TLS 1.3 without a certificate: `certificate required`. The client's side of the
    // handshake is over before the server reads its (empty) certificate, so s_client must
    // keep reading (`-ign_eof`) to hear the alert; the server closes right after it.
    let out = s_client_as(&gw, "strict", None, &["-tls1_3", "-ign_eof"]);
    assert!(out.contains("certificate required"), "{out}");

    // Each refusal is counted under its reason: two curls and one or two s_clients each.
    let text = metrics_text(&gw).await;
    let reason = |r: &str| {
        metric_sum(
            &text,
            "portcullis_tls_handshake_failures_total",
            &[("listener", "strict"), ("reason", r)],
        )
        .unwrap_or_else(|| panic!("no series for reason {r}:\n{text}"))
    };
    assert_eq!(reason("no_certificate"), 4.0, "{text}");
    assert_eq!(reason("unknown_ca"), 3.0, "{text}");
    assert_eq!(reason("expired"), 3.0, "{text}");
    assert_eq!(reason("revoked"), 3.0, "{text}");
    assert_eq!(reason("other"), 0.0, "{text}");
    let result = |r: &str| {
        metric_sum(
            &text,
            "portcullis_tls_handshakes_total",
            &[("listener", "strict"), ("result", r)],
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(result("failed"), 13.0, "{text}");
    assert_eq!(result("full"), 2.0, "{text}");
    assert_eq!(result("resumed"), 0.0, "{text}");
    // The served certificate's remaining life, in seconds (it ends in 2090).
    let left = metric_sum(
        &text,
        "portcullis_tls_certificate_expiry_seconds",
        &[("listener", "strict")],
    )
    .expect("expiry gauge");
    assert!(left > 60.0 * 365.0 * 86400.0, "{left}");
    promtool_check(&text);
}

// ---------------------------------------------------------------------------------------------
// optional mode and the client_cert plugin
// ---------------------------------------------------------------------------------------------

/// Identity headers the plugin fills, and a client-sent (spoofed) value for each.
const SPOOFED: [(&str, &str); 4] = [
    ("x-client-subject", "CN=admin"),
    ("x-client-spiffe", "spiffe://example.org/admin"),
    ("x-client-cert-sha256", "00"),
    ("x-client-cert", "forged"),
];

fn spoof_args() -> Vec<String> {
    SPOOFED
        .iter()
        .flat_map(|(n, v)| ["-H".to_owned(), format!("{n}: {v}")])
        .collect()
}

/// The values the upstream saw for header `name` (empty when it was not sent).
fn seen(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The SHA-256 fingerprint openssl computes for a PEM certificate file: lowercase hex.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit('=').next().unwrap_or("");
    hex.replace(':', "").to_ascii_lowercase()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(h, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// The base64 body of a PEM text, without line breaks.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn optional_config(up: &str) -> String {
    format!(
        r#"listeners:
  - name: http
    address: 127.0.0.1:0
  - name: partners
    address: 127.0.0.1:0
{tls}admin:
  address: 127.0.0.1:0
observability:
  access_log: {{ path: access.log }}
upstreams:
  up:
    targets: [{{ address: "{up}" }}]
routes:
  - name: partner-api
    match: {{ path_prefix: /partners }}
    upstream: up
    plugins:
      client_cert:
        subjects: ["acme-*"]
        sans: ["spiffe://example.org/partner/*"]
        headers: {{ subject: X-Client-Subject, uri_san: X-Client-SPIFFE, fingerprint: X-Client-Cert-SHA256, cert: X-Client-Cert }}
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: up
    plugins:
      client_cert: {{}}
      rate_limit: {{ limit: 1, per: 1m, burst: 0, key: consumer }}
  - name: open
    match: {{ path_prefix: / }}
    upstream: up
"#,
        tls = tls_block("      client_auth: { ca: clients-ca.pem, mode: optional }\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_and_the_plugin_on_http1_and_http2() {
    let pki = Pki::new();
    let up = headers_upstream().await;
    let gw = Gateway::start_with(&optional_config(&up.address()), |d| pki.write(d));
    let dir = gw.dir.path().to_owned();
    let fingerprint = openssl_fingerprint(&dir.join("acme.crt"));
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    let spoof = spoof_args();
    let with_spoof = |v: &str| -> Vec<String> {
        let mut a = vec![v.to_owned()];
        a.extend(spoof.iter().cloned());
        a
    };

    for v in ["--http1.1", "--http2"] {
        let version = if v == "--http2" { "2" } else { "1.1" };
        // No certificate: the listener admits the connection, the route answers 401.
        let got = call(&gw, "partners", "/partners/x", None, &[v]);
        assert_eq!(
            (got.status, got.version.as_str()),
            (401, version),
            "{got:?}"
        );
        let e = got.json();
        assert_eq!(e["error"]["code"], "client_cert_required", "{e}");
        assert_eq!(e["error"]["status"], 401);

        // Subject CN not on the list (its SPIFFE ID is): 403.
        let got = call(&gw, "partners", "/partners/x", Some("globex"), &[v]);
        assert_eq!(got.status, 403, "{v}: {got:?}");
        assert_eq!(got.json()["error"]["code"], "forbidden");
        // CN on the list, URI SAN not: 403.
        let got = call(&gw, "partners", "/partners/x", Some("ops"), &[v]);
        assert_eq!(got.status, 403, "{v}: {got:?}");
        // No CN at all cannot match `subjects`.
        let got = call(&gw, "partners", "/partners/x", Some("nocn"), &[v]);
        assert_eq!(got.status, 403, "{v}: {got:?}");

        // Allowed: the identity reaches the upstream, and the spoofed values do not.
        let args = with_spoof(v);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = call(&gw, "partners", "/partners/x", Some("acme"), &args);
        assert_eq!(
            (got.status, got.version.as_str()),
            (200, version),
            "{got:?}"
        );
        let seen_by_up = got.json();
        assert_eq!(seen(&seen_by_up, "x-client-subject"), ["CN=acme-1,O=Acme"]);
        assert_eq!(
            seen(&seen_by_up, "x-client-spiffe"),
            ["spiffe://example.org/partner/acme"]
        );
        assert_eq!(
            seen(&seen_by_up, "x-client-cert-sha256"),
            [fingerprint.as_str()]
        );
        let cert = seen(&seen_by_up, "x-client-cert");
        assert_eq!(cert.len(), 1, "{seen_by_up}");
        let pem = percent_decode(&cert[0]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert_eq!(pem_body(&pem), pem_body(&pki.client("acme").cert));

        // A route without the plugin: the spoofed headers are removed all the same, with a
        // certificate and without one.
        for who in [Some("acme"), None] {
            let got = call(&gw, "partners", "/open", who, &args);
            assert_eq!(got.status, 200, "{v} {who:?}: {got:?}");
            let seen_by_up = got.json();
            for (name, _) in SPOOFED {
                assert!(
                    seen(&seen_by_up, name).is_empty(),
                    "{v} {who:?}: {name} reached the upstream: {seen_by_up}"
                );
            }
        }
    }

    // And on a plaintext listener (HTTP/1.1 and h2c).
    for v in ["--http1.1", "--http2-prior-knowledge"] {
        let mut args = with_spoof(v);
        args.push(gw.url("/open"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = curl(&args);
        assert_eq!(code, 0, "{err}");
        let seen_by_up: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        for (name, _) in SPOOFED {
            assert!(
                seen(&seen_by_up, name).is_empty(),
                "{v}: {name}: {seen_by_up}"
            );
        }
    }

    // The certificate names the consumer: rate limits count per certificate.
    let got = call(&gw, "partners", "/limited", Some("acme"), &["--http1.1"]);
    assert_eq!(got.status, 200, "{got:?}");
    let got = call(&gw, "partners", "/limited", Some("acme"), &["--http2"]);
    assert_eq!(got.status, 429, "{got:?}");
    let got = call(&gw, "partners", "/limited", Some("globex"), &["--http2"]);
    assert_eq!(
        got.status, 200,
        "another certificate, another consumer: {got:?}"
    );

    // The access log names the certificate's subject when the plugin admitted the request.
    let log = dir.join("access.log");
    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), async || lines(&log).len() >= 19).await,
        "access log: {:?}",
        lines(&log)
    );
    let lines = lines(&log);
    let admitted: Vec<_> = lines
        .iter()
        .filter(|l| l["route"] == "partner-api" && l["status"] == 200)
        .collect();
    assert_eq!(admitted.len(), 2, "{lines:?}");
    for l in admitted {
        assert_eq!(l["client_cert"], "CN=acme-1,O=Acme", "{l}");
        assert_eq!(l["consumer"], "acme-1", "{l}");
        assert_eq!(l["listener"], "partners", "{l}");
    }
    for l in lines.iter().filter(|l| l["route"] == "open") {
        assert!(l["client_cert"].is_null(), "no plugin, no subject: {l}");
    }
    for l in lines
        .iter()
        .filter(|l| l["status"] == 401 || l["status"] == 403)
    {
        assert!(l["client_cert"].is_null(), "{l}");
    }
    let refused: Vec<_> = lines.iter().filter(|l| l["status"] == 429).collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert_eq!(refused[0]["consumer"], "acme-1");

    // Refusals are counted by reason; the handshakes all completed.
    let text = metrics_text(&gw).await;
    let auth = |r: &str| {
        metric_sum(
            &text,
            "portcullis_auth_failures_total",
            &[
                ("plugin", "client_cert"),
                ("scope", "partner-api"),
                ("reason", r),
            ],
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(auth("missing_cert"), 2.0, "{text}");
    assert_eq!(auth("subject_not_allowed"), 4.0, "{text}");
    assert_eq!(auth("san_not_allowed"), 2.0, "{text}");
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_tls_handshakes_total",
            &[("listener", "partners"), ("result", "failed")]
        ),
        Some(0.0),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// session resumption
// ---------------------------------------------------------------------------------------------

fn resumption_config(up: &str) -> String {
    format!(
        r#"listeners:
  - name: resume
    address: 127.0.0.1:0
{on}  - name: noresume
    address: 127.0.0.1:0
{off}admin:
  address: 127.0.0.1:0
upstreams:
  up:
    targets: [{{ address: "{up}" }}]
routes:
  - name: partner-api
    match: {{ path_prefix: /partners }}
    upstream: up
    plugins:
      client_cert:
        headers: {{ subject: X-Client-Subject }}
  - name: open
    match: {{ path_prefix: / }}
    upstream: up
"#,
        on = tls_block("      client_auth: { ca: clients-ca.pem, mode: optional }\n"),
        off = tls_block(
            "      client_auth: { ca: clients-ca.pem, mode: optional }\n      session_tickets: false\n"
        ),
    )
}

/// Two `s_client` connections, the second offering the session of the first; returns whether
/// each was `New` or `Reused` and the ALPN protocol of the second.
fn s_client_twice(gw: &Gateway, listener: &str, flags: &[&str], alpn: &str) -> [String; 3] {
    let sess = gw.dir.path().join(format!(
        "{listener}{}-{}.sess",
        flags.join(""),
        alpn.replace('/', "")
    ));
    let sess = sess.to_str().expect("utf-8");
    let kind = |out: &str| {
        out.lines()
            .find_map(|l| {
                l.strip_prefix("New,")
                    .map(|_| "New")
                    .or_else(|| l.strip_prefix("Reused,").map(|_| "Reused"))
            })
            .unwrap_or_else(|| panic!("no session line:\n{out}"))
            .to_owned()
    };
    // A request that makes the server close the connection (an HTTP/1.1 request with
    // `Connection: close`; on h2, not a valid preface), read until then (`-ign_eof`): a TLS 1.3
    // client gets its session tickets after the handshake, so quitting at once could miss them.
    let input = format!("GET /open HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let mut first: Vec<&str> = vec!["-alpn", alpn, "-sess_out", sess, "-ign_eof"];
    first.extend_from_slice(flags);
    let a = s_client_send(gw, listener, Some("acme"), &first, input.as_bytes());
    // Without a ticket, a TLS 1.3 client has no session to keep: it connects afresh.
    let saved = Path::new(sess).exists();
    let mut second: Vec<&str> = vec!["-alpn", alpn, "-ign_eof"];
    if saved {
        second.extend(["-sess_in", sess]);
    }
    second.extend_from_slice(flags);
    let b = s_client_send(gw, listener, Some("acme"), &second, input.as_bytes());
    let alpn_line = b
        .lines()
        .find(|l| l.starts_with("ALPN protocol:"))
        .unwrap_or("no ALPN")
        .to_owned();
    let b = if saved {
        kind(&b)
    } else {
        format!("{} (no session saved)", kind(&b))
    };
    [kind(&a), b, alpn_line]
}

/// A rustls client presenting `acme`, offering `alpn`, that remembers sessions (rustls'
/// default: TLS 1.3 tickets in memory).
fn rustls_client(pki: &Pki, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.server_ca.pem.as_bytes()).expect("CA PEM"))
        .expect("add CA");
    let leaf = pki.client("acme");
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key PEM");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client cert");
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One connection with `connector` to `addr`, one GET of `path` over HTTP/2 or HTTP/1.1 (by
/// the connector's ALPN). Returns whether the handshake resumed a session, and the body.
async fn one_request(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> (Option<rustls::HandshakeKind>, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(HOST).expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let kind = tls.get_ref().1.handshake_kind();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = Request::get(format!("https://{HOST}{path}"))
        .body(Full::<Bytes>::default())
        .expect("request");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h2 request")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static(HOST));
        send.send_request(req).await.expect("h1 request")
    };
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (kind, serde_json::from_slice(&body).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_by_default_and_not_with_session_tickets_false() {
    let pki = Pki::new();
    let up = headers_upstream().await;
    let gw = Gateway::start_with(&resumption_config(&up.address()), |d| pki.write(d));

    // TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session IDs (no ticket): each over h2 and
    // http/1.1, with a client certificate.
    let cases: [&[&str]; 3] = [&["-tls1_3"], &["-tls1_2"], &["-tls1_2", "-no_ticket"]];
    for flags in cases {
        for alpn in ["h2", "http/1.1"] {
            let [a, b, proto] = s_client_twice(&gw, "resume", flags, alpn);
            assert_eq!(
                (a.as_str(), b.as_str()),
                ("New", "Reused"),
                "{flags:?} {alpn}"
            );
            assert_eq!(proto, format!("ALPN protocol: {alpn}"), "{flags:?}");
            let [a, b, _] = s_client_twice(&gw, "noresume", flags, alpn);
            // Off: no ticket and no session ID is handed out, so there is nothing to offer.
            assert_eq!(
                (a.as_str(), b.as_str()),
                ("New", "New (no session saved)"),
                "off: {flags:?} {alpn}"
            );
        }
    }
    let text = metrics_text(&gw).await;
    let count = |l: &str, r: &str| {
        metric_sum(
            &text,
            "portcullis_tls_handshakes_total",
            &[("listener", l), ("result", r)],
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(
        (count("resume", "full"), count("resume", "resumed")),
        (6.0, 6.0),
        "{text}"
    );
    assert_eq!(
        (count("noresume", "full"), count("noresume", "resumed")),
        (12.0, 0.0),
        "{text}"
    );

    // A resumed connection still carries the client's identity (rustls keeps the verified
    // chain with the session): the route sees the certificate on h2 and on HTTP/1.1.
    for alpn in [&b"h2"[..], b"http/1.1"] {
        for (listener, resumes) in [("resume", true), ("noresume", false)] {
            let connector = rustls_client(&pki, alpn);
            let addr = gw.listeners[listener];
            for i in 0..3 {
                let (kind, seen_by_up) = one_request(&connector, addr, "/partners/r").await;
                let want = if i > 0 && resumes {
                    rustls::HandshakeKind::Resumed
                } else {
                    rustls::HandshakeKind::Full
                };
                assert_eq!(kind, Some(want), "{listener} {alpn:?} connection {i}");
                assert_eq!(
                    seen(&seen_by_up, "x-client-subject"),
                    ["CN=acme-1,O=Acme"],
                    "{listener} {alpn:?} connection {i}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// files changed on disk
// ---------------------------------------------------------------------------------------------

/// Waits until `portcullis_tls_reloads_total{listener, result}` reaches `n`.
async fn wait_tls_reloads(gw: &Gateway, listener: &str, result: &str, n: f64) {
    let labels = [("listener", listener), ("result", result)];
    assert!(
        eventually(Duration::from_secs(15), async || {
            metric(gw, "portcullis_tls_reloads_total", &labels).await >= n
        })
        .await,
        "{listener}: no TLS reload `{result}` #{n}:\n{}",
        gw.logs()
    );
}

/// Saves a TLS 1.3 session of client `who` on `listener` to `file`.
fn save_session(gw: &Gateway, listener: &str, who: &str, file: &str) {
    let sess = gw.dir.path().join(file);
    let input = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let args = [
        "-tls1_3",
        "-ign_eof",
        "-sess_out",
        sess.to_str().expect("utf-8"),
    ];
    let out = s_client_send(gw, listener, Some(who), &args, input.as_bytes());
    assert!(sess.exists(), "no session saved:\n{out}");
}

/// Offers the session in `file` back: `New` or `Reused`.
fn offer_session(gw: &Gateway, listener: &str, who: &str, file: &str) -> &'static str {
    let sess = gw.dir.path().join(file);
    let input = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let args = [
        "-tls1_3",
        "-ign_eof",
        "-sess_in",
        sess.to_str().expect("utf-8"),
    ];
    let out = s_client_send(gw, listener, Some(who), &args, input.as_bytes());
    if out.lines().any(|l| l.starts_with("Reused,")) {
        "Reused"
    } else if out.lines().any(|l| l.starts_with("New,")) {
        "New"
    } else {
        panic!("no session line:\n{out}")
    }
}

/// The subject of the certificate a listener serves now, as s_client prints it.
fn served_subject(gw: &Gateway, listener: &str) -> String {
    let out = s_client_as(gw, listener, Some("globex"), &[]);
    out.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no subject:\n{out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_crl_and_certificate_files_reload_when_they_change_on_disk() {
    let pki = Pki::new();
    let up = echo_upstream("echo").await;
    let yaml = format!(
        r#"listeners:
  - name: bundle
    address: 127.0.0.1:0
{bundle}  - name: revocation
    address: 127.0.0.1:0
{revocation}admin:
  address: 127.0.0.1:0
upstreams:
  up:
    targets: [{{ address: "{up}" }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: up
"#,
        bundle = tls_block("      client_auth: { ca: bundle.pem }\n"),
        revocation = tls_block("      client_auth: { ca: clients-ca.pem, crl: live.crl }\n"),
        up = up.address(),
    );
    let gw = Gateway::start_with(&yaml, |d| {
        pki.write(d);
        std::fs::write(d.join("bundle.pem"), &pki.clients.pem).expect("bundle");
        std::fs::write(d.join("live.crl"), pki.clients.crl(1, &[])).expect("CRL");
    });
    let dir = gw.dir.path().to_owned();

    // 1. The CA bundle gains the other CA: its clients get in, without a reload.
    let got = call(&gw, "bundle", "/", Some("foreign"), &["--http1.1"]);
    assert_ne!(
        got.code, 0,
        "foreign CA admitted before it was trusted: {got:?}"
    );
    save_session(&gw, "bundle", "acme", "bundle.sess");
    let both = format!("{}{}", pki.clients.pem, pki.other.pem);
    write_atomically(&dir.join("bundle.pem"), both.as_bytes());
    wait_tls_reloads(&gw, "bundle", "ok", 1.0).await;
    for v in ["--http1.1", "--http2"] {
        let got = call(&gw, "bundle", "/", Some("foreign"), &[v]);
        assert_eq!((got.code, got.status), (0, 200), "{v}: {got:?}");
        let got = call(&gw, "bundle", "/", Some("acme"), &[v]);
        assert_eq!(got.status, 200, "{v}: {got:?}");
    }
    // A session from before the CA change is not honoured: verified afresh.
    assert_eq!(offer_session(&gw, "bundle", "acme", "bundle.sess"), "New");
    assert!(
        gw.logs().contains("TLS files changed on disk"),
        "{}",
        gw.logs()
    );

    // 2. The CRL revokes acme: refused from then on, counted as revoked.
    let got = call(&gw, "revocation", "/", Some("acme"), &["--http2"]);
    assert_eq!(got.status, 200, "{got:?}");
    write_atomically(&dir.join("live.crl"), pki.clients.crl(2, &[10]).as_bytes());
    wait_tls_reloads(&gw, "revocation", "ok", 1.0).await;
    for v in ["--http1.1", "--http2"] {
        let got = call(&gw, "revocation", "/", Some("acme"), &[v]);
        assert_ne!(got.code, 0, "{v}: revoked certificate admitted: {got:?}");
        let got = call(&gw, "revocation", "/", Some("globex"), &[v]);
        assert_eq!(got.status, 200, "{v}: {got:?}");
    }
    let revoked = metric(
        &gw,
        "portcullis_tls_handshake_failures_total",
        &[("listener", "revocation"), ("reason", "revoked")],
    )
    .await;
    assert_eq!(revoked, 2.0);

    // 3. A renewed server certificate: new connections get it; sessions survive it.
    let expiry = |text: &str| {
        metric_sum(
            text,
            "portcullis_tls_certificate_expiry_seconds",
            &[("listener", "bundle")],
        )
        .expect("expiry gauge")
    };
    let before = expiry(&metrics_text(&gw).await);
    save_session(&gw, "bundle", "acme", "bundle2.sess");
    let renewed = pki.server_ca.leaf(Spec {
        cn: Some(HOST),
        org: Some("Renewed"),
        dns: &[HOST],
        serial: 2,
        server: true,
        until: Some(2080),
        ..Spec::default()
    });
    // The key first: a poll between the two writes sees a mismatched pair, refuses it, and
    // takes the pair once the certificate is there too.
    write_atomically(&dir.join("server.key"), renewed.key.as_bytes());
    write_atomically(&dir.join("server.crt"), renewed.cert.as_bytes());
    assert!(
        eventually(Duration::from_secs(15), async || {
            served_subject(&gw, "bundle").contains("Renewed")
        })
        .await,
        "{}",
        gw.logs()
    );
    assert!(served_subject(&gw, "revocation").contains("Renewed"));
    assert_eq!(
        offer_session(&gw, "bundle", "acme", "bundle2.sess"),
        "Reused"
    );
    // The expiry gauge follows the served certificate: ten years less.
    let after = expiry(&metrics_text(&gw).await);
    let ten_years = 3653.0 * 86400.0;
    assert!(
        (before - after - ten_years).abs() < 120.0,
        "{before} vs {after}"
    );
    let got = call(&gw, "bundle", "/", Some("acme"), &["--http2"]);
    assert_eq!(got.status, 200, "{got:?}");

    // 4. A config reload that changes nothing keeps the TLS state: sessions resume.
    save_session(&gw, "revocation", "globex", "revocation.sess");
    let reload = gw.reload().await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    assert_eq!(
        offer_session(&gw, "revocation", "globex", "revocation.sess"),
        "Reused"
    );

    // 5. A broken CA bundle is refused, logged and counted; the previous one keeps serving,
    // and the same broken file is not tried again at every poll.
    write_atomically(&dir.join("bundle.pem"), b"not a certificate\n");
    wait_tls_reloads(&gw, "bundle", "failed", 1.0).await;
    assert!(
        gw.wait_for_log("cannot be used", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let got = call(&gw, "bundle", "/", Some("foreign"), &["--http2"]);
    assert_eq!(
        got.status, 200,
        "the previous bundle keeps serving: {got:?}"
    );
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let failed = metric(
        &gw,
        "portcullis_tls_reloads_total",
        &[("listener", "bundle"), ("result", "failed")],
    )
    .await;
    assert_eq!(failed, 1.0);
    // And a config reload now is refused as a whole, naming the file and field.
    let reload = gw.reload().await;
    assert_ne!(reload.status, 200);
    let body = String::from_utf8_lossy(&reload.body);
    assert!(body.contains("listeners[0].tls.client_auth.ca"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// config errors
// ---------------------------------------------------------------------------------------------

/// A config with one mTLS listener whose `client_auth` is `client_auth`, and a route with
/// `plugin` as its `client_cert` config.
fn mtls_config(client_auth: &str, plugin: &str) -> String {
    format!(
        "listeners:\n  - name: partners\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ cert: server.crt, key: server.key }}]\n      client_auth: {client_auth}\nadmin:\n  address: 127.0.0.1:0\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200 }}\n    plugins:\n      client_cert: {plugin}\n"
    )
}

#[test]
fn validate_places_client_auth_and_plugin_errors() {
    let pki = Pki::new();
    let check = |client_auth: &str, plugin: &str| {
        validate_in(&mtls_config(client_auth, plugin), |d| {
            pki.write(d);
            std::fs::write(d.join("garbage.pem"), "not PEM at all\n").expect("write");
        })
    };
    // A good one passes, so each failure below is about what it changes.
    let (code, out, err) = check(
        "{ ca: clients-ca.pem, mode: optional, crl: clients.crl }",
        "{ subjects: [\"acme-*\"], headers: { subject: X-Client-Subject } }",
    );
    assert_eq!(code, 0, "{out}{err}");

    for (client_auth, plugin, field, words) in [
        (
            "{ ca: clients-ca.pem, mode: sometimes }",
            "{}",
            "gw.yaml:6:42: listeners[0].tls.client_auth.mode",
            "require",
        ),
        (
            "{ ca: missing.pem }",
            "{}",
            "listeners[0].tls.client_auth.ca",
            "missing.pem",
        ),
        (
            "{ ca: garbage.pem }",
            "{}",
            "listeners[0].tls.client_auth.ca",
            "no PEM certificate",
        ),
        (
            "{ ca: clients-ca.pem, crl: garbage.pem }",
            "{}",
            "listeners[0].tls.client_auth.crl",
            "revocation list",
        ),
        (
            "{ ca: clients-ca.pem, mTLS: true }",
            "{}",
            "listeners[0].tls.client_auth.mTLS",
            "unknown field",
        ),
        (
            "{ ca: clients-ca.pem }",
            "{ headers: { subject: \"bad header\" } }",
            "routes[0].plugins.client_cert.headers.subject",
            "not a header name",
        ),
        (
            "{ ca: clients-ca.pem }",
            "{ consumer: dn }",
            "routes[0].plugins.client_cert.consumer",
            "cn, uri_san or none",
        ),
    ] {
        let (code, out, err) = check(client_auth, plugin);
        assert_eq!(code, 1, "{client_auth} {plugin}: {out}{err}");
        assert!(err.contains(field), "want {field}: {err}");
        assert!(err.contains(words), "want `{words}`: {err}");
        assert!(err.contains("gw.yaml:"), "{err}");
    }
}
