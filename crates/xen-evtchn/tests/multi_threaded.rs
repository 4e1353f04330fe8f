//! Real threads: sends racing consumption, close and re-bind. Nothing may panic and no event
//! to a live, unmasked port may be lost.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use xen_evtchn::test_utils::TwoLevelGuest;
use xen_evtchn::{DomainConfig, EventChannels};

const SENDS: u64 = 200_000;

fn two_domains() -> EventChannels {
    let ec = EventChannels::new();
    ec.create_domain(0, DomainConfig::new(2, |_, _| {}).privileged(true))
        .unwrap();
    ec.create_domain(1, DomainConfig::new(2, |_, _| {}))
        .unwrap();
    ec
}

/// The sender publishes a generation number before each send; the consumer reads it after
/// acknowledging the port. When everything is over, the consumer must have seen the last
/// generation: the last send was observed.
#[test]
fn no_event_is_lost_while_other_channels_churn() {
    let ec = two_domains();
    let guest_port = ec.alloc_unbound(1, 1, 0).unwrap();
    let port = ec.bind_interdomain(0, 1, guest_port).unwrap();
    let generation = AtomicU64::new(0);
    let seen = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let churn_port = AtomicU32::new(0);
    let churned = AtomicU64::new(0);

    std::thread::scope(|s| {
        // Consumer: domain 1, VCPU 0, polling its upcall flag.
        s.spawn(|| {
            let mut guest = TwoLevelGuest::new(&ec, 1, 2);
            let mut idle_rounds = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                if guest.upcall_pending(0) {
                    let handled = guest.upcall(0);
                    if handled.contains(&guest_port) {
                        seen.store(generation.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    idle_rounds = 0;
                } else {
                    idle_rounds += 1;
                    std::thread::yield_now();
                }
                // Drain a little after the senders stopped, then stop (bounded).
                if finished && idle_rounds > 1_000 {
                    break;
                }
            }
        });
        // Sender on the stable channel.
        s.spawn(|| {
            for g in 1..=SENDS {
                generation.store(g, Ordering::SeqCst);
                ec.send(0, port).unwrap();
            }
        });
        // Churn: channels opened, used and closed from both ends, while another thread
        // sends on whatever port is current.
        s.spawn(|| {
            for i in 0..2_000u32 {
                let offered = ec.alloc_unbound(1, 1, 0).unwrap();
                let local = ec.bind_interdomain(0, 1, offered).unwrap();
                churn_port.store(local, Ordering::SeqCst);
                ec.send(0, local).unwrap();
                if i % 2 == 0 {
                    ec.close(0, local).unwrap();
                    ec.close(1, offered).unwrap();
                } else {
                    ec.close(1, offered).unwrap();
                    ec.close(0, local).unwrap();
                }
                churned.fetch_add(1, Ordering::Relaxed);
            }
        });
        s.spawn(|| {
            let mut ok = 0u64;
            while churned.load(Ordering::Relaxed) < 2_000 {
                let p = churn_port.load(Ordering::SeqCst);
                if p != 0 && ec.send(0, p).is_ok() {
                    ok += 1;
                }
            }
            assert!(ok > 0, "the racing sender never hit a live port");
        });
        // Stop the consumer once the senders are done.
        s.spawn(|| {
            while generation.load(Ordering::SeqCst) < SENDS
                || churned.load(Ordering::Relaxed) < 2_000
            {
                std::thread::yield_now();
            }
            done.store(true, Ordering::SeqCst);
        });
    });

    assert_eq!(
        seen.load(Ordering::SeqCst),
        SENDS,
        "the consumer never saw the last send"
    );
    // The churned ports are all closed again, in both domains.
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), guest_port + 1);
}

/// Sends from several threads into one domain while its ports are closed and re-bound and
/// the domain's consumer runs: no panic, every result is Ok or EINVAL.
#[test]
fn sends_racing_close_and_rebind_never_panic() {
    let ec = Arc::new(two_domains());
    let ports: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(0)).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (ec, ports, stop) = (&ec, &ports, &stop);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let p = ports[i % ports.len()].load(Ordering::Relaxed);
                    match ec.send(0, p) {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.errno(), xen_evtchn::abi::Errno::EINVAL, "{e}"),
                    }
                    let _ = ec.unmask(1, p);
                    i += 1;
                }
            });
        }
        s.spawn(|| {
            let mut guest = TwoLevelGuest::new(&ec, 1, 2);
            while !stop.load(Ordering::Relaxed) {
                guest.upcall(0);
                guest.upcall(1);
            }
        });
        // Stops the other threads even if this loop panics.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let mut offered_of = vec![0u32; ports.len()];
        for round in 0..3_000usize {
            let i = round % ports.len();
            let slot = &ports[i];
            let old = slot.swap(0, Ordering::Relaxed);
            if old != 0 {
                ec.close(0, old).unwrap();
                // The guest's end, unless it was closed first (then it is already free).
                match ec.close(1, offered_of[i]) {
                    Ok(()) => {}
                    Err(e) => assert_eq!(e.errno(), xen_evtchn::abi::Errno::EINVAL),
                }
            }
            let offered = ec.alloc_unbound(1, 1, 0).unwrap();
            let local = ec.bind_interdomain(0, 1, offered).unwrap();
            ec.bind_vcpu(1, offered, (round % 2) as u32).unwrap();
            offered_of[i] = offered;
            slot.store(local, Ordering::Relaxed);
            if round % 7 == 0 {
                ec.close(1, offered).unwrap();
            }
        }
    });
}
