//! Checks at the edge, before routing: framing and size limits, the Host rules of RFC 9112,
//! and the one normalised path that is routed, seen by plugins and sent upstream.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri, Version};
use portcullis_router::{PathPolicy, normalize_path};

use crate::errors::GatewayError;

/// A request refused at the edge: the error to answer and the reason to log and count.
pub(super) struct Refusal {
    pub error: GatewayError,
    pub reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: GatewayError::bad_request(message),
            reason,
        }
    }
}

/// Rejects what must never be forwarded: ambiguous framing, oversized heads and bodies.
pub(super) fn check_request(
    parts: &http::request::Parts,
    max_header_bytes: usize,
    max_body_bytes: u64,
) -> Result<(), GatewayError> {
    let h = &parts.headers;
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(GatewayError::bad_request(
            "both Content-Length and Transfer-Encoding: ambiguous framing is refused",
        ));
    }
    let mut cl_values = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = cl_values.next() {
        if cl_values.any(|v| v != first) {
            return Err(GatewayError::bad_request(
                "differing Content-Length headers",
            ));
        }
        let len = first
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| GatewayError::bad_request("invalid Content-Length"))?;
        if len > max_body_bytes {
            return Err(GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {max_body_bytes} bytes"),
            ));
        }
    }
    let uri_len = parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    let mut size = parts.method.as_str().len() + uri_len + 12;
    for (n, v) in h {
        size += n.as_str().len() + v.len() + 4;
    }
    if size > max_header_bytes {
        return Err(GatewayError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers larger than {max_header_bytes} bytes"),
        ));
    }
    Ok(())
}

/// The host the request is for, by the rules of RFC 9112 §3.2 and RFC 9113 §8.3.1:
///
/// - HTTP/1.1 without `Host`: refused (400), as §3.2 requires;
/// - more than one `Host` header: refused, since routing and the upstream could each pick
///   another one;
/// - HTTP/1.x absolute-form (`GET http://a.example/x`): the target's authority wins over `Host`
///   (§3.2.2), and `Host` is rewritten to it so the upstream sees the host that was routed on;
/// - HTTP/2: `:authority` and `Host`, when both are sent, must agree (case-insensitively);
/// - a `Host` that is not a valid `host[:port]` (spaces, `@` user info, `/`) is refused.
///
/// Returns the host to route on (`None` for an empty `Host`, or none on HTTP/1.0).
pub(super) fn host(parts: &mut http::request::Parts) -> Result<Option<HeaderValue>, Refusal> {
    let mut all = parts.headers.get_all(header::HOST).iter();
    let first = all.next();
    if first.is_some() && all.next().is_some() {
        return Err(Refusal::bad(
            "host_repeated",
            "more than one Host header: the target is ambiguous",
        ));
    }
    let first = first.cloned();
    if let Some(h) = &first
        && !valid_host(h.as_bytes())
    {
        return Err(Refusal::bad(
            "host_invalid",
            "the Host header is not a valid host[:port]",
        ));
    }
    let authority = parts.uri.authority();
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => match (authority, first) {
            (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => Err(
                Refusal::bad("host_mismatch", ":authority and Host name different hosts"),
            ),
            (Some(a), _) => Ok(HeaderValue::from_str(a.as_str()).ok()),
            (None, h) => Ok(h.filter(|h| !h.is_empty())),
        },
        v => {
            if first.is_none() && v == Version::HTTP_11 {
                return Err(Refusal::bad(
                    "host_missing",
                    "an HTTP/1.1 request must have a Host header",
                ));
            }
            match authority {
                Some(a) => {
                    if a.as_str().contains('@') {
                        return Err(Refusal::bad(
                            "host_invalid",
                            "user info in the request target is refused",
                        ));
                    }
                    let v = HeaderValue::from_str(a.as_str()).map_err(|_| {
                        Refusal::bad("host_invalid", "the request target's authority is invalid")
                    })?;
                    // The authority wins: the upstream must see the host that was routed on.
                    parts.headers.insert(header::HOST, v.clone());
                    Ok(Some(v))
                }
                None => Ok(first.filter(|h| !h.is_empty())),
            }
        }
    }
}

