//! The FIFO ABI end to end: the errors of its three commands, delivery to a model of Linux's
//! FIFO consumer (priorities, FIFO order, VCPUs), the switch from the 2-level ABI with events
//! pending, reset back to 2-level, all 131072 ports, events moved between queues while linked,
//! hostile guests, and real threads.
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Env, L, Rng, ack_vcpu, errno, guest_mask, upcall_pending};
use xen_evtchn::abi::{
    DOMID_SELF, DomId, EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_set_priority, Errno,
    EventWord, EvtchnExpandArray, EvtchnInitControl, EvtchnOpArg, EvtchnPort, EvtchnSetPriority,
    VIRQ_DEBUG, VIRQ_TIMER,
};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest};
use xen_evtchn::{DomainConfig, EventChannels, FifoCounters, GuestPage, PortStatus, Status};

/// The guest under test.
const D: DomId = 1;
/// First frame of the FIFO consumer's pages (control blocks, then event-array pages).
const BASE: u64 = 0x1000;

const PENDING: u32 = EventWord::PENDING;
const MASKED: u32 = EventWord::MASKED;
const LINKED: u32 = EventWord::LINKED;
const BUSY: u32 = EventWord::BUSY;
const LINK_MASK: u32 = EventWord::LINK_MASK;

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

/// dom0 (privileged, 2-level) and guest `D` with `vcpus` VCPUs and its own guest memory.
fn setup(vcpus: u32) -> (Env, Arc<InMemoryGuest>) {
    setup_with(vcpus, |c| c)
}

/// As [`setup`], with extra configuration of `D`.
fn setup_with(
    vcpus: u32,
    f: impl FnOnce(DomainConfig) -> DomainConfig,
) -> (Env, Arc<InMemoryGuest>) {
    let env = Env::new();
    env.dom0();
    let mem = Arc::new(InMemoryGuest::new());
    add_guest(&env, D, vcpus, &mem, f);
    (env, mem)
}

fn add_guest(
    env: &Env,
    id: DomId,
    vcpus: u32,
    mem: &Arc<InMemoryGuest>,
    f: impl FnOnce(DomainConfig) -> DomainConfig,
) {
    env.ec
        .create_domain(id, f(env.cfg(vcpus).guest_memory(mem.clone())))
        .unwrap();
}

/// What Linux does when it binds an IRQ to `port`: make sure its event-array page exists,
/// then unmask it. Returns whether the unmask had to ask the hypervisor (the port was
/// pending).
fn open_port(ec: &EventChannels, g: &mut FifoGuest, port: EvtchnPort) -> bool {
    g.ensure_port(ec, port).unwrap();
    g.unmask(ec, port)
}

/// `dom` offers a port to dom0, which binds it: (port in `dom`, port in dom0).
fn raw_channel(ec: &EventChannels, dom: DomId) -> (EvtchnPort, EvtchnPort) {
    let gp = ec.alloc_unbound(dom, DOMID_SELF, 0).unwrap();
    let d0 = ec.bind_interdomain(0, dom, gp).unwrap();
    (gp, d0)
}

/// A channel dom0 → `dom` whose end in `dom` is open in `g` (and not pending).
fn channel(ec: &EventChannels, g: &mut FifoGuest, dom: DomId) -> (EvtchnPort, EvtchnPort) {
    let (gp, d0) = raw_channel(ec, dom);
    assert!(!open_port(ec, g, gp), "a fresh channel is not pending");
    (gp, d0)
}

/// Word `port` of an event array made of `pages`.
fn word_in(pages: &[GuestPage], port: EvtchnPort) -> Option<&AtomicU32> {
    pages
        .get((port / 1024) as usize)?
        .atomic_u32((port % 1024) as usize * 4)
}

fn load(w: &AtomicU32) -> u32 {
    w.load(Ordering::SeqCst)
}

/// READY of a control block at byte `offset` of `page`.
fn ready_at(page: &GuestPage, offset: usize) -> u32 {
    load(page.atomic_u32(offset).unwrap())
}

/// HEAD[q] of a control block at byte `offset` of `page`.
fn head_at(page: &GuestPage, offset: usize, q: u32) -> u32 {
    load(page.atomic_u32(offset + 8 + 4 * q as usize).unwrap())
}

/// Upcalls requested for `D` (dom0's own upcalls, from its binds, are not counted).
fn d_upcalls(env: &Env) -> u64 {
    env.rec.count(D, 0) + env.rec.count(D, 1)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Runs `f` on a helper thread and fails if it does not finish in time (a hang).
fn with_watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        // The closure panicked: propagate its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out: the hypervisor hangs?"),
    }
}

// ----------------------------------------------------------------------------------------
// 1. Errors of init_control, expand_array and set_priority, in Xen's order
// ----------------------------------------------------------------------------------------

#[test]
fn init_control_errors_in_xen_order() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    env.guest(2, 1); // no guest memory at all
    let cb = mem.page(0x100);

    // ESRCH: no such caller, before every other check.
    assert_eq!(errno(ec.init_control(9, 0x100, 0, 0)), Errno::ESRCH);
    assert_eq!(errno(ec.init_control(9, 0x999, 4, 7)), Errno::ESRCH);
    // ENOENT: no such VCPU, before the offset and the frame.
    assert_eq!(errno(ec.init_control(D, 0x100, 0, 2)), Errno::ENOENT);
    assert_eq!(errno(ec.init_control(D, 0x999, 4, 2)), Errno::ENOENT);
    assert_eq!(
        errno(ec.init_control(D, 0x100, 4032, u32::MAX)),
        Errno::ENOENT
    );
    // EINVAL: offset misaligned or the 72-byte block would cross the page end.
    for off in [4, 1, 4020, 4028, 4032, 4096, u32::MAX] {
        assert_eq!(
            errno(ec.init_control(D, 0x100, off, 0)),
            Errno::EINVAL,
            "offset {off}"
        );
    }
    // EINVAL: the frame is not guest memory; the domain has no guest memory.
    assert_eq!(errno(ec.init_control(D, 0x999, 0, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.init_control(2, 0x100, 0, 0)), Errno::EINVAL);
    // None of the failures switched anything.
    for d in [D, 2] {
        assert_eq!(ec.abi_name(d).unwrap(), "2-level");
        assert_eq!(ec.fifo_counters(d).unwrap(), None);
    }
    assert_eq!(errno(ec.fifo_counters(9)), Errno::ESRCH);

    // The highest valid offset: 4024 (4096 - 72).
    assert_eq!(ec.init_control(D, 0x100, 4024, 0), Ok(17));
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    // Second init of the same VCPU: EINVAL (not EEXIST), whatever the frame and offset.
    mem.page(0x101);
    assert_eq!(errno(ec.init_control(D, 0x101, 0, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.init_control(D, 0x100, 4024, 0)), Errno::EINVAL);
    // VCPU 1: a bad frame fails (the domain stays FIFO), then the same page as VCPU 0 at
    // offset 0 is accepted (Xen does not check that blocks do not share a page).
    assert_eq!(errno(ec.init_control(D, 0x999, 0, 1)), Errno::EINVAL);
    assert_eq!(errno(ec.init_control(D, 0x100, 8, 2)), Errno::ENOENT);
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    assert_eq!(ec.init_control(D, 0x100, 0, 1), Ok(17));
    assert_eq!(errno(ec.init_control(D, 0x100, 0, 1)), Errno::EINVAL);

    // The blocks are where the guest put them: an IPI per VCPU lands in READY and HEAD[7]
    // of its own block.
    mem.page(0x200);
    ec.expand_array(D, 0x200).unwrap();
    let ipi0 = ec.bind_ipi(D, 0).unwrap();
    let ipi1 = ec.bind_ipi(D, 1).unwrap();
    ec.send(D, ipi0).unwrap();
    assert_eq!((ready_at(&cb, 4024), head_at(&cb, 4024, 7)), (1 << 7, ipi0));
    assert_eq!((ready_at(&cb, 0), head_at(&cb, 0, 7)), (0, 0));
    ec.send(D, ipi1).unwrap();
    assert_eq!((ready_at(&cb, 0), head_at(&cb, 0, 7)), (1 << 7, ipi1));
    assert_eq!(upcall_pending(ec, D, 0), 1);
    assert_eq!(upcall_pending(ec, D, 1), 1);
    assert_eq!((env.rec.take(D, 0), env.rec.take(D, 1)), (1, 1));
}

#[test]
fn init_control_hypercall_writes_link_bits_back_only_on_success() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    mem.page(0x100);
    let args = |gfn: u64, offset: u32, vcpu: u32| {
        let mut b = [0u8; 24];
        EvtchnInitControl::new(gfn, offset, vcpu)
            .write_to_guest(&mut b)
            .unwrap();
        // A marker where link_bits goes, and in the padding.
        b[16] = 0xEE;
        b[17..].fill(0x55);
        b
    };
    let ret = |e: Errno| e.as_hypercall_ret();
    for (caller, gfn, offset, vcpu, expect) in [
        (9, 0x100, 0, 0, Errno::ESRCH),
        (D, 0x100, 0, 2, Errno::ENOENT),
        (D, 0x100, 4, 0, Errno::EINVAL),
        (D, 0x100, 4032, 0, Errno::EINVAL),
        (D, 0x999, 0, 0, Errno::EINVAL),
    ] {
        let mut b = args(gfn, offset, vcpu);
        let before = b;
        assert_eq!(
            ec.hypercall(caller, 0, EVTCHNOP_init_control, &mut b),
            ret(expect)
        );
        assert_eq!(b, before, "nothing written back on {expect:?}");
    }
    assert_eq!(ec.abi_name(D).unwrap(), "2-level");

    let mut b = args(0x100, 64, 1);
    let before = b;
    assert_eq!(ec.hypercall(D, 1, EVTCHNOP_init_control, &mut b), 0);
    assert_eq!(b[16], 17, "link_bits");
    assert_eq!(b[..16], before[..16], "IN fields untouched");
    let parsed = EvtchnInitControl::read_from_guest(&b).unwrap();
    assert_eq!(
        (
            parsed.control_gfn,
            parsed.offset,
            parsed.vcpu,
            parsed.link_bits
        ),
        (0x100, 64, 1, 17)
    );
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    // Again for the same VCPU: EINVAL, link_bits not written.
    let mut b = args(0x100, 64, 1);
    let before = b;
    assert_eq!(
        ec.hypercall(D, 1, EVTCHNOP_init_control, &mut b),
        ret(Errno::EINVAL)
    );
    assert_eq!(b, before);
    // VCPU 0 through the hypercall too.
    let mut b = args(0x100, 0, 0);
    assert_eq!(ec.hypercall(D, 0, EVTCHNOP_init_control, &mut b), 0);
    assert_eq!(b[16], 17);

    // expand_array and set_priority through the hypercall.
    let mut ea = [0u8; 8];
    EvtchnExpandArray::new(0x999)
        .write_to_guest(&mut ea)
        .unwrap();
    assert_eq!(
        ec.hypercall(D, 0, EVTCHNOP_expand_array, &mut ea),
        ret(Errno::EINVAL)
    );
    mem.page(0x200);
    EvtchnExpandArray::new(0x200)
        .write_to_guest(&mut ea)
        .unwrap();
    assert_eq!(ec.hypercall(D, 0, EVTCHNOP_expand_array, &mut ea), 0);
    let ipi = ec.bind_ipi(D, 0).unwrap();
    let mut sp = [0u8; 8];
    EvtchnSetPriority::new(ipi, 16)
        .write_to_guest(&mut sp)
        .unwrap();
    assert_eq!(
        ec.hypercall(D, 0, EVTCHNOP_set_priority, &mut sp),
        ret(Errno::EINVAL)
    );
    EvtchnSetPriority::new(ipi, 2)
        .write_to_guest(&mut sp)
        .unwrap();
    assert_eq!(ec.hypercall(D, 0, EVTCHNOP_set_priority, &mut sp), 0);
    ec.send(D, ipi).unwrap();
    let cb = mem.page(0x100);
    assert_eq!((ready_at(&cb, 0), head_at(&cb, 0, 2)), (1 << 2, ipi));
}

