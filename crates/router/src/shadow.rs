//! Finding routes that can never match: another route matches every request they match and
//! always wins. Regex routes are not analysed (regex containment is not decidable cheaply).

use std::collections::HashMap;

use crate::spec::{PathMatch, RouteSpec};

/// A route that can never be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadowed {
    /// The route that never wins (index in file order).
    pub route: usize,
    /// A route that always wins over it.
    pub by: usize,
}

/// The literal text every path matched by the route starts with; `None` for regex routes.
fn literal(spec: &RouteSpec) -> Option<String> {
    match &spec.path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => Some(p.clone()),
        PathMatch::Template(t) => Some(t.literal_prefix()),
        PathMatch::Regex(_) => None,
    }
}

pub(crate) fn find(specs: &[RouteSpec]) -> Vec<Shadowed> {
    // A covering route's literal is always a prefix of the covered route's literal, so only
    // routes found under a prefix of B's literal need to be compared with B.
    let lits: Vec<Option<String>> = specs.iter().map(literal).collect();
    let mut by_lit: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in lits.iter().enumerate() {
        if let Some(l) = l {
            by_lit.entry(l.as_str()).or_default().push(i);
        }
    }
    let bounds: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| s.rank_bounds(i as u32))
        .collect();
    let mut out = Vec::new();
    for (b, spec_b) in specs.iter().enumerate() {
        let Some(lit_b) = &lits[b] else { continue };
        let mut found = None;
        'prefixes: for end in (0..=lit_b.len()).rev() {
            if !lit_b.is_char_boundary(end) {
                continue;
            }
            let Some(cands) = by_lit.get(&lit_b[..end]) else {
                continue;
            };
            for &a in cands {
                if a != b && bounds[a].1 < bounds[b].0 && covers(&specs[a], spec_b) {
                    found = Some(a);
                    break 'prefixes;
                }
            }
        }
        if let Some(a) = found {
            out.push(Shadowed { route: b, by: a });
        }
    }
    out
}

/// Whether every request matched by `b` is matched by `a`.
fn covers(a: &RouteSpec, b: &RouteSpec) -> bool {
    let hosts = a.hosts.is_empty()
        || (!b.hosts.is_empty()
            && b.hosts
                .iter()
                .all(|hb| a.hosts.iter().any(|ha| hb.covered_by(ha))));
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let headers = a.headers.iter().all(|h| b.headers.contains(h));
    let query = a.query.iter().all(|q| b.query.contains(q));
    hosts && methods && headers && query && path_covers(&a.path, &b.path)
}

fn path_covers(a: &PathMatch, b: &PathMatch) -> bool {
    match (a, b) {
        (PathMatch::Exact(x), PathMatch::Exact(y)) => x == y,
        (PathMatch::Prefix(p), PathMatch::Exact(y) | PathMatch::Prefix(y)) => y.starts_with(p),
        (PathMatch::Prefix(p), PathMatch::Template(t)) => t.literal_prefix().starts_with(p),
        (PathMatch::Template(t), PathMatch::Exact(y)) => t.matches(y),
        (PathMatch::Template(t), PathMatch::Template(u)) => t.shape() == u.shape(),
        _ => false,
    }
}
