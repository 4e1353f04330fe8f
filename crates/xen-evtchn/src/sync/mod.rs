//! Every atomic, lock and barrier the crate uses, in one place.
//!
//! The rest of the crate never names `std::sync::atomic` or `parking_lot` directly: it goes
//! through this module, so that a `cfg` can swap in a model checker's types and run the real
//! code under it (see `docs/design.md`, "Verification").
//!
//! With `--cfg xen_evtchn_shuttle` the atomics and the mutex are [shuttle]'s (every access is
//! a scheduling point of the model checker), `Backoff` yields to shuttle's scheduler instead
//! of spinning, and `Arc` and `CachePadded` stay what they are (no synchronisation of their
//! own that a model needs to see: shuttle re-exports std's `Arc`).
//!
//! [shuttle]: https://docs.rs/shuttle

pub(crate) mod rcu;

pub(crate) use crossbeam_utils::CachePadded;
pub(crate) use std::sync::Arc;

#[cfg(xen_evtchn_shuttle)]
pub(crate) use shuttle::sync::atomic::fence;
#[cfg(not(xen_evtchn_shuttle))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering, fence,
};

#[cfg(not(xen_evtchn_shuttle))]
pub(crate) use crossbeam_utils::Backoff;
#[cfg(not(xen_evtchn_shuttle))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

/// Gives the processor to another thread (the model checker's scheduler under shuttle).
#[cfg(not(xen_evtchn_shuttle))]
#[allow(unused_imports)] // used by the `test-utils` consumer models only
pub(crate) use std::thread::yield_now;

#[cfg(xen_evtchn_shuttle)]
mod model;
#[cfg(xen_evtchn_shuttle)]
#[allow(unused_imports)] // AtomicU8 is used by the normal build only (rcu's barrier mode)
pub(crate) use model::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Backoff, Mutex, MutexGuard, Ordering,
    yield_now,
};
