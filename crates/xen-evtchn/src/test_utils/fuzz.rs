//! The fuzz driver shared by the cargo-fuzz target (`fuzz/fuzz_targets/hypercalls.rs`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! [`run_hypercalls`] reads its input as a program of at most [`MAX_ACTIONS`] actions over one
//! [`EventChannels`] with three domains made from fixed configurations:
//!
//! | id | VCPUs | `max_evtchn_port` | PIRQs | layout | role |
//! |---|---|---|---|---|---|
//! | 0 | 2 | 70 (two buckets) | 2 | x86_64 | privileged, hardware domain |
//! | 1 | 3 | 40 | 4 | x86_32 | guest |
//! | 7 | 2 | 8 | 1 | Arm (VCPU 1 has no legacy vcpu_info) | device model of domain 1 |
//!
//! Domain id 2 never exists. Each domain has its own [`InMemoryGuest`] with frames
//! `0x100..=0x103` present and `0x104` absent; upcalls go to one [`UpcallRecorder`]; PIRQs go
//! through a recording [`PirqHost`] that refuses PIRQ 3.
//!
//! Actions: raw `hypercall(caller, vcpu, cmd, args)` with well-formed argument structs (fields
//! drawn from small ranges, ports biased to collide, FIFO frames and offsets from the pools
//! above) or raw bytes of any length and any command; host-side raises (`raise_virq`,
//! `raise_global_virq`, `raise_port`, `raise_pirq`); guest writes to any 32-bit word of a
//! domain's shared_info or of a guest frame (vcpu_info, bitmaps, FIFO control blocks and event
//! words); a Linux-like consumption of a FIFO queue; frame removal and re-creation; `set_paused`; `set_global_virq_handler`;
//! `register_vcpu_info`; domain destruction and re-creation; queries.
//!
//! After every action the driver checks, against a shadow model of every port's binding and
//! notify VCPU, every domain's pause state, every global VIRQ handler, and each domain's FIFO
//! control blocks and event-array pages:
//!
//! * a hypercall returns 0 or the negation of an [`Errno`] Xen defines, never the Xen-internal
//!   EINTR or ERESTART; an unknown command gives ENOSYS, a short buffer EFAULT; a failed call
//!   and a command without OUT fields leave the guest buffer untouched, and bytes past the
//!   struct are never written;
//! * an operation succeeds only if the model allows it (the caller exists and may act on the
//!   target, a bound port was offered to the binder, a VIRQ or PIRQ is not bound twice, a
//!   reset of another domain only while paused, ...), and where the model is certain (closing a
//!   bound port, sending on an IPI, a 2-level allocation with a free port, ...) it succeeds;
//! * `EVTCHNOP_status` and a sweep of every port of every domain agree with the model: free
//!   ports are closed with VCPU 0, bound ports have their binding and notify VCPU, interdomain
//!   peers point back to each other, valid ports are a prefix of whole buckets that never
//!   shrinks and never exceeds `max_evtchn_port`'s bucket;
//! * 2-level allocations take the lowest free port; a send, raise or interdomain bind leaves
//!   the target pending (under FIFO: when the port has an event word, its notify VCPU a control
//!   block, and no event-array page is aliased); a closed port is not pending; a 2-level
//!   unmask of a bound port leaves it unmasked; `is_pending` and `is_masked` read the 2-level
//!   bitmaps or the FIFO event word; `init_control` and `expand_array` succeed exactly when
//!   Xen's checks pass, `init_control` returns 17 LINK bits and switches to FIFO, a reset goes
//!   back to 2-level; FIFO never drops an event for a queue change (there is no concurrency);
//! * upcalls go only to existing (domain, VCPU) pairs, at most one per VCPU per action, and
//!   only on the 0 → 1 edge of `evtchn_upcall_pending` (the flag was clear before and is set
//!   after, wherever the vcpu_info does not share a page with FIFO structures);
//! * the [`PirqHost`] sees balanced bind and unbind calls matching the model's PIRQ ports.
//!
//! Panics (the library's or a failed check) are the fuzzer's findings. Setting the environment
//! variable `XEN_EVTCHN_FUZZ_TRACE` prints every action and its result to stderr.
//!
//! # Input format: hand-rolled, not `arbitrary`
//!
//! The input is read byte by byte (a tag byte selects the action, then a few bytes its
//! arguments; an exhausted input reads as zeros and ends the program at the next action).
//! Reasons: the seed corpus is committed and replayed by `cargo test`, so its meaning must not
//! change with a dependency's encoding (the `arbitrary` crate changed how it encodes lengths
//! and collections between 1.x releases); the byte-to-value mappings are chosen for this
//! state machine (ports that collide, frames and offsets from small pools) rather than
//! uniform; the replay test feeds plain pseudo-random bytes and gets meaningful programs; and
//! the `test-utils` feature adds no dependency.

// Xen's command names are matched as written in its headers.
#![allow(non_upper_case_globals)]

use std::collections::HashSet;
use std::mem::size_of;

use xen_evtchn_abi::{
    DOMID_FIRST_RESERVED, DOMID_INVALID, DOMID_SELF, DomId, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
    EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_MIN,
    EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi, EVTCHNOP_bind_pirq,
    EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_expand_array,
    EVTCHNOP_init_control, EVTCHNOP_reset, EVTCHNOP_reset_cont, EVTCHNOP_send,
    EVTCHNOP_set_priority, EVTCHNOP_status, EVTCHNOP_unmask, EVTCHNSTAT_closed,
    EVTCHNSTAT_interdomain, EVTCHNSTAT_ipi, EVTCHNSTAT_pirq, EVTCHNSTAT_unbound, EVTCHNSTAT_virq,
    Errno, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq,
    EvtchnBindVcpu, EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOpArg,
    EvtchnPort, EvtchnReset, EvtchnSend, EvtchnSetPriority, EvtchnStatus, EvtchnUnmask, NR_VIRQS,
    TwoLevelLayout, VirqKind, evtchn_fifo_control_block_offset_is_valid, evtchnop_arg_size,
    virq_kind,
};

use super::{InMemoryGuest, UpcallRecorder};
use crate::error::Result;
use crate::guest_memory::{GuestPage, PAGE_SIZE};
use crate::host::{GuestMemory, PirqHost};
use crate::ops::{PortStatus, Status};
use crate::sync::{Arc, AtomicU32, Mutex, Ordering};
use crate::{DomainConfig, EventChannels};

/// The most actions one input runs.
pub const MAX_ACTIONS: usize = 256;

/// The domains' ids, by index.
const IDS: [DomId; 3] = [0, 1, 7];
/// An id that never exists.
const ABSENT: DomId = 2;
/// The privileged domain.
const PRIV: DomId = 0;

/// A domain's fixed configuration.
struct Spec {
    vcpus: u32,
    max_port: u32,
    nr_pirqs: u32,
    layout: TwoLevelLayout,
    privileged: bool,
    dm_for: Option<DomId>,
}

const SPECS: [Spec; 3] = [
    Spec {
        vcpus: 2,
        max_port: 70,
        nr_pirqs: 2,
        layout: TwoLevelLayout::X86_64,
        privileged: true,
        dm_for: None,
    },
    Spec {
        vcpus: 3,
        max_port: 40,
        nr_pirqs: 4,
        layout: TwoLevelLayout::X86_32,
        privileged: false,
        dm_for: None,
    },
    Spec {
        vcpus: 2,
        max_port: 8,
        nr_pirqs: 1,
        layout: TwoLevelLayout::ARM,
        privileged: false,
        dm_for: Some(1),
    },
];

/// Guest frames present at start in every domain's memory.
const GFNS: [u64; 4] = [0x100, 0x101, 0x102, 0x103];
/// A frame absent at start (it can be added by an action).
const GFN_EXTRA: u64 = 0x104;
/// Offsets for vcpu_info and FIFO control blocks: valid, boundary and invalid ones.
const OFFSETS: [u32; 8] = [0, 8, 64, 4024, 4032, 4088, 4, 4096];
/// The PIRQ the [`PirqHost`] refuses.
const REFUSED_PIRQ: u32 = 3;
/// Ports per bucket of the port table (Xen's `EVTCHNS_PER_BUCKET` for 64-bit Xen).
const BUCKET: u32 = 64;

/// Runs one fuzz input: at most [`MAX_ACTIONS`] actions, each followed by the invariant checks
/// (the input format, the actions and the invariants are documented at the top of
/// `src/test_utils/fuzz.rs`). Panics if the library panics or an invariant fails; setting
/// `XEN_EVTCHN_FUZZ_TRACE` prints every action and its result to stderr.
pub fn run_hypercalls(data: &[u8]) {
    let trace = std::env::var_os("XEN_EVTCHN_FUZZ_TRACE").is_some();
    let mut driver = Driver::new(trace);
    let mut input = Input { data };
    while driver.step < MAX_ACTIONS && !input.data.is_empty() {
        driver.before_action();
        driver.action(&mut input);
        driver.after_action();
        driver.step += 1;
    }
    driver.finish();
}

