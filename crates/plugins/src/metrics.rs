//! Counters plugins keep (auth failures by reason, requests limited, Redis errors). Handles are
//! made once when a plugin is built; counting is one relaxed atomic add. The gateway writes
//! them out in `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A counter handle.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Family {
    help: &'static str,
    series: BTreeMap<String, Arc<AtomicU64>>,
}

fn families() -> &'static Mutex<BTreeMap<&'static str, Family>> {
    static F: OnceLock<Mutex<BTreeMap<&'static str, Family>>> = OnceLock::new();
    F.get_or_init(Default::default)
}

/// The counter `name{labels}`, created at 0 on first use. Label values must come from config
/// (plugin, route names) or fixed lists (reasons), never from requests.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
    let mut key = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(key, "{k}=\"{v}\"");
    }
    let mut f = families().lock().unwrap_or_else(|p| p.into_inner());
    let fam = f.entry(name).or_insert_with(|| Family {
        help,
        series: BTreeMap::new(),
    });
    Counter(fam.series.entry(key).or_default().clone())
}

/// Writes every plugin counter in the Prometheus text format.
pub fn render(out: &mut String) {
    let f = families().lock().unwrap_or_else(|p| p.into_inner());
    for (name, fam) in f.iter() {
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", fam.help);
        for (labels, v) in &fam.series {
            let v = v.load(Ordering::Relaxed);
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
}
