//! Stress with faithful guest consumers: real threads send on interdomain, IPI and VIRQ ports
//! into a domain whose VCPU threads run the Linux consumer models (2-level and FIFO), while a
//! chaos thread masks and unmasks ports, changes FIFO priorities and moves ports between
//! VCPUs the way Linux does (mask, `EVTCHNOP_bind_vcpu`, unmask).
//!
//! What is checked, per epoch (senders pause, the chaos thread unmasks everything, the guest
//! drains): for every port, the last value its sender published before its last send was seen
//! by a delivery of that port (so every send was followed by a delivery: coalescing allowed,
//! loss not); no port is delivered that was never sent; the FIFO consumer's invariants hold.
//!
//! `cargo test` runs a CI-sized run (at least 10^6 sends per ABI); the long run is ignored by
//! default: `cargo test --release -p xen-evtchn --test stress -- --ignored` (10^8 sends per
//! ABI; `XEN_EVTCHN_STRESS_SENDS` overrides the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use xen_evtchn::abi::{DomId, EvtchnPort, VIRQ_TIMER};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, XorShift};
use xen_evtchn::{DomainConfig, EventChannels};

const DOM0: DomId = 0;
const GUEST: DomId = 1;
const VCPUS: u32 = 2;
const INTERDOMAIN_PER_SENDER: usize = 4;
const IPIS: usize = 4;
const EPOCHS: u64 = 10;

/// The guest side, whichever ABI it uses.
trait Consumer: Send {
    fn upcall_pending(&self, vcpu: u32) -> bool;
    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort>;
    fn mask(&mut self, port: EvtchnPort);
    fn unmask(&mut self, ec: &EventChannels, port: EvtchnPort);
    /// Linux moved `port` to `vcpu` (after `EVTCHNOP_bind_vcpu`).
    fn moved(&mut self, port: EvtchnPort, vcpu: u32);
    fn check(&self) {}
}

impl Consumer for TwoLevelGuest {
    fn upcall_pending(&self, vcpu: u32) -> bool {
        TwoLevelGuest::upcall_pending(self, vcpu)
    }
    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        TwoLevelGuest::upcall(self, vcpu)
    }
    fn mask(&mut self, port: EvtchnPort) {
        TwoLevelGuest::mask(self, port);
    }
    fn unmask(&mut self, ec: &EventChannels, port: EvtchnPort) {
        TwoLevelGuest::unmask(self, ec, GUEST, port);
    }
    fn moved(&mut self, port: EvtchnPort, vcpu: u32) {
        self.bind_to_cpu(port, vcpu);
    }
}

impl Consumer for FifoGuest {
    fn upcall_pending(&self, vcpu: u32) -> bool {
        FifoGuest::upcall_pending(self, vcpu)
    }
    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        FifoGuest::upcall(self, vcpu)
    }
    fn mask(&mut self, port: EvtchnPort) {
        FifoGuest::mask(self, port);
    }
    fn unmask(&mut self, ec: &EventChannels, port: EvtchnPort) {
        FifoGuest::unmask(self, ec, port);
    }
    fn moved(&mut self, _port: EvtchnPort, _vcpu: u32) {}
    fn check(&self) {
        self.check_invariants().expect("FIFO consumer invariants");
    }
}

/// Who sends on a guest port.
#[derive(Clone, Copy)]
enum Source {
    /// dom0 sends on its end `local`.
    Interdomain { local: EvtchnPort },
    /// The guest sends an IPI on the port itself.
    Ipi,
    /// The host raises VIRQ_TIMER on this VCPU.
    Virq { vcpu: u32 },
}

struct World {
    ec: EventChannels,
    /// Guest ports and how each is raised.
    ports: Vec<(EvtchnPort, Source)>,
    /// Per guest port (indexed by port number): last value published by its sender.
    sent: Vec<AtomicU64>,
    /// Per guest port: highest published value a delivery observed.
    seen: Vec<AtomicU64>,
    /// Deliveries of ports that were never sent.
    spurious: AtomicU64,
    deliveries: AtomicU64,
}

