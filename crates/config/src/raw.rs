//! The config file as serde reads it: strings where the file has strings, unknown keys refused.
//! `validate` turns this into the typed [`crate::Config`]; nothing at runtime reads these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where clients connect.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// The admin API listener.
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// Named groups of upstream targets.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Routes, in file order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Global plugin config keyed by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Value>,
    /// Process settings.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// Access logs and tracing.
    #[serde(default)]
    pub observability: Option<RawObservability>,
    /// Name resolution for upstream targets given by DNS name.
    #[serde(default)]
    pub dns: Option<RawDns>,
    /// Traffic policies: conditions on measured signals and the actions they trigger.
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
    /// Where the shared part (upstreams, routes, plugins, policies) comes from; this file when
    /// absent.
    #[serde(default)]
    pub config_source: Option<RawConfigSource>,
}

/// Where the shared part of the config comes from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfigSource {
    /// An etcd v3 cluster shared by a fleet of gateways.
    #[serde(default)]
    pub etcd: Option<RawEtcd>,
}

/// The etcd store of a fleet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (https with `tls`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet's config (default `/portcullis`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// User name for etcd authentication (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for etcd authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// TLS towards etcd: CA bundle, and client certificate and key for mutual TLS.
    #[serde(default)]
    pub tls: Option<RawEtcdTls>,
    /// File where the last good shared config is written, and read at start when etcd is down.
    #[serde(default)]
    pub cache: Option<String>,
    /// This node's id in the fleet (default: host name and process id).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// TLS towards etcd.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM CA bundle that signs the etcd servers' certificates.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate (mutual TLS).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM client key (mutual TLS).
    #[serde(default)]
    pub key: Option<String>,
}

/// Resolver settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Name servers as `IP:PORT`; the system's (`/etc/resolv.conf`) when empty.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Time allowed for one resolution.
    #[serde(default)]
    pub timeout: Option<String>,
    /// How long the last good answer is kept while resolution fails.
    #[serde(default)]
    pub stale_for: Option<String>,
}

/// A listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `IP:PORT` to bind.
    pub address: String,
    /// TLS termination; plaintext (HTTP/1.1 and h2c) when absent.
    #[serde(default)]
    pub tls: Option<RawListenerTls>,
    /// Per-connection and per-request limits.
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// Peers whose `X-Forwarded-For` is trusted and appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificates chosen by SNI; the first one is the default.
    pub certificates: Vec<RawCertificate>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: Option<String>,
    /// Client certificates (mutual TLS): verified against a CA bundle; absent = not asked for.
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
    /// Session resumption (TLS 1.3 tickets, TLS 1.2 session IDs); on by default.
    #[serde(default)]
    pub session_tickets: Option<bool>,
}

/// Client certificate verification on a TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca: String,
    /// `require` (default: no valid certificate, no handshake) or `optional` (routes decide).
    #[serde(default)]
    pub mode: Option<String>,
    /// PEM or DER certificate revocation list(s) of those CAs.
    #[serde(default)]
    pub crl: Option<String>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
}

/// Limits of a listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request head in bytes; larger gets 431.
    #[serde(default)]
    pub max_header_bytes: Option<u64>,
    /// Largest request body in bytes; larger gets 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Time allowed to receive a request head.
    #[serde(default)]
    pub header_read_timeout: Option<String>,
    /// A connection with no request in flight and no bytes for this long is closed.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Concurrent connections accepted; further ones wait in the kernel backlog.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Concurrent connections from one client address; 0 or absent: no cap.
    #[serde(default)]
    pub max_connections_per_ip: Option<u64>,
    /// How request paths are normalised before routing, plugins and forwarding.
    #[serde(default)]
    pub path: Option<RawPathLimits>,
}

/// Path normalisation of a listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathLimits {
    /// Merge repeated slashes (`//a///b` -> `/a/b`).
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    /// `resolve` (RFC 3986; above the root is refused) or `reject`.
    #[serde(default)]
    pub dot_segments: Option<String>,
    /// `%2F`/`%5C` in a path: `reject`, `keep` or `decode`.
    #[serde(default)]
    pub escaped_slashes: Option<String>,
}

