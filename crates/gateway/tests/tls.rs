//! End-to-end TLS: SNI certificate selection, ALPN, minimum versions, certificate config
//! validation, and TLS towards upstreams (verification, `protocol: auto` and ALPN).

#[path = "e2e/harness.rs"]
mod harness;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// A certificate and its key, PEM encoded.
struct Leaf {
    cert: String,
    key: String,
}

/// A test CA and leaf certificates it signed.
struct Pki {
    ca: String,
    /// `a.example.test`
    a: Leaf,
    /// `*.b.example.test`
    b: Leaf,
    /// `up.example.test`, for upstreams.
    up: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Portcullis Test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        Pki {
            ca: ca_cert.pem(),
            a: leaf("a.example.test"),
            b: leaf("*.b.example.test"),
            up: leaf("up.example.test"),
        }
    }

    /// Writes `ca.pem`, `a.crt`/`a.key`, `b.crt`/`b.key` into `dir`.
    fn write(&self, dir: &Path) {
        let w = |name: &str, s: &str| std::fs::write(dir.join(name), s).expect("write PEM");
        w("ca.pem", &self.ca);
        w("a.crt", &self.a.cert);
        w("a.key", &self.a.key);
        w("b.crt", &self.b.cert);
        w("b.key", &self.b.key);
    }
}

/// A config with a plaintext `http` listener, an `https` listener holding both certificates
/// (a first), a `tls13` listener with `min_version: "1.3"`, and everything routed to `echo`.
fn tls_config(echo: &str) -> String {
    format!(
        r#"listeners:
  - name: http
    address: 127.0.0.1:0
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: a.crt, key: a.key }}
        - {{ cert: b.crt, key: b.key }}
  - name: tls13
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: a.crt, key: a.key }}]
      min_version: "1.3"
admin:
  address: 127.0.0.1:0
upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: echo
"#
    )
}

/// curl against a TLS listener at `addr`, resolving `host` to it and trusting the test CA.
/// Returns its exit code, stdout and stderr.
fn curl_tls(gw: &Gateway, addr: SocketAddr, host: &str, path: &str, extra: &[&str]) -> Curl {
    let ca = gw.dir.path().join("ca.pem");
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let url = format!("https://{host}:{}{path}", addr.port());
    let mut args: Vec<&str> = vec![
        "-v",
        "--cacert",
        ca.to_str().expect("utf-8 path"),
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out, err) = curl(&args);
    Curl { code, out, err }
}

struct Curl {
    code: i32,
    out: String,
    err: String,
}

