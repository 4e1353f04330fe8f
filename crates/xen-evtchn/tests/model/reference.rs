//! The reference model: Xen's event channel semantics as a plain, sequential program.
//!
//! Written from `shared/reference/xen-evtchn-semantics.md` (section numbers below refer to it),
//! not from the library: no atomics, no locks, no RCU, no packing; `BTreeMap`s and `Vec`s
//! stepped one operation at a time. It models what a guest and the host can observe:
//!
//! * each port's state, notify VCPU, FIFO priority, last queue and saved-pending flag (§2);
//! * the 2-level pending and mask bitmaps, each VCPU's selector word and upcall flag, and the
//!   number of upcalls the VMM was asked for (§3);
//! * the FIFO state of a domain: control blocks (READY, HEAD[16]), event-array pages with every
//!   event word (PENDING, MASKED, LINKED, LINK), and the hypervisor's private queue tails (§4);
//! * what the guest consumers of `test_utils` deliver when they run an upcall (Linux's
//!   2-level scan, Linux's FIFO queue walk).
//!
//! Every operation returns what the real one must return, checks in Xen's order (§1.2).
//! Checks that only a non-existent *caller* can fail (Xen's caller always exists) follow the
//! library's documented order; nothing else here is taken from the library.

use std::collections::{BTreeMap, BTreeSet};

use xen_evtchn::abi::Errno;
use xen_evtchn::{PortStatus, Status};

/// DOMID_SELF.
pub(crate) const DOMID_SELF: u16 = 0x7FF0;
/// NR_VIRQS.
pub(crate) const NR_VIRQS: u32 = 24;
/// Ports the 2-level ABI addresses for a 64-bit guest (64 × 64).
pub(crate) const TWO_LEVEL_PORTS: u32 = 4096;
/// Ports the FIFO ABI addresses (2^17).
pub(crate) const FIFO_PORTS: u32 = 1 << 17;
/// Event words per event-array page.
pub(crate) const WORDS_PER_PAGE: u32 = 1024;
/// Most event-array pages.
pub(crate) const MAX_ARRAY_PAGES: u32 = 128;
/// Port storage grows by buckets of this many ports; `valid_evtchns` is a multiple of it
/// (§7: 64 in normal Xen builds; the library uses the same).
pub(crate) const PORTS_PER_BUCKET: u32 = 64;
/// FIFO priorities: 0 (highest) ..= 15 (lowest), default 7.
pub(crate) const QUEUES: usize = 16;
const PRIORITY_DEFAULT: u32 = 7;
const PRIORITY_LOWEST: u32 = 15;
/// Highest control-block offset (4096 − 72) and its alignment.
const CONTROL_MAX_OFFSET: u32 = 4096 - 72;
const CONTROL_ALIGN: u32 = 8;
/// What init_control returns.
pub(crate) const LINK_BITS: u32 = 17;

/// What an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    /// `Ok(())`.
    Unit,
    /// A port number.
    Port(u32),
    /// An `EVTCHNOP_status` answer.
    Status(Status),
    /// init_control's LINK width.
    LinkBits(u32),
}

/// An operation's result, errors as errno.
pub(crate) type Ret = Result<Val, Errno>;

/// §7: VIRQ classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VirqKind {
    PerVcpu,
    PerDomain,
    Global,
}

fn virq_kind(virq: u32) -> Option<VirqKind> {
    match virq {
        0 | 1 | 7 | 13 => Some(VirqKind::PerVcpu),
        11 => Some(VirqKind::PerDomain),
        v if v < NR_VIRQS => Some(VirqKind::Global),
        _ => None,
    }
}

/// A port's binding (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    Free,
    Reserved,
    Unbound { remote: u16 },
    Interdomain { dom: u16, port: u32 },
    Virq(u32),
    Ipi,
}

/// A port's hypervisor-side state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port {
    pub(crate) binding: Binding,
    /// Notify VCPU (0 after free).
    pub(crate) vcpu: u32,
    /// FIFO priority (a never-initialised slot holds 0).
    pub(crate) priority: u32,
    /// FIFO `fifo_lastq`: (VCPU, priority) the event was last linked on; never reset.
    pub(crate) last: (u32, u32),
    /// FIFO "raised while it had no event word"; never cleared (§4.4 quirk).
    pub(crate) saved: bool,
}

