//! Read-copy-update with an asymmetric barrier: read-side sections cost two plain stores.
//!
//! Senders must not pay for a lock: the target of the send path is "what the guest-memory
//! atomics cost". Yet a sender reads state that other threads change (a port being closed, a
//! domain being destroyed, a guest page being unmapped) and must never act on it after the
//! change has completed. This module gives the writers a way to wait for every reader that may
//! still see the old state, while readers do no read-modify-write at all:
//!
//! * each thread owns a [`Slot`] (cache-padded, found through a thread-local) holding a
//!   nesting depth (low 32 bits) and a generation (high 32 bits); entering a read-side section
//!   adds one to the depth (a plain load and store of the thread's own word), leaving stores
//!   the word back as the section found it, with the next generation when the outermost
//!   section ends (one store: sections end in reverse order);
//! * a writer publishes its change, runs a *heavy* process-wide barrier (Linux
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running thread execute a
//!   full fence), then waits until every slot that had a non-zero depth has a new
//!   generation.
//!
//! The heavy barrier pairs with the reader's compiler-only *light* barrier: either the reader's
//! depth store is visible to the writer's scan (so the writer waits for it), or the reader's
//! later loads see the writer's change. Where the expedited membarrier is not available (other
//! operating systems, old kernels, seccomp), both sides fall back to `fence(SeqCst)`, which is
//! the classic symmetric Dekker pattern: correct, only slower for readers. A reader takes the
//! compiler-fence path only through a thread-local pointer that is set once its slot is
//! registered and the expedited barrier is known to work, so choosing the path is one load
//! and one test; the first section of a thread and every section in the symmetric mode go
//! through the out-of-line `read_slow`.
//!
//! Rules (checked where cheap):
//! * a read-side section never blocks and never calls [`synchronize`] (that would wait for
//!   itself; [`synchronize`] asserts it);
//! * sections nest; only the end of the outermost one moves the slot to a new generation.
//!
//! Under the model checker (`--cfg xen_evtchn_shuttle`) the same code runs with shuttle's
//! thread-locals, atomics and mutex, and these differences:
//! * the barrier mode is always the symmetric `fence(SeqCst)` one (no membarrier: shuttle
//!   runs every model thread on one OS thread, and models every atomic as `SeqCst` anyway);
//! * the registry of slots and the fallback reader count belong to one shuttle execution
//!   (`shuttle::lazy_static!`, created on first use and dropped when the execution ends), so
//!   nothing registered by the dead threads of an earlier execution is scanned, reused or
//!   waited for. The slots themselves are still leaked (a few hundred bytes per model thread
//!   per execution), as the `&'static` references handed to thread-locals require;
//! * waits yield to shuttle's scheduler (the model `Backoff`), so they end when the reader
//!   they wait for has run.

use std::cell::Cell;
use std::marker::PhantomData;
#[cfg(not(xen_evtchn_shuttle))]
use std::sync::OnceLock;

#[cfg(not(xen_evtchn_shuttle))]
use super::AtomicU8;
use super::{AtomicBool, AtomicU64, Backoff, CachePadded, Mutex, Ordering};
#[cfg(xen_evtchn_shuttle)]
use shuttle::thread_local;

/// One thread's read-side word: `generation << 32 | depth`, depth non-zero while the thread
/// is inside a read-side section.
#[derive(Debug)]
struct Slot {
    ctr: CachePadded<AtomicU64>,
    in_use: AtomicBool,
}

/// All slots ever handed out. Slots are leaked on purpose (a few hundred bytes per thread that
/// ever read) and recycled when their thread exits, so the registry only grows with the peak
/// number of concurrent reader threads.
#[cfg(not(xen_evtchn_shuttle))]
static REGISTRY: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

/// Readers whose thread-local slot is gone (reads made from a thread-local destructor) count
/// themselves here with real read-modify-writes; writers wait for it to drain.
#[cfg(not(xen_evtchn_shuttle))]
static FALLBACK_READERS: AtomicU64 = AtomicU64::new(0);

// The same two, one per shuttle execution (see the module documentation).
#[cfg(xen_evtchn_shuttle)]
shuttle::lazy_static! {
    static ref REGISTRY: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());
    static ref FALLBACK_READERS: AtomicU64 = AtomicU64::new(0);
}

