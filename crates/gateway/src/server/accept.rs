//! One accept loop per listener: the connection limits, then a task per connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::connection::serve_conn;
use super::limits::{Gate, Slot};
use crate::state::Shared;

/// Accepts connections until `stop` turns, each served by a task of its own.
pub(super) async fn accept_loop(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = shared.metrics.connections.with_label_values(&[&name]);
    let open = shared.metrics.open_gauge(&name);
    let refused_per_ip = shared
        .metrics
        .refused_connections
        .with_label_values(&[&name, "per_ip_limit"]);
    loop {
        // At the connection limit, stop accepting: new clients wait in the kernel backlog.
        // The limit is read from the current snapshot, so a reload moves it.
        loop {
            let limit = shared
                .snapshot
                .load()
                .listeners
                .get(&name)
                .and_then(|l| l.limits.max_connections);
            if limit.is_none_or(|l| gate.open.load(Ordering::Acquire) < l) {
                break;
            }
            tokio::select! {
                _ = gate.changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(rt) = shared.snapshot.load().listeners.get(&name).cloned() else {
            return;
        };
        accepted.inc();
        // One address may not hold more than its share: closed before TLS or any read.
        let counted = match rt.limits.max_connections_per_ip {
            Some(cap) if !gate.admit(peer.ip(), cap) => {
                refused_per_ip.inc();
                debug!(listener = %name, %peer, cap, "connection over the per-address cap refused");
                drop(stream);
                continue;
            }
            Some(_) => Some(peer.ip()),
            None => None,
        };
        gate.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(gate.clone(), counted);
        let shared = shared.clone();
        let open = open.clone();
        let task = async move {
            open.inc();
            let _drain = shared.enter();
            serve_conn(stream, peer, rt, shared).await;
            open.dec();
            drop(slot);
        };
        tokio::spawn(task);
    }
}