macro_rules! check {
    ($d:expr, $cond:expr, $($arg:tt)*) => {
        if !$cond {
            panic!(
                "fuzz invariant violated at action {}: {}",
                $d.step,
                format_args!($($arg)*)
            );
        }
    };
}

macro_rules! trace {
    ($d:expr, $($arg:tt)*) => {
        if $d.trace {
            eprintln!("[{:3}] {}", $d.step, format_args!($($arg)*));
        }
    };
}

/// The fuzzer's bytes; reads past the end give zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let take = n.min(self.data.len());
        let mut v = self.data[..take].to_vec();
        self.data = &self.data[take..];
        v.resize(n, 0);
        v
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// A port's binding in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bind {
    Unbound(DomId),
    Inter(DomId, EvtchnPort),
    Virq(u32),
    Pirq(u32),
    Ipi,
}

/// One domain in the model.
#[derive(Debug)]
struct DomModel {
    /// Binding and notify VCPU of ports `0..=max_port` (port 0 is never bound).
    ports: Vec<Option<(Bind, u32)>>,
    /// Ports below this are known valid (their bucket exists); buckets never go away.
    valid_floor: u32,
    paused: bool,
    /// vcpu_info registered with `register_vcpu_info`: page and offset.
    vcpu_info: Vec<Option<(GuestPage, usize)>>,
    /// FIFO control block (page, offset) of each VCPU (`init_control`).
    fifo_control: Vec<Option<(GuestPage, usize)>>,
    /// FIFO event-array pages, in order (`expand_array`).
    fifo_array: Vec<GuestPage>,
}

impl DomModel {
    fn new(spec: &Spec) -> Self {
        DomModel {
            ports: vec![None; spec.max_port as usize + 1],
            valid_floor: 0,
            paused: true,
            vcpu_info: vec![None; spec.vcpus as usize],
            fifo_control: vec![None; spec.vcpus as usize],
            fifo_array: Vec::new(),
        }
    }

    fn get(&self, port: EvtchnPort) -> Option<(Bind, u32)> {
        self.ports.get(port as usize).copied().flatten()
    }

    /// The FIFO event word of `port`, if its page was added.
    fn fifo_word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        let page = self
            .fifo_array
            .get((port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize)?;
        page.atomic_u32((port % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize * 4)
    }

    /// Whether an event-array page is also used as another event-array page, a control
    /// block or a vcpu_info: then the library's own writes may clobber event words.
    fn fifo_aliased(&self) -> bool {
        let others: Vec<&GuestPage> = self
            .fifo_control
            .iter()
            .flatten()
            .map(|(p, _)| p)
            .chain(self.vcpu_info.iter().flatten().map(|(p, _)| p))
            .collect();
        self.fifo_array.iter().enumerate().any(|(k, a)| {
            self.fifo_array[..k].iter().any(|b| a.same_page(b))
                || others.iter().any(|o| a.same_page(o))
        })
    }

    fn lowest_free(&self) -> Option<EvtchnPort> {
        (1..self.ports.len())
            .find(|&p| self.ports[p].is_none())
            .map(|p| p as EvtchnPort)
    }
}

/// A [`PirqHost`] that records bindings and refuses [`REFUSED_PIRQ`].
#[derive(Debug, Default)]
struct PirqTracker {
    bound: Mutex<HashSet<(DomId, u32)>>,
    errors: Mutex<Vec<String>>,
}

impl PirqHost for PirqTracker {
    fn bind(&self, domid: DomId, pirq: u32, _will_share: bool) -> std::result::Result<(), Errno> {
        if pirq == REFUSED_PIRQ {
            return Err(Errno::EBUSY);
        }
        if !self.bound.lock().insert((domid, pirq)) {
            self.errors.lock().push(format!(
                "PirqHost::bind of d{domid} pirq {pirq}, already bound"
            ));
        }
        Ok(())
    }

    fn unbind(&self, domid: DomId, pirq: u32) {
        if !self.bound.lock().remove(&(domid, pirq)) {
            self.errors.lock().push(format!(
                "PirqHost::unbind of d{domid} pirq {pirq}, not bound"
            ));
        }
    }
}

fn idx(id: DomId) -> Option<usize> {
    IDS.iter().position(|&d| d == id)
}

fn resolve(caller: DomId, dom: DomId) -> DomId {
    if dom == DOMID_SELF { caller } else { dom }
}

/// Xen's default XSM policy as the fixed configs give it.
fn permits(caller: DomId, target: DomId) -> bool {
    let Some(c) = idx(caller) else {
        return false;
    };
    caller == target || SPECS[c].privileged || SPECS[c].dm_for == Some(target)
}

fn round_up_bucket(n: u32) -> u32 {
    n.div_ceil(BUCKET).saturating_mul(BUCKET)
}

fn bytes_of<T: EvtchnOpArg>(arg: &T) -> Vec<u8> {
    let mut v = vec![0; size_of::<T>()];
    arg.write_to_guest(&mut v)
        .expect("a buffer of the struct's size");
    v
}

fn parse<T: EvtchnOpArg>(buf: &[u8]) -> T {
    T::read_from_guest(buf).expect("length checked against evtchnop_arg_size")
}

fn errno_of<T>(r: &Result<T>) -> Option<Errno> {
    r.as_ref().err().map(|e| e.errno())
}

struct Driver {
    ec: EventChannels,
    rec: Arc<UpcallRecorder>,
    pirqs: Arc<PirqTracker>,
    mem: [Arc<InMemoryGuest>; 3],
    model: [Option<DomModel>; 3],
    /// Explicit global VIRQ handlers (`None`: the hardware domain, domain 0).
    virq_handlers: [Option<DomId>; NR_VIRQS as usize],
    /// `evtchn_upcall_pending` of every (domain, VCPU) before the current action.
    flags_before: Vec<Option<u8>>,
    step: usize,
    trace: bool,
}

impl Driver {
    fn new(trace: bool) -> Self {
        let pirqs = Arc::new(PirqTracker::default());
        let mut d = Driver {
            ec: EventChannels::new().with_pirq_host(pirqs.clone()),
            rec: Arc::new(UpcallRecorder::new()),
            pirqs,
            mem: std::array::from_fn(|_| {
                let m = InMemoryGuest::new();
                for gfn in GFNS {
                    m.page(gfn);
                }
                Arc::new(m)
            }),
            model: [None, None, None],
            virq_handlers: [None; NR_VIRQS as usize],
            flags_before: Vec::new(),
            step: 0,
            trace,
        };
        for i in 0..IDS.len() {
            d.create(i);
        }
        d
    }

    fn config(&self, i: usize) -> DomainConfig {
        let s = &SPECS[i];
        let memory: Arc<dyn GuestMemory> = self.mem[i].clone();
        let mut c = DomainConfig::new(s.vcpus, self.rec.clone())
            .max_evtchn_port(s.max_port)
            .nr_pirqs(s.nr_pirqs)
            .two_level_layout(s.layout)
            .privileged(s.privileged)
            .hardware(s.privileged)
            .guest_memory(memory);
        if let Some(t) = s.dm_for {
            c = c.device_model_for(t);
        }
        c
    }

    fn create(&mut self, i: usize) {
        let r = self.ec.create_domain(IDS[i], self.config(i));
        check!(self, r.is_ok(), "create_domain({}) failed: {r:?}", IDS[i]);
        self.model[i] = Some(DomModel::new(&SPECS[i]));
    }

    // ---- the model -------------------------------------------------------------------------

    fn dm(&self, id: DomId) -> Option<&DomModel> {
        self.model[idx(id)?].as_ref()
    }

    fn dm_mut(&mut self, id: DomId) -> Option<&mut DomModel> {
        self.model[idx(id)?].as_mut()
    }

    fn exists(&self, id: DomId) -> bool {
        self.dm(id).is_some()
    }

    fn bind_of(&self, id: DomId, port: EvtchnPort) -> Option<(Bind, u32)> {
        self.dm(id)?.get(port)
    }

    fn set(&mut self, id: DomId, port: EvtchnPort, b: Option<(Bind, u32)>) {
        let floor = round_up_bucket(port.saturating_add(1));
        let m = self.dm_mut(id).expect("domain in the model");
        m.ports[port as usize] = b;
        m.valid_floor = m.valid_floor.max(floor);
    }

    fn vcpus(id: DomId) -> u32 {
        idx(id).map_or(0, |i| SPECS[i].vcpus)
    }

    fn handler(&self, virq: u32) -> Option<DomId> {
        self.virq_handlers
            .get(virq as usize)
            .copied()
            .flatten()
            .or(self.exists(PRIV).then_some(PRIV))
    }

    /// The port the model has VIRQ `virq` bound to in `id`, looked up as `raise_virq` does.
    fn virq_port(&self, id: DomId, virq: u32, vcpu: u32) -> Option<EvtchnPort> {
        let m = self.dm(id)?;
        let per_vcpu = virq_kind(virq) == Some(VirqKind::PerVcpu);
        (1..m.ports.len() as u32).find(|&p| match m.get(p) {
            Some((Bind::Virq(v), nv)) => v == virq && (!per_vcpu || nv == vcpu),
            _ => false,
        })
    }

