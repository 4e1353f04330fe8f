//! Property tests against a sequential reference model of Xen's event channel semantics.
//!
//! A case is a world of three domains (d0 privileged and the hardware domain, d1 and d2
//! unprivileged; each with 1–3 VCPUs, a `max_evtchn_port` of 1, 5, 70 or 1023, and either the
//! 2-level ABI or a FIFO set-up done before the first step) and a sequence of 1 to
//! [`MAX_OPS`] operations (`model/ops.rs`):
//!
//! * every EVTCHNOP a guest can issue: alloc_unbound, bind_interdomain, bind_virq, bind_ipi,
//!   close, send, status, bind_vcpu, unmask, reset (of itself, or of another domain, paused or
//!   not), init_control, expand_array, set_priority; plus two compositions (`connect`: offer a
//!   port and bind to it; `fifo_setup`: Linux's switch to FIFO) and `fill` (many bind_ipi);
//! * guest actions: mask a port in guest memory, Linux's unmask, run a VCPU's event upcall
//!   with the `test_utils` consumer of its ABI (`TwoLevelGuest`, `FifoGuest`);
//! * host actions: raise a VIRQ, pause or unpause a domain.
//!
//! Arguments come from small ranges so that they collide, with hostile values mixed in
//! (ports beyond the valid range and the ABI limits, VCPUs and domains that do not exist,
//! DOMID_SELF, VIRQs ≥ 24, priorities ≥ 16, bad control-block offsets, unmapped frames).
//!
//! Each step runs on the real [`EventChannels`] and on the reference model
//! (`model/reference.rs`: `BTreeMap`s and `Vec`s, written from
//! `shared/reference/xen-evtchn-semantics.md`). After **every** step they must agree on:
//!
//! * the return value (the `Ok` value, or the errno);
//! * for every domain: `abi_name`; `status` of every valid port plus the first invalid one
//!   (state, peer, notify VCPU); `is_pending` and `is_masked` of the same ports;
//! * guest memory: the 2-level pending and mask bitmaps, every VCPU's selector word and
//!   upcall flag; under FIFO, every event word of every event-array page (PENDING, MASKED,
//!   LINKED, LINK), READY and HEAD[0..16] of every control block;
//! * the upcalls the VMM was asked for (per VCPU) and the FIFO counters (events dropped for
//!   want of a control block; the others must stay 0 for a sequential, well-behaved guest);
//! * the ports a consumer delivered: the 2-level scan as a set (its round-robin order is the
//!   guest's business), the FIFO walk in order (priority order, then queue order).
//!
//! So an event the model says must be delivered (a send to an unmasked bound port, not already
//! pending, whose VCPU can receive it) must come out of the next upcall of that VCPU, and
//! nothing may come out that was not raised; the subtle cases follow Xen as the notes describe
//! it: 2-level → FIFO carry-over through the saved-pending flag (never cleared, so re-raised
//! after a reset and a second switch), events beyond the event array deferred until
//! expand_array, events for VCPUs without a control block dropped, masked events left pending,
//! free ports still LINKED skipped by allocation, stale 2-level bits after a FIFO round trip,
//! old-queue tail bookkeeping when an event moves between queues.
//!
//! A failing case is shrunk by proptest, then by a greedy pass that removes every step the
//! failure does not need, and printed one call per line with its ports resolved.
//!
//! ## Configuration
//!
//! 256 cases (override with `PROPTEST_CASES`) of 1 to 60 steps: about 7 700 steps per run
//! (256 × ~30; the exact count is printed at the end), each followed by a full comparison
//! (several hundred library queries and a few thousand guest-memory reads). About 10 s in a
//! debug build on the development machine (2 cores), well within the 30 s budget; 20 000
//! cases (600 000 steps) in release mode took under a minute and found no disagreement.
//! `failure_persistence: None`: a seed file is opaque and goes stale as soon as the strategy
//! changes; a minimal failing case is printed readably instead, to be kept below as a directed
//! regression test. The seed is random on each run, so CI keeps exploring new sequences.
//!
//! `MODEL_MAX_OPS=n` makes cases longer for a deeper (release-mode) search.
//! `MODEL_COVERAGE=1` prints, per kind of step, how often it succeeded or failed with each
//! errno, how raises ended (linked, masked, saved, dropped) and how many ports the consumers
//! delivered; `MODEL_TRACE=1` prints every step with its outcome.
//!
//! Not covered here: PIRQs, domain destruction, `register_vcpu_info`, `reset_cont`, the raw
//! hypercall entry, 32-bit guests, non-zero control-block offsets and frames shared between
//! control blocks and array pages, guests scribbling on their event words, concurrency (see
//! the other verification tests).
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "model/ops.rs"]
mod ops;
#[path = "model/reference.rs"]
mod reference;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use xen_evtchn::abi::{
    DomId, EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET, EventWord, evtchn_fifo_head_offset,
};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, UpcallRecorder};
use xen_evtchn::{DomainConfig, EventChannels, GuestPage};

