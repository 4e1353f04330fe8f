//! A model of Linux's FIFO event consumer (`events_fifo.c`, with the parts of `events_base.c`
//! it relies on), for tests.
//!
//! It follows `shared/reference/guest-consumer.md` part 1:
//!
//! * set-up (1.1): one zeroed page per VCPU holds its control block at offset 0, registered
//!   with `EVTCHNOP_init_control`; the guest's private copy of the 16 queue heads starts at 0;
//! * growing the event array (1.2): when a port is bound, pages are added up to the one holding
//!   it, each filled with words that have only MASKED set, with `EVTCHNOP_expand_array`
//!   ([`FifoGuest::ensure_port`]); no page is added at set-up, as in Linux;
//! * the upcall (1.3): clear `evtchn_upcall_pending`, handle events, read barrier, repeat while
//!   the flag is set again;
//! * the handle-events loop (1.4) and the consumption of one event (1.5): exchange READY with
//!   0, serve the lowest-numbered (highest-priority) ready queue one event at a time, re-reading
//!   READY after each event; walk a queue from the cached local head, reading `HEAD[q]` (after
//!   a read barrier) only when the local head is 0; unlink with a compare-and-swap that clears
//!   LINKED and LINK and returns the old LINK; dispatch only a pending, unmasked event;
//! * dispatch (1.6): ports Linux has no IRQ for (port 0, ports marked unbound) are dropped with
//!   PENDING left set; the per-port "is active" flag; the edge chip's ack (clear PENDING
//!   before the handler runs); the late-EOI chip's ack (mask, clear PENDING, stay active until
//!   [`FifoGuest::lateeoi`]);
//! * mask, unmask, pending (1.8): bit operations on the aligned 64-bit word that contains the
//!   event word (bit + 32 for an upper-half word), the unmask loop that never clears MASKED of
//!   a pending event (it asks the hypervisor with `EVTCHNOP_unmask`) and spins while BUSY is
//!   set, retrigger;
//! * CPU offline (1.1 step 6): the handle loop in drop mode ([`FifoGuest::offline`]); resume
//!   (1.1 step 5): [`FifoGuest::resume`].
//!
//! Not modelled: the time-based parts of 1.6 and 1.7 (the event-loop deadline, deferred and
//! delayed EOIs, spurious-EOI back-off), PIRQ EOIs, the IRQ epoch, Linux's reference-counted
//! mask reasons other than "EOI pending" (the [`FifoGuest::mask`] and [`FifoGuest::unmask`]
//! primitives act on the event word directly), and CPU hotplug of control blocks.
//!
//! The model trusts nothing in guest memory: every loop is bounded, and a hypervisor that puts
//! the guest's walk somewhere impossible (a queue head or link beyond the event array, a READY
//! bit above 15, a queue that never ends) makes it panic with a message starting with
//! `FIFO guest model error`: that is the test failure. Invariants of 1.11 that need a quiescent
//! hypervisor are checked by [`FifoGuest::check_invariants`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::fence;

use xen_evtchn_abi::{
    DomId, EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
    EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EventWord, EvtchnPort, TwoLevelLayout,
    evtchn_fifo_head_offset, evtchn_fifo_word_offset_in_page, evtchn_fifo_word_page,
};

use super::InMemoryGuest;
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::guest_memory::{GuestAtomicU8, GuestAtomicU64, GuestPage, PAGE_SIZE};
use crate::host::UpcallSink;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

const QUEUES: usize = EVTCHN_FIFO_MAX_QUEUES as usize;

/// Offset of the control block inside its page: Linux gives each CPU a whole page.
const CONTROL_OFFSET: usize = 0;

/// One VCPU's consumer state.
#[derive(Debug)]
struct VcpuState {
    /// The page holding the control block (at [`CONTROL_OFFSET`]).
    control: GuestPage,
    /// Its frame number, when the guest registered it itself ([`FifoGuest::new`]).
    control_gfn: Option<u64>,
    /// Linux's private per-CPU copy of the queue heads ("local HEAD").
    local_head: [EvtchnPort; QUEUES],
    /// Steps walked along each queue since it was last entered from `HEAD[q]`.
    walked: [u32; QUEUES],
    /// Where the VCPU's `evtchn_upcall_pending` byte is (None: no vcpu_info known to the
    /// model; the upcall then runs the handle loop once).
    upcall_flag: Option<(GuestPage, usize)>,
}

impl VcpuState {
    fn new(control: GuestPage, control_gfn: Option<u64>) -> Self {
        VcpuState {
            control,
            control_gfn,
            local_head: [0; QUEUES],
            walked: [0; QUEUES],
            upcall_flag: None,
        }
    }

    fn ready(&self) -> &AtomicU32 {
        self.control
            .atomic_u32(CONTROL_OFFSET + EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET)
            .expect("READY is inside the control page")
    }

    fn head(&self, q: usize) -> &AtomicU32 {
        let off = evtchn_fifo_head_offset(q as u32).expect("queue number below 16");
        self.control
            .atomic_u32(CONTROL_OFFSET + off)
            .expect("HEAD[q] is inside the control page")
    }

    fn upcall_flag(&self) -> Option<&GuestAtomicU8> {
        self.upcall_flag.as_ref().map(|(page, off)| {
            page.atomic_u8(*off)
                .expect("evtchn_upcall_pending inside its page")
        })
    }
}

/// Where a test expects a port's events to be queued (invariant F1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    vcpu: u32,
    priority: u32,
}

/// One domain's FIFO consumer, as Linux runs it: the guest side of the control blocks and the
/// event array.
///
/// Build it with [`FifoGuest::new`] against a domain whose guest memory is an
/// [`InMemoryGuest`] (it registers the control blocks itself), or with
/// [`FifoGuest::from_pages`] for tests that play the hypervisor by hand.
///
/// Every port except port 0 is treated as bound to an IRQ (Linux has a handler for it) unless
/// [`set_bound`](FifoGuest::set_bound) says otherwise.
#[derive(Debug)]
pub struct FifoGuest {
    domid: DomId,
    /// Where new pages come from (None for [`FifoGuest::from_pages`]).
    memory: Option<Arc<InMemoryGuest>>,
    /// First frame of the model's pages: control blocks at `base_gfn + vcpu`, event array
    /// page `i` at `base_gfn + vcpus + i`.
    base_gfn: u64,
    vcpus: Vec<VcpuState>,
    /// Every page ever given to the event array, kept across [`FifoGuest::resume`] as Linux
    /// keeps them.
    array: Vec<GuestPage>,
    /// Pages the hypervisor has accepted since the last (re-)initialisation (Linux's
    /// `event_array_pages`).
    pages_in_use: u32,
    /// Pages `pages_in_use..masked_ahead` were masked by [`FifoGuest::prepare_port`] and
    /// not added yet.
    masked_ahead: u32,
    /// Ports Linux has no IRQ for (closed, never bound).
    unbound: HashSet<EvtchnPort>,
    /// Ports handled by the late-EOI chip.
    late_eoi: HashSet<EvtchnPort>,
    /// Ports whose "is active" flag is 1.
    active: HashSet<EvtchnPort>,
    /// Ports masked for the reason "EOI pending".
    eoi_masked: HashSet<EvtchnPort>,
    /// Expected (vcpu, queue) of ports, for invariant F1.
    routes: HashMap<EvtchnPort, Route>,
    /// Invariant violations seen while consuming.
    violations: Vec<String>,
    /// Most failed compare-and-swap rounds one unmask needed (invariant F5).
    max_unmask_spins: AtomicU32,
    /// EVTCHNOP_unmask hypercalls issued.
    unmask_hypercalls: AtomicU64,
}

