//! Connections of one target: idle HTTP/1.1 connections kept for reuse (most recently used
//! first) and one shared, multiplexed HTTP/2 connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use crate::upload::Tracked;

/// Pool settings of an upstream.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Idle HTTP/1.1 connections kept per target.
    pub max_idle_per_host: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Open connections per target at most; 0 for no limit. At the limit a request waits
    /// (up to the connect timeout) for a connection to come back.
    pub max_connections_per_host: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(90),
            max_connections_per_host: 0,
        }
    }
}

struct Idle<B> {
    tx: http1::SendRequest<Tracked<B>>,
    since: Instant,
}

/// What the target is known to speak when `protocol: auto`.
pub(crate) const MODE_UNKNOWN: u8 = 0;
pub(crate) const MODE_H1: u8 = 1;
pub(crate) const MODE_H2: u8 = 2;

pub(crate) struct TargetPool<B> {
    idle: Mutex<Vec<Idle<B>>>,
    pub(crate) h2: tokio::sync::Mutex<Option<http2::SendRequest<Tracked<B>>>>,
    pub(crate) mode: AtomicU8,
    cfg: PoolConfig,
}

impl<B> TargetPool<B> {
    pub(crate) fn new(cfg: PoolConfig, mode: u8) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
            mode: AtomicU8::new(mode),
            cfg,
        }
    }

    pub(crate) fn mode(&self) -> u8 {
        self.mode.load(Ordering::Relaxed)
    }

    /// The most recently returned live idle connection.
    pub(crate) fn checkout(&self) -> Option<http1::SendRequest<Tracked<B>>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.tx.is_closed() || now.duration_since(c.since) >= self.cfg.idle_timeout {
                continue;
            }
            if c.tx.is_ready() {
                return Some(c.tx);
            }
        }
        None
    }

    /// Returns a connection after its response completed; dropped (closed) when full or dead.
    pub(crate) fn checkin(&self, tx: http1::SendRequest<Tracked<B>>) {
        if tx.is_closed() || self.cfg.max_idle_per_host == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= self.cfg.max_idle_per_host {
            // Drop the oldest: the newest are the least likely to have been closed by the peer.
            idle.remove(0);
        }
        idle.push(Idle {
            tx,
            since: Instant::now(),
        });
    }

    /// Closes idle connections past the idle timeout.
    pub(crate) fn purge_expired(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < self.cfg.idle_timeout);
    }

    /// Number of idle connections now.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Closes every idle connection.
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