    fn pirq_port(&self, id: DomId, pirq: u32) -> Option<EvtchnPort> {
        let m = self.dm(id)?;
        (1..m.ports.len() as u32).find(|&p| m.get(p).is_some_and(|(b, _)| b == Bind::Pirq(pirq)))
    }

    /// Xen's close: free the port; an interdomain peer goes back to unbound, naming `id`.
    fn close_model(&mut self, id: DomId, port: EvtchnPort) {
        let old = self.bind_of(id, port);
        self.set(id, port, None);
        if let Some((Bind::Inter(e, q), _)) = old {
            if let Some((Bind::Inter(d2, p2), v)) = self.bind_of(e, q) {
                if (d2, p2) == (id, port) {
                    self.set(e, q, Some((Bind::Unbound(id), v)));
                }
            }
        }
    }

    fn reset_model(&mut self, id: DomId) {
        let n = self.dm(id).map_or(0, |m| m.ports.len() as u32);
        for p in 1..n {
            if self.bind_of(id, p).is_some() {
                self.close_model(id, p);
            }
        }
    }

    /// Back to the 2-level ABI (a successful reset).
    fn reset_fifo_model(&mut self, id: DomId) {
        if let Some(m) = self.dm_mut(id) {
            m.fifo_control.iter_mut().for_each(|c| *c = None);
            m.fifo_array.clear();
        }
    }

    /// Whether raising `port` of `id` must leave it pending where the guest looks: always
    /// under the 2-level ABI; under FIFO if the port has an event word, its notify VCPU a
    /// control block, and no event-array page is aliased.
    fn raise_visible(&self, id: DomId, port: EvtchnPort) -> bool {
        if self.is_2l(id) {
            return true;
        }
        let Some(m) = self.dm(id) else {
            return false;
        };
        let Some((_, vcpu)) = m.get(port) else {
            return false;
        };
        m.fifo_word(port).is_some()
            && m.fifo_control
                .get(vcpu as usize)
                .is_some_and(Option::is_some)
            && !m.fifo_aliased()
    }

    fn is_2l(&self, id: DomId) -> bool {
        self.ec.abi_name(id).is_ok_and(|n| n == "2-level")
    }

    fn pending(&self, id: DomId, port: EvtchnPort) -> bool {
        self.ec.is_pending(id, port).unwrap_or(false)
    }

    // ---- argument generators -----------------------------------------------------------------

    fn caller(&self, inp: &mut Input<'_>) -> DomId {
        match inp.u8() % 8 {
            7 => ABSENT,
            b => IDS[b as usize % 3],
        }
    }

    fn dom_arg(&self, inp: &mut Input<'_>) -> DomId {
        match inp.u8() % 16 {
            b @ 0..=9 => IDS[b as usize % 3],
            10..=12 => DOMID_SELF,
            13 => ABSENT,
            14 => DOMID_FIRST_RESERVED + u16::from(inp.u8() % 16),
            _ => inp.u16(),
        }
    }

    fn vcpu_arg(&self, inp: &mut Input<'_>) -> u32 {
        match inp.u8() % 8 {
            b @ 0..=5 => u32::from(b % 3),
            6 => 3,
            _ => inp.u32(),
        }
    }

    fn virq_arg(&self, inp: &mut Input<'_>) -> u32 {
        match inp.u8() {
            b @ 0..=239 => u32::from(b % 26),
            _ => inp.u32(),
        }
    }

    fn pirq_arg(&self, inp: &mut Input<'_>) -> u32 {
        match inp.u8() {
            b @ 0..=239 => u32::from(b % 6),
            _ => inp.u32(),
        }
    }

    /// A port of domain `id`: small (colliding), one the model has bound, a boundary value or
    /// garbage.
    fn port_arg(&self, inp: &mut Input<'_>, id: DomId) -> EvtchnPort {
        const SPECIAL: [u32; 16] = [
            63,
            64,
            65,
            127,
            128,
            129,
            191,
            192,
            1023,
            1024,
            4095,
            4096,
            131_071,
            131_072,
            u32::MAX,
            0x8000_0000,
        ];
        match inp.u8() {
            b @ 0..=159 => u32::from(b % 72),
            b @ 160..=223 => {
                let bound: Vec<u32> = self.dm(id).map_or(Vec::new(), |m| {
                    (1..m.ports.len() as u32)
                        .filter(|&p| m.get(p).is_some())
                        .collect()
                });
                if bound.is_empty() {
                    u32::from(b % 8)
                } else {
                    bound[usize::from(b - 160) % bound.len()]
                }
            }
            b @ 224..=239 => SPECIAL[usize::from(b - 224)],
            _ => inp.u32(),
        }
    }

    fn gfn_arg(&self, inp: &mut Input<'_>) -> u64 {
        match inp.u8() % 8 {
            b @ 0..=3 => GFNS[usize::from(b)],
            4 => GFN_EXTRA,
            5 => 0,
            6 => u64::MAX,
            _ => inp.u64(),
        }
    }

    fn offset_arg(&self, inp: &mut Input<'_>) -> u32 {
        match inp.u8() % 9 {
            8 => inp.u32(),
            b => OFFSETS[usize::from(b)],
        }
    }

    fn priority_arg(&self, inp: &mut Input<'_>) -> u32 {
        match inp.u8() {
            b @ 0..=239 => u32::from(b % 18),
            _ => inp.u32(),
        }
    }

    /// A well-formed argument struct for `cmd` with fuzzer-chosen fields.
    fn build_args(&self, inp: &mut Input<'_>, caller: DomId, cmd: u32) -> Vec<u8> {
        match cmd {
            EVTCHNOP_bind_interdomain => {
                let rd = self.dom_arg(inp);
                let rp = self.port_arg(inp, resolve(caller, rd));
                bytes_of(&EvtchnBindInterdomain::new(rd, rp))
            }
            EVTCHNOP_bind_virq => {
                let virq = self.virq_arg(inp);
                bytes_of(&EvtchnBindVirq::new(virq, self.vcpu_arg(inp)))
            }
            EVTCHNOP_bind_pirq => {
                let pirq = self.pirq_arg(inp);
                bytes_of(&EvtchnBindPirq::new(pirq, u32::from(inp.u8() % 4)))
            }
            EVTCHNOP_close => bytes_of(&EvtchnClose::new(self.port_arg(inp, caller))),
            EVTCHNOP_send => bytes_of(&EvtchnSend::new(self.port_arg(inp, caller))),
            EVTCHNOP_status => {
                let dom = self.dom_arg(inp);
                let mut st = EvtchnStatus::new(dom, self.port_arg(inp, resolve(caller, dom)));
                // The union and OUT fields as the guest left them: usually zero.
                if inp.u8() >= 192 {
                    st.status = inp.u32();
                    let u = inp.bytes(st.u.len());
                    st.u.copy_from_slice(&u);
                }
                bytes_of(&st)
            }
            EVTCHNOP_alloc_unbound => {
                let dom = self.dom_arg(inp);
                bytes_of(&EvtchnAllocUnbound::new(dom, self.dom_arg(inp)))
            }
            EVTCHNOP_bind_ipi => bytes_of(&EvtchnBindIpi::new(self.vcpu_arg(inp))),
            EVTCHNOP_bind_vcpu => {
                let port = self.port_arg(inp, caller);
                bytes_of(&EvtchnBindVcpu::new(port, self.vcpu_arg(inp)))
            }
            EVTCHNOP_unmask => bytes_of(&EvtchnUnmask::new(self.port_arg(inp, caller))),
            EVTCHNOP_reset | EVTCHNOP_reset_cont => bytes_of(&EvtchnReset::new(self.dom_arg(inp))),
            EVTCHNOP_init_control => {
                let gfn = self.gfn_arg(inp);
                let offset = self.offset_arg(inp);
                bytes_of(&EvtchnInitControl::new(gfn, offset, self.vcpu_arg(inp)))
            }
            EVTCHNOP_expand_array => bytes_of(&EvtchnExpandArray::new(self.gfn_arg(inp))),
            EVTCHNOP_set_priority => {
                let port = self.port_arg(inp, caller);
                bytes_of(&EvtchnSetPriority::new(port, self.priority_arg(inp)))
            }
            _ => inp.bytes(8),
        }
    }

    // ---- actions ---------------------------------------------------------------------------

    fn action(&mut self, inp: &mut Input<'_>) {
        match inp.u8() {
            0..=99 => self.act_hypercall(inp, false),
            100..=124 => self.act_hypercall(inp, true),
            125..=139 => self.act_raise_virq(inp),
            140..=154 => self.act_raise_port(inp),
            155..=164 => self.act_raise_pirq(inp),
            165..=169 => self.act_raise_global_virq(inp),
            170..=189 => self.act_scribble_shared_info(inp),
            190..=204 => self.act_scribble_gfn(inp),
            205..=214 => self.act_set_paused(inp),
            215..=224 => self.act_lifecycle(inp),
            225..=234 => self.act_register_vcpu_info(inp),
            235..=239 => self.act_set_virq_handler(inp),
            240..=244 => self.act_toggle_gfn(inp),
            245..=250 => self.act_query(inp),
            _ => self.act_fifo_consume(inp),
        }
    }

