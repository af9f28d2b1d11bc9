//! State that outlives a config reload: rate-limit counters, JWKS caches, Redis connections.
//!
//! A reload builds new plugin instances; without this, every reload would reset every rate
//! limit and refetch every JWKS. Instances ask for their state by a key that includes their
//! scope and the settings the state depends on, and get the previous instance's state back
//! while any instance still holds it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

type Entry = Weak<dyn Any + Send + Sync>;

fn registry() -> &'static Mutex<HashMap<String, Entry>> {
    static REG: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// The live state stored under `key`, or a new one made by `make`.
pub fn shared<T: Send + Sync + 'static>(key: &str, make: impl FnOnce() -> T) -> Arc<T> {
    match try_shared::<T, std::convert::Infallible>(key, || Ok(make())) {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Like [`shared`], with a constructor that can fail (nothing is stored then).
pub fn try_shared<T: Send + Sync + 'static, E>(
    key: &str,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<Arc<T>, E> {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = reg
        .get(key)
        .and_then(Weak::upgrade)
        .and_then(|a| a.downcast::<T>().ok())
    {
        return Ok(existing);
    }
    let fresh = Arc::new(make()?);
    let erased: Arc<dyn Any + Send + Sync> = fresh.clone();
    reg.insert(key.to_owned(), Arc::downgrade(&erased));
    // Drop entries whose state is gone, so the map does not grow with every reload.
    reg.retain(|_, w| w.strong_count() > 0);
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_while_held_and_is_rebuilt_after() {
        let a = shared("k", || 1u32);
        let b = shared("k", || 2u32);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert_eq!(*shared("k", || 3u32), 3);
    }
}