#[test]
fn expand_array_errors_in_xen_order() {
    let (env, mem) = setup(1);
    let ec = &env.ec;
    env.guest(2, 1); // no guest memory
    let page = mem.page(0x300);
    mem.page(0x100);

    assert_eq!(errno(ec.expand_array(9, 0x300)), Errno::ESRCH);
    // EOPNOTSUPP before init_control, even for a good frame, and before EINVAL.
    assert_eq!(errno(ec.expand_array(D, 0x300)), Errno::EOPNOTSUPP);
    assert_eq!(errno(ec.expand_array(D, 0x999)), Errno::EOPNOTSUPP);
    assert_eq!(errno(ec.expand_array(2, 0x300)), Errno::EOPNOTSUPP);
    assert_eq!(ec.abi_name(D).unwrap(), "2-level");

    ec.init_control(D, 0x100, 0, 0).unwrap();
    // EINVAL: a frame that is not there (or no longer there).
    assert_eq!(errno(ec.expand_array(D, 0x999)), Errno::EINVAL);
    mem.page(0x301);
    mem.remove(0x301);
    assert_eq!(errno(ec.expand_array(D, 0x301)), Errno::EINVAL);
    // The failures added no page: the first success is page 0 (ports 0..1023).
    ec.expand_array(D, 0x300).unwrap();
    let ipi = ec.bind_ipi(D, 0).unwrap();
    ec.send(D, ipi).unwrap();
    assert_eq!(
        load(word_in(std::slice::from_ref(&page), ipi).unwrap()),
        PENDING | LINKED
    );
    // Pages 1..=127: Xen does not check that the frames differ, so one frame serves them all.
    mem.page(0x302);
    for _ in 1..128 {
        ec.expand_array(D, 0x302).unwrap();
    }
    // ENOSPC after 128 pages, before the frame is looked at.
    assert_eq!(errno(ec.expand_array(D, 0x302)), Errno::ENOSPC);
    assert_eq!(errno(ec.expand_array(D, 0x999)), Errno::ENOSPC);
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
}

#[test]
fn set_priority_errors_in_xen_order_and_each_priority_is_its_queue() {
    let (env, mem) = setup(1);
    let ec = &env.ec;
    let (p, d0) = raw_channel(ec, D);
    // 2-level: EINVAL for a port that is not valid, then ENOSYS for everything else.
    assert_eq!(errno(ec.set_priority(D, 64, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.set_priority(D, p, 0)), Errno::ENOSYS);
    assert_eq!(errno(ec.set_priority(D, 5, 0)), Errno::ENOSYS);
    assert_eq!(errno(ec.set_priority(D, p, 16)), Errno::ENOSYS);

    let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
    assert!(!open_port(ec, &mut g, p));
    // EINVAL: port not valid.
    for bad in [64, 5000, 131_072, u32::MAX] {
        assert_eq!(errno(ec.set_priority(D, bad, 0)), Errno::EINVAL, "{bad}");
    }
    // EACCES: free or reserved port, before the priority check.
    assert_eq!(errno(ec.set_priority(D, 5, 0)), Errno::EACCES);
    assert_eq!(errno(ec.set_priority(D, 5, 16)), Errno::EACCES);
    assert_eq!(errno(ec.set_priority(D, 0, 3)), Errno::EACCES);
    // EINVAL: priority above 15.
    for bad in [16, 17, 255, u32::MAX] {
        assert_eq!(errno(ec.set_priority(D, p, bad)), Errno::EINVAL, "{bad}");
    }
    // 0..=15: each event goes to the queue of that priority.
    for prio in 0..=15 {
        ec.set_priority(D, p, prio).unwrap();
        ec.send(0, d0).unwrap();
        assert_eq!(g.ready(0), 1 << prio, "priority {prio}");
        assert_eq!(g.head(0, prio), p);
        assert_eq!(g.upcall(0), vec![p]);
    }
    // An unbound port and an IPI are usable too; a closed one is not.
    let u = ec.alloc_unbound(D, D, 0).unwrap();
    ec.set_priority(D, u, 15).unwrap();
    let ipi = ec.bind_ipi(D, 0).unwrap();
    ec.set_priority(D, ipi, 0).unwrap();
    ec.close(D, u).unwrap();
    assert_eq!(errno(ec.set_priority(D, u, 1)), Errno::EACCES);
    g.check_invariants().unwrap();
}

#[test]
fn events_for_a_vcpu_without_control_block_are_dropped_not_deferred() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    mem.page(0x100);
    mem.page(0x101);
    let array = mem.page(0x200);
    ec.init_control(D, 0x100, 0, 0).unwrap();
    let ipi1 = ec.bind_ipi(D, 1).unwrap();
    // No event word yet: deferred (even for a VCPU without control block)...
    ec.send(D, ipi1).unwrap();
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    // ...and when the page arrives, raised for real: VCPU 1 has no control block, so it is
    // dropped without PENDING.
    ec.expand_array(D, 0x200).unwrap();
    let w = word_in(std::slice::from_ref(&array), ipi1).unwrap();
    assert_eq!(load(w), 0);
    assert!(!ec.is_pending(D, ipi1).unwrap());
    ec.send(D, ipi1).unwrap();
    assert_eq!(load(w), 0);
    let c = ec.fifo_counters(D).unwrap().unwrap();
    assert_eq!(c.dropped_no_control_block, 2);
    assert_eq!(upcall_pending(ec, D, 1), 0);
    assert_eq!(env.rec.total(), 0);
    // Once VCPU 1 has a block, events flow, and the dropped ones stay dropped.
    ec.init_control(D, 0x101, 0, 1).unwrap();
    let cb1 = mem.page(0x101);
    assert_eq!(ready_at(&cb1, 0), 0);
    ec.send(D, ipi1).unwrap();
    assert_eq!(load(w), PENDING | LINKED);
    assert_eq!((ready_at(&cb1, 0), head_at(&cb1, 0, 7)), (1 << 7, ipi1));
    assert_eq!(env.rec.take(D, 1), 1);
}

// ----------------------------------------------------------------------------------------
// 2. Delivery to Linux's consumer: priority first, then FIFO order
// ----------------------------------------------------------------------------------------

#[test]
fn linux_consumer_gets_every_event_by_priority_then_in_send_order() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
    let chans: Vec<_> = (0..6).map(|_| channel(ec, &mut g, D)).collect();
    let c: Vec<EvtchnPort> = chans.iter().map(|x| x.0).collect();
    let d0: Vec<EvtchnPort> = chans.iter().map(|x| x.1).collect();
    let ipi0 = ec.bind_ipi(D, 0).unwrap();
    let ipi1 = ec.bind_ipi(D, 1).unwrap();
    let timer0 = ec.bind_virq(D, VIRQ_TIMER, 0).unwrap();
    let timer1 = ec.bind_virq(D, VIRQ_TIMER, 1).unwrap();
    for p in [ipi0, ipi1, timer0, timer1] {
        assert!(!open_port(ec, &mut g, p));
    }
    // VCPU 0: c0 7 (default), c1 0, c2 15, c3 3, c4 0, ipi0 3, timer0 0.
    // VCPU 1: c5 7 (default), ipi1 5, timer1 5.
    for (p, prio) in [(c[1], 0), (c[2], 15), (c[3], 3), (c[4], 0), (ipi0, 3)] {
        ec.set_priority(D, p, prio).unwrap();
    }
    ec.set_priority(D, timer0, 0).unwrap();
    ec.set_priority(D, ipi1, 5).unwrap();
    ec.set_priority(D, timer1, 5).unwrap();
    ec.bind_vcpu(D, c[5], 1).unwrap();
    for (p, v, q) in [
        (c[0], 0, 7),
        (c[1], 0, 0),
        (c[2], 0, 15),
        (c[3], 0, 3),
        (c[4], 0, 0),
        (ipi0, 0, 3),
        (timer0, 0, 0),
        (c[5], 1, 7),
        (ipi1, 1, 5),
        (timer1, 1, 5),
    ] {
        g.expect_route(p, v, q);
    }

    let send = |p: EvtchnPort| {
        if p == ipi0 || p == ipi1 {
            ec.send(D, p).unwrap();
        } else if p == timer0 {
            ec.raise_virq(D, 0, VIRQ_TIMER).unwrap();
        } else if p == timer1 {
            ec.raise_virq(D, 1, VIRQ_TIMER).unwrap();
        } else {
            ec.send(0, d0[c.iter().position(|&x| x == p).unwrap()])
                .unwrap();
        }
    };

    let order = [
        c[2], c[0], ipi0, c[1], timer0, c[5], c[3], c[4], c[0], ipi1, timer1, c[2],
    ];
    for p in order {
        send(p);
    }
    assert_eq!(g.ready(0), (1 << 0) | (1 << 3) | (1 << 7) | (1 << 15));
    assert_eq!(g.ready(1), (1 << 5) | (1 << 7));
    assert_eq!(
        [g.head(0, 0), g.head(0, 3), g.head(0, 7), g.head(0, 15)],
        [c[1], ipi0, c[0], c[2]]
    );
    assert_eq!([g.head(1, 5), g.head(1, 7)], [ipi1, c[5]]);
    // FIFO order inside a queue: LINK of each word names the next event sent.
    assert_eq!(g.event_word(c[1]).unwrap().link(), timer0);
    assert_eq!(g.event_word(timer0).unwrap().link(), c[4]);
    assert_eq!(g.event_word(c[4]).unwrap().link(), 0);
    assert!(g.upcall_pending(0) && g.upcall_pending(1));
    // One upcall per VCPU: only the first empty → non-empty transition raises it.
    assert_eq!((env.rec.take(D, 0), env.rec.take(D, 1)), (1, 1));
    g.check_invariants().unwrap();

    // Priority 0 first, then send order within a priority; repeated sends coalesce.
    assert_eq!(
        g.upcall(0),
        vec![c[1], timer0, c[4], ipi0, c[3], c[0], c[2]]
    );
    assert_eq!(g.upcall(1), vec![ipi1, timer1, c[5]]);
    for p in [
        c[0], c[1], c[2], c[3], c[4], c[5], ipi0, ipi1, timer0, timer1,
    ] {
        assert_eq!(g.event_word(p).unwrap().raw(), 0, "port {p} consumed");
    }
    g.check_invariants().unwrap();
    assert!(g.drain().is_empty());

    // The same ports in reverse order: the order inside each queue follows.
    for p in order.iter().rev() {
        send(*p);
    }
    assert_eq!(
        g.upcall(0),
        vec![c[4], timer0, c[1], c[3], ipi0, c[0], c[2]]
    );
    assert_eq!(g.upcall(1), vec![timer1, ipi1, c[5]]);
    g.check_invariants().unwrap();

    // A masked port only gets PENDING; Linux's unmask asks the hypervisor, which links it.
    g.mask(c[3]);
    send(c[3]);
    send(c[0]);
    assert_eq!(g.event_word(c[3]).unwrap().raw(), PENDING | MASKED);
    assert_eq!(g.upcall(0), vec![c[0]]);
    assert!(g.unmask(ec, c[3]));
    assert_eq!(g.ready(0), 1 << 3);
    assert_eq!(g.upcall(0), vec![c[3]]);
    g.check_invariants().unwrap();
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
}

