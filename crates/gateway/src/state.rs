//! Process-wide state shared by listeners, the admin API and reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::snapshot::{ListenerRuntime, Snapshot};

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file, re-read on reload.
    File(PathBuf),
    /// The embedded quick-start config (fixed text, already interpolated).
    Embedded(String),
}

/// State shared by everything in the process.
pub struct Shared {
    /// The config being served.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where reloads read from.
    pub source: ConfigSource,
    /// True once listeners are bound and a config is loaded.
    pub ready: AtomicBool,
    /// Open client connections, for draining on shutdown.
    pub drain: Drain,
    /// Set to true on SIGTERM: connections finish their requests and close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The configs this node applied.
    pub history: crate::history::History,
    /// The fleet state when the shared part comes from etcd.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The queue of mirrored requests.
    pub mirrors: Arc<crate::mirror::Queue>,
}

/// Counts live connections and wakes the shutdown waiter when the last one ends.
#[derive(Default)]
pub struct Drain {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by a connection task; dropping it marks the connection gone.
pub struct DrainGuard(Arc<Shared>);

impl Shared {
    /// Registers a live connection until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> DrainGuard {
        self.drain.live.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.clone())
    }
}

impl Drain {
    /// Connections open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let d = &self.0.drain;
        if d.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            d.idle.notify_waiters();
        }
    }
}

/// Activity of one client connection, read by its watchdog.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Reads that returned bytes.
    pub reads: AtomicU64,
    /// Reads and writes that moved bytes.
    pub activity: AtomicU64,
    /// Requests started.
    pub calls: AtomicU64,
    /// Requests whose response head is not out yet.
    pub in_flight: AtomicU32,
    /// 1-based index of a request whose head had both Content-Length and Transfer-Encoding.
    pub ambiguous: AtomicU64,
    /// An HTTP/2 request was seen (connection-level frames then do not mean a slow head).
    pub h2: AtomicBool,
}

/// What a request handler knows about its connection.
pub struct ConnInfo {
    /// The peer (the client, or the last proxy).
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate the handshake verified (mTLS listeners), parsed once for the
    /// connection's requests.
    pub client_cert: Option<Arc<portcullis_plugins::ClientIdentity>>,
    /// The listener's settings at accept time.
    pub listener: Arc<ListenerRuntime>,
    /// Activity counters.
    pub state: ConnState,
    /// Process state.
    pub shared: Arc<Shared>,
}