/// Releases the thread's slot when the thread exits.
struct SlotOwner(&'static Slot);

impl SlotOwner {
    fn register() -> Self {
        let mut registry = REGISTRY.lock();
        let slot = match registry.iter().find(|s| !s.in_use.load(Ordering::Relaxed)) {
            Some(slot) => slot,
            None => {
                let slot: &'static Slot = Box::leak(Box::new(Slot {
                    ctr: CachePadded::new(AtomicU64::new(0)),
                    in_use: AtomicBool::new(false),
                }));
                registry.push(slot);
                slot
            }
        };
        slot.in_use.store(true, Ordering::Relaxed);
        SlotOwner(slot)
    }
}

impl Drop for SlotOwner {
    fn drop(&mut self) {
        // The thread is exiting, outside any section (its depth is 0): hand the slot to
        // a future thread.
        let _registry = REGISTRY.lock();
        // `try_with`: std never destroys `SLOT` (no destructor), shuttle destroys a thread's
        // locals oldest first, so `SLOT` may be gone already; either way nothing reads it
        // after this.
        let _ = SLOT.try_with(|s| s.set(None));
        self.0.in_use.store(false, Ordering::Relaxed);
    }
}

/// One read-side section more, in a slot word.
const DEPTH_ONE: u64 = 1;
/// One generation more, in a slot word.
const GENERATION_ONE: u64 = 1 << 32;

/// The nesting depth held in a slot word.
#[inline(always)]
fn depth(word: u64) -> u32 {
    word as u32
}

/// The generation held in a slot word.
#[inline(always)]
fn generation(word: u64) -> u32 {
    (word >> 32) as u32
}

thread_local! {
    /// Fast path: the thread's slot once it has one *and* the expedited barrier is known to
    /// work, so that one thread-local load and one test choose the fast read side. Const-
    /// initialised (no lazy-init check, no destructor).
    static SLOT: Cell<Option<&'static Slot>> = const { Cell::new(None) };
    /// Slow path: created once per thread, gives the slot back when the thread exits.
    static OWNER: SlotOwner = SlotOwner::register();
}

/// The calling thread's slot, registering it on first use; `None` once the thread-local
/// owner is destroyed (a read from another thread-local's destructor).
fn local_slot() -> Option<&'static Slot> {
    OWNER.try_with(|o| o.0).ok()
}

/// How the two sides of the barrier are implemented on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(xen_evtchn_shuttle, allow(dead_code))]
enum BarrierMode {
    /// Readers: compiler fence. Writers: expedited membarrier.
    Expedited,
    /// Both sides: `fence(SeqCst)`.
    Fence,
}

#[cfg(not(xen_evtchn_shuttle))]
const MODE_UNKNOWN: u8 = 0;
#[cfg(not(xen_evtchn_shuttle))]
const MODE_EXPEDITED: u8 = 1;
#[cfg(not(xen_evtchn_shuttle))]
const MODE_FENCE: u8 = 2;

#[cfg(not(xen_evtchn_shuttle))]
static MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);

/// Under the model checker: always the symmetric fences (see the module documentation).
#[cfg(xen_evtchn_shuttle)]
#[inline(always)]
fn mode() -> BarrierMode {
    BarrierMode::Fence
}

#[cfg(not(xen_evtchn_shuttle))]
#[inline(always)]
fn mode() -> BarrierMode {
    match MODE.load(Ordering::Relaxed) {
        MODE_EXPEDITED => BarrierMode::Expedited,
        MODE_FENCE => BarrierMode::Fence,
        _ => init_mode(),
    }
}

/// Chooses the barrier implementation once. Until it is chosen, readers use the full fence,
/// which is correct with either writer side.
#[cfg(not(xen_evtchn_shuttle))]
#[cold]
fn init_mode() -> BarrierMode {
    static INIT: OnceLock<BarrierMode> = OnceLock::new();
    let chosen = *INIT.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            use rustix::thread::{
                MembarrierCommand, MembarrierQuery, membarrier, membarrier_query,
            };
            let query = membarrier_query();
            if query.contains(MembarrierQuery::PRIVATE_EXPEDITED)
                && membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
                && membarrier(MembarrierCommand::PrivateExpedited).is_ok()
            {
                return BarrierMode::Expedited;
            }
        }
        BarrierMode::Fence
    });
    let code = match chosen {
        BarrierMode::Expedited => MODE_EXPEDITED,
        BarrierMode::Fence => MODE_FENCE,
    };
    MODE.store(code, Ordering::Relaxed);
    chosen
}

