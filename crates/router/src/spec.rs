//! What a route matches, as the config describes it, and the precedence between routes.

use std::cmp::Ordering;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use crate::template::Template;

/// How a route matches the request path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path, byte for byte.
    Exact(String),
    /// Paths starting with these bytes (`/api` also matches `/apix`, as in Envoy; end the prefix
    /// with `/` to match whole segments only).
    Prefix(String),
    /// A template whose `{name}` segments match any one non-empty segment.
    Template(Template),
    /// A regex that must match the whole path.
    Regex(Regex),
}

impl PathMatch {
    /// 0 exact, 1 template, 2 prefix, 3 regex: the order of the contract's precedence rules.
    pub(crate) fn class(&self) -> u8 {
        match self {
            PathMatch::Exact(_) => 0,
            PathMatch::Template(_) => 1,
            PathMatch::Prefix(_) => 2,
            PathMatch::Regex(_) => 3,
        }
    }

    /// Within a class, larger is more specific.
    pub(crate) fn specificity(&self) -> u32 {
        match self {
            PathMatch::Exact(_) | PathMatch::Regex(_) => 0,
            PathMatch::Template(t) => t.specificity(),
            PathMatch::Prefix(p) => p.len() as u32,
        }
    }

    /// Builds an anchored regex path match.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(PathMatch::Regex)
    }

    /// Human-readable form for the admin API.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("path {p}"),
            PathMatch::Prefix(p) => format!("path_prefix {p}"),
            PathMatch::Template(t) => format!("path_template {}", t.source()),
            PathMatch::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("path_regex {inner}")
            }
        }
    }
}

/// Letters, digits, `-`, `_` and `.`: a DNS name or an IPv4 address.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `h` (lower-case, as stored) ends in `:port`; `[v6]` alone has none.
fn has_port(h: &str) -> bool {
    h.rsplit_once(':').is_some_and(|(name, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && (name.ends_with(']') || !name.contains(':'))
    })
}

/// A host condition: `api.example.com`, `api.example.com:8443` (that port only) or
/// `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this host (lowercase; with `:port` when the route names one).
    Exact(String),
    /// Any host ending in `.` + this suffix (stored without the `*.`).
    Wildcard(String),
}

impl HostMatch {
    /// Parses `api.example.com`, `api.example.com:8443`, `[::1]`, `[::1]:8443` or
    /// `*.example.com`; lowercases and drops a trailing dot of the name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let bad = |why: &str| {
            Err(format!(
                "invalid host `{s}`: {why}; use `name.example.com`, `name.example.com:8443`, `[::1]` or `*.example.com`"
            ))
        };
        if let Some(rest) = s.strip_prefix("*.") {
            let rest = rest.trim_end_matches('.');
            if !valid_name(rest) {
                return bad("a wildcard needs a domain after `*.`");
            }
            return Ok(HostMatch::Wildcard(rest.to_owned()));
        }
        // `name:port` matches only requests that name that port; IPv6 literals are bracketed.
        let (name, port) = if s.starts_with('[') {
            let Some(end) = s.find(']') else {
                return bad("an IPv6 literal needs its closing `]`");
            };
            match &s[end + 1..] {
                "" => (&s[..=end], None),
                rest => match rest.strip_prefix(':') {
                    Some(p) => (&s[..=end], Some(p)),
                    None => return bad("only `:port` may follow an IPv6 literal"),
                },
            }
        } else {
            match s.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (s.as_str(), None),
            }
        };
        let name = name.trim_end_matches('.');
        let valid = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        } else {
            valid_name(name)
        };
        if !valid {
            return bad("not a host name");
        }
        match port {
            None => Ok(HostMatch::Exact(name.to_owned())),
            Some(p)
                if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u16>().is_ok() =>
            {
                Ok(HostMatch::Exact(format!("{name}:{p}")))
            }
            Some(_) => bad("a port after `:` must be a number up to 65535"),
        }
    }

    /// Whether this names a port (`name:port`).
    pub fn has_port(&self) -> bool {
        matches!(self, HostMatch::Exact(h) if has_port(h))
    }

    /// Whether a request host matches: `host` without its port, `with_port` as sent (both
    /// lower-case), for hosts that name a port.
    pub(crate) fn matches_request(&self, host: &str, with_port: Option<&str>) -> bool {
        match self {
            HostMatch::Exact(h) if has_port(h) => with_port == Some(h.as_str()),
            _ => self.matches(host),
        }
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether every host this one matches is also matched by `other`.
    pub(crate) fn covered_by(&self, other: &HostMatch) -> bool {
        match (self, other) {
            (_, HostMatch::Exact(o)) => matches!(self, HostMatch::Exact(s) if s == o),
            (HostMatch::Exact(s), w @ HostMatch::Wildcard(_)) => w.matches(s),
            (HostMatch::Wildcard(s), HostMatch::Wildcard(o)) => {
                s == o || HostMatch::Wildcard(o.clone()).matches(s)
            }
        }
    }

    /// (class, specificity): exact beats wildcard, a longer wildcard suffix beats a shorter.
    pub(crate) fn rank(&self) -> (u8, u32) {
        match self {
            // A host that names the port is more specific than the same host without one.
            HostMatch::Exact(h) if has_port(h) => (0, 0),
            HostMatch::Exact(_) => (0, 1),
            HostMatch::Wildcard(s) => (1, u32::MAX - s.len() as u32),
        }
    }
}