impl Default for Port {
    fn default() -> Self {
        Port {
            binding: Binding::Free,
            vcpu: 0,
            priority: 0,
            last: (0, 0),
            saved: false,
        }
    }
}

impl Port {
    fn usable(&self) -> bool {
        !matches!(self.binding, Binding::Free | Binding::Reserved)
    }
}

/// One FIFO event word (§4.1). BUSY is never left set by a sequential hypervisor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) pending: bool,
    pub(crate) masked: bool,
    pub(crate) linked: bool,
    pub(crate) link: u32,
}

impl Word {
    /// The word as guest memory holds it.
    pub(crate) fn raw(&self) -> u32 {
        (u32::from(self.pending) << 31)
            | (u32::from(self.masked) << 30)
            | (u32::from(self.linked) << 29)
            | self.link
    }
}

/// A domain's FIFO state (§4.2–4.5), plus the guest memory it covers.
#[derive(Debug, Clone)]
pub(crate) struct Fifo {
    /// VCPUs with a control block.
    pub(crate) control: Vec<bool>,
    /// Event-array pages.
    pub(crate) pages: u32,
    /// Event words of the ports the pages cover (guest memory).
    pub(crate) words: Vec<Word>,
    /// The hypervisor's private tail of each (VCPU, priority) queue; 0: none.
    tail: Vec<[u32; QUEUES]>,
    /// HEAD[q] of each control block (guest memory; only the hypervisor writes it).
    pub(crate) head: Vec<[u32; QUEUES]>,
    /// READY of each control block (guest memory).
    pub(crate) ready: Vec<u32>,
    /// Events dropped because the target VCPU had no control block.
    pub(crate) dropped_no_control_block: u64,
}

impl Fifo {
    fn new(vcpus: u32) -> Self {
        let n = vcpus as usize;
        Fifo {
            control: vec![false; n],
            pages: 0,
            words: Vec::new(),
            tail: vec![[0; QUEUES]; n],
            head: vec![[0; QUEUES]; n],
            ready: vec![0; n],
            dropped_no_control_block: 0,
        }
    }

    fn word(&self, port: u32) -> Option<&Word> {
        self.words.get(port as usize)
    }
}

/// One domain.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    pub(crate) id: u16,
    pub(crate) vcpus: u32,
    pub(crate) privileged: bool,
    pub(crate) max_port: u32,
    pub(crate) paused: bool,
    /// Buckets the storage can hold (ports `0..=max_port`, at most 2^17).
    buckets: u32,
    /// Every valid port (`valid_evtchns` = `ports.len()`).
    pub(crate) ports: Vec<Port>,
    /// VIRQ → port, per VCPU (global and per-domain VIRQs on VCPU 0).
    virq: Vec<[u32; NR_VIRQS as usize]>,
    /// 2-level bitmaps in shared_info (kept across ABI switches: they are guest memory).
    pub(crate) pending2: BTreeSet<u32>,
    pub(crate) mask2: BTreeSet<u32>,
    /// Per VCPU: `evtchn_pending_sel`, `evtchn_upcall_pending`, upcalls requested from the VMM.
    pub(crate) sel: Vec<u64>,
    pub(crate) upcall_flag: Vec<bool>,
    pub(crate) upcalls: Vec<u64>,
    pub(crate) fifo: Option<Fifo>,
    /// How raises ended, for the coverage report.
    pub(crate) outcomes: BTreeMap<&'static str, u64>,
}

impl Domain {
    fn outcome(&mut self, what: &'static str) {
        *self.outcomes.entry(what).or_insert(0) += 1;
    }

    fn new(id: u16, vcpus: u32, privileged: bool, max_port: u32) -> Self {
        let storage = max_port.saturating_add(1).clamp(1, FIFO_PORTS);
        let mut ports = vec![Port::default(); PORTS_PER_BUCKET as usize];
        ports[0].binding = Binding::Reserved;
        let n = vcpus as usize;
        Domain {
            id,
            vcpus,
            privileged,
            max_port,
            paused: true,
            buckets: storage.div_ceil(PORTS_PER_BUCKET),
            ports,
            virq: vec![[0; NR_VIRQS as usize]; n],
            pending2: BTreeSet::new(),
            mask2: BTreeSet::new(),
            sel: vec![0; n],
            upcall_flag: vec![false; n],
            upcalls: vec![0; n],
            fifo: None,
            outcomes: BTreeMap::new(),
        }
    }

