//! A monotonic millisecond clock shared by breakers, budgets and ejection: cheap to read and
//! storable in an atomic.

use std::sync::OnceLock;
use std::time::Instant;

fn origin() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process (never 0, so 0 can mean "unset").
pub(crate) fn now_ms() -> u64 {
    origin().elapsed().as_millis() as u64 + 1
}