impl FifoGuest {
    /// Longest walk along one queue from its `HEAD` before the model calls it endless
    /// (invariant F2: a chain reaches a word with LINK 0 in at most 2^17 steps).
    pub const MAX_QUEUE_WALK: u32 = EVTCHN_FIFO_NR_CHANNELS;
    /// Most events consumed plus upcall rounds in one [`upcall`](Self::upcall) before the model
    /// decides the hypervisor keeps its queues ready forever.
    pub const MAX_EVENTS_PER_UPCALL: u64 = 1 << 24;
    /// Most failed compare-and-swap rounds on one event word before the model gives up (the
    /// unmask spin on BUSY, the unlink racing with the hypervisor's appends).
    pub const MAX_CAS_ROUNDS: u32 = 1 << 24;

    /// Linux's FIFO set-up for domain `domid` with `vcpus` VCPUs (1.1): for each VCPU, zeroes
    /// the page at frame `base_gfn + vcpu` of `memory`, resets the local heads and registers
    /// the page with `EVTCHNOP_init_control` (offset 0). The event array starts empty; pages
    /// `base_gfn + vcpus + i` are added by [`ensure_port`](Self::ensure_port) as ports are
    /// bound.
    ///
    /// The domain must map its frames through `memory`
    /// ([`DomainConfig::guest_memory`](crate::DomainConfig::guest_memory)). The
    /// `evtchn_upcall_pending` flags are those of the legacy vcpu_info slots in the domain's
    /// shared_info (x86_64 layout); see [`set_vcpu_info`](Self::set_vcpu_info) for others.
    ///
    /// Errors: the first failing `init_control` (Linux falls back to the 2-level ABI when the
    /// boot CPU's fails).
    pub fn new<U: UpcallSink + Clone>(
        ec: &EventChannels<U>,
        memory: &Arc<InMemoryGuest>,
        domid: DomId,
        vcpus: u32,
        base_gfn: u64,
    ) -> Result<Self> {
        let shared_info = ec.shared_info(domid)?;
        let mut states = Vec::with_capacity(vcpus as usize);
        for v in 0..vcpus {
            let gfn = base_gfn + u64::from(v);
            let page = memory.page(gfn);
            zero_page(&page);
            let mut state = VcpuState::new(page, Some(gfn));
            let layout = TwoLevelLayout::X86_64;
            state.upcall_flag = layout
                .vcpu_info_offset(v)
                .map(|off| (shared_info.clone(), off + layout.upcall_pending_offset));
            ec.init_control(domid, gfn, CONTROL_OFFSET as u32, v)?;
            states.push(state);
        }
        Ok(FifoGuest {
            memory: Some(memory.clone()),
            base_gfn,
            vcpus: states,
            ..Self::empty(domid)
        })
    }

    /// A consumer over pages the test provides, for tests that play the hypervisor by hand:
    /// `control_pages[v]` holds VCPU `v`'s control block at offset 0, `array_pages[i]` is event
    /// array page `i` (ports `1024 i .. 1024 i + 1023`). The pages are used as they are (not
    /// zeroed, not filled) and no hypercall is made. No vcpu_info is known: an
    /// [`upcall`](Self::upcall) runs the handle loop once unless
    /// [`set_vcpu_info`](Self::set_vcpu_info) is called. `domid` is only used for the
    /// `EVTCHNOP_unmask` hypercalls of [`unmask`](Self::unmask).
    ///
    /// Panics if more than 128 array pages are given.
    pub fn from_pages(
        domid: DomId,
        control_pages: Vec<GuestPage>,
        array_pages: Vec<GuestPage>,
    ) -> Self {
        assert!(
            array_pages.len() <= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize,
            "at most {EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES} event array pages"
        );
        FifoGuest {
            vcpus: control_pages
                .into_iter()
                .map(|p| VcpuState::new(p, None))
                .collect(),
            pages_in_use: array_pages.len() as u32,
            array: array_pages,
            ..Self::empty(domid)
        }
    }

    fn empty(domid: DomId) -> Self {
        FifoGuest {
            domid,
            memory: None,
            base_gfn: 0,
            vcpus: Vec::new(),
            array: Vec::new(),
            pages_in_use: 0,
            masked_ahead: 0,
            unbound: HashSet::new(),
            late_eoi: HashSet::new(),
            active: HashSet::new(),
            eoi_masked: HashSet::new(),
            routes: HashMap::new(),
            violations: Vec::new(),
            max_unmask_spins: AtomicU32::new(0),
            unmask_hypercalls: AtomicU64::new(0),
        }
    }

    /// Number of VCPUs the consumer serves.
    pub fn vcpus(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// The frame holding VCPU `vcpu`'s control block, if the model registered it itself.
    pub fn control_gfn(&self, vcpu: u32) -> Option<u64> {
        self.vcpus.get(vcpu as usize)?.control_gfn
    }

    /// The frame the model uses (or will use) for event array page `page`, if it allocates its
    /// own pages ([`FifoGuest::new`]).
    pub fn array_gfn(&self, page: u32) -> Option<u64> {
        self.memory.as_ref()?;
        (page < EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES)
            .then(|| self.base_gfn + self.vcpus.len() as u64 + u64::from(page))
    }

    /// Event array pages the hypervisor has accepted (Linux's `event_array_pages`).
    pub fn array_pages(&self) -> u32 {
        self.pages_in_use
    }

    /// Tells the model where VCPU `vcpu`'s `evtchn_upcall_pending` byte is: `offset` in `page`
    /// (after a `VCPUOP_register_vcpu_info`, or for a [`FifoGuest::from_pages`] guest).
    pub fn set_vcpu_info(&mut self, vcpu: u32, page: GuestPage, offset: usize) {
        assert!(
            page.atomic_u8(offset).is_some(),
            "upcall flag offset {offset:#x} outside the page"
        );
        self.vcpu_state_mut(vcpu).upcall_flag = Some((page, offset));
    }

    // ------------------------------------------------------------------------------------
    // Set-up and growth
    // ------------------------------------------------------------------------------------

    /// Linux's `evtchn_fifo_setup` (1.2), run when `port` is bound to an IRQ: adds event array
    /// pages (each filled with words that have only MASKED set) with `EVTCHNOP_expand_array`
    /// until the page holding `port` exists, reusing pages from before a
    /// [`resume`](Self::resume). Also marks the port bound (see [`set_bound`](Self::set_bound)).
    ///
    /// Errors: EINVAL if `port` is beyond the 128 pages the ABI allows; ENOMEM if the model
    /// has no memory to take pages from ([`FifoGuest::from_pages`]); the first failing
    /// `expand_array` (Linux panics if that is the very first page; the model returns it).
    pub fn ensure_port<U: UpcallSink + Clone>(
        &mut self,
        ec: &EventChannels<U>,
        port: EvtchnPort,
    ) -> Result<()> {
        let needed = evtchn_fifo_word_page(port) + 1;
        if needed > EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            return Err(Error::Inval(Reason::PortNotValid(port)));
        }
        while self.pages_in_use < needed {
            let index = self.pages_in_use;
            let (gfn, page) = self.array_page(index)?;
            if index >= self.masked_ahead {
                mask_all(&page);
            }
            ec.expand_array(self.domid, gfn)?;
            self.pages_in_use += 1;
        }
        self.unbound.remove(&port);
        Ok(())
    }

