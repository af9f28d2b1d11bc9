//! The compiled route table of Portcullis: pure, no I/O.
//!
//! Routes are partitioned by host (exact hosts in a hash map, `*.` wildcards by suffix, and the
//! routes with no host), and inside each partition indexed by path (exact map, template trie,
//! prefix radix tree). A lookup visits only the buckets the request's host and path reach, so
//! its cost grows with the path's length, not the number of routes. Regex routes are matched
//! together through one `RegexSet` pass, and only when they could still win.
//!
//! Precedence (lower rank wins): `priority` (higher first), then path class (exact, template,
//! prefix, regex), then path specificity (longer prefix, more literal template segments), then
//! host class (exact, wildcard with longer suffix, none), then number of other conditions
//! (more first), then file order.

#![warn(missing_docs)]

mod index;
pub mod path;
mod shadow;
mod spec;
mod template;

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, Method};
use regex::RegexSet;

use index::{Cand, PathIndex};
pub use path::{DotSegments, EscapedSlashes, PathError, PathPolicy, normalize_path};
pub use shadow::Shadowed;
pub use spec::{HostMatch, PathMatch, RouteSpec};
pub use template::{Segment, Template, TemplateError};

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Host from the `Host` header or the URI authority; port and case are handled here.
    pub host: Option<&'a str>,
    /// The path, without query.
    pub path: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// A route found for a request.
#[derive(Debug)]
pub struct Hit<'a, T> {
    /// Index of the route in the order given to [`Router::new`].
    pub index: usize,
    /// The value stored with the route.
    pub value: &'a T,
}

/// A compiled route table mapping requests to values of type `T`.
pub struct Router<T> {
    specs: Vec<RouteSpec>,
    values: Vec<T>,
    exact_hosts: HashMap<Box<str>, PathIndex>,
    /// Some exact host names a port: requests with a port also look up `host:port`.
    port_hosts: bool,
    wildcard_hosts: HashMap<Box<str>, PathIndex>,
    any_host: PathIndex,
    regex: Option<RegexRoutes>,
    order: Vec<usize>,
}

struct RegexRoutes {
    set: RegexSet,
    routes: Vec<u32>,
    best_rank: spec::Rank,
}

