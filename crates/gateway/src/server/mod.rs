//! Client-facing listeners: accept loops, TLS handshakes, HTTP/1.1 and HTTP/2 (ALPN or h2c
//! prior knowledge) on one port, connection limits, slow-client and idle timeouts, draining.
//!
//! - this module: the set of listeners, kept in step with the config across reloads;
//! - [`accept`]: one accept loop per listener, under the connection limits of [`limits`];
//! - [`connection`]: one connection from the TLS handshake to its end, and its watchdog;
//! - [`io`]: the connection's byte stream as hyper sees it (counting, framing checks, the
//!   contract's errors in place of hyper's own);
//! - [`framing`]: the HTTP/1.1 framing checks; [`tls`]: certificates, SNI, handshakes.

mod accept;
mod connection;
pub mod framing;
mod io;
mod limits;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::state::Shared;
use limits::Gate;

/// A bound listener and the switch that stops its accept loop.
struct Running {
    configured: SocketAddr,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    gate: Arc<Gate>,
}

/// The set of running listeners, kept in step with the config across reloads.
#[derive(Default)]
pub struct Listeners {
    running: HashMap<String, Running>,
}

/// Sockets bound for a new config, not yet serving.
pub struct Prepared {
    bound: Vec<(String, SocketAddr, TcpListener)>,
}

impl Listeners {
    /// Binds the listeners of `wanted` that are new or moved. Nothing changes on failure, so a
    /// reload whose address cannot be bound is refused as a whole.
    pub async fn prepare(&self, wanted: &[(String, SocketAddr)]) -> std::io::Result<Prepared> {
        let mut bound = Vec::new();
        for (name, addr) in wanted {
            if self
                .running
                .get(name)
                .is_some_and(|r| r.configured == *addr)
            {
                continue;
            }
            let l = bind(*addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("listener `{name}` cannot bind {addr}: {e}"),
                )
            })?;
            bound.push((name.clone(), *addr, l));
        }
        Ok(Prepared { bound })
    }

    /// Starts the prepared listeners and stops those not in `wanted` (or moved). Stopped
    /// listeners close their socket; their open connections finish normally.
    pub fn commit(
        &mut self,
        prepared: Prepared,
        wanted: &[(String, SocketAddr)],
        shared: &Arc<Shared>,
    ) {
        for (name, configured, listener) in prepared.bound {
            let local = listener.local_addr().unwrap_or(configured);
            let (stop, stop_rx) = watch::channel(false);
            if let Some(old) = self.running.remove(&name) {
                let _ = old.stop.send(true);
            }
            info!(listener = %name, address = %local, "listening");
            let gate = Arc::new(Gate::default());
            tokio::spawn(accept::accept_loop(
                listener,
                name.clone(),
                shared.clone(),
                gate.clone(),
                stop_rx,
            ));
            self.running.insert(
                name,
                Running {
                    configured,
                    local,
                    stop,
                    gate,
                },
            );
        }
        // Listeners that stay pick up a changed `max_connections` from the new snapshot.
        for r in self.running.values() {
            r.gate.changed.notify_one();
        }
        let keep: Vec<&String> = wanted.iter().map(|(n, _)| n).collect();
        self.running.retain(|name, r| {
            let stays = keep.contains(&name);
            if !stays {
                info!(listener = %name, "listener removed");
                let _ = r.stop.send(true);
            }
            stays
        });
    }

    /// Bound addresses by listener name.
    pub fn addresses(&self) -> HashMap<String, SocketAddr> {
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.local))
            .collect()
    }

    /// Stops every accept loop.
    pub fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        self.running.clear();
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