    /// `valid_evtchns`.
    pub(crate) fn valid(&self) -> u32 {
        self.ports.len() as u32
    }

    pub(crate) fn abi_name(&self) -> &'static str {
        if self.fifo.is_some() {
            "FIFO"
        } else {
            "2-level"
        }
    }

    /// Non-free ports other than port 0 (`active_evtchns`).
    fn active(&self) -> usize {
        self.ports[1..]
            .iter()
            .filter(|p| p.binding != Binding::Free)
            .count()
    }

    /// §1.1: the lowest free port ≥ 1 that the ABI does not call busy; buckets grow as the
    /// search reaches them.
    fn alloc(&mut self) -> Result<u32, Errno> {
        let abi_limit = if self.fifo.is_some() {
            FIFO_PORTS
        } else {
            TWO_LEVEL_PORTS
        };
        let mut port = 1u32;
        while port <= self.max_port && port < abi_limit {
            if port >= self.valid() {
                if self.valid() / PORTS_PER_BUCKET >= self.buckets {
                    break;
                }
                self.ports.extend(std::iter::repeat_n(
                    Port::default(),
                    PORTS_PER_BUCKET as usize,
                ));
            }
            if self.ports[port as usize].binding == Binding::Free && !self.is_busy(port) {
                return Ok(port);
            }
            port += 1;
        }
        Err(Errno::ENOSPC)
    }

    /// FIFO: a free port whose word is still LINKED is not reused (§2.2).
    fn is_busy(&self, port: u32) -> bool {
        self.fifo
            .as_ref()
            .and_then(|f| f.word(port))
            .is_some_and(|w| w.linked)
    }

    /// Binds a freshly allocated port; the ABI's init hook (FIFO: priority 7).
    fn bind(&mut self, port: u32, binding: Binding, vcpu: u32) {
        let fifo = self.fifo.is_some();
        let p = &mut self.ports[port as usize];
        if fifo {
            p.priority = PRIORITY_DEFAULT;
        }
        p.binding = binding;
        p.vcpu = vcpu;
    }

    /// "Mark events pending": the upcall flag's 0 → 1 edge asks the VMM for an upcall.
    fn mark_events_pending(&mut self, vcpu: u32) {
        let v = vcpu as usize;
        if !self.upcall_flag[v] {
            self.upcall_flag[v] = true;
            self.upcalls[v] += 1;
        }
    }

    /// 2-level selector bit, then the upcall (§3.2 step 2).
    fn notify_selector(&mut self, vcpu: u32, port: u32) {
        let bit = 1u64 << (port / 64);
        if self.sel[vcpu as usize] & bit == 0 {
            self.sel[vcpu as usize] |= bit;
            self.mark_events_pending(vcpu);
        }
    }

    /// The ABI's set_pending on `vcpu` (§3.2, §4.5).
    fn set_pending(&mut self, vcpu: u32, port: u32) {
        if self.fifo.is_some() {
            self.fifo_set_pending(vcpu, port);
        } else if port < TWO_LEVEL_PORTS
            && self.pending2.insert(port)
            && !self.mask2.contains(&port)
        {
            self.notify_selector(vcpu, port);
        }
    }

    /// §4.5, sequentially: no lock retries, no CAS failures, no BUSY.
    fn fifo_set_pending(&mut self, vcpu: u32, port: u32) {
        let Some(f) = self.fifo.as_mut() else { return };
        if port >= f.pages * WORDS_PER_PAGE {
            self.ports[port as usize].saved = true;
            self.outcome("FIFO raise: no word, saved");
            return;
        }
        let v = vcpu as usize;
        if !f.control[v] {
            f.dropped_no_control_block += 1;
            self.outcome("FIFO raise: no control block, dropped");
            return;
        }
        let w = &mut f.words[port as usize];
        w.pending = true;
        if w.masked || w.linked {
            let what = if w.masked {
                "FIFO raise: masked"
            } else {
                "FIFO raise: already linked"
            };
            self.outcome(what);
            return;
        }
        w.linked = true;
        let p = &mut self.ports[port as usize];
        let q = p.priority as usize;
        let (lv, lq) = (p.last.0 as usize, p.last.1 as usize);
        if (lv, lq) == (v, q) {
            if f.tail[v][q] == port {
                f.tail[v][q] = 0;
            }
        } else {
            if f.tail[lv][lq] == port {
                f.tail[lv][lq] = 0;
            }
            p.last = (vcpu, q as u32);
        }
        let tail = f.tail[v][q];
        let linked = tail != 0 && f.word(tail).is_some_and(|w| w.linked);
        if linked {
            f.words[tail as usize].link = port;
        } else {
            f.head[v][q] = port;
        }
        f.tail[v][q] = port;
        let new_ready = !linked && f.ready[v] & (1 << q) == 0;
        if new_ready {
            f.ready[v] |= 1 << q;
            self.mark_events_pending(vcpu);
        }
        self.outcome(match (linked, new_ready) {
            (true, _) => "FIFO raise: appended to a tail",
            (false, true) => "FIFO raise: new head, READY set",
            (false, false) => "FIFO raise: new head, READY already set",
        });
    }

    /// Raise a usable port on its notify VCPU.
    fn raise(&mut self, port: u32) {
        if let Some(p) = self.ports.get(port as usize).copied() {
            if p.usable() && p.vcpu < self.vcpus {
                self.set_pending(p.vcpu, port);
            }
        }
    }

    /// The ABI's clear_pending (on close): 2-level bit, or FIFO PENDING only.
    fn clear_pending(&mut self, port: u32) {
        match self.fifo.as_mut() {
            Some(f) => {
                if let Some(w) = f.words.get_mut(port as usize) {
                    w.pending = false;
                }
            }
            None => {
                self.pending2.remove(&port);
            }
        }
    }

    /// The ABI's unmask (§3.4, §4.9).
    fn abi_unmask(&mut self, vcpu: u32, port: u32) {
        match self.fifo.as_mut() {
            Some(f) => {
                let Some(w) = f.words.get_mut(port as usize) else {
                    return;
                };
                w.masked = false;
                if w.pending {
                    self.fifo_set_pending(vcpu, port);
                }
            }
            None => {
                if port < TWO_LEVEL_PORTS
                    && self.mask2.remove(&port)
                    && self.pending2.contains(&port)
                {
                    self.notify_selector(vcpu, port);
                }
            }
        }
    }

    /// The VCPU Linux has bound `port` to (its notify VCPU).
    pub(crate) fn cpu_of(&self, port: u32) -> u32 {
        self.ports.get(port as usize).map_or(0, |p| p.vcpu)
    }

    fn status_of(&self, port: u32) -> Status {
        let p = &self.ports[port as usize];
        let status = match p.binding {
            Binding::Free | Binding::Reserved => PortStatus::Closed,
            Binding::Unbound { remote } => PortStatus::Unbound { dom: remote },
            Binding::Interdomain { dom, port } => PortStatus::Interdomain { dom, port },
            Binding::Virq(v) => PortStatus::Virq(v),
            Binding::Ipi => PortStatus::Ipi,
        };
        Status {
            status,
            vcpu: p.vcpu,
        }
    }

    /// What `is_pending` reports for a valid port.
    pub(crate) fn is_pending(&self, port: u32) -> bool {
        match &self.fifo {
            Some(f) => f.word(port).is_some_and(|w| w.pending),
            None => port < TWO_LEVEL_PORTS && self.pending2.contains(&port),
        }
    }

    /// What `is_masked` reports for a valid port.
    pub(crate) fn is_masked(&self, port: u32) -> bool {
        match &self.fifo {
            Some(f) => f.word(port).is_none_or(|w| w.masked),
            None => port >= TWO_LEVEL_PORTS || self.mask2.contains(&port),
        }
    }

    /// A guest store that masks `port` (no hypercall); nothing if the guest has no place to
    /// store it (beyond shared_info's bitmap, or no event word).
    pub(crate) fn guest_mask(&mut self, port: u32) {
        match self.fifo.as_mut() {
            Some(f) => {
                if let Some(w) = f.words.get_mut(port as usize) {
                    w.masked = true;
                }
            }
            None => {
                if port < TWO_LEVEL_PORTS {
                    self.mask2.insert(port);
                }
            }
        }
    }

    /// Linux's unmask: see `Model::guest_unmask`.
    fn guest_unmask(&mut self, port: u32) -> bool {
        match self.fifo.as_mut() {
            Some(f) => {
                let Some(w) = f.words.get_mut(port as usize) else {
                    return false;
                };
                if !w.masked {
                    return false;
                }
                if w.pending {
                    return true;
                }
                w.masked = false;
                false
            }
            None => {
                if port >= TWO_LEVEL_PORTS {
                    return false;
                }
                self.mask2.remove(&port);
                self.pending2.contains(&port)
            }
        }
    }

    /// Linux's 2-level upcall on `vcpu` (TwoLevelGuest): clear the flag, take the selector,
    /// handle every pending, unmasked port of the selected words bound to this VCPU (clearing
    /// its pending bit). Returned sorted (the guest's round-robin order is its own business).
    fn consume_two_level(&mut self, vcpu: u32) -> Vec<u32> {
        let v = vcpu as usize;
        self.upcall_flag[v] = false;
        let sel = std::mem::take(&mut self.sel[v]);
        let mut out = Vec::new();
        for word in 0..64u32 {
            if sel & (1 << word) == 0 {
                continue;
            }
            for port in word * 64..word * 64 + 64 {
                if self.pending2.contains(&port)
                    && !self.mask2.contains(&port)
                    && self.cpu_of(port) == vcpu
                {
                    self.pending2.remove(&port);
                    out.push(port);
                }
            }
        }
        out
    }

    /// Linux's FIFO upcall on `vcpu` (FifoGuest): clear the flag, take READY, walk every ready
    /// queue from HEAD in priority order, unlinking each event and handling (clearing PENDING
    /// of) each pending, unmasked one. Returned in delivery order.
    fn consume_fifo(&mut self, vcpu: u32) -> Vec<u32> {
        let v = vcpu as usize;
        self.upcall_flag[v] = false;
        let Some(f) = self.fifo.as_mut() else {
            return Vec::new();
        };
        if !f.control[v] {
            return Vec::new();
        }
        let ready = std::mem::take(&mut f.ready[v]);
        let mut out = Vec::new();
        for q in 0..QUEUES {
            if ready & (1 << q) == 0 {
                continue;
            }
            let mut port = f.head[v][q];
            for _ in 0..=FIFO_PORTS {
                let Some(w) = f.words.get_mut(port as usize) else {
                    panic!("reference model: vcpu {v} queue {q} reaches port {port} (no word)");
                };
                let next = w.link;
                w.linked = false;
                w.link = 0;
                if port != 0 && w.pending && !w.masked {
                    w.pending = false;
                    out.push(port);
                }
                if next == 0 {
                    break;
                }
                port = next;
            }
        }
        out
    }
}

