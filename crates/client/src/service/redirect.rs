//! Following redirects: which statuses, which method and body the next request gets, which
//! headers are dropped when the redirect leaves the origin, and what is refused.
//!
//! Pure functions of the response and the request, so each rule is unit-tested here; the
//! client applies them between hops (`client.rs`).

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use crate::error::{Error, ErrorKind};

/// How redirects are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirects {
    max: u32,
    https_to_http: bool,
}

impl Default for Redirects {
    /// At most 10 redirects; https to http refused.
    fn default() -> Self {
        Self::limit(10)
    }
}

impl Redirects {
    /// Follows at most `max` redirects; one more is an error (`ErrorKind::Redirect`). 0 is
    /// the same as [`none`](Self::none).
    pub const fn limit(max: u32) -> Self {
        Self {
            max,
            https_to_http: false,
        }
    }

    /// Follows none: a 3xx response is returned as it is.
    pub const fn none() -> Self {
        Self::limit(0)
    }

    /// Whether a redirect from `https` to `http` is followed (refused by default: the rest of
    /// the exchange would travel in clear text).
    pub const fn allow_https_to_http(mut self, allow: bool) -> Self {
        self.https_to_http = allow;
        self
    }

    /// The most redirects followed.
    pub const fn max(&self) -> u32 {
        self.max
    }
}

/// One redirect followed: `from` answered `status` with a `Location` that led to `to`.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The URL that answered with a redirect.
    pub from: Uri,
    /// Its status (301, 302, 303, 307 or 308).
    pub status: StatusCode,
    /// Where it led (resolved against `from`).
    pub to: Uri,
}

/// What to do with a response.
#[derive(Debug)]
pub(crate) enum Next {
    /// Not a redirect to follow: hand the response to the caller.
    Return,
    /// Follow: the next request's URL and method, and whether it keeps the body.
    Follow {
        to: Uri,
        method: Method,
        keep_body: bool,
    },
    /// A redirect that must not be followed and must not pass silently either.
    Refuse(Error),
}

/// Decides whether and how a response to `method current` is followed, after `followed`
/// redirects. `replayable` says whether the request body can be sent again.
pub(crate) fn next(
    policy: Redirects,
    followed: u32,
    status: StatusCode,
    method: &Method,
    current: &Uri,
    location: Option<&HeaderValue>,
    replayable: bool,
) -> Next {
    if policy.max == 0 || !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Next::Return;
    }
    let Some(location) = location else {
        // A 3xx without a Location is just a response.
        return Next::Return;
    };
    if followed >= policy.max {
        return Next::Refuse(refused(format!(
            "more than {} redirects (last: {status} from {current})",
            policy.max
        )));
    }
    let to = match resolve(current, location) {
        Ok(to) => to,
        Err(e) => return Next::Refuse(e),
    };
    if current.scheme() == Some(&http::uri::Scheme::HTTPS)
        && to.scheme() == Some(&http::uri::Scheme::HTTP)
        && !policy.https_to_http
    {
        return Next::Refuse(refused(format!(
            "https to http redirect refused ({current} -> {to})"
        )));
    }
    let (method, keep_body) = match status.as_u16() {
        // 303: see other — fetch it with GET (HEAD stays HEAD), never with the body.
        303 if *method != Method::HEAD => (Method::GET, false),
        303 => (Method::HEAD, false),
        // 301/302: what every client does — a POST becomes a GET without body.
        301 | 302 if *method == Method::POST => (Method::GET, false),
        // 307/308 (and 301/302 of other methods): same method, same body.
        _ => (method.clone(), true),
    };
    if keep_body && !replayable {
        // The body was streamed and is gone: the caller gets the redirect itself.
        return Next::Return;
    }
    Next::Follow {
        to,
        method,
        keep_body,
    }
}

fn refused(msg: String) -> Error {
    Error::new(ErrorKind::Redirect).with_source(msg)
}

/// `Location` resolved against the URL that sent it (absolute, path, relative or
/// scheme-relative), without fragment; only http and https are followed.
pub(crate) fn resolve(current: &Uri, location: &HeaderValue) -> Result<Uri, Error> {
    let loc = location
        .to_str()
        .map_err(|_| refused("Location is not ASCII text".into()))?;
    let base = url::Url::parse(&current.to_string())
        .map_err(|e| refused(format!("cannot resolve Location against {current}: {e}")))?;
    let mut to = base
        .join(loc)
        .map_err(|e| refused(format!("invalid Location `{loc}`: {e}")))?;
    if !matches!(to.scheme(), "http" | "https") {
        return Err(refused(format!(
            "Location `{loc}` is not an http or https URL"
        )));
    }
    to.set_fragment(None);
    Uri::try_from(to.as_str()).map_err(|e| refused(format!("invalid Location `{loc}`: {e}")))
}

/// Whether two absolute URLs share scheme, host and port.
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme()
        && a.host()
            .zip(b.host())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && port_of(a) == port_of(b)
}

/// The URL's port, or its scheme's default.
pub(crate) fn port_of(u: &Uri) -> u16 {
    u.port_u16()
        .unwrap_or(if u.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        })
}

/// Headers that carry credentials: never sent to another origin than the one they were
/// given for.
pub(crate) const CREDENTIALS: [header::HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

/// Prepares the headers of the next hop.
pub(crate) fn next_headers(headers: &mut HeaderMap, cross_origin: bool, keep_body: bool) {
    if cross_origin {
        for h in &CREDENTIALS {
            headers.remove(h);
        }
        // A Host set by the caller named the first origin.
        headers.remove(header::HOST);
    }
    if !keep_body {
        for h in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
    }
}

#[cfg(test)]
mod tests;
