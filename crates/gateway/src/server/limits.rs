//! A listener's connection limits: `max_connections` and `max_connections_per_ip`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

/// Open connections of one listener against its `max_connections`, which a reload may change
/// while connections are open (a semaphore sized at start could not follow it).
#[derive(Default)]
pub(super) struct Gate {
    pub(super) open: std::sync::atomic::AtomicUsize,
    /// Woken when a connection ends or a reload may have changed the limit.
    pub(super) changed: Notify,
    /// Open connections by client address, kept while `max_connections_per_ip` is set. Touched
    /// once per accepted and once per closed connection, never per request.
    per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

impl Gate {
    /// Takes a per-address slot for `ip` unless it already holds `cap` connections.
    pub(super) fn admit(&self, ip: IpAddr, cap: usize) -> bool {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }
}

/// Holds one of a listener's connection slots (and its client's, when counted); frees them on
/// drop.
pub(super) struct Slot(pub(super) Arc<Gate>, pub(super) Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            let mut m = self.0.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}
