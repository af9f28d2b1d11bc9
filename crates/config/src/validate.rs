//! Raw config → typed [`Config`]: every field checked, every problem collected (not just the
//! first), each with the field path so the caller can place it in the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use portcullis_router::{
    DotSegments, EscapedSlashes, HostMatch, PathMatch, PathPolicy, RouteSpec, Template,
};
use regex::Regex;
use serde_json::Value;

use crate::error::{ConfigError, Lint, Severity};
use crate::model::*;
use crate::raw::*;

mod mirror;
mod policy;

/// Plugins that authenticate; routes using them should be pinned to hosts.
const AUTH_PLUGINS: &[&str] = &["jwt", "key_auth", "basic_auth"];

pub(crate) struct Validator<'a> {
    pub errors: Vec<ConfigError>,
    pub lints: Vec<Lint>,
    base_dir: &'a Path,
}

impl<'a> Validator<'a> {
    pub(crate) fn new(base_dir: &'a Path) -> Self {
        Self {
            errors: Vec::new(),
            lints: Vec::new(),
            base_dir,
        }
    }

    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    fn lint(&mut self, severity: Severity, policy: &'static str, path: String, msg: String) {
        self.lints.push(Lint {
            severity,
            policy,
            error: ConfigError::new(path, msg),
        });
    }