#[test]
fn an_event_raised_again_after_consumption_restarts_its_queue() {
    // The queue's tail is the port itself, already consumed: the new event must become the
    // new HEAD, not be linked to itself.
    let (env, mem) = setup(1);
    let ec = &env.ec;
    let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
    let (p, d0) = channel(ec, &mut g, D);
    let (r, dr) = channel(ec, &mut g, D);
    for _ in 0..3 {
        ec.send(0, d0).unwrap();
        assert_eq!(g.upcall(0), vec![p]);
    }
    ec.send(0, d0).unwrap();
    assert_eq!(g.event_word(p).unwrap().raw(), PENDING | LINKED);
    ec.send(0, dr).unwrap();
    assert_eq!(g.event_word(p).unwrap().link(), r);
    assert_eq!(g.upcall(0), vec![p, r]);
    // Tail r consumed, then p: p is the new head and r's word is left alone.
    ec.send(0, d0).unwrap();
    assert_eq!(g.head(0, 7), p);
    assert_eq!(g.event_word(r).unwrap().raw(), 0);
    assert_eq!(g.upcall(0), vec![p]);
    g.check_invariants().unwrap();
}

#[test]
fn upcall_only_when_a_queue_becomes_ready() {
    let (env, mem) = setup(1);
    let ec = &env.ec;
    let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
    let [(p, dp), (r, dr), (s, ds), (t, dt)] = std::array::from_fn(|_| channel(ec, &mut g, D));
    ec.set_priority(D, s, 3).unwrap();
    ec.set_priority(D, t, 3).unwrap();
    let shared_info = ec.shared_info(D).unwrap();
    let flag = shared_info
        .atomic_u8(L.vcpu_info_offset(0).unwrap() + L.upcall_pending_offset)
        .unwrap();
    let clear_flag = || flag.store(0, Ordering::SeqCst);
    // Queue 7 empty → non-empty: READY 7 and the upcall.
    ec.send(0, dp).unwrap();
    assert_eq!((g.ready(0), upcall_pending(ec, D, 0)), (1 << 7, 1));
    assert_eq!(env.rec.take(D, 0), 1);
    // The guest enters its upcall (clears the flag) but has not consumed yet: an event
    // appended to the non-empty queue raises nothing.
    clear_flag();
    ec.send(0, dr).unwrap();
    assert_eq!((g.ready(0), upcall_pending(ec, D, 0)), (1 << 7, 0));
    assert_eq!(env.rec.take(D, 0), 0);
    // Another queue becomes ready: READY 3 and a new upcall.
    ec.send(0, ds).unwrap();
    assert_eq!(
        (g.ready(0), upcall_pending(ec, D, 0)),
        ((1 << 7) | (1 << 3), 1)
    );
    assert_eq!(env.rec.take(D, 0), 1);
    clear_flag();
    ec.send(0, dt).unwrap();
    assert_eq!(upcall_pending(ec, D, 0), 0);
    assert_eq!(g.handle_events(0), vec![s, t, p, r]);
    // A queue whose tail was consumed while its READY bit is still set (the guest has not
    // claimed READY again yet): the new event becomes HEAD, READY is already set, no upcall.
    ec.send(0, dp).unwrap();
    assert_eq!(env.rec.take(D, 0), 1);
    clear_flag();
    let hm = GuestFifoMemory::of(ec, &mem, D, 1, 1);
    hm.word(p)
        .unwrap()
        .fetch_and(!(LINKED | LINK_MASK | PENDING), Ordering::SeqCst);
    ec.send(0, dr).unwrap();
    assert_eq!((g.ready(0), g.head(0, 7)), (1 << 7, r));
    assert_eq!(upcall_pending(ec, D, 0), 0);
    assert_eq!(env.rec.take(D, 0), 0);
    assert_eq!(g.handle_events(0), vec![r]);
    g.check_invariants().unwrap();
}

// ----------------------------------------------------------------------------------------
// 3. 2-level → FIFO with events pending
// ----------------------------------------------------------------------------------------

/// Ports of the switch tests, bound and partly sent under the 2-level ABI.
struct Pending2L {
    /// Every bound port with its notify VCPU.
    ports: Vec<(EvtchnPort, u32)>,
    /// Ports pending when the switch starts (and the one sent during it), with their VCPU.
    pending: BTreeSet<(u32, EvtchnPort)>,
    /// A channel sent on between init_control and the first expand_array: (port, dom0 port).
    late: (EvtchnPort, EvtchnPort),
}

/// Binds ports on pages 0, 1 and 2 of the future event array under 2-level and sends on some.
fn bind_and_send_under_two_level(env: &Env) -> Pending2L {
    let ec = &env.ec;
    let (c1, d1) = raw_channel(ec, D);
    let (c2, d2) = raw_channel(ec, D);
    let (c3, d3) = raw_channel(ec, D);
    let late = raw_channel(ec, D);
    let ipi0 = ec.bind_ipi(D, 0).unwrap();
    let ipi1 = ec.bind_ipi(D, 1).unwrap();
    let timer1 = ec.bind_virq(D, VIRQ_TIMER, 1).unwrap();
    let debug1 = ec.bind_virq(D, VIRQ_DEBUG, 1).unwrap();
    ec.bind_vcpu(D, c2, 1).unwrap();
    // Fill up to ports 1500 (page 1) and 3000 (page 2) with unbound ports.
    let mut far = Vec::new();
    loop {
        let p = ec.alloc_unbound(D, D, 0).unwrap();
        if p == 1500 || p == 3000 {
            ec.close(D, p).unwrap();
            let (gp, d0) = raw_channel(ec, D);
            assert_eq!(gp, p);
            far.push((gp, d0));
            if p == 3000 {
                break;
            }
        }
    }
    ec.bind_vcpu(D, far[1].0, 1).unwrap();
    // Sends under 2-level: c1, c2, c3 (masked by the guest), ipi1, timer1, 1500, 3000.
    guest_mask(ec, D, c3);
    for d0 in [d1, d2, d3, far[0].1, far[1].1] {
        ec.send(0, d0).unwrap();
    }
    ec.send(D, ipi1).unwrap();
    ec.raise_virq(D, 1, VIRQ_TIMER).unwrap();
    for p in [c1, c2, c3, ipi1, timer1, far[0].0, far[1].0] {
        assert!(ec.is_pending(D, p).unwrap(), "2-level pending {p}");
    }
    assert!(!ec.is_pending(D, ipi0).unwrap());
    // The guest took the upcalls (so the FIFO ones are seen as new).
    ack_vcpu(ec, D, 0);
    ack_vcpu(ec, D, 1);
    env.rec.take(D, 0);
    env.rec.take(D, 1);
    let mut ports = vec![
        (c1, 0),
        (c2, 1),
        (c3, 0),
        (late.0, 0),
        (ipi0, 0),
        (ipi1, 1),
        (timer1, 1),
        (debug1, 0),
        (far[0].0, 0),
        (far[1].0, 1),
    ];
    ports.sort();
    let pending = [
        (0, c1),
        (1, c2),
        (0, c3),
        (1, ipi1),
        (1, timer1),
        (0, far[0].0),
        (1, far[1].0),
        (0, late.0),
    ]
    .into_iter()
    .collect();
    Pending2L {
        ports,
        pending,
        late,
    }
}

#[test]
fn switch_to_fifo_carries_pending_events_to_linux_consumer() {
    let (env, mem) = setup_with(2, |c| c.max_evtchn_port(4095));
    let ec = &env.ec;
    let s = bind_and_send_under_two_level(&env);

    // Linux's set-up: init_control on every VCPU, no page yet.
    let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    assert_eq!((g.ready(0), g.ready(1)), (0, 0));
    // A send while the port has no event word: deferred.
    ec.send(0, s.late.1).unwrap();
    assert!(!ec.is_pending(D, s.late.0).unwrap());
    // Linux opens every port: the pages are added (filled with MASKED) and the carried-over
    // events become PENDING; each unmask of a pending port asks the hypervisor.
    let mut asked = BTreeSet::new();
    for &(p, v) in &s.ports {
        if open_port(ec, &mut g, p) {
            asked.insert((v, p));
        }
    }
    assert_eq!(g.array_pages(), 3);
    assert_eq!(
        asked, s.pending,
        "exactly the pending ports were pending in FIFO"
    );
    let got: BTreeSet<(u32, EvtchnPort)> = g.drain().into_iter().collect();
    assert_eq!(got, s.pending);
    g.check_invariants().unwrap();
    // And the channels keep working.
    for &(p, v) in &s.ports {
        assert!(!ec.is_pending(D, p).unwrap(), "{p} consumed");
        if p == s.late.0 {
            ec.send(0, s.late.1).unwrap();
            assert_eq!(g.upcall(v), vec![p]);
        }
    }
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
}

