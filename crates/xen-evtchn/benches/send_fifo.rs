//! Send-path benchmark under the FIFO ABI: three shapes of send, each against the bare
//! guest-memory atomics that shape cannot avoid (its "floor").
//!
//! * **empty queue**: the event becomes the head of its queue. Floor: test-and-set PENDING,
//!   test MASKED, test-and-set LINKED, store HEAD, test-and-set READY, test-and-set the
//!   VCPU's `evtchn_upcall_pending` (Xen's "mark events pending", which a send that makes a
//!   queue ready cannot skip either). The guest then consumes: event word, HEAD, READY and
//!   the upcall flag back to 0.
//! * **busy queue**: the queue's tail is still linked, so the event is appended behind it.
//!   Two ports alternate: each iteration sends one while the other is the linked tail, then
//!   the guest consumes that tail. Floor: test-and-set PENDING, test MASKED, test-and-set
//!   LINKED, compare-and-swap of the tail's LINK.
//! * **already linked**: the event is still on its queue; only PENDING is set. The guest
//!   clears PENDING. Floor: test-and-set PENDING, test MASKED, test-and-set LINKED (found set).
//!
//! Plus the raw hypercall for the empty-queue case, and a per-queue spinlock design's best
//! case (an uncontended `parking_lot::Mutex` around the empty-queue floor). As in `send.rs`,
//! criterion runs first, then a fixed loop prints ns/op and each case's ratio to its floor;
//! see `docs/performance.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use xen_evtchn::abi::{
    DomId, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHNOP_send, EventWord, EvtchnPort,
};
use xen_evtchn::test_utils::InMemoryGuest;
use xen_evtchn::{DomainConfig, EventChannels, GuestPage, SharedUpcallSink, UpcallSink};

use harness::{NoKick, Runner, test, test_and_set};

const DOM: DomId = 1;
const CONTROL_GFN: u64 = 0x100;
const ARRAY_GFN: u64 = 0x200;
/// Priority of the empty-queue port; the busy-queue ports use their own queue so the cases
/// never share a tail.
const PRIO: usize = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
const BUSY_PRIO: usize = 5;

/// The guest words of one FIFO domain (or of a floor's private pages).
struct Words {
    control: GuestPage,
    array: GuestPage,
    shared_info: GuestPage,
}

impl Words {
    fn event(&self, port: EvtchnPort) -> &AtomicU32 {
        &self.array.words32()[(port % 1024) as usize]
    }
    fn ready(&self) -> &AtomicU32 {
        &self.control.words32()[0]
    }
    fn head(&self) -> &AtomicU32 {
        self.head_of(PRIO)
    }
    fn head_of(&self, priority: usize) -> &AtomicU32 {
        &self.control.words32()[2 + priority]
    }
    fn upcall(&self) -> &AtomicU32 {
        // VCPU 0's vcpu_info is at the start of shared_info; its first byte is the flag.
        &self.shared_info.words32()[0]
    }

    /// Empty-queue floor for `port`.
    #[inline(always)]
    fn floor_empty(&self, port: EvtchnPort) {
        let word = self.event(port);
        if test_and_set(word, EVTCHN_FIFO_PENDING) {
            return;
        }
        if !test(word, EVTCHN_FIFO_MASKED) && !test_and_set(word, EVTCHN_FIFO_LINKED) {
            self.head().store(port, Ordering::Release);
            if !test_and_set(self.ready(), PRIO as u32) {
                black_box(test_and_set(self.upcall(), 0));
            }
        }
    }

    /// Busy-queue floor: `port` is appended behind `tail`.
    #[inline(always)]
    fn floor_busy(&self, port: EvtchnPort, tail: EvtchnPort) {
        let word = self.event(port);
        if test_and_set(word, EVTCHN_FIFO_PENDING) {
            return;
        }
        if !test(word, EVTCHN_FIFO_MASKED) && !test_and_set(word, EVTCHN_FIFO_LINKED) {
            let t = self.event(tail);
            let cur = t.load(Ordering::Relaxed);
            let new = (cur & !(EventWord::BUSY | EventWord::LINK_MASK)) | port;
            black_box(t.compare_exchange(cur, new, Ordering::SeqCst, Ordering::Relaxed))
                .expect("floor tail CAS");
        }
    }

    /// Already-linked floor.
    #[inline(always)]
    fn floor_linked(&self, port: EvtchnPort) {
        let word = self.event(port);
        if test_and_set(word, EVTCHN_FIFO_PENDING) {
            return;
        }
        if !test(word, EVTCHN_FIFO_MASKED) {
            black_box(test_and_set(word, EVTCHN_FIFO_LINKED));
        }
    }

