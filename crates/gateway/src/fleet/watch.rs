//! The node's watch loop: load the prefix at one revision, watch from the next (with previous
//! values and progress notifications), debounce, apply. The remembered revision moves only on
//! delivered events and progress notifications. A compacted watch, a store whose revision went
//! backwards (restarted empty, or restored), another cluster id, or an `Unauthenticated`
//! answer lead to a full re-read. While etcd is unreachable the node serves what it has and
//! retries with backoff and jitter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Fleet;
use super::store::{Store, StoreError, StoreRead};
use crate::control::Control;
use crate::history::Meta;

/// Quiet time after the last event before applying (a burst of writes is one reload).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest delay of a change by a continuous burst.
const DEBOUNCE_MAX: Duration = Duration::from_millis(250);

/// What the node knows of the store.
pub struct State {
    kvs: BTreeMap<String, Vec<u8>>,
    revision: i64,
    cluster_id: u64,
}

impl From<StoreRead> for State {
    fn from(r: StoreRead) -> Self {
        State {
            kvs: r.config,
            revision: r.revision,
            cluster_id: r.cluster_id,
        }
    }
}

/// Why a watch ended.
enum End {
    Resync(&'static str),
    Failed(StoreError),
}

/// Runs forever: keeps the node's shared config in step with the store.
pub async fn run(control: Arc<Control>, fleet: Arc<Fleet>, mut state: Option<State>) {
    let mut store: Option<Store> = None;
    let mut backoff = Backoff::default();
    let mut force: Option<&'static str> = None;
    loop {
        let st = match &store {
            Some(s) => s.clone(),
            None => match fleet.connect().await {
                Ok(s) => {
                    store = Some(s.clone());
                    s
                }
                Err(e) => {
                    down(&control, &fleet, &e, &mut backoff).await;
                    continue;
                }
            },
        };
        let reason = match (&state, force.take()) {
            (None, _) => Some("start"),
            (Some(_), Some(r)) => Some(r),
            (Some(s), None) => match st.probe().await {
                Ok((_, cid)) if cid != s.cluster_id => {
                    warn!(old = s.cluster_id, new = cid, "etcd cluster id changed");
                    Some("cluster_id")
                }
                Ok((rev, _)) if rev < s.revision => {
                    warn!(
                        seen = s.revision,
                        now = rev,
                        "etcd revision went backwards (restarted empty or restored)"
                    );
                    Some("revision_backwards")
                }
                Ok(_) => None,
                Err(e) => {
                    if e.unauthenticated() {
                        store = None;
                        force = Some("unauthenticated");
                        continue;
                    }
                    down(&control, &fleet, &e, &mut backoff).await;
                    continue;
                }
            },
        };
        if let Some(reason) = reason {
            match st.read().await {
                Ok(read) => {
                    if reason != "start" {
                        control
                            .shared
                            .metrics
                            .config
                            .resyncs
                            .with_label_values(&[reason])
                            .inc();
                        info!(
                            reason,
                            revision = read.revision,
                            "full re-read of the shared config"
                        );
                    }
                    let s = State::from(read);
                    apply(&control, &fleet, &st, &s, reason).await;
                    state = Some(s);
                }
                Err(e) => {
                    if e.unauthenticated() {
                        store = None;
                        force = Some("unauthenticated");
                        continue;
                    }
                    down(&control, &fleet, &e, &mut backoff).await;
                    continue;
                }
            }
        }
        up(&control, &fleet, &mut backoff);
        let Some(s) = state.as_mut() else { continue };
        match watch(&control, &fleet, &st, s).await {
            End::Resync(r) => force = Some(r),
            End::Failed(e) => {
                if e.unauthenticated() {
                    store = None;
                    force = Some("unauthenticated");
                } else {
                    down(&control, &fleet, &e, &mut backoff).await;
                }
            }
        }
    }
}

/// Watches from the remembered revision + 1 until the watch ends.
async fn watch(control: &Arc<Control>, fleet: &Arc<Fleet>, st: &Store, s: &mut State) -> End {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(s.revision + 1)
        .with_prev_key()
        .with_progress_notify();
    let mut stream = match st.client().watch(st.layout.range(), Some(opts)).await {
        Ok(w) => w,
        Err(e) => return End::Failed(e.into()),
    };
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    loop {
        let due = first.map(|f| (last + DEBOUNCE).min(f + DEBOUNCE_MAX));
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return End::Failed(StoreError::Etcd(etcd_client::Error::WatchError("the watch stream ended".into()))),
                    Err(e) => return End::Failed(e.into()),
                };
                if resp.compact_revision() > 0 {
                    warn!(seen = s.revision, compacted = resp.compact_revision(), "etcd compacted past this node's revision");
                    return End::Resync("compacted");
                }
                if resp.canceled() {
                    return End::Failed(StoreError::Etcd(etcd_client::Error::WatchError(format!("watch canceled: {}", resp.cancel_reason()))));
                }
                let header = resp.header().map(|h| (h.revision(), h.cluster_id()));
                if let Some((_, cid)) = header && cid != 0 && cid != s.cluster_id {
                    return End::Resync("cluster_id");
                }
                if resp.created() && resp.events().is_empty() {
                    continue;
                }
                if resp.events().is_empty() {
                    // A progress notification: everything up to its revision was delivered.
                    if let Some((rev, _)) = header && rev > s.revision {
                        s.revision = rev;
                        fleet.revision.store(rev, Ordering::Relaxed);
                    }
                    continue;
                }
                let mut touched = false;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    s.revision = s.revision.max(kv.mod_revision());
                    let Ok(key) = kv.key_str() else { continue };
                    if !st.layout.is_config_key(key) {
                        continue;
                    }
                    touched = true;
                    match ev.event_type() {
                        EventType::Put => { s.kvs.insert(key.to_owned(), kv.value().to_vec()); }
                        EventType::Delete => { s.kvs.remove(key); }
                    }
                }
                fleet.revision.store(s.revision, Ordering::Relaxed);
                if touched {
                    last = Instant::now();
                    first.get_or_insert(last);
                }
            }
            () = sleep_until(due), if due.is_some() => {
                first = None;
                apply(control, fleet, st, s, "watch").await;
            }
            _ = progress.tick() => {
                // Ask for a progress notification; its revision is how far we are known to be.
                if let Err(e) = stream.request_progress().await {
                    return End::Failed(e.into());
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Decodes the known keys and applies the result unless it is what is served already.
async fn apply(control: &Arc<Control>, fleet: &Arc<Fleet>, st: &Store, s: &State, trigger: &str) {
    let metrics = &control.shared.metrics.config;
    let doc = match st
        .layout
        .decode(s.kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    {
        Ok(d) => d,
        Err(errs) => {
            metrics.rejected.with_label_values(&["undecodable"]).inc();
            for e in &errs {
                error!(
                    revision = s.revision,
                    "shared config change refused, the previous config keeps serving: {e}"
                );
            }
            fleet.refused(format!(
                "revision {}: {}",
                s.revision,
                errs.first().map(ToString::to_string).unwrap_or_default()
            ));
            return;
        }
    };
    let hash = doc.doc.hash();
    let generation = doc.generation;
    let served = fleet.applied_hash.load();
    if doc.doc.is_empty() && generation == 0 && !fleet.applied.load().is_empty() {
        warn!(
            "etcd holds no shared config (wiped?); the last good config keeps serving until one is pushed"
        );
        return;
    }
    if hash == **served && control.shared.ready.load(Ordering::Acquire) {
        if fleet.generation.swap(generation, Ordering::Relaxed) != generation {
            metrics.generation.set(generation as i64);
            fleet.changed.notify_one();
        }
        return;
    }
    let entry = st
        .history_entry(generation)
        .await
        .ok()
        .flatten()
        .filter(|e| e.hash == hash);
    let meta = match &entry {
        Some(e) => Meta {
            generation: Some(generation),
            source: format!("etcd {} rev {}", st.layout.prefix(), s.revision),
            author: e.author.clone(),
            message: e.message.clone(),
            via: e.via.clone(),
            committed_at: Some(e.time),
        },
        None => Meta {
            generation: Some(generation),
            source: format!("etcd {} rev {}", st.layout.prefix(), s.revision),
            author: "unknown".into(),
            message: "written to etcd outside portcullis (no history entry)".into(),
            via: "etcd".into(),
            committed_at: None,
        },
    };
    match control.apply_shared(trigger, Arc::new(doc.doc), meta).await {
        Ok(_) => {
            fleet.generation.store(generation, Ordering::Relaxed);
            info!(generation, hash = %hash, revision = s.revision, trigger, "shared config applied");
        }
        Err(refused) => {
            metrics.rejected.with_label_values(&["invalid"]).inc();
            fleet.refused(format!(
                "generation {generation} (revision {}): {}",
                s.revision,
                refused.0.first().cloned().unwrap_or_default()
            ));
        }
    }
}

fn up(control: &Control, fleet: &Fleet, backoff: &mut Backoff) {
    if !fleet.store_up.swap(true, Ordering::Relaxed) {
        info!("etcd is reachable");
    }
    control.shared.metrics.config.store_up.set(1);
    backoff.reset();
}

async fn down(control: &Control, fleet: &Fleet, e: &StoreError, backoff: &mut Backoff) {
    if fleet.store_up.swap(false, Ordering::Relaxed) || backoff.attempts == 0 {
        warn!(error = %e, "etcd is unreachable; serving the last good config and retrying");
    }
    control.shared.metrics.config.store_up.set(0);
    tokio::time::sleep(backoff.next()).await;
}

/// Exponential backoff with full jitter, 100 ms to 5 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let ceiling = 100u64.saturating_mul(1 << self.attempts.min(6)).min(5000);
        self.attempts += 1;
        Duration::from_millis(50 + fastrand::u64(0..=ceiling))
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}
