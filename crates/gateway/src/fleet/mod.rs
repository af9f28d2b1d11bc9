//! The fleet config plane: the shared part of the config from etcd, watched by every node,
//! applied through the same build-validate-swap path as file reloads; node status under a
//! lease; the fleet view and admin writes.

pub mod store;