fn heavy_barrier() {
    match mode() {
        BarrierMode::Expedited => {
            #[cfg(target_os = "linux")]
            {
                use rustix::thread::{MembarrierCommand, membarrier};
                // Registration succeeded when the mode was chosen, so this cannot fail with
                // EPERM; should the kernel refuse anyway, the global command is slower but has
                // the same effect.
                if membarrier(MembarrierCommand::PrivateExpedited).is_err() {
                    let _ = membarrier(MembarrierCommand::Global);
                }
            }
        }
        BarrierMode::Fence => std::sync::atomic::fence(Ordering::SeqCst),
    }
}

/// A read-side critical section. While it is alive, nothing published through an
/// [`RcuArc`](crate::guest_memory::RcuArc) that this thread can reach is freed.
///
/// Not `Send`: the section belongs to the thread that opened it. Sections end in the reverse
/// order of their start (as scoped guards do; checked in debug builds).
#[derive(Debug)]
pub(crate) struct RcuGuard {
    /// The thread's slot, or None for a reader counted in `FALLBACK_READERS`.
    slot: Option<&'static Slot>,
    /// The slot word to store when the section ends: the word before it started, with the
    /// next generation if it is the outermost section. Known at the start, so ending a
    /// section is a single store.
    restore: u64,
    _not_send: PhantomData<*const ()>,
}

/// Opens a read-side section: a load and a store of the thread's own slot word, and a
/// compiler fence, once the thread has a slot and the expedited barrier is known to work;
/// everything else (the first section of a thread, the symmetric-fence mode, a read from a
/// thread-local destructor) goes through [`read_slow`].
#[inline(always)]
pub(crate) fn read() -> RcuGuard {
    match SLOT.with(Cell::get) {
        Some(slot) => {
            let guard = enter(slot);
            // Orders the depth store before every load of the section (paired with the
            // writer's heavy barrier).
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            guard
        }
        None => read_slow(),
    }
}

/// Adds one to the slot's depth; the guard restores the word as it was found, moved to the
/// next generation if this is the outermost section.
#[inline(always)]
fn enter(slot: &'static Slot) -> RcuGuard {
    let word = slot.ctr.load(Ordering::Relaxed);
    slot.ctr
        .store(word.wrapping_add(DEPTH_ONE), Ordering::Relaxed);
    let outermost = u64::from(depth(word) == 0) * GENERATION_ONE;
    RcuGuard {
        slot: Some(slot),
        restore: word.wrapping_add(outermost),
        _not_send: PhantomData,
    }
}

/// [`read`] when the thread-local fast path is not set up: registers the thread's slot and
/// chooses the barrier mode (then, in the expedited mode, sets the fast path up for the next
/// section); uses a full fence in the symmetric mode; counts the reader in
/// `FALLBACK_READERS` once the thread's slot is gone.
#[cold]
#[inline(never)]
fn read_slow() -> RcuGuard {
    let Some(slot) = local_slot() else {
        FALLBACK_READERS.fetch_add(1, Ordering::SeqCst);
        return RcuGuard {
            slot: None,
            restore: 0,
            _not_send: PhantomData,
        };
    };
    let guard = enter(slot);
    // Correct with either writer side, whatever the mode turns out to be.
    std::sync::atomic::fence(Ordering::SeqCst);
    if mode() == BarrierMode::Expedited {
        SLOT.with(|s| s.set(Some(slot)));
    }
    guard
}

