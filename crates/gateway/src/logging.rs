//! The gateway's own log: to stderr, filtered by `PORTCULLIS_LOG`, and the filter changeable at
//! runtime through the admin API (no restart to turn debug logs on during an incident).

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

struct Level {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Installs the global subscriber.
pub fn init() {
    let wanted = std::env::var("PORTCULLIS_LOG").unwrap_or_else(|_| "info".into());
    // An invalid filter falls back to `info`; what is reported is the filter in force.
    let (spec, filter, refused) = match parse(&wanted) {
        Ok(f) => (wanted, f, None),
        Err(e) => ("info".to_owned(), EnvFilter::new("info"), Some(e)),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(layer).with(fmt).init();
    if let Some(e) = refused {
        tracing::warn!(error = %e, "PORTCULLIS_LOG refused; logging at info");
    }
    let _ = LEVEL.set(Level {
        handle,
        current: Mutex::new(spec),
    });
}

/// Parses a filter spec; an empty one is refused (it would silently turn off all but errors).
fn parse(spec: &str) -> Result<EnvFilter, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty filter: give e.g. `info` or `portcullis=debug,info`".to_owned());
    }
    EnvFilter::try_new(spec).map_err(|e| format!("invalid filter `{spec}`: {e}"))
}

/// The filter in force, e.g. `info` or `portcullis=debug,info`.
pub fn current() -> String {
    LEVEL
        .get()
        .map(|l| l.current.lock().map(|c| c.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// Replaces the filter; `Err` says why the spec is not valid.
pub fn set(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    let filter = parse(spec)?;
    let level = LEVEL.get().ok_or("logging is not initialised")?;
    level.handle.reload(filter).map_err(|e| e.to_string())?;
    if let Ok(mut c) = level.current.lock() {
        *c = spec.to_owned();
    }
    tracing::info!(filter = spec, "log filter changed");
    Ok(())
}