    fn act_hypercall(&mut self, inp: &mut Input<'_>, raw: bool) {
        let caller = self.caller(inp);
        let vcpu = self.vcpu_arg(inp);
        let (cmd, mut buf) = if raw {
            let cmd = match inp.u8() {
                c @ 0..=199 => u32::from(c % 20),
                _ => inp.u32(),
            };
            let len = usize::from(inp.u8() % 48);
            (cmd, inp.bytes(len))
        } else {
            let cmd = u32::from(inp.u8() % 16);
            let mut buf = self.build_args(inp, caller, cmd);
            match inp.u8() {
                l @ 240..=255 => buf.truncate(usize::from(l - 240) % buf.len().max(1)),
                l @ 224..=239 => buf.resize(buf.len() + usize::from(l - 224), 0xA5),
                _ => {}
            }
            (cmd, buf)
        };
        self.hypercall(caller, vcpu, cmd, &mut buf);
    }

    fn hypercall(&mut self, caller: DomId, vcpu: u32, cmd: u32, buf: &mut [u8]) {
        let before = buf.to_vec();
        // Pre-state the checks need.
        let lowest_free: Vec<Option<EvtchnPort>> = IDS
            .iter()
            .map(|&id| self.dm(id).and_then(DomModel::lowest_free))
            .collect();
        let ret = self.ec.hypercall(caller, vcpu, cmd, buf);
        trace!(
            self,
            "hypercall(d{caller}, v{vcpu}, cmd {cmd}, {before:02x?}) = {ret}{}",
            if *buf == before[..] {
                String::new()
            } else {
                format!(", out {buf:02x?}")
            }
        );
        check!(
            self,
            ret == 0 || Errno::from_hypercall_ret(ret).is_some(),
            "hypercall returned {ret}, neither 0 nor a Xen errno"
        );
        check!(
            self,
            ret != Errno::EINTR.as_hypercall_ret() && ret != Errno::ERESTART.as_hypercall_ret(),
            "hypercall returned the Xen-internal {ret}"
        );
        let Some(size) = evtchnop_arg_size(cmd) else {
            check!(
                self,
                ret == Errno::ENOSYS.as_hypercall_ret(),
                "unknown cmd {cmd} gave {ret}"
            );
            check!(
                self,
                *buf == before[..],
                "unknown cmd {cmd} wrote the buffer"
            );
            return;
        };
        if buf.len() < size {
            check!(
                self,
                ret == Errno::EFAULT.as_hypercall_ret(),
                "cmd {cmd} with {} of {size} bytes gave {ret}",
                buf.len()
            );
            check!(self, *buf == before[..], "short buffer written");
            return;
        }
        check!(
            self,
            buf[size..] == before[size..],
            "bytes past the struct written"
        );
        let ok = ret == 0;
        if !ok {
            check!(
                self,
                *buf == before[..],
                "failed cmd {cmd} ({ret}) wrote the buffer"
            );
        }
        let has_out = matches!(
            cmd,
            EVTCHNOP_alloc_unbound
                | EVTCHNOP_bind_interdomain
                | EVTCHNOP_bind_virq
                | EVTCHNOP_bind_pirq
                | EVTCHNOP_bind_ipi
                | EVTCHNOP_status
                | EVTCHNOP_init_control
        );
        if !has_out {
            check!(
                self,
                *buf == before[..],
                "cmd {cmd} has no OUT field but wrote the buffer"
            );
        }
        if !self.exists(caller) {
            check!(
                self,
                !ok,
                "cmd {cmd} succeeded for a domain that does not exist"
            );
            return;
        }
        let c_idx = idx(caller).expect("caller exists");
        let free = lowest_free[c_idx];
        let c2l = self.is_2l(caller);
        let vcpus = Self::vcpus(caller);
        let mut touched: Vec<(DomId, EvtchnPort)> = Vec::new();
        // Checks an allocation of `port` in `id` against the model.
        let check_alloc = |d: &Self, id: DomId, port: EvtchnPort, lowest: Option<EvtchnPort>| {
            let m = d.dm(id).expect("allocating domain exists");
            check!(
                d,
                port >= 1 && (port as usize) < m.ports.len() && m.get(port).is_none(),
                "allocated port {port} of d{id} is not a free port up to max_evtchn_port"
            );
            if d.is_2l(id) {
                check!(
                    d,
                    Some(port) == lowest,
                    "2-level allocated {port}, lowest free {lowest:?}"
                );
            }
        };
        let predict = |d: &Self, expect: Option<bool>, what: &str| {
            if let Some(e) = expect {
                check!(
                    d,
                    ok == e,
                    "{what}: the model expected success={e}, got {ret}"
                );
            }
        };
        match cmd {
            EVTCHNOP_alloc_unbound => {
                let a: EvtchnAllocUnbound = parse(&before);
                let d = resolve(caller, a.dom);
                let expect = if !self.exists(d) || !permits(caller, d) {
                    Some(false)
                } else {
                    match self.dm(d).and_then(DomModel::lowest_free) {
                        None => Some(false),
                        Some(_) if self.is_2l(d) => Some(true),
                        Some(_) => None,
                    }
                };
                predict(self, expect, "alloc_unbound");
                if ok {
                    let out: EvtchnAllocUnbound = parse(buf);
                    check!(
                        self,
                        (out.dom, out.remote_dom) == (a.dom, a.remote_dom),
                        "alloc_unbound changed IN fields"
                    );
                    check_alloc(self, d, out.port, lowest_free[idx(d).expect("exists")]);
                    let remote = resolve(caller, a.remote_dom);
                    self.set(d, out.port, Some((Bind::Unbound(remote), 0)));
                    touched.push((d, out.port));
                }
            }
            EVTCHNOP_bind_interdomain => {
                let a: EvtchnBindInterdomain = parse(&before);
                let rd = resolve(caller, a.remote_dom);
                let offered = matches!(
                    self.bind_of(rd, a.remote_port),
                    Some((Bind::Unbound(r), _)) if r == caller
                );
                let expect = match (offered, free) {
                    (false, _) | (_, None) => Some(false),
                    _ if c2l => Some(true),
                    _ => None,
                };
                predict(self, expect, "bind_interdomain");
                touched.push((rd, a.remote_port));
                if ok {
                    let out: EvtchnBindInterdomain = parse(buf);
                    check!(
                        self,
                        (out.remote_dom, out.remote_port) == (a.remote_dom, a.remote_port),
                        "bind_interdomain changed IN fields"
                    );
                    let lport = out.local_port;
                    check_alloc(self, caller, lport, free);
                    let rv = self.bind_of(rd, a.remote_port).map_or(0, |(_, v)| v);
                    self.set(caller, lport, Some((Bind::Inter(rd, a.remote_port), 0)));
                    self.set(rd, a.remote_port, Some((Bind::Inter(caller, lport), rv)));
                    if self.raise_visible(caller, lport) {
                        check!(
                            self,
                            self.pending(caller, lport),
                            "bind_interdomain did not raise the new local port {lport}"
                        );
                    }
                    touched.push((caller, lport));
                }
            }
            EVTCHNOP_bind_virq => {
                let a: EvtchnBindVirq = parse(&before);
                let kind = virq_kind(a.virq);
                let expect = if kind.is_none()
                    || (kind != Some(VirqKind::PerVcpu) && a.vcpu != 0)
                    || a.vcpu >= vcpus
                    || (kind == Some(VirqKind::Global) && self.handler(a.virq) != Some(caller))
                    || self.virq_port(caller, a.virq, a.vcpu).is_some()
                    || free.is_none()
                {
                    Some(false)
                } else if c2l {
                    Some(true)
                } else {
                    None
                };
                predict(self, expect, "bind_virq");
                if ok {
                    let out: EvtchnBindVirq = parse(buf);
                    check!(
                        self,
                        (out.virq, out.vcpu) == (a.virq, a.vcpu),
                        "bind_virq changed IN fields"
                    );
                    check_alloc(self, caller, out.port, free);
                    self.set(caller, out.port, Some((Bind::Virq(a.virq), a.vcpu)));
                    touched.push((caller, out.port));
                }
            }
            EVTCHNOP_bind_pirq => {
                let a: EvtchnBindPirq = parse(&before);
                let expect = if a.pirq >= SPECS[c_idx].nr_pirqs
                    || self.pirq_port(caller, a.pirq).is_some()
                    || free.is_none()
                    || a.pirq == REFUSED_PIRQ
                {
                    Some(false)
                } else if c2l {
                    Some(true)
                } else {
                    None
                };
                predict(self, expect, "bind_pirq");
                if ok {
                    let out: EvtchnBindPirq = parse(buf);
                    check!(
                        self,
                        (out.pirq, out.flags) == (a.pirq, a.flags),
                        "bind_pirq changed IN fields"
                    );
                    check_alloc(self, caller, out.port, free);
                    self.set(caller, out.port, Some((Bind::Pirq(a.pirq), 0)));
                    touched.push((caller, out.port));
                }
            }
            EVTCHNOP_bind_ipi => {
                let a: EvtchnBindIpi = parse(&before);
                let expect = if a.vcpu >= vcpus || free.is_none() {
                    Some(false)
                } else if c2l {
                    Some(true)
                } else {
                    None
                };
                predict(self, expect, "bind_ipi");
                if ok {
                    let out: EvtchnBindIpi = parse(buf);
                    check!(self, out.vcpu == a.vcpu, "bind_ipi changed IN fields");
                    check_alloc(self, caller, out.port, free);
                    self.set(caller, out.port, Some((Bind::Ipi, a.vcpu)));
                    touched.push((caller, out.port));
                }
            }
            EVTCHNOP_close => {
                let a: EvtchnClose = parse(&before);
                let bound = self.bind_of(caller, a.port);
                predict(self, Some(bound.is_some()), "close");
                if ok {
                    if let Some((Bind::Inter(e, q), _)) = bound {
                        touched.push((e, q));
                    }
                    self.close_model(caller, a.port);
                    check!(
                        self,
                        !self.pending(caller, a.port),
                        "closed port {} still pending",
                        a.port
                    );
                }
                touched.push((caller, a.port));
            }
            EVTCHNOP_send => {
                let a: EvtchnSend = parse(&before);
                let b = self.bind_of(caller, a.port);
                let sendable =
                    matches!(b, Some((Bind::Unbound(_) | Bind::Inter(..) | Bind::Ipi, _)));
                predict(self, Some(sendable), "send");
                if ok {
                    match b {
                        Some((Bind::Inter(e, q), _)) if self.raise_visible(e, q) => {
                            check!(self, self.pending(e, q), "send did not raise d{e} port {q}");
                        }
                        Some((Bind::Ipi, _)) if self.raise_visible(caller, a.port) => {
                            check!(self, self.pending(caller, a.port), "IPI send did not raise");
                        }
                        _ => {}
                    }
                }
                touched.push((caller, a.port));
            }
            EVTCHNOP_status => {
                let a: EvtchnStatus = parse(&before);
                let d = resolve(caller, a.dom);
                let known_valid = self.dm(d).is_some_and(|m| a.port < m.valid_floor);
                let expect = if !self.exists(d) || !permits(caller, d) {
                    Some(false)
                } else if known_valid {
                    Some(true)
                } else {
                    None
                };
                predict(self, expect, "status");
                if ok {
                    let out: EvtchnStatus = parse(buf);
                    check!(
                        self,
                        (out.dom, out._pad0, out.port) == (a.dom, a._pad0, a.port),
                        "status changed IN fields"
                    );
                    self.check_status_struct(d, a.port, &a, &out);
                    touched.push((d, a.port));
                }
            }
            EVTCHNOP_bind_vcpu => {
                let a: EvtchnBindVcpu = parse(&before);
                let b = self.bind_of(caller, a.port);
                let eligible = match b {
                    Some((Bind::Virq(v), _)) => virq_kind(v) != Some(VirqKind::PerVcpu),
                    Some((Bind::Unbound(_) | Bind::Inter(..) | Bind::Pirq(_), _)) => true,
                    _ => false,
                };
                predict(self, Some(a.vcpu < vcpus && eligible), "bind_vcpu");
                if ok {
                    if let Some((bind, _)) = b {
                        self.set(caller, a.port, Some((bind, a.vcpu)));
                    }
                }
                touched.push((caller, a.port));
            }
            EVTCHNOP_unmask => {
                let a: EvtchnUnmask = parse(&before);
                let bound = self.bind_of(caller, a.port).is_some();
                let valid_floor = self.dm(caller).map_or(0, |m| m.valid_floor);
                let expect = if bound || a.port < valid_floor {
                    Some(true)
                } else if a.port >= round_up_bucket(SPECS[c_idx].max_port + 1) {
                    Some(false)
                } else {
                    None
                };
                predict(self, expect, "unmask");
                if ok && bound && c2l {
                    check!(
                        self,
                        self.ec.is_masked(caller, a.port).ok() == Some(false),
                        "unmask left bound port {} masked",
                        a.port
                    );
                }
                touched.push((caller, a.port));
            }
            EVTCHNOP_reset | EVTCHNOP_reset_cont => {
                let a: EvtchnReset = parse(&before);
                let d = resolve(caller, a.dom);
                let allowed = self.exists(d)
                    && permits(caller, d)
                    && (d == caller || self.dm(d).is_some_and(|m| m.paused));
                // A reset runs to completion in one call: a continuation never finds one.
                predict(self, Some(allowed && cmd == EVTCHNOP_reset), "reset");
                if ok {
                    self.reset_model(d);
                    self.reset_fifo_model(d);
                    check!(
                        self,
                        self.is_2l(d),
                        "d{d} not back to 2-level after a reset"
                    );
                }
                self.sweep_all();
            }
            EVTCHNOP_set_priority => {
                let a: EvtchnSetPriority = parse(&before);
                let b = self.bind_of(caller, a.port);
                let expect = if c2l || a.priority > EVTCHN_FIFO_PRIORITY_MIN {
                    Some(false)
                } else if b.is_some() {
                    Some(true)
                } else {
                    None
                };
                predict(self, expect, "set_priority");
                if ok {
                    check!(self, b.is_some(), "set_priority succeeded on a free port");
                }
                touched.push((caller, a.port));
            }
            EVTCHNOP_init_control => {
                let a: EvtchnInitControl = parse(&before);
                let page = self.mem[c_idx].map_page(a.control_gfn).ok();
                let has_block = self
                    .dm(caller)
                    .and_then(|m| m.fifo_control.get(a.vcpu as usize))
                    .is_some_and(Option::is_some);
                let expect = a.vcpu < vcpus
                    && evtchn_fifo_control_block_offset_is_valid(a.offset)
                    && page.is_some()
                    && !has_block;
                predict(self, Some(expect), "init_control");
                if let (true, Some(page)) = (ok, page) {
                    let out: EvtchnInitControl = parse(buf);
                    check!(
                        self,
                        (out.control_gfn, out.offset, out.vcpu)
                            == (a.control_gfn, a.offset, a.vcpu),
                        "init_control changed IN fields"
                    );
                    check!(
                        self,
                        u32::from(out.link_bits) == EVTCHN_FIFO_LINK_BITS,
                        "init_control link_bits {}",
                        out.link_bits
                    );
                    check!(
                        self,
                        !self.is_2l(caller),
                        "init_control succeeded, still 2-level"
                    );
                    if let Some(m) = self.dm_mut(caller) {
                        m.fifo_control[a.vcpu as usize] = Some((page, a.offset as usize));
                    }
                    // Switching ABI keeps every binding.
                    self.sweep(c_idx);
                }
            }
            EVTCHNOP_expand_array => {
                let a: EvtchnExpandArray = parse(&before);
                let page = self.mem[c_idx].map_page(a.array_gfn).ok();
                let pages = self.dm(caller).map_or(0, |m| m.fifo_array.len() as u32);
                let expect = !c2l && pages < EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES && page.is_some();
                predict(self, Some(expect), "expand_array");
                if let (true, Some(page)) = (ok, page) {
                    if let Some(m) = self.dm_mut(caller) {
                        m.fifo_array.push(page);
                    }
                }
            }
            _ => {}
        }
        for (id, port) in touched {
            self.check_port(id, port);
        }
    }

