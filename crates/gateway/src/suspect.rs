//! `suspect_change` in `GET /admin/slo`: for a route whose error rate or p99 got worse after a
//! config change that touched it (the route, its upstream, or a global plugin), the change is
//! named (generation, author, time, message), and a log line says so once.

use serde_json::{Value, json};
use tracing::warn;

use crate::history::History;
use crate::snapshot::Snapshot;

/// Requests after a change before it can be judged.
const MIN_REQUESTS: u64 = 20;

/// Adds `suspect_change` to each route of an `/admin/slo` answer where one applies.
pub fn annotate(v: &mut Value, snap: &Snapshot, history: &History) {
    let entries = history.entries();
    let Some(routes) = v.get_mut("routes").and_then(Value::as_array_mut) else {
        return;
    };
    for r in routes {
        let Some(name) = r.get("route").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        let Some(i) = snap.config.routes.iter().position(|x| x.name == name) else {
            continue;
        };
        let stats = &snap.routes[i].metrics.stats;
        // The newest change that touched this route.
        let Some((entry, base)) = entries
            .iter()
            .find_map(|e| e.touched.get(&name).map(|b| (e, *b)))
        else {
            continue;
        };
        let (requests, errors) = stats.totals();
        let (dr, de) = (
            requests.saturating_sub(base.requests),
            errors.saturating_sub(base.errors),
        );
        if dr < MIN_REQUESTS {
            continue;
        }
        let after = de as f64 / dr as f64;
        let slo = snap.config.routes[i].slo.as_ref();
        let allowed = slo
            .and_then(|s| s.success_rate)
            .map_or(0.01, |t| (100.0 - t) / 100.0);
        let errors_worse = after > allowed && after > base.error_rate * 2.0 + 0.005;
        let p99_now = stats.summary().p99_ms;
        let p99_worse = slo.and_then(|s| s.p99).is_some_and(|t| {
            let t = t.as_secs_f64() * 1000.0;
            p99_now > t && p99_now > base.p99_ms * 1.5
        });
        if !(errors_worse || p99_worse) {
            continue;
        }
        let m = &entry.meta;
        r["suspect_change"] = json!({
            "generation": entry.generation,
            "author": m.author,
            "time": entry.applied_at,
            "message": m.message,
            "source": m.source,
            "changes": entry.diff.brief(),
            "error_rate_before": base.error_rate,
            "error_rate_after": after,
            "p99_ms_before": finite(base.p99_ms),
            "p99_ms_now": finite(p99_now),
        });
        if history.first_suspect_log(&name, entry.generation) {
            warn!(
                route = %name,
                generation = entry.generation,
                author = %m.author,
                message = %m.message,
                error_rate_before = base.error_rate,
                error_rate_after = after,
                "route got worse after a config change that touched it (suspect change)"
            );
        }
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}
