//! The FIFO ABI: per-port event words in guest pages, per-VCPU control blocks, 16 priority
//! queues per VCPU whose tails the hypervisor tracks.
//!
//! Raising an event (Xen's `evtchn_fifo_set_pending`, in our own structure):
//! 1. no event word yet (its page was not added): remember the raise in the port slot and stop;
//!    `EVTCHNOP_expand_array` raises it again when the page arrives;
//! 2. the target VCPU has no control block: the event is dropped (PENDING not set), as in Xen;
//! 3. **fast path, no lock**: if the word is already LINKED or MASKED, one compare-and-swap sets
//!    PENDING (nothing else would happen under the lock either);
//! 4. otherwise lock the port's queue (and, if its event was last linked on another queue, that
//!    queue too, in address order; at most three tries if a concurrent `set_priority` or
//!    `bind_vcpu` moves it meanwhile, then the event is dropped and counted), set PENDING and
//!    LINKED in one atomic step ([`event_word::raise`]), forget the old queue's tail if it was
//!    this port, append the port to the tail (a bounded CAS of the old tail's LINK,
//!    [`event_word::set_link`]) or, if the queue was empty or its tail consumed, write HEAD;
//!    publish the new tail while unlocking;
//! 5. if HEAD was written and the queue's READY bit was clear, mark events pending on the VCPU
//!    (the upcall).
//!
//! A queue's lock and its tail share one host word ([`queue::Queue`]), so the critical section
//! costs one swap to enter and one store to leave; senders to ports on other queues
//! never touch it.

mod control_block;
mod event_array;
mod event_word;
mod queue;

use std::ops::Range;
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;
use xen_evtchn_abi::{
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_DEFAULT, EvtchnPort,
};

use crate::backend::EvtchnPortOps;
use crate::bitops;
use crate::guest_memory::GuestPage;
use crate::host::UpcallSink;
use crate::port::PortSlot;
use crate::sync::rcu::RcuGuard;
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering, fence};
use crate::vcpu::Vcpu;

pub(crate) use control_block::ControlBlock;
pub(crate) use event_array::AddPageError;
use event_array::EventArray;
use event_word::Link;
use queue::{PortQueue, Queue};

/// `fifo_flags` bit: raised while the port had no event word.
const SAVED_PENDING: u32 = 1;

/// The `seen` value for [`event_word::raise_from`] when the word was not read before the
/// lock: its one CAS then expects a quiet word (0), and anything else reads the word afresh.
const NOTHING_SEEN: u32 = 0;

/// Times the queue pair is re-locked when the port's queue changes under the sender (Xen: 3).
const LOCK_TRIES: u32 = 3;

/// Things a misbehaving (or very unlucky) guest made the FIFO backend do, counted per domain.
///
/// None of them affects another domain; each corresponds to a warning Xen logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FifoCounters {
    /// Events dropped because the target VCPU had no control block.
    pub dropped_no_control_block: u64,
    /// Events dropped because the port's queue changed three times while the sender locked it.
    pub dropped_queue_changes: u64,
    /// Appends that gave up on an old tail whose word the guest kept rewriting (the event
    /// stays pending and linked but unreachable).
    pub link_gave_up: u64,
    /// Ports bound while their event word was still LINKED.
    pub bound_while_linked: u64,
}

#[derive(Debug, Default)]
struct Counters {
    dropped_no_control_block: AtomicU64,
    dropped_queue_changes: AtomicU64,
    link_gave_up: AtomicU64,
    bound_while_linked: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One VCPU's FIFO state.
#[derive(Debug)]
struct FifoVcpu {
    control: OnceLock<ControlBlock>,
    queues: [CachePadded<Queue>; EVTCHN_FIFO_MAX_QUEUES as usize],
}

/// Why a control block could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlError {
    /// The VCPU does not exist.
    NoSuchVcpu,
    /// The offset is misaligned or the block would cross the page end.
    BadOffset,
    /// The VCPU already has a control block.
    AlreadyMapped,
}

/// The guest frames a domain's FIFO state lives in, as the guest gave them: what a VMM needs to
/// save and restore the FIFO set-up (live migration) or to know which frames the library keeps
/// mapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FifoFrames {
    /// Per VCPU: the control block's frame and byte offset (`None`: not set up yet).
    pub control: Vec<Option<(u64, u32)>>,
    /// The event-array frames, in order (frame `i` holds ports `1024 * i ..`).
    pub array: Vec<u64>,
}

/// A domain's FIFO state (Xen's `struct evtchn_fifo_domain` plus the per-VCPU parts).
#[derive(Debug)]
pub(crate) struct Fifo {
    array: EventArray,
    vcpus: Box<[FifoVcpu]>,
    counters: Counters,
    /// Where the guest put things (written under the event lock; never on the send path).
    frames: Mutex<FifoFrames>,
}

