//! `portcullis-client`: the resilient upstream HTTP client of Portcullis, usable on its own.
//!
//! An [`Upstream`] is a named set of targets with per-target connection pools (idle HTTP/1.1
//! connections reused most-recent first, one multiplexed HTTP/2 connection), a lock-free
//! [`Balancer`], and three separate timeouts — connect (DNS and TLS included), response
//! header, and read idle — each reported as its own [`ErrorKind`]. A pooled connection found
//! closed before the request was written is replaced transparently.
//!
//! ```no_run
//! use std::time::Duration;
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use portcullis_client::{Policy, PoolConfig, Protocol, TargetConfig, Timeouts, Upstream, UpstreamConfig};
//!
//! # async fn demo() -> Result<(), portcullis_client::Error> {
//! let users: Upstream<Empty<Bytes>> = Upstream::new(UpstreamConfig {
//!     name: "users".into(),
//!     targets: vec![TargetConfig { host: "127.0.0.1".into(), port: 9001, weight: 1 }],
//!     protocol: Protocol::Http1,
//!     tls: None,
//!     policy: Policy::RoundRobin,
//!     timeouts: Timeouts { connect: Duration::from_secs(1), ..Timeouts::default() },
//!     pool: PoolConfig::default(),
//! });
//! let req = http::Request::get("/users/7").body(Empty::new()).expect("valid request");
//! let resp = users.send(req, None).await?;
//! println!("{}", resp.status());
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
mod pool;
pub mod retry;
mod stats;
mod upstream;

pub use balance::{Balancer, Policy, hash_key};
pub use body::ResponseBody;
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use connect::{Conn, TlsSettings, tls_client_config};
pub use dns::{Dns, DnsConfig};
pub use error::{BoxError, Error, ErrorKind};
pub use health::{ActiveHealthConfig, HealthState, PassiveHealthConfig};
pub use pool::PoolConfig;
pub use retry::{RetryBudget, RetryOn, RetryPolicy};
pub use stats::{COUNTED_ERRORS, RETRY_REASONS, TargetStats, UpstreamStats};
pub use upstream::{
    Protocol, ReplayBody, RequestBody, Target, TargetConfig, Timeouts, Upstream, UpstreamConfig,
};