use common::L;
use ops::{Case, D, DomSetup, Gfn, Op, P, Setup, V, case};
use reference::DOMID_SELF;
use reference::{Model, QUEUES, Ret, Val, WORDS_PER_PAGE, Word};

/// Most operations in a case.
const MAX_OPS: usize = 60;
/// Control page of VCPU `v`: frame `CONTROL_GFN + v` (the control block at offset 0, as Linux).
const CONTROL_GFN: u64 = 0x100;
/// Event-array page `i`: frame `ARRAY_GFN + i`, for the first [`ARRAY_PAGES`] slots.
const ARRAY_GFN: u64 = 0x200;
const ARRAY_PAGES: u32 = 3;
/// A frame no domain has.
const UNMAPPED_GFN: u64 = 0xdead_0000;

// Counters of the current thread (the test harness runs tests in parallel threads; the
// proptest runner runs every case in the test's own thread).
thread_local! {
    /// Operations executed (shrinking included) and cases run.
    static OPS_RUN: Cell<u64> = const { Cell::new(0) };
    static CASES_RUN: Cell<u64> = const { Cell::new(0) };
    /// What the run exercised: each kind of step by outcome, and how raises ended (printed
    /// with `MODEL_COVERAGE=1`).
    static COVERAGE: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
    /// The outcome of the last comparison, for `COVERAGE`.
    static LAST: RefCell<String> = const { RefCell::new(String::new()) };
}

fn cover(what: String) {
    COVERAGE.with(|c| *c.borrow_mut().entry(what).or_insert(0) += 1);
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    counter.with(|c| c.set(c.get() + 1));
}

/// The real library, the guests' memory and consumers, and the model, side by side.
struct World {
    ec: EventChannels,
    rec: Arc<UpcallRecorder>,
    memory: Vec<Arc<InMemoryGuest>>,
    two_level: Vec<TwoLevelGuest>,
    model: Model,
    /// Every step so far, its ports resolved.
    trace: Vec<String>,
}

fn real<T>(r: xen_evtchn::Result<T>, f: impl FnOnce(T) -> Val) -> Ret {
    r.map(f).map_err(|e| e.errno())
}

fn unit(r: xen_evtchn::Result<()>) -> Ret {
    real(r, |()| Val::Unit)
}

fn port(r: xen_evtchn::Result<u32>) -> Ret {
    real(r, Val::Port)
}

fn agree(what: &str, real: Ret, model: Ret) -> Result<(), String> {
    LAST.with(|l| {
        *l.borrow_mut() = match &model {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        }
    });
    if real == model {
        Ok(())
    } else {
        Err(format!("{what}: library {real:?}, model {model:?}"))
    }
}

impl World {
    fn new(setup: &Setup) -> Self {
        let ec = EventChannels::new();
        let rec = Arc::new(UpcallRecorder::new());
        let mut model = Model::default();
        let mut memory = Vec::new();
        let mut two_level = Vec::new();
        for (i, d) in setup.doms.iter().enumerate() {
            let id = i as DomId;
            let mem = Arc::new(InMemoryGuest::new());
            for v in 0..d.vcpus {
                mem.page(CONTROL_GFN + u64::from(v));
            }
            for slot in 0..ARRAY_PAGES {
                mem.page(ARRAY_GFN + u64::from(slot));
            }
            let config = DomainConfig::new(d.vcpus, rec.clone())
                .guest_memory(mem.clone())
                .max_evtchn_port(d.max_port)
                .privileged(i == 0)
                .hardware(i == 0);
            ec.create_domain(id, config).unwrap();
            model.create_domain(id, d.vcpus, d.max_port, i == 0);
            two_level.push(TwoLevelGuest::new(&ec, id, d.vcpus));
            memory.push(mem);
        }
        World {
            ec,
            rec,
            memory,
            two_level,
            model,
            trace: Vec::new(),
        }
    }

    /// The guest memory of a domain the model knows.
    fn mem(&self, dom: DomId) -> Option<&Arc<InMemoryGuest>> {
        self.model
            .doms
            .contains_key(&dom)
            .then(|| &self.memory[dom as usize])
    }

