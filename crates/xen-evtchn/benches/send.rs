//! Send-path benchmark: `EVTCHNOP_send` under the 2-level ABI against the bare guest-memory
//! atomics such a send cannot avoid (the "floor").
//!
//! Every measured case does the same guest-side work per iteration: after the send, the
//! "guest" consumes the event by clearing the pending word, the selector word and the
//! upcall-pending byte (plain Relaxed stores), so the next send takes the full path (pending
//! bit 0 → 1, selector bit 0 → 1, upcall 0 → 1, upcall sink called) instead of the early
//! "already pending" exit. `send_already_pending` measures that early exit on purpose.
//!
//! After criterion has run, `main` runs its own fixed loop over the same cases (several
//! rounds, median of rounds) and prints ns/op and the ratio to the floor, plus the host memory
//! of the port table per allocated port. See `docs/performance.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use xen_evtchn::abi::{DomId, EVTCHNOP_send, EvtchnPort, TwoLevelLayout};
use xen_evtchn::{DomainConfig, EventChannels, GuestPage, SharedUpcallSink, UpcallSink};

use harness::{NoKick, Runner, test, test_and_set};

const LAYOUT: TwoLevelLayout = TwoLevelLayout::X86_64;

/// The guest words one port touches on a 2-level send (as 32-bit words, like the backend:
/// the bitmaps are little-endian, so bit `i` is bit `i % 32` of 32-bit word `i / 32`).
struct Words<'a> {
    pending: &'a AtomicU32,
    /// Bit numbers (0..32) within their words.
    pending_bit: u32,
    mask: &'a AtomicU32,
    sel: &'a AtomicU32,
    sel_bit: u32,
    /// The 32-bit word whose byte 0 is `evtchn_upcall_pending`.
    upcall: &'a AtomicU32,
}

impl<'a> Words<'a> {
    /// The words of `port`, notified on VCPU 0, in the shared_info page `page`.
    fn new(page: &'a GuestPage, port: EvtchnPort) -> Self {
        let word = (port / 32) as usize * 4;
        let selector = port / LAYOUT.word_bits;
        let vcpu_info = LAYOUT
            .vcpu_info_offset(0)
            .expect("vcpu 0 has a legacy slot");
        Words {
            pending: page
                .atomic_u32(LAYOUT.evtchn_pending_offset + word)
                .expect("pending word"),
            pending_bit: port % 32,
            mask: page
                .atomic_u32(LAYOUT.evtchn_mask_offset + word)
                .expect("mask word"),
            sel: page
                .atomic_u32(vcpu_info + LAYOUT.pending_sel_offset + (selector / 32) as usize * 4)
                .expect("selector word"),
            sel_bit: selector % 32,
            upcall: page
                .atomic_u32(vcpu_info + LAYOUT.upcall_pending_offset)
                .expect("upcall word"),
        }
    }

    /// The atomics a 2-level send cannot avoid, in Xen's order: test-and-set of the pending
    /// bit, load of the mask word, test-and-set of the selector bit, test-and-set of the
    /// upcall-pending byte (then the upcall sink would be called).
    #[inline(always)]
    fn floor(&self) {
        if test_and_set(self.pending, self.pending_bit) {
            return;
        }
        if !test(self.mask, self.pending_bit) && !test_and_set(self.sel, self.sel_bit) {
            black_box(test_and_set(self.upcall, 0));
        }
    }

    /// What the guest does when it takes the event: clear the pending word, the selector
    /// word and the upcall flag.
    #[inline(always)]
    fn consume(&self) {
        self.upcall.store(0, Ordering::Relaxed);
        self.sel.store(0, Ordering::Relaxed);
        self.pending.store(0, Ordering::Relaxed);
    }

    /// True if a send set all three: pending bit, selector bit and upcall flag.
    fn fully_raised(&self) -> bool {
        test(self.pending, self.pending_bit) && test(self.sel, self.sel_bit) && test(self.upcall, 0)
    }
}

/// One `EventChannels` with the ports the cases use.
struct Setup<U = SharedUpcallSink> {
    ec: EventChannels<U>,
    /// Domain 0's shared_info (IPI target).
    page0: GuestPage,
    /// Domain 1's shared_info (interdomain target).
    page1: GuestPage,
    /// IPI port of domain 0, notified on VCPU 0.
    ipi: EvtchnPort,
    /// Domain 0's end of the interdomain channel.
    local: EvtchnPort,
    /// Domain 1's end of the interdomain channel.
    remote: EvtchnPort,
    /// The floor's own page.
    floor_page: GuestPage,
}

const DOM0: DomId = 0;
const DOM1: DomId = 1;

impl Setup {
    /// Domains whose sinks are called through `SharedUpcallSink` (`EventChannels::new`).
    fn new() -> Self {
        Self::build(EventChannels::new(), || DomainConfig::new(1, NoKick))
    }
}

impl Setup<NoKick> {
    /// Domains whose sink type is the hypervisor's (`EventChannels::with_upcall_type`).
    fn new_static() -> Self {
        Self::build(EventChannels::with_upcall_type(), || {
            DomainConfig::with_upcall(1, NoKick)
        })
    }
}

impl<U: UpcallSink + Clone> Setup<U> {
    fn build(ec: EventChannels<U>, config: impl Fn() -> DomainConfig<U>) -> Self {
        ec.create_domain(DOM0, config().privileged(true))
            .expect("create d0");
        ec.create_domain(DOM1, config()).expect("create d1");
        let ipi = ec.bind_ipi(DOM0, 0).expect("bind_ipi");
        let remote = ec.alloc_unbound(DOM1, DOM1, DOM0).expect("alloc_unbound");
        let local = ec
            .bind_interdomain(DOM0, DOM1, remote)
            .expect("bind_interdomain");
        let s = Setup {
            page0: ec.shared_info(DOM0).expect("shared_info d0"),
            page1: ec.shared_info(DOM1).expect("shared_info d1"),
            floor_page: GuestPage::new_zeroed(),
            ec,
            ipi,
            local,
            remote,
        };
        s.check();
        s
    }

