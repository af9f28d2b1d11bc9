//! Body types of the proxy: the client's request body as sent upstream (counted against the
//! listener's limit as it streams) and the response body sent to the client. Enums rather than
//! boxed trait objects, so the hot path allocates nothing for them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use portcullis_client::{BoxError, ResponseBody};
use portcullis_plugins::BodyTransform;
use portcullis_plugins::body::{chain_data, chain_end};

/// Plugins' stream transforms of one body, with where the body's end stands.
pub struct Transform {
    chain: Vec<Box<dyn BodyTransform>>,
    done: bool,
    trailers: Option<http::HeaderMap>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transform({} stages)", self.chain.len())
    }
}

impl Transform {
    /// Transforms applied in order.
    pub fn new(chain: Vec<Box<dyn BodyTransform>>) -> Self {
        Self {
            chain,
            done: false,
            trailers: None,
        }
    }

    /// Polls `inner` and passes its frames through the chain: data chunk by chunk (empty
    /// outputs are held back, not sent), then the end with the trailers.
    fn poll<B>(
        &mut self,
        mut inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body<Data = Bytes, Error = BoxError>,
    {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let trailers = match inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => match chain_data(&mut self.chain, d) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                    },
                    Err(frame) => frame.into_trailers().ok(),
                },
                Poll::Ready(None) => None,
            };
            self.done = true;
            match chain_end(&mut self.chain, trailers) {
                Ok(end) => {
                    self.trailers = end.trailers;
                    if let Some(d) = end.data {
                        return Poll::Ready(Some(Ok(Frame::data(d))));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
            }
        }
    }
}

/// The request body exceeded `max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// A small body read whole before sending, so a retry can send it again; the second field
    /// keeps the whole body for that.
    Buffered(Option<Bytes>, Bytes),
    /// The client's body, with the bytes it may still send.
    Stream {
        /// The client's body.
        inner: Incoming,
        /// Bytes left before the limit.
        remaining: u64,
        /// The limit, for the error.
        limit: u64,
        /// Bytes passed so far, when someone counts them (a body without Content-Length).
        counted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    },
    /// A body passed through plugins' stream transforms (never replayed).
    Transformed(Box<ReqBody>, Transform),
    /// A streamed body copied for mirrors as it goes (never replayed).
    Mirrored(Box<ReqBody>, Box<crate::mirror::Tee>),
}

impl ReqBody {
    /// Wraps a client body with a size limit; `counted`, when given, follows the bytes passed.
    pub fn limited(
        inner: Incoming,
        limit: u64,
        counted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    ) -> Self {
        if inner.is_end_stream() {
            return ReqBody::Empty;
        }
        ReqBody::Stream {
            inner,
            remaining: limit,
            limit,
            counted,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Buffered(b, _) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ReqBody::Stream {
                inner,
                remaining,
                limit,
                counted,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        let n = d.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: *limit,
                            }))));
                        }
                        *remaining -= n;
                        if let Some(c) = counted {
                            c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ReqBody::Transformed(inner, t) => t.poll(Pin::new(inner.as_mut()), cx),
            ReqBody::Mirrored(inner, tee) => {
                let r = Pin::new(inner.as_mut()).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            tee.data(d);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => tee.abandon(),
                    Poll::Ready(None) => tee.end(),
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Buffered(b, _) => b.is_none(),
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
            ReqBody::Transformed(_, t) => t.done && t.trailers.is_none(),
            // Polled to its end, so the copies are queued.
            ReqBody::Mirrored(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Buffered(b, _) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReqBody::Stream { inner, .. } => inner.size_hint(),
            ReqBody::Transformed(..) => SizeHint::default(),
            ReqBody::Mirrored(inner, _) => inner.size_hint(),
        }
    }
}

impl portcullis_client::ReplayBody for ReqBody {
    fn replay_bytes(&self) -> Option<Bytes> {
        match self {
            ReqBody::Empty => Some(Bytes::new()),
            ReqBody::Buffered(_, all) => Some(all.clone()),
            ReqBody::Stream { .. } | ReqBody::Transformed(..) | ReqBody::Mirrored(..) => None,
        }
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            ReqBody::Empty
        } else {
            ReqBody::Buffered(Some(bytes.clone()), bytes)
        }
    }
}