    /// The guest-memory half of [`ensure_port`](Self::ensure_port), for tests that race its
    /// hypercalls: takes the pages up to the one holding `port` and masks their words, without
    /// `EVTCHNOP_expand_array`. The next `ensure_port` adds them without masking them again.
    ///
    /// Errors: as [`ensure_port`](Self::ensure_port), less the hypercall's.
    pub fn prepare_port(&mut self, port: EvtchnPort) -> Result<()> {
        let needed = evtchn_fifo_word_page(port) + 1;
        if needed > EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            return Err(Error::Inval(Reason::PortNotValid(port)));
        }
        for index in self.pages_in_use.max(self.masked_ahead)..needed {
            let (_, page) = self.array_page(index)?;
            mask_all(&page);
            self.masked_ahead = index + 1;
        }
        Ok(())
    }

    /// Event-array page `index` and its frame: the one used before a resume, or a new one
    /// from the guest's memory.
    fn array_page(&mut self, index: u32) -> Result<(u64, GuestPage)> {
        let gfn = self
            .array_gfn(index)
            .ok_or(Error::NoMem(Reason::OutOfMemory))?;
        let page = match self.array.get(index as usize) {
            Some(page) => page.clone(),
            None => {
                let memory = self
                    .memory
                    .as_ref()
                    .ok_or(Error::NoMem(Reason::OutOfMemory))?;
                let page = memory.page(gfn);
                self.array.push(page.clone());
                page
            }
        };
        Ok((gfn, page))
    }

    /// Resume after save/restore (1.1 step 5): every VCPU's control page is zeroed, its local
    /// heads reset and the page registered again with `EVTCHNOP_init_control`; the event array
    /// is empty again and is re-expanded, with the same pages, by the
    /// [`ensure_port`](Self::ensure_port) of each port Linux re-binds. (Every VCPU is treated
    /// as online.)
    ///
    /// Panics for a [`FifoGuest::from_pages`] guest.
    pub fn resume<U: UpcallSink + Clone>(&mut self, ec: &EventChannels<U>) -> Result<()> {
        self.pages_in_use = 0;
        self.masked_ahead = 0;
        for (v, state) in self.vcpus.iter_mut().enumerate() {
            let gfn = state
                .control_gfn
                .expect("resume needs a guest built with FifoGuest::new");
            zero_page(&state.control);
            state.local_head = [0; QUEUES];
            state.walked = [0; QUEUES];
            ec.init_control(self.domid, gfn, CONTROL_OFFSET as u32, v as u32)?;
        }
        Ok(())
    }

    /// Records whether Linux has an IRQ for `port`. Events on a port without one are unlinked
    /// and dropped by the upcall with PENDING left set (1.6 step 1); port 0 never has one.
    /// [`ensure_port`](Self::ensure_port) marks a port bound.
    pub fn set_bound(&mut self, port: EvtchnPort, bound: bool) {
        if bound {
            self.unbound.remove(&port);
        } else {
            self.unbound.insert(port);
        }
    }

    /// Makes `port` use (or stop using) Linux's late-EOI chip: its ack masks it and clears
    /// PENDING, and it stays active and masked until [`lateeoi`](Self::lateeoi).
    pub fn set_late_eoi(&mut self, port: EvtchnPort, late: bool) {
        if late {
            self.late_eoi.insert(port);
        } else {
            self.late_eoi.remove(&port);
        }
    }

    /// Declares that events of `port` must be consumed by VCPU `vcpu` from queue `priority`
    /// (invariant F1); a consumption elsewhere is reported by
    /// [`check_invariants`](Self::check_invariants). Only meaningful while the port's binding
    /// and priority do not change (an event linked before a change may legitimately be
    /// consumed from the old queue once).
    pub fn expect_route(&mut self, port: EvtchnPort, vcpu: u32, priority: u32) {
        self.routes.insert(port, Route { vcpu, priority });
    }

    /// Forgets the expected route of `port`.
    pub fn clear_route(&mut self, port: EvtchnPort) {
        self.routes.remove(&port);
    }

    // ------------------------------------------------------------------------------------
    // Event words
    // ------------------------------------------------------------------------------------

    fn try_word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        let page = evtchn_fifo_word_page(port);
        if page >= self.pages_in_use {
            return None;
        }
        self.array
            .get(page as usize)?
            .atomic_u32(evtchn_fifo_word_offset_in_page(port))
    }

    fn word(&self, port: EvtchnPort) -> &AtomicU32 {
        self.try_word(port).unwrap_or_else(|| {
            panic!(
                "FIFO guest model: port {port} has no event array page ({} pages)",
                self.pages_in_use
            )
        })
    }

    /// The aligned 64-bit word containing `port`'s event word, and the shift of its bit 0 in
    /// it: Linux's bit operations work on `unsigned long`s (1.8).
    fn long_word(&self, port: EvtchnPort) -> (&GuestAtomicU64, u32) {
        let page = evtchn_fifo_word_page(port);
        if page >= self.pages_in_use {
            panic!(
                "FIFO guest model: port {port} has no event array page ({} pages)",
                self.pages_in_use
            );
        }
        let off = evtchn_fifo_word_offset_in_page(port);
        let long = self.array[page as usize]
            .atomic_u64(off & !7)
            .expect("aligned 64-bit word inside the page");
        (long, if off & 4 != 0 { 32 } else { 0 })
    }

    fn test_bit(&self, port: EvtchnPort, bit: u32) -> bool {
        let (w, shift) = self.long_word(port);
        w.load(Ordering::SeqCst) & (1u64 << (bit + shift)) != 0
    }

    fn set_bit(&self, port: EvtchnPort, bit: u32) -> bool {
        let (w, shift) = self.long_word(port);
        let m = 1u64 << (bit + shift);
        w.fetch_or(m, Ordering::SeqCst) & m != 0
    }

    fn clear_bit(&self, port: EvtchnPort, bit: u32) {
        let (w, shift) = self.long_word(port);
        w.fetch_and(!(1u64 << (bit + shift)), Ordering::SeqCst);
    }

    /// `port`'s event word, or `None` if its page is not in the event array.
    pub fn event_word(&self, port: EvtchnPort) -> Option<EventWord> {
        Some(EventWord(self.try_word(port)?.load(Ordering::SeqCst)))
    }

    /// Masks `port`: atomically sets MASKED, no hypercall (1.8).
    ///
    /// Panics if the port's page is not in the event array (as Linux would fault).
    pub fn mask(&self, port: EvtchnPort) {
        self.set_bit(port, EVTCHN_FIFO_MASKED);
    }

    /// Whether MASKED is set.
    pub fn is_masked(&self, port: EvtchnPort) -> bool {
        self.test_bit(port, EVTCHN_FIFO_MASKED)
    }

    /// Whether PENDING is set.
    pub fn is_pending(&self, port: EvtchnPort) -> bool {
        self.test_bit(port, EVTCHN_FIFO_PENDING)
    }

    /// Atomically clears PENDING, no hypercall (1.8).
    pub fn clear_pending(&self, port: EvtchnPort) {
        self.clear_bit(port, EVTCHN_FIFO_PENDING);
    }

    /// Linux's FIFO unmask (1.8, 1.10 step 8): nothing if MASKED is clear; if PENDING is set,
    /// `EVTCHNOP_unmask` (MASKED is left for the hypervisor to clear; its errors are ignored,
    /// as Linux ignores them); otherwise clear MASKED with a compare-and-swap that expects BUSY
    /// clear, i.e. spin while the hypervisor holds BUSY. Returns whether the hypercall was
    /// issued.
    ///
    /// Panics after [`MAX_CAS_ROUNDS`](Self::MAX_CAS_ROUNDS) failed rounds.
    pub fn unmask<U: UpcallSink + Clone>(&self, ec: &EventChannels<U>, port: EvtchnPort) -> bool {
        let w = self.word(port);
        let mut spins = 0u32;
        let mut old = w.load(Ordering::SeqCst);
        loop {
            if old & EventWord::MASKED == 0 {
                break;
            }
            if old & EventWord::PENDING != 0 {
                self.note_spins(spins);
                self.unmask_hypercalls.fetch_add(1, Ordering::Relaxed);
                let _ = ec.unmask(self.domid, port);
                return true;
            }
            let expected = old & !EventWord::BUSY;
            match w.compare_exchange(
                expected,
                expected & !EventWord::MASKED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(seen) => {
                    spins += 1;
                    if spins >= Self::MAX_CAS_ROUNDS {
                        panic!(
                            "FIFO guest model error: unmask of port {port} still failing after \
                             {spins} rounds (word {:?}): BUSY held forever?",
                            EventWord(seen)
                        );
                    }
                    spin_wait(spins);
                    old = seen;
                }
            }
        }
        self.note_spins(spins);
        false
    }

    fn note_spins(&self, spins: u32) {
        self.max_unmask_spins.fetch_max(spins, Ordering::Relaxed);
    }

    /// Linux's retrigger (1.8 `set_pending`): mask if not masked already, set PENDING, then
    /// unmask if it was not masked before, so the unmask asks the hypervisor to link the event.
    /// Returns whether `EVTCHNOP_unmask` was issued.
    pub fn retrigger<U: UpcallSink + Clone>(
        &self,
        ec: &EventChannels<U>,
        port: EvtchnPort,
    ) -> bool {
        let was_masked = self.set_bit(port, EVTCHN_FIFO_MASKED);
        self.set_bit(port, EVTCHN_FIFO_PENDING);
        !was_masked && self.unmask(ec, port)
    }

    /// The late EOI of a late-EOI port (1.7 step 4, without delays): the port stops being
    /// active and, if its ack masked it, is unmasked with [`unmask`](Self::unmask). Returns
    /// whether `EVTCHNOP_unmask` was issued.
    pub fn lateeoi<U: UpcallSink + Clone>(
        &mut self,
        ec: &EventChannels<U>,
        port: EvtchnPort,
    ) -> bool {
        self.active.remove(&port);
        if self.eoi_masked.remove(&port) {
            self.unmask(ec, port)
        } else {
            false
        }
    }

    /// Most failed compare-and-swap rounds (spins on BUSY) any one unmask needed so far
    /// (invariant F5).
    pub fn max_unmask_spins(&self) -> u32 {
        self.max_unmask_spins.load(Ordering::Relaxed)
    }

    /// Number of `EVTCHNOP_unmask` hypercalls the model has issued.
    pub fn unmask_hypercalls(&self) -> u64 {
        self.unmask_hypercalls.load(Ordering::Relaxed)
    }

    // ------------------------------------------------------------------------------------
    // Control block
    // ------------------------------------------------------------------------------------

    fn vcpu_state(&self, vcpu: u32) -> &VcpuState {
        self.vcpus
            .get(vcpu as usize)
            .unwrap_or_else(|| panic!("FIFO guest model: no vcpu {vcpu}"))
    }

    fn vcpu_state_mut(&mut self, vcpu: u32) -> &mut VcpuState {
        self.vcpus
            .get_mut(vcpu as usize)
            .unwrap_or_else(|| panic!("FIFO guest model: no vcpu {vcpu}"))
    }

    /// VCPU `vcpu`'s READY word as it is in guest memory.
    pub fn ready(&self, vcpu: u32) -> u32 {
        self.vcpu_state(vcpu).ready().load(Ordering::SeqCst)
    }

    /// VCPU `vcpu`'s `HEAD[queue]` as it is in guest memory (Linux never writes it).
    pub fn head(&self, vcpu: u32, queue: u32) -> EvtchnPort {
        assert!(queue < EVTCHN_FIFO_MAX_QUEUES, "queue {queue} out of range");
        self.vcpu_state(vcpu)
            .head(queue as usize)
            .load(Ordering::SeqCst)
    }

    /// The guest's private head of VCPU `vcpu`'s queue `queue` (0: re-read `HEAD` next time).
    pub fn local_head(&self, vcpu: u32, queue: u32) -> EvtchnPort {
        self.vcpu_state(vcpu).local_head[queue as usize]
    }

    /// Whether VCPU `vcpu`'s `evtchn_upcall_pending` is set (false if the model knows no
    /// vcpu_info for it).
    pub fn upcall_pending(&self, vcpu: u32) -> bool {
        self.vcpu_state(vcpu)
            .upcall_flag()
            .is_some_and(|f| f.load(Ordering::SeqCst) != 0)
    }

    // ------------------------------------------------------------------------------------
    // Upcall
    // ------------------------------------------------------------------------------------

    /// Runs VCPU `vcpu`'s event upcall (1.3 to 1.6) and returns the ports whose handler ran, in
    /// order: while `evtchn_upcall_pending` is set again after a round, clear it and run the
    /// handle loop. A dispatched port's PENDING is cleared before its handler "runs".
    ///
    /// Panics (`FIFO guest model error ...`) if the hypervisor's state makes the walk
    /// impossible or endless.
    pub fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        let mut out = Vec::new();
        let mut budget = Self::MAX_EVENTS_PER_UPCALL;
        let flag = self.vcpu_state(vcpu).upcall_flag.clone();
        match flag {
            Some((page, off)) => {
                let flag = page.atomic_u8(off).expect("upcall flag inside its page");
                loop {
                    flag.store(0, Ordering::SeqCst);
                    self.handle(vcpu, false, &mut out, &mut budget);
                    // Linux's read barrier before looking at the flag again.
                    fence(Ordering::SeqCst);
                    if flag.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    take_budget(&mut budget, vcpu);
                }
            }
            None => self.handle(vcpu, false, &mut out, &mut budget),
        }
        out
    }

    /// Runs the handle loop of VCPU `vcpu` once, without looking at `evtchn_upcall_pending`
    /// (which is left as it is), and returns the ports whose handler ran.
    pub fn handle_events(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        let mut out = Vec::new();
        let mut budget = Self::MAX_EVENTS_PER_UPCALL;
        self.handle(vcpu, false, &mut out, &mut budget);
        out
    }

    /// Runs [`upcall`](Self::upcall) on every VCPU until a whole pass handles nothing; returns
    /// the handled ports with the VCPU that handled them, in order. Bounded by 64 passes.
    pub fn drain(&mut self) -> Vec<(u32, EvtchnPort)> {
        let mut out = Vec::new();
        for _ in 0..64 {
            let before = out.len();
            for v in 0..self.vcpus() {
                out.extend(self.upcall(v).into_iter().map(|p| (v, p)));
            }
            if out.len() == before {
                return out;
            }
        }
        panic!("FIFO guest model error: events still arriving after 64 passes over every vcpu")
    }

    /// CPU offline (1.1 step 6): runs VCPU `vcpu`'s handle loop in drop mode, which unlinks
    /// every queued event and dispatches none. Returns the ports Linux warns about (pending
    /// and unmasked when unlinked); their PENDING stays set.
    pub fn offline(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        let mut out = Vec::new();
        let mut budget = Self::MAX_EVENTS_PER_UPCALL;
        self.handle(vcpu, true, &mut out, &mut budget);
        out
    }

    /// The handle-events loop (1.4).
    fn handle(&mut self, vcpu: u32, drop: bool, out: &mut Vec<EvtchnPort>, budget: &mut u64) {
        let mut ready = self.claim_ready(vcpu);
        while ready != 0 {
            take_budget(budget, vcpu);
            let q = ready.trailing_zeros() as usize;
            self.consume_one(vcpu, q, &mut ready, drop, out);
            ready |= self.claim_ready(vcpu);
        }
    }

    /// Exchanges READY with 0; bits above 15 are a hypervisor bug.
    fn claim_ready(&self, vcpu: u32) -> u32 {
        let r = self.vcpu_state(vcpu).ready().swap(0, Ordering::SeqCst);
        if r >> EVTCHN_FIFO_MAX_QUEUES != 0 {
            panic!(
                "FIFO guest model error: vcpu {vcpu} READY is {r:#x}: no queue above {}",
                EVTCHN_FIFO_MAX_QUEUES - 1
            );
        }
        r
    }

    /// Consumes one event from queue `q` of `vcpu` (1.5).
    fn consume_one(
        &mut self,
        vcpu: u32,
        q: usize,
        ready: &mut u32,
        drop: bool,
        out: &mut Vec<EvtchnPort>,
    ) {
        let state = self.vcpu_state(vcpu);
        let mut head = state.local_head[q];
        let from_control = head == 0;
        if from_control {
            // Linux's read barrier: HEAD is read after the READY exchange and the previous
            // event word.
            fence(Ordering::SeqCst);
            head = state.head(q).load(Ordering::SeqCst);
        }
        let port = head;
        let Some(word) = self.try_word(port) else {
            panic!(
                "FIFO guest model error: vcpu {vcpu} queue {q} leads to port {port} ({}), \
                 beyond the event array ({} pages)",
                if from_control { "HEAD" } else { "LINK" },
                self.pages_in_use
            );
        };
        let next = clear_linked(word, port);
        {
            let state = self.vcpu_state_mut(vcpu);
            state.walked[q] = if from_control { 1 } else { state.walked[q] + 1 };
            if state.walked[q] > Self::MAX_QUEUE_WALK {
                panic!(
                    "FIFO guest model error: vcpu {vcpu} queue {q} longer than {} events \
                     without an end (LINK cycle?)",
                    Self::MAX_QUEUE_WALK
                );
            }
        }
        if next == 0 {
            *ready &= !(1 << q);
        }
        if let Some(route) = self.routes.get(&port) {
            if (route.vcpu, route.priority) != (vcpu, q as u32) {
                self.violations.push(format!(
                    "F1: port {port} consumed by vcpu {vcpu} from queue {q}, expected vcpu {} \
                     queue {}",
                    route.vcpu, route.priority
                ));
            }
        }
        if self.is_pending(port) && !self.is_masked(port) {
            if drop {
                out.push(port);
            } else {
                self.dispatch(port, out);
            }
        }
        self.vcpu_state_mut(vcpu).local_head[q] = next;
    }

    /// Dispatch of one port (1.6), handlers reduced to "record the port".
    fn dispatch(&mut self, port: EvtchnPort, out: &mut Vec<EvtchnPort>) {
        if port == 0 || self.unbound.contains(&port) {
            // No IRQ: the event is lost, PENDING stays set.
            return;
        }
        if !self.active.insert(port) {
            // Already being handled (a late-EOI port before its EOI).
            return;
        }
        if self.late_eoi.contains(&port) {
            // Ack of the late-EOI chip: mask for "EOI pending", clear PENDING, stay active.
            if self.eoi_masked.insert(port) {
                self.mask(port);
            }
            self.clear_pending(port);
        } else {
            // Ack of the edge chip: no longer active, then clear PENDING.
            self.active.remove(&port);
            self.clear_pending(port);
        }
        out.push(port);
    }

    // ------------------------------------------------------------------------------------
    // Invariants
    // ------------------------------------------------------------------------------------

    /// Checks the invariants of 1.11 that can be seen in guest memory, plus the F1 violations
    /// recorded while consuming. Call it while the hypervisor is quiescent (no operation in
    /// flight), typically after [`upcall`](Self::upcall) or [`drain`](Self::drain):
    ///
    /// * F1: every event was consumed from the queue [`expect_route`](Self::expect_route)
    ///   named;
    /// * F2: each queue the guest will walk (from its local head, or from `HEAD` when its
    ///   READY bit is set) stays inside the event array, has LINKED set on every word, has no
    ///   cycle and ends within 2^17 steps;
    /// * every LINKED word is on exactly one such queue (no event linked where the guest will
    ///   never look);
    /// * a VCPU with READY bits set has `evtchn_upcall_pending` set (when the model knows its
    ///   vcpu_info);
    /// * F3: no bound port is pending, unmasked and unlinked (an event nobody will deliver).
    ///
    /// Returns every violation found, one per line.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut errors = self.violations.clone();
        let nr_ports = self.pages_in_use * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
        let mut queued: HashMap<EvtchnPort, (u32, usize)> = HashMap::new();
        for (v, state) in self.vcpus.iter().enumerate() {
            let ready = state.ready().load(Ordering::SeqCst);
            if ready >> EVTCHN_FIFO_MAX_QUEUES != 0 {
                errors.push(format!("vcpu {v}: READY {ready:#x} has bits above 15"));
            }
            if ready != 0
                && state
                    .upcall_flag()
                    .is_some_and(|f| f.load(Ordering::SeqCst) == 0)
            {
                errors.push(format!(
                    "vcpu {v}: READY {ready:#x} but evtchn_upcall_pending clear"
                ));
            }
            for q in 0..QUEUES {
                let start = match state.local_head[q] {
                    0 if ready & (1 << q) != 0 => state.head(q).load(Ordering::SeqCst),
                    0 => continue,
                    lh => lh,
                };
                let mut port = start;
                let mut steps = 0u32;
                loop {
                    if port >= nr_ports {
                        errors.push(format!(
                            "F2: vcpu {v} queue {q} reaches port {port}, beyond the event array"
                        ));
                        break;
                    }
                    if let Some(&(pv, pq)) = queued.get(&port) {
                        errors.push(format!(
                            "F2: vcpu {v} queue {q} reaches port {port} again (already on \
                             vcpu {pv} queue {pq}): cycle or shared tail"
                        ));
                        break;
                    }
                    queued.insert(port, (v as u32, q));
                    let w = EventWord(self.word(port).load(Ordering::SeqCst));
                    if !w.is_linked() {
                        errors.push(format!(
                            "F2: vcpu {v} queue {q} reaches port {port}, which is not LINKED \
                             ({w:?})"
                        ));
                    }
                    steps += 1;
                    if w.link() == 0 {
                        break;
                    }
                    if steps >= Self::MAX_QUEUE_WALK {
                        errors.push(format!("F2: vcpu {v} queue {q} does not end"));
                        break;
                    }
                    port = w.link();
                }
            }
        }
        for port in 0..nr_ports {
            let w = EventWord(self.word(port).load(Ordering::SeqCst));
            if w.is_linked() && !queued.contains_key(&port) {
                errors.push(format!(
                    "port {port} is LINKED but on no queue the guest will walk ({w:?})"
                ));
            }
            let bound = port != 0 && !self.unbound.contains(&port);
            if bound && w.is_pending() && !w.is_masked() && !w.is_linked() {
                errors.push(format!(
                    "F3: port {port} is pending, unmasked and unlinked: nobody will deliver it"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Clears LINKED and LINK of `word` with a compare-and-swap loop and returns the LINK it
/// replaced (1.5 step 4).
fn clear_linked(word: &AtomicU32, port: EvtchnPort) -> EvtchnPort {
    let mut old = word.load(Ordering::SeqCst);
    let mut rounds = 0u32;
    loop {
        let new = old & !(EventWord::LINKED | EventWord::LINK_MASK);
        match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return EventWord(old).link(),
            Err(seen) => {
                rounds += 1;
                if rounds >= FifoGuest::MAX_CAS_ROUNDS {
                    panic!(
                        "FIFO guest model error: unlinking port {port} still racing after \
                         {rounds} rounds (word {:?})",
                        EventWord(seen)
                    );
                }
                spin_wait(rounds);
                old = seen;
            }
        }
    }
}

fn take_budget(budget: &mut u64, vcpu: u32) {
    *budget = budget.checked_sub(1).unwrap_or_else(|| {
        panic!(
            "FIFO guest model error: vcpu {vcpu} upcall ran more than {} events or rounds: the \
             hypervisor keeps making queues ready",
            FifoGuest::MAX_EVENTS_PER_UPCALL
        )
    });
}

/// Backs off in a compare-and-swap retry loop, letting a hypervisor thread that holds BUSY run.
fn spin_wait(rounds: u32) {
    if rounds % 64 == 0 {
        crate::sync::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Linux's `init_array_page`: every event word of a new page has only MASKED set.
fn mask_all(page: &GuestPage) {
    for i in 0..EVTCHN_FIFO_EVENT_WORDS_PER_PAGE {
        page.atomic_u32(i as usize * 4)
            .expect("event word inside its page")
            .store(EventWord::MASKED, Ordering::SeqCst);
    }
}

fn zero_page(page: &GuestPage) {
    for off in (0..PAGE_SIZE).step_by(8) {
        page.atomic_u64(off)
            .expect("aligned word inside the page")
            .store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainConfig;

    const P: u32 = EventWord::PENDING;
    const M: u32 = EventWord::MASKED;
    const L: u32 = EventWord::LINKED;
    const B: u32 = EventWord::BUSY;

    /// A guest with `vcpus` control pages and `pages` array pages, and the pages, to play the
    /// hypervisor by hand.
    struct Hand {
        guest: FifoGuest,
        control: Vec<GuestPage>,
        array: Vec<GuestPage>,
    }

    impl Hand {
        fn new(vcpus: usize, pages: usize) -> Self {
            let control: Vec<_> = (0..vcpus).map(|_| GuestPage::new_zeroed()).collect();
            let array: Vec<_> = (0..pages).map(|_| GuestPage::new_zeroed()).collect();
            Hand {
                guest: FifoGuest::from_pages(1, control.clone(), array.clone()),
                control,
                array,
            }
        }

        fn word(&self, port: u32) -> &AtomicU32 {
            self.array[evtchn_fifo_word_page(port) as usize]
                .atomic_u32(evtchn_fifo_word_offset_in_page(port))
                .expect("word")
        }

        fn set(&self, port: u32, raw: u32) {
            self.word(port).store(raw, Ordering::SeqCst);
        }

        fn get(&self, port: u32) -> u32 {
            self.word(port).load(Ordering::SeqCst)
        }

        fn ready(&self, vcpu: usize) -> &AtomicU32 {
            self.control[vcpu].atomic_u32(0).expect("ready")
        }

        fn set_head(&self, vcpu: usize, q: u32, port: u32) {
            self.control[vcpu]
                .atomic_u32(evtchn_fifo_head_offset(q).expect("q"))
                .expect("head")
                .store(port, Ordering::SeqCst);
        }

        /// What Xen does for a queue made of `ports` (each with `flags` plus LINKED and the link
        /// to the next): HEAD, the words, then READY.
        fn queue(&self, vcpu: usize, q: u32, ports: &[(u32, u32)]) {
            for (i, &(port, flags)) in ports.iter().enumerate() {
                let next = ports.get(i + 1).map_or(0, |&(p, _)| p);
                self.set(port, flags | L | next);
            }
            self.set_head(vcpu, q, ports[0].0);
            self.ready(vcpu).fetch_or(1 << q, Ordering::SeqCst);
        }
    }

    fn two_level_ec() -> EventChannels {
        let ec = EventChannels::new();
        ec.create_domain(1, DomainConfig::new(2, |_, _| {}))
            .expect("domain 1");
        ec
    }

    #[test]
    fn fifo_order_within_a_queue_and_words_unlinked() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(5, P), (9, P), (3, P)]);
        assert_eq!(h.guest.upcall(0), vec![5, 9, 3]);
        for port in [5, 9, 3] {
            assert_eq!(
                h.get(port),
                0,
                "port {port}: PENDING, LINKED and LINK cleared"
            );
        }
        assert_eq!(h.guest.ready(0), 0);
        assert_eq!(h.guest.local_head(0, 7), 0);
        // The guest never writes HEAD.
        assert_eq!(h.guest.head(0, 7), 5);
        assert_eq!(h.guest.check_invariants(), Ok(()));
        assert!(h.guest.upcall(0).is_empty());
    }

    #[test]
    fn highest_priority_first() {
        let mut h = Hand::new(1, 2);
        h.queue(0, 7, &[(10, P), (11, P)]);
        h.queue(0, 15, &[(1030, P)]);
        h.queue(0, 0, &[(20, P), (21, P)]);
        h.queue(0, 3, &[(2, P)]);
        assert_eq!(h.guest.upcall(0), vec![20, 21, 2, 10, 11, 1030]);
        assert_eq!(h.guest.check_invariants(), Ok(()));
    }

    #[test]
    fn masked_pending_event_is_unlinked_but_stays_pending() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(4, P | M), (6, P)]);
        assert_eq!(h.guest.upcall(0), vec![6]);
        assert_eq!(h.get(4), P | M, "PENDING kept, LINKED and LINK cleared");
        assert!(h.guest.is_pending(4) && h.guest.is_masked(4));
        assert_eq!(h.get(6), 0);
        assert_eq!(h.guest.check_invariants(), Ok(()));
    }

    #[test]
    fn not_pending_event_is_dropped_from_the_queue() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(4, 0), (6, P)]);
        assert_eq!(h.guest.upcall(0), vec![6]);
        assert_eq!(h.get(4), 0);
    }

    #[test]
    fn ready_queue_with_head_zero_consumes_port_zero_only() {
        let mut h = Hand::new(1, 1);
        h.ready(0).store(1 << 3, Ordering::SeqCst);
        assert!(h.guest.upcall(0).is_empty());
        assert_eq!(h.guest.ready(0), 0);
        // Even a pending, linked word 0 is never dispatched (port 0 has no IRQ), but it is
        // unlinked.
        h.set(0, P | L);
        h.ready(0).store(1 << 3, Ordering::SeqCst);
        assert!(h.guest.upcall(0).is_empty());
        assert_eq!(h.get(0), P);
        assert_eq!(h.guest.local_head(0, 3), 0);
    }

    #[test]
    fn local_head_zero_rereads_head_for_the_next_batch() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(5, P)]);
        assert_eq!(h.guest.upcall(0), vec![5]);
        // Xen found the tail unlinked: the next event becomes a new HEAD with READY.
        h.queue(0, 7, &[(8, P), (5, P)]);
        assert_eq!(h.guest.upcall(0), vec![8, 5]);
        assert_eq!(h.guest.check_invariants(), Ok(()));
    }

    #[test]
    fn link_cycle_in_guest_memory_terminates() {
        let mut h = Hand::new(1, 1);
        // 5 -> 9 -> 5 -> ...
        h.set(5, P | L | 9);
        h.set(9, P | L | 5);
        h.set_head(0, 7, 5);
        h.ready(0).store(1 << 7, Ordering::SeqCst);
        assert!(
            h.guest
                .check_invariants()
                .is_err_and(|e| e.contains("again"))
        );
        // The unlink zeroes LINK as it goes, so the walk ends when it comes back to 5.
        assert_eq!(h.guest.upcall(0), vec![5, 9]);
        assert_eq!((h.get(5), h.get(9)), (0, 0));
        // A word linked to itself.
        h.set(12, P | L | 12);
        h.set_head(0, 2, 12);
        h.ready(0).store(1 << 2, Ordering::SeqCst);
        assert_eq!(h.guest.upcall(0), vec![12]);
        assert_eq!(h.guest.check_invariants(), Ok(()));
    }

    #[test]
    #[should_panic(expected = "FIFO guest model error")]
    fn head_beyond_the_array_is_a_model_error() {
        let mut h = Hand::new(1, 1);
        h.set_head(0, 7, 5000);
        h.ready(0).store(1 << 7, Ordering::SeqCst);
        h.guest.upcall(0);
    }

    #[test]
    #[should_panic(expected = "FIFO guest model error")]
    fn link_beyond_the_array_is_a_model_error() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(5, P)]);
        h.set(5, P | L | 1500);
        h.guest.upcall(0);
    }

    #[test]
    #[should_panic(expected = "FIFO guest model error")]
    fn ready_bit_above_15_is_a_model_error() {
        let mut h = Hand::new(1, 1);
        h.ready(0).store(1 << 16, Ordering::SeqCst);
        h.guest.upcall(0);
    }

    #[test]
    fn each_vcpu_consumes_its_own_queues() {
        let mut h = Hand::new(2, 1);
        h.queue(0, 7, &[(3, P)]);
        h.queue(1, 7, &[(4, P)]);
        assert_eq!(h.guest.upcall(1), vec![4]);
        assert_eq!(h.get(3), P | L);
        assert_eq!(h.guest.drain(), vec![(0, 3)]);
    }

    #[test]
    fn upcall_clears_the_upcall_flag() {
        let mut h = Hand::new(1, 1);
        let info = GuestPage::new_zeroed();
        h.guest.set_vcpu_info(0, info.clone(), 0);
        h.queue(0, 7, &[(3, P)]);
        info.atomic_u8(0).expect("flag").store(1, Ordering::SeqCst);
        assert!(h.guest.upcall_pending(0));
        assert_eq!(h.guest.check_invariants(), Ok(()));
        assert_eq!(h.guest.upcall(0), vec![3]);
        assert!(!h.guest.upcall_pending(0));
        // READY without the flag: Xen forgot the upcall.
        h.queue(0, 7, &[(3, P)]);
        assert!(
            h.guest
                .check_invariants()
                .is_err_and(|e| e.contains("upcall"))
        );
    }

    #[test]
    fn unbound_port_is_unlinked_and_left_pending() {
        let mut h = Hand::new(1, 1);
        h.guest.set_bound(5, false);
        h.queue(0, 7, &[(5, P), (6, P)]);
        assert_eq!(h.guest.upcall(0), vec![6]);
        assert_eq!(h.get(5), P);
        assert_eq!(h.guest.check_invariants(), Ok(()));
        h.guest.set_bound(5, true);
        assert!(h.guest.check_invariants().is_err_and(|e| e.contains("F3")));
    }

    #[test]
    fn offline_unlinks_everything_and_dispatches_nothing() {
        let mut h = Hand::new(1, 1);
        h.queue(0, 7, &[(4, P), (5, P | M), (6, 0)]);
        h.queue(0, 1, &[(7, P)]);
        assert_eq!(h.guest.offline(0), vec![7, 4]);
        assert_eq!((h.get(4), h.get(5), h.get(6), h.get(7)), (P, P | M, 0, P));
    }

    #[test]
    fn bit_operations_use_the_containing_64_bit_word() {
        let h = Hand::new(1, 1);
        h.set(2, 0x1234);
        h.set(3, P | 0x55);
        h.guest.mask(3);
        h.guest.mask(2);
        assert_eq!((h.get(2), h.get(3)), (M | 0x1234, P | M | 0x55));
        assert!(h.guest.is_pending(3) && !h.guest.is_pending(2));
        h.guest.clear_pending(3);
        assert_eq!((h.get(2), h.get(3)), (M | 0x1234, M | 0x55));
        assert!(h.guest.is_masked(2) && h.guest.is_masked(3));
        assert_eq!(h.guest.event_word(3), Some(EventWord(M | 0x55)));
        assert_eq!(h.guest.event_word(1024), None);
    }

    #[test]
    fn unmask_clears_locally_unless_pending() {
        let ec = two_level_ec();
        let h = Hand::new(1, 1);
        // Not masked: nothing to do.
        h.set(3, 0);
        assert!(!h.guest.unmask(&ec, 3));
        // Masked, not pending: local clear, no hypercall.
        h.set(3, M | L | 9);
        assert!(!h.guest.unmask(&ec, 3));
        assert_eq!(h.get(3), L | 9);
        // Masked and pending: hypercall, MASKED left for the hypervisor.
        h.set(4, P | M);
        assert!(h.guest.unmask(&ec, 4));
        assert_eq!(h.get(4), P | M);
        assert_eq!(h.guest.unmask_hypercalls(), 1);
        assert_eq!(h.guest.max_unmask_spins(), 0);
    }

    #[test]
    fn unmask_spins_while_busy() {
        let ec = two_level_ec();
        let h = Hand::new(1, 1);
        h.set(3, M | B | L);
        let page = h.array[0].clone();
        let xen = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            page.atomic_u32(12)
                .expect("word 3")
                .fetch_and(!B, Ordering::SeqCst);
        });
        assert!(!h.guest.unmask(&ec, 3));
        xen.join().expect("hypervisor thread");
        assert_eq!(h.get(3), L);
        assert!(h.guest.max_unmask_spins() > 0);
    }

    #[test]
    fn retrigger_sets_pending_and_asks_the_hypervisor() {
        let ec = two_level_ec();
        let h = Hand::new(1, 1);
        assert!(h.guest.retrigger(&ec, 3));
        assert_eq!(h.get(3), P | M);
        // Already masked: stays masked, no hypercall.
        h.set(4, M);
        assert!(!h.guest.retrigger(&ec, 4));
        assert_eq!(h.get(4), P | M);
    }

    #[test]
    fn late_eoi_port_stays_masked_until_eoi() {
        let ec = two_level_ec();
        let mut h = Hand::new(1, 1);
        h.guest.set_late_eoi(5, true);
        h.queue(0, 7, &[(5, P)]);
        assert_eq!(h.guest.upcall(0), vec![5]);
        assert_eq!(h.get(5), M, "acked: masked, not pending");
        // A send while masked: Xen sets PENDING only.
        h.set(5, P | M);
        assert!(h.guest.lateeoi(&ec, 5), "pending at EOI: EVTCHNOP_unmask");
        // The hypervisor would now unmask and link it; a second EOI does nothing.
        assert!(!h.guest.lateeoi(&ec, 5));
        // Delivered again after the hypervisor's unmask.
        h.queue(0, 7, &[(5, P)]);
        assert_eq!(h.guest.upcall(0), vec![5]);
        h.set(5, M);
        assert!(!h.guest.lateeoi(&ec, 5), "nothing pending: local unmask");
        assert_eq!(h.get(5), 0);
    }

    #[test]
    fn wrong_queue_is_reported_as_f1() {
        let mut h = Hand::new(2, 1);
        h.guest.expect_route(5, 0, 7);
        h.guest.expect_route(6, 0, 7);
        h.queue(0, 7, &[(6, P)]);
        h.queue(1, 3, &[(5, P)]);
        assert_eq!(h.guest.drain(), vec![(0, 6), (1, 5)]);
        let e = h.guest.check_invariants().expect_err("F1");
        assert!(e.contains("F1: port 5") && !e.contains("port 6"), "{e}");
    }

    #[test]
    fn linked_word_on_no_queue_is_reported() {
        let h = Hand::new(1, 1);
        h.set(9, P | L);
        let e = h.guest.check_invariants().expect_err("stray LINKED");
        assert!(e.contains("port 9 is LINKED"), "{e}");
    }

    #[test]
    fn ensure_port_without_memory_or_beyond_the_abi() {
        let ec = two_level_ec();
        let mut h = Hand::new(1, 1);
        assert_eq!(h.guest.ensure_port(&ec, 1023), Ok(()));
        assert_eq!(
            h.guest.ensure_port(&ec, 1024),
            Err(Error::NoMem(Reason::OutOfMemory))
        );
        assert_eq!(
            h.guest.ensure_port(&ec, EVTCHN_FIFO_NR_CHANNELS),
            Err(Error::Inval(Reason::PortNotValid(EVTCHN_FIFO_NR_CHANNELS)))
        );
    }

    /// Against the real backend: Linux's whole path from set-up to delivery. Until the FIFO
    /// backend lands, `init_control` answers EOPNOTSUPP and only that is checked.
    #[test]
    fn against_the_hypervisor_backend() {
        let memory = Arc::new(InMemoryGuest::new());
        let ec = EventChannels::new();
        ec.create_domain(0, DomainConfig::new(1, |_, _| {}).privileged(true))
            .expect("dom0");
        ec.create_domain(
            1,
            DomainConfig::new(2, |_, _| {}).guest_memory(memory.clone()),
        )
        .expect("dom1");
        let mut guest = FifoGuest::new(&ec, &memory, 1, 2, 0x1000).expect("init_control");
        assert_eq!(guest.control_gfn(1), Some(0x1001));
        assert_eq!(guest.array_gfn(0), Some(0x1002));
        assert_eq!(guest.array_pages(), 0);
        let port = ec.alloc_unbound(1, 1, 0).expect("alloc_unbound");
        let remote = ec.bind_interdomain(0, 1, port).expect("bind_interdomain");
        guest.ensure_port(&ec, port).expect("expand_array");
        assert_eq!(guest.array_pages(), 1);
        assert!(guest.is_masked(port));
        assert!(!guest.unmask(&ec, port));
        ec.send(0, remote).expect("send");
        assert!(guest.upcall_pending(0));
        assert_eq!(guest.upcall(0), vec![port]);
        assert!(!guest.is_pending(port));
        guest.check_invariants().expect("invariants");
    }
}
