//! TLS termination: certificates chosen by SNI from the names they are valid for, ALPN h2 and
//! http/1.1, TLS 1.2 or 1.3 minimum (never below), client certificates verified against a CA
//! bundle and CRLs (mutual TLS), session resumption. A listener's files are watched and swapped
//! in for new connections when they change on disk.

mod handshake;
mod load;

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use portcullis_config::{ConfigError, ListenerTls};
use tracing::{error, info};

pub use handshake::{Counters, Failure};
pub use load::Served;

use crate::metrics::Metrics;
use load::{Loaded, Stamp};

/// How often certificate, key, CA and CRL files are checked for changes.
pub const FILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A TLS listener's settings and the rustls config built from its files, swapped when they
/// change. Kept across config reloads while the settings and files stay the same, so clients
/// resume their sessions across them.
pub struct TlsListener {
    name: String,
    field: String,
    settings: ListenerTls,
    current: ArcSwap<Loaded>,
    /// Stamps of files already tried and refused: not tried again until they change again.
    refused: Mutex<Option<Vec<Option<Stamp>>>>,
    /// Handshake counters.
    pub counters: Counters,
}

impl TlsListener {
    /// Builds listener `name`'s TLS state (config field `field`, e.g. `listeners[1].tls`).
    /// Keeps `prev`'s session keys when its client-auth files are the ones read now. Blocking.
    pub fn build(
        name: &str,
        field: &str,
        settings: &ListenerTls,
        prev: Option<&TlsListener>,
        metrics: &Metrics,
        at: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<TlsListener, ConfigError> {
        let prev_loaded = prev
            .filter(|p| {
                p.settings.client_auth == settings.client_auth
                    && p.settings.session_tickets == settings.session_tickets
            })
            .map(|p| p.current.load_full());
        let reuse = prev_loaded
            .as_ref()
            .map(|l| (&l.sessions, l.client_auth_stamps()));
        let loaded = load::load(settings, field, reuse, at)?;
        Ok(TlsListener {
            name: name.to_owned(),
            field: field.to_owned(),
            settings: settings.clone(),
            current: ArcSwap::from_pointee(loaded),
            refused: Mutex::new(None),
            counters: Counters::new(metrics, name),
        })
    }

    /// Whether this state can serve `settings` as they are on disk now: same settings, files
    /// unchanged since they were read. Blocking (reads file metadata).
    pub fn serves(&self, field: &str, settings: &ListenerTls) -> bool {
        self.field == field && self.settings == *settings && self.changed_files().is_none()
    }

    /// The rustls config for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load().config.clone()
    }

    /// The certificates served and their expiry.
    pub fn served(&self) -> Vec<Served> {
        self.current.load().served.clone()
    }

    /// The stamps of the files now, when one differs from what was read. Blocking.
    fn changed_files(&self) -> Option<Vec<Option<Stamp>>> {
        let cur = self.current.load();
        let now: Vec<Option<Stamp>> = cur.files.iter().map(|(p, _)| load::stamp(p)).collect();
        let same = now.iter().zip(&cur.files).all(|(n, (_, s))| n == s);
        (!same).then_some(now)
    }

    /// Reads the files again when they changed on disk and swaps the new config in for new
    /// connections; a set of files that cannot be used is logged, counted and left aside,
    /// and the previous config keeps serving. Blocking (reads files).
    pub fn poll_files(&self, metrics: &Metrics) {
        let Some(now) = self.changed_files() else {
            return;
        };
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.as_ref() == Some(&now) {
            return;
        }
        let cur = self.current.load_full();
        let at = |path: &str, msg: String| ConfigError::new(path, msg);
        let reuse = Some((&cur.sessions, cur.client_auth_stamps()));
        match load::load(&self.settings, &self.field, reuse, &at) {
            Ok(new) => {
                let kept = Arc::ptr_eq(&new.sessions, &cur.sessions);
                self.current.store(Arc::new(new));
                *refused = None;
                metrics
                    .tls_reloads
                    .with_label_values(&[&self.name, "ok"])
                    .inc();
                info!(
                    listener = %self.name,
                    sessions_kept = kept,
                    "TLS files changed on disk; new connections use them"
                );
            }
            Err(e) => {
                *refused = Some(now);
                metrics
                    .tls_reloads
                    .with_label_values(&[&self.name, "failed"])
                    .inc();
                error!(
                    listener = %self.name,
                    "TLS files changed on disk but cannot be used, the previous ones keep serving: {}: {}",
                    e.path,
                    e.message
                );
            }
        }
    }
}

/// Builds a client TLS config for an upstream from files. Blocking.
pub fn upstream_client_config(
    tls: &portcullis_config::UpstreamTls,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let ca = tls.ca.as_deref().map(read).transpose()?;
    let client = match &tls.client_cert {
        Some((c, k)) => Some((read(c)?, read(k)?)),
        None => None,
    };
    portcullis_client::tls_client_config(
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        tls.insecure_skip_verify,
        alpn,
    )
    .map_err(|e| e.to_string())
}
