//! Loading and reloading the config: build the whole new snapshot off the async threads, bind
//! new listeners, then swap atomically. Anything invalid is refused and the old config serves on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use portcullis_config::{Config, ConfigErrors};
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::server::Listeners;
use crate::snapshot::Snapshot;
use crate::state::{ConfigSource, Shared};

/// Why a reload was refused: one line per problem, `FILE:LINE:COL: message` where known.
#[derive(Debug)]
pub struct Refused(pub Vec<String>);

/// Owns the running listeners; serializes reloads.
pub struct Control {
    /// Shared process state.
    pub shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<Listeners>,
    /// Target rates for the topology view.
    pub sampler: Arc<crate::topology::TargetSampler>,
    /// Unix ms when the gateway started.
    pub started_ms: u64,
}

/// Reads and validates the config from its source. Blocking.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    match source {
        ConfigSource::File(path) => portcullis_config::load_file(path),
        ConfigSource::Embedded(text) => portcullis_config::load_str(
            text,
            Some(Path::new("<quick-start>")),
            Path::new("."),
            &|k| std::env::var(k).ok(),
        ),
    }
}

fn wanted(snap: &Snapshot) -> Vec<(String, SocketAddr)> {
    snap.config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.address))
        .collect()
}

impl Control {
    /// Starts serving `snap`: binds its listeners. Fails if one cannot be bound.
    pub async fn start(
        snap: Snapshot,
        source: ConfigSource,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        let hash = snap.config.hash.clone();
        let want = wanted(&snap);
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: arc_swap::ArcSwap::from_pointee(snap),
            metrics,
            source,
            ready: Default::default(),
            drain: Default::default(),
            shutdown,
        });
        let mut listeners = Listeners::default();
        let prepared = listeners.prepare(&want).await?;
        listeners.commit(prepared, &want, &shared);
        shared.metrics.set_config(&hash);
        shared.ready.store(true, Ordering::Release);
        let sampler = crate::topology::TargetSampler::spawn(shared.clone());
        Ok(Arc::new(Self {
            shared,
            listeners: tokio::sync::Mutex::new(listeners),
            sampler,
            started_ms: (unix_seconds(SystemTime::now()) * 1000.0) as u64,
        }))
    }

    /// Bound listener addresses by name.
    pub async fn addresses(&self) -> std::collections::HashMap<String, SocketAddr> {
        self.listeners.lock().await.addresses()
    }

    /// Reloads from the source. On success returns the new config's hash.
    pub async fn reload(&self, trigger: &str) -> Result<String, Refused> {
        let mut listeners = self.listeners.lock().await;
        let started = std::time::Instant::now();
        let prev = self.shared.snapshot.load_full();
        let source = self.shared.source.clone();
        let metrics = self.shared.metrics.clone();
        let built = tokio::task::spawn_blocking(move || {
            let cfg = load(&source)?;
            Snapshot::build(cfg, Some(&prev), &metrics)
        })
        .await;
        let snap = match built {
            Ok(Ok(s)) => s,
            Ok(Err(errs)) => {
                return Err(self.refuse(trigger, errs.0.iter().map(ToString::to_string).collect()));
            }
            Err(e) => return Err(self.refuse(trigger, vec![format!("reload task failed: {e}")])),
        };
        let old = self.shared.snapshot.load();
        if snap.config.admin.address != old.config.admin.address {
            warn!(
                old = %old.config.admin.address,
                new = %snap.config.admin.address,
                "the admin address changed; it takes effect after a restart"
            );
        }
        if snap.config.runtime.worker_threads != old.config.runtime.worker_threads {
            warn!("runtime.worker_threads changed; it takes effect after a restart");
        }
        for w in &snap.config.warnings {
            warn!("{w}");
        }
        let want = wanted(&snap);
        let prepared = match listeners.prepare(&want).await {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(trigger, vec![e.to_string()])),
        };
        let hash = snap.config.hash.clone();
        let same = hash == old.config.hash;
        drop(old);
        self.shared.snapshot.store(Arc::new(snap));
        listeners.commit(prepared, &want, &self.shared);
        self.shared.metrics.reloads.with_label_values(&["ok"]).inc();
        self.shared.metrics.set_config(&hash);
        info!(
            trigger,
            hash = %hash,
            unchanged = same,
            took_ms = started.elapsed().as_millis() as u64,
            "config reloaded"
        );
        Ok(hash)
    }

    fn refuse(&self, trigger: &str, problems: Vec<String>) -> Refused {
        self.shared
            .metrics
            .reloads
            .with_label_values(&["failed"])
            .inc();
        for p in &problems {
            error!(
                trigger,
                "config refused, the previous config keeps serving: {p}"
            );
        }
        Refused(problems)
    }

    /// Stops accepting, lets in-flight requests finish up to `deadline`, returns whether
    /// every connection closed in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.listeners.lock().await.stop_all();
        self.shared.ready.store(false, Ordering::Release);
        let _ = self.shared.shutdown.send(true);
        let live = self.shared.drain.live();
        info!(connections = live, deadline = ?deadline, "draining");
        tokio::time::timeout(deadline, self.shared.drain.wait_idle())
            .await
            .is_ok()
    }

    /// Polls the config file and reloads when its content differs from what the running
    /// config was loaded from. Why polling rather than inotify: it also sees atomic renames and
    /// Kubernetes ConfigMap symlink swaps, needs no extra dependency, and reading a small file
    /// each second costs nothing measurable. Comparing with the running config (not with the
    /// previous read) means a save made while the gateway was starting is not missed.
    pub async fn watch_file(self: Arc<Self>) {
        let ConfigSource::File(path) = self.shared.source.clone() else {
            return;
        };
        // Content already tried and refused: not tried again until it changes.
        let mut refused: Option<u64> = None;
        loop {
            let interval = self.shared.snapshot.load().config.runtime.watch_interval;
            if interval.is_zero() {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            tokio::time::sleep(interval).await;
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            let now = portcullis_config::digest(&bytes);
            let running = self.shared.snapshot.load().config.source_digest;
            if now == running || refused == Some(now) {
                continue;
            }
            refused = match self.reload("file change").await {
                Ok(_) => None,
                Err(_) => Some(now),
            };
        }
    }
}

impl Control {
    /// Checks the TLS files of every listener every [`crate::tls::FILE_POLL`] and swaps in a
    /// new config for new connections when they changed (a certificate renewed, a CA added, a
    /// CRL updated). Separate from the config file watch: these files change without the
    /// config changing, and a bad one must not refuse the rest of the config.
    pub async fn watch_tls_files(self: Arc<Self>) {
        loop {
            tokio::time::sleep(crate::tls::FILE_POLL).await;
            let listeners: Vec<_> = self
                .shared
                .snapshot
                .load()
                .listeners
                .values()
                .filter_map(|l| l.tls.clone())
                .collect();
            if listeners.is_empty() {
                continue;
            }
            let metrics = self.shared.metrics.clone();
            // File metadata and reads block: off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                for l in listeners {
                    l.poll_files(&metrics);
                }
            })
            .await;
        }
    }
}

/// Seconds since the Unix epoch of a time.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
