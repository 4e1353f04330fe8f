//! Every atomic, lock and barrier the crate uses, in one place.
//!
//! The rest of the crate never names `std::sync::atomic` or `parking_lot` directly: it goes
//! through this module, so that a `cfg` can swap in a model checker's types and run the real
//! code under it (see `docs/design.md`, "Verification").

pub(crate) mod rcu;

pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering, fence,
};

pub(crate) use crossbeam_utils::{Backoff, CachePadded};
pub(crate) use parking_lot::{Mutex, MutexGuard};