    /// Runs one step on both sides and compares what it returned (and, for an upcall, what
    /// it delivered).
    fn step(&mut self, op: &Op) -> Result<(), String> {
        bump(&OPS_RUN);
        let op = &self.resolve(op);
        self.trace.push(format!("{op:?}"));
        LAST.with(|l| l.borrow_mut().clear());
        let name = format!("{op:?}");
        let name = name.split('(').next().unwrap_or_default().to_owned();
        let abi = |w: &World| match op {
            Op::Consume { dom: D(d), .. }
            | Op::GuestMask { dom: D(d), .. }
            | Op::GuestUnmask { dom: D(d), .. } => {
                w.model.doms.get(d).map_or("-", |d| d.abi_name())
            }
            _ => "",
        };
        let before = abi(self);
        let r = self.step_inner(op);
        let outcome = LAST.with(|l| std::mem::take(&mut *l.borrow_mut()));
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("    {op:?} -> {outcome}");
        }
        cover(format!("{name} {before} {outcome}").replace("  ", " "));
        r
    }

    fn step_inner(&mut self, op: &Op) -> Result<(), String> {
        let ec = &self.ec;
        let m = &mut self.model;
        match *op {
            Op::AllocUnbound {
                caller: D(c),
                dom: D(d),
                remote: D(r),
            } => agree(
                "result",
                port(ec.alloc_unbound(c, d, r)),
                m.alloc_unbound(c, d, r),
            ),
            Op::BindInterdomain {
                caller: D(c),
                rdom: D(d),
                rport: P::Lit(p),
            } => agree(
                "result",
                port(ec.bind_interdomain(c, d, p)),
                m.bind_interdomain(c, d, p),
            ),
            Op::BindVirq {
                caller: D(c),
                virq,
                vcpu: V(v),
            } => agree(
                "result",
                port(ec.bind_virq(c, virq, v)),
                m.bind_virq(c, virq, v),
            ),
            Op::BindIpi {
                caller: D(c),
                vcpu: V(v),
            } => agree("result", port(ec.bind_ipi(c, v)), m.bind_ipi(c, v)),
            Op::Close {
                caller: D(c),
                port: P::Lit(p),
            } => agree("result", unit(ec.close(c, p)), m.close(c, p)),
            Op::Send {
                caller: D(c),
                port: P::Lit(p),
            } => agree("result", unit(ec.send(c, p)), m.send(c, p)),
            Op::Status {
                caller: D(c),
                dom: D(d),
                port: P::Lit(p),
            } => agree(
                "result",
                real(ec.status(c, d, p), Val::Status),
                m.status(c, d, p),
            ),
            Op::BindVcpu {
                caller: D(c),
                port: P::Lit(p),
                vcpu: V(v),
            } => agree("result", unit(ec.bind_vcpu(c, p, v)), m.bind_vcpu(c, p, v)),
            Op::Unmask {
                caller: D(c),
                port: P::Lit(p),
            } => agree("result", unit(ec.unmask(c, p)), m.unmask(c, p)),
            Op::GuestMask {
                dom: D(d),
                port: P::Lit(p),
            } => {
                self.guest_mask(d, p);
                Ok(())
            }
            Op::GuestUnmask {
                dom: D(d),
                port: P::Lit(p),
            } => {
                self.guest_unmask(d, p);
                Ok(())
            }
            Op::Connect { a: D(a), b: D(b) } => {
                let r = port(ec.alloc_unbound(a, DOMID_SELF, b));
                let mr = m.alloc_unbound(a, DOMID_SELF, b);
                agree("alloc_unbound", r, mr)?;
                match mr {
                    Ok(Val::Port(p)) => agree(
                        &format!("bind_interdomain({b}, {a}, {p})"),
                        port(ec.bind_interdomain(b, a, p)),
                        m.bind_interdomain(b, a, p),
                    ),
                    _ => Ok(()),
                }
            }
            Op::FifoSetup {
                dom: D(d),
                fill_masked,
                all_vcpus,
            } => {
                let vcpus = match self.model.doms.get(&d) {
                    Some(d) if all_vcpus => d.vcpus,
                    _ => 1,
                };
                for v in 0..vcpus {
                    self.step_inner(&Op::InitControl {
                        caller: D(d),
                        gfn: Gfn::Own,
                        offset: 0,
                        vcpu: V(v),
                    })?;
                }
                self.step_inner(&Op::ExpandArray {
                    caller: D(d),
                    gfn: Gfn::Own,
                    fill_masked,
                })
            }
            Op::Reset {
                caller: D(c),
                dom: D(d),
            } => agree("result", unit(ec.reset(c, d)), m.reset(c, d)),
            Op::InitControl {
                caller: D(c),
                gfn,
                offset,
                vcpu: V(v),
            } => {
                let own = self
                    .mem(c)
                    .is_some_and(|_| self.model.doms[&c].vcpus > v && gfn == Gfn::Own);
                let frame = match gfn {
                    Gfn::Own => CONTROL_GFN + u64::from(v),
                    Gfn::Unmapped => UNMAPPED_GFN,
                };
                if own {
                    // The guest hands over a zeroed page (one it is not using already).
                    let in_use = self.model.doms[&c]
                        .fifo
                        .as_ref()
                        .is_some_and(|f| f.control[v as usize]);
                    if !in_use {
                        fill_page(&self.memory[c as usize].page(frame), 0);
                    }
                }
                agree(
                    "result",
                    real(self.ec.init_control(c, frame, offset, v), Val::LinkBits),
                    self.model.init_control(c, own, offset, v),
                )
            }
            Op::ExpandArray {
                caller: D(c),
                gfn,
                fill_masked,
            } => {
                let slot = self
                    .model
                    .doms
                    .get(&c)
                    .and_then(|d| d.fifo.as_ref())
                    .map_or(0, |f| f.pages);
                let own = gfn == Gfn::Own && slot < ARRAY_PAGES && self.mem(c).is_some();
                let frame = match gfn {
                    Gfn::Own => ARRAY_GFN + u64::from(slot),
                    Gfn::Unmapped => UNMAPPED_GFN,
                };
                let fill = Word {
                    masked: fill_masked,
                    ..Word::default()
                };
                if own {
                    // Linux initialises a page before adding it (the next slot's page is not
                    // in use).
                    fill_page(&self.memory[c as usize].page(frame), fill.raw());
                }
                agree(
                    "result",
                    unit(self.ec.expand_array(c, frame)),
                    self.model.expand_array(c, own, fill),
                )
            }
            Op::SetPriority {
                caller: D(c),
                port: P::Lit(p),
                priority,
            } => agree(
                "result",
                unit(ec.set_priority(c, p, priority)),
                m.set_priority(c, p, priority),
            ),
            Op::RaiseVirq {
                dom: D(d),
                vcpu: V(v),
                virq,
            } => agree(
                "result",
                unit(ec.raise_virq(d, v, virq)),
                m.raise_virq(d, v, virq),
            ),
            Op::Consume {
                dom: D(d),
                vcpu: V(v),
            } => self.consume(d, v),
            Op::SetPaused { dom: D(d), paused } => agree(
                "result",
                unit(ec.set_paused(d, paused)),
                m.set_paused(d, paused),
            ),
            Op::ConsumeAll => {
                let vcpus: Vec<(DomId, u32)> = self
                    .model
                    .doms
                    .values()
                    .flat_map(|d| (0..d.vcpus).map(move |v| (d.id, v)))
                    .collect();
                for (d, v) in vcpus {
                    self.consume(d, v).map_err(|e| format!("d{d} v{v}: {e}"))?;
                }
                Ok(())
            }
            Op::Fill { dom: D(d), n } => {
                for i in 0..n {
                    agree(
                        &format!("bind_ipi #{i}"),
                        port(ec.bind_ipi(d, 0)),
                        m.bind_ipi(d, 0),
                    )?;
                }
                Ok(())
            }
            // `step` resolves every port argument first.
            _ => panic!("unresolved port in {op:?}"),
        }
    }

    /// `op` with every `P::Bound` replaced by a port number, chosen from the model's state
    /// (which agrees with the library's, or the case has already failed).
    fn resolve(&self, op: &Op) -> Op {
        // The k-th port of `dom` (an argument, so DOMID_SELF means `caller`) that `pick`
        // accepts, else the k-th bound port, else k + 1.
        let nth = |caller: D, dom: D, p: P, pick: &dyn Fn(&reference::Port) -> bool| -> P {
            let P::Bound(k) = p else { return p };
            let id = if dom.0 == DOMID_SELF { caller.0 } else { dom.0 };
            let Some(d) = self.model.doms.get(&id) else {
                return P::Lit(u32::from(k) + 1);
            };
            let ports = |f: &dyn Fn(&reference::Port) -> bool| -> Vec<u32> {
                (1..d.valid())
                    .filter(|&p| f(&d.ports[p as usize]))
                    .collect()
            };
            let bound = |q: &reference::Port| q.binding != reference::Binding::Free;
            let mut choice = ports(pick);
            if choice.is_empty() {
                choice = ports(&bound);
            }
            P::Lit(match choice.len() {
                0 => u32::from(k) + 1,
                n => choice[usize::from(k) % n],
            })
        };
        let any = |_: &reference::Port| true;
        let mut op = op.clone();
        match &mut op {
            Op::BindInterdomain {
                caller,
                rdom,
                rport,
            } => {
                let c = caller.0;
                *rport = nth(*caller, *rdom, *rport, &|q| {
                    q.binding == reference::Binding::Unbound { remote: c }
                });
            }
            Op::Send { caller, port } => {
                *port = nth(*caller, *caller, *port, &|q| {
                    matches!(
                        q.binding,
                        reference::Binding::Interdomain { .. } | reference::Binding::Ipi
                    )
                })
            }
            Op::BindVcpu { caller, port, .. } => {
                *port = nth(*caller, *caller, *port, &|q| match q.binding {
                    reference::Binding::Unbound { .. } | reference::Binding::Interdomain { .. } => {
                        true
                    }
                    reference::Binding::Virq(v) => ![0, 1, 7, 13].contains(&v),
                    _ => false,
                })
            }
            Op::Close { caller, port }
            | Op::Unmask { caller, port }
            | Op::SetPriority { caller, port, .. } => *port = nth(*caller, *caller, *port, &any),
            Op::Status { caller, dom, port } => *port = nth(*caller, *dom, *port, &any),
            Op::GuestMask { dom, port } | Op::GuestUnmask { dom, port } => {
                *port = nth(*dom, *dom, *port, &any)
            }
            _ => {}
        }
        op
    }

    /// The guest masks `port` in its memory: the 2-level mask bit or the FIFO MASKED bit.
    fn guest_mask(&mut self, dom: DomId, port: u32) {
        let Some(d) = self.model.doms.get_mut(&dom) else {
            return;
        };
        match &d.fifo {
            Some(f) if port < f.pages * WORDS_PER_PAGE => {
                let page =
                    self.memory[dom as usize].page(ARRAY_GFN + u64::from(port / WORDS_PER_PAGE));
                page.words32()[(port % WORDS_PER_PAGE) as usize].fetch_or(EventWord::MASKED, SEQ);
            }
            Some(_) => {}
            None if port < 4096 => {
                self.ec
                    .shared_info(dom)
                    .unwrap()
                    .atomic_u64(L.evtchn_mask_offset + 8 * (port / 64) as usize)
                    .unwrap()
                    .fetch_or(1 << (port % 64), SEQ);
            }
            None => {}
        }
        d.guest_mask(port);
    }

    /// Linux's unmask: clear the guest's mask bit, unless the port is pending, in which case
    /// the hypervisor must clear it and deliver the event (`EVTCHNOP_unmask`). Only for ports
    /// the guest could have bound (valid ones) and, under FIFO, that have an event word.
    fn guest_unmask(&mut self, dom: DomId, port: u32) {
        let Some(d) = self.model.doms.get(&dom) else {
            return;
        };
        if port >= d.valid() {
            return;
        }
        match &d.fifo {
            Some(f) if port < f.pages * WORDS_PER_PAGE => {
                let guest = self.fifo_guest(dom);
                guest.unmask(&self.ec, port);
            }
            Some(_) => return,
            None if port < 4096 => self.two_level[dom as usize].unmask(&self.ec, dom, port),
            None => return,
        }
        self.model.guest_unmask(dom, port);
    }

    /// The FIFO consumer of `dom` over its current control blocks and event-array pages (a
    /// fresh one each time: after a complete upcall Linux's private queue heads are all 0).
    fn fifo_guest(&self, dom: DomId) -> FifoGuest {
        let d = &self.model.doms[&dom];
        let f = d.fifo.as_ref().unwrap();
        let mem = &self.memory[dom as usize];
        let control = (0..d.vcpus)
            .map(|v| {
                if f.control[v as usize] {
                    mem.page(CONTROL_GFN + u64::from(v))
                } else {
                    GuestPage::new_zeroed()
                }
            })
            .collect();
        let array = (0..f.pages)
            .map(|i| mem.page(ARRAY_GFN + u64::from(i)))
            .collect();
        FifoGuest::from_pages(dom, control, array)
    }

    /// VCPU `vcpu` of `dom` runs its event upcall with the consumer of its ABI.
    fn consume(&mut self, dom: DomId, vcpu: u32) -> Result<(), String> {
        let Some(d) = self.model.doms.get(&dom) else {
            return Ok(());
        };
        if vcpu >= d.vcpus {
            return Ok(());
        }
        let d_fifo = d.fifo.is_some();
        let delivered = match &d.fifo {
            Some(_) => {
                let mut guest = self.fifo_guest(dom);
                let flag = L.vcpu_info_offset(vcpu).unwrap() + L.upcall_pending_offset;
                guest.set_vcpu_info(vcpu, self.ec.shared_info(dom).unwrap(), flag);
                guest.upcall(vcpu)
            }
            None => {
                let guest = &mut self.two_level[dom as usize];
                for p in 0..d.valid() {
                    guest.bind_to_cpu(p, d.cpu_of(p));
                }
                let mut ports = guest.upcall(vcpu);
                ports.sort_unstable();
                ports
            }
        };
        let expected = self.model.consume(dom, vcpu);
        for _ in &expected {
            cover(format!(
                "~ ports delivered ({})",
                if d_fifo { "FIFO" } else { "2-level" }
            ));
        }
        LAST.with(|l| {
            *l.borrow_mut() = match expected.len() {
                0 => "delivered 0",
                1 => "delivered 1",
                _ => "delivered 2+",
            }
            .to_owned()
        });
        if delivered == expected {
            Ok(())
        } else {
            Err(format!(
                "delivered: library+consumer {delivered:?}, model {expected:?}"
            ))
        }
    }

    /// Compares everything observable after a step.
    fn check(&self) -> Result<(), String> {
        for (&id, d) in &self.model.doms {
            let ec = &self.ec;
            let abi = ec.abi_name(id).map_err(|e| e.to_string())?;
            if abi != d.abi_name() {
                return Err(format!("d{id}: ABI: library {abi}, model {}", d.abi_name()));
            }
            // Every valid port, and the first invalid one (EINVAL).
            for p in 0..=d.valid() {
                agree(
                    &format!("d{id} status(p{p})"),
                    real(ec.status(0, id, p), Val::Status),
                    self.model.status(0, id, p),
                )?;
                let (pending, masked) = if p < d.valid() {
                    (Ok(d.is_pending(p)), Ok(d.is_masked(p)))
                } else {
                    (
                        Err(xen_evtchn::abi::Errno::EINVAL),
                        Err(xen_evtchn::abi::Errno::EINVAL),
                    )
                };
                let real_pending = ec.is_pending(id, p).map_err(|e| e.errno());
                let real_masked = ec.is_masked(id, p).map_err(|e| e.errno());
                if real_pending != pending || real_masked != masked {
                    return Err(format!(
                        "d{id} p{p}: is_pending {real_pending:?} / is_masked {real_masked:?}, \
                         model {pending:?} / {masked:?}"
                    ));
                }
            }
            self.check_shared_info(id, d)?;
            self.check_fifo(id, d)?;
        }
        Ok(())
    }

    /// 2-level bitmaps, selectors, upcall flags, upcall counts.
    fn check_shared_info(&self, id: DomId, d: &reference::Domain) -> Result<(), String> {
        let si = self.ec.shared_info(id).unwrap();
        let u64_at = |off: usize| si.atomic_u64(off).unwrap().load(SEQ);
        for w in 0..64u32 {
            let bits = |set: &std::collections::BTreeSet<u32>| {
                set.range(w * 64..w * 64 + 64)
                    .fold(0u64, |acc, p| acc | 1 << (p % 64))
            };
            let pending = u64_at(L.evtchn_pending_offset + 8 * w as usize);
            let mask = u64_at(L.evtchn_mask_offset + 8 * w as usize);
            if pending != bits(&d.pending2) || mask != bits(&d.mask2) {
                return Err(format!(
                    "d{id} 2-level word {w}: pending {pending:#x} mask {mask:#x}, model \
                     pending {:#x} mask {:#x}",
                    bits(&d.pending2),
                    bits(&d.mask2)
                ));
            }
        }
        for v in 0..d.vcpus {
            let info = L.vcpu_info_offset(v).unwrap();
            let sel = u64_at(info + L.pending_sel_offset);
            let flag = si
                .atomic_u8(info + L.upcall_pending_offset)
                .unwrap()
                .load(SEQ)
                != 0;
            let upcalls = self.rec.count(id, v);
            let (msel, mflag, mupcalls) = (
                d.sel[v as usize],
                d.upcall_flag[v as usize],
                d.upcalls[v as usize],
            );
            if (sel, flag, upcalls) != (msel, mflag, mupcalls) {
                return Err(format!(
                    "d{id} v{v}: selector {sel:#x}, upcall flag {flag}, upcalls {upcalls}; \
                     model {msel:#x}, {mflag}, {mupcalls}"
                ));
            }
        }
        Ok(())
    }

    /// FIFO counters, control blocks, event words.
    fn check_fifo(&self, id: DomId, d: &reference::Domain) -> Result<(), String> {
        let counters = self.ec.fifo_counters(id).unwrap();
        let Some(f) = &d.fifo else {
            return match counters {
                None => Ok(()),
                Some(c) => Err(format!("d{id}: FIFO counters {c:?} on a 2-level domain")),
            };
        };
        let Some(c) = counters else {
            return Err(format!("d{id}: no FIFO counters on a FIFO domain"));
        };
        let seen = (
            c.dropped_no_control_block,
            c.dropped_queue_changes,
            c.link_gave_up,
            c.bound_while_linked,
        );
        if seen != (f.dropped_no_control_block, 0, 0, 0) {
            return Err(format!(
                "d{id}: FIFO counters {c:?}, model dropped_no_control_block {}",
                f.dropped_no_control_block
            ));
        }
        let mem = &self.memory[id as usize];
        for v in 0..d.vcpus {
            if !f.control[v as usize] {
                continue;
            }
            let page = mem.page(CONTROL_GFN + u64::from(v));
            let ready = page
                .atomic_u32(EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET)
                .unwrap()
                .load(SEQ);
            let head: Vec<u32> = (0..QUEUES as u32)
                .map(|q| {
                    page.atomic_u32(evtchn_fifo_head_offset(q).unwrap())
                        .unwrap()
                        .load(SEQ)
                })
                .collect();
            if ready != f.ready[v as usize] || head[..] != f.head[v as usize][..] {
                return Err(format!(
                    "d{id} v{v} control block: READY {ready:#x} HEAD {head:?}; model {:#x} {:?}",
                    f.ready[v as usize], f.head[v as usize]
                ));
            }
        }
        for page in 0..f.pages {
            let words = mem.page(ARRAY_GFN + u64::from(page));
            let first = page * WORDS_PER_PAGE;
            for (i, real) in words.words32().iter().enumerate() {
                let p = first + i as u32;
                let (raw, w) = (real.load(SEQ), f.words[p as usize]);
                if raw != w.raw() {
                    return Err(format!(
                        "d{id} p{p} event word {:?}, model {:?}",
                        EventWord::new(raw),
                        EventWord::new(w.raw())
                    ));
                }
            }
        }
        Ok(())
    }
}

