//! Building one request: URL, headers, query, body, and the options of this call.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, header};

use super::client::Client;
use super::redirect::Redirects;
use super::response::Response;
use crate::error::{BoxError, Error, ErrorKind};
use crate::upstream::RequestBody;

/// Options of one call, carried in the request's extensions (so an [`http::Request`] given
/// to [`Client::execute`] can set them too).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Deadline of the whole call (redirects, retries and the body included); the client's
    /// when `None`.
    pub timeout: Option<Duration>,
    /// Redirect policy; the client's when `None`.
    pub redirects: Option<Redirects>,
}

/// A request being built; [`send`](Self::send) sends it.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
    request: Result<Request<RequestBody>, Error>,
}

fn invalid(e: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::InvalidRequest).with_source(e)
}

impl RequestBuilder {
    pub(crate) fn new<U>(client: Client, method: Method, url: U) -> Self
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        let request = Uri::try_from(url)
            .map_err(|e| invalid(e.into()))
            .map(|uri| {
                let mut r = Request::new(RequestBody::Empty);
                *r.method_mut() = method;
                *r.uri_mut() = uri;
                r
            });
        Self { client, request }
    }

    fn map(mut self, f: impl FnOnce(&mut Request<RequestBody>) -> Result<(), Error>) -> Self {
        if let Ok(r) = &mut self.request
            && let Err(e) = f(r)
        {
            self.request = Err(e);
        }
        self
    }

    /// Adds a header (appended to any of the same name).
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        let name = HeaderName::try_from(name).map_err(|e| invalid(e.into()));
        let value = HeaderValue::try_from(value).map_err(|e| invalid(e.into()));
        self.map(|r| {
            r.headers_mut().append(name?, value?);
            Ok(())
        })
    }

    /// Adds these headers (replacing those of the same names).
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|r| {
            r.headers_mut().extend(headers);
            Ok(())
        })
    }

    /// `Authorization: Bearer <token>` (dropped when a redirect leaves the origin).
    pub fn bearer_auth(self, token: impl std::fmt::Display) -> Self {
        let value = HeaderValue::try_from(format!("Bearer {token}")).map(|mut v| {
            v.set_sensitive(true);
            v
        });
        self.map(|r| {
            r.headers_mut()
                .insert(header::AUTHORIZATION, value.map_err(invalid)?);
            Ok(())
        })
    }

    /// Appends `key=value` pairs to the query, form-urlencoded.
    pub fn query<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        self.map(|r| {
            let uri = r.uri();
            let mut q = uri.query().unwrap_or("").to_owned();
            {
                let mut ser = url::form_urlencoded::Serializer::for_suffix(&mut q, 0);
                for (k, v) in pairs {
                    ser.append_pair(k.as_ref(), v.as_ref());
                }
            }
            let pq = if q.is_empty() {
                uri.path().to_owned()
            } else {
                format!("{}?{q}", uri.path())
            };
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq.parse().map_err(invalid)?);
            *r.uri_mut() = Uri::from_parts(parts).map_err(invalid)?;
            Ok(())
        })
    }

    /// The body: bytes in memory (sent again on a retry or a 307/308 redirect) or a stream
    /// ([`RequestBody::stream`]; never sent twice).
    pub fn body(self, body: impl Into<RequestBody>) -> Self {
        let body = body.into();
        self.map(|r| {
            *r.body_mut() = body;
            Ok(())
        })
    }

    /// A JSON body, with `Content-Type: application/json` unless one is set.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let encoded = serde_json::to_vec(value).map_err(invalid);
        self.map(|r| {
            *r.body_mut() = RequestBody::bytes(encoded?);
            r.headers_mut()
                .entry(header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Ok(())
        })
    }

    /// A deadline for this whole call: redirects, retries and reading the body included
    /// (`ErrorKind::DeadlineExceeded`).
    pub fn timeout(self, d: Duration) -> Self {
        self.map(|r| {
            options(r).timeout = Some(d);
            Ok(())
        })
    }

    /// Redirect policy of this call.
    pub fn redirects(self, policy: Redirects) -> Self {
        self.map(|r| {
            options(r).redirects = Some(policy);
            Ok(())
        })
    }

    /// An `Idempotency-Key`: the server deduplicates by it, so this request may be retried
    /// (after a reset, a timeout or a retried status) even when its method is not
    /// idempotent.
    pub fn idempotency_key(self, key: impl AsRef<str>) -> Self {
        let value = HeaderValue::try_from(key.as_ref()).map_err(invalid);
        self.map(|r| {
            r.headers_mut().insert("idempotency-key", value?);
            Ok(())
        })
    }

    /// The [`http::Request`] this would send (options in its extensions as
    /// [`CallOptions`]).
    pub fn build(self) -> Result<Request<RequestBody>, Error> {
        self.request
    }

    /// Sends it. Dropping the future cancels the call: its connection is closed, never
    /// returned to the pool half-used.
    pub async fn send(self) -> Result<Response, Error> {
        self.client.execute(self.request?).await
    }
}

fn options(r: &mut Request<RequestBody>) -> &mut CallOptions {
    r.extensions_mut().get_or_insert_default::<CallOptions>()
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        RequestBody::bytes(b)
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(b: Vec<u8>) -> Self {
        RequestBody::bytes(b)
    }
}

impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        RequestBody::bytes(s)
    }
}

impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        RequestBody::bytes(s)
    }
}

impl From<&'static [u8]> for RequestBody {
    fn from(s: &'static [u8]) -> Self {
        RequestBody::bytes(s)
    }
}

impl From<()> for RequestBody {
    fn from(_: ()) -> Self {
        RequestBody::Empty
    }
}

impl RequestBody {
    /// A streamed body (a file, a channel): sent once, never replayed, so a request with it
    /// is not retried once written and a 307/308 redirect is returned rather than followed.
    pub fn stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        RequestBody::Stream(body.map_err(Into::into).boxed_unsync())
    }
}
