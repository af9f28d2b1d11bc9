//! The service client (`portcullis_client::Client`) against real misbehaving servers on
//! loopback: the API, redirects, TLS, per-origin isolation, cancellation, timeouts that fire
//! by default, and what it makes visible (spans, trace context, counters, metrics).

mod api;
mod cancel;
mod isolation;
mod observability;
mod redirects;
mod stale;
mod support;
mod timeouts;
mod tls;