impl Curl {
    /// The certificate subject curl printed with `-v`.
    fn subject(&self) -> Option<&str> {
        self.err
            .lines()
            .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_first_is_default() {
    let pki = Pki::new();
    let up = echo_upstream("echo").await;
    let gw = Gateway::start_with(&tls_config(&up.address()), |d| pki.write(d));
    let https = gw.listeners["https"];

    // SNI a.example.test: the first certificate, verified against the test CA.
    let r = curl_tls(&gw, https, "a.example.test", "/sni", &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.subject(), Some("CN=a.example.test"), "{}", r.err);
    assert!(r.err.contains("SSL certificate verify ok"), "{}", r.err);
    assert!(r.out.contains("\"path\":\"/sni\""), "{}", r.out);

    // SNI x.b.example.test: the wildcard certificate (verification would fail with the first).
    let r = curl_tls(&gw, https, "x.b.example.test", "/sni", &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.subject(), Some("CN=*.b.example.test"), "{}", r.err);
    assert!(r.err.contains("SSL certificate verify ok"), "{}", r.err);

    // The wildcard covers one label only: y.x.b.example.test gets the default.
    let r = curl_tls(&gw, https, "y.x.b.example.test", "/", &["-k"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.subject(), Some("CN=a.example.test"), "{}", r.err);

    // An unknown name gets the default certificate.
    let r = curl_tls(&gw, https, "other.test", "/", &["-k"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.subject(), Some("CN=a.example.test"), "{}", r.err);

    // No SNI at all (curl sends none for an IP address): the default certificate.
    let url = format!("https://127.0.0.1:{}/nosni", https.port());
    let (code, out, err) = curl(&["-v", "-k", &url]);
    assert_eq!(code, 0, "{err}");
    let subject = err
        .lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "));
    assert_eq!(subject, Some("CN=a.example.test"), "{err}");
    assert!(out.contains("\"path\":\"/nosni\""), "{out}");

    // The same with a rustls client, checking the certificate it received.
    let got = rustls_peer_cert(https, Some("x.b.example.test"), &pki.ca).await;
    assert_eq!(got, pki.b.cert_der());
    let got = rustls_peer_cert(https, Some("a.example.test"), &pki.ca).await;
    assert_eq!(got, pki.a.cert_der());
}

impl Leaf {
    fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).expect("cert PEM")
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).expect("key PEM")
    }
}

/// Handshakes with a rustls client trusting `ca` and returns the leaf certificate received.
async fn rustls_peer_cert(
    addr: SocketAddr,
    sni: Option<&str>,
    ca: &str,
) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from(sni.expect("a name").to_owned())
        .expect("server name");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates");
    certs[0].clone().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_or_http11_and_both_proxy() {
    let pki = Pki::new();
    let up = echo_upstream("echo").await;
    let gw = Gateway::start_with(&tls_config(&up.address()), |d| pki.write(d));
    let https = gw.listeners["https"];
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let r = curl_tls(
            &gw,
            https,
            "a.example.test",
            "/alpn?v=1",
            &[flag, "-w", "\n%{http_version} %{http_code}"],
        );
        assert_eq!(r.code, 0, "{flag}: {}", r.err);
        let (body, tail) = r.out.rsplit_once('\n').expect("write-out line");
        assert_eq!(tail, format!("{want} 200"), "{flag}: {}", r.err);
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(v["path"], "/alpn", "{flag}");
        assert_eq!(v["query"], "v=1", "{flag}");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{flag}: {v}");
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1", "{flag}: {v}");
        if want == "2" {
            assert!(r.err.contains("ALPN: server accepted h2"), "{}", r.err);
        } else {
            assert!(
                r.err.contains("ALPN: server accepted http/1.1"),
                "{}",
                r.err
            );
        }
    }
    // The plaintext listener still says http.
    let got = get(&gw.url("/plain")).await;
    assert_eq!(got.json()["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_13_refuses_tls12_clients() {
    let pki = Pki::new();
    let up = echo_upstream("echo").await;
    let gw = Gateway::start_with(&tls_config(&up.address()), |d| pki.write(d));
    let tls13 = gw.listeners["tls13"];
    let https = gw.listeners["https"];
    let code_of = |addr, extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        let r = curl_tls(&gw, addr, "a.example.test", "/v", &args);
        (r.code, r.out, r.err)
    };

    // TLS 1.2 only client against min_version 1.3: the handshake fails.
    let (code, out, err) = code_of(tls13, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_ne!(code, 0, "a TLS 1.2 client was accepted: {out} {err}");
    assert!(!err.contains("SSL connection using TLSv1.2"), "{err}");
    // TLS 1.3 is accepted.
    let (code, out, err) = code_of(tls13, &["--tlsv1.3"]);
    assert_eq!((code, out.as_str()), (0, "200"), "{err}");
    assert!(err.contains("SSL connection using TLSv1.3"), "{err}");
    // The default minimum (1.2) accepts a TLS 1.2 client, and 1.3.
    let (code, out, err) = code_of(https, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!((code, out.as_str()), (0, "200"), "{err}");
    assert!(err.contains("SSL connection using TLSv1.2"), "{err}");
    let (code, out, err) = code_of(https, &["--tlsv1.3"]);
    assert_eq!((code, out.as_str()), (0, "200"), "{err}");

    // The refused handshake is counted, under the reason `other` (no shared version).
    let text = metrics_text(&gw).await;
    let failures = |reason: &str| {
        metric_sum(
            &text,
            "portcullis_tls_handshake_failures_total",
            &[("listener", "tls13"), ("reason", reason)],
        )
    };
    assert!(
        failures("other").is_some_and(|n| n >= 1.0),
        "no TLS failure counted for listener tls13:\n{text}"
    );
    assert_eq!(failures("no_certificate"), Some(0.0), "{text}");
}

/// Runs `portcullis validate` on `yaml` in a dir holding the test certificates.
fn validate_with_certs(pki: &Pki, yaml: &str) -> (i32, String, String) {
    validate_in(yaml, |dir| pki.write(dir))
}

fn one_tls_listener(tls: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n  - name: https\n    address: 127.0.0.1:0\n    tls:\n{tls}admin:\n  address: 127.0.0.1:0\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200 }}\n"
    )
}