const SEQ: Ordering = Ordering::SeqCst;

/// Writes `value` to every 32-bit word of `page`.
fn fill_page(page: &GuestPage, value: u32) {
    for w in page.words32() {
        w.store(value, SEQ);
    }
}

/// Runs a case: every step, then a full comparison.
fn run_case(case: &Case) -> Result<(), String> {
    bump(&CASES_RUN);
    let mut world = World::new(&case.setup);
    world.check().map_err(|e| format!("initial state: {e}"))?;
    for (i, d) in case.setup.doms.iter().enumerate() {
        if let Some((fill_masked, all_vcpus)) = d.fifo {
            let setup = Op::FifoSetup {
                dom: D(i as DomId),
                fill_masked,
                all_vcpus,
            };
            world
                .step_inner(&setup)
                .and_then(|()| world.check())
                .map_err(|e| format!("set-up `{setup:?}`: {e}"))?;
        }
    }
    for (i, op) in case.ops.iter().enumerate() {
        if let Err(e) = world.step(op).and_then(|()| world.check()) {
            let trace: Vec<String> = world
                .trace
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  {i:2}: {op}"))
                .collect();
            return Err(format!(
                "step {i} `{}`: {e}\nsetup: {:?}\nsteps, ports resolved:\n{}\n",
                world.trace[i],
                case.setup,
                trace.join("\n")
            ));
        }
    }
    for d in world.model.doms.values() {
        for (what, n) in &d.outcomes {
            for _ in 0..*n {
                cover(format!("~ {what}"));
            }
        }
        for p in 1..d.valid() {
            if d.is_pending(p) {
                cover(format!("~ pending at end ({})", d.abi_name()));
            }
        }
    }
    Ok(())
}