    /// The guest took the head event of an empty queue: everything back to 0.
    #[inline(always)]
    fn consume_empty(&self, port: EvtchnPort) {
        self.event(port).store(0, Ordering::Relaxed);
        self.head().store(0, Ordering::Relaxed);
        self.ready().store(0, Ordering::Relaxed);
        self.upcall().store(0, Ordering::Relaxed);
    }

    /// The guest consumed `tail` (the event in front of the one just appended).
    #[inline(always)]
    fn consume_tail(&self, tail: EvtchnPort) {
        self.event(tail).store(0, Ordering::Relaxed);
    }

    /// The guest cleared PENDING but left the event linked.
    #[inline(always)]
    fn consume_pending(&self, port: EvtchnPort) {
        self.event(port).store(EventWord::LINKED, Ordering::Relaxed);
    }
}

struct Setup<U = SharedUpcallSink> {
    ec: EventChannels<U>,
    guest: Words,
    floor: Words,
    /// Empty-queue port, and the two busy-queue ports, and the already-linked port.
    empty: EvtchnPort,
    busy: [EvtchnPort; 2],
    linked: EvtchnPort,
}

impl Setup {
    /// A domain whose sink is called through `SharedUpcallSink` (`EventChannels::new`).
    fn new() -> Self {
        Self::build(EventChannels::new(), DomainConfig::new(1, NoKick))
    }
}

impl Setup<NoKick> {
    /// A domain whose sink type is the hypervisor's (`EventChannels::with_upcall_type`).
    fn new_static() -> Self {
        Self::build(
            EventChannels::with_upcall_type(),
            DomainConfig::with_upcall(1, NoKick),
        )
    }
}

impl<U: UpcallSink + Clone> Setup<U> {
    fn build(ec: EventChannels<U>, config: DomainConfig<U>) -> Self {
        let memory = Arc::new(InMemoryGuest::new());
        let control = memory.page(CONTROL_GFN);
        let array = memory.page(ARRAY_GFN);
        let config = config.guest_memory(memory.clone());
        ec.create_domain(DOM, config).expect("create domain");
        ec.init_control(DOM, CONTROL_GFN, 0, 0)
            .expect("init_control");
        ec.expand_array(DOM, ARRAY_GFN).expect("expand_array");
        let port = || ec.bind_ipi(DOM, 0).expect("bind_ipi");
        let (empty, busy, linked) = (port(), [port(), port()], port());
        for p in busy {
            ec.set_priority(DOM, p, BUSY_PRIO as u32)
                .expect("set_priority");
        }
        let s = Setup {
            guest: Words {
                control,
                array,
                shared_info: ec.shared_info(DOM).expect("shared_info"),
            },
            floor: Words {
                control: GuestPage::new_zeroed(),
                array: GuestPage::new_zeroed(),
                shared_info: GuestPage::new_zeroed(),
            },
            ec,
            empty,
            busy,
            linked,
        };
        s.check();
        s
    }

    /// Each case takes the path it claims, on the library and on the floor.
    fn check(&self) {
        let (g, f) = (&self.guest, &self.floor);
        for w in [g, f] {
            let p = self.empty;
            if std::ptr::eq(w, g) {
                self.ec.send(DOM, p).expect("send");
            } else {
                w.floor_empty(p);
            }
            assert_eq!(
                w.event(p).load(Ordering::SeqCst),
                EventWord::PENDING | EventWord::LINKED
            );
            assert_eq!(w.head().load(Ordering::SeqCst), p, "empty queue: HEAD");
            assert!(test(w.ready(), PRIO as u32) && test(w.upcall(), 0));
            w.consume_empty(p);
        }
        // Busy queue: make busy[1] the linked tail, then append busy[0] behind it.
        let [x, y] = self.busy;
        self.ec.send(DOM, y).expect("send");
        g.consume_empty(y);
        g.head_of(BUSY_PRIO).store(0, Ordering::SeqCst);
        g.event(y).store(EventWord::LINKED, Ordering::SeqCst);
        f.event(y).store(EventWord::LINKED, Ordering::SeqCst);
        self.ec.send(DOM, x).expect("send");
        f.floor_busy(x, y);
        for w in [g, f] {
            assert_eq!(w.event(y).load(Ordering::SeqCst) & EventWord::LINK_MASK, x);
            assert_eq!(
                w.head_of(BUSY_PRIO).load(Ordering::SeqCst),
                0,
                "busy: no HEAD"
            );
            w.consume_tail(y);
        }
        // Already linked.
        g.event(self.linked)
            .store(EventWord::LINKED, Ordering::SeqCst);
        f.event(self.linked)
            .store(EventWord::LINKED, Ordering::SeqCst);
        self.ec.send(DOM, self.linked).expect("send");
        f.floor_linked(self.linked);
        for w in [g, f] {
            assert_eq!(
                w.event(self.linked).load(Ordering::SeqCst),
                EventWord::PENDING | EventWord::LINKED
            );
            w.consume_pending(self.linked);
        }
    }
}