impl Fifo {
    /// FIFO state for `nr_vcpus` VCPUs: no control block, no event-array page.
    pub(crate) fn new(nr_vcpus: u32) -> Self {
        Fifo {
            array: EventArray::new(),
            vcpus: (0..nr_vcpus)
                .map(|_| FifoVcpu {
                    control: OnceLock::new(),
                    queues: std::array::from_fn(|_| CachePadded::new(Queue::default())),
                })
                .collect(),
            counters: Counters::default(),
            frames: Mutex::new(FifoFrames {
                control: vec![None; nr_vcpus as usize],
                array: Vec::new(),
            }),
        }
    }

    /// The guest frames in use.
    pub(crate) fn frames(&self) -> FifoFrames {
        self.frames.lock().clone()
    }

    /// Installs VCPU `vcpu`'s control block at byte `offset` of `page` (guest frame `gfn`).
    pub(crate) fn map_control_block(
        &self,
        vcpu: u32,
        gfn: u64,
        page: GuestPage,
        offset: u32,
    ) -> Result<(), ControlError> {
        let v = self
            .vcpus
            .get(vcpu as usize)
            .ok_or(ControlError::NoSuchVcpu)?;
        if v.control.get().is_some() {
            return Err(ControlError::AlreadyMapped);
        }
        let block = ControlBlock::new(page, offset).ok_or(ControlError::BadOffset)?;
        v.control
            .set(block)
            .map_err(|_| ControlError::AlreadyMapped)?;
        if let Some(entry) = self.frames.lock().control.get_mut(vcpu as usize) {
            *entry = Some((gfn, offset));
        }
        Ok(())
    }

    /// Number of event-array pages.
    pub(crate) fn array_pages(&self) -> u32 {
        self.array.pages()
    }

    /// Marks `port` as raised while it had no event word (the 2-level → FIFO carry-over).
    pub(crate) fn save_pending(slot: &PortSlot) {
        slot.fifo_flags.fetch_or(SAVED_PENDING, Ordering::SeqCst);
    }

    /// The no-event-word path of a raise: remember it in the slot, unless the page arrived
    /// meanwhile. Pairs with [`Fifo::publish_page`]: each side stores, then issues a full
    /// fence, then loads what the other stored, so at least one of them sees the other: either
    /// this sender finds the page (and raises through it) or the expander finds the flag (and
    /// raises it). Both may: the second raise of an event only finds it pending.
    #[cold]
    fn save_pending_or_word(&self, port: EvtchnPort, slot: &PortSlot) -> Option<&AtomicU32> {
        Self::save_pending(slot);
        fence(Ordering::SeqCst);
        self.array.word(port)
    }

    /// Adds the next event-array page and returns the ports it covers; the caller then raises
    /// the ports of that range whose saved-pending flag is set (see
    /// [`Fifo::save_pending_or_word`] for why none can be missed).
    pub(crate) fn publish_page(
        &self,
        gfn: u64,
        page: GuestPage,
    ) -> Result<Range<EvtchnPort>, AddPageError> {
        let ports = self.array.add_page(page)?;
        fence(Ordering::SeqCst);
        self.frames.lock().array.push(gfn);
        Ok(ports)
    }

    /// Whether `port` was raised while it had no event word. (Like Xen, the flag is not
    /// cleared when the event is raised again from it.)
    pub(crate) fn has_saved_pending(slot: &PortSlot) -> bool {
        slot.fifo_flags.load(Ordering::SeqCst) & SAVED_PENDING != 0
    }

    /// Sets the port's priority back to the default (done for every port on the switch to
    /// FIFO, and on bind), keeping its last queue.
    pub(crate) fn reset_priority(slot: &PortSlot) {
        Self::update_queue(slot, |q| q.with_priority(EVTCHN_FIFO_PRIORITY_DEFAULT));
    }

