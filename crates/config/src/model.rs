//! The validated config: what the runtime reads. Durations are `Duration`s, regexes compiled,
//! upstream references resolved to indexes, paths made absolute.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use portcullis_router::{PathPolicy, RouteSpec};
use regex::Regex;
use serde_json::Value;

use crate::error::Lint;
use crate::source::SourceMap;

/// A validated config snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
    /// Stable hash of the config's content (hex), shown by the admin API and metrics.
    pub hash: String,
    /// Digest of the source text as read (before interpolation), to notice file changes.
    pub source_digest: u64,
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// The admin API.
    pub admin: Admin,
    /// Upstreams, sorted by name; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Global plugin config.
    pub plugins: Vec<PluginConf>,
    /// Traffic policies in file order.
    pub policies: Vec<crate::policy::Policy>,
    /// Process settings.
    pub runtime: Runtime,
    /// Access log and tracing settings.
    pub observability: Observability,
    /// Resolver settings.
    pub dns: Dns,
    /// Field positions, to place errors found later (plugin config, certificate files). The
    /// gateway empties it once the runtime snapshot is built: nothing places errors after that.
    pub source_map: SourceMap,
    /// The config as compact JSON text with secrets redacted, for `GET /admin/config` (text
    /// rather than a `Value` tree: a few bytes per field instead of a node and a map entry).
    pub redacted: Box<serde_json::value::RawValue>,
    /// Lint warnings (errors make loading fail).
    pub warnings: Vec<Lint>,
    /// The shared objects as written (upstreams, routes, plugins, policies), for diffs and
    /// the change history.
    pub shared: std::sync::Arc<crate::shared::SharedDoc>,
    /// Hash of `shared`: equal on every node serving the same shared config.
    pub shared_hash: String,
    /// The etcd store the shared part comes from; `None` in file mode.
    pub etcd: Option<EtcdSource>,
}

/// `config_source.etcd`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSource {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing `/`.
    pub prefix: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// CA bundle for TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Where the last good shared config is kept.
    pub cache: Option<PathBuf>,
    /// This node's id.
    pub node_id: Option<String>,
}

