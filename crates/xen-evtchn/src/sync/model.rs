//! The model checker's stand-ins (`--cfg xen_evtchn_shuttle` only): shuttle's atomics and
//! mutex behind the API the crate uses (parking_lot's `lock()` without poisoning, crossbeam's
//! `Backoff`).
//!
//! Shuttle runs every thread of a test as a coroutine on one OS thread and switches between
//! them only at its own operations; a loop that waits for another thread must therefore call
//! one of them, and should say it is waiting ([`yield_now`]) so that the PCT scheduler lowers
//! its priority instead of running it until the step bound.

pub(crate) use shuttle::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering,
};
pub(crate) use shuttle::thread::yield_now;

/// A mutex with parking_lot's API over shuttle's (a model thread that panics while holding it
/// fails the test anyway, so poisoning is ignored).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

/// The guard of [`Mutex`].
pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        Mutex(shuttle::sync::Mutex::new(value))
    }

    /// Blocks (yielding to the model's scheduler) until the lock is ours.
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// crossbeam's `Backoff` for the model: every wait is a yield to shuttle's scheduler, and the
/// back-off never "completes", so callers never fall back to `std::thread::yield_now` (which
/// shuttle does not see).
#[derive(Debug, Default)]
pub(crate) struct Backoff(());

impl Backoff {
    /// A fresh back-off.
    pub(crate) fn new() -> Self {
        Backoff(())
    }

    /// One step of a spin loop.
    #[allow(dead_code)] // crossbeam's API; the crate uses `snooze` today
    pub(crate) fn spin(&self) {
        yield_now();
    }

    /// One step of a wait loop.
    pub(crate) fn snooze(&self) {
        yield_now();
    }

    /// Never: see the type's documentation.
    pub(crate) fn is_completed(&self) -> bool {
        false
    }
}
