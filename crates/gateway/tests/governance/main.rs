//! End-to-end traffic governance against the real binary, with real upstreams on loopback:
//! policies, request mirroring, and zone-aware balancing.

#[path = "../e2e/harness.rs"]
mod harness;

mod mirror;
mod policies;
mod zones;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// An upstream answering `status` after `delay` ms (both changeable while it runs).
pub struct Tunable {
    pub up: Upstream,
    pub delay_ms: Arc<AtomicU64>,
    pub status: Arc<AtomicU64>,
    pub hits: Arc<AtomicUsize>,
}

pub async fn tunable(name: &'static str) -> Tunable {
    let delay_ms = Arc::new(AtomicU64::new(0));
    let status = Arc::new(AtomicU64::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, s, h) = (delay_ms.clone(), status.clone(), hits.clone());
    let up = upstream(move |_req: Request<Incoming>| {
        let (d, s, h) = (d.clone(), s.clone(), h.clone());
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            let ms = d.load(Ordering::Relaxed);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Response::builder()
                .status(s.load(Ordering::Relaxed) as u16)
                .header("x-upstream", name)
                .body(Full::new(Bytes::from_static(b"real")))
                .expect("response")
        }
    })
    .await;
    Tunable {
        up,
        delay_ms,
        status,
        hits,
    }
}

/// Clients sending GETs to `url` in a loop until dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, concurrency: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                tokio::spawn(async move {
                    let c = h1_client();
                    while !stop.load(Ordering::Relaxed) {
                        let r = Request::get(&url).body(Full::default()).expect("request");
                        let _ = c.request(r).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}