impl Drop for RcuGuard {
    #[inline]
    fn drop(&mut self) {
        let Some(slot) = self.slot else {
            FALLBACK_READERS.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        debug_assert_eq!(
            depth(slot.ctr.load(Ordering::Relaxed)),
            depth(self.restore) + 1,
            "read-side sections must end in the reverse order of their start"
        );
        // Release: every load and store of the section happens before the writer observes
        // that the section is over.
        slot.ctr.store(self.restore, Ordering::Release);
    }
}

/// True while the calling thread is inside a read-side section.
pub(crate) fn in_read_section() -> bool {
    local_slot().is_some_and(|slot| depth(slot.ctr.load(Ordering::Relaxed)) != 0)
}

/// Waits until every read-side section that might have observed state published before this
/// call has ended. Sections that start later are not waited for.
///
/// # Panics
/// If the calling thread is itself inside a read-side section (it would wait forever).
pub(crate) fn synchronize() {
    assert!(
        !in_read_section(),
        "rcu::synchronize called inside a read-side section"
    );
    heavy_barrier();
    // Snapshot the slots that are inside a section now; wait for each to reach a new
    // generation (its outermost section ended). Should the generation wrap around to the very
    // value seen, the wait only lasts until the next section ends.
    let busy: Vec<(&'static Slot, u32)> = REGISTRY
        .lock()
        .iter()
        .filter_map(|s| {
            let c = s.ctr.load(Ordering::Acquire);
            (depth(c) != 0).then_some((*s, generation(c)))
        })
        .collect();
    for (slot, seen) in busy {
        let backoff = Backoff::new();
        while generation(slot.ctr.load(Ordering::Acquire)) == seen {
            if backoff.is_completed() {
                std::thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
    }
    let backoff = Backoff::new();
    while FALLBACK_READERS.load(Ordering::SeqCst) != 0 {
        if backoff.is_completed() {
            std::thread::yield_now();
        } else {
            backoff.snooze();
        }
    }
    // Pairs with the readers' release stores: what they did is visible to the caller.
    std::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn sections_nest_and_track_membership() {
        assert!(!in_read_section());
        let a = read();
        assert!(in_read_section());
        let b = read();
        drop(b);
        assert!(in_read_section());
        drop(a);
        assert!(!in_read_section());
    }

    #[test]
    #[should_panic(expected = "inside a read-side section")]
    fn synchronize_inside_a_section_panics() {
        let _g = read();
        synchronize();
    }

    #[test]
    fn synchronize_waits_for_a_section_that_started_before() {
        let phase = Arc::new(AtomicUsize::new(0));
        let p = phase.clone();
        let reader = std::thread::spawn(move || {
            let _g = read();
            p.store(1, Ordering::SeqCst);
            // Stay inside long enough for the writer to start waiting.
            std::thread::sleep(std::time::Duration::from_millis(50));
            p.store(2, Ordering::SeqCst);
        });
        while phase.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        synchronize();
        assert_eq!(
            phase.load(Ordering::SeqCst),
            2,
            "synchronize returned while a section that began before it was still open"
        );
        reader.join().unwrap();
    }

    #[test]
    fn synchronize_waits_for_the_outer_section_after_an_inner_one_ended() {
        let phase = Arc::new(AtomicUsize::new(0));
        let p = phase.clone();
        let reader = std::thread::spawn(move || {
            let outer = read();
            drop(read());
            p.store(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(read());
            std::thread::sleep(std::time::Duration::from_millis(50));
            p.store(2, Ordering::SeqCst);
            drop(outer);
        });
        while phase.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        synchronize();
        assert_eq!(
            phase.load(Ordering::SeqCst),
            2,
            "an inner section's end let synchronize return while the outer one was open"
        );
        reader.join().unwrap();
    }

    #[test]
    fn slot_word_counts_depth_and_generations() {
        let slot = local_slot().unwrap();
        let before = slot.ctr.load(Ordering::Relaxed);
        assert_eq!(depth(before), 0);
        let a = read();
        let b = read();
        assert_eq!(slot.ctr.load(Ordering::Relaxed), before + 2 * DEPTH_ONE);
        drop(b);
        assert_eq!(slot.ctr.load(Ordering::Relaxed), before + DEPTH_ONE);
        drop(a);
        assert_eq!(slot.ctr.load(Ordering::Relaxed), before + GENERATION_ONE);
    }

    #[test]
    fn the_fast_path_is_armed_only_with_the_expedited_barrier() {
        // A fresh thread: its first section goes through `read_slow`, which arms the
        // thread-local pointer only if readers may use the compiler fence alone.
        std::thread::spawn(|| {
            assert!(SLOT.with(Cell::get).is_none());
            let slot = local_slot().unwrap();
            drop(read());
            assert_eq!(
                SLOT.with(Cell::get).is_some(),
                mode() == BarrierMode::Expedited
            );
            // Either way the next section is counted in the thread's own slot.
            let g = read();
            assert_eq!(depth(slot.ctr.load(Ordering::Relaxed)), 1);
            drop(g);
            assert_eq!(depth(slot.ctr.load(Ordering::Relaxed)), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn synchronize_does_not_wait_for_idle_threads() {
        // A thread that read once and then parked must not hold writers up.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            drop(read());
            rx.recv().ok();
        });
        synchronize();
        tx.send(()).unwrap();
        t.join().unwrap();
    }
}