    fn act_raise_virq(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let vcpu = self.vcpu_arg(inp);
        let virq = self.virq_arg(inp);
        let r = self.ec.raise_virq(d, vcpu, virq);
        trace!(self, "raise_virq(d{d}, v{vcpu}, virq {virq}) = {r:?}");
        let kind = virq_kind(virq);
        let map_vcpu = if kind == Some(VirqKind::PerVcpu) {
            vcpu
        } else {
            0
        };
        let expect = if kind.is_none() {
            Some(Errno::EINVAL)
        } else if !self.exists(d) {
            Some(Errno::ESRCH)
        } else if map_vcpu >= Self::vcpus(d) {
            Some(Errno::ENOENT)
        } else {
            None
        };
        check!(
            self,
            errno_of(&r) == expect,
            "raise_virq: expected {expect:?}, got {r:?}"
        );
        if r.is_ok() {
            if let Some(p) = self
                .virq_port(d, virq, map_vcpu)
                .filter(|&p| self.raise_visible(d, p))
            {
                check!(
                    self,
                    self.pending(d, p),
                    "raise_virq left port {p} not pending"
                );
            }
        }
    }

    fn act_raise_global_virq(&mut self, inp: &mut Input<'_>) {
        let virq = self.virq_arg(inp);
        let r = self.ec.raise_global_virq(virq);
        trace!(self, "raise_global_virq({virq}) = {r:?}");
        let global = virq_kind(virq) == Some(VirqKind::Global);
        let expect = (!global).then_some(Errno::EINVAL);
        check!(
            self,
            errno_of(&r) == expect,
            "raise_global_virq: expected {expect:?}, got {r:?}"
        );
        if let (true, Some(h)) = (r.is_ok(), self.handler(virq)) {
            if let Some(p) = self.virq_port(h, virq, 0) {
                if self.raise_visible(h, p) {
                    check!(
                        self,
                        self.pending(h, p),
                        "global VIRQ left d{h} port {p} not pending"
                    );
                }
            }
        }
    }