fn world(fifo: bool) -> (Arc<World>, Box<dyn Consumer>) {
    let memory = Arc::new(InMemoryGuest::new());
    let ec = EventChannels::new();
    ec.create_domain(DOM0, DomainConfig::new(1, |_, _| {}).privileged(true))
        .unwrap();
    ec.create_domain(
        GUEST,
        DomainConfig::new(VCPUS, |_, _| {}).guest_memory(memory.clone()),
    )
    .unwrap();
    let mut fifo_guest = fifo.then(|| FifoGuest::new(&ec, &memory, GUEST, VCPUS, 0x1000).unwrap());
    let mut ports = Vec::new();
    for _ in 0..2 * INTERDOMAIN_PER_SENDER {
        let remote = ec.alloc_unbound(GUEST, GUEST, DOM0).unwrap();
        let local = ec.bind_interdomain(DOM0, GUEST, remote).unwrap();
        ports.push((remote, Source::Interdomain { local }));
    }
    for i in 0..IPIS {
        let p = ec.bind_ipi(GUEST, i as u32 % VCPUS).unwrap();
        ports.push((p, Source::Ipi));
    }
    for vcpu in 0..VCPUS {
        let p = ec.bind_virq(GUEST, VIRQ_TIMER, vcpu).unwrap();
        ports.push((p, Source::Virq { vcpu }));
    }
    let max = ports.iter().map(|&(p, _)| p).max().unwrap() as usize + 1;
    let consumer: Box<dyn Consumer> = match fifo_guest.as_mut() {
        Some(g) => {
            for &(p, _) in &ports {
                g.ensure_port(&ec, p).unwrap();
            }
            // Linux unmasks a port when it is bound; binding raised some of them already.
            for &(p, _) in &ports {
                g.unmask(&ec, p);
            }
            Box::new(fifo_guest.take().unwrap())
        }
        None => {
            let mut g = TwoLevelGuest::new(&ec, GUEST, VCPUS);
            for &(p, source) in &ports {
                match source {
                    Source::Virq { vcpu } => g.bind_to_cpu(p, vcpu),
                    Source::Ipi => {
                        let vcpu = ec.status(GUEST, GUEST, p).unwrap().vcpu;
                        g.bind_to_cpu(p, vcpu);
                    }
                    Source::Interdomain { .. } => {}
                }
            }
            Box::new(g)
        }
    };
    let w = World {
        ec,
        ports,
        sent: (0..max).map(|_| AtomicU64::new(0)).collect(),
        seen: (0..max).map(|_| AtomicU64::new(0)).collect(),
        spurious: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
    };
    (Arc::new(w), consumer)
}

impl World {
    /// Records what a delivery of `port` observed (after the consumer acknowledged it).
    fn delivered(&self, port: EvtchnPort) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let Some(sent) = self.sent.get(port as usize) else {
            self.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let v = sent.load(Ordering::SeqCst);
        if v == 0 {
            self.spurious.fetch_add(1, Ordering::Relaxed);
        }
        self.seen[port as usize].fetch_max(v, Ordering::SeqCst);
    }

    /// One send on `port`, publishing `value` first.
    fn send(&self, port: EvtchnPort, source: Source, value: u64) {
        self.sent[port as usize].store(value, Ordering::SeqCst);
        match source {
            Source::Interdomain { local } => self.ec.send(DOM0, local).unwrap(),
            Source::Ipi => self.ec.send(GUEST, port).unwrap(),
            Source::Virq { vcpu } => self.ec.raise_virq(GUEST, vcpu, VIRQ_TIMER).unwrap(),
        }
    }
}

