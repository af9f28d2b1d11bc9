//! `portcullis-client`: the resilient upstream HTTP client of Portcullis, usable on its own.
//!
//! An [`Upstream`] is a named set of targets. Calling it survives what API calls meet in
//! production, and says what happened when it cannot:
//!
//! - **Three timeouts, each its own [`ErrorKind`]**: connect (DNS and TLS included), response
//!   header (request sent → full response head), read idle (silence between body frames).
//! - **Pools per target**: idle HTTP/1.1 connections reused most recent first, expired after
//!   `idle_timeout`, at most `max_idle_per_host` kept and `max_connections_per_host` open; one
//!   multiplexed HTTP/2 connection. Targets never share a pool, so a black-holed one cannot
//!   starve the others.
//! - **Stale keep-alive connections**: a pooled connection the server closed or reset before
//!   answering is replaced by a fresh one and the request sent again — only when that cannot
//!   duplicate a side effect (never written, or idempotent with a replayable body).
//! - **Retries** ([`RetryPolicy`]): conditions, exponential backoff with full jitter, a per-try
//!   timeout, another target when there is one, a [`RetryBudget`] that caps retries at a share
//!   of recent traffic, and the idempotency rule (GET/HEAD/OPTIONS/PUT/DELETE; POST/PATCH only
//!   when nothing was sent or with `Idempotency-Key`).
//! - **A circuit breaker per target** ([`Breaker`]): failure rate over a rolling window,
//!   open/half-open/closed, slow calls counted as failures.
//! - **Health**: active HTTP probes and passive ejection with a `max_ejected_percent` cap.
//! - **Balancing** ([`Balancer`]): smooth weighted round robin, least request (power of two
//!   choices), weighted random, consistent hashing with virtual nodes — all lock-free.
//! - **DNS** ([`Dns`]): names resolved with hickory-resolver, every address used, re-resolved
//!   when the TTL runs out, the last good answer kept through failures.
//! - **TLS** verified against the system roots or a given CA, mTLS, HTTP/2 by ALPN with the
//!   downgrade to HTTP/1.1 logged and counted.
//!
//! Every counter is a plain atomic ([`TargetStats`], [`UpstreamStats`]), cheap to read for
//! metrics.
//!
//! ```no_run
//! use std::time::Duration;
//! use portcullis_client::{
//!     BreakerConfig, RequestBody, RetryPolicy, TargetConfig, Timeouts, Upstream, UpstreamConfig,
//! };
//!
//! # async fn demo() -> Result<(), portcullis_client::Error> {
//! let mut cfg = UpstreamConfig::new(
//!     "users",
//!     vec![
//!         TargetConfig { host: "127.0.0.1".into(), port: 9001, weight: 2, zone: None },
//!         TargetConfig { host: "127.0.0.1".into(), port: 9002, weight: 1, zone: None },
//!     ],
//! );
//! cfg.timeouts = Timeouts {
//!     connect: Duration::from_millis(500),
//!     response_header: Duration::from_secs(5),
//!     read_idle: Duration::from_secs(10),
//! };
//! cfg.pool.max_idle_per_host = 32;
//! cfg.retry = Some(RetryPolicy { attempts: 3, ..RetryPolicy::default() });
//! cfg.breaker = Some(BreakerConfig::default());
//! let users: Upstream<RequestBody> = Upstream::new(cfg);
//!
//! let req = http::Request::get("/users/7").body(RequestBody::Empty).expect("valid request");
//! match users.send(req, None).await {
//!     Ok(resp) => println!("{}", resp.status()),
//!     Err(e) => println!("failed [{}]: {e}", e.kind().reason()),
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/resilient_get.rs` is a runnable program using it standalone.
//!
//! ## As the HTTP client of a service
//!
//! [`Client`] takes URLs instead of fixed targets: every origin (scheme, host, port) gets an
//! upstream of its own on first use — pool, breaker, retry budget, passive health, DNS entry —
//! dropped when idle. Redirects are followed safely, every try carries a W3C `traceparent`,
//! and [`Client::stats`] reads the counters of each origin. See `docs/client.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_client::Error> {
//! let client = portcullis_client::Client::builder().build()?;
//! let resp = client
//!     .get("https://api.example.com/v1/users/7")
//!     .header("accept", "application/json")
//!     .send()
//!     .await?;
//! let body = resp.bytes().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod balance;
mod body;
pub mod breaker;
mod clock;
pub mod connect;
pub mod dns;
mod error;
pub mod health;
pub mod locality;
mod pool;
pub mod retry;
pub mod service;
mod stats;
mod status_set;
mod upload;
mod upstream;
mod window;

pub use balance::{Balancer, Policy, hash_key};
pub use body::ResponseBody;
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use connect::{Conn, TlsSettings, tls_client_config};
pub use dns::{Dns, DnsConfig};
pub use error::{BoxError, Error, ErrorKind};
pub use health::{ActiveHealthConfig, HealthState, PassiveHealthConfig};
pub use locality::{Locality, ZoneShare};
pub use pool::PoolConfig;
pub use retry::{RetryBudget, RetryOn, RetryPolicy};
pub use service::{
    CallOptions, Client, ClientBuilder, ClientStats, OriginStats, Redirect, Redirects,
    RequestBuilder, Response,
};
pub use stats::{COUNTED_ERRORS, RETRY_REASONS, TargetStats, UpstreamStats};
pub use status_set::StatusSet;
pub use upstream::{
    AttemptHook, AttemptReport, Protocol, ReplayBody, RequestBody, Target, TargetConfig, Timeouts,
    Upstream, UpstreamConfig,
};