/// Every domain.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    pub(crate) doms: BTreeMap<u16, Domain>,
    /// The hardware domain: default handler of global VIRQs.
    hardware: Option<u16>,
}

impl Model {
    /// Adds a domain (created paused, as Xen does).
    pub(crate) fn create_domain(&mut self, id: u16, vcpus: u32, max_port: u32, hardware: bool) {
        self.doms
            .insert(id, Domain::new(id, vcpus, hardware, max_port));
        if hardware {
            self.hardware = Some(id);
        }
    }

    /// Look-up by any id: DOMID_SELF is the caller (§0).
    fn resolve(&self, caller: u16, dom: u16) -> Option<u16> {
        let id = if dom == DOMID_SELF { caller } else { dom };
        self.doms.contains_key(&id).then_some(id)
    }

    fn dom(&self, id: u16) -> Result<&Domain, Errno> {
        self.doms.get(&id).ok_or(Errno::ESRCH)
    }

    fn dom_mut(&mut self, id: u16) -> Result<&mut Domain, Errno> {
        self.doms.get_mut(&id).ok_or(Errno::ESRCH)
    }

    /// XSM_TARGET: itself or a control domain.
    fn permits(&self, caller: u16, target: u16) -> bool {
        caller == target || self.doms.get(&caller).is_some_and(|c| c.privileged)
    }