#[test]
fn switch_to_fifo_with_zeroed_pages_links_carried_events_in_port_order() {
    let (env, mem) = setup_with(2, |c| c.max_evtchn_port(4095));
    let ec = &env.ec;
    let s = bind_and_send_under_two_level(&env);
    let cbs = [mem.page(0x100), mem.page(0x101)];
    let array = [mem.page(0x200), mem.page(0x201), mem.page(0x202)];

    assert_eq!(ec.init_control(D, 0x100, 0, 0), Ok(17));
    // Between the two init_control: a send to VCPU 1 with no event word is deferred.
    ec.send(0, s.late.1).unwrap();
    ec.bind_vcpu(D, s.late.0, 1).unwrap();
    assert_eq!(ec.init_control(D, 0x101, 0, 1), Ok(17));
    assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    let pending: BTreeSet<(u32, EvtchnPort)> = s
        .pending
        .iter()
        .map(|&(v, p)| if p == s.late.0 { (1, p) } else { (v, p) })
        .collect();
    // Page 0: the pending ports below 1024 are linked at once, in port order; nothing of
    // pages 1 and 2 yet.
    ec.expand_array(D, 0x200).unwrap();
    let expect_page = |v: u32, range: std::ops::Range<u32>| -> Vec<EvtchnPort> {
        pending
            .iter()
            .filter(|&&(pv, p)| pv == v && range.contains(&p))
            .map(|&(_, p)| p)
            .collect()
    };
    for v in 0..2u32 {
        let q = expect_page(v, 0..1024);
        assert_eq!(ready_at(&cbs[v as usize], 0), 1 << 7, "vcpu {v}");
        assert_eq!(head_at(&cbs[v as usize], 0, 7), q[0]);
        for pair in q.windows(2) {
            let w = load(word_in(&array, pair[0]).unwrap());
            assert_eq!(w, PENDING | LINKED | pair[1], "port {}", pair[0]);
        }
        assert_eq!(upcall_pending(ec, D, v), 1);
        assert_eq!(env.rec.take(D, v), 1);
    }
    for &(_, p) in pending.iter().filter(|&&(_, p)| p >= 1024) {
        assert!(!ec.is_pending(D, p).unwrap(), "{p}: no word yet");
    }
    ec.expand_array(D, 0x201).unwrap();
    ec.expand_array(D, 0x202).unwrap();
    // Nothing else pending in FIFO than what was pending in 2-level.
    for &(p, v) in &s.ports {
        assert_eq!(
            ec.is_pending(D, p).unwrap(),
            pending.contains(&(v, p)) || (p == s.late.0),
            "port {p}"
        );
    }

    let mut g = FifoGuest::from_pages(D, cbs.to_vec(), array.to_vec());
    for v in 0..2u32 {
        let off = L.vcpu_info_offset(v).unwrap() + L.upcall_pending_offset;
        g.set_vcpu_info(v, ec.shared_info(D).unwrap(), off);
    }
    g.check_invariants().unwrap();
    for v in 0..2u32 {
        let all: Vec<EvtchnPort> = expect_page(v, 0..4096);
        assert_eq!(g.upcall(v), all, "vcpu {v}: port order");
    }
    g.check_invariants().unwrap();
    assert!(g.drain().is_empty());
}

// ----------------------------------------------------------------------------------------
// 4. Reset back to 2-level
// ----------------------------------------------------------------------------------------

#[test]
fn reset_returns_to_two_level_and_fifo_can_be_set_up_again() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
    let (p1, d1) = channel(ec, &mut g, D);
    let (p2, d2) = channel(ec, &mut g, D);
    let ipi = ec.bind_ipi(D, 1).unwrap();
    assert!(!open_port(ec, &mut g, ipi));
    ec.bind_vcpu(D, p2, 1).unwrap();
    ec.set_priority(D, p1, 2).unwrap();
    ec.send(0, d1).unwrap();
    ec.send(0, d2).unwrap();
    assert_eq!(g.upcall(0), vec![p1]);
    // Events still queued when the reset comes.
    ec.send(0, d1).unwrap();
    ec.send(D, ipi).unwrap();
    assert_eq!((g.ready(0), g.ready(1)), (1 << 2, 1 << 7));

    // The domain runs: another domain may not reset it, the domain itself may.
    ec.set_paused(D, false).unwrap();
    assert_eq!(errno(ec.reset(0, D)), Errno::EINVAL);
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    let frames = ec.fifo_frames(D).unwrap().expect("FIFO frames");
    assert!(frames.control.iter().all(Option::is_some), "{frames:?}");
    assert!(!frames.array.is_empty(), "{frames:?}");
    ec.reset(D, DOMID_SELF).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "2-level");
    assert_eq!(
        ec.fifo_frames(D).unwrap(),
        None,
        "reset frees the FIFO set-up"
    );
    assert_eq!(ec.fifo_counters(D).unwrap(), None);
    // A domain that does not exist: ESRCH from both host queries.
    assert_eq!(errno(ec.fifo_frames(0x7000)), Errno::ESRCH);
    assert_eq!(errno(ec.fifo_counters(0x7000)), Errno::ESRCH);
    // The reset closed the ports while still FIFO: each close cleared PENDING and nothing
    // else (no unlink; the guest's words keep their queues).
    let hm = GuestFifoMemory::of(ec, &mem, D, 2, 1);
    let w = |p: EvtchnPort| load(hm.word(p).unwrap());
    assert_eq!((w(p1), w(p2), w(ipi)), (LINKED, LINKED | ipi, LINKED));
    for p in [p1, p2, ipi] {
        assert_eq!(ec.status(D, D, p).unwrap().status, PortStatus::Closed);
        assert!(!ec.is_pending(D, p).unwrap());
    }
    for d0 in [d1, d2] {
        assert_eq!(
            ec.status(0, 0, d0).unwrap().status,
            PortStatus::Unbound { dom: D }
        );
    }
    assert_eq!(errno(ec.set_priority(D, 1, 0)), Errno::ENOSYS);
    assert_eq!(errno(ec.expand_array(D, BASE + 2)), Errno::EOPNOTSUPP);

    // Events flow under 2-level.
    let mut tl = TwoLevelGuest::new(ec, D, 2);
    let q1 = ec.bind_interdomain(D, 0, d1).unwrap();
    assert_eq!(q1, 1, "lowest free port again");
    assert_eq!(tl.upcall(0), vec![q1], "bind raises the binder's port");
    ec.send(0, d1).unwrap();
    assert_eq!(tl.upcall(0), vec![q1]);

    // FIFO again on the same frames (Linux's resume path).
    g.resume(ec).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    assert_eq!(g.array_pages(), 0);
    assert!(!open_port(ec, &mut g, q1));
    ec.send(0, d1).unwrap();
    assert_eq!(g.upcall(0), vec![q1]);
    // Bound under FIFO after the page exists: the bind's raise finds a MASKED word.
    let q2 = ec.bind_interdomain(D, 0, d2).unwrap();
    assert!(open_port(ec, &mut g, q2), "raised at bind: pending");
    assert_eq!(g.upcall(0), vec![q2]);
    ec.bind_vcpu(D, q2, 1).unwrap();
    ec.send(0, d2).unwrap();
    assert_eq!(g.upcall(1), vec![q2]);
    g.check_invariants().unwrap();

    // Reset by dom0 while the domain is paused, then FIFO on fresh frames.
    ec.set_paused(D, true).unwrap();
    ec.reset(0, D).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "2-level");
    let old: Vec<u32> = [mem.page(BASE), mem.page(BASE + 2)]
        .iter()
        .flat_map(|pg| pg.words32().iter().map(load).collect::<Vec<_>>())
        .collect();
    let mut g2 = FifoGuest::new(ec, &mem, D, 2, BASE + 0x100).unwrap();
    let r1 = ec.bind_interdomain(D, 0, d1).unwrap();
    assert!(open_port(ec, &mut g2, r1));
    let r2 = ec.bind_ipi(D, 1).unwrap();
    assert!(!open_port(ec, &mut g2, r2));
    ec.send(0, d1).unwrap();
    ec.send(D, r2).unwrap();
    assert_eq!(g2.drain(), vec![(0, r1), (1, r2)]);
    g2.check_invariants().unwrap();
    // The frames of the previous FIFO set-up are not touched any more.
    let now: Vec<u32> = [mem.page(BASE), mem.page(BASE + 2)]
        .iter()
        .flat_map(|pg| pg.words32().iter().map(load).collect::<Vec<_>>())
        .collect();
    assert!(
        old == now,
        "old control block or event array written after reset"
    );
    // And a reset while FIFO has nothing bound is fine too.
    ec.close(D, r1).unwrap();
    ec.close(D, r2).unwrap();
    ec.reset(D, D).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "2-level");
}

// ----------------------------------------------------------------------------------------
// 5. All 131072 ports
// ----------------------------------------------------------------------------------------