/// Runs the guest's upcall handler until no VCPU has an upcall pending.
fn drain(w: &World, consumer: &mut dyn Consumer) {
    for _ in 0..1000 {
        let mut any = false;
        for v in 0..VCPUS {
            if consumer.upcall_pending(v) {
                any = true;
                for p in consumer.upcall(v) {
                    w.delivered(p);
                }
            }
        }
        if !any {
            return;
        }
    }
    panic!("the guest kept finding upcalls pending after 1000 rounds");
}

/// Sends `total` events (at least) and checks delivery at the end of every epoch.
fn stress(fifo: bool, total: u64) {
    let (w, consumer) = world(fifo);
    let consumer = Arc::new(Mutex::new(consumer));
    // Three senders: two dom0 threads (interdomain), one guest/host thread (IPI, VIRQ).
    let groups: Vec<Vec<(EvtchnPort, Source)>> = vec![
        w.ports[..INTERDOMAIN_PER_SENDER].to_vec(),
        w.ports[INTERDOMAIN_PER_SENDER..2 * INTERDOMAIN_PER_SENDER].to_vec(),
        w.ports[2 * INTERDOMAIN_PER_SENDER..].to_vec(),
    ];
    let per_thread_epoch = total.div_ceil(EPOCHS * groups.len() as u64);
    let stop = Arc::new(AtomicBool::new(false));
    // Senders + chaos + main meet at each epoch boundary (twice: stop, then resume).
    let barrier = Arc::new(Barrier::new(groups.len() + 2));
    // Set by the main thread once every sender finished the epoch: the chaos thread stops.
    let quiet = Arc::new(AtomicBool::new(false));
    let senders_done = Arc::new(AtomicU64::new(0));

    let vcpu_threads: Vec<_> = (0..VCPUS)
        .map(|v| {
            let (w, consumer, stop) = (w.clone(), consumer.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = consumer.lock().unwrap();
                    if c.upcall_pending(v) {
                        for p in c.upcall(v) {
                            w.delivered(p);
                        }
                    }
                    drop(c);
                    thread::yield_now();
                }
            })
        })
        .collect();

    let senders: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let (w, barrier, done) = (w.clone(), barrier.clone(), senders_done.clone());
            thread::spawn(move || {
                let mut value = 0u64;
                for _ in 0..EPOCHS {
                    for i in 0..per_thread_epoch {
                        let (port, source) = group[i as usize % group.len()];
                        value += 1;
                        w.send(port, source, value);
                        if i % 16 == 15 {
                            // Give the VCPU and chaos threads a share of the 2 CPUs of CI.
                            thread::yield_now();
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    barrier.wait(); // epoch over
                    barrier.wait(); // checked
                }
                value
            })
        })
        .collect();

    let chaos = {
        let (w, consumer, barrier, quiet) =
            (w.clone(), consumer.clone(), barrier.clone(), quiet.clone());
        thread::spawn(move || {
            let mut rng = XorShift::new(0x0DDB_1A5E_5BAD_5EED ^ u64::from(fifo));
            let movable: Vec<EvtchnPort> = w
                .ports
                .iter()
                // Xen moves interdomain (and global VIRQ, PIRQ) ports, not IPIs or per-VCPU VIRQs.
                .filter(|(_, s)| matches!(s, Source::Interdomain { .. }))
                .map(|&(p, _)| p)
                .collect();
            let mut masked = Vec::new();
            let mut actions = 0u64;
            for _ in 0..EPOCHS {
                while !quiet.load(Ordering::SeqCst) {
                    actions += 1;
                    let (port, _) = w.ports[rng.below(w.ports.len())];
                    let mut c = consumer.lock().unwrap();
                    match rng.below(4) {
                        0 if !masked.contains(&port) => {
                            c.mask(port);
                            masked.push(port);
                        }
                        1 if !masked.is_empty() => {
                            let p = masked.swap_remove(rng.below(masked.len()));
                            c.unmask(&w.ec, p);
                        }
                        2 if fifo => {
                            let prio = rng.below(16) as u32;
                            w.ec.set_priority(GUEST, port, prio).unwrap();
                        }
                        3 => {
                            // Linux: mask, rebind, record, unmask.
                            let p = movable[rng.below(movable.len())];
                            let vcpu = rng.below(VCPUS as usize) as u32;
                            let was_masked = masked.contains(&p);
                            c.mask(p);
                            w.ec.bind_vcpu(GUEST, p, vcpu).unwrap();
                            c.moved(p, vcpu);
                            if !was_masked {
                                c.unmask(&w.ec, p);
                            }
                        }
                        _ => {}
                    }
                    drop(c);
                    thread::yield_now();
                }
                // Epoch end: unmask everything the chaos masked.
                let mut c = consumer.lock().unwrap();
                for p in masked.drain(..) {
                    c.unmask(&w.ec, p);
                }
                drop(c);
                barrier.wait();
                barrier.wait();
            }
            actions
        })
    };

    let nr_senders = senders.len() as u64;
    for epoch in 0..EPOCHS {
        while senders_done.load(Ordering::SeqCst) < nr_senders * (epoch + 1) {
            assert!(
                !chaos.is_finished() && !senders.iter().any(|s| s.is_finished()),
                "a thread died (see its panic above)"
            );
            thread::yield_now();
        }
        quiet.store(true, Ordering::SeqCst);
        barrier.wait(); // epoch over: senders and chaos are parked
        // Everyone is parked between the two barriers: the guest drains and we check.
        let mut c = consumer.lock().unwrap();
        drain(&w, c.as_mut());
        c.check();
        drop(c);
        for &(port, _) in &w.ports {
            let sent = w.sent[port as usize].load(Ordering::SeqCst);
            let seen = w.seen[port as usize].load(Ordering::SeqCst);
            assert_eq!(
                seen,
                sent,
                "epoch {epoch}: port {port}: last value sent {sent}, last value seen by a \
                 delivery {seen} ({} ABI)",
                if fifo { "FIFO" } else { "2-level" }
            );
        }
        quiet.store(false, Ordering::SeqCst);
        barrier.wait();
    }
    let sends: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let actions = chaos.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in vcpu_threads {
        t.join().unwrap();
    }
    assert_eq!(
        w.spurious.load(Ordering::Relaxed),
        0,
        "deliveries never sent"
    );
    assert!(sends >= total, "{sends} sends, wanted {total}");
    if fifo {
        let counters = w.ec.fifo_counters(GUEST).unwrap().unwrap();
        assert_eq!(
            counters.link_gave_up, 0,
            "a well-behaved guest never defeats a link"
        );
        assert_eq!(counters.dropped_no_control_block, 0);
    }
    eprintln!(
        "{} ABI: {sends} sends, {} deliveries, {actions} chaos actions, {EPOCHS} epochs",
        if fifo { "FIFO" } else { "2-level" },
        w.deliveries.load(Ordering::Relaxed)
    );
}

fn long_run_sends() -> u64 {
    std::env::var("XEN_EVTCHN_STRESS_SENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000_000)
}

/// The CI-sized run: 10^6 sends per ABI (`XEN_EVTCHN_STRESS_CI_SENDS` overrides it).
fn ci_sends() -> u64 {
    std::env::var("XEN_EVTCHN_STRESS_CI_SENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

#[test]
fn stress_two_level_million_sends() {
    stress(false, ci_sends());
}

#[test]
fn stress_fifo_million_sends() {
    stress(true, ci_sends());
}

#[test]
#[ignore = "long run: 10^8 sends per ABI; run with --release -- --ignored"]
fn stress_two_level_long() {
    stress(false, long_run_sends());
}

#[test]
#[ignore = "long run: 10^8 sends per ABI; run with --release -- --ignored"]
fn stress_fifo_long() {
    stress(true, long_run_sends());
}