    // ------------------------------------------------------------------------------------
    // EVTCHNOPs (§1.2)
    // ------------------------------------------------------------------------------------

    pub(crate) fn alloc_unbound(&mut self, caller: u16, dom: u16, remote: u16) -> Ret {
        let d = self.resolve(caller, dom).ok_or(Errno::ESRCH)?;
        self.dom(caller)?;
        let port = self.dom_mut(d)?.alloc()?;
        if !self.permits(caller, d) {
            return Err(Errno::EPERM);
        }
        let remote = if remote == DOMID_SELF { caller } else { remote };
        self.dom_mut(d)?.bind(port, Binding::Unbound { remote }, 0);
        Ok(Val::Port(port))
    }

    pub(crate) fn bind_interdomain(&mut self, caller: u16, rdom: u16, rport: u32) -> Ret {
        self.dom(caller)?;
        let rd = self.resolve(caller, rdom).ok_or(Errno::ESRCH)?;
        let lport = self.dom_mut(caller)?.alloc()?;
        let r = self.dom(rd)?;
        if rport >= r.valid() {
            return Err(Errno::EINVAL);
        }
        let rp = r.ports[rport as usize];
        if rp.binding != (Binding::Unbound { remote: caller }) {
            return Err(Errno::EINVAL);
        }
        self.dom_mut(caller)?.bind(
            lport,
            Binding::Interdomain {
                dom: rd,
                port: rport,
            },
            0,
        );
        // The remote end keeps its notify VCPU and priority.
        self.dom_mut(rd)?.ports[rport as usize].binding = Binding::Interdomain {
            dom: caller,
            port: lport,
        };
        self.dom_mut(caller)?.raise(lport);
        Ok(Val::Port(lport))
    }

