//! One long-lived thread for config work: reading, validating and building configs, and
//! freeing the snapshots a reload replaced.
//!
//! Why one thread rather than the runtime's blocking pool: the system allocator gives each
//! thread its own arena, and memory freed into an arena is reused only by allocations made
//! from that arena. With a 10,000-route config built on one pool thread, its predecessor
//! freed on another and the first one loaded on the main thread, every reload left a config's
//! worth of holes in some arena: RSS grew to 4x over 20 reloads. Allocated and freed on this
//! one thread, a config reuses the space of the one before.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<Sender<Job>> = OnceLock::new();

fn sender() -> &'static Sender<Job> {
    JOBS.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        // If the thread cannot start, jobs run where they are sent (see `submit`).
        let _ = std::thread::Builder::new()
            .name("portcullis-config".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        tx
    })
}

/// Runs `job` on the config thread (or here, should that thread be gone), inside the caller's
/// runtime when it has one: building a snapshot starts upstream health checks, the resolver,
/// the access log writer and the trace exporter on it.
fn submit(job: Job) {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let job: Job = Box::new(move || {
        let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
        job();
    });
    if let Err(e) = sender().send(job) {
        (e.0)();
    }
}

/// A config job panicked (the thread goes on with the next one).
#[derive(Debug, thiserror::Error)]
#[error("the config job panicked")]
pub struct Panicked;

/// Runs `f` on the config thread and waits for it asynchronously.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Panicked> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move || {
        if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let _ = tx.send(v);
        }
    }));
    rx.await.map_err(|_| Panicked)
}

/// Runs `f` on the config thread and blocks until it is done (outside the runtime only).
pub fn block_on<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Panicked> {
    let (tx, rx) = channel();
    submit(Box::new(move || {
        if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let _ = tx.send(v);
        }
    }));
    rx.recv().map_err(|_| Panicked)
}

/// Frees `v` on the config thread (a replaced snapshot: tens of milliseconds at 10,000 routes,
/// and into the arena it was allocated from).
pub fn free<T: Send + 'static>(v: T) {
    submit(Box::new(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(v)));
    }));
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn jobs_run_on_one_named_thread_in_order() {
        let a = super::run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        let b = block_on_in_test();
        assert_eq!(a.as_deref(), Some("portcullis-config"));
        // Jobs sent from the runtime run inside it.
        let inside = super::run(|| tokio::runtime::Handle::try_current().is_ok()).await;
        assert!(inside.expect("ran"));
        assert_eq!(a, b);
        super::free(vec![1u8; 16]);
        // A panicking job is reported to its caller; the thread serves the next one.
        assert!(super::run(|| panic!("boom")).await.is_err());
        assert_eq!(super::run(|| 2 + 2).await.expect("ran"), 4);
    }

    fn block_on_in_test() -> Option<String> {
        std::thread::spawn(|| super::block_on(|| std::thread::current().name().map(str::to_owned)))
            .join()
            .expect("joined")
            .expect("ran")
    }
}
