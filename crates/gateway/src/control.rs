//! Loading and reloading the config: build the whole new snapshot off the async threads, bind
//! new listeners, then swap atomically. Anything invalid is refused and the old config serves on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use portcullis_config::{Config, ConfigErrors, SharedDoc, SharedInput};
use tracing::{error, info, warn};

use crate::history::Meta;

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
    /// The outcome of the last reload attempt (time, trigger, result, problems).
    pub last_reload: std::sync::Mutex<Option<serde_json::Value>>,
    /// One-second frames for the dashboard's stream.
    pub live: Arc<crate::live::Live>,
    /// Unix ms when the gateway started.
    pub started_ms: u64,
    /// The admin API's bound address, once bound.
    pub admin_addr: std::sync::OnceLock<SocketAddr>,
}

/// Reads and validates the config from its source, with the shared part from the store when
/// the file names one (`shared`: the document and its origin for errors). Blocking.
pub fn load(
    source: &ConfigSource,
    shared: Option<(&SharedDoc, &str)>,
) -> Result<Config, ConfigErrors> {
    match source {
        ConfigSource::File(path) => portcullis_config::load_file_with(
            path,
            shared.map(|(doc, origin)| SharedInput { doc, origin }),
        ),
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
    /// `ready`: whether the config is complete (false while a fleet node waits for its first
    /// shared config); `meta`: how the first config arrived, for the history.
    pub async fn start(
        snap: Snapshot,
        source: ConfigSource,
        metrics: Arc<Metrics>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        ready: bool,
        meta: Meta,
    ) -> std::io::Result<Arc<Self>> {
        let hash = snap.config.hash.clone();
        let want = wanted(&snap);
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let history = crate::history::History::default();
        if ready {
            let diff = crate::history::History::diff(None, &snap);
            let e = history.record(false, diff, &snap, meta);
            metrics.config_applied(e.generation, None);
        }
        let shared = Arc::new(Shared {
            snapshot: arc_swap::ArcSwap::from_pointee(snap),
            metrics,
            source,
            ready: Default::default(),
            drain: Default::default(),
            shutdown,
            history,
            fleet,
            mirrors: Arc::new(crate::mirror::Queue::start()),
        });
        let mut listeners = Listeners::default();
        let prepared = listeners.prepare(&want).await?;
        listeners.commit(prepared, &want, &shared);
        crate::lints::log(&shared.snapshot.load().lints);
        shared.metrics.set_config(&hash);
        shared.ready.store(ready, Ordering::Release);
        let sampler = crate::topology::TargetSampler::spawn(shared.clone());
        let live = crate::live::Live::spawn(shared.clone());
        Ok(Arc::new(Self {
            shared,
            listeners: tokio::sync::Mutex::new(listeners),
            sampler,
            live,
            last_reload: std::sync::Mutex::new(None),
            started_ms: (unix_seconds(SystemTime::now()) * 1000.0) as u64,
            admin_addr: std::sync::OnceLock::new(),
        }))
    }

    /// The admin API's bound address.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_addr.get().copied()
    }

    /// Bound listener addresses by name.
    pub async fn addresses(&self) -> std::collections::HashMap<String, SocketAddr> {
        self.listeners.lock().await.addresses()
    }

    /// Reloads from the source (the node's file, with the last good shared part when it comes
    /// from etcd). On success returns the new config's hash.
    pub async fn reload(&self, trigger: &str) -> Result<String, Refused> {
        self.reload_with(trigger, None, None).await
    }

    /// Applies a shared config from the store through the same build-validate-swap path as a
    /// file reload. On success it becomes the last good shared config (and the cache).
    pub async fn apply_shared(
        &self,
        trigger: &str,
        doc: Arc<SharedDoc>,
        meta: Meta,
    ) -> Result<String, Refused> {
        self.reload_with(trigger, Some(doc), Some(meta)).await
    }

    async fn reload_with(
        &self,
        trigger: &str,
        doc: Option<Arc<SharedDoc>>,
        meta: Option<Meta>,
    ) -> Result<String, Refused> {
        let mut listeners = self.listeners.lock().await;
        let started = std::time::Instant::now();
        let prev = self.shared.snapshot.load_full();
        let source = self.shared.source.clone();
        let metrics = self.shared.metrics.clone();
        let fleet = self.shared.fleet.clone();
        let from_store = doc.is_some();
        let built = crate::config_thread::run(move || {
            let shared = fleet.as_ref().map(|f| {
                let d = doc.unwrap_or_else(|| f.applied.load_full());
                (d, f.origin.clone())
            });
            let cfg = load(&source, shared.as_ref().map(|(d, o)| (&**d, o.as_str())))?;
            let snap = Snapshot::build(cfg, Some(&prev), &metrics)?;
            let diff = crate::history::History::diff(Some(&prev), &snap);
            // Who changed the file, off the async threads (it may run git).
            let meta = match (meta, &source) {
                (Some(m), _) => m,
                (None, ConfigSource::File(p)) => crate::history::file_meta(p),
                (None, ConfigSource::Embedded(_)) => Meta {
                    source: "<quick-start>".into(),
                    via: "embedded".into(),
                    ..Meta::default()
                },
            };
            Ok::<_, ConfigErrors>((snap, diff, meta, shared.map(|(d, _)| d)))
        })
        .await;
        let (snap, diff, meta, doc) = match built {
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
        let snap = Arc::new(snap);
        let old_snap = self.shared.snapshot.swap(snap.clone());
        listeners.commit(prepared, &want, &self.shared);
        // Every applied snapshot (its spec files may have changed under the same config hash).
        crate::lints::log(&snap.lints);
        if !same {
            let generation = meta.generation;
            let committed = meta.committed_at;
            let entry = self.shared.history.record(true, diff, &snap, meta);
            self.shared
                .metrics
                .config_applied(generation.unwrap_or(entry.generation), committed);
        }
        if let (Some(f), Some(doc)) = (&self.shared.fleet, doc)
            && from_store
        {
            f.applied_ok(doc, &snap.config.shared_hash);
            self.shared.ready.store(true, Ordering::Release);
        }
        self.shared.metrics.reloads.with_label_values(&["ok"]).inc();
        self.note_reload(trigger, Ok(&hash));
        self.shared.metrics.set_config(&hash);
        info!(
            trigger,
            hash = %hash,
            unchanged = same,
            took_ms = started.elapsed().as_millis() as u64,
            "config reloaded"
        );
        // The old snapshot goes when its last request ends; freeing 10,000 routes takes tens of
        // milliseconds, so the reload's own reference is let go on the config thread.
        crate::config_thread::free(old_snap);
        Ok(hash)
    }

    fn note_reload(&self, trigger: &str, outcome: Result<&str, &[String]>) {
        let at = unix_seconds(SystemTime::now());
        let v = match outcome {
            Ok(hash) => {
                serde_json::json!({"at": at, "trigger": trigger, "result": "ok", "hash": hash})
            }
            Err(problems) => serde_json::json!({
                "at": at, "trigger": trigger, "result": "refused", "problems": problems,
            }),
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    fn refuse(&self, trigger: &str, problems: Vec<String>) -> Refused {
        self.shared
            .metrics
            .reloads
            .with_label_values(&["failed"])
            .inc();
        self.note_reload(trigger, Err(&problems));
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
    /// Checks the TLS files of every listener every [`crate::server::tls::FILE_POLL`] and swaps in a
    /// new config for new connections when they changed (a certificate renewed, a CA added, a
    /// CRL updated). Separate from the config file watch: these files change without the
    /// config changing, and a bad one must not refuse the rest of the config.
    pub async fn watch_tls_files(self: Arc<Self>) {
        loop {
            tokio::time::sleep(crate::server::tls::FILE_POLL).await;
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
