//! `client_cert`: the route needs a client certificate verified at the TLS handshake (an mTLS
//! listener, `tls.client_auth`), optionally one whose subject CN or URI SAN (a SPIFFE ID)
//! matches an allow-list, and passes the caller's identity upstream in headers.
//!
//! The identity headers are filled from the certificate only; client-sent copies are removed on
//! every route by the gateway (see [`Plugin::reserved_headers`]), so an upstream can trust them.

mod identity;

use std::sync::Arc;

use http::{HeaderName, StatusCode};
use serde::Deserialize;

pub use identity::{ClientIdentity, IdentityError};

use crate::metrics::{Counter, counter};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `client_cert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Globs on the subject's CN; when given, one must match (`*` any run of characters, `?`
    /// one).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Globs on the URI SANs (SPIFFE IDs); when given, one SAN must match one of them.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Headers the identity is sent upstream in.
    #[serde(default)]
    pub headers: Headers,
    /// What becomes the request's consumer (rate limits, logs): `cn` (default; the first URI
    /// SAN when there is no CN), `uri_san`, or `none`.
    #[serde(default)]
    pub consumer: Option<String>,
}

/// Identity headers sent upstream; each is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// The subject DN (RFC 4514: `CN=acme-1,O=Acme`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The URI SANs, one header value each.
    #[serde(default)]
    pub uri_san: Option<String>,
    /// SHA-256 of the DER certificate, lowercase hex.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The PEM certificate, URL-encoded.
    #[serde(default)]
    pub cert: Option<String>,
}

/// Where the consumer name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerFrom {
    Cn,
    UriSan,
    None,
}

/// The plugin instance.
#[derive(Debug)]
pub struct ClientCert {
    subjects: Vec<String>,
    sans: Vec<String>,
    subject: Option<HeaderName>,
    uri_san: Option<HeaderName>,
    fingerprint: Option<HeaderName>,
    cert: Option<HeaderName>,
    reserved: Vec<HeaderName>,
    consumer: ConsumerFrom,
    missing: Counter,
    subject_refused: Counter,
    san_refused: Counter,
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    let name = |field: &str, s: &Option<String>| -> Result<Option<HeaderName>, PluginConfigError> {
        s.as_deref()
            .map(|s| {
                HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    PluginConfigError {
                        path: format!("headers.{field}"),
                        message: format!("`{s}` is not a header name"),
                    }
                })
            })
            .transpose()
    };
    let subject = name("subject", &c.headers.subject)?;
    let uri_san = name("uri_san", &c.headers.uri_san)?;
    let fingerprint = name("fingerprint", &c.headers.fingerprint)?;
    let cert = name("cert", &c.headers.cert)?;
    let mut reserved: Vec<HeaderName> = Vec::new();
    for (field, h) in [
        ("subject", &subject),
        ("uri_san", &uri_san),
        ("fingerprint", &fingerprint),
        ("cert", &cert),
    ] {
        let Some(h) = h else { continue };
        if reserved.contains(h) {
            return Err(PluginConfigError {
                path: format!("headers.{field}"),
                message: format!("header `{h}` is already used for another field"),
            });
        }
        reserved.push(h.clone());
    }
    for (field, globs) in [("subjects", &c.subjects), ("sans", &c.sans)] {
        if let Some(i) = globs.iter().position(|g| g.is_empty()) {
            return Err(PluginConfigError {
                path: format!("{field}[{i}]"),
                message: "an empty pattern matches nothing; use `*` for any".into(),
            });
        }
    }
    let consumer = match c.consumer.as_deref() {
        None | Some("cn") => ConsumerFrom::Cn,
        Some("uri_san") => ConsumerFrom::UriSan,
        Some("none") => ConsumerFrom::None,
        Some(o) => {
            return Err(PluginConfigError {
                path: "consumer".into(),
                message: format!("unknown consumer source `{o}`: cn, uri_san or none"),
            });
        }
    };
    let reason = |r: &str| {
        counter(
            "portcullis_auth_failures_total",
            "Requests refused by an authentication plugin, by reason.",
            &[
                ("plugin", "client_cert"),
                ("scope", ctx.scope),
                ("reason", r),
            ],
        )
    };
    Ok(Arc::new(ClientCert {
        subjects: c.subjects,
        sans: c.sans,
        subject,
        uri_san,
        fingerprint,
        cert,
        reserved,
        consumer,
        missing: reason("missing_cert"),
        subject_refused: reason("subject_not_allowed"),
        san_refused: reason("san_not_allowed"),
    }))
}

/// Whether `s` matches `pattern`: `*` stands for any run of characters (`/` included), `?`
/// for one; everything else matches itself, case-sensitively.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    // Where the last `*` was, and where in `s` it is tried to end: one backtrack point is
    // enough for `*`-only globs, which keeps this linear in practice.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

fn refuse(status: StatusCode, code: &'static str, message: String) -> Step<'static> {
    Step::Done(Flow::Respond(Reply::error(status, code, message)))
}

impl Plugin for ClientCert {
    fn name(&self) -> &'static str {
        "client_cert"
    }

    fn reserved_headers(&self) -> &[HeaderName] {
        &self.reserved
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        let Some(id) = ctx.client_cert.clone() else {
            self.missing.inc();
            return refuse(
                StatusCode::UNAUTHORIZED,
                "client_cert_required",
                "this route needs a client certificate".into(),
            );
        };
        if !self.subjects.is_empty()
            && !id
                .common_name()
                .is_some_and(|cn| self.subjects.iter().any(|g| glob(g, cn)))
        {
            self.subject_refused.inc();
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client certificate's subject is not allowed on this route".into(),
            );
        }
        if !self.sans.is_empty()
            && !id
                .uri_sans()
                .iter()
                .any(|u| self.sans.iter().any(|g| glob(g, u)))
        {
            self.san_refused.inc();
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no URI SAN of the client certificate is allowed on this route".into(),
            );
        }
        let h = &mut req.headers;
        if let (Some(n), Some(v)) = (&self.subject, id.subject_header()) {
            h.insert(n.clone(), v.clone());
        }
        if let Some(n) = &self.uri_san {
            for v in id.uri_san_headers() {
                h.append(n.clone(), v.clone());
            }
        }
        if let (Some(n), Some(v)) = (&self.fingerprint, id.fingerprint_header()) {
            h.insert(n.clone(), v.clone());
        }
        if let (Some(n), Some(v)) = (&self.cert, id.escaped_pem_header()) {
            h.insert(n.clone(), v.clone());
        }
        let first_san = || id.uri_sans().first().cloned();
        let consumer = match self.consumer {
            ConsumerFrom::Cn => id.common_name().map(str::to_owned).or_else(first_san),
            ConsumerFrom::UriSan => first_san(),
            ConsumerFrom::None => None,
        };
        if consumer.is_some() {
            ctx.consumer = consumer;
        }
        ctx.client_cert_authenticated = true;
        Step::CONTINUE
    }
}

#[cfg(test)]
mod tests;
