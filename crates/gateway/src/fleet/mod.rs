//! The fleet config plane: the shared part of the config from etcd, watched by every node,
//! applied through the same build-validate-swap path as file reloads; node status under a
//! lease; the fleet view and admin writes. See docs/fleet.md.

pub mod admin;
pub mod metrics;
pub mod node;
pub mod store;
pub mod watch;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis_config::shared::etcd::{Layout, StoreDoc};
use portcullis_config::shared::yaml::to_yaml;
use portcullis_config::{EtcdSource, SharedDoc};
use tracing::{info, warn};

use store::{Endpoint, Store, StoreRead};

/// A fleet node's view of the store.
pub struct Fleet {
    /// `config_source.etcd`.
    pub source: EtcdSource,
    /// Keys under the prefix.
    pub layout: Layout,
    /// `etcd:PREFIX`, naming store objects in errors.
    pub origin: String,
    /// This node's id.
    pub node_id: String,
    /// The last good shared config (served, or to be served with the node's file).
    pub applied: ArcSwap<SharedDoc>,
    /// Its hash.
    pub applied_hash: ArcSwap<String>,
    /// Its generation.
    pub generation: AtomicU64,
    /// Unix ms it was applied.
    pub applied_ms: AtomicU64,
    /// Store revision seen.
    pub revision: AtomicI64,
    /// Whether the store answers.
    pub store_up: AtomicBool,
    /// The last change refused: generation and first problem.
    pub rejected: Mutex<Option<String>>,
    /// Wakes the node status writer.
    pub changed: tokio::sync::Notify,
}

/// How a node starts.
pub enum Start {
    /// The store answered: its content at one revision.
    Store(StoreRead, StoreDoc),
    /// The store did not answer; the cache file had the last good shared config.
    Cache(SharedDoc),
    /// Neither: no shared config until the store answers (`/readyz` 503 until then).
    Empty,
}

impl Fleet {
    /// The fleet state of a node whose file names `source`.
    pub fn new(source: EtcdSource) -> Fleet {
        let layout = Layout::new(&source.prefix);
        let node_id = source.node_id.clone().unwrap_or_else(default_node_id);
        Fleet {
            origin: format!("etcd:{}", layout.prefix()),
            layout,
            node_id,
            source,
            applied: ArcSwap::from_pointee(SharedDoc::default()),
            applied_hash: ArcSwap::from_pointee(String::new()),
            generation: AtomicU64::new(0),
            applied_ms: AtomicU64::new(0),
            revision: AtomicI64::new(0),
            store_up: AtomicBool::new(false),
            rejected: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// How to reach the store.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from(&self.source)
    }

    /// Connects to the store (cheap; fails only on bad TLS files or refused credentials).
    pub async fn connect(&self) -> Result<Store, store::StoreError> {
        Store::connect(&self.endpoint(), &self.source.prefix).await
    }

    /// The first read at start: the store within 3 s, else the cache file, else nothing.
    pub async fn first_read(&self) -> Start {
        let attempt = async {
            let st = self.connect().await?;
            st.read().await
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(read)) => match store::decode(&self.layout, &read) {
                Ok(doc) if doc.generation == 0 && doc.doc.is_empty() => {
                    warn!("etcd holds no shared config yet (nothing pushed); trying the cache");
                }
                Ok(doc) => return Start::Store(read, doc),
                Err(e) => warn!("the shared config in etcd is invalid; trying the cache:\n{e}"),
            },
            Ok(Err(e)) => warn!(error = %e, "etcd is unreachable at start; trying the cache"),
            Err(_) => warn!("etcd did not answer within 3s at start; trying the cache"),
        }
        match self.read_cache().await {
            Some(doc) => Start::Cache(doc),
            None => Start::Empty,
        }
    }

    async fn read_cache(&self) -> Option<SharedDoc> {
        let path = self.source.cache.clone()?;
        let text = tokio::fs::read_to_string(&path).await.ok()?;
        let (value, _) = portcullis_config::source::parse(&text, &|_| None)
            .map_err(|e| warn!(path = %path.display(), "the cache file is unreadable: {e:?}"))
            .ok()?;
        let (doc, errs) = SharedDoc::from_value(&value);
        if !errs.is_empty() {
            warn!(path = %path.display(), "the cache file is unreadable");
            return None;
        }
        info!(path = %path.display(), objects = doc.len(), "serving the shared config from the cache until etcd answers");
        Some(doc)
    }

