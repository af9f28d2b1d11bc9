//! Portcullis config.
pub mod error;
pub mod raw;
pub mod source;