#[test]
fn library_matches_reference_model() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let max_ops = std::env::var("MODEL_MAX_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(MAX_OPS);
    let result = runner.run(&case(max_ops), |c| {
        run_case(&c).map_err(TestCaseError::fail)
    });
    eprintln!(
        "reference model: {} cases, {} operations (each followed by a full comparison)",
        CASES_RUN.with(Cell::get),
        OPS_RUN.with(Cell::get),
    );
    if std::env::var_os("MODEL_COVERAGE").is_some() {
        COVERAGE.with(|c| {
            for (what, n) in c.borrow().iter() {
                eprintln!("{n:8}  {what}");
            }
        });
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(_, case)) => {
            let case = remove_steps(case);
            let e = fails(&case).unwrap_or_default();
            panic!("minimal failing case:\n{case:?}\n{e}");
        }
        Err(e) => panic!("{e}"),
    }
}

/// How a case fails (a mismatch, or a panic of a consumer model), if it does.
fn fails(case: &Case) -> Option<String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case))) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned()),
        ),
    }
}

/// Proptest shrinks a sequence by removing steps, then by simplifying the steps left (which
/// turns irrelevant ones into the simplest step rather than removing them); a last greedy
/// pass removes every step the failure does not need.
fn remove_steps(mut case: Case) -> Case {
    loop {
        let before = case.ops.len();
        let mut i = 0;
        while i < case.ops.len() && case.ops.len() > 1 {
            let mut shorter = case.clone();
            shorter.ops.remove(i);
            if fails(&shorter).is_some() {
                case = shorter;
            } else {
                i += 1;
            }
        }
        if case.ops.len() == before {
            return case;
        }
    }
}