impl ReqBody {
    /// Reads a body of known, small length whole, so it can be replayed; `Err` when the
    /// client fails or sends more than it announced.
    pub async fn buffer(mut inner: Incoming, len: u64) -> Result<Self, BoxError> {
        use http_body_util::BodyExt;
        let mut buf = bytes::BytesMut::with_capacity(len as usize);
        while let Some(frame) = inner.frame().await {
            if let Ok(d) = frame?.into_data() {
                if (buf.len() + d.len()) as u64 > len {
                    return Err("request body longer than its Content-Length".into());
                }
                buf.extend_from_slice(&d);
            }
        }
        Ok(Self::from_bytes_frozen(buf.freeze()))
    }

    fn from_bytes_frozen(b: Bytes) -> Self {
        <Self as portcullis_client::ReplayBody>::from_bytes(b)
    }
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client.
    #[project = RespBodyProj]
    #[derive(Debug)]
    pub enum RespBody {
        /// Streamed from an upstream.
        Upstream { #[pin] body: ResponseBody<ReqBody> },
        /// Made by the gateway; `None` once sent.
        Full { data: Option<Bytes> },
        /// Read whole for a plugin's body phase, then sent with its trailers.
        Buffered { data: Option<Bytes>, trailers: Option<http::HeaderMap> },
        /// Passed through plugins' stream transforms.
        Transformed { inner: Pin<Box<RespBody>>, t: Transform },
    }
}

impl RespBody {
    /// A body of these bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        RespBody::Full {
            data: (!b.is_empty()).then_some(b),
        }
    }

    /// Streams an upstream body.
    pub fn upstream(body: ResponseBody<ReqBody>) -> Self {
        RespBody::Upstream { body }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RespBodyProj::Upstream { body } => body
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            RespBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RespBodyProj::Buffered { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            RespBodyProj::Transformed { inner, t } => t.poll(inner.as_mut(), cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Upstream { body } => body.is_end_stream(),
            RespBody::Full { data } => data.is_none(),
            RespBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            RespBody::Transformed { t, .. } => t.done && t.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Upstream { body } => body.size_hint(),
            RespBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RespBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RespBody::Transformed { .. } => SizeHint::default(),
        }
    }
}

/// The `Content-Length` a message declares, when it declares a valid one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use portcullis_plugins::{BodyEnd, BodyError};

    /// Reverses each chunk and appends a trailer count of chunks.
    struct Rev(u32);

    impl BodyTransform for Rev {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
            self.0 += 1;
            if chunk.as_ref() == b"bad" {
                return Err(BodyError("bad chunk".into()));
            }
            Ok(chunk.iter().rev().copied().collect::<Vec<u8>>().into())
        }
        fn end(&mut self, trailers: Option<http::HeaderMap>) -> Result<BodyEnd, BodyError> {
            let mut t = trailers.unwrap_or_default();
            t.insert("x-chunks", self.0.into());
            Ok(BodyEnd {
                data: Some(Bytes::from_static(b".")),
                trailers: Some(t),
            })
        }
    }

    #[tokio::test]
    async fn a_transform_sees_every_chunk_then_the_end_with_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let inner = RespBody::Buffered {
            data: Some(Bytes::from_static(b"abc")),
            trailers: Some(trailers),
        };
        let body = RespBody::Transformed {
            inner: Box::pin(inner),
            t: Transform::new(vec![Box::new(Rev(0))]),
        };
        let got = body.collect().await.expect("body");
        let t = got.trailers().cloned().expect("trailers");
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-chunks"], "1");
        assert_eq!(got.to_bytes(), "cba.");
    }

    #[tokio::test]
    async fn a_failing_transform_aborts_the_body() {
        let inner = RespBody::Buffered {
            data: Some(Bytes::from_static(b"bad")),
            trailers: None,
        };
        let body = RespBody::Transformed {
            inner: Box::pin(inner),
            t: Transform::new(vec![Box::new(Rev(0))]),
        };
        let err = body.collect().await.expect_err("aborted");
        assert!(err.to_string().contains("bad chunk"), "{err}");
    }
}