#[test]
fn all_131072_ports_with_128_pages() {
    let (env, mem) = setup_with(1, |c| c.max_evtchn_port(131_071));
    let ec = &env.ec;
    // Under 2-level the ABI allows 4096 ports (0..=4095), whatever max_evtchn_port says.
    for expected in 1..=4095u32 {
        assert_eq!(ec.bind_ipi(D, 0).unwrap(), expected);
    }
    assert_eq!(errno(ec.bind_ipi(D, 0)), Errno::ENOSPC);
    // FIFO: up to max_evtchn_port = 131071.
    let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
    g.ensure_port(ec, 131_071).unwrap();
    assert_eq!(g.array_pages(), 128);
    mem.page(0x9_0000);
    assert_eq!(errno(ec.expand_array(D, 0x9_0000)), Errno::ENOSPC);
    for expected in 4096..=131_071u32 {
        let p = ec.bind_ipi(D, 0).unwrap();
        if p != expected {
            panic!("bind_ipi gave {p}, expected {expected}");
        }
    }
    assert_eq!(errno(ec.bind_ipi(D, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.alloc_unbound(D, D, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_virq(D, VIRQ_TIMER, 0)), Errno::ENOSPC);
    for p in [1, 1023, 1024, 131_070, 131_071] {
        assert!(!g.unmask(ec, p));
    }
    // The largest LINK value: 131070 → 131071 → 1024 → 1.
    for p in [131_070, 131_071, 1024, 1] {
        ec.send(D, p).unwrap();
    }
    assert_eq!(g.event_word(131_070).unwrap().link(), 131_071);
    assert_eq!(g.event_word(131_071).unwrap().link(), 1024);
    assert_eq!(g.upcall(0), vec![131_070, 131_071, 1024, 1]);
    ec.send(D, 131_071).unwrap();
    assert_eq!(g.head(0, 7), 131_071);
    assert_eq!(g.upcall(0), vec![131_071]);
    // The last port can be freed and allocated again; still nothing beyond it.
    ec.close(D, 131_071).unwrap();
    assert_eq!(ec.bind_ipi(D, 0).unwrap(), 131_071);
    assert_eq!(errno(ec.bind_ipi(D, 0)), Errno::ENOSPC);
    ec.send(D, 131_071).unwrap();
    assert_eq!(g.upcall(0), vec![131_071]);
    assert_eq!(errno(ec.send(D, 131_072)), Errno::EINVAL);
}

// ----------------------------------------------------------------------------------------
// 6. Events moved between VCPUs and priorities while linked
// ----------------------------------------------------------------------------------------

/// Moves `port` to (`vcpu`, `prio`) with EVTCHNOP_bind_vcpu / EVTCHNOP_set_priority.
fn move_port(ec: &EventChannels, port: EvtchnPort, vcpu: u32, prio: u32) {
    if vcpu != 0 {
        ec.bind_vcpu(D, port, vcpu).unwrap();
    }
    if prio != 7 {
        ec.set_priority(D, port, prio).unwrap();
    }
}

const MOVES: [(u32, u32); 3] = [(1, 7), (0, 3), (1, 3)];

#[test]
fn a_linked_event_stays_on_its_old_queue_then_follows_the_port() {
    for (nv, np) in MOVES {
        let (env, mem) = setup(2);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
        let (p, d0) = channel(ec, &mut g, D);
        ec.send(0, d0).unwrap();
        assert_eq!((g.ready(0), g.head(0, 7)), (1 << 7, p));
        move_port(ec, p, nv, np);
        // Already linked: the second send only sets PENDING (already set): no queue activity.
        env.rec.take(D, 0);
        ec.send(0, d0).unwrap();
        assert_eq!(g.event_word(p).unwrap().raw(), PENDING | LINKED);
        assert_eq!(g.ready(nv), if nv == 0 { 1 << 7 } else { 0 });
        assert_eq!(g.head(nv, np), 0);
        assert_eq!(d_upcalls(&env), 0);
        if nv == 1 {
            assert!(!g.upcall_pending(1));
        }
        // Consumed from the old queue.
        g.expect_route(p, 0, 7);
        assert!(g.upcall(1).is_empty());
        assert_eq!(g.upcall(0), vec![p], "move to ({nv}, {np})");
        g.check_invariants().unwrap();
        // The next event goes to the new queue.
        g.expect_route(p, nv, np);
        ec.send(0, d0).unwrap();
        assert_eq!(g.ready(nv), 1 << np);
        assert_eq!(g.head(nv, np), p);
        if nv == 1 {
            assert_eq!(g.ready(0), 0);
            assert!(g.upcall_pending(1));
            assert!(g.upcall(0).is_empty());
        }
        assert_eq!(g.upcall(nv), vec![p]);
        g.check_invariants().unwrap();
        assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    }
}

#[test]
fn a_moved_port_that_was_the_consumed_tail_of_its_old_queue_is_forgotten_there() {
    for (nv, np) in MOVES {
        let (env, mem) = setup(2);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
        let (p, dp) = channel(ec, &mut g, D);
        let (r, dr) = channel(ec, &mut g, D);
        let (s, ds) = channel(ec, &mut g, D);
        // p is the tail of (0, 7); the guest consumes it.
        ec.send(0, dp).unwrap();
        assert_eq!(g.upcall(0), vec![p]);
        // Moved, raised again: linked on its new queue, and not consumed yet.
        move_port(ec, p, nv, np);
        ec.send(0, dp).unwrap();
        assert_eq!(g.event_word(p).unwrap().raw(), PENDING | LINKED);
        assert_eq!((g.ready(nv) & (1 << np), g.head(nv, np)), (1 << np, p));
        // A new event on the old queue starts a new list there; p's LINK stays 0.
        ec.send(0, dr).unwrap();
        ec.send(0, ds).unwrap();
        assert_eq!(g.event_word(p).unwrap().link(), 0, "move to ({nv}, {np})");
        assert_eq!(g.head(0, 7), r);
        assert_ne!(g.ready(0) & (1 << 7), 0);
        assert_eq!(g.event_word(r).unwrap().link(), s);
        g.expect_route(p, nv, np);
        g.expect_route(r, 0, 7);
        g.expect_route(s, 0, 7);
        g.check_invariants().unwrap();
        let got = g.drain();
        assert_eq!(
            sorted(got.clone()),
            sorted(vec![(nv, p), (0, r), (0, s)]),
            "{got:?}"
        );
        g.check_invariants().unwrap();
        // And from now on both queues work independently.
        ec.send(0, dr).unwrap();
        ec.send(0, dp).unwrap();
        assert_eq!(sorted(g.drain()), sorted(vec![(nv, p), (0, r)]));
        g.check_invariants().unwrap();
    }
}

#[test]
fn events_on_the_old_queue_chain_behind_a_moved_port_still_linked_there() {
    for (nv, np) in MOVES {
        let (env, mem) = setup(2);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
        let (p, dp) = channel(ec, &mut g, D);
        let (r, dr) = channel(ec, &mut g, D);
        ec.send(0, dp).unwrap();
        move_port(ec, p, nv, np);
        // p is still linked on (0, 7), so r is appended after it there.
        ec.send(0, dr).unwrap();
        assert_eq!(g.event_word(p).unwrap().link(), r);
        g.expect_route(p, 0, 7);
        g.expect_route(r, 0, 7);
        assert_eq!(g.drain(), vec![(0, p), (0, r)]);
        g.check_invariants().unwrap();
        // r is now the old queue's (consumed) tail; p's next event goes to the new queue.
        g.expect_route(p, nv, np);
        ec.send(0, dp).unwrap();
        ec.send(0, dr).unwrap();
        assert_eq!(g.event_word(p).unwrap().link(), 0);
        assert_eq!(sorted(g.drain()), sorted(vec![(nv, p), (0, r)]));
        g.check_invariants().unwrap();
    }
}

// ----------------------------------------------------------------------------------------
// 7. Hostile guests
// ----------------------------------------------------------------------------------------

/// The FIFO memory of a domain, as the (hostile) guest writes it.
#[derive(Clone)]
struct GuestFifoMemory {
    control: Vec<GuestPage>,
    array: Vec<GuestPage>,
    shared_info: GuestPage,
}

impl GuestFifoMemory {
    /// The pages a [`FifoGuest::new`] with these parameters uses.
    fn of(ec: &EventChannels, mem: &InMemoryGuest, dom: DomId, vcpus: u32, pages: u32) -> Self {
        GuestFifoMemory {
            control: (0..vcpus).map(|v| mem.page(BASE + u64::from(v))).collect(),
            array: (0..pages)
                .map(|i| mem.page(BASE + u64::from(vcpus + i)))
                .collect(),
            shared_info: ec.shared_info(dom).unwrap(),
        }
    }

    fn ports(&self) -> u32 {
        self.array.len() as u32 * 1024
    }

    fn word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        word_in(&self.array, port)
    }

    fn ready(&self, v: usize) -> &AtomicU32 {
        self.control[v].atomic_u32(0).unwrap()
    }

    fn head(&self, v: usize, q: u32) -> &AtomicU32 {
        self.control[v].atomic_u32(8 + 4 * q as usize).unwrap()
    }

    /// One random write: a flag or LINK bit of an event word (mostly of `hot` ports), a new
    /// LINK, a READY bit, a HEAD, or the upcall flag.
    fn scribble(&self, rng: &mut Rng, hot: &[EvtchnPort]) {
        let port = if !hot.is_empty() && rng.below(2) == 0 {
            hot[rng.below(hot.len() as u64) as usize]
        } else {
            rng.below(u64::from(self.ports())) as u32
        };
        let v = rng.below(self.control.len() as u64) as usize;
        let w = self.word(port).unwrap();
        match rng.below(12) {
            0..=3 => {
                let bit = [28, 29, 30, 31][rng.below(4) as usize];
                w.fetch_xor(1 << bit, Ordering::SeqCst);
            }
            4 => {
                w.fetch_xor(1 << rng.below(17), Ordering::SeqCst);
            }
            5 => {
                w.fetch_xor(1 << rng.below(32), Ordering::SeqCst);
            }
            6 => {
                let link = rng.below(1 << 17) as u32;
                let old = load(w);
                w.store((old & !LINK_MASK) | link, Ordering::SeqCst);
            }
            7 => w.store(rng.next_u64() as u32, Ordering::SeqCst),
            8 => {
                self.ready(v)
                    .fetch_xor(1 << rng.below(32), Ordering::SeqCst);
            }
            9 => self
                .head(v, rng.below(16) as u32)
                .store(rng.next_u64() as u32, Ordering::SeqCst),
            10 => {
                self.head(v, rng.below(16) as u32)
                    .fetch_xor(1 << rng.below(32), Ordering::SeqCst);
            }
            _ => {
                let off = L.vcpu_info_offset(v as u32).unwrap() + L.upcall_pending_offset;
                self.shared_info
                    .atomic_u8(off)
                    .unwrap()
                    .fetch_xor(1, Ordering::SeqCst);
            }
        }
    }

    /// A consumer that trusts nothing: claims READY, walks each ready queue from HEAD for at
    /// most 64 words inside the array, unlinking them and sometimes clearing PENDING.
    fn consume(&self, rng: &mut Rng) {
        for v in 0..self.control.len() {
            let ready = self.ready(v).swap(0, Ordering::SeqCst);
            for q in 0..16 {
                if ready & (1 << q) == 0 {
                    continue;
                }
                let mut port = load(self.head(v, q));
                for _ in 0..64 {
                    let Some(w) = self.word(port) else { break };
                    let old = w.fetch_and(!(LINKED | LINK_MASK), Ordering::SeqCst);
                    if rng.below(2) == 0 {
                        w.fetch_and(!PENDING, Ordering::SeqCst);
                    }
                    port = old & LINK_MASK;
                    if port == 0 {
                        break;
                    }
                }
            }
        }
    }
}

/// The well-behaved domain of the hostile tests: channels from dom0 with various priorities
/// and VCPUs, each event expected exactly once on its route.
struct GoodDomain {
    g: FifoGuest,
    /// (port, dom0 port, vcpu).
    chans: Vec<(EvtchnPort, EvtchnPort, u32)>,
}

impl GoodDomain {
    fn new(env: &Env, id: DomId, n: usize) -> Self {
        let ec = &env.ec;
        let mem = Arc::new(InMemoryGuest::new());
        add_guest(env, id, 2, &mem, |c| c);
        let mut g = FifoGuest::new(ec, &mem, id, 2, BASE).unwrap();
        let mut chans = Vec::new();
        for i in 0..n {
            let (p, d0) = channel(ec, &mut g, id);
            let (v, prio) = ((i % 2) as u32, (i * 5 % 16) as u32);
            ec.bind_vcpu(id, p, v).unwrap();
            ec.set_priority(id, p, prio).unwrap();
            g.expect_route(p, v, prio);
            chans.push((p, d0, v));
        }
        GoodDomain { g, chans }
    }

    /// Sends on the channels selected by `pick` and checks that the consumer gets each once.
    fn round(&mut self, ec: &EventChannels, pick: impl Fn(usize) -> bool) {
        let mut expect = Vec::new();
        for (i, &(p, d0, v)) in self.chans.iter().enumerate() {
            if pick(i) {
                ec.send(0, d0).unwrap();
                expect.push((v, p));
            }
        }
        assert_eq!(sorted(self.g.drain()), sorted(expect));
    }
}

#[test]
fn hostile_guest_flipping_bits_between_sends_hurts_only_itself() {
    const H: DomId = 1;
    const G: DomId = 2;
    let env = Env::new();
    env.dom0();
    let ec = &env.ec;
    let mem = Arc::new(InMemoryGuest::new());
    add_guest(&env, H, 2, &mem, |c| c);
    let mut hostile = FifoGuest::new(ec, &mem, H, 2, BASE).unwrap();
    let mut good = GoodDomain::new(&env, G, 12);
    let mut chans: Vec<(EvtchnPort, EvtchnPort)> =
        (0..12).map(|_| channel(ec, &mut hostile, H)).collect();
    let ipis = [ec.bind_ipi(H, 0).unwrap(), ec.bind_ipi(H, 1).unwrap()];
    for p in ipis {
        open_port(ec, &mut hostile, p);
    }
    hostile.ensure_port(ec, 1500).unwrap();
    let hm = GuestFifoMemory::of(ec, &mem, H, 2, 2);
    let mut rng = Rng::new(0xF1F0_5EED);

    for round in 0..1500usize {
        let hot: Vec<EvtchnPort> = chans.iter().map(|c| c.0).chain(ipis).collect();
        for _ in 0..6 {
            hm.scribble(&mut rng, &hot);
        }
        for _ in 0..4 {
            let (_, d0) = chans[rng.below(chans.len() as u64) as usize];
            ec.send(0, d0).unwrap();
        }
        ec.send(H, ipis[round % 2]).unwrap();
        let port = hot[rng.below(hot.len() as u64) as usize];
        match rng.below(10) {
            0 => match ec.set_priority(H, port, rng.below(17) as u32) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.errno(), Errno::EINVAL),
            },
            1 => match ec.bind_vcpu(H, port, rng.below(2) as u32) {
                Ok(()) => {}
                Err(e) => assert!(ipis.contains(&port), "{e}"),
            },
            2 => ec.unmask(H, port).unwrap(),
            3 if !ipis.contains(&port) => {
                // Close and re-bind: allocation skips ports whose word is LINKED.
                let i = chans.iter().position(|c| c.0 == port).unwrap();
                ec.close(H, port).unwrap();
                match ec.bind_interdomain(H, 0, chans[i].1) {
                    Ok(np) => {
                        assert!(np < 1024);
                        chans[i].0 = np;
                    }
                    Err(e) => {
                        assert_eq!(e.errno(), Errno::ENOSPC);
                        chans.remove(i);
                    }
                }
            }
            4..=5 => hm.consume(&mut rng),
            _ => {}
        }
        // The well-behaved domain, in the same loop.
        good.round(ec, |i| (round + i) % 3 != 0);
    }
    good.g.check_invariants().unwrap();
    assert_eq!(ec.fifo_counters(G).unwrap(), Some(FifoCounters::default()));
    // Single-threaded: nothing raced the hypervisor, so none of its bail-outs ran.
    assert_eq!(ec.fifo_counters(H).unwrap(), Some(FifoCounters::default()));

    // The hostile domain can start over: reset, FIFO on fresh frames, events flow.
    ec.reset(H, DOMID_SELF).unwrap();
    assert_eq!(ec.abi_name(H).unwrap(), "2-level");
    let mut fresh = FifoGuest::new(ec, &mem, H, 2, BASE + 0x1000).unwrap();
    let (p, d0) = channel(ec, &mut fresh, H);
    ec.send(0, d0).unwrap();
    assert_eq!(fresh.upcall(0), vec![p]);
    fresh.check_invariants().unwrap();
}