    fn duration(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self.parse_duration(path, s).unwrap_or(default),
        }
    }

    fn opt_duration(&mut self, path: &str, v: &Option<String>) -> Option<Duration> {
        v.as_ref().and_then(|s| self.parse_duration(path, s))
    }

    fn parse_duration(&mut self, path: &str, s: &str) -> Option<Duration> {
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "invalid duration `{s}`: write a number and a unit, e.g. 250ms, 2s, 1m"
                    ),
                );
                None
            }
        }
    }

    fn file(&mut self, path: &str, f: &str) -> PathBuf {
        let p = self.base_dir.join(f);
        if !p.is_file() {
            self.err(path, format!("file `{}` does not exist", p.display()));
        }
        p
    }

    fn header_name(&mut self, path: &str, s: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(path, format!("`{s}` is not a valid header name"));
                None
            }
        }
    }

    fn header_value(&mut self, path: &str, s: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(s) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    path,
                    "not a valid header value (control characters are not allowed)",
                );
                None
            }
        }
    }

    fn header_pairs(
        &mut self,
        path: &str,
        map: &BTreeMap<String, String>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (k, v) in map {
            let p = format!("{path}.{k}");
            if let (Some(n), Some(v)) = (self.header_name(&p, k), self.header_value(&p, v)) {
                out.push((n, v));
            }
        }
        out
    }

    pub(crate) fn config(&mut self, raw: &RawConfig) -> Option<ConfigParts> {
        let listeners = self.listeners(&raw.listeners);
        let admin = self.admin(raw.admin.as_ref());
        let upstream_names: Vec<&String> = raw.upstreams.keys().collect();
        let index: HashMap<&str, usize> = upstream_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let upstreams: Vec<Upstream> = raw
            .upstreams
            .iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect();
        let global_plugins = plugin_confs("plugins", &raw.plugins);
        let routes = self.routes(&raw.routes, &index, &raw.plugins);
        self.client_cert_without_client_auth(raw, &listeners);
        let runtime = self.runtime(&raw.runtime);
        let observability = self.observability(raw.observability.as_ref());
        let dns = self.dns(raw.dns.as_ref());
        let policies = self.policies(&raw.policies, &index, &routes);
        if !self.errors.is_empty() {
            return None;
        }
        Some(ConfigParts {
            listeners,
            admin,
            upstreams,
            routes,
            plugins: global_plugins,
            policies,
            runtime,
            observability,
            dns,
        })
    }

    /// `client_cert` configured while no listener asks for client certificates: every request
    /// of those routes would get 401.
    fn client_cert_without_client_auth(&mut self, raw: &RawConfig, listeners: &[Listener]) {
        let mtls = listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()));
        if mtls {
            return;
        }
        let mut places = Vec::new();
        if raw.plugins.contains_key("client_cert") {
            places.push("plugins.client_cert".to_owned());
        }
        for (i, r) in raw.routes.iter().enumerate() {
            if r.plugins.contains_key("client_cert") {
                places.push(format!("routes[{i}].plugins.client_cert"));
            }
        }
        for path in places {
            self.lint(
                Severity::Warning,
                "client-cert-without-client-auth",
                path,
                "no listener asks for client certificates (`tls.client_auth`): this plugin will answer 401 to every request".into(),
            );
        }
    }

    fn dns(&mut self, raw: Option<&RawDns>) -> Dns {
        let d = Dns::default();
        let Some(r) = raw else { return d };
        let nameservers = r
            .nameservers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let p = format!("dns.nameservers[{i}]");
                if let Ok(ip) = s.parse::<IpAddr>() {
                    return Some(SocketAddr::new(ip, 53));
                }
                self.socket_addr(&p, s)
            })
            .collect();
        Dns {
            nameservers,
            timeout: self.duration("dns.timeout", &r.timeout, d.timeout),
            stale_for: self.duration("dns.stale_for", &r.stale_for, d.stale_for),
        }
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<Listener> {
        if raw.is_empty() {
            self.err("listeners", "at least one listener is needed");
        }
        let mut names = HashSet::new();
        let mut addrs = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if !names.insert(l.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!("duplicate listener name `{}`", l.name),
                );
            }
            let Some(address) = self.socket_addr(&format!("{p}.address"), &l.address) else {
                continue;
            };
            if address.port() != 0
                && let Some(other) = addrs.insert(address, i)
            {
                self.err(
                    format!("{p}.address"),
                    format!("address {address} is already used by listeners[{other}]"),
                );
            }
            let tls = l.tls.as_ref().map(|t| self.listener_tls(&p, t));
            let limits = self.limits(&p, l.limits.as_ref());
            let trusted_proxies = l
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(j, s)| self.cidr(&format!("{p}.trusted_proxies[{j}]"), s))
                .collect();
            out.push(Listener {
                name: l.name.clone(),
                address,
                tls,
                limits,
                trusted_proxies,
            });
        }
        out
    }

    fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("`{s}` is not an IP:PORT address (e.g. 127.0.0.1:8080 or [::1]:8080)"),
                );
                None
            }
        }
    }

    fn cidr(&mut self, path: &str, s: &str) -> Option<IpNet> {
        if let Ok(n) = s.parse::<IpNet>() {
            return Some(n);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.err(
            path,
            format!("`{s}` is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
        );
        None
    }

    fn listener_tls(&mut self, p: &str, t: &RawListenerTls) -> ListenerTls {
        if t.certificates.is_empty() {
            self.err(
                format!("{p}.tls.certificates"),
                "at least one certificate is needed",
            );
        }
        let certificates = t
            .certificates
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let field = format!("{p}.tls.certificates[{j}]");
                CertFiles {
                    cert: self.file(&format!("{field}.cert"), &c.cert),
                    key: self.file(&format!("{field}.key"), &c.key),
                    field,
                }
            })
            .collect();
        let min_version = match t.min_version.as_deref() {
            None | Some("1.2") => TlsVersion::Tls12,
            Some("1.3") => TlsVersion::Tls13,
            Some(v @ ("1.0" | "1.1" | "1" | "1.0.0")) => {
                self.lint(
                    Severity::Error,
                    "tls-min-version",
                    format!("{p}.tls.min_version"),
                    format!("TLS {v} is insecure and not supported; use \"1.2\" or \"1.3\""),
                );
                TlsVersion::Tls12
            }
            Some(v) => {
                self.err(
                    format!("{p}.tls.min_version"),
                    format!("unknown TLS version `{v}`: use \"1.2\" or \"1.3\""),
                );
                TlsVersion::Tls12
            }
        };
        let client_auth = t.client_auth.as_ref().map(|c| {
            let field = format!("{p}.tls.client_auth");
            let mode = match c.mode.as_deref() {
                None | Some("require") => ClientAuthMode::Require,
                Some("optional") => ClientAuthMode::Optional,
                Some(m) => {
                    self.err(
                        format!("{field}.mode"),
                        format!("unknown mode `{m}`: use `require` or `optional`"),
                    );
                    ClientAuthMode::Require
                }
            };
            ClientAuth {
                ca: self.file(&format!("{field}.ca"), &c.ca),
                mode,
                crl: c
                    .crl
                    .as_ref()
                    .map(|f| self.file(&format!("{field}.crl"), f)),
                field,
            }
        });
        ListenerTls {
            certificates,
            min_version,
            client_auth,
            session_tickets: t.session_tickets.unwrap_or(true),
        }
    }

    fn limits(&mut self, p: &str, raw: Option<&RawLimits>) -> Limits {
        let d = Limits::default();
        let Some(r) = raw else { return d };
        let lp = format!("{p}.limits");
        let max_header_bytes = r
            .max_header_bytes
            .map_or(d.max_header_bytes, |v| v as usize);
        if max_header_bytes < 1024 {
            self.err(
                format!("{lp}.max_header_bytes"),
                "must be at least 1024 bytes",
            );
        }
        Limits {
            max_header_bytes,
            max_body_bytes: r.max_body_bytes.unwrap_or(d.max_body_bytes),
            header_read_timeout: self.duration(
                &format!("{lp}.header_read_timeout"),
                &r.header_read_timeout,
                d.header_read_timeout,
            ),
            idle_timeout: self.duration(
                &format!("{lp}.idle_timeout"),
                &r.idle_timeout,
                d.idle_timeout,
            ),
            max_connections: r.max_connections.map(|v| v as usize).filter(|&v| v > 0),
            max_connections_per_ip: r
                .max_connections_per_ip
                .map(|v| v as usize)
                .filter(|&v| v > 0),
            path: self.path_policy(&format!("{lp}.path"), r.path.as_ref()),
        }
    }

    fn path_policy(&mut self, p: &str, raw: Option<&RawPathLimits>) -> PathPolicy {
        let d = PathPolicy::default();
        let Some(r) = raw else { return d };
        let dot_segments = match r.dot_segments.as_deref() {
            None | Some("resolve") => DotSegments::Resolve,
            Some("reject") => DotSegments::Reject,
            Some(other) => {
                self.err(
                    format!("{p}.dot_segments"),
                    format!("unknown value `{other}`: use resolve or reject"),
                );
                d.dot_segments
            }
        };
        let escaped_slashes = match r.escaped_slashes.as_deref() {
            None | Some("reject") => EscapedSlashes::Reject,
            Some("keep") => EscapedSlashes::Keep,
            Some("decode") => EscapedSlashes::Decode,
            Some(other) => {
                self.err(
                    format!("{p}.escaped_slashes"),
                    format!("unknown value `{other}`: use reject, keep or decode"),
                );
                d.escaped_slashes
            }
        };
        PathPolicy {
            merge_slashes: r.merge_slashes.unwrap_or(d.merge_slashes),
            dot_segments,
            escaped_slashes,
        }
    }

    fn admin(&mut self, raw: Option<&RawAdmin>) -> Admin {
        let Some(a) = raw else {
            return Admin {
                address: SocketAddr::from(([127, 0, 0, 1], 9901)),
                token: None,
            };
        };
        let address = self
            .socket_addr("admin.address", &a.address)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
        let token = a.token.clone().filter(|t| !t.is_empty());
        if !address.ip().is_loopback() && token.is_none() {
            self.lint(
                Severity::Error,
                "admin-exposed",
                "admin.address".into(),
                format!(
                    "the admin API on non-loopback {address} needs a `token`; anyone who reaches it could reconfigure the gateway"
                ),
            );
        }
        Admin { address, token }
    }

    fn upstream(&mut self, name: &str, u: &RawUpstream) -> Upstream {
        let p = format!("upstreams.{name}");
        if u.targets.is_empty() {
            self.err(format!("{p}.targets"), "at least one target is needed");
        }
        let mut targets = Vec::new();
        for (i, t) in u.targets.iter().enumerate() {
            let tp = format!("{p}.targets[{i}]");
            match parse_host_port(&t.address) {
                Some((host, port)) => targets.push(Target {
                    zone: t.zone.clone(),
                    host,
                    port,
                    weight: match t.weight {
                        Some(0) => {
                            self.err(format!("{tp}.weight"), "weight must be at least 1");
                            1
                        }
                        Some(w) => w,
                        None => 1,
                    },
                }),
                None => self.err(
                    format!("{tp}.address"),
                    format!(
                        "`{}` is not HOST:PORT (e.g. 127.0.0.1:9001 or users.internal:80)",
                        t.address
                    ),
                ),
            }
        }
        let tls = u.tls.as_ref().map(|t| {
            if t.insecure_skip_verify {
                self.lint(
                    Severity::Warning,
                    "insecure-upstream-tls",
                    format!("{p}.tls.insecure_skip_verify"),
                    "certificate verification is off: anyone on the path can impersonate this upstream".into(),
                );
            }
            let client_cert = match (&t.client_cert, &t.client_key) {
                (Some(c), Some(k)) => Some((
                    self.file(&format!("{p}.tls.client_cert"), c),
                    self.file(&format!("{p}.tls.client_key"), k),
                )),
                (None, None) => None,
                _ => {
                    self.err(
                        format!("{p}.tls"),
                        "`client_cert` and `client_key` go together",
                    );
                    None
                }
            };
            UpstreamTls {
                ca: t.ca.as_ref().map(|c| self.file(&format!("{p}.tls.ca"), c)),
                server_name: t.server_name.clone(),
                insecure_skip_verify: t.insecure_skip_verify,
                client_cert,
            }
        });
        let protocol = match u.protocol.as_deref() {
            None | Some("http1") => Protocol::Http1,
            Some("h2c") => Protocol::H2c,
            Some("auto") => {
                if tls.is_none() {
                    self.err(
                        format!("{p}.protocol"),
                        "`auto` picks HTTP/2 or HTTP/1.1 by TLS ALPN and needs `tls`; use `h2c` or `http1` for plaintext",
                    );
                }
                Protocol::Auto
            }
            Some(other) => {
                self.err(
                    format!("{p}.protocol"),
                    format!("unknown protocol `{other}`: use http1, h2c or auto"),
                );
                Protocol::Http1
            }
        };
        let load_balancer = self.load_balancer(&p, u.load_balancer.as_ref());
        let t = u.timeouts.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: self.duration(
                &format!("{p}.timeouts.connect"),
                &t.connect,
                Duration::from_secs(2),
            ),
            response_header: self.duration(
                &format!("{p}.timeouts.response_header"),
                &t.response_header,
                Duration::from_secs(15),
            ),
            read_idle: self.duration(
                &format!("{p}.timeouts.read_idle"),
                &t.read_idle,
                Duration::from_secs(30),
            ),
        };
        let pr = u.pool.clone().unwrap_or_default();
        let pool = Pool {
            max_idle_per_host: pr.max_idle_per_host.unwrap_or(64) as usize,
            idle_timeout: self.duration(
                &format!("{p}.pool.idle_timeout"),
                &pr.idle_timeout,
                Duration::from_secs(90),
            ),
            max_connections_per_host: pr.max_connections_per_host.unwrap_or(0) as usize,
        };
        let retry = u.retry.as_ref().map(|r| self.retry(&p, r));
        let circuit_breaker = u
            .circuit_breaker
            .as_ref()
            .map(|b| self.circuit_breaker(&p, b));
        let locality = u.locality.as_ref().and_then(|l| {
            let lp = format!("{p}.locality");
            if let Some(other) = l.prefer.as_deref().filter(|x| *x != "local") {
                self.err(
                    format!("{lp}.prefer"),
                    format!("unknown preference `{other}`: use local"),
                );
            }
            let min = l.min_healthy_percent.unwrap_or(70.0);
            if !(min > 0.0 && min <= 100.0) {
                self.err(
                    format!("{lp}.min_healthy_percent"),
                    "a percentage above 0 and at most 100",
                );
                return None;
            }
            Some(min)
        });
        let hc = u.health_check.clone().unwrap_or_default();
        let active_health = hc.active.as_ref().map(|a| ActiveHealth {
            path: a.path.clone().unwrap_or_else(|| "/healthz".into()),
            interval: self.duration(
                &format!("{p}.health_check.active.interval"),
                &a.interval,
                Duration::from_secs(5),
            ),
            timeout: self.duration(
                &format!("{p}.health_check.active.timeout"),
                &a.timeout,
                Duration::from_secs(1),
            ),
            healthy_threshold: a.healthy_threshold.unwrap_or(2).max(1),
            unhealthy_threshold: a.unhealthy_threshold.unwrap_or(3).max(1),
            expected_statuses: a.expected_statuses.clone(),
        });
        let passive_health = hc.passive.as_ref().map(|ph| PassiveHealth {
            consecutive_failures: ph.consecutive_failures.unwrap_or(5).max(1),
            eject_for: self.duration(
                &format!("{p}.health_check.passive.eject_for"),
                &ph.eject_for,
                Duration::from_secs(30),
            ),
            max_ejected_percent: ph.max_ejected_percent.unwrap_or(50.0).clamp(0.0, 100.0),
        });
        Upstream {
            name: name.to_owned(),
            targets,
            protocol,
            tls,
            load_balancer,
            timeouts,
            pool,
            retry,
            circuit_breaker,
            locality,
            active_health,
            passive_health,
        }
    }

    fn load_balancer(&mut self, p: &str, raw: Option<&RawLoadBalancer>) -> LoadBalancer {
        let Some(lb) = raw else {
            return LoadBalancer::RoundRobin;
        };
        let lp = format!("{p}.load_balancer");
        match lb.policy.as_str() {
            "round_robin" => LoadBalancer::RoundRobin,
            "least_request" => LoadBalancer::LeastRequest,
            "random" => LoadBalancer::Random,
            "consistent_hash" => {
                let key = lb.key.as_deref().unwrap_or("");
                let parsed = match key.split_once(':') {
                    Some(("header", n)) => self
                        .header_name(&format!("{lp}.key"), n)
                        .map(HashKey::Header),
                    Some(("cookie", n)) if !n.is_empty() => Some(HashKey::Cookie(n.into())),
                    Some(("query", n)) if !n.is_empty() => Some(HashKey::Query(n.into())),
                    None if key == "ip" => Some(HashKey::ClientIp),
                    None if key == "path" => Some(HashKey::Path),
                    _ => {
                        self.err(
                            format!("{lp}.key"),
                            format!(
                                "invalid hash key `{key}`: use header:NAME, cookie:NAME, query:NAME, ip or path"
                            ),
                        );
                        None
                    }
                };
                LoadBalancer::ConsistentHash(parsed.unwrap_or(HashKey::Path))
            }
            other => {
                self.err(
                    format!("{lp}.policy"),
                    format!(
                        "unknown policy `{other}`: use round_robin, least_request, random or consistent_hash"
                    ),
                );
                LoadBalancer::RoundRobin
            }
        }
    }

    fn retry(&mut self, p: &str, r: &RawRetry) -> Retry {
        let rp = format!("{p}.retry");
        let mut on = Vec::new();
        for (i, v) in r.on.iter().enumerate() {
            let cond = match v {
                Value::Number(n) => n
                    .as_u64()
                    .filter(|c| (100..600).contains(c))
                    .map(|c| RetryOn::Status(c as u16)),
                Value::String(s) => match s.as_str() {
                    "connect_failure" => Some(RetryOn::ConnectFailure),
                    "reset" => Some(RetryOn::Reset),
                    "refused_stream" => Some(RetryOn::RefusedStream),
                    "timeout" => Some(RetryOn::Timeout),
                    s => s
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .map(RetryOn::Status),
                },
                _ => None,
            };
            match cond {
                Some(c) => on.push(c),
                None => self.err(
                    format!("{rp}.on[{i}]"),
                    format!(
                        "unknown retry condition {v}: use connect_failure, reset, refused_stream, timeout or a status code"
                    ),
                ),
            }
        }
        if on.is_empty() {
            on = vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::RefusedStream,
            ];
        }
        let b = r.backoff.clone().unwrap_or_default();
        let attempts = r.attempts.unwrap_or(2);
        if attempts == 0 {
            self.err(
                format!("{rp}.attempts"),
                "attempts counts the first try too and must be at least 1",
            );
        }
        let budget_percent = r.budget_percent.unwrap_or(20.0);
        if !(0.0..=100.0).contains(&budget_percent) {
            self.err(format!("{rp}.budget_percent"), "must be between 0 and 100");
        }
        Retry {
            attempts: attempts.max(1),
            on,
            backoff_base: self.duration(
                &format!("{rp}.backoff.base"),
                &b.base,
                Duration::from_millis(25),
            ),
            backoff_max: self.duration(
                &format!("{rp}.backoff.max"),
                &b.max,
                Duration::from_secs(1),
            ),
            budget_percent,
            per_try_timeout: self
                .opt_duration(&format!("{rp}.per_try_timeout"), &r.per_try_timeout),
            max_replay_body_bytes: r.max_replay_body_bytes.unwrap_or(64 * 1024),
        }
    }

    fn circuit_breaker(&mut self, p: &str, b: &RawCircuitBreaker) -> CircuitBreaker {
        let bp = format!("{p}.circuit_breaker");
        let failure_rate = b.failure_rate.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&failure_rate) || failure_rate == 0.0 {
            self.err(
                format!("{bp}.failure_rate"),
                "a ratio above 0 and at most 1, e.g. 0.5",
            );
        }
        CircuitBreaker {
            failure_rate,
            window: self.duration(&format!("{bp}.window"), &b.window, Duration::from_secs(60)),
            min_requests: b.min_requests.unwrap_or(20).max(1),
            open_for: self.duration(
                &format!("{bp}.open_for"),
                &b.open_for,
                Duration::from_secs(30),
            ),
            half_open_requests: b.half_open_requests.unwrap_or(3).max(1),
            slow_call_threshold: self
                .opt_duration(&format!("{bp}.slow_call_threshold"), &b.slow_call_threshold),
            failure_statuses: self.failure_statuses(&bp, b.failure_statuses.as_deref()),
        }
    }

    /// `failure_statuses`: codes, `FROM-TO` ranges and `Nxx` classes; default 502-504.
    fn failure_statuses(&mut self, bp: &str, raw: Option<&[Value]>) -> Vec<(u16, u16)> {
        let Some(raw) = raw else {
            return vec![(502, 504)];
        };
        let mut out = Vec::new();
        for (i, v) in raw.iter().enumerate() {
            match parse_status_range(v) {
                Some(r) => out.push(r),
                None => self.err(
                    format!("{bp}.failure_statuses[{i}]"),
                    format!(
                        "invalid status {v}: write a code (500), a range (502-504) or a class (5xx), within 100-599"
                    ),
                ),
            }
        }
        if out.is_empty() && raw.is_empty() {
            self.err(
                format!("{bp}.failure_statuses"),
                "empty: list at least one status, or leave it out for the default 502-504",
            );
        }
        out
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        upstreams: &HashMap<&str, usize>,
        global_plugins: &BTreeMap<String, Value>,
    ) -> Vec<Route> {
        let mut names = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let p = format!("routes[{i}]");
            if let Some(first) = names.insert(r.name.as_str(), i) {
                self.lint(
                    Severity::Error,
                    "duplicate-name",
                    format!("{p}.name"),
                    format!("route name `{}` is already used by routes[{first}]", r.name),
                );
            }
            let spec = self.route_spec(&p, r);
            let action = self.action(&p, r, upstreams);
            let rewrite = Some(self.rewrite(&p, r.rewrite.as_ref()))
                .filter(|rw| !rw.is_empty())
                .map(Box::new);
            let headers = Some(RouteHeaders {
                request: self.header_ops(&format!("{p}.request_headers"), &r.request_headers),
                response: self.header_ops(&format!("{p}.response_headers"), &r.response_headers),
            })
            .filter(|h| !h.request.is_empty() || !h.response.is_empty())
            .map(Box::new);
            let timeout = self.opt_duration(&format!("{p}.timeout"), &r.timeout);
            let slo = r.slo.as_ref().map(|o| {
                if let Some(rate) = o.success_rate
                    && !(0.0..=100.0).contains(&rate)
                {
                    self.err(format!("{p}.slo.success_rate"), "a percentage, e.g. 99.9");
                }
                Slo {
                    success_rate: o.success_rate,
                    p99: self.opt_duration(&format!("{p}.slo.p99"), &o.p99),
                }
            });
            let fallback = r.fallback.as_ref().and_then(|f| {
                let fp = format!("{p}.fallback");
                let status = match StatusCode::from_u16(f.status) {
                    Ok(s) => s,
                    Err(_) => {
                        self.err(
                            format!("{fp}.status"),
                            format!("{} is not an HTTP status", f.status),
                        );
                        return None;
                    }
                };
                Some(Box::new(DirectResponse {
                    status,
                    body: f.body.clone().unwrap_or_default(),
                    headers: self.header_pairs(&format!("{fp}.headers"), &f.headers),
                }))
            });
            let plugins = plugin_confs(&format!("{p}.plugins"), &r.plugins);
            if let Some(spec) = &spec {
                let has_auth = AUTH_PLUGINS
                    .iter()
                    .any(|a| r.plugins.contains_key(*a) || global_plugins.contains_key(*a));
                let pinned = !spec.hosts.is_empty()
                    && spec.hosts.iter().all(|h| matches!(h, HostMatch::Exact(_)));
                if has_auth && !pinned {
                    self.lint(
                        Severity::Warning,
                        "auth-without-host",
                        format!("{p}.match.hosts"),
                        "this route authenticates but matches wildcard or any hosts: pin it to exact hosts so credentials are only accepted where intended".into(),
                    );
                }
            }
            let mirrors = self.mirrors(&p, &r.mirror, upstreams);
            if let (Some(spec), Some(action)) = (spec, action) {
                out.push(Route {
                    mirrors,
                    name: r.name.clone(),
                    spec,
                    action,
                    rewrite,
                    headers,
                    timeout,
                    fallback,
                    slo,
                    plugins,
                });
            }
        }
        out
    }

    fn route_spec(&mut self, p: &str, r: &RawRoute) -> Option<RouteSpec> {
        let m = &r.matcher;
        let mp = format!("{p}.match");
        let given: Vec<&str> = [
            ("path", m.path.is_some()),
            ("path_prefix", m.path_prefix.is_some()),
            ("path_template", m.path_template.is_some()),
            ("path_regex", m.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| *n)
        .collect();
        if given.len() > 1 {
            self.err(
                mp.clone(),
                format!(
                    "give one of path, path_prefix, path_template, path_regex (found {})",
                    given.join(", ")
                ),
            );
            return None;
        }
        let must_start = |s: &str| s.starts_with('/');
        let path = if let Some(e) = &m.path {
            if !must_start(e) {
                self.err(format!("{mp}.path"), "a path starts with `/`");
            }
            PathMatch::Exact(e.clone())
        } else if let Some(pp) = &m.path_prefix {
            if !must_start(pp) {
                self.err(format!("{mp}.path_prefix"), "a path prefix starts with `/`");
            }
            PathMatch::Prefix(pp.clone())
        } else if let Some(t) = &m.path_template {
            match Template::parse(t) {
                Ok(t) => PathMatch::Template(t),
                Err(e) => {
                    self.err(format!("{mp}.path_template"), e.to_string());
                    return None;
                }
            }
        } else if let Some(rx) = &m.path_regex {
            match PathMatch::regex(rx) {
                Ok(pm) => pm,
                Err(e) => {
                    self.err(format!("{mp}.path_regex"), format!("invalid regex: {e}"));
                    return None;
                }
            }
        } else {
            PathMatch::Prefix("/".into())
        };
        let mut spec = RouteSpec::new(path);
        for (i, h) in m.hosts.iter().enumerate() {
            match HostMatch::parse(h) {
                Ok(hm) => spec.hosts.push(hm),
                Err(e) => self.err(format!("{mp}.hosts[{i}]"), e),
            }
        }
        for (i, meth) in m.methods.iter().enumerate() {
            match Method::from_bytes(meth.to_ascii_uppercase().as_bytes()) {
                Ok(mm) => spec.methods.push(mm),
                Err(_) => self.err(
                    format!("{mp}.methods[{i}]"),
                    format!("`{meth}` is not an HTTP method"),
                ),
            }
        }
        spec.headers = self.header_pairs(&format!("{mp}.headers"), &m.headers);
        spec.query = m
            .query
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.priority = r.priority.unwrap_or(0);
        Some(spec)
    }

    fn action(
        &mut self,
        p: &str,
        r: &RawRoute,
        upstreams: &HashMap<&str, usize>,
    ) -> Option<Action> {
        let count = usize::from(r.upstream.is_some())
            + usize::from(r.split.is_some())
            + usize::from(r.direct_response.is_some());
        if count != 1 {
            self.err(
                p,
                "a route needs exactly one of `upstream`, `split` or `direct_response`",
            );
            return None;
        }
        let resolve = |this: &mut Self, path: String, name: &str| -> Option<usize> {
            let found = upstreams.get(name).copied();
            if found.is_none() {
                let mut known: Vec<&str> = upstreams.keys().copied().collect();
                known.sort_unstable();
                this.lint(
                    Severity::Error,
                    "unknown-upstream",
                    path,
                    format!(
                        "unknown upstream `{name}`; defined: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            found
        };
        if let Some(u) = &r.upstream {
            return resolve(self, format!("{p}.upstream"), u).map(Action::Upstream);
        }
        if let Some(split) = &r.split {
            if split.is_empty() {
                self.err(format!("{p}.split"), "a split needs at least one upstream");
                return None;
            }
            let mut legs = Vec::new();
            for (i, s) in split.iter().enumerate() {
                if let Some(idx) = resolve(self, format!("{p}.split[{i}].upstream"), &s.upstream) {
                    legs.push((idx, s.weight));
                }
            }
            if legs.iter().all(|(_, w)| *w == 0) {
                self.err(format!("{p}.split"), "at least one weight must be above 0");
            }
            return (legs.len() == split.len()).then_some(Action::Split(legs));
        }
        let d = r.direct_response.as_ref()?;
        let status = match StatusCode::from_u16(d.status) {
            Ok(s) => s,
            Err(_) => {
                self.err(
                    format!("{p}.direct_response.status"),
                    format!("{} is not an HTTP status", d.status),
                );
                return None;
            }
        };
        let headers = self.header_pairs(&format!("{p}.direct_response.headers"), &d.headers);
        Some(Action::Direct(DirectResponse {
            status,
            body: d.body.clone().unwrap_or_default(),
            headers,
        }))
    }

    fn rewrite(&mut self, p: &str, raw: Option<&RawRewrite>) -> Rewrite {
        let Some(r) = raw else {
            return Rewrite::default();
        };
        let rp = format!("{p}.rewrite");
        if let Some(sp) = &r.strip_prefix
            && !sp.starts_with('/')
        {
            self.err(format!("{rp}.strip_prefix"), "a prefix starts with `/`");
        }
        let path_regex = r
            .path_regex
            .as_ref()
            .and_then(|pr| match Regex::new(&pr.pattern) {
                Ok(re) => Some((re, pr.replacement.clone())),
                Err(e) => {
                    self.err(
                        format!("{rp}.path_regex.pattern"),
                        format!("invalid regex: {e}"),
                    );
                    None
                }
            });
        let host = r
            .host
            .as_ref()
            .and_then(|h| self.header_value(&format!("{rp}.host"), h));
        Rewrite {
            strip_prefix: r.strip_prefix.clone(),
            path_regex,
            host,
        }
    }

    fn header_ops(&mut self, p: &str, raw: &Option<RawHeaderOps>) -> HeaderOps {
        let Some(r) = raw else {
            return HeaderOps::default();
        };
        HeaderOps {
            set: self.header_pairs(&format!("{p}.set"), &r.set),
            add: self.header_pairs(&format!("{p}.add"), &r.add),
            remove: r
                .remove
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.header_name(&format!("{p}.remove[{i}]"), n))
                .collect(),
        }
    }

    fn runtime(&mut self, r: &RawRuntime) -> Runtime {
        Runtime {
            zone: r.zone.clone().filter(|z| !z.is_empty()),
            worker_threads: r.worker_threads.unwrap_or(0),
            shutdown_timeout: self.duration(
                "runtime.shutdown_timeout",
                &r.shutdown_timeout,
                Duration::from_secs(30),
            ),
            watch_interval: self.duration(
                "runtime.watch_interval",
                &r.watch_interval,
                Duration::from_secs(1),
            ),
        }
    }

    fn observability(&mut self, raw: Option<&RawObservability>) -> Observability {
        let d = Observability::default();
        let Some(o) = raw else {
            return d;
        };
        let access_log = o.access_log.as_ref().and_then(|a| {
            if let Some(f) = a.format.as_deref()
                && f != "json"
            {
                self.err(
                    "observability.access_log.format",
                    format!("unknown format `{f}`: only json"),
                );
            }
            for (i, f) in a.fields.iter().enumerate() {
                if !ACCESS_LOG_FIELDS.contains(&f.as_str()) {
                    self.err(
                        format!("observability.access_log.fields[{i}]"),
                        format!(
                            "unknown field `{f}`; fields: {}",
                            ACCESS_LOG_FIELDS.join(", ")
                        ),
                    );
                }
            }
            let sample_success = a.sample_success.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&sample_success) {
                self.err(
                    "observability.access_log.sample_success",
                    "a ratio from 0 to 1",
                );
            }
            let target = match a.path.as_deref() {
                None | Some("stdout") => AccessLogTarget::Stdout,
                Some("stderr") => AccessLogTarget::Stderr,
                Some("off") => return None,
                Some(f) => AccessLogTarget::File(self.base_dir.join(f)),
            };
            Some(AccessLog {
                target,
                fields: a.fields.clone(),
                sample_success,
                include_query: a.include_query,
            })
        });
        let tracing = o.tracing.as_ref().and_then(|t| {
            let endpoint = t.otlp_endpoint.clone()?;
            let protocol = t.protocol.clone().unwrap_or_else(|| "grpc".into());
            if protocol != "grpc" && protocol != "http" {
                self.err(
                    "observability.tracing.protocol",
                    format!("unknown protocol `{protocol}`: use grpc or http"),
                );
            }
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                self.err(
                    "observability.tracing.otlp_endpoint",
                    "an http:// or https:// URL, e.g. http://127.0.0.1:4317",
                );
            }
            let sampling = t.sampling.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&sampling) {
                self.err("observability.tracing.sampling", "a ratio from 0 to 1");
            }
            Some(TracingConf {
                endpoint,
                protocol,
                sampling,
                service_name: t
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "portcullis".into()),
            })
        });
        Observability {
            access_log,
            tracing,
            slo_window: self.duration("observability.slo_window", &o.slo_window, d.slo_window),
            ghost_after: self.duration("observability.ghost_after", &o.ghost_after, d.ghost_after),
        }
    }

    /// Lint: routes that can never match.
    pub(crate) fn shadowed(&mut self, routes: &[Route]) {
        let table =
            portcullis_router::Router::new(routes.iter().map(|r| (r.spec.clone(), ())).collect());
        for s in table.shadowed() {
            self.lint(
                Severity::Error,
                "shadowed-route",
                format!("routes[{}].match", s.route),
                format!(
                    "route `{}` can never match: route `{}` matches every request it would and wins first",
                    routes[s.route].name, routes[s.by].name
                ),
            );
        }
    }
}