// ----------------------------------------------------------------------------------------
// Directed cases: sequences the random search reaches only rarely, run through the same
// comparison. Each names the behaviour (of Xen, per the reference notes) it pins down.
// ----------------------------------------------------------------------------------------

/// d0 privileged (2 VCPUs, 2-level), d1 and d2 as given.
fn world(d1: DomSetup, d2: DomSetup) -> Setup {
    Setup {
        doms: [dom(2, None), d1, d2],
    }
}

fn dom(vcpus: u32, fifo: Option<(bool, bool)>) -> DomSetup {
    DomSetup {
        vcpus,
        max_port: 1023,
        fifo,
    }
}

#[track_caller]
fn scenario(setup: Setup, ops: Vec<Op>) {
    if let Err(e) = run_case(&Case { setup, ops }) {
        panic!("{e}");
    }
}

const FIFO_ALL: Option<(bool, bool)> = Some((false, true));

/// §4.5 step 5a: an event moved to another queue (set_priority) after the guest consumed it
/// makes the old queue forget it as its tail; the next event of the old queue starts a new
/// list at HEAD instead of being linked behind it.
#[test]
fn fifo_old_queue_forgets_a_moved_tail() {
    scenario(
        world(dom(1, FIFO_ALL), dom(1, None)),
        vec![
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
            Op::SetPriority {
                caller: D(1),
                port: P::Lit(1),
                priority: 3,
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(2),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
        ],
    );
}

/// §3.4: unmasking a port that is not masked does nothing, even if it is pending and its
/// selector bit is clear (here: raised on VCPU 0, then moved to VCPU 1, so VCPU 0's scan
/// skipped it).
#[test]
fn two_level_unmask_of_an_unmasked_port_does_not_notify() {
    scenario(
        world(dom(2, None), dom(1, None)),
        vec![
            Op::AllocUnbound {
                caller: D(1),
                dom: D(DOMID_SELF),
                remote: D(0),
            },
            Op::BindInterdomain {
                caller: D(0),
                rdom: D(1),
                rport: P::Lit(1),
            },
            Op::Send {
                caller: D(0),
                port: P::Lit(1),
            },
            Op::BindVcpu {
                caller: D(1),
                port: P::Lit(1),
                vcpu: V(1),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
            Op::Unmask {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(1),
            },
        ],
    );
}

/// §4.3 f, §4.4 5, §5.1: a 2-level pending port is carried over to FIFO and raised when its
/// page arrives; reset closes it (clearing only the FIFO PENDING), so the 2-level bit is still
/// set back on 2-level; the saved flag is never cleared, so a second switch raises the (now
/// free) port once more.
#[test]
fn pending_state_across_fifo_switches_and_reset() {
    scenario(
        world(dom(1, None), dom(1, None)),
        vec![
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::InitControl {
                caller: D(1),
                gfn: Gfn::Own,
                offset: 0,
                vcpu: V(0),
            },
            Op::ExpandArray {
                caller: D(1),
                gfn: Gfn::Own,
                fill_masked: false,
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
            Op::Reset {
                caller: D(1),
                dom: D(DOMID_SELF),
            },
            Op::InitControl {
                caller: D(1),
                gfn: Gfn::Own,
                offset: 0,
                vcpu: V(0),
            },
            Op::ExpandArray {
                caller: D(1),
                gfn: Gfn::Own,
                fill_masked: false,
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
        ],
    );
}

/// §4.3, §8.11: events for a VCPU without a control block are lost (PENDING not set, counted);
/// events for a port beyond the event array wait for expand_array.
#[test]
fn fifo_drops_without_control_block_and_defers_without_page() {
    scenario(
        world(dom(2, Some((false, false))), dom(1, None)),
        vec![
            Op::BindIpi {
                caller: D(1),
                vcpu: V(1),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(1),
            },
            Op::Reset {
                caller: D(1),
                dom: D(1),
            },
            Op::InitControl {
                caller: D(1),
                gfn: Gfn::Own,
                offset: 0,
                vcpu: V(1),
            },
            Op::BindIpi {
                caller: D(1),
                vcpu: V(1),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::InitControl {
                caller: D(1),
                gfn: Gfn::Own,
                offset: 0,
                vcpu: V(0),
            },
            Op::ExpandArray {
                caller: D(1),
                gfn: Gfn::Own,
                fill_masked: false,
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(1),
            },
        ],
    );
}

/// §2.2, §8.1: a FIFO port closed while its event is still LINKED is not reused until the
/// guest unlinks it; PENDING was cleared by the close, so the guest's walk delivers nothing.
#[test]
fn fifo_free_but_linked_port_is_skipped_by_allocation() {
    scenario(
        world(dom(1, FIFO_ALL), dom(1, None)),
        vec![
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::Close {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
            Op::Consume {
                dom: D(1),
                vcpu: V(0),
            },
            Op::BindIpi {
                caller: D(1),
                vcpu: V(0),
            },
        ],
    );
}

/// §2.2, §8.4, §5.1: closing one end of an interdomain channel reverts the other to unbound
/// naming the closer; a paused domain can be reset by a privileged one, and its peers revert
/// too; an unpaused one cannot (EINVAL).
#[test]
fn interdomain_close_and_reset_of_another_domain() {
    scenario(
        world(dom(1, None), dom(1, FIFO_ALL)),
        vec![
            Op::Connect { a: D(1), b: D(2) },
            Op::Connect { a: D(2), b: D(1) },
            Op::Close {
                caller: D(2),
                port: P::Lit(1),
            },
            Op::Send {
                caller: D(1),
                port: P::Lit(1),
            },
            Op::BindInterdomain {
                caller: D(2),
                rdom: D(1),
                rport: P::Lit(1),
            },
            Op::SetPaused {
                dom: D(2),
                paused: false,
            },
            Op::Reset {
                caller: D(0),
                dom: D(2),
            },
            Op::SetPaused {
                dom: D(2),
                paused: true,
            },
            Op::Reset {
                caller: D(0),
                dom: D(2),
            },
            Op::ConsumeAll,
        ],
    );
}