/// Everything a route can match on; all given conditions must hold.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Hosts; any host when empty.
    pub hosts: Vec<HostMatch>,
    /// The path condition.
    pub path: PathMatch,
    /// Methods; any when empty.
    pub methods: Vec<Method>,
    /// Headers that must be present with exactly this value.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters that must be present with exactly this (decoded) value.
    pub query: Vec<(String, String)>,
    /// Overrides precedence: higher wins.
    pub priority: i32,
}

impl RouteSpec {
    /// A spec matching every request with the given path condition.
    pub fn new(path: PathMatch) -> Self {
        Self {
            hosts: Vec::new(),
            path,
            methods: Vec::new(),
            headers: Vec::new(),
            query: Vec::new(),
            priority: 0,
        }
    }

    pub(crate) fn condition_count(&self) -> u32 {
        u32::from(!self.methods.is_empty()) + self.headers.len() as u32 + self.query.len() as u32
    }

    /// The rank of this route when reached through a host condition of class `host`.
    pub(crate) fn rank(&self, host: (u8, u32), order: u32) -> Rank {
        Rank {
            priority: -(self.priority as i64),
            path_class: self.path.class(),
            path_spec: u32::MAX - self.path.specificity(),
            host_class: host.0,
            host_spec: host.1,
            conditions: u32::MAX - self.condition_count(),
            order,
        }
    }

    /// Rank with no host condition.
    pub(crate) fn any_host_rank(&self, order: u32) -> Rank {
        self.rank((2, 0), order)
    }

    /// The best and the worst rank this route can have over its host conditions.
    pub(crate) fn rank_bounds(&self, order: u32) -> (Rank, Rank) {
        if self.hosts.is_empty() {
            let r = self.any_host_rank(order);
            return (r, r);
        }
        let mut ranks = self.hosts.iter().map(|h| self.rank(h.rank(), order));
        let first = ranks.next().unwrap_or_else(|| self.any_host_rank(order));
        ranks.fold((first, first), |(lo, hi), r| (lo.min(r), hi.max(r)))
    }
}

/// Total order of routes for one request: lower wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    priority: i64,
    path_class: u8,
    path_spec: u32,
    host_class: u8,
    host_spec: u32,
    conditions: u32,
    order: u32,
}

/// Compares route specs by precedence for one host class (used to list routes in order).
pub(crate) fn precedence(a: &RouteSpec, ai: u32, b: &RouteSpec, bi: u32) -> Ordering {
    a.rank_bounds(ai).0.cmp(&b.rank_bounds(bi).0)
}