    pub(crate) fn bind_virq(&mut self, caller: u16, virq: u32, vcpu: u32) -> Ret {
        let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
        if kind != VirqKind::PerVcpu && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        let hardware = self.hardware;
        let d = self.dom_mut(caller)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        if kind == VirqKind::Global && hardware != Some(caller) {
            return Err(Errno::EBUSY);
        }
        if d.virq[vcpu as usize][virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = d.alloc()?;
        d.bind(port, Binding::Virq(virq), vcpu);
        d.virq[vcpu as usize][virq as usize] = port;
        Ok(Val::Port(port))
    }

    pub(crate) fn bind_ipi(&mut self, caller: u16, vcpu: u32) -> Ret {
        let d = self.dom_mut(caller)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        let port = d.alloc()?;
        d.bind(port, Binding::Ipi, vcpu);
        Ok(Val::Port(port))
    }

    pub(crate) fn close(&mut self, caller: u16, port: u32) -> Ret {
        self.dom(caller)?;
        self.close_port(caller, port)
    }

    /// Xen's evtchn_close + evtchn_free.
    fn close_port(&mut self, d: u16, port: u32) -> Ret {
        let dm = self.dom_mut(d)?;
        if port >= dm.valid() {
            return Err(Errno::EINVAL);
        }
        let p = dm.ports[port as usize];
        match p.binding {
            Binding::Free | Binding::Reserved => return Err(Errno::EINVAL),
            Binding::Unbound { .. } | Binding::Ipi => {}
            Binding::Virq(virq) => {
                let map_vcpu = match virq_kind(virq) {
                    Some(VirqKind::PerVcpu) => p.vcpu,
                    _ => 0,
                };
                let entry = &mut dm.virq[map_vcpu as usize][virq as usize];
                if *entry == port {
                    *entry = 0;
                }
            }
            Binding::Interdomain { dom: pd, port: pp } => {
                // The peer reverts to unbound, naming the closer; its bits are untouched.
                if let Some(peer) = self.doms.get_mut(&pd) {
                    if let Some(q) = peer.ports.get_mut(pp as usize) {
                        if matches!(q.binding, Binding::Interdomain { .. }) {
                            q.binding = Binding::Unbound { remote: d };
                        }
                    }
                }
            }
        }
        let dm = self.dom_mut(d)?;
        let slot = &mut dm.ports[port as usize];
        slot.binding = Binding::Free;
        slot.vcpu = 0;
        dm.clear_pending(port);
        Ok(Val::Unit)
    }

    pub(crate) fn send(&mut self, caller: u16, port: u32) -> Ret {
        let d = self.dom_mut(caller)?;
        if port >= d.valid() {
            return Err(Errno::EINVAL);
        }
        let p = d.ports[port as usize];
        match p.binding {
            Binding::Interdomain { dom, port: pp } => {
                if let Some(peer) = self.doms.get_mut(&dom) {
                    peer.raise(pp);
                }
                Ok(Val::Unit)
            }
            Binding::Ipi => {
                d.set_pending(p.vcpu, port);
                Ok(Val::Unit)
            }
            Binding::Unbound { .. } => Ok(Val::Unit),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(crate) fn status(&self, caller: u16, dom: u16, port: u32) -> Ret {
        let d = self.resolve(caller, dom).ok_or(Errno::ESRCH)?;
        let dm = self.dom(d)?;
        if port >= dm.valid() {
            return Err(Errno::EINVAL);
        }
        self.dom(caller)?;
        if !self.permits(caller, d) {
            return Err(Errno::EPERM);
        }
        Ok(Val::Status(dm.status_of(port)))
    }

    pub(crate) fn bind_vcpu(&mut self, caller: u16, port: u32, vcpu: u32) -> Ret {
        let d = self.dom_mut(caller)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        if port >= d.valid() {
            return Err(Errno::EINVAL);
        }
        let p = &mut d.ports[port as usize];
        match p.binding {
            Binding::Virq(v) if virq_kind(v) == Some(VirqKind::PerVcpu) => Err(Errno::EINVAL),
            Binding::Virq(_) | Binding::Unbound { .. } | Binding::Interdomain { .. } => {
                p.vcpu = vcpu;
                Ok(Val::Unit)
            }
            _ => Err(Errno::EINVAL),
        }
    }

    pub(crate) fn unmask(&mut self, caller: u16, port: u32) -> Ret {
        let d = self.dom_mut(caller)?;
        if port >= d.valid() {
            return Err(Errno::EINVAL);
        }
        let p = d.ports[port as usize];
        if p.usable() && p.vcpu < d.vcpus {
            d.abi_unmask(p.vcpu, port);
        }
        Ok(Val::Unit)
    }

    /// §5.1, run to completion.
    pub(crate) fn reset(&mut self, caller: u16, dom: u16) -> Ret {
        let d = self.resolve(caller, dom).ok_or(Errno::ESRCH)?;
        self.dom(caller)?;
        if !self.permits(caller, d) {
            return Err(Errno::EPERM);
        }
        if d != caller && !self.dom(d)?.paused {
            return Err(Errno::EINVAL);
        }
        let valid = self.dom(d)?.valid();
        for port in 1..valid {
            if self.dom(d)?.active() == 0 {
                break;
            }
            let _ = self.close_port(d, port);
        }
        self.dom_mut(d)?.fifo = None;
        Ok(Val::Unit)
    }

    /// §4.3. `mapped`: whether `gfn` is a frame the domain has.
    pub(crate) fn init_control(
        &mut self,
        caller: u16,
        mapped: bool,
        offset: u32,
        vcpu: u32,
    ) -> Ret {
        let d = self.dom_mut(caller)?;
        if vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        if offset > CONTROL_MAX_OFFSET || offset % CONTROL_ALIGN != 0 {
            return Err(Errno::EINVAL);
        }
        if !mapped {
            return Err(Errno::EINVAL);
        }
        let v = vcpu as usize;
        if let Some(f) = d.fifo.as_mut() {
            if f.control[v] {
                return Err(Errno::EINVAL);
            }
            f.control[v] = true;
            f.head[v] = [0; QUEUES];
            f.ready[v] = 0;
            return Ok(Val::LinkBits(LINK_BITS));
        }
        let mut f = Fifo::new(d.vcpus);
        f.control[v] = true;
        // Carry-over (§4.3 f): every port gets priority 7; 2-level pending → saved flag.
        let prev = TWO_LEVEL_PORTS.min(d.valid());
        for port in 1..prev {
            let p = &mut d.ports[port as usize];
            p.priority = PRIORITY_DEFAULT;
            if d.pending2.contains(&port) {
                p.saved = true;
            }
        }
        d.fifo = Some(f);
        Ok(Val::LinkBits(LINK_BITS))
    }

    /// §4.4. `mapped`: whether `gfn` is a frame the domain has; `fill`: the value the guest
    /// wrote to every word of the page before adding it.
    pub(crate) fn expand_array(&mut self, caller: u16, mapped: bool, fill: Word) -> Ret {
        let d = self.dom_mut(caller)?;
        let Some(f) = d.fifo.as_mut() else {
            return Err(Errno::EOPNOTSUPP);
        };
        if f.pages >= MAX_ARRAY_PAGES {
            return Err(Errno::ENOSPC);
        }
        if !mapped {
            return Err(Errno::EINVAL);
        }
        let first = f.pages * WORDS_PER_PAGE;
        f.pages += 1;
        f.words
            .extend(std::iter::repeat_n(fill, WORDS_PER_PAGE as usize));
        for port in first..first + WORDS_PER_PAGE {
            let Some(p) = d.ports.get(port as usize).copied() else {
                break;
            };
            // Without the "usable" check, on the slot's notify VCPU, even for a free port.
            if p.saved && p.vcpu < d.vcpus {
                d.fifo_set_pending(p.vcpu, port);
            }
        }
        Ok(Val::Unit)
    }

    pub(crate) fn set_priority(&mut self, caller: u16, port: u32, priority: u32) -> Ret {
        let d = self.dom_mut(caller)?;
        if port >= d.valid() {
            return Err(Errno::EINVAL);
        }
        if d.fifo.is_none() {
            return Err(Errno::ENOSYS);
        }
        let p = &mut d.ports[port as usize];
        if !p.usable() {
            return Err(Errno::EACCES);
        }
        if priority > PRIORITY_LOWEST {
            return Err(Errno::EINVAL);
        }
        p.priority = priority;
        Ok(Val::Unit)
    }

    // ------------------------------------------------------------------------------------
    // Host and guest actions
    // ------------------------------------------------------------------------------------

    /// The host raises a VIRQ (§7: per-VCPU on `vcpu`; others through VCPU 0's map, to the
    /// port's notify VCPU).
    pub(crate) fn raise_virq(&mut self, dom: u16, vcpu: u32, virq: u32) -> Ret {
        let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
        let d = self.dom_mut(dom)?;
        let map_vcpu = if kind == VirqKind::PerVcpu { vcpu } else { 0 };
        if map_vcpu >= d.vcpus {
            return Err(Errno::ENOENT);
        }
        let port = d.virq[map_vcpu as usize][virq as usize];
        if port == 0 {
            return Ok(Val::Unit);
        }
        let p = d.ports[port as usize];
        if p.binding != Binding::Virq(virq) {
            return Ok(Val::Unit);
        }
        let target = if kind == VirqKind::PerVcpu {
            map_vcpu
        } else {
            p.vcpu
        };
        d.set_pending(target, port);
        Ok(Val::Unit)
    }

    pub(crate) fn set_paused(&mut self, dom: u16, paused: bool) -> Ret {
        self.dom_mut(dom)?.paused = paused;
        Ok(Val::Unit)
    }

    /// Linux's unmask of `port` (guest side): clear the mask bit unless the port is pending;
    /// a pending port stays masked and the guest issues `EVTCHNOP_unmask` (its result
    /// ignored, as Linux ignores it).
    pub(crate) fn guest_unmask(&mut self, dom: u16, port: u32) {
        let Some(d) = self.doms.get_mut(&dom) else {
            return;
        };
        if d.guest_unmask(port) {
            if d.fifo.is_none() {
                // The 2-level guest re-masks before the hypercall.
                d.mask2.insert(port);
            }
            let _ = self.unmask(dom, port);
        }
    }

    /// The guest runs VCPU `vcpu`'s upcall with the consumer of its current ABI.
    pub(crate) fn consume(&mut self, dom: u16, vcpu: u32) -> Vec<u32> {
        let Some(d) = self.doms.get_mut(&dom) else {
            return Vec::new();
        };
        if vcpu >= d.vcpus {
            return Vec::new();
        }
        if d.fifo.is_some() {
            d.consume_fifo(vcpu)
        } else {
            d.consume_two_level(vcpu)
        }
    }
}