/// The admin API listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `IP:PORT`; loopback unless a token is set.
    pub address: String,
    /// Bearer token required on `/admin/*` when set.
    #[serde(default)]
    pub token: Option<String>,
}

/// A named group of targets and how to call them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Where requests go.
    pub targets: Vec<RawTarget>,
    /// `http1` (default), `h2c` or `auto` (ALPN over TLS).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Upstream TLS; plaintext when absent.
    #[serde(default)]
    pub tls: Option<RawUpstreamTls>,
    /// How a target is picked.
    #[serde(default)]
    pub load_balancer: Option<RawLoadBalancer>,
    /// Connect, response header and read idle timeouts.
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Connection pool settings.
    #[serde(default)]
    pub pool: Option<RawPool>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RawRetry>,
    /// Circuit breaker per target.
    #[serde(default)]
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Active and passive health checks.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Zone-aware balancing.
    #[serde(default)]
    pub locality: Option<RawLocality>,
}

/// Zone-aware balancing.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocality {
    /// `local`: prefer targets in this node's zone.
    #[serde(default)]
    pub prefer: Option<String>,
    /// The local zone takes all traffic while at least this share of its targets is healthy
    /// (default 70); below, traffic spills in proportion.
    #[serde(default)]
    pub min_healthy_percent: Option<f64>,
}

/// One upstream target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// `HOST:PORT`; a DNS name is resolved.
    pub address: String,
    /// Relative share of requests; default 1.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Zone of the target, for locality-aware balancing.
    #[serde(default)]
    pub zone: Option<String>,
}

/// TLS towards an upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM CA bundle; system roots when absent.
    #[serde(default)]
    pub ca: Option<String>,
    /// Name to verify and send as SNI; the target host when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Skip certificate verification (warned, counted).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM client certificate for mTLS.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM client key for mTLS.
    #[serde(default)]
    pub client_key: Option<String>,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancer {
    /// `round_robin` | `least_request` | `random` | `consistent_hash`.
    pub policy: String,
    /// Hash key for `consistent_hash`: `header:NAME` | `cookie:NAME` | `query:NAME` | `ip` | `path`.
    #[serde(default)]
    pub key: Option<String>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP (and DNS, TLS) connect.
    #[serde(default)]
    pub connect: Option<String>,
    /// From request sent to the full response head.
    #[serde(default)]
    pub response_header: Option<String>,
    /// Longest gap between response body bytes.
    #[serde(default)]
    pub read_idle: Option<String>,
}

/// Connection pool.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Idle connections kept per target.
    #[serde(default)]
    pub max_idle_per_host: Option<u64>,
    /// Idle connections older than this are closed.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Open connections per target at most (0 = unlimited).
    #[serde(default)]
    pub max_connections_per_host: Option<u64>,
}

/// Retry policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Total tries including the first.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Conditions: `connect_failure`, `reset`, `refused_stream`, `timeout`, or status codes.
    #[serde(default)]
    pub on: Vec<Value>,
    /// Exponential backoff with full jitter.
    #[serde(default)]
    pub backoff: Option<RawBackoff>,
    /// Retries may add at most this percentage of recent requests.
    #[serde(default)]
    pub budget_percent: Option<f64>,
    /// Timeout of each try.
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// Largest request body kept for replay.
    #[serde(default)]
    pub max_replay_body_bytes: Option<u64>,
}

