//! End-to-end tests: the real `portcullis` binary with real config files, real upstream
//! servers and real clients, all on ephemeral loopback ports.

mod harness;

mod cli;
mod edge;
mod proxying;
mod resilience;
mod routing;
mod upstreams;