/// The validated parts, before hashing and lint bookkeeping.
pub(crate) struct ConfigParts {
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub plugins: Vec<PluginConf>,
    pub policies: Vec<crate::policy::Policy>,
    pub runtime: Runtime,
    pub observability: Observability,
    pub dns: Dns,
}

fn plugin_confs(path: &str, map: &BTreeMap<String, Value>) -> Vec<PluginConf> {
    map.iter()
        .map(|(k, v)| PluginConf {
            name: k.clone(),
            config: v.clone(),
            field: format!("{path}.{k}"),
        })
        .collect()
}

/// Splits `host:port`, `[v6]:port`; the port is required.
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// One entry of `failure_statuses` as an inclusive range.
fn parse_status_range(v: &Value) -> Option<(u16, u16)> {
    let ok = |c: u64| (100..600).contains(&c);
    let r = match v {
        Value::Number(n) => n.as_u64().filter(|c| ok(*c)).map(|c| (c, c)),
        Value::String(s) => {
            let s = s.trim();
            if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
                class
                    .parse::<u64>()
                    .ok()
                    .filter(|c| (1..=5).contains(c) && class.len() == 1)
                    .map(|c| (c * 100, c * 100 + 99))
            } else if let Some((a, b)) = s.split_once('-') {
                match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                    (Ok(a), Ok(b)) if ok(a) && ok(b) && a <= b => Some((a, b)),
                    _ => None,
                }
            } else {
                s.parse::<u64>().ok().filter(|c| ok(*c)).map(|c| (c, c))
            }
        }
        _ => None,
    };
    r.map(|(a, b)| (a as u16, b as u16))
}
