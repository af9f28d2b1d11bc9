//! Copies a request body as it streams to the primary; at its end the copies are queued.
//! A body that outgrows a mirror's `max_body_bytes` stops being copied for it (counted as
//! skipped); a primary body that fails or is cut short queues nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::Request;
use portcullis_client::Upstream;

use super::{Queue, copy};
use crate::body::ReqBody;

/// The copying state of one request body.
pub struct Tee {
    head: http::request::Parts,
    targets: Vec<(Upstream<ReqBody>, u64)>,
    buf: BytesMut,
    /// `Content-Length`: the copies are queued once that much arrived (the primary's client
    /// may not poll the body again after its last byte).
    expected: Option<u64>,
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tee({} mirrors, {} bytes)",
            self.targets.len(),
            self.buf.len()
        )
    }
}

impl Tee {
    pub(super) fn new(
        head: http::request::Parts,
        targets: Vec<(Upstream<ReqBody>, u64)>,
        expected: Option<u64>,
        queue: Arc<Queue>,
    ) -> Self {
        Self {
            head,
            targets,
            buf: BytesMut::new(),
            expected,
            queue,
        }
    }

    /// A chunk went to the primary.
    pub fn data(&mut self, d: &Bytes) {
        if self.targets.is_empty() {
            return;
        }
        let len = (self.buf.len() + d.len()) as u64;
        let before = self.targets.len();
        self.targets.retain(|(_, max)| len <= *max);
        let dropped = before - self.targets.len();
        if dropped > 0 {
            self.queue
                .counts
                .skipped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if self.targets.is_empty() {
            self.buf = BytesMut::new();
        } else {
            self.buf.extend_from_slice(d);
            if self.expected == Some(self.buf.len() as u64) {
                self.end();
            }
        }
    }

    /// The body ended: the copies are queued.
    pub fn end(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let body = std::mem::take(&mut self.buf).freeze();
        for (up, _) in self.targets.drain(..) {
            let mut head = Request::new(()).into_parts().0;
            head.method = self.head.method.clone();
            head.uri = self.head.uri.clone();
            head.version = self.head.version;
            head.headers = self.head.headers.clone();
            head.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
            head.headers.remove(http::header::TRANSFER_ENCODING);
            self.queue.push(&up, Request::from_parts(head, copy(&body)));
        }
    }

    /// The body failed: nothing is mirrored.
    pub fn abandon(&mut self) {
        self.targets.clear();
        self.buf = BytesMut::new();
    }
}
