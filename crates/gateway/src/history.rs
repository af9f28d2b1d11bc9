//! The configs this node applied, newest first, in file mode and with etcd alike: hash,
//! generation, source, time, author, message, and what changed per object. Also the baseline
//! of every route a change touched, so `GET /admin/slo` can name the change after which a
//! route got worse (`suspect_change`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_config::shared::Kind;
use portcullis_config::shared::diff::Diff;
use portcullis_config::{Action, Config};
use serde_json::{Value, json};

use crate::snapshot::Snapshot;

/// Entries kept in memory.
const KEEP: usize = 100;

/// Who made a change and how it arrived.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The store's generation; a local counter in file mode.
    pub generation: Option<u64>,
    /// `FILE` or `etcd PREFIX rev N`.
    pub source: String,
    /// Author, when known.
    pub author: String,
    /// Message (commit subject for a file in git).
    pub message: String,
    /// `file`, `push`, `admin`, `rollback`, `etcdctl`...
    pub via: String,
    /// Unix time the change was committed (store) or saved (file mtime).
    pub committed_at: Option<f64>,
}

/// A route's numbers when a change was applied.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Requests so far (cumulative).
    pub requests: u64,
    /// 5xx answers so far (cumulative).
    pub errors: u64,
    /// Error share over the SLO window before the change.
    pub error_rate: f64,
    /// p99 over the SLO window before the change, ms.
    pub p99_ms: f64,
}

/// One applied config.
#[derive(Debug)]
pub struct Entry {
    /// Generation (store) or local sequence number (file).
    pub generation: u64,
    /// Hash of the shared part.
    pub hash: String,
    /// Hash of the whole config this node runs.
    pub config_hash: String,
    /// Unix time applied.
    pub applied_at: f64,
    /// Where, who, why.
    pub meta: Meta,
    /// What changed in the shared objects.
    pub diff: Diff,
    /// Routes the change touched: changed themselves, their upstream, or a global plugin.
    pub touched: HashMap<String, Baseline>,
}

/// The node's change history.
#[derive(Default)]
pub struct History {
    entries: Mutex<VecDeque<Arc<Entry>>>,
    seq: AtomicU64,
    suspects_logged: Mutex<HashSet<(String, u64)>>,
}

impl History {
    /// What changed between the config that served before (none at start) and `new`. Costly
    /// at 10,000 routes: computed off the async threads, before the swap.
    pub fn diff(old: Option<&Snapshot>, new: &Snapshot) -> Diff {
        let empty = portcullis_config::SharedDoc::default();
        let old_doc = old.map_or(&empty, |o| &*o.config.shared);
        Diff::between(old_doc, &new.config.shared)
    }

    /// Records an applied config with its [`History::diff`]; `replaced`: a config served
    /// before it (false at start).
    pub fn record(&self, replaced: bool, diff: Diff, new: &Snapshot, meta: Meta) -> Arc<Entry> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let touched = if replaced {
            touched_routes(&new.config, &diff)
                .into_iter()
                .map(|i| {
                    let stats = &new.routes[i].metrics.stats;
                    let m = stats.summary();
                    let (requests, errors) = stats.totals();
                    (
                        new.config.routes[i].name.clone(),
                        Baseline {
                            requests,
                            errors,
                            error_rate: if m.requests == 0 {
                                0.0
                            } else {
                                m.errors as f64 / m.requests as f64
                            },
                            p99_ms: m.p99_ms,
                        },
                    )
                })
                .collect()
        } else {
            HashMap::new()
        };
        let entry = Arc::new(Entry {
            generation: meta.generation.unwrap_or(seq),
            hash: new.config.shared_hash.clone(),
            config_hash: new.config.hash.clone(),
            applied_at: crate::control::unix_seconds(new.loaded_at),
            meta,
            diff,
            touched,
        });
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.push_front(entry.clone());
        e.truncate(KEEP);
        entry
    }

    /// Entries, newest first.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The newest entry, if any.
    pub fn latest(&self) -> Option<Arc<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned()
    }

    /// Whether `(route, generation)` was already logged as a suspect (and marks it).
    pub fn first_suspect_log(&self, route: &str, generation: u64) -> bool {
        self.suspects_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((route.to_owned(), generation))
    }
}

impl Entry {
    /// The list form of `GET /admin/config/history`.
    pub fn summary_json(&self) -> Value {
        json!({
            "generation": self.generation,
            "hash": self.hash,
            "config_hash": self.config_hash,
            "source": self.meta.source,
            "via": self.meta.via,
            "time": self.applied_at,
            "committed_at": self.meta.committed_at,
            "author": self.meta.author,
            "message": self.meta.message,
            "summary": self.diff.summary(),
            "changes": self.diff.brief(),
        })
    }

    /// One entry with its field-level diff.
    pub fn detail_json(&self) -> Value {
        let mut v = self.summary_json();
        v["diff"] = serde_json::to_value(&self.diff).unwrap_or(Value::Null);
        v["diff_text"] = Value::String(self.diff.to_string());
        v
    }
}

/// Indexes of the routes a change touched: changed themselves, or pointing at a changed
/// upstream, or any route when a global plugin changed.
fn touched_routes(cfg: &Config, diff: &Diff) -> Vec<usize> {
    let all = diff.touches_plugins();
    cfg.routes
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            all || diff.touches(Kind::Route, &r.name)
                || match &r.action {
                    Action::Upstream(i) => diff.touches(Kind::Upstream, &cfg.upstreams[*i].name),
                    Action::Split(legs) => legs
                        .iter()
                        .any(|(i, _)| diff.touches(Kind::Upstream, &cfg.upstreams[*i].name)),
                    Action::Direct(_) => false,
                }
        })
        .map(|(i, _)| i)
        .collect()
}

/// Who last changed a config file: its mtime and, in a git work tree, the last commit's
/// author and subject. Blocking (runs `git`, at most 2 s): call it off the async runtime.
pub fn file_meta(path: &Path) -> Meta {
    let committed_at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(crate::control::unix_seconds);
    let (author, message) = git_last_commit(path).unwrap_or_default();
    Meta {
        generation: None,
        source: path.display().to_string(),
        author,
        message,
        via: "file".into(),
        committed_at,
    }
}

fn git_last_commit(path: &Path) -> Option<(String, String)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let file = path.file_name()?;
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%an%x00%s", "--"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::park_timeout(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let (author, subject) = out.trim_end().split_once('\0')?;
    Some((author.to_owned(), subject.to_owned()))
}