    fn update_queue(slot: &PortSlot, f: impl Fn(PortQueue) -> PortQueue) {
        // Host memory only, written by few parties: the loop ends as soon as no one else
        // writes the word between our load and our CAS.
        let _ = slot
            .fifo_queue
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                Some(f(PortQueue(raw)).0)
            });
    }

    /// A snapshot of the counters.
    pub(crate) fn counters(&self) -> FifoCounters {
        let c = &self.counters;
        FifoCounters {
            dropped_no_control_block: c.dropped_no_control_block.load(Ordering::Relaxed),
            dropped_queue_changes: c.dropped_queue_changes.load(Ordering::Relaxed),
            link_gave_up: c.link_gave_up.load(Ordering::Relaxed),
            bound_while_linked: c.bound_while_linked.load(Ordering::Relaxed),
        }
    }

    /// Links `port` (unmasked, not linked: the fast path refused it) onto its queue: step 4 of
    /// the module documentation. The common case, an event linked again on the queue it was
    /// last linked on, locks that one queue here; a move to another queue (or a queue change
    /// racing this send) goes through [`Fifo::link_moving`].
    #[inline(always)]
    fn link<U: UpcallSink>(
        &self,
        target: Target<'_, U>,
        port: EvtchnPort,
        word: &AtomicU32,
        seen: u32,
        slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        let pq = PortQueue(slot.fifo_queue.load(Ordering::Acquire));
        if pq.last_is_current(target.id) {
            let priority = pq.priority();
            let q: &Queue = &target.queues.queues[priority as usize];
            let tail = q.lock();
            if slot.fifo_queue.load(Ordering::Acquire) == pq.0 {
                self.append(target, priority, q, tail, port, word, seen, guard);
                return;
            }
            q.unlock(tail);
            self.link_moving(target.vcpu, port, word, slot, guard, 1);
        } else {
            self.link_moving(target.vcpu, port, word, slot, guard, 0);
        }
    }

    /// [`Fifo::link`] when the port's queue is not the one it was last linked on, or changed
    /// under the sender: locks both queues (in address order), with at most [`LOCK_TRIES`]
    /// tries in all (`tries` were spent already).
    ///
    /// Takes the VCPU alone (its FIFO state is found again here), so that the hot path need
    /// not keep the rest of its target in memory for this call.
    #[cold]
    #[inline(never)]
    fn link_moving<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        word: &AtomicU32,
        slot: &PortSlot,
        guard: &RcuGuard,
        mut tries: u32,
    ) {
        let Some(fv) = self.vcpus.get(vcpu.id as usize) else {
            return;
        };
        let Some(control) = fv.control.get() else {
            return;
        };
        let target = Target {
            vcpu,
            id: vcpu.id,
            queues: fv,
            control,
        };
        let (pq, q, old_q, tail, mut old_tail) = loop {
            if tries == LOCK_TRIES {
                bump(&self.counters.dropped_queue_changes);
                return;
            }
            let pq = PortQueue(slot.fifo_queue.load(Ordering::Acquire));
            let q: &Queue = &fv.queues[pq.priority() as usize];
            let old_q: &Queue = self
                .vcpus
                .get(pq.last_vcpu() as usize)
                .map_or(q, |v| &v.queues[pq.last_priority() as usize]);
            let (tail, old_tail) = lock_pair(q, old_q);
            if slot.fifo_queue.load(Ordering::Acquire) == pq.0 {
                break (pq, q, old_q, tail, old_tail);
            }
            unlock_pair(q, tail, old_q, old_tail);
            tries += 1;
        };
        let priority = pq.priority();
        if std::ptr::eq(q, old_q) {
            self.append(target, priority, q, tail, port, word, NOTHING_SEEN, guard);
            return;
        }
        if !event_word::raise(word).must_link {
            unlock_pair(q, tail, old_q, old_tail);
            return;
        }
        // The event leaves its old queue: if it was that queue's tail, the guest has consumed
        // it since (it was unlinked), so that queue is empty now and must not link its next
        // event through this word.
        if old_tail == port {
            old_tail = 0;
        }
        Self::update_queue(slot, |q| q.with_last(target.id, priority));
        old_q.unlock(old_tail);
        self.append_raised(target, priority, q, tail, port, guard);
    }

    /// Under `q`'s lock (its tail is `tail`): raises `word` (last seen as `seen`) and, if the
    /// event must be linked, appends it to `q`; unlocks `q`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn append<U: UpcallSink>(
        &self,
        target: Target<'_, U>,
        priority: u32,
        q: &Queue,
        tail: EvtchnPort,
        port: EvtchnPort,
        word: &AtomicU32,
        seen: u32,
        guard: &RcuGuard,
    ) {
        if !event_word::raise_from(word, seen).must_link {
            q.unlock(tail);
            return;
        }
        // The port was this queue's tail and the guest has consumed it since: the queue is
        // empty, and must not link the event through its own word.
        let tail = if tail == port { 0 } else { tail };
        self.append_raised(target, priority, q, tail, port, guard);
    }

    /// Under `q`'s lock, for an event just marked LINKED: appends it after `tail` (0: none)
    /// or makes it the head, unlocks `q` with the event as its tail, and raises READY (and
    /// the upcall) if it started a new list.
    #[inline(always)]
    fn append_raised<U: UpcallSink>(
        &self,
        target: Target<'_, U>,
        priority: u32,
        q: &Queue,
        tail: EvtchnPort,
        port: EvtchnPort,
        guard: &RcuGuard,
    ) {
        let link = match (tail != 0).then(|| self.array.word(tail)).flatten() {
            Some(tail_word) => event_word::set_link(tail_word, port),
            None => Link::NotLinked,
        };
        if link == Link::NotLinked {
            target.control.set_head(priority, port);
        } else if link == Link::GaveUp {
            bump(&self.counters.link_gave_up);
        }
        q.unlock(port);
        if link == Link::NotLinked && !target.control.test_and_set_ready(priority) {
            target.vcpu.mark_events_pending(guard);
        }
    }
}

