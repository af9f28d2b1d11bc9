//! Body phases: what a plugin may ask of request and response bodies.
//!
//! Most plugins never look at a body, and a route whose plugins do not costs nothing for them:
//! the gateway checks [`Plugin::has_body_phases`](crate::Plugin::has_body_phases) once per
//! route when a config is built, and only such routes ask each plugin, per request and after
//! the head phases, what it needs:
//!
//! - [`BodyAccess::Buffered`]: the whole body, read up to a limit (a request body beyond it
//!   is answered 413 `body_too_large`, a response body beyond it 502 `upstream_error`), then
//!   handed to `on_request_body` / `on_response_body`, which may replace it (with its
//!   trailers, for a response) and change the head. The gateway sets `Content-Length`.
//! - [`BodyAccess::Stream`]: a [`BodyTransform`] the plugin returns, fed each chunk as it
//!   passes and the trailers at the end, without buffering.
//!
//! When several plugins ask, buffered phases run first in plugin order, then stream
//! transforms chain in plugin order.

use bytes::Bytes;
use http::HeaderMap;

/// How a plugin wants to see a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyAccess {
    /// The whole body, up to `limit` bytes.
    Buffered {
        /// Largest body read; more is refused.
        limit: u64,
    },
    /// Chunk by chunk, through the plugin's [`BodyTransform`].
    Stream,
}

/// A streamed body transformation: per-request state lives in the value itself.
pub trait BodyTransform: Send + 'static {
    /// One data chunk in; the bytes to pass on (may be empty, to hold data back).
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, BodyError>;

    /// The end of the body, with its trailers: the last bytes to pass on and the trailers to
    /// send (trailers may be dropped, kept, made or changed).
    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<BodyEnd, BodyError>;
}

/// What a [`BodyTransform`] emits at the end of a body.
#[derive(Debug, Default)]
pub struct BodyEnd {
    /// Last bytes, if any.
    pub data: Option<Bytes>,
    /// Trailers to send, if any.
    pub trailers: Option<HeaderMap>,
}

/// A body could not be transformed; the stream is aborted with this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Runs `chain` on one chunk: each transform's output is the next one's input.
pub fn chain_data(chain: &mut [Box<dyn BodyTransform>], chunk: Bytes) -> Result<Bytes, BodyError> {
    let mut cur = chunk;
    for t in chain.iter_mut() {
        cur = t.data(cur)?;
    }
    Ok(cur)
}

/// Ends `chain`: each transform's last bytes go through the transforms after it before they
/// end in turn. Returns the bytes still to send and the final trailers.
pub fn chain_end(
    chain: &mut [Box<dyn BodyTransform>],
    trailers: Option<HeaderMap>,
) -> Result<BodyEnd, BodyError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut trailers = trailers;
    for i in 0..chain.len() {
        let end = chain[i].end(trailers.take())?;
        if let Some(d) = end.data {
            let mut d = d;
            for later in chain[i + 1..].iter_mut() {
                d = later.data(d)?;
            }
            pending.extend_from_slice(&d);
        }
        trailers = end.trailers;
    }
    Ok(BodyEnd {
        data: (!pending.is_empty()).then(|| Bytes::from(pending)),
        trailers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-cases data and counts bytes into a trailer.
    struct Upper(usize);

    impl BodyTransform for Upper {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
            self.0 += chunk.len();
            Ok(Bytes::from(chunk.to_ascii_uppercase()))
        }
        fn end(&mut self, trailers: Option<HeaderMap>) -> Result<BodyEnd, BodyError> {
            let mut t = trailers.unwrap_or_default();
            t.insert("x-bytes", self.0.into());
            Ok(BodyEnd {
                data: Some(Bytes::from_static(b"!")),
                trailers: Some(t),
            })
        }
    }

    /// Holds everything back and emits it wrapped in brackets at the end.
    struct Wrap(Vec<u8>);

    impl BodyTransform for Wrap {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
            self.0.extend_from_slice(&chunk);
            Ok(Bytes::new())
        }
        fn end(&mut self, trailers: Option<HeaderMap>) -> Result<BodyEnd, BodyError> {
            Ok(BodyEnd {
                data: Some(Bytes::from(format!(
                    "[{}]",
                    String::from_utf8_lossy(&self.0)
                ))),
                trailers,
            })
        }
    }

    #[test]
    fn transforms_chain_in_order_and_end_in_order() {
        let mut chain: Vec<Box<dyn BodyTransform>> =
            vec![Box::new(Upper(0)), Box::new(Wrap(Vec::new()))];
        assert_eq!(
            chain_data(&mut chain, Bytes::from_static(b"ab")).unwrap(),
            ""
        );
        assert_eq!(
            chain_data(&mut chain, Bytes::from_static(b"c")).unwrap(),
            ""
        );
        let end = chain_end(&mut chain, None).unwrap();
        // Upper's "!" went through Wrap before Wrap ended.
        assert_eq!(end.data.unwrap(), "[ABC!]");
        assert_eq!(end.trailers.unwrap()["x-bytes"], "3");
    }
}