static QUEUE_LOCK: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// The cases, in report order. `t` is the same set-up with a statically dispatched sink.
fn run_cases(s: &Setup, t: &Setup<NoKick>, r: &mut impl Runner) {
    let ec = &s.ec;
    let (g, f) = (&s.guest, &s.floor);
    // Opaque to the optimiser once, outside the loops (as the floors' addresses are), not
    // pushed through memory on every iteration.
    let (dom, empty) = black_box((DOM, s.empty));
    r.run("atomic_floor_fifo_empty", || {
        f.floor_empty(empty);
        f.consume_empty(empty);
    });
    r.run("send_fifo_empty_queue", || {
        ec.send(dom, empty).expect("send");
        g.consume_empty(empty);
    });
    let mut args = empty.to_le_bytes();
    r.run("hypercall_send_fifo_empty", || {
        // The argument bytes stay opaque (a VMM reads them from the guest).
        let ret = ec.hypercall(dom, 0, EVTCHNOP_send, black_box(&mut args));
        assert_eq!(ret, 0);
        g.consume_empty(empty);
    });
    r.run("spinlock_queue_fifo_empty", || {
        let guard = QUEUE_LOCK.lock();
        f.floor_empty(empty);
        drop(guard);
        f.consume_empty(empty);
    });

    // Busy queue: busy[0] is the linked tail on both sides when a run starts (see `check`).
    let [x, y] = black_box(s.busy);
    let mut turn = false;
    r.run("atomic_floor_fifo_busy", || {
        let (port, tail) = if turn { (x, y) } else { (y, x) };
        f.floor_busy(port, tail);
        f.consume_tail(tail);
        turn = !turn;
    });
    if turn {
        // An odd number of iterations left busy[1] as the tail: one more restores busy[0].
        f.floor_busy(x, y);
        f.consume_tail(y);
    }
    let mut turn = false;
    r.run("send_fifo_busy_queue", || {
        let (port, tail) = if turn { (x, y) } else { (y, x) };
        ec.send(dom, port).expect("send");
        g.consume_tail(tail);
        turn = !turn;
    });
    if turn {
        ec.send(DOM, x).expect("send");
        g.consume_tail(y);
    }
    for w in [g, f] {
        assert_eq!(
            w.head_of(BUSY_PRIO).load(Ordering::SeqCst),
            0,
            "a busy-queue send found the queue empty"
        );
    }

    let linked = black_box(s.linked);
    r.run("atomic_floor_fifo_linked", || {
        f.floor_linked(linked);
        f.consume_pending(linked);
    });
    r.run("send_fifo_already_linked", || {
        ec.send(dom, linked).expect("send");
        g.consume_pending(linked);
    });

    // The empty-queue sends (the shape that raises an upcall) with the sink type known to
    // the compiler.
    let (ect, gt) = (&t.ec, &t.guest);
    let empty = black_box(t.empty);
    r.run("send_fifo_empty_queue_static_sink", || {
        ect.send(dom, empty).expect("send");
        gt.consume_empty(empty);
    });
    let mut args = empty.to_le_bytes();
    r.run("hypercall_send_fifo_empty_static_sink", || {
        let ret = ect.hypercall(dom, 0, EVTCHNOP_send, black_box(&mut args));
        assert_eq!(ret, 0);
        gt.consume_empty(empty);
    });
}

/// Which floor each case is compared with.
fn floor_of(case: &str) -> &'static str {
    if case.contains("empty") {
        "atomic_floor_fifo_empty"
    } else if case.contains("busy") {
        "atomic_floor_fifo_busy"
    } else {
        "atomic_floor_fifo_linked"
    }
}

fn main() {
    let s = Setup::new();
    let t = Setup::new_static();
    harness::run_criterion("send_fifo", |r| run_cases(&s, &t, r));
    if harness::is_real_bench_run() {
        harness::summary_table(|r| run_cases(&s, &t, r), floor_of);
    }
}