#[test]
fn validate_checks_tls_versions_and_certificate_files() {
    let pki = Pki::new();
    // A good config passes, so the failures below are about what they change.
    let (code, out, err) = validate_with_certs(
        &pki,
        &one_tls_listener(
            "      certificates: [{ cert: a.crt, key: a.key }]\n      min_version: \"1.3\"\n",
        ),
    );
    assert_eq!(code, 0, "{out}{err}");

    let (code, _, err) = validate_with_certs(
        &pki,
        &one_tls_listener(
            "      certificates: [{ cert: a.crt, key: a.key }]\n      min_version: \"1.1\"\n",
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gw.yaml:"), "{err}");
    assert!(err.contains("listeners[1].tls.min_version"), "{err}");
    assert!(err.contains("1.1"), "{err}");

    let (code, _, err) = validate_with_certs(
        &pki,
        &one_tls_listener(
            "      certificates:\n        - { cert: a.crt, key: a.key }\n        - { cert: missing.crt, key: b.key }\n",
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("listeners[1].tls.certificates[1].cert"),
        "{err}"
    );
    assert!(err.contains("missing.crt"), "{err}");
    assert!(!err.contains("certificates[0]"), "{err}");

    // The key of another certificate.
    let (code, _, err) = validate_with_certs(
        &pki,
        &one_tls_listener("      certificates: [{ cert: a.crt, key: b.key }]\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("listeners[1].tls.certificates[0]"), "{err}");
    assert!(err.contains("key does not belong"), "{err}");

    // Not a certificate at all.
    let (code, _, err) = validate_with_certs(
        &pki,
        &one_tls_listener("      certificates: [{ cert: a.key, key: a.key }]\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("listeners[1].tls.certificates[0].cert"),
        "{err}"
    );
}

/// A TLS upstream offering `alpn`; answers with the HTTP version and the SNI it saw.
struct TlsUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_upstream(leaf: &Leaf, alpn: &[&[u8]]) -> TlsUpstream {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
    .expect("server cert");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let sni = sni.clone();
                    async move {
                        let v = serde_json::json!({
                            "version": format!("{:?}", req.version()),
                            "sni": sni,
                            "path": req.uri().path(),
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(v.to_string()))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsUpstream { addr, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verification_and_alpn() {
    let pki = Pki::new();
    let both = tls_upstream(&pki.up, &[b"h2", b"http/1.1"]).await;
    let h1_only = tls_upstream(&pki.up, &[b"http/1.1"]).await;
    let yaml = config(&format!(
        r#"upstreams:
  verified:
    targets: [{{ address: "{both}" }}]
    tls: {{ ca: ca.pem, server_name: up.example.test }}
  system_roots:
    targets: [{{ address: "{both}" }}]
    tls: {{ server_name: up.example.test }}
  auto_h1:
    targets: [{{ address: "{h1}" }}]
    protocol: auto
    tls: {{ ca: ca.pem, server_name: up.example.test }}
  auto_h2:
    targets: [{{ address: "{both}" }}]
    protocol: auto
    tls: {{ ca: ca.pem, server_name: up.example.test }}
routes:
  - {{ name: verified, match: {{ path_prefix: /verified }}, upstream: verified }}
  - {{ name: system_roots, match: {{ path_prefix: /system }}, upstream: system_roots }}
  - {{ name: auto_h1, match: {{ path_prefix: /auto-h1 }}, upstream: auto_h1 }}
  - {{ name: auto_h2, match: {{ path_prefix: /auto-h2 }}, upstream: auto_h2 }}
"#,
        both = both.addr,
        h1 = h1_only.addr,
    ));
    let gw = Gateway::start_with(&yaml, |d| pki.write(d));

    // Verified with the configured CA; SNI is the configured server_name; http1 by default.
    let got = get(&gw.url("/verified/x")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let v = got.json();
    assert_eq!(v["sni"], "up.example.test");
    assert_eq!(v["path"], "/verified/x");
    assert_eq!(v["version"], "HTTP/1.1");

    // System roots do not know the test CA: 502 upstream_error, and the log says why.
    let got = get(&gw.url("/system/x")).await;
    assert_eq!(got.status, 502, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.json()["error"]["code"], "upstream_error");
    assert!(
        gw.wait_for_log("upstream call failed", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let line = gw
        .log_lines()
        .into_iter()
        .find(|l| l.contains("upstream call failed") && l.contains("system_roots"))
        .unwrap_or_else(|| panic!("no failure line for system_roots:\n{}", gw.logs()));
    assert!(line.contains("tls"), "{line}");
    assert!(
        line.contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );

    // auto against an upstream offering only http/1.1: works over HTTP/1.1, counted.
    for _ in 0..2 {
        let got = get(&gw.url("/auto-h1/x")).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.json()["version"], "HTTP/1.1");
    }
    // auto against one offering h2: HTTP/2 upstream, even for an HTTP/1.1 client.
    for _ in 0..2 {
        let got = get(&gw.url("/auto-h2/x")).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.json()["version"], "HTTP/2.0");
    }
    let metrics = get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let downgrades = |upstream: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("portcullis_upstream_h2_downgrades_total{")
                    && l.contains(&format!("upstream=\"{upstream}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no downgrade series for {upstream}:\n{text}"))
    };
    assert!(downgrades("auto_h1") > 0, "{text}");
    // The downgrade is logged once, naming the upstream.
    let logged = gw
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("auto_h1") && l.contains("HTTP/1.1"))
        .count();
    assert_eq!(logged, 1, "{}", gw.logs());
    assert_eq!(downgrades("auto_h2"), 0, "{text}");
}
