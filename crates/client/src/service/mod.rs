//! The service client: `portcullis-client` as the HTTP client of a Rust service.
//!
//! [`Client`] takes URLs instead of an [`UpstreamConfig`](crate::UpstreamConfig): each origin
//! (scheme, host, port) becomes an [`Upstream`](crate::Upstream) of its own on first use —
//! pool, breaker, retry budget, passive health, DNS entry — and is dropped when idle. On top
//! of it: redirects (`redirect.rs`), the call's deadline, `tracing` spans with W3C trace
//! context (`trace.rs`), per-origin counters (`stats.rs`) and, with the `metrics` feature,
//! their export to prometheus (`metrics.rs`). `docs/client.md` is the guide.

mod builder;
mod client;
#[cfg(feature = "metrics")]
mod metrics;
mod origin;
mod redirect;
mod request;
mod response;
mod setup;
mod stats;
mod trace;

pub use builder::{ClientBuilder, DEFAULT_POOL, DEFAULT_TIMEOUTS};
pub use client::Client;
pub use redirect::{Redirect, Redirects};
pub use request::{CallOptions, RequestBuilder};
pub use response::{Body, Response};
pub use stats::{CALL_ERRORS, ClientStats, OriginStats};