#[test]
fn hostile_guest_rewriting_words_concurrently_cannot_stall_the_hypervisor() {
    with_watchdog(60, || {
        const H: DomId = 1;
        const G: DomId = 2;
        let env = Env::new();
        env.dom0();
        let ec = &env.ec;
        let mem = Arc::new(InMemoryGuest::new());
        add_guest(&env, H, 2, &mem, |c| c);
        let mut hostile = FifoGuest::new(ec, &mem, H, 2, BASE).unwrap();
        let mut good = GoodDomain::new(&env, G, 8);
        let chans: Vec<(EvtchnPort, EvtchnPort)> =
            (0..6).map(|_| channel(ec, &mut hostile, H)).collect();
        let hot: Vec<EvtchnPort> = chans.iter().map(|c| c.0).collect();
        let hm = GuestFifoMemory::of(ec, &mem, H, 2, 1);
        let stop = AtomicBool::new(false);
        let scribbles = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut rng = Rng::new(0xBAD_6E57);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    hm.scribble(&mut rng, &hot);
                    // Keep the hot words LINKED-ish and churning, as a guest fighting the
                    // hypervisor's CAS would.
                    let p = hot[rng.below(hot.len() as u64) as usize];
                    hm.word(p)
                        .unwrap()
                        .store(rng.next_u64() as u32 | LINKED, Ordering::SeqCst);
                    n += 1;
                }
                scribbles.store(n, Ordering::Relaxed);
            });
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&stop);
            let mut rng = Rng::new(7);
            for i in 0..20_000usize {
                let (p, d0) = chans[i % chans.len()];
                ec.send(0, d0).unwrap();
                if i % 5 == 0 {
                    ec.unmask(H, p).unwrap();
                }
                if i % 7 == 0 {
                    ec.set_priority(H, p, rng.below(16) as u32).unwrap();
                }
                if i % 11 == 0 {
                    ec.bind_vcpu(H, p, rng.below(2) as u32).unwrap();
                }
                if i % 16 == 0 {
                    good.round(ec, |_| true);
                }
            }
        });
        assert!(scribbles.load(Ordering::Relaxed) > 0);
        good.g.check_invariants().unwrap();
        assert_eq!(ec.fifo_counters(G).unwrap(), Some(FifoCounters::default()));
        let hc = ec.fifo_counters(H).unwrap().expect("still FIFO");
        assert_eq!(hc.dropped_no_control_block, 0);
        assert_eq!(hc.bound_while_linked, 0);
    });
}