/// `host[:port]`: reg-name or IP-literal characters, no user info, path, query or spaces.
fn valid_host(h: &[u8]) -> bool {
    h.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// Normalises the request path in place by the listener's policy (the query is untouched).
pub(super) fn normalize(
    parts: &mut http::request::Parts,
    policy: &PathPolicy,
) -> Result<(), Refusal> {
    let path = parts.uri.path();
    let normal = match normalize_path(path, policy) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(p)) => p,
        Err(e) => {
            return Err(Refusal::bad(
                e.reason(),
                format!("refused request path: {e}"),
            ));
        }
    };
    let pq = match parts.uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(
        PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq))
            .map_err(|_| Refusal::bad("path_invalid", "the normalised path is not a valid URI"))?,
    );
    parts.uri = Uri::from_parts(uri)
        .map_err(|_| Refusal::bad("path_invalid", "the normalised path is not a valid URI"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> http::request::Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn reason(r: Result<Option<HeaderValue>, Refusal>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(r) => r.reason,
        }
    }

    #[test]
    fn host_rules() {
        let ok = |v, uri, hosts: &[&str]| host(&mut parts(v, uri, hosts)).ok().flatten();
        assert_eq!(
            ok(Version::HTTP_11, "/x", &["a.example"]).unwrap(),
            "a.example"
        );
        assert_eq!(ok(Version::HTTP_10, "/x", &[]), None);
        assert_eq!(ok(Version::HTTP_11, "/x", &[""]), None);
        assert_eq!(
            reason(host(&mut parts(Version::HTTP_11, "/x", &[]))),
            "host_missing"
        );
        assert_eq!(
            reason(host(&mut parts(Version::HTTP_11, "/x", &["a", "b"]))),
            "host_repeated"
        );
        assert_eq!(
            reason(host(&mut parts(Version::HTTP_11, "/x", &["a@b"]))),
            "host_invalid"
        );
        assert_eq!(
            reason(host(&mut parts(Version::HTTP_11, "/x", &["a b"]))),
            "host_invalid"
        );
        // Absolute-form: the authority wins and becomes the Host sent upstream.
        let mut p = parts(Version::HTTP_11, "http://b.example:81/x", &["a.example"]);
        assert_eq!(host(&mut p).ok().flatten().unwrap(), "b.example:81");
        assert_eq!(p.headers[header::HOST], "b.example:81");
        // HTTP/2: :authority and Host must agree.
        assert_eq!(
            reason(host(&mut parts(
                Version::HTTP_2,
                "http://a.example/x",
                &["b.example"]
            ))),
            "host_mismatch"
        );
        assert_eq!(
            ok(Version::HTTP_2, "http://a.example/x", &["A.example"]).unwrap(),
            "a.example"
        );
        assert_eq!(
            ok(Version::HTTP_2, "/x", &["h.example"]).unwrap(),
            "h.example"
        );
    }

    #[test]
    fn the_normalised_path_replaces_the_path_and_keeps_the_query() {
        let mut p = parts(
            Version::HTTP_11,
            "/api/%2e%2e//admin/?a=%2e%2e&b=/../",
            &["h"],
        );
        assert!(normalize(&mut p, &PathPolicy::default()).is_ok());
        assert_eq!(p.uri, "/admin/?a=%2e%2e&b=/../");
        let mut p = parts(Version::HTTP_2, "https://h.example/a/../b?q", &[]);
        assert!(normalize(&mut p, &PathPolicy::default()).is_ok());
        assert_eq!(p.uri, "https://h.example/b?q");
        let mut p = parts(Version::HTTP_11, "/../x", &["h"]);
        assert_eq!(
            normalize(&mut p, &PathPolicy::default())
                .err()
                .map(|r| r.reason),
            Some("path_above_root")
        );
    }
}