    fn ipi_words(&self) -> Words<'_> {
        Words::new(&self.page0, self.ipi)
    }

    fn remote_words(&self) -> Words<'_> {
        Words::new(&self.page1, self.remote)
    }

    /// The floor uses the same port number (so the same word offsets) as the IPI case.
    fn floor_words(&self) -> Words<'_> {
        Words::new(&self.floor_page, self.ipi)
    }

    /// Every measured send really takes the full path, and the guest's consumption undoes it.
    fn check(&self) {
        // bind_interdomain raised domain 0's new port; start from a clean guest state.
        for (page, port) in [
            (&self.page0, self.ipi),
            (&self.page0, self.local),
            (&self.page1, self.remote),
        ] {
            Words::new(page, port).consume();
        }
        let ipi = self.ipi_words();
        self.ec.send(DOM0, self.ipi).expect("send ipi");
        assert!(ipi.fully_raised(), "IPI send did not take the full path");
        ipi.consume();

        let remote = self.remote_words();
        self.ec.send(DOM0, self.local).expect("send interdomain");
        assert!(
            remote.fully_raised(),
            "interdomain send did not take the full path"
        );
        remote.consume();

        let mut args = self.ipi.to_le_bytes();
        assert_eq!(self.ec.hypercall(DOM0, 0, EVTCHNOP_send, &mut args), 0);
        assert!(
            ipi.fully_raised(),
            "hypercall send did not take the full path"
        );
        ipi.consume();

        let floor = self.floor_words();
        floor.floor();
        assert!(floor.fully_raised(), "floor did not take the full path");
        floor.consume();
    }
}

static GLOBAL_LOCK: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// The cases, in report order; the first is the floor. `t` is the same set-up with a
/// statically dispatched sink.
fn run_cases(s: &Setup, t: &Setup<NoKick>, r: &mut impl Runner) {
    let ec = &s.ec;
    // Opaque to the optimiser once, outside the loops (as the floor's addresses are), not
    // pushed through memory on every iteration.
    let (dom0, ipi, local) = black_box((DOM0, s.ipi, s.local));

    let floor = s.floor_words();
    r.run("atomic_floor_2l", || {
        floor.floor();
        floor.consume();
    });

    let ipi_w = s.ipi_words();
    r.run("send_2l_ipi", || {
        ec.send(dom0, ipi).expect("send");
        ipi_w.consume();
    });

    let remote_w = s.remote_words();
    r.run("send_2l_interdomain", || {
        ec.send(dom0, local).expect("send");
        remote_w.consume();
    });

    let mut args = ipi.to_le_bytes();
    r.run("hypercall_send_2l", || {
        // The argument bytes stay opaque (a VMM reads them from the guest).
        let ret = ec.hypercall(dom0, 0, EVTCHNOP_send, black_box(&mut args));
        assert_eq!(ret, 0);
        ipi_w.consume();
    });

    // No consumption: the pending bit stays set and every send exits early.
    ec.send(DOM0, ipi).expect("send");
    r.run("send_already_pending", || {
        ec.send(dom0, ipi).expect("send");
    });
    ipi_w.consume();

    r.run("naive_global_lock_2l", || {
        let guard = GLOBAL_LOCK.lock();
        floor.floor();
        drop(guard);
        floor.consume();
    });

    // The same sends with the sink type known to the compiler.
    let ect = &t.ec;
    let (ipi, local) = black_box((t.ipi, t.local));
    let ipi_w = t.ipi_words();
    r.run("send_2l_ipi_static_sink", || {
        ect.send(dom0, ipi).expect("send");
        ipi_w.consume();
    });
    let remote_w = t.remote_words();
    r.run("send_2l_interdomain_static_sink", || {
        ect.send(dom0, local).expect("send");
        remote_w.consume();
    });
    let mut args = ipi.to_le_bytes();
    r.run("hypercall_send_2l_static_sink", || {
        let ret = ect.hypercall(dom0, 0, EVTCHNOP_send, black_box(&mut args));
        assert_eq!(ret, 0);
        ipi_w.consume();
    });
}

fn memory_per_port() {
    const PORTS: u32 = 4000;
    let ec = EventChannels::new();
    let config = || DomainConfig::new(1, |_, _| {}).max_evtchn_port(131_071);
    ec.create_domain(2, config()).expect("create d2");
    ec.create_domain(3, config()).expect("create d3");
    // The 2-level ABI addresses 4096 ports (4095 usable): 4000 fit.
    for _ in 0..PORTS {
        ec.bind_ipi(2, 0).expect("bind_ipi");
    }
    let busy = ec.port_table_bytes(2).expect("bytes d2");
    let idle = ec.port_table_bytes(3).expect("bytes d3");
    println!();
    println!("Port table host memory (max_evtchn_port 131071, 2-level ABI)");
    println!(
        "  {PORTS} IPI ports: {busy} bytes = {:.2} bytes/port",
        busy as f64 / f64::from(PORTS)
    );
    println!("  idle domain (just created): {idle} bytes");
}

fn main() {
    let s = Setup::new();
    let t = Setup::new_static();
    harness::run_criterion("send", |r| run_cases(&s, &t, r));
    if harness::is_real_bench_run() {
        harness::summary_table(|r| run_cases(&s, &t, r), |_| "atomic_floor_2l");
        memory_per_port();
    }
}