/// Backoff between retries.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// First backoff ceiling.
    #[serde(default)]
    pub base: Option<String>,
    /// Largest backoff ceiling.
    #[serde(default)]
    pub max: Option<String>,
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Failure ratio (0..1) that opens the breaker.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Rolling window the rate is measured over.
    #[serde(default)]
    pub window: Option<String>,
    /// Requests in the window before the rate counts.
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// How long the breaker stays open.
    #[serde(default)]
    pub open_for: Option<String>,
    /// Probe requests let through while half-open.
    #[serde(default)]
    pub half_open_requests: Option<u32>,
    /// Calls slower than this count as failures.
    #[serde(default)]
    pub slow_call_threshold: Option<String>,
    /// Statuses that count as failures: codes, ranges (`502-504`) or classes (`5xx`).
    #[serde(default)]
    pub failure_statuses: Option<Vec<Value>>,
}

/// Health checks.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Periodic HTTP probes.
    #[serde(default)]
    pub active: Option<RawActiveHealth>,
    /// Ejection on observed failures.
    #[serde(default)]
    pub passive: Option<RawPassiveHealth>,
}

/// Active health check.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawActiveHealth {
    /// Path probed.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default)]
    pub interval: Option<String>,
    /// Probe timeout.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Successes before a target is healthy again.
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Failures before a target is unhealthy.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses that count as healthy; default 200-399.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
}

/// Passive health check (outlier ejection).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    /// Consecutive failures that eject a target.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// First ejection length; grows with each repeat.
    #[serde(default)]
    pub eject_for: Option<String>,
    /// At most this share of targets is ejected at once.
    #[serde(default)]
    pub max_ejected_percent: Option<f64>,
}

/// A route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// What requests it takes.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// Overrides the precedence rules; higher wins.
    #[serde(default)]
    pub priority: Option<i32>,
    /// The upstream requests go to.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Weighted split between upstreams.
    #[serde(default)]
    pub split: Option<Vec<RawSplit>>,
    /// Answer from the gateway itself.
    #[serde(default)]
    pub direct_response: Option<RawDirectResponse>,
    /// Path and host rewriting.
    #[serde(default)]
    pub rewrite: Option<RawRewrite>,
    /// Headers changed on the way upstream.
    #[serde(default)]
    pub request_headers: Option<RawHeaderOps>,
    /// Headers changed on the way back.
    #[serde(default)]
    pub response_headers: Option<RawHeaderOps>,
    /// Deadline of the whole request, retries included.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Answer sent instead of a 503 when the upstream's breakers are open or no target is healthy.
    #[serde(default)]
    pub fallback: Option<RawDirectResponse>,
    /// Service level objective of the route.
    #[serde(default)]
    pub slo: Option<RawSlo>,
    /// Copies of requests sent to other upstreams; never delay or fail the primary.
    #[serde(default)]
    pub mirror: Vec<RawMirror>,
    /// Per-route plugin config keyed by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Value>,
}

/// Match conditions of a route; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Exact hosts or `*.suffix` wildcards.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Path template with `{name}` segments.
    #[serde(default)]
    pub path_template: Option<String>,
    /// Path regex (whole path).
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Allowed methods; any when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → exact value.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

/// One leg of a weighted split.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    /// Upstream name.
    pub upstream: String,
    /// Relative weight.
    pub weight: u32,
}

/// A response made by the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectResponse {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: Option<String>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Rewrites applied before forwarding.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    /// Prefix removed from the path.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Regex replacement on the path.
    #[serde(default)]
    pub path_regex: Option<RawPathRegex>,
    /// Host header sent upstream.
    #[serde(default)]
    pub host: Option<String>,
}

/// A regex path rewrite.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRegex {
    /// Regex on the path.
    pub pattern: String,
    /// Replacement; `$1` / `${name}` refer to groups.
    pub replacement: String,
}

/// Header transformations.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    /// Replace or create.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Delete.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Process settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Worker threads; 0 = one per core.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(default)]
    pub shutdown_timeout: Option<String>,
    /// How often the config file is checked for changes; "0s" turns watching off.
    #[serde(default)]
    pub watch_interval: Option<String>,
    /// This node's zone (else the `PORTCULLIS_ZONE` environment variable).
    #[serde(default)]
    pub zone: Option<String>,
}