    fn act_raise_port(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let port = self.port_arg(inp, d);
        let r = self.ec.raise_port(d, port);
        trace!(self, "raise_port(d{d}, {port}) = {r:?}");
        let expect = if !self.exists(d) {
            Some(Errno::ESRCH)
        } else if self.bind_of(d, port).is_none() {
            Some(Errno::EINVAL)
        } else {
            None
        };
        check!(
            self,
            errno_of(&r) == expect,
            "raise_port: expected {expect:?}, got {r:?}"
        );
        if r.is_ok() && self.raise_visible(d, port) {
            check!(
                self,
                self.pending(d, port),
                "raise_port left {port} not pending"
            );
        }
    }

    fn act_raise_pirq(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let pirq = self.pirq_arg(inp);
        let r = self.ec.raise_pirq(d, pirq);
        trace!(self, "raise_pirq(d{d}, {pirq}) = {r:?}");
        let expect = if !self.exists(d) {
            Some(Errno::ESRCH)
        } else if pirq >= SPECS[idx(d).expect("exists")].nr_pirqs {
            Some(Errno::EINVAL)
        } else {
            None
        };
        check!(
            self,
            errno_of(&r) == expect,
            "raise_pirq: expected {expect:?}, got {r:?}"
        );
        if r.is_ok() {
            if let Some(p) = self
                .pirq_port(d, pirq)
                .filter(|&p| self.raise_visible(d, p))
            {
                check!(
                    self,
                    self.pending(d, p),
                    "raise_pirq left port {p} not pending"
                );
            }
        }
    }

    /// A 32-bit guest write: store, xor, or, and-not, with a chosen value.
    fn scribble(&self, inp: &mut Input<'_>, page: &GuestPage, word: usize) {
        let value = match inp.u8() % 6 {
            0 => 0,
            1 => u32::MAX,
            2 => 1 << (inp.u8() % 32),
            // A FIFO event word: flag bits and a LINK.
            3 => u32::from(inp.u8() % 16) << 28 | u32::from(inp.u8() % 72),
            _ => inp.u32(),
        };
        let op = inp.u8() % 4;
        let Some(w) = page.atomic_u32(word * 4) else {
            return;
        };
        match op {
            0 => w.store(value, Ordering::SeqCst),
            1 => {
                w.fetch_xor(value, Ordering::SeqCst);
            }
            2 => {
                w.fetch_or(value, Ordering::SeqCst);
            }
            _ => {
                w.fetch_and(!value, Ordering::SeqCst);
            }
        }
        trace!(self, "  word {word:#x} op {op} value {value:#x}");
    }

    fn act_scribble_shared_info(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.u8() % 3);
        let l = SPECS[i].layout;
        let b = inp.u8();
        let word = match b {
            0..=63 => (l.vcpu_info_array_offset + usize::from(b % 32) * 4) / 4,
            64..=127 => (l.evtchn_pending_offset + usize::from(b % 8) * 4) / 4,
            128..=191 => (l.evtchn_mask_offset + usize::from(b % 8) * 4) / 4,
            _ => usize::from(inp.u16()) % (PAGE_SIZE / 4),
        };
        let Ok(page) = self.ec.shared_info(IDS[i]) else {
            return;
        };
        trace!(self, "scribble shared_info of d{}", IDS[i]);
        self.scribble(inp, &page, word);
    }