#[test]
fn linked_words_only_get_pending_and_are_skipped_by_allocation() {
    let (env, mem) = setup(2);
    let ec = &env.ec;
    let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
    let (p, d0) = channel(ec, &mut g, D);
    let ipi = ec.bind_ipi(D, 1).unwrap();
    let masked = ec.bind_ipi(D, 0).unwrap();
    open_port(ec, &mut g, ipi);
    g.ensure_port(ec, masked).unwrap(); // left masked
    let hm = GuestFifoMemory::of(ec, &mem, D, 2, 1);
    // The guest sets LINKED on every word (and LINK garbage on some).
    for port in 0..1024 {
        let w = hm.word(port).unwrap();
        w.fetch_or(LINKED | (port * 7 % 1024), Ordering::SeqCst);
    }
    let before = |port: EvtchnPort| load(hm.word(port).unwrap());
    let (wp, wi, wm) = (before(p), before(ipi), before(masked));
    env.rec.take(D, 0);
    ec.send(0, d0).unwrap();
    ec.send(D, ipi).unwrap();
    ec.send(D, masked).unwrap();
    // Only PENDING was added; no queue activity at all.
    assert_eq!(before(p), wp | PENDING);
    assert_eq!(before(ipi), wi | PENDING);
    assert_eq!(before(masked), wm | PENDING);
    for v in 0..2 {
        assert_eq!(g.ready(v), 0);
        for q in 0..16 {
            assert_eq!(g.head(v, q), 0);
        }
        assert!(!g.upcall_pending(v));
    }
    assert_eq!(d_upcalls(&env), 0);
    // Every free port of the page is LINKED: allocation skips them all.
    assert_eq!(errno(ec.alloc_unbound(D, D, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_ipi(D, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_virq(D, VIRQ_TIMER, 0)), Errno::ENOSPC);
    // The guest unlinks a few: the lowest of those is allocated, and the others in order.
    for port in [700, 650, 900] {
        hm.word(port).unwrap().fetch_and(!LINKED, Ordering::SeqCst);
    }
    assert_eq!(ec.alloc_unbound(D, D, 0).unwrap(), 650);
    assert_eq!(ec.bind_ipi(D, 0).unwrap(), 700);
    // A closed port whose word is still LINKED is not reused.
    ec.close(D, 650).unwrap();
    hm.word(650).unwrap().fetch_or(LINKED, Ordering::SeqCst);
    assert_eq!(ec.bind_ipi(D, 0).unwrap(), 900);
    assert_eq!(errno(ec.bind_ipi(D, 0)), Errno::ENOSPC);
    let c = ec.fifo_counters(D).unwrap().unwrap();
    assert_eq!(c, FifoCounters::default(), "no port was bound while LINKED");
    // Once the guest unlinks its own port, events are queued again.
    hm.word(p)
        .unwrap()
        .fetch_and(!(LINKED | LINK_MASK | PENDING), Ordering::SeqCst);
    ec.send(0, d0).unwrap();
    assert_eq!((g.ready(0), g.head(0, 7)), (1 << 7, p));
    assert!(g.upcall_pending(0));
    assert_eq!(env.rec.take(D, 0), 1);
}

#[test]
fn aliased_frames_are_accepted_and_only_confuse_their_own_guest() {
    // Xen does not check that array pages differ from each other or from control blocks.
    let env = Env::new();
    env.dom0();
    let ec = &env.ec;
    let mem = Arc::new(InMemoryGuest::new());
    add_guest(&env, D, 2, &mem, |c| c.max_evtchn_port(4095));
    let mut good = GoodDomain::new(&env, 2, 6);
    mem.page(0x100);
    mem.page(0x101);
    // VCPU 0 and 1 share a page; array page 0 is that page too; pages 1 and 2 are one frame.
    ec.init_control(D, 0x100, 0, 0).unwrap();
    ec.init_control(D, 0x100, 72, 1).unwrap();
    ec.expand_array(D, 0x100).unwrap();
    ec.expand_array(D, 0x101).unwrap();
    ec.expand_array(D, 0x101).unwrap();
    let mut ports = Vec::new();
    for i in 0..40 {
        let (gp, d0) = raw_channel(ec, D);
        ec.bind_vcpu(D, gp, (i % 2) as u32).unwrap();
        ec.set_priority(D, gp, (i % 16) as u32).unwrap();
        ports.push(d0);
        // Spread over pages 1 and 2 too (ports 1024 + k and 2048 + k share a word).
        for _ in 0..60 {
            ec.alloc_unbound(D, D, 0).unwrap();
        }
    }
    let page = mem.page(0x100);
    for round in 0..300usize {
        for (i, &d0) in ports.iter().enumerate() {
            if (round + i) % 4 == 0 {
                ec.send(0, d0).unwrap();
            }
        }
        // The guest "consumes" by clearing READY and unlinking everything it can see.
        if round % 3 == 0 {
            for w in page.words32().iter() {
                w.fetch_and(!(LINKED | PENDING), Ordering::SeqCst);
            }
        }
        good.round(ec, |i| (round + i) % 2 == 0);
    }
    good.g.check_invariants().unwrap();
    assert!(ec.fifo_counters(D).unwrap().is_some());
    assert_eq!(ec.fifo_counters(2).unwrap(), Some(FifoCounters::default()));
}

// ----------------------------------------------------------------------------------------
// 8. Real threads
// ----------------------------------------------------------------------------------------

/// What the consumer of [`race`] saw of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Sequence number of the last send on the port.
    last_sent: u64,
    /// Sequence number the consumer read after handling the port for the last time.
    seen: u64,
    /// Times the consumer handled the port.
    handled: u64,
}

/// Sender thread `t` sends `sends` times from dom0, round-robin over the channels of
/// `senders[t]`, publishing a per-port sequence number before each send; meanwhile the calling
/// thread runs `g`'s upcall on every VCPU whose upcall flag is set, reading the sequence number
/// of each port it handled; `side` runs on one more thread, with a function telling it whether
/// the senders are done. After a final drain, returns what was seen of each port, in the order
/// of `senders` flattened.
fn race(
    ec: &EventChannels,
    g: &mut FifoGuest,
    senders: &[Vec<(EvtchnPort, EvtchnPort)>],
    sends: u64,
    side: impl Fn(&dyn Fn() -> bool) + Sync,
) -> Vec<Seen> {
    let all: Vec<(EvtchnPort, EvtchnPort)> = senders.concat();
    let payload: Vec<AtomicU64> = all.iter().map(|_| AtomicU64::new(0)).collect();
    let mut seen = vec![0u64; all.len()];
    let mut handled = vec![0u64; all.len()];
    let mut note = |ports: Vec<EvtchnPort>| {
        for p in ports {
            let i = all.iter().position(|c| c.0 == p).unwrap();
            let now = payload[i].load(Ordering::SeqCst);
            assert!(now >= seen[i], "port {p}: sequence went backwards");
            seen[i] = now;
            handled[i] += 1;
        }
    };
    let finished = AtomicUsize::new(0);
    let done = || finished.load(Ordering::SeqCst) == senders.len();
    std::thread::scope(|s| {
        let mut base = 0;
        for chans in senders {
            let (payload, finished) = (&payload[base..base + chans.len()], &finished);
            base += chans.len();
            s.spawn(move || {
                let k = chans.len() as u64;
                for i in 0..sends {
                    let c = (i % k) as usize;
                    payload[c].store(i / k + 1, Ordering::SeqCst);
                    ec.send(0, chans[c].1).unwrap();
                    // Let the consumer run now and then, even on few CPUs.
                    if i % 64 == 63 {
                        std::thread::yield_now();
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        s.spawn(|| side(&done));
        let deadline = Instant::now() + Duration::from_secs(100);
        loop {
            let was_done = done();
            let mut idle = true;
            for v in 0..g.vcpus() {
                if g.upcall_pending(v) {
                    note(g.upcall(v));
                    idle = false;
                }
            }
            if idle {
                std::thread::yield_now();
            }
            if was_done {
                break;
            }
            assert!(Instant::now() < deadline, "senders never finished");
        }
    });
    // Quiescent now: no queued event without its upcall flag, no pending unlinked event.
    g.check_invariants().unwrap();
    note(g.drain().into_iter().map(|(_, p)| p).collect());
    g.check_invariants().unwrap();
    (0..all.len())
        .map(|i| Seen {
            last_sent: payload[i].load(Ordering::SeqCst),
            seen: seen[i],
            handled: handled[i],
        })
        .collect()
}

/// Two threads send on 32 ports each, all on one queue (VCPU 0, priority 7), while the
/// consumer runs (many ports, so that after each batch the consumer handles, the senders
/// append concurrently under the queue lock). At the end the consumer must have read the last sequence number of every
/// port: the last send of each port was observed after it returned.
#[test]
fn two_senders_into_one_fifo_queue_lose_no_event() {
    const N: u64 = 50_000;
    with_watchdog(120, || {
        let (env, mem) = setup(1);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
        let senders: Vec<Vec<_>> = (0..2)
            .map(|_| (0..32).map(|_| channel(ec, &mut g, D)).collect())
            .collect();
        for &(p, _) in senders.iter().flatten() {
            g.expect_route(p, 0, 7);
        }
        let seen = race(ec, &mut g, &senders, N, |_| {});
        for (i, s) in seen.iter().enumerate() {
            // 50_000 = 1562 * 32 + 16: the first 16 ports of each sender get one more send.
            let expect = N / 32 + u64::from((i % 32) < 16);
            assert_eq!(s.last_sent, expect, "port #{i}");
            assert_eq!(
                s.seen, s.last_sent,
                "port #{i}: last send not observed: {s:?}"
            );
            assert!((1..=s.last_sent).contains(&s.handled), "port #{i}: {s:?}");
        }
        assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    });
}

/// Two threads append 64 ports each to one queue at the same moment, round after round; every
/// send takes the locked path (the consumer unlinked everything in between). The queue must
/// hold every port once, each sender's ports in its send order.
#[test]
fn concurrent_appends_to_one_queue_build_one_list() {
    const ROUNDS: u64 = 400;
    with_watchdog(120, || {
        let (env, mem) = setup(1);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
        let senders: Vec<Vec<_>> = (0..2)
            .map(|_| (0..64).map(|_| channel(ec, &mut g, D)).collect())
            .collect();
        let go = AtomicU64::new(0);
        let acks = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for chans in &senders {
                let (go, acks, stop) = (&go, &acks, &stop);
                s.spawn(move || {
                    for round in 1..=ROUNDS {
                        // Spin a little (so both senders start together), then yield (so a
                        // loaded machine still runs the consumer).
                        let mut spins = 0u32;
                        while go.load(Ordering::SeqCst) < round {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            spins += 1;
                            if spins < 20_000 {
                                std::hint::spin_loop();
                            } else {
                                std::thread::yield_now();
                            }
                        }
                        for &(_, d0) in chans {
                            ec.send(0, d0).unwrap();
                        }
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stop = StopOnDrop(&stop);
            let mut all: Vec<EvtchnPort> = senders.iter().flatten().map(|c| c.0).collect();
            all.sort();
            for round in 1..=ROUNDS {
                go.store(round, Ordering::SeqCst);
                while acks.load(Ordering::SeqCst) < 2 * round {
                    std::thread::yield_now();
                }
                let got = g.upcall(0);
                assert_eq!(sorted(got.clone()), all, "round {round}");
                for chans in &senders {
                    let mine: Vec<EvtchnPort> = got
                        .iter()
                        .copied()
                        .filter(|p| chans.iter().any(|c| c.0 == *p))
                        .collect();
                    let sent: Vec<EvtchnPort> = chans.iter().map(|c| c.0).collect();
                    assert_eq!(
                        mine, sent,
                        "round {round}: one sender's events out of order"
                    );
                }
                g.check_invariants().unwrap();
            }
        });
        assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    });
}

/// While events are sent and consumed, another VCPU of the guest masks and unmasks the ports
/// the way Linux does (set MASKED; to unmask, clear MASKED with a compare-and-swap that
/// expects BUSY clear, or ask the hypervisor if the event is pending). This rewrites linked
/// words under the hypervisor's compare-and-swaps; no event may be lost.
#[test]
fn linux_mask_and_unmask_on_another_vcpu_lose_no_event() {
    const N: u64 = 30_000;
    with_watchdog(120, || {
        let (env, mem) = setup(1);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
        let senders: Vec<Vec<_>> = (0..2)
            .map(|_| (0..4).map(|_| channel(ec, &mut g, D)).collect())
            .collect();
        let ports: Vec<EvtchnPort> = senders.iter().flatten().map(|c| c.0).collect();
        let hm = GuestFifoMemory::of(ec, &mem, D, 1, 1);
        let unmasks = AtomicU64::new(0);
        let seen = race(ec, &mut g, &senders, N, |done| {
            let mut i = 0;
            while !done() {
                let port = ports[i % ports.len()];
                i += 1;
                let w = hm.word(port).unwrap();
                w.fetch_or(MASKED, Ordering::SeqCst);
                std::hint::spin_loop();
                loop {
                    let old = load(w);
                    if old & PENDING != 0 {
                        ec.unmask(D, port).unwrap();
                        unmasks.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    let expect = old & !BUSY;
                    if w.compare_exchange(
                        expect,
                        expect & !MASKED,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                    {
                        break;
                    }
                }
            }
        });
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(
                s.seen, s.last_sent,
                "port #{i}: last send not observed: {s:?}"
            );
        }
        for &p in &ports {
            assert_eq!(
                load(hm.word(p).unwrap()) & MASKED,
                0,
                "port {p} left masked"
            );
        }
        assert!(
            unmasks.load(Ordering::Relaxed) > 0,
            "never unmasked a pending port"
        );
        assert_eq!(ec.fifo_counters(D).unwrap(), Some(FifoCounters::default()));
    });
}

/// A sender keeps sending on 8 channels while the guest consumes under 2-level; then the
/// guest switches to FIFO (init_control on its VCPU, then Linux's expand_array and unmask of
/// each port) and consumes under FIFO. Once the guest decides to switch, the sender sends a
/// few more rounds (0 to 55, depending on the run) and stops. In the first 10 runs the guest
/// waits for the sender to stop before init_control (the last events are only pending in the
/// 2-level bitmap and must be carried over); in the last 10 init_control runs at once, so the
/// last events land before, during or after it. Each port's last send must be observed.
#[test]
fn switch_to_fifo_while_senders_run_loses_no_event() {
    with_watchdog(120, || {
        for run in 0..20u64 {
            let (env, mem) = setup(1);
            let ec = &env.ec;
            let chans: Vec<(EvtchnPort, EvtchnPort)> = (0..8).map(|_| raw_channel(ec, D)).collect();
            let payload: Vec<AtomicU64> = chans.iter().map(|_| AtomicU64::new(0)).collect();
            let rounds = AtomicU64::new(0);
            let switching = AtomicBool::new(false);
            let finished = AtomicBool::new(false);
            let mut seen = vec![0u64; chans.len()];
            let note = |ports: &[EvtchnPort], seen: &mut Vec<u64>| {
                for p in ports {
                    let i = chans.iter().position(|c| c.0 == *p).unwrap();
                    seen[i] = payload[i].load(Ordering::SeqCst);
                }
            };
            let extra_rounds = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55][run as usize % 10];
            let wait_for_sender = run < 10;
            let mut g = None;
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut extra = None;
                    for r in 1.. {
                        for (c, &(_, d0)) in chans.iter().enumerate() {
                            payload[c].store(r, Ordering::SeqCst);
                            ec.send(0, d0).unwrap();
                        }
                        rounds.store(r, Ordering::SeqCst);
                        if extra.is_none() && switching.load(Ordering::SeqCst) {
                            extra = Some(r + extra_rounds);
                        }
                        if extra.is_some_and(|last| r >= last) {
                            break;
                        }
                        if r % 4 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    finished.store(true, Ordering::SeqCst);
                });
                let mut tl = TwoLevelGuest::new(ec, D, 1);
                while rounds.load(Ordering::SeqCst) < 100 {
                    if tl.upcall_pending(0) {
                        note(&tl.upcall(0), &mut seen);
                    } else {
                        std::thread::yield_now();
                    }
                }
                // The switch, with events pending or in flight.
                switching.store(true, Ordering::SeqCst);
                while wait_for_sender && !finished.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                let mut fifo = FifoGuest::new(ec, &mem, D, 1, BASE).unwrap();
                for &(p, _) in &chans {
                    open_port(ec, &mut fifo, p);
                }
                loop {
                    let done = finished.load(Ordering::SeqCst);
                    if fifo.upcall_pending(0) {
                        note(&fifo.upcall(0), &mut seen);
                    } else {
                        std::thread::yield_now();
                    }
                    if done {
                        break;
                    }
                }
                g = Some(fifo);
            });
            let mut g = g.unwrap();
            g.check_invariants().unwrap();
            note(&g.upcall(0), &mut seen);
            let last: Vec<u64> = payload.iter().map(|p| p.load(Ordering::SeqCst)).collect();
            assert_eq!(
                seen, last,
                "run {run}: an event sent around the switch was lost"
            );
            g.check_invariants().unwrap();
        }
    });
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A domain resets itself (FIFO → 2-level) while dom0 sends to it and it sends IPIs to itself:
/// every send returns Ok (or EINVAL once the IPI is closed), nothing panics, and the domain
/// then works again under both ABIs.
#[test]
fn reset_while_senders_run() {
    with_watchdog(120, || {
        for _ in 0..5 {
            let (env, mem) = setup(2);
            let ec = &env.ec;
            let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
            let chans: Vec<(EvtchnPort, EvtchnPort)> =
                (0..8).map(|_| channel(ec, &mut g, D)).collect();
            let ipi = ec.bind_ipi(D, 1).unwrap();
            open_port(ec, &mut g, ipi);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        ec.send(0, chans[i % chans.len()].1).unwrap();
                        i += 1;
                    }
                });
                s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        match ec.send(D, ipi) {
                            Ok(()) => {}
                            Err(e) => assert_eq!(e.errno(), Errno::EINVAL, "{e}"),
                        }
                    }
                });
                // Stops the senders even if this closure panics (else the scope would wait
                // for them forever and the watchdog would report a hang instead).
                let _stop = StopOnDrop(&stop);
                // One handle pass per VCPU at a time: with senders that never pause, a
                // drain "until nothing arrives" need not end.
                for _ in 0..20 {
                    for v in 0..2 {
                        g.handle_events(v);
                    }
                }
                let r = ec.reset(D, DOMID_SELF);
                stop.store(true, Ordering::SeqCst);
                r.unwrap();
            });
            assert_eq!(ec.abi_name(D).unwrap(), "2-level");
            for &(p, d0) in &chans {
                assert_eq!(ec.status(D, D, p).unwrap().status, PortStatus::Closed);
                assert_eq!(
                    ec.status(0, 0, d0).unwrap().status,
                    PortStatus::Unbound { dom: D }
                );
            }
            // 2-level works.
            let (p, d0) = raw_channel(ec, D);
            ec.send(0, d0).unwrap();
            assert!(ec.is_pending(D, p).unwrap());
            ec.close(D, p).unwrap();
            // FIFO again, on fresh frames.
            let mut g2 = FifoGuest::new(ec, &mem, D, 2, BASE + 0x100).unwrap();
            let (p, d0) = channel(ec, &mut g2, D);
            ec.send(0, d0).unwrap();
            assert_eq!(g2.upcall(0), vec![p]);
            g2.check_invariants().unwrap();
        }
    });
}