    /// Records a shared config as applied: last good, its generation, the cache file.
    pub fn applied_ok(&self, doc: Arc<SharedDoc>, hash: &str) {
        self.applied.store(doc.clone());
        self.applied_hash.store(Arc::new(hash.to_owned()));
        self.applied_ms
            .store((store::unix_now() * 1000.0) as u64, Ordering::Relaxed);
        if let Ok(mut r) = self.rejected.lock() {
            *r = None;
        }
        self.changed.notify_one();
        if let Some(path) = self.source.cache.clone() {
            tokio::task::spawn_blocking(move || write_cache(&path, &doc));
        }
    }

    /// Records a refused change.
    pub fn refused(&self, what: String) {
        if let Ok(mut r) = self.rejected.lock() {
            *r = Some(what);
        }
        self.changed.notify_one();
    }
}

/// Writes the cache atomically (temp file, then rename): a crash never leaves half a file.
fn write_cache(path: &Path, doc: &SharedDoc) {
    let tmp = path.with_extension("tmp");
    let text = format!(
        "# The last good shared config from etcd, written by portcullis. Read at start when etcd is unreachable.\n{}",
        to_yaml(&doc.to_value())
    );
    // It holds secrets in clear: readable by this user only.
    let res = {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path))
    };
    if let Err(e) = res {
        warn!(path = %path.display(), error = %e, "cannot write the shared config cache");
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

/// The first snapshot of a fleet node: the store's shared config, else the cache's, else none
/// (not ready). Returns the snapshot, whether it is ready, how it arrived, and the watch state
/// to continue from.
pub async fn first_snapshot(
    fleet: &Arc<Fleet>,
    source: &crate::state::ConfigSource,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<
    (
        crate::snapshot::Snapshot,
        bool,
        crate::history::Meta,
        Option<watch::State>,
    ),
    portcullis_config::ConfigErrors,
> {
    use crate::history::Meta;
    let build = |doc: Option<Arc<SharedDoc>>| {
        let (source, metrics, origin) = (source.clone(), metrics.clone(), fleet.origin.clone());
        crate::config_thread::run(move || {
            let cfg = crate::control::load(&source, doc.as_deref().map(|d| (d, origin.as_str())))?;
            crate::snapshot::Snapshot::build(cfg, None, &metrics)
        })
    };
    let start = fleet.first_read().await;
    let (cache, store) = match start {
        Start::Store(read, doc) => {
            let generation = doc.generation;
            let shared = Arc::new(doc.doc);
            match build(Some(shared.clone())).await {
                Ok(Ok(snap)) => {
                    let entry = match fleet.connect().await {
                        Ok(st) => st.history_entry(generation).await.ok().flatten(),
                        Err(_) => None,
                    };
                    fleet.applied_ok(shared, &snap.config.shared_hash);
                    fleet.generation.store(generation, Ordering::Relaxed);
                    fleet.revision.store(read.revision, Ordering::Relaxed);
                    let meta = Meta {
                        generation: Some(generation),
                        source: format!("etcd {} rev {}", fleet.layout.prefix(), read.revision),
                        author: entry.as_ref().map(|e| e.author.clone()).unwrap_or_default(),
                        message: entry
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                        via: entry
                            .as_ref()
                            .map_or_else(|| "etcd".into(), |e| e.via.clone()),
                        committed_at: None,
                    };
                    return Ok((snap, true, meta, Some(watch::State::from(read))));
                }
                Ok(Err(errs)) => {
                    warn!(
                        "the shared config in etcd is refused at start; trying the cache:\n{errs}"
                    );
                    metrics
                        .config
                        .rejected
                        .with_label_values(&["invalid"])
                        .inc();
                    fleet.refused(format!(
                        "generation {generation}: {}",
                        errs.0.first().map(ToString::to_string).unwrap_or_default()
                    ));
                }
                Err(e) => warn!("building the first config failed: {e}"),
            }
            (fleet.read_cache().await, true)
        }
        Start::Cache(doc) => (Some(doc), false),
        Start::Empty => (None, false),
    };
    let _ = store;
    if let Some(doc) = cache {
        let shared = Arc::new(doc);
        if let Ok(Ok(snap)) = build(Some(shared.clone())).await {
            fleet.applied.store(shared);
            fleet
                .applied_hash
                .store(Arc::new(snap.config.shared_hash.clone()));
            let meta = Meta {
                source: fleet
                    .source
                    .cache
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                via: "cache".into(),
                ..Meta::default()
            };
            return Ok((snap, true, meta, None));
        }
    }
    warn!("no shared config yet (etcd unreachable, no usable cache): not ready until etcd answers");
    let snap = build(None).await.map_err(|e| {
        portcullis_config::ConfigErrors(vec![portcullis_config::ConfigError::new(
            "",
            e.to_string(),
        )])
    })??;
    Ok((snap, false, Meta::default(), None))
}