/// Observability settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    /// Access log.
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    /// OpenTelemetry tracing.
    #[serde(default)]
    pub tracing: Option<RawTracing>,
    /// Window over which route SLOs are computed (default 5m).
    #[serde(default)]
    pub slo_window: Option<String>,
    /// A route with no traffic for this long is flagged as a ghost dependency (default 1h).
    #[serde(default)]
    pub ghost_after: Option<String>,
}

/// Access log settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `stdout` | `stderr` | a file | `off`.
    #[serde(default)]
    pub path: Option<String>,
    /// `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// Fields written (all when empty).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Share of successful (< 400) requests logged, 0..1 (default 1); failures always are.
    #[serde(default)]
    pub sample_success: Option<f64>,
    /// Log the query string with the path (default false: it may carry secrets).
    #[serde(default)]
    pub include_query: bool,
}

/// Tracing settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// OTLP collector endpoint.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc` | `http`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Ratio of new traces sampled.
    #[serde(default)]
    pub sampling: Option<f64>,
    /// `service.name` of the spans (default `portcullis`).
    #[serde(default)]
    pub service_name: Option<String>,
}

/// A route's service level objective.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Target share of successful (non-5xx) requests, in percent, e.g. 99.95.
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// Target 99th percentile latency, e.g. `300ms`.
    #[serde(default)]
    pub p99: Option<String>,
}

/// A traffic policy: when all conditions hold, the actions run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Unique name, used in logs, metrics and the admin API.
    pub name: String,
    /// The routes and upstreams it watches and acts on.
    #[serde(default, rename = "match")]
    pub matcher: RawPolicyMatch,
    /// Conditions; all must hold.
    #[serde(default)]
    pub conditions: Vec<RawCondition>,
    /// Requests in a window before a ratio or a latency counts (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// What happens while the conditions hold.
    #[serde(default)]
    pub actions: Vec<RawPolicyAction>,
    /// `enforce` (default) or `dry_run` (evaluate, log and count only).
    #[serde(default)]
    pub mode: Option<String>,
}

/// What a policy watches.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyMatch {
    /// Route names.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Upstream names (the routes sending to them are acted on).
    #[serde(default)]
    pub upstreams: Vec<String>,
}

/// One condition of a policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    /// `p50_latency` | `p90_latency` | `p99_latency` | `error_rate` | `success_rate` | `rps` |
    /// `in_flight`.
    pub metric: String,
    /// Holds when the signal is above this (a duration for latencies).
    #[serde(default)]
    pub above: Option<Value>,
    /// Holds when the signal is below this.
    #[serde(default)]
    pub below: Option<Value>,
    /// Rolling window the signal is measured over (default 10s).
    #[serde(default)]
    pub window: Option<String>,
    /// Windows in a row it must hold (default 1).
    #[serde(default)]
    pub consecutive: Option<u32>,
}

/// One action of a policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyAction {
    /// `circuit_breaker` | `shed` | `reroute` | `timeout`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `circuit_breaker`: how long it stays open before letting traffic back (default 30s).
    #[serde(default)]
    pub open_for: Option<String>,
    /// `circuit_breaker`: the answer while open; 503 `upstream_unavailable` when absent.
    #[serde(default)]
    pub fallback: Option<RawDirectResponse>,
    /// `shed`: share of requests answered 503 `load_shed`, in percent.
    #[serde(default)]
    pub percent: Option<f64>,
    /// `shed`: the `Retry-After` sent (default 1s).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// `reroute`: the upstream requests go to instead.
    #[serde(default)]
    pub upstream: Option<String>,
    /// `timeout`: the route timeout while triggered.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Request mirroring to another upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// The upstream copies go to.
    pub upstream: String,
    /// Share of requests mirrored, 0..1 (default 1).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// `header:NAME`: pick by a hash of this header, so one caller is mirrored consistently;
    /// random when absent.
    #[serde(default)]
    pub key: Option<String>,
    /// Methods mirrored (default GET and HEAD).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Larger request bodies are not mirrored (default 65536).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
}