/// A listening socket.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// TLS termination settings.
    pub tls: Option<ListenerTls>,
    /// Limits.
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` is kept and appended to.
    pub trusted_proxies: Vec<IpNet>,
}

/// Lowest TLS protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerTls {
    /// Certificate/key pairs; the first is the default for clients without SNI.
    pub certificates: Vec<CertFiles>,
    /// Minimum version.
    pub min_version: TlsVersion,
    /// Client certificate verification (mutual TLS), when asked for.
    pub client_auth: Option<ClientAuth>,
    /// Session resumption: TLS 1.3 tickets and TLS 1.2 session IDs.
    pub session_tickets: bool,
}

/// Whether a listener's clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuthMode {
    /// No valid certificate, no handshake.
    Require,
    /// Verified when presented; routes decide (the `client_cert` plugin).
    Optional,
}

/// Client certificate verification of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    /// PEM bundle of trusted client CAs.
    pub ca: PathBuf,
    /// Require or optional.
    pub mode: ClientAuthMode,
    /// Revocation list file (PEM or DER), if any.
    pub crl: Option<PathBuf>,
    /// Config path of this entry, e.g. `listeners[1].tls.client_auth`.
    pub field: String,
}

/// Paths of a PEM certificate chain and key, with the field path for errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertFiles {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Config path of this entry, e.g. `listeners[1].tls.certificates[0]`.
    pub field: String,
}

/// Per-listener limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Time allowed for a request head to arrive.
    pub header_read_timeout: Duration,
    /// Idle connection lifetime.
    pub idle_timeout: Duration,
    /// Concurrent connections, unlimited when `None`.
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address, unlimited when `None`.
    pub max_connections_per_ip: Option<usize>,
    /// How request paths are normalised.
    pub path: PathPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 65_536,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_connections_per_ip: None,
            path: PathPolicy::default(),
        }
    }
}

/// The admin API listener.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address to bind.
    pub address: SocketAddr,
    /// Bearer token for `/admin/*`.
    pub token: Option<String>,
}

/// Wire protocol towards an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge over plaintext.
    H2c,
    /// HTTP/2 or HTTP/1.1 chosen by ALPN (TLS only).
    Auto,
}

/// An upstream target as configured.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative weight (≥ 1).
    pub weight: u32,
    /// Zone, for locality-aware balancing.
    pub zone: Option<String>,
}

impl Target {
    /// `host:port`, bracketing IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Upstream TLS.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// CA bundle; system roots when `None`.
    pub ca: Option<PathBuf>,
    /// Name verified and sent as SNI.
    pub server_name: Option<String>,
    /// Verification off (warned).
    pub insecure_skip_verify: bool,
    /// Client certificate and key for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Load balancing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Uniform random (weighted).
    Random,
    /// Ring hash with virtual nodes.
    ConsistentHash(HashKey),
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
    /// The client IP.
    ClientIp,
    /// The request path.
    Path,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connect, DNS and TLS included.
    pub connect: Duration,
    /// Request sent → response head received.
    pub response_header: Duration,
    /// Longest silence while reading the response body.
    pub read_idle: Duration,
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    /// Idle connections kept per target.
    pub max_idle_per_host: usize,
    /// Idle lifetime.
    pub idle_timeout: Duration,
    /// Open connections per target, unlimited when 0.
    pub max_connections_per_host: usize,
}

/// A retry condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The connection could not be made.
    ConnectFailure,
    /// The connection was reset before a response.
    Reset,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// A per-try timeout fired.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

/// Retry policy.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Total tries, first included.
    pub attempts: u32,
    /// When to retry.
    pub on: Vec<RetryOn>,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Retries allowed as a percentage of recent requests.
    pub budget_percent: f64,
    /// Timeout of one try, if any.
    pub per_try_timeout: Option<Duration>,
    /// Request bodies up to this size are kept for replay.
    pub max_replay_body_bytes: u64,
}

/// Circuit breaker settings.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    /// Failure ratio that opens.
    pub failure_rate: f64,
    /// Rolling window.
    pub window: Duration,
    /// Minimum calls in the window.
    pub min_requests: u32,
    /// Open duration.
    pub open_for: Duration,
    /// Probes while half-open.
    pub half_open_requests: u32,
    /// Calls slower than this count as failures.
    pub slow_call_threshold: Option<Duration>,
    /// Inclusive status ranges that count as failures (default 502-504).
    pub failure_statuses: Vec<(u16, u16)>,
}

/// Active health check.
#[derive(Debug, Clone)]
pub struct ActiveHealth {
    /// Probed path.
    pub path: String,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to become healthy.
    pub healthy_threshold: u32,
    /// Failures to become unhealthy.
    pub unhealthy_threshold: u32,
    /// Healthy statuses; 200-399 when empty.
    pub expected_statuses: Vec<u16>,
}

/// Passive health check.
#[derive(Debug, Clone)]
pub struct PassiveHealth {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// Base ejection time.
    pub eject_for: Duration,
    /// Cap on the share of ejected targets.
    pub max_ejected_percent: f64,
}

/// A named upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name.
    pub name: String,
    /// Targets.
    pub targets: Vec<Target>,
    /// Protocol.
    pub protocol: Protocol,
    /// TLS, if any.
    pub tls: Option<UpstreamTls>,
    /// Balancing policy.
    pub load_balancer: LoadBalancer,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Pool.
    pub pool: Pool,
    /// Retries, if configured.
    pub retry: Option<Retry>,
    /// Circuit breaker, if configured.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Zone-aware balancing: the local zone's `min_healthy_percent`, when on.
    pub locality: Option<f64>,
    /// Active health check, if configured.
    pub active_health: Option<ActiveHealth>,
    /// Passive health check, if configured.
    pub passive_health: Option<PassiveHealth>,
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to the upstream with this index.
    Upstream(usize),
    /// Proxy to one of these upstreams, chosen by weight.
    Split(Vec<(usize, u32)>),
    /// Answer directly.
    Direct(DirectResponse),
}

/// Request mirroring.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Upstream index.
    pub upstream: usize,
    /// Share mirrored, 0..=1.
    pub fraction: f64,
    /// Header hashed to decide; random when `None`.
    pub key: Option<HeaderName>,
    /// Methods mirrored.
    pub methods: Vec<http::Method>,
    /// Larger bodies are skipped.
    pub max_body_bytes: u64,
}

/// A response the gateway makes itself.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: String,
    /// Headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Rewrites.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Prefix removed from the path.
    pub strip_prefix: Option<String>,
    /// Regex and replacement applied to the path.
    pub path_regex: Option<(Regex, String)>,
    /// Host header sent upstream.
    pub host: Option<HeaderValue>,
}

impl Rewrite {
    /// Whether any rewrite is configured.
    pub fn is_empty(&self) -> bool {
        self.strip_prefix.is_none() && self.path_regex.is_none() && self.host.is_none()
    }
}

/// Header transformations, applied in the order remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Replace or create.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Delete.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A plugin's config as written, with where it was written.
#[derive(Debug, Clone)]
pub struct PluginConf {
    /// Plugin name.
    pub name: String,
    /// Its config value.
    pub config: Value,
    /// Config path, e.g. `routes[1].plugins.jwt`.
    pub field: String,
}

/// A route's header changes.
#[derive(Debug, Clone, Default)]
pub struct RouteHeaders {
    /// Request header changes.
    pub request: HeaderOps,
    /// Response header changes.
    pub response: HeaderOps,
}

/// A route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Match conditions.
    pub spec: RouteSpec,
    /// What happens on match.
    pub action: Action,
    /// Rewrites; `None` when there are none (most routes: boxed, so they cost one word).
    pub rewrite: Option<Box<Rewrite>>,
    /// Request and response header changes; `None` when there are none.
    pub headers: Option<Box<RouteHeaders>>,
    /// Whole-request deadline.
    pub timeout: Option<Duration>,
    /// Mirrors of the route's requests.
    pub mirrors: Vec<Mirror>,
    /// Answer used when the upstream is unavailable (breakers open, no healthy target).
    pub fallback: Option<Box<DirectResponse>>,
    /// Objective, if declared.
    pub slo: Option<Slo>,
    /// Route-level plugin config (overrides global entries of the same name).
    pub plugins: Vec<PluginConf>,
}

/// Process settings.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Worker threads; 0 = one per core.
    pub worker_threads: usize,
    /// Drain deadline on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Config file poll interval; zero disables watching.
    pub watch_interval: Duration,
    /// This node's zone, if set in the file.
    pub zone: Option<String>,
}

/// Where access logs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

/// Observability settings.
#[derive(Debug, Clone)]
pub struct Observability {
    /// Access log; off when `None`.
    pub access_log: Option<AccessLog>,
    /// OTLP endpoint, protocol and sampling ratio; off when `None`.
    pub tracing: Option<TracingConf>,
    /// Window of route SLO computations.
    pub slo_window: Duration,
    /// Idle time after which a route counts as a ghost dependency.
    pub ghost_after: Duration,
}

impl Default for Observability {
    fn default() -> Self {
        Self {
            access_log: None,
            tracing: None,
            slo_window: Duration::from_secs(300),
            ghost_after: Duration::from_secs(3600),
        }
    }
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    /// Where lines go.
    pub target: AccessLogTarget,
    /// Fields written; all when empty.
    pub fields: Vec<String>,
    /// Share of successful requests logged.
    pub sample_success: f64,
    /// Whether the query string is logged.
    pub include_query: bool,
}

/// Every access log field, in output order.
pub const ACCESS_LOG_FIELDS: &[&str] = &[
    "time",
    "request_id",
    "trace_id",
    "span_id",
    "client",
    "method",
    "host",
    "path",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream_ms",
    "route",
    "upstream",
    "target",
    "attempts",
    "error",
    "consumer",
    "client_cert",
    "listener",
];

/// A route's objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Target success percentage (non-5xx), if set.
    pub success_rate: Option<f64>,
    /// Target p99 latency, if set.
    pub p99: Option<Duration>,
}

/// Tracing settings.
#[derive(Debug, Clone)]
pub struct TracingConf {
    /// Collector endpoint.
    pub endpoint: String,
    /// `grpc` or `http`.
    pub protocol: String,
    /// Sampling ratio 0..=1.
    pub sampling: f64,
    /// `service.name` resource attribute.
    pub service_name: String,
}

/// Resolver settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// Name servers; the system's when empty.
    pub nameservers: Vec<SocketAddr>,
    /// Resolution timeout.
    pub timeout: Duration,
    /// How long a last good answer outlives failures.
    pub stale_for: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            stale_for: Duration::from_secs(300),
        }
    }
}