    fn act_scribble_gfn(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.u8() % 3);
        let gfn = match inp.u8() % 5 {
            4 => GFN_EXTRA,
            g => GFNS[usize::from(g)],
        };
        let b = inp.u8();
        let word = match b {
            // Around the control block and vcpu_info offsets.
            0..=127 => (OFFSETS[usize::from(b % 6)] as usize / 4 + usize::from(b / 8) % 18)
                .min(PAGE_SIZE / 4 - 1),
            // Event words of the first ports.
            128..=191 => usize::from(b % 64),
            _ => usize::from(inp.u16()) % (PAGE_SIZE / 4),
        };
        let Ok(page) = self.mem[i].map_page(gfn) else {
            return;
        };
        trace!(self, "scribble gfn {gfn:#x} of d{}", IDS[i]);
        self.scribble(inp, &page, word);
    }

    fn act_toggle_gfn(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.u8() % 3);
        let gfn = match inp.u8() % 5 {
            4 => GFN_EXTRA,
            g => GFNS[usize::from(g)],
        };
        if self.mem[i].map_page(gfn).is_ok() {
            self.mem[i].remove(gfn);
            trace!(self, "remove gfn {gfn:#x} of d{}", IDS[i]);
        } else {
            self.mem[i].page(gfn);
            trace!(self, "add gfn {gfn:#x} to d{}", IDS[i]);
        }
    }

    fn act_set_paused(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let paused = inp.u8() & 1 == 1;
        let r = self.ec.set_paused(d, paused);
        trace!(self, "set_paused(d{d}, {paused}) = {r:?}");
        let expect = (!self.exists(d)).then_some(Errno::ESRCH);
        check!(
            self,
            errno_of(&r) == expect,
            "set_paused: expected {expect:?}, got {r:?}"
        );
        if let Some(m) = self.dm_mut(d) {
            m.paused = paused;
        }
    }

    fn act_set_virq_handler(&mut self, inp: &mut Input<'_>) {
        let virq = self.virq_arg(inp);
        let handler = match inp.u8() % 5 {
            4 => None,
            3 => Some(ABSENT),
            b => Some(IDS[usize::from(b)]),
        };
        let r = self.ec.set_global_virq_handler(virq, handler);
        trace!(self, "set_global_virq_handler({virq}, {handler:?}) = {r:?}");
        let expect = if virq_kind(virq) != Some(VirqKind::Global) {
            Some(Errno::EINVAL)
        } else if handler.is_some_and(|h| !self.exists(h)) {
            Some(Errno::ESRCH)
        } else {
            None
        };
        check!(
            self,
            errno_of(&r) == expect,
            "set_global_virq_handler: {expect:?} vs {r:?}"
        );
        if r.is_ok() {
            self.virq_handlers[virq as usize] = handler;
        }
    }

    fn act_lifecycle(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.u8() % 3);
        let id = IDS[i];
        let mode = inp.u8();
        let exists = self.model[i].is_some();
        if mode >= 224 {
            let r = self.ec.create_domain(DOMID_SELF, self.config(i));
            trace!(self, "create_domain(DOMID_SELF) = {r:?}");
            check!(
                self,
                errno_of(&r) == Some(Errno::EINVAL),
                "reserved id created: {r:?}"
            );
        } else if mode >= 192 {
            // The wrong call for the domain's state.
            if exists {
                let r = self.ec.create_domain(id, self.config(i));
                trace!(self, "create_domain(d{id}) again = {r:?}");
                check!(
                    self,
                    errno_of(&r) == Some(Errno::EEXIST),
                    "create twice: {r:?}"
                );
            } else {
                let r = self.ec.destroy_domain(id);
                trace!(self, "destroy_domain(d{id}) of an absent domain = {r:?}");
                check!(
                    self,
                    errno_of(&r) == Some(Errno::ESRCH),
                    "destroy absent: {r:?}"
                );
            }
        } else if exists {
            self.destroy(i);
        } else {
            trace!(self, "create_domain(d{id})");
            self.create(i);
            self.sweep(i);
        }
    }

    fn destroy(&mut self, i: usize) {
        let id = IDS[i];
        let r = self.ec.destroy_domain(id);
        trace!(self, "destroy_domain(d{id}) = {r:?}");
        check!(self, r.is_ok(), "destroy_domain(d{id}) failed: {r:?}");
        self.reset_model(id);
        self.model[i] = None;
        for h in self.virq_handlers.iter_mut() {
            if *h == Some(id) {
                *h = None;
            }
        }
        self.sweep_all();
    }

    fn act_register_vcpu_info(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let vcpu = self.vcpu_arg(inp);
        let gfn = self.gfn_arg(inp);
        let offset = self.offset_arg(inp);
        let r = self.ec.register_vcpu_info(d, vcpu, gfn, offset);
        trace!(
            self,
            "register_vcpu_info(d{d}, v{vcpu}, {gfn:#x}, {offset}) = {r:?}"
        );
        let Some(i) = idx(d).filter(|&i| self.model[i].is_some()) else {
            check!(
                self,
                errno_of(&r) == Some(Errno::ESRCH),
                "absent domain: {r:?}"
            );
            return;
        };
        let l = SPECS[i].layout;
        let page = self.mem[i].map_page(gfn).ok();
        let expect = if vcpu >= SPECS[i].vcpus {
            Some(Errno::ENOENT)
        } else if offset as usize > PAGE_SIZE - l.vcpu_info_size
            || offset % 8 != 0
            || self
                .dm(d)
                .is_some_and(|m| m.vcpu_info[vcpu as usize].is_some())
            || page.is_none()
        {
            Some(Errno::EINVAL)
        } else {
            None
        };
        check!(
            self,
            errno_of(&r) == expect,
            "register_vcpu_info: expected {expect:?}, got {r:?}"
        );
        if let (Ok(()), Some(page)) = (r, page) {
            let off = offset as usize;
            let flag = page
                .atomic_u8(off + l.upcall_pending_offset)
                .map(|f| f.load(Ordering::SeqCst));
            check!(
                self,
                flag.is_some_and(|f| f & 1 == 1),
                "new vcpu_info's upcall flag is {flag:?}"
            );
            for w in 0..(l.word_bits / 32) as usize {
                let sel = page
                    .atomic_u32(off + l.pending_sel_offset + w * 4)
                    .map(|s| s.load(Ordering::SeqCst));
                check!(self, sel == Some(u32::MAX), "selector word {w} is {sel:?}");
            }
            if let Some(m) = self.dm_mut(d) {
                m.vcpu_info[vcpu as usize] = Some((page, off));
            }
        }
    }

    /// The guest consumes up to four events of one FIFO queue as Linux does: from `HEAD[q]`,
    /// unlink each event (clear LINKED and LINK, keep the LINK as the next head), acknowledge
    /// it (clear PENDING) unless masked; an empty queue clears its READY bit. The guest keeps
    /// its head in `HEAD[q]` itself (Linux keeps it privately; the hypervisor only writes
    /// `HEAD[q]` to start a new list, so this is a legal guest).
    fn act_fifo_consume(&mut self, inp: &mut Input<'_>) {
        let i = usize::from(inp.u8() % 3);
        let vcpu = usize::from(inp.u8()) % SPECS[i].vcpus as usize;
        let q = usize::from(inp.u8() % 16);
        let n = 1 + inp.u8() % 4;
        let Some(m) = self.model[i].as_ref() else {
            return;
        };
        let Some((page, off)) = m.fifo_control[vcpu].clone() else {
            return;
        };
        let (Some(ready), Some(head_w)) = (page.atomic_u32(off), page.atomic_u32(off + 8 + q * 4))
        else {
            return;
        };
        let mut consumed = Vec::new();
        for _ in 0..n {
            let head = head_w.load(Ordering::SeqCst);
            if head == 0 {
                ready.fetch_and(!(1 << q), Ordering::SeqCst);
                break;
            }
            let Some(word) = m.fifo_word(head) else {
                head_w.store(0, Ordering::SeqCst);
                break;
            };
            let old = word.fetch_and(
                !(1 << EVTCHN_FIFO_LINKED | EVTCHN_FIFO_LINK_MASK),
                Ordering::SeqCst,
            );
            head_w.store(old & EVTCHN_FIFO_LINK_MASK, Ordering::SeqCst);
            if old & 1 << EVTCHN_FIFO_MASKED == 0 {
                word.fetch_and(!(1 << EVTCHN_FIFO_PENDING), Ordering::SeqCst);
            }
            consumed.push(head);
        }
        trace!(
            self,
            "guest of d{} consumes queue {q} of v{vcpu}: {consumed:?}", IDS[i]
        );
    }

    fn act_query(&mut self, inp: &mut Input<'_>) {
        let d = self.caller(inp);
        let port = self.port_arg(inp, d);
        let sweep = inp.u8() & 1 == 1;
        let p = self.ec.is_pending(d, port);
        let m = self.ec.is_masked(d, port);
        trace!(self, "is_pending/is_masked(d{d}, {port}) = {p:?} {m:?}");
        if !self.exists(d) {
            check!(
                self,
                errno_of(&p) == Some(Errno::ESRCH),
                "is_pending: {p:?}"
            );
            check!(self, errno_of(&m) == Some(Errno::ESRCH), "is_masked: {m:?}");
            return;
        }
        let i = idx(d).expect("exists");
        let l = SPECS[i].layout;
        if let (Ok(p), Ok(m)) = (&p, &m) {
            let (bp, bm) = if self.is_2l(d) {
                let si = self.ec.shared_info(d).expect("domain exists");
                let bit = |base: usize| {
                    si.atomic_u32(base + (port / 32) as usize * 4)
                        .map(|w| w.load(Ordering::SeqCst) & (1 << (port % 32)) != 0)
                };
                if port < l.nr_channels {
                    (bit(l.evtchn_pending_offset), bit(l.evtchn_mask_offset))
                } else {
                    (Some(false), Some(true))
                }
            } else {
                // FIFO: the port's event word, if its page was added.
                let word = self
                    .dm(d)
                    .and_then(|m| m.fifo_word(port))
                    .map(|w| w.load(Ordering::SeqCst));
                (
                    Some(word.is_some_and(|w| w & 1 << EVTCHN_FIFO_PENDING != 0)),
                    Some(word.is_none_or(|w| w & 1 << EVTCHN_FIFO_MASKED != 0)),
                )
            };
            check!(
                self,
                Some(*p) == bp,
                "is_pending({port}) {p} vs the bitmap {bp:?}"
            );
            check!(
                self,
                Some(*m) == bm,
                "is_masked({port}) {m} vs the bitmap {bm:?}"
            );
        }
        if sweep {
            self.sweep(i);
        }
    }

    // ---- checks ------------------------------------------------------------------------------

    /// `evtchn_upcall_pending` of (domain `i`, `vcpu`) where the model knows it lives (`None`:
    /// unknown, or on a page the FIFO backend also writes).
    fn upcall_flag(&self, i: usize, vcpu: u32) -> Option<u8> {
        let m = self.model[i].as_ref()?;
        let l = SPECS[i].layout;
        if let Some((page, off)) = &m.vcpu_info[vcpu as usize] {
            // On a page the FIFO backend also writes (a control block's HEAD, an event word's
            // LINK), the library itself may clear the flag: no edge can be checked there.
            let fifo_page = m
                .fifo_control
                .iter()
                .flatten()
                .map(|(p, _)| p)
                .chain(&m.fifo_array)
                .any(|p| p.same_page(page));
            if fifo_page {
                return None;
            }
            return page
                .atomic_u8(off + l.upcall_pending_offset)
                .map(|f| f.load(Ordering::SeqCst));
        }
        let off = l.vcpu_info_offset(vcpu)?;
        let si = self.ec.shared_info(IDS[i]).ok()?;
        si.atomic_u8(off + l.upcall_pending_offset)
            .map(|f| f.load(Ordering::SeqCst))
    }

    fn all_flags(&self) -> Vec<Option<u8>> {
        (0..IDS.len())
            .flat_map(|i| (0..SPECS[i].vcpus).map(move |v| (i, v)))
            .map(|(i, v)| self.upcall_flag(i, v))
            .collect()
    }

    fn before_action(&mut self) {
        self.flags_before = self.all_flags();
    }

    fn after_action(&mut self) {
        let after = self.all_flags();
        let mut k = 0;
        for (i, spec) in SPECS.iter().enumerate() {
            for v in 0..spec.vcpus {
                let n = self.rec.take(IDS[i], v);
                check!(
                    self,
                    n <= 1,
                    "{n} upcalls for d{}v{v} in one action",
                    IDS[i]
                );
                if n == 1 {
                    let (b, a) = (self.flags_before[k], after[k]);
                    check!(
                        self,
                        b.is_none_or(|f| f & 1 == 0) && a.is_none_or(|f| f & 1 == 1),
                        "upcall for d{}v{v} without a 0 -> 1 edge of its flag ({b:?} -> {a:?})",
                        IDS[i]
                    );
                }
                k += 1;
            }
        }
        let stray = self.rec.total();
        check!(
            self,
            stray == 0,
            "{stray} upcalls for a (domain, vcpu) that does not exist"
        );
        for &id in &IDS {
            if let Ok(Some(c)) = self.ec.fifo_counters(id) {
                // Only a concurrent set_priority or bind_vcpu can move a queue under a sender.
                check!(
                    self,
                    c.dropped_queue_changes == 0,
                    "d{id}: FIFO dropped an event for queue changes without concurrency: {c:?}"
                );
            }
        }
        let errors = std::mem::take(&mut *self.pirqs.errors.lock());
        check!(self, errors.is_empty(), "PirqHost misuse: {errors:?}");
    }

    fn finish(&mut self) {
        self.sweep_all();
        for i in 0..IDS.len() {
            if self.model[i].is_some() {
                self.before_action();
                self.destroy(i);
                self.after_action();
            }
        }
        let left = self.pirqs.bound.lock().len();
        check!(
            self,
            left == 0,
            "{left} PIRQs still bound in the PirqHost after destruction"
        );
    }

    /// Compares a status the library gave for `port` of `id` with the model.
    fn check_status(&self, id: DomId, port: EvtchnPort, s: Status) {
        let expected = self.bind_of(id, port);
        let got = match s.status {
            PortStatus::Closed => None,
            PortStatus::Unbound { dom } => Some(Bind::Unbound(dom)),
            PortStatus::Interdomain { dom, port } => Some(Bind::Inter(dom, port)),
            PortStatus::Pirq(p) => Some(Bind::Pirq(p)),
            PortStatus::Virq(v) => Some(Bind::Virq(v)),
            PortStatus::Ipi => Some(Bind::Ipi),
        };
        let expected_vcpu = expected.map_or(0, |(_, v)| v);
        check!(
            self,
            got == expected.map(|(b, _)| b) && s.vcpu == expected_vcpu,
            "d{id} port {port}: library says {s:?}, model {expected:?}"
        );
        if let PortStatus::Interdomain { dom, port: q } = s.status {
            let back = self.ec.status(dom, dom, q).map(|s| s.status);
            check!(
                self,
                back.as_ref().ok() == Some(&PortStatus::Interdomain { dom: id, port }),
                "d{id} port {port} -> d{dom} port {q}, which says {back:?}"
            );
        }
    }

    /// Compares an `EVTCHNOP_status` result struct with the model.
    fn check_status_struct(
        &self,
        id: DomId,
        port: EvtchnPort,
        input: &EvtchnStatus,
        out: &EvtchnStatus,
    ) {
        let expected = self.bind_of(id, port);
        let (code, vcpu) = match expected {
            None => (EVTCHNSTAT_closed, 0),
            Some((b, v)) => (
                match b {
                    Bind::Unbound(_) => EVTCHNSTAT_unbound,
                    Bind::Inter(..) => EVTCHNSTAT_interdomain,
                    Bind::Pirq(_) => EVTCHNSTAT_pirq,
                    Bind::Virq(_) => EVTCHNSTAT_virq,
                    Bind::Ipi => EVTCHNSTAT_ipi,
                },
                v,
            ),
        };
        check!(
            self,
            out.status == code && out.vcpu == vcpu,
            "EVTCHNOP_status of d{id} port {port}: {out:?}, model {expected:?}"
        );
        let union_ok = match expected {
            None | Some((Bind::Ipi, _)) => out.u == input.u,
            Some((Bind::Unbound(r), _)) => out.unbound_dom() == r && out.u[2..] == input.u[2..],
            Some((Bind::Inter(e, q), _)) => out.interdomain() == (e, q),
            Some((Bind::Pirq(p), _)) => out.pirq() == p && out.u[4..] == input.u[4..],
            Some((Bind::Virq(v), _)) => out.virq() == v && out.u[4..] == input.u[4..],
        };
        check!(
            self,
            union_ok,
            "EVTCHNOP_status union of d{id} port {port}: {:?} (input {:?}), model {expected:?}",
            out.u,
            input.u
        );
    }

    /// Checks one port (and, through the status, its interdomain peer).
    fn check_port(&mut self, id: DomId, port: EvtchnPort) {
        let Some(floor) = self.dm(id).map(|m| m.valid_floor) else {
            return;
        };
        match self.ec.status(id, id, port) {
            Ok(s) => {
                self.check_status(id, port, s);
                let floor = round_up_bucket(port.saturating_add(1)).max(floor);
                if let Some(m) = self.dm_mut(id) {
                    m.valid_floor = floor;
                }
            }
            Err(e) => {
                check!(
                    self,
                    e.errno() == Errno::EINVAL && port >= floor && self.bind_of(id, port).is_none(),
                    "status(d{id}, {port}) failed with {e:?} (valid floor {floor})"
                );
            }
        }
    }

    fn sweep_all(&mut self) {
        for i in 0..IDS.len() {
            self.sweep(i);
        }
        let mut bound: Vec<(DomId, u32)> = self.pirqs.bound.lock().iter().copied().collect();
        bound.sort_unstable();
        let mut model: Vec<(DomId, u32)> = Vec::new();
        for &id in &IDS {
            if let Some(m) = self.dm(id) {
                for b in m.ports.iter().flatten() {
                    if let (Bind::Pirq(p), _) = b {
                        model.push((id, *p));
                    }
                }
            }
        }
        model.sort_unstable();
        check!(
            self,
            bound == model,
            "PirqHost has {bound:?} bound, model {model:?}"
        );
        for virq in 0..NR_VIRQS {
            if virq_kind(virq) == Some(VirqKind::Global) {
                let lib = self.ec.global_virq_handler(virq);
                let model = self.handler(virq);
                check!(
                    self,
                    lib == model,
                    "global VIRQ {virq} handler {lib:?}, model {model:?}"
                );
            }
        }
    }

    /// Every port of domain `i` against the model, and the shape of its port table.
    fn sweep(&mut self, i: usize) {
        let id = IDS[i];
        let Some(floor) = self.model[i].as_ref().map(|m| m.valid_floor) else {
            check!(
                self,
                !self.ec.domain_exists(id),
                "d{id} exists, the model has none"
            );
            let r = self.ec.status(PRIV, id, 1);
            check!(
                self,
                errno_of(&r) == Some(Errno::ESRCH),
                "status of absent d{id}: {r:?}"
            );
            return;
        };
        check!(self, self.ec.domain_exists(id), "d{id} is missing");
        let cap = round_up_bucket(SPECS[i].max_port + 1);
        let mut valid = None;
        for p in 0..cap + BUCKET {
            match self.ec.status(id, id, p) {
                Ok(s) => {
                    check!(
                        self,
                        valid.is_none(),
                        "d{id}: port {p} valid after a gap at {valid:?}"
                    );
                    self.check_status(id, p, s);
                }
                Err(e) => {
                    check!(
                        self,
                        e.errno() == Errno::EINVAL,
                        "status(d{id}, {p}): {e:?}"
                    );
                    check!(
                        self,
                        self.bind_of(id, p).is_none(),
                        "d{id} bound port {p} invalid"
                    );
                    valid.get_or_insert(p);
                }
            }
        }
        let valid = valid.unwrap_or(u32::MAX);
        check!(
            self,
            valid % BUCKET == 0 && valid >= floor.max(BUCKET) && valid <= cap,
            "d{id}: {valid} valid ports (floor {floor}, ceiling {cap})"
        );
        for p in [u32::MAX, 1 << 17, 4096, DOMID_INVALID.into()] {
            let r = self.ec.status(id, id, p);
            check!(
                self,
                errno_of(&r) == Some(Errno::EINVAL),
                "status(d{id}, {p}): {r:?}"
            );
        }
        if let Some(m) = self.model[i].as_mut() {
            m.valid_floor = valid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_inputs() {
        run_hypercalls(&[]);
        for b in 0..=255u8 {
            run_hypercalls(&[b]);
            run_hypercalls(&[b, b, b, b]);
        }
    }

    #[test]
    fn a_scripted_interdomain_session() {
        // d1 alloc_unbound for d0; d0 binds to it; d0 sends; d1 closes; d0 closes.
        let mut data = Vec::new();
        // hypercall (tag 0), caller d1 (1), vcpu 0 (0), cmd alloc_unbound (6),
        // dom = DOMID_SELF (10), remote = d0 (0), exact length (0).
        data.extend_from_slice(&[0, 1, 0, 6, 10, 0, 0]);
        // d0 bind_interdomain(d1, port 1).
        data.extend_from_slice(&[0, 0, 0, 0, 1, 1, 0]);
        // d0 send port 1.
        data.extend_from_slice(&[0, 0, 0, 4, 1, 0]);
        // d1 close port 1, d0 close port 1.
        data.extend_from_slice(&[0, 1, 0, 3, 1, 0]);
        data.extend_from_slice(&[0, 0, 0, 3, 1, 0]);
        run_hypercalls(&data);
    }

    #[test]
    fn a_scripted_fifo_session() {
        let mut data = Vec::new();
        // d1 init_control(gfn 0x100, offset 0, vcpu 0), expand_array(gfn 0x101).
        data.extend_from_slice(&[0, 1, 0, 11, 0, 0, 0, 0]);
        data.extend_from_slice(&[0, 1, 0, 12, 1, 0]);
        // d1 bind_ipi(vcpu 0) and send on it: pending in the event word.
        data.extend_from_slice(&[0, 1, 0, 7, 0, 0]);
        data.extend_from_slice(&[0, 1, 0, 4, 1, 0]);
        // Query port 1 (checked against the event word) and sweep.
        data.extend_from_slice(&[245, 1, 1, 1]);
        // The guest consumes queue 7 (the default priority) of VCPU 0; port 1 is raised again.
        data.extend_from_slice(&[255, 1, 0, 7, 0]);
        data.extend_from_slice(&[0, 1, 0, 4, 1, 0]);
        data.extend_from_slice(&[245, 1, 1, 0]);
        // d1 resets itself: back to 2-level.
        data.extend_from_slice(&[0, 1, 0, 10, 10, 0]);
        run_hypercalls(&data);
    }
}