/// The VCPU an event is raised on, with its FIFO state.
struct Target<'a, U> {
    vcpu: &'a Vcpu<U>,
    /// `vcpu.id`, read once.
    id: u32,
    queues: &'a FifoVcpu,
    control: &'a ControlBlock,
}

impl<U> Clone for Target<'_, U> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<U> Copy for Target<'_, U> {}

/// Locks `a` and, if it is another queue, `b`, in address order; returns their tails.
#[inline(always)]
fn lock_pair(a: &Queue, b: &Queue) -> (EvtchnPort, EvtchnPort) {
    if std::ptr::eq(a, b) {
        let t = a.lock();
        (t, t)
    } else if (a as *const Queue) < (b as *const Queue) {
        let ta = a.lock();
        (ta, b.lock())
    } else {
        let tb = b.lock();
        (a.lock(), tb)
    }
}

/// Unlocks what [`lock_pair`] locked, with these tails.
#[inline(always)]
fn unlock_pair(a: &Queue, tail_a: EvtchnPort, b: &Queue, tail_b: EvtchnPort) {
    if !std::ptr::eq(a, b) {
        b.unlock(tail_b);
    }
    a.unlock(tail_a);
}

impl EvtchnPortOps for Fifo {
    fn name(&self) -> &'static str {
        "FIFO"
    }

    fn max_ports(&self) -> u32 {
        EVTCHN_FIFO_NR_CHANNELS
    }

    #[inline(always)]
    fn set_pending<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        // A port with a slot is below 131072 (the port table holds no more), so masking it to
        // a FIFO port number changes nothing and spares the range check of the page index.
        debug_assert!(port <= EVTCHN_FIFO_LINK_MASK, "port {port} has a slot");
        let Some(word) = self
            .array
            .word(port & EVTCHN_FIFO_LINK_MASK)
            .or_else(|| self.save_pending_or_word(port, slot))
        else {
            return;
        };
        // The id is read once: the atomics below would make the compiler read it again.
        let id = vcpu.id;
        let Some(fv) = self.vcpus.get(id as usize) else {
            return;
        };
        let Some(control) = fv.control.get() else {
            bump(&self.counters.dropped_no_control_block);
            return;
        };
        let Err(seen) = event_word::set_pending_if_queued_or_masked(word) else {
            return;
        };
        let target = Target {
            vcpu,
            id,
            queues: fv,
            control,
        };
        self.link(target, port, word, seen, slot, guard);
    }

    fn clear_pending(&self, port: EvtchnPort, _slot: &PortSlot, _guard: &RcuGuard) {
        if let Some(word) = self.array.word(port) {
            bitops::test_and_clear(word, EVTCHN_FIFO_PENDING);
        }
    }

    fn unmask<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        let Some(word) = self.array.word(port) else {
            return;
        };
        bitops::test_and_clear(word, EVTCHN_FIFO_MASKED);
        if bitops::test(word, EVTCHN_FIFO_PENDING) {
            self.set_pending(vcpu, port, slot, guard);
        }
    }

    fn is_pending(&self, port: EvtchnPort, _guard: &RcuGuard) -> bool {
        self.array
            .word(port)
            .is_some_and(|w| bitops::test(w, EVTCHN_FIFO_PENDING))
    }

    fn is_masked(&self, port: EvtchnPort, _guard: &RcuGuard) -> bool {
        self.array
            .word(port)
            .is_none_or(|w| bitops::test(w, EVTCHN_FIFO_MASKED))
    }

    fn is_busy(&self, port: EvtchnPort, _guard: &RcuGuard) -> bool {
        self.array
            .word(port)
            .is_some_and(|w| bitops::test(w, EVTCHN_FIFO_LINKED))
    }

    fn init_port(&self, port: EvtchnPort, slot: &PortSlot, _guard: &RcuGuard) {
        Self::reset_priority(slot);
        if self.is_busy(port, _guard) {
            bump(&self.counters.bound_while_linked);
        }
    }

    fn has_priorities(&self) -> bool {
        true
    }

    fn set_priority(&self, _port: EvtchnPort, slot: &PortSlot, priority: u32) {
        Self::update_queue(slot, |q| q.with_priority(priority));
    }
}
