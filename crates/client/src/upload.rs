//! Request bodies on their way to an upstream, watched so the response header timeout can
//! measure the upstream's silence rather than the length of an upload.
//!
//! Without this, a large upload that takes longer than `response_header` to stream would fail
//! with a timeout although bytes moved the whole time.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;

/// How far a request body has gone: woken for every frame sent and at its end.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    done: AtomicBool,
    moved: Notify,
}

impl Progress {
    /// The whole body was handed to the connection (or it failed).
    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves at the next frame or the end (at once when one came since the last call).
    pub(crate) async fn moved(&self) {
        self.moved.notified().await;
    }

    fn frame(&self, end: bool) {
        if end {
            self.done.store(true, Ordering::Release);
        }
        self.moved.notify_one();
    }
}

pin_project! {
    /// A request body as the connection sees it; reports progress when it carries a body.
    pub(crate) struct Tracked<B> {
        #[pin]
        inner: B,
        progress: Option<Arc<Progress>>,
    }
}

impl<B: Body> Tracked<B> {
    /// Wraps `inner`; a body not yet at its end gets a progress report, returned too.
    pub(crate) fn new(inner: B) -> (Self, Option<Arc<Progress>>) {
        let progress = (!inner.is_end_stream()).then(Arc::default);
        (
            Self {
                inner,
                progress: progress.clone(),
            },
            progress,
        )
    }
}

impl<B: Body> Tracked<B> {
    /// The request with its body wrapped, and the body's progress when it has one.
    pub(crate) fn new_request(
        req: http::Request<B>,
    ) -> (http::Request<Self>, Option<Arc<Progress>>) {
        let (parts, body) = req.into_parts();
        let (body, progress) = Self::new(body);
        (http::Request::from_parts(parts, body), progress)
    }
}

impl<B> Tracked<B> {
    /// The body, unwatched (a request handed back unsent).
    pub(crate) fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let (Poll::Ready(r), Some(p)) = (&r, this.progress.as_deref()) {
            let end = !matches!(r, Some(Ok(_)));
            p.frame(end);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};

    #[tokio::test]
    async fn progress_follows_frames_to_the_end() {
        let (t, p) = Tracked::new(Empty::<Bytes>::new());
        assert!(p.is_none(), "an empty body needs no watching");
        drop(t);

        let frames = futures_util::stream::iter(
            ["a", "b"].map(|s| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(s)))),
        );
        let (mut t, p) = Tracked::new(StreamBody::new(frames));
        let p = p.expect("a stream is watched");
        assert!(t.frame().await.is_some());
        p.moved().await;
        assert!(!p.done());
        assert!(t.frame().await.is_some());
        assert!(t.frame().await.is_none());
        assert!(p.done());
    }
}
