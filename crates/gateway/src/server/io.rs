//! The client connection's byte stream as hyper sees it: reads and writes counted for the
//! watchdog, HTTP/1.1 framing followed, and the contract's JSON error written in place of the
//! answers hyper makes by itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::connection::ServerIo;
use super::framing::FramingWatch;
use crate::errors::GatewayError;
use crate::state::ConnInfo;

/// Counts reads and writes for the connection's watchdog and follows HTTP/1.1 framing.
pub(super) struct Counted {
    pub(super) io: ServerIo,
    pub(super) info: Arc<ConnInfo>,
    pub(super) framing: Option<FramingWatch>,
    /// A contract error being written in place of one of hyper's own answers.
    pub(super) rewrite: Option<Box<Rewrite>>,
}

/// Replacement bytes for a head hyper wrote, and how much of hyper's buffer they stand for.
pub(super) struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    consumed: usize,
}

/// Recognises the answer hyper writes by itself to an HTTP/1.1 request it cannot parse (a
/// malformed head, differing duplicate Content-Length, a head past its buffer, a URI too
/// long): status 400, 431 or 414, an empty body, `connection: close`, and none of the headers
/// every gateway response carries (`x-request-id`). hyper offers no hook for these, so the contract's JSON error is
/// swapped in as the bytes go out. Returns the error, the length of hyper's head, and its
/// `date` line.
fn hyper_auto_error(buf: &[u8], max_header_bytes: usize) -> Option<(GatewayError, usize, &[u8])> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    let err = match status {
        b"400 " => GatewayError::bad_request("malformed request head"),
        b"431 " => GatewayError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers larger than {max_header_bytes} bytes"),
        ),
        b"414 " => GatewayError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "request target longer than the request head may be",
        ),
        _ => return None,
    };
    let window = &buf[..buf.len().min(512)];
    let end = window.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..end];
    let mut date: &[u8] = b"";
    let (mut empty, mut closing) = (false, false);
    for line in head.split(|b| *b == b'\n').skip(1) {
        if line.starts_with(b"x-request-id:") {
            return None;
        }
        empty |= line == b"content-length: 0\r";
        closing |= line == b"connection: close\r";
        if line.starts_with(b"date: ") {
            date = line;
        }
    }
    (empty && closing).then_some((err, end, date))
}

impl Counted {
    /// Writes `buf` through, or, for one of hyper's own error heads, the contract's JSON error
    /// instead (reported as `buf`'s head written).
    fn write_or_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        if self.rewrite.is_none() {
            let h1 = self.framing.as_ref().is_some_and(|w| !w.switched);
            if !h1 || !buf.starts_with(b"HTTP/1.1 4") {
                return None;
            }
            let (err, consumed, date) =
                hyper_auto_error(buf, self.info.listener.limits.max_header_bytes)?;
            let rid = crate::proxy::new_request_id();
            let rid = rid.to_str().unwrap_or("0");
            let mut extra = date.to_vec();
            if !extra.is_empty() {
                extra.push(b'\n');
            }
            debug!(peer = %self.info.peer, status = err.status.as_u16(), request_id = rid, "request head refused by the HTTP/1.1 parser");
            self.info
                .shared
                .metrics
                .refused_heads
                .with_label_values(&[&self.info.listener.name, err.status.as_str()])
                .inc();
            let bytes = crate::errors::render_http1(&err, rid, &extra);
            let line = self
                .framing
                .as_ref()
                .map_or((None, None), FramingWatch::request_line);
            let rec = crate::telemetry::Record::refused_head(
                self.info.listener.name.clone(),
                self.info.peer.ip(),
                line,
                HeaderValue::from_str(rid).unwrap_or_else(|_| HeaderValue::from_static("0")),
                err.status.as_u16(),
                err.code,
            );
            crate::telemetry::log_unrouted(
                &rec,
                bytes.len() as u64,
                &self.info.shared.snapshot.load(),
            );
            self.rewrite = Some(Box::new(Rewrite {
                bytes,
                written: 0,
                consumed,
            }));
        }
        let rw = self.rewrite.as_mut()?;
        while rw.written < rw.bytes.len() {
            let r = match &mut self.io {
                ServerIo::Plain(s) => Pin::new(s).poll_write(cx, &rw.bytes[rw.written..]),
                ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, &rw.bytes[rw.written..]),
            };
            match r {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Ok(0))),
                Poll::Ready(Ok(n)) => rw.written += n,
                other => return Some(other),
            }
        }
        let consumed = rw.consumed;
        self.rewrite = None;
        self.info.state.activity.fetch_add(1, Ordering::Relaxed);
        Some(Poll::Ready(Ok(consumed)))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.info.state.reads.fetch_add(1, Ordering::Relaxed);
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = &mut this.framing {
                w.feed(&buf.filled()[before..]);
                if w.ambiguous != 0 {
                    this.info
                        .state
                        .ambiguous
                        .store(w.ambiguous, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.write_or_rewrite(cx, buf) {
            return r;
        }
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(r) = this.write_or_rewrite(cx, first)
        {
            return r;
        }
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ServerIo::Plain(s) => s.is_write_vectored(),
            ServerIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ServerIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ServerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hyper_auto_error;

    #[test]
    fn only_hyper_s_own_error_heads_are_recognised() {
        let own = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 14:28:52 GMT\r\n\r\n";
        let (e, end, date) = hyper_auto_error(own, 1024).expect("hyper's own 400");
        assert_eq!(
            (e.status.as_u16(), e.code, end),
            (400, "bad_request", own.len())
        );
        assert_eq!(date, b"date: Mon, 23 Nov 2026 14:28:52 GMT\r");
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            hyper_auto_error(big, 1024).expect("431").0.code,
            "headers_too_large"
        );
        for other in [
            // A response the gateway made or proxied: it carries X-Request-ID.
            &b"HTTP/1.1 400 Bad Request\r\nx-request-id: abc\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            // With a body, or on a connection that stays open.
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            // Another status, or a head not whole in this write.
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-len",
        ] {
            assert!(hyper_auto_error(other, 1024).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