impl<T> Router<T> {
    /// Compiles a route table. Routes keep their index (file order).
    pub fn new(routes: Vec<(RouteSpec, T)>) -> Self {
        let mut specs = Vec::with_capacity(routes.len());
        let mut values = Vec::with_capacity(routes.len());
        for (s, v) in routes {
            specs.push(s);
            values.push(v);
        }
        let mut exact_hosts: HashMap<Box<str>, PathIndex> = HashMap::new();
        let port_hosts = specs
            .iter()
            .any(|s| s.hosts.iter().any(HostMatch::has_port));
        let mut wildcard_hosts: HashMap<Box<str>, PathIndex> = HashMap::new();
        let mut any_host = PathIndex::default();
        let mut regex_patterns = Vec::new();
        let mut regex_routes = Vec::new();
        let mut regex_best: Option<spec::Rank> = None;

        for (i, spec) in specs.iter().enumerate() {
            let order = i as u32;
            if let PathMatch::Regex(r) = &spec.path {
                regex_patterns.push(r.as_str().to_owned());
                regex_routes.push(order);
                let lo = spec.rank_bounds(order).0;
                regex_best = Some(regex_best.map_or(lo, |b| b.min(lo)));
                continue;
            }
            if spec.hosts.is_empty() {
                insert(&mut any_host, spec.any_host_rank(order), spec, order);
                continue;
            }
            for h in &spec.hosts {
                let rank = spec.rank(h.rank(), order);
                let table = match h {
                    HostMatch::Exact(name) => exact_hosts.entry(name.as_str().into()).or_default(),
                    HostMatch::Wildcard(sfx) => {
                        wildcard_hosts.entry(sfx.as_str().into()).or_default()
                    }
                };
                insert(table, rank, spec, order);
            }
        }

        let regex = regex_best.map(|best_rank| RegexRoutes {
            // Patterns were compiled individually already; the set only fails on size.
            set: RegexSet::new(&regex_patterns).unwrap_or_else(|_| RegexSet::empty()),
            routes: regex_routes,
            best_rank,
        });

        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by(|&a, &b| spec::precedence(&specs[a], a as u32, &specs[b], b as u32));

        Router {
            specs,
            values,
            exact_hosts,
            port_hosts,
            wildcard_hosts,
            any_host,
            regex,
            order,
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The route values in file order.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// The route specs in file order.
    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    /// Route indices in precedence order (for listing; a request's host can reorder ties).
    pub fn precedence_order(&self) -> &[usize] {
        &self.order
    }

    /// Routes that can never be chosen because another route always wins first.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        shadow::find(&self.specs)
    }

    /// Finds the route for a request.
    pub fn lookup(&self, req: &Request<'_>) -> Option<Hit<'_, T>> {
        let mut best: Option<Cand> = None;
        let host = req.host.map(normalize_host);
        let with_port = if self.port_hosts {
            req.host.and_then(host_with_port)
        } else {
            None
        };
        {
            let mut visit = |bucket: &[Cand]| {
                for c in bucket {
                    if best.is_some_and(|b| b.rank <= c.rank) {
                        return;
                    }
                    if self.conditions_hold(c.route as usize, req) {
                        best = Some(*c);
                        return;
                    }
                }
            };
            if let Some(hp) = with_port.as_deref()
                && let Some(t) = self.exact_hosts.get(hp)
            {
                t.for_each_bucket(req.path, &mut visit);
            }
            if let Some(h) = host.as_deref() {
                if !self.exact_hosts.is_empty()
                    && let Some(t) = self.exact_hosts.get(h)
                {
                    t.for_each_bucket(req.path, &mut visit);
                }
                if !self.wildcard_hosts.is_empty() {
                    for (i, b) in h.bytes().enumerate() {
                        if b == b'.'
                            && let Some(t) = self.wildcard_hosts.get(&h[i + 1..])
                        {
                            t.for_each_bucket(req.path, &mut visit);
                        }
                    }
                }
            }
            self.any_host.for_each_bucket(req.path, &mut visit);
        }
        if let Some(rx) = &self.regex
            && best.is_none_or(|b| rx.best_rank < b.rank)
            && rx.set.is_match(req.path)
        {
            for i in rx.set.matches(req.path).iter() {
                let route = rx.routes[i] as usize;
                let spec = &self.specs[route];
                let rank = if spec.hosts.is_empty() {
                    Some(spec.any_host_rank(route as u32))
                } else {
                    host.as_deref().and_then(|h| {
                        spec.hosts
                            .iter()
                            .filter(|m| m.matches_request(h, with_port.as_deref()))
                            .map(|m| spec.rank(m.rank(), route as u32))
                            .min()
                    })
                };
                let Some(rank) = rank else { continue };
                if best.is_some_and(|b| b.rank <= rank) || !self.conditions_hold(route, req) {
                    continue;
                }
                best = Some(Cand {
                    rank,
                    route: route as u32,
                });
            }
        }
        best.map(|c| Hit {
            index: c.route as usize,
            value: &self.values[c.route as usize],
        })
    }

    /// Method, header and query conditions (host and path were checked by the index).
    fn conditions_hold(&self, route: usize, req: &Request<'_>) -> bool {
        let spec = &self.specs[route];
        if !spec.methods.is_empty() && !spec.methods.contains(req.method) {
            return false;
        }
        for (name, value) in &spec.headers {
            if !req.headers.get_all(name).iter().any(|v| v == value) {
                return false;
            }
        }
        for (k, v) in &spec.query {
            if !query_has(req.query, k, v) {
                return false;
            }
        }
        true
    }
}

fn insert(table: &mut PathIndex, rank: spec::Rank, spec: &RouteSpec, order: u32) {
    let c = Cand { rank, route: order };
    match &spec.path {
        PathMatch::Exact(p) => table.insert_exact(p, c),
        PathMatch::Prefix(p) => table.insert_prefix(p, c),
        PathMatch::Template(t) => table.insert_template(t.segments(), c),
        PathMatch::Regex(_) => {}
    }
}

/// Lowercases and strips the port and a trailing dot; borrows when already clean.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `host:port` lower-cased with a trailing dot of the name removed, when a port is given.
fn host_with_port(host: &str) -> Option<Cow<'_, str>> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        (&host[..=end], host[end + 1..].strip_prefix(':')?)
    } else {
        host.rsplit_once(':')?
    };
    if port.is_empty() {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let clean =
        name.len() + 1 + port.len() == host.len() && !host.bytes().any(|b| b.is_ascii_uppercase());
    Some(if clean {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(format!("{}:{port}", name.to_ascii_lowercase()))
    })
}

/// Whether the query string has `key=value` (percent-decoded, `+` as space).
fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    let Some(q) = query else { return false };
    q.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decoded_eq(k, key) && decoded_eq(v, value)
    })
}

fn decoded_eq(raw: &str, want: &str) -> bool {
    if !raw.contains(['%', '+']) {
        return raw == want;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out == want.as_bytes()
}

#[cfg(test)]
mod tests;