/// As above on two VCPUs, with one more thread moving one of the ports between VCPUs and
/// priorities while events are in flight. An event may only be lost if the hypervisor counted
/// it as dropped because of the queue changes (as Xen does).
#[test]
fn senders_racing_bind_vcpu_and_set_priority_lose_no_event() {
    const N: u64 = 30_000;
    with_watchdog(120, || {
        let (env, mem) = setup(2);
        let ec = &env.ec;
        let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
        let senders: Vec<Vec<_>> = (0..2)
            .map(|_| (0..4).map(|_| channel(ec, &mut g, D)).collect())
            .collect();
        for (i, &(p, _)) in senders.iter().flatten().enumerate() {
            ec.bind_vcpu(D, p, (i % 2) as u32).unwrap();
            ec.set_priority(D, p, (i * 3 % 16) as u32).unwrap();
        }
        let moving = senders[0][0].0;
        let seen = race(ec, &mut g, &senders, N, |done| {
            let mut rng = Rng::new(99);
            while !done() {
                ec.bind_vcpu(D, moving, rng.below(2) as u32).unwrap();
                ec.set_priority(D, moving, rng.below(16) as u32).unwrap();
            }
        });
        let c = ec.fifo_counters(D).unwrap().unwrap();
        for (i, s) in seen.iter().enumerate().skip(1) {
            assert_eq!(
                s.seen, s.last_sent,
                "port #{i}: last send not observed: {s:?}"
            );
        }
        assert!(
            seen[0].seen == seen[0].last_sent || c.dropped_queue_changes > 0,
            "lost the last event of the moving port without counting a drop: {:?} {c:?}",
            seen[0]
        );
        assert_eq!(c.dropped_no_control_block, 0);
        assert_eq!(c.link_gave_up, 0, "no guest rewrote a word");
        assert_eq!(c.bound_while_linked, 0);
    });
}

// ----------------------------------------------------------------------------------------
// 9. EVTCHNOP_status across the switch
// ----------------------------------------------------------------------------------------

#[test]
fn status_reports_the_same_bindings_after_the_switch_to_fifo() {
    let (env, mem) = setup_with(2, |c| c.nr_pirqs(4));
    let ec = &env.ec;
    let st = |status, vcpu| Status { status, vcpu };
    let unbound = ec.alloc_unbound(D, D, 0).unwrap();
    let (inter, d0) = raw_channel(ec, D);
    let ipi = ec.bind_ipi(D, 1).unwrap();
    let timer = ec.bind_virq(D, VIRQ_TIMER, 1).unwrap();
    let pirq = ec.bind_pirq(D, 3, 0).unwrap();
    let closed = ec.alloc_unbound(D, D, 0).unwrap();
    ec.close(D, closed).unwrap();
    ec.bind_vcpu(D, inter, 1).unwrap();
    let expected = [
        (0, st(PortStatus::Closed, 0)),
        (unbound, st(PortStatus::Unbound { dom: 0 }, 0)),
        (inter, st(PortStatus::Interdomain { dom: 0, port: d0 }, 1)),
        (ipi, st(PortStatus::Ipi, 1)),
        (timer, st(PortStatus::Virq(VIRQ_TIMER), 1)),
        (pirq, st(PortStatus::Pirq(3), 0)),
        (closed, st(PortStatus::Closed, 0)),
    ];
    let check = |expected: &[(EvtchnPort, Status)]| {
        for &(p, s) in expected {
            assert_eq!(ec.status(D, DOMID_SELF, p).unwrap(), s, "port {p}");
            assert_eq!(ec.status(0, D, p).unwrap(), s, "port {p} seen by dom0");
        }
    };
    check(&expected);
    ec.send(0, d0).unwrap();

    let mut g = FifoGuest::new(ec, &mem, D, 2, BASE).unwrap();
    assert_eq!(ec.abi_name(D).unwrap(), "FIFO");
    check(&expected);
    assert_eq!(
        ec.status(0, 0, d0).unwrap(),
        st(
            PortStatus::Interdomain {
                dom: D,
                port: inter
            },
            0
        )
    );
    for p in [unbound, inter, ipi, timer, pirq] {
        open_port(ec, &mut g, p);
    }
    check(&expected);
    // Changes under FIFO are reported.
    ec.bind_vcpu(D, inter, 0).unwrap();
    ec.bind_vcpu(D, unbound, 1).unwrap();
    ec.set_priority(D, ipi, 0).unwrap();
    let (inter2, d02) = raw_channel(ec, D);
    assert_eq!(inter2, closed, "lowest free port");
    ec.close(0, d0).unwrap();
    ec.close(D, timer).unwrap();
    check(&[
        (unbound, st(PortStatus::Unbound { dom: 0 }, 1)),
        (inter, st(PortStatus::Unbound { dom: 0 }, 0)),
        (inter2, st(PortStatus::Interdomain { dom: 0, port: d02 }, 0)),
        (ipi, st(PortStatus::Ipi, 1)),
        (timer, st(PortStatus::Closed, 0)),
        (pirq, st(PortStatus::Pirq(3), 0)),
    ]);
    assert_eq!(ec.status(0, 0, d0).unwrap().status, PortStatus::Closed);
    assert_eq!(errno(ec.status(D, D, 64)), Errno::EINVAL);
    assert_eq!(errno(ec.status(2, D, 1)), Errno::ESRCH);
}
