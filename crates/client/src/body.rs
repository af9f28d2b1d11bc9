//! The response body handed to the caller: streams the upstream's body, enforces the read idle
//! timeout, and gives the HTTP/1.1 connection back to the pool once the body has ended.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, ErrorKind, classify_hyper};
use crate::upload::Tracked;
use crate::upstream::Target;

pin_project! {
    /// An upstream response body. Dropping it before the end closes the connection (it cannot
    /// be reused mid-body); reading it to the end returns the connection to the pool.
    pub struct ResponseBody<B> {
        #[pin]
        inner: Incoming,
        // Armed on the first wait only: most small bodies arrive with their head and never
        // need a timer, and a smaller body is cheaper to move up the call stack.
        idle: Option<Pin<Box<Sleep>>>,
        read_idle: Duration,
        last_frame: Option<Instant>,
        checkin: Option<http1::SendRequest<Tracked<B>>>,
        target: Option<Arc<Target<B>>>,
        attempts: u32,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(t) = this.target.take() {
                t.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(
        inner: Incoming,
        read_idle: Duration,
        checkin: Option<http1::SendRequest<Tracked<B>>>,
        target: Arc<Target<B>>,
    ) -> Self {
        // A response without a body is complete already: nobody will poll it to the end.
        let checkin = match checkin {
            Some(tx) if inner.is_end_stream() => {
                target.pool.checkin(tx);
                None
            }
            other => other,
        };
        Self {
            inner,
            idle: None,
            read_idle,
            last_frame: None,
            checkin,
            target: Some(target),
            attempts: 1,
        }
    }

    /// Tries it took to get this response (first try included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        self.attempts = n;
    }

    /// The upstream target this body comes from.
    pub fn target(&self) -> Option<&str> {
        self.target.as_ref().map(|t| &*t.authority)
    }

    /// The upstream target this body comes from, shared (no copy of the name).
    pub fn target_name(&self) -> Option<Arc<str>> {
        self.target.as_ref().map(|t| t.authority.clone())
    }
}

impl<B> ResponseBody<B> {
    /// The body ended cleanly: the connection may serve another request.
    fn finish(self: Pin<&mut Self>) {
        let this = self.project();
        if let (Some(tx), Some(t)) = (this.checkin.take(), this.target.as_ref()) {
            t.pool.checkin(tx);
            t.freed.notify_one();
        }
    }
}

impl<B> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.as_mut().project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.idle.is_some() {
                    *this.last_frame = Some(Instant::now());
                }
                if self.inner.is_end_stream() {
                    self.as_mut().finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let err = classify_hyper(e);
                let err = match this.target.as_ref() {
                    Some(t) => {
                        t.stats.record_error(err.kind());
                        err.with_target(t.authority.clone())
                    }
                    None => err,
                };
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.as_mut().finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                // The timer is armed for read_idle after the last frame; when it fires early
                // because frames came in meanwhile, move it instead of failing.
                loop {
                    let this = self.as_mut().project();
                    let read_idle = *this.read_idle;
                    let idle = this.idle.get_or_insert_with(|| {
                        // Armed now: the silence starts here.
                        Box::pin(tokio::time::sleep(read_idle))
                    });
                    if this.last_frame.is_none() {
                        *this.last_frame = Some(Instant::now());
                    }
                    ready!(idle.as_mut().poll(cx));
                    let now = Instant::now();
                    let deadline = this.last_frame.map(|l| l + read_idle);
                    match deadline {
                        Some(d) if d > now => idle.as_mut().reset(d),
                        _ => {
                            let mut err = Error::new(ErrorKind::ReadIdleTimeout)
                                .with_timeout(*this.read_idle);
                            if let Some(t) = this.target.as_ref() {
                                t.stats.record_error(ErrorKind::ReadIdleTimeout);
                                err = err.with_target(t.authority.clone());
                            }
                            // Never reuse a connection whose response we abandon.
                            this.checkin.take();
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("target", &self.target())
            .finish()
    }
}
