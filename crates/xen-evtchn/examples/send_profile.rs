//! Instruction counts of the send paths, for `valgrind --tool=callgrind` (counts do not depend
//! on what else the machine is doing, unlike the timings of `benches/`).
//!
//! Each shape of send the benchmarks time runs `N` times (first argument, default 1000)
//! inside its own function, which never inlines, so callgrind can count it alone:
//!
//! ```sh
//! cargo build --profile bench -p xen-evtchn --example send_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/send_profile 1000
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep 'send_profile::profile_'
//! ```
//!
//! Each function's inclusive count divided by `N` is the instructions per send, including
//! the guest's consumption that resets the state for the next one (as in the benchmarks).
//! See `docs/performance.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use xen_evtchn::abi::{DomId, EVTCHNOP_send, EvtchnPort};
use xen_evtchn::test_utils::InMemoryGuest;
use xen_evtchn::{DomainConfig, EventChannels, GuestPage, UpcallSink};

/// A sink that does nothing, as in the benchmarks.
#[derive(Clone, Copy)]
struct NoKick;

impl UpcallSink for NoKick {
    fn upcall(&self, _domid: DomId, _vcpu: u32) {}
}

const FIFO_DOM: DomId = 2;

/// The guest's consumption of a 2-level event on `port` notified on VCPU 0: the pending word,
/// the selector word and the upcall flag back to 0 (x86_64 layout, as in the benchmark).
fn consume_2l(page: &GuestPage, port: EvtchnPort) {
    let w = page.words32();
    w[0].store(0, Ordering::Relaxed);
    w[2].store(0, Ordering::Relaxed);
    w[0x800 / 4 + (port / 32) as usize].store(0, Ordering::Relaxed);
}

/// The guest's consumption of a FIFO event that started an empty queue of priority 7: the
/// event word, HEAD[7], READY and the upcall flag back to 0.
fn consume_fifo_empty(pages: &[GuestPage; 3], port: EvtchnPort) {
    let [control, array, shared_info] = pages;
    array.words32()[port as usize].store(0, Ordering::Relaxed);
    control.words32()[2 + 7].store(0, Ordering::Relaxed);
    control.words32()[0].store(0, Ordering::Relaxed);
    shared_info.words32()[0].store(0, Ordering::Relaxed);
}

#[inline(never)]
fn profile_2l_ipi(ec: &EventChannels, port: EvtchnPort, page: &GuestPage, n: u32) {
    for _ in 0..n {
        ec.send(0, port).unwrap();
        consume_2l(page, port);
    }
}

#[inline(never)]
fn profile_2l_ipi_static_sink(
    ec: &EventChannels<NoKick>,
    port: EvtchnPort,
    page: &GuestPage,
    n: u32,
) {
    for _ in 0..n {
        ec.send(0, port).unwrap();
        consume_2l(page, port);
    }
}

#[inline(never)]
fn profile_2l_interdomain(
    ec: &EventChannels,
    port: EvtchnPort,
    page: &GuestPage,
    remote: EvtchnPort,
    n: u32,
) {
    for _ in 0..n {
        ec.send(0, port).unwrap();
        consume_2l(page, remote);
    }
}

#[inline(never)]
fn profile_hypercall_2l(ec: &EventChannels, port: EvtchnPort, page: &GuestPage, n: u32) {
    for _ in 0..n {
        let mut args = port.to_le_bytes();
        assert_eq!(ec.hypercall(0, 0, EVTCHNOP_send, black_box(&mut args)), 0);
        consume_2l(page, port);
    }
}

#[inline(never)]
fn profile_fifo_empty(ec: &EventChannels, port: EvtchnPort, pages: &[GuestPage; 3], n: u32) {
    for _ in 0..n {
        ec.send(FIFO_DOM, port).unwrap();
        consume_fifo_empty(pages, port);
    }
}

#[inline(never)]
fn profile_fifo_busy(ec: &EventChannels, ports: [EvtchnPort; 2], array: &GuestPage, n: u32) {
    let word = |p: EvtchnPort| -> &AtomicU32 { &array.words32()[p as usize] };
    for i in 0..n {
        let (port, tail) = if i % 2 == 0 {
            (ports[0], ports[1])
        } else {
            (ports[1], ports[0])
        };
        ec.send(FIFO_DOM, port).unwrap();
        word(tail).store(0, Ordering::Relaxed);
    }
}

#[inline(never)]
fn profile_fifo_linked(ec: &EventChannels, port: EvtchnPort, array: &GuestPage, n: u32) {
    for _ in 0..n {
        ec.send(FIFO_DOM, port).unwrap();
        array.words32()[port as usize].store(1 << 29, Ordering::Relaxed);
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().expect("N must be a number"));

    // 2-level: domain 0 sends to itself (IPI) and to domain 1 (interdomain).
    let ec = EventChannels::new();
    ec.create_domain(0, DomainConfig::new(1, NoKick).privileged(true))
        .unwrap();
    ec.create_domain(1, DomainConfig::new(1, NoKick)).unwrap();
    let ipi = ec.bind_ipi(0, 0).unwrap();
    let remote = ec.alloc_unbound(1, 1, 0).unwrap();
    let local = ec.bind_interdomain(0, 1, remote).unwrap();
    let (page0, page1) = (ec.shared_info(0).unwrap(), ec.shared_info(1).unwrap());

    let ect = EventChannels::<NoKick>::with_upcall_type();
    ect.create_domain(0, DomainConfig::with_upcall(1, NoKick))
        .unwrap();
    let ipi_t = ect.bind_ipi(0, 0).unwrap();
    let page_t = ect.shared_info(0).unwrap();

    // FIFO: one domain with a control block and one event-array page.
    let memory = Arc::new(InMemoryGuest::new());
    let (control, array) = (memory.page(0x100), memory.page(0x200));
    ec.create_domain(FIFO_DOM, DomainConfig::new(1, NoKick).guest_memory(memory))
        .unwrap();
    ec.init_control(FIFO_DOM, 0x100, 0, 0).unwrap();
    ec.expand_array(FIFO_DOM, 0x200).unwrap();
    let fifo_info = ec.shared_info(FIFO_DOM).unwrap();
    let empty = ec.bind_ipi(FIFO_DOM, 0).unwrap();
    let busy = [
        ec.bind_ipi(FIFO_DOM, 0).unwrap(),
        ec.bind_ipi(FIFO_DOM, 0).unwrap(),
    ];
    let linked = ec.bind_ipi(FIFO_DOM, 0).unwrap();
    for p in busy {
        ec.set_priority(FIFO_DOM, p, 5).unwrap();
    }

    profile_2l_ipi(&ec, ipi, &page0, n);
    profile_2l_ipi_static_sink(&ect, ipi_t, &page_t, n);
    profile_2l_interdomain(&ec, local, &page1, remote, n);
    profile_hypercall_2l(&ec, ipi, &page0, n);
    let fifo_pages = [control.clone(), array.clone(), fifo_info];
    profile_fifo_empty(&ec, empty, &fifo_pages, n);
    // The busy shape starts with busy[1] linked as the queue's tail (HEAD and READY then
    // cleared as if the guest had moved on), as in the benchmark.
    ec.send(FIFO_DOM, busy[1]).unwrap();
    for w in control.words32() {
        w.store(0, Ordering::Relaxed);
    }
    array.words32()[busy[1] as usize].store(1 << 29, Ordering::Relaxed);
    profile_fifo_busy(&ec, busy, &array, n);
    array.words32()[linked as usize].store(1 << 29, Ordering::Relaxed);
    profile_fifo_linked(&ec, linked, &array, n);
    println!("{n} sends of each shape");
}
