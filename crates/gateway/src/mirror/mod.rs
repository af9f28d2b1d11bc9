//! Request mirroring: copies of a route's requests sent to other upstreams, fire and forget.
//! The copy waits on a bounded queue; a full queue drops it (counted); a mirror that hangs or
//! refuses never touches the primary's request, which does not wait for it.
//!
//! - this file: the decision per request and the queue with its sender task.
//! - `tee`: copying a streamed request body while it goes to the primary.

mod tee;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use portcullis_client::Upstream;
use portcullis_config::Mirror;
use tokio::sync::{Semaphore, mpsc};
use tracing::debug;

use crate::body::ReqBody;

pub use tee::Tee;

/// Marks a mirrored request.
pub static X_PORTCULLIS_MIRROR: HeaderName = HeaderName::from_static("x-portcullis-mirror");
/// Copies waiting to be sent at most.
const QUEUE: usize = 256;
/// Copies in flight at most.
const IN_FLIGHT: usize = 64;
/// A copy gives up after this long.
const DEADLINE: Duration = Duration::from_secs(10);

/// Counts by outcome.
#[derive(Default)]
pub struct Counts {
    /// Sent and answered (any status).
    pub sent: AtomicU64,
    /// Sent and failed (connect, reset, timeout).
    pub failed: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Not mirrored because the body was larger than `max_body_bytes`.
    pub skipped: AtomicU64,
}

struct Job {
    upstream: Upstream<ReqBody>,
    req: Request<ReqBody>,
}

/// The process-wide mirror queue.
pub struct Queue {
    tx: mpsc::Sender<Job>,
    /// Outcomes.
    pub counts: Arc<Counts>,
}

impl Queue {
    /// Starts the sender task (inside a Tokio runtime).
    pub fn start() -> Queue {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        tokio::spawn(send_loop(rx, counts.clone()));
        Queue { tx, counts }
    }

    /// Writes `portcullis_mirror_requests_total{outcome}` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counts;
        let _ = writeln!(
            out,
            "# HELP portcullis_mirror_requests_total Mirrored request copies, by outcome: sent (answered), failed (connect, reset, timeout), dropped (queue full), skipped (body over max_body_bytes).\n# TYPE portcullis_mirror_requests_total counter"
        );
        for (outcome, n) in [
            ("sent", &c.sent),
            ("failed", &c.failed),
            ("dropped", &c.dropped),
            ("skipped", &c.skipped),
        ] {
            let _ = writeln!(
                out,
                "portcullis_mirror_requests_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }

    /// Queues a copy; a full queue drops it.
    fn push(&self, upstream: &Upstream<ReqBody>, req: Request<ReqBody>) {
        let job = Job {
            upstream: upstream.clone(),
            req,
        };
        if self.tx.try_send(job).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn send_loop(mut rx: mpsc::Receiver<Job>, counts: Arc<Counts>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let counts = counts.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(DEADLINE, async {
                let resp = job.upstream.send(job.req, None).await?;
                // Read to the end so the connection goes back to the pool.
                let _ = resp.into_body().collect().await;
                Ok::<_, portcullis_client::Error>(())
            })
            .await;
            match sent {
                Ok(Ok(())) => counts.sent.fetch_add(1, Ordering::Relaxed),
                Ok(Err(e)) => {
                    debug!(error = %e, "mirror request failed");
                    counts.failed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
    }
}

/// Whether `m` takes this request: method listed, and inside the sampled share.
fn chosen(m: &Mirror, parts: &http::request::Parts) -> bool {
    if !m.methods.contains(&parts.method) || m.fraction <= 0.0 {
        return false;
    }
    if m.fraction >= 1.0 {
        return true;
    }
    match &m.key {
        Some(h) => {
            let mut hasher = std::hash::DefaultHasher::new();
            parts
                .headers
                .get(h)
                .map(HeaderValue::as_bytes)
                .hash(&mut hasher);
            (hasher.finish() % 1_000_000) as f64 / 1_000_000.0 < m.fraction
        }
        None => fastrand::f64() < m.fraction,
    }
}

/// The head of a copy: the primary's as sent upstream, marked.
fn head(parts: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = parts.uri.clone();
    *r.version_mut() = parts.version;
    *r.headers_mut() = parts.headers.clone();
    r.headers_mut()
        .insert(X_PORTCULLIS_MIRROR.clone(), HeaderValue::from_static("1"));
    r.into_parts().0
}

/// Decides the copies of a request about to go upstream with `body`. Copies of requests
/// without a body, or with a body already read, are queued now; for a streamed body the
/// returned body copies it as it goes to the primary and queues the copies at its end.
pub fn fork(
    mirrors: &[Mirror],
    upstreams: &[Upstream<ReqBody>],
    queue: &Arc<Queue>,
    parts: &http::request::Parts,
    body: ReqBody,
) -> ReqBody {
    let targets: Vec<(Upstream<ReqBody>, u64)> = mirrors
        .iter()
        .filter(|m| chosen(m, parts))
        .filter_map(|m| {
            upstreams
                .get(m.upstream)
                .map(|u| (u.clone(), m.max_body_bytes))
        })
        .collect();
    if targets.is_empty() {
        return body;
    }
    let declared = crate::body::declared_length(&parts.headers);
    let whole: Option<Bytes> = match &body {
        ReqBody::Empty => Some(Bytes::new()),
        ReqBody::Buffered(_, all) => Some(all.clone()),
        _ => None,
    };
    let mut streamed = Vec::new();
    for (up, max) in targets {
        if declared.is_some_and(|n| n > max) || whole.as_ref().is_some_and(|b| b.len() as u64 > max)
        {
            queue.counts.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match &whole {
            Some(b) => queue.push(&up, Request::from_parts(head(parts), copy(b))),
            None => streamed.push((up, max)),
        }
    }
    if streamed.is_empty() {
        return body;
    }
    ReqBody::Mirrored(
        Box::new(body),
        Box::new(Tee::new(head(parts), streamed, declared, queue.clone())),
    )
}

fn copy(b: &Bytes) -> ReqBody {
    if b.is_empty() {
        ReqBody::Empty
    } else {
        ReqBody::Buffered(Some(b.clone()), b.clone())
    }
}
