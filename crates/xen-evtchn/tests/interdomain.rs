//! Multi-domain life cycles, including concurrent close/send/bind/destroy.
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Env, ack_vcpu, clear_pending, errno};
use xen_evtchn::abi::{DOMID_SELF, Errno};
use xen_evtchn::{PortStatus, Status};

const A: u16 = 1;
const B: u16 = 2;

fn env() -> Env {
    let env = Env::new();
    env.dom0();
    env.guest(A, 2);
    env.guest(B, 2);
    env
}

/// Runs `f` on a helper thread and fails if it does not finish in time (a deadlock).
fn with_watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: propagate its panic.
            h.join().unwrap();
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out: deadlock?"),
    }
}

#[test]
fn full_lifecycle_between_two_guests_and_dom0() {
    let env = env();
    let ec = &env.ec;

    // dom0 backend channel to A (A offers, dom0 binds).
    let a_fe = ec.alloc_unbound(A, DOMID_SELF, 0).unwrap();
    let d0_be = ec.bind_interdomain(0, A, a_fe).unwrap();
    assert_eq!(env.rec.take(0, 0), 1);
    assert_eq!(env.rec.total(), 0);

    // A offers to B, B binds.
    let ap = ec.alloc_unbound(A, DOMID_SELF, B).unwrap();
    assert_eq!(ap, 2);
    ec.bind_vcpu(A, ap, 1).unwrap();
    let bp = ec.bind_interdomain(B, A, ap).unwrap();
    assert_eq!(bp, 1);
    assert!(ec.is_pending(B, bp).unwrap());
    assert!(!ec.is_pending(A, ap).unwrap());
    assert_eq!(env.rec.take(B, 0), 1);
    assert_eq!(env.rec.take(A, 1), 0);

    // Both directions.
    ec.send(B, bp).unwrap();
    assert!(ec.is_pending(A, ap).unwrap());
    assert_eq!(env.rec.take(A, 1), 1);
    clear_pending(ec, B, bp);
    ack_vcpu(ec, B, 0);
    ec.send(A, ap).unwrap();
    assert!(ec.is_pending(B, bp).unwrap());
    assert_eq!(env.rec.take(B, 0), 1);
    clear_pending(ec, A, ap);
    ack_vcpu(ec, A, 1);
    ack_vcpu(ec, B, 0);

    // B closes: A's end waits for B again (vcpu kept), silently.
    ec.close(B, bp).unwrap();
    assert_eq!(
        ec.status(A, A, ap).unwrap(),
        Status {
            status: PortStatus::Unbound { dom: B },
            vcpu: 1
        }
    );
    assert_eq!(ec.status(B, B, bp).unwrap().status, PortStatus::Closed);
    assert!(!ec.is_pending(B, bp).unwrap());
    assert_eq!(env.rec.total(), 0);
    // A's sends are dropped now.
    ec.send(A, ap).unwrap();
    assert!(!ec.is_pending(B, bp).unwrap());

    // B re-binds to A's port (its remote is B): B is raised, A is not.
    let bp2 = ec.bind_interdomain(B, A, ap).unwrap();
    assert_eq!(bp2, bp, "lowest free port reused");
    assert!(ec.is_pending(B, bp2).unwrap());
    assert!(!ec.is_pending(A, ap).unwrap());
    assert_eq!(env.rec.take(B, 0), 1);
    assert_eq!(env.rec.total(), 0);
    assert_eq!(
        ec.status(A, A, ap).unwrap(),
        Status {
            status: PortStatus::Interdomain { dom: B, port: bp2 },
            vcpu: 1
        }
    );
    // dom0 cannot steal it meanwhile, nor A bind to its own channel.
    assert_eq!(errno(ec.bind_interdomain(0, A, ap)), Errno::EINVAL);

    // A closes: B's end is Unbound{A}.
    ec.close(A, ap).unwrap();
    assert_eq!(
        ec.status(B, B, bp2).unwrap().status,
        PortStatus::Unbound { dom: A }
    );
    assert!(ec.is_pending(B, bp2).unwrap(), "B's pending bit untouched");
    // A re-binds to B's reverted end.
    let ap2 = ec.bind_interdomain(A, B, bp2).unwrap();
    assert_eq!(ap2, ap);
    assert!(ec.is_pending(A, ap2).unwrap());

    // Another channel, offered by B this time.
    let b_offer = ec.alloc_unbound(B, B, A).unwrap();
    let a_end = ec.bind_interdomain(A, B, b_offer).unwrap();
    assert_eq!(
        ec.status(B, B, b_offer).unwrap().status,
        PortStatus::Interdomain {
            dom: A,
            port: a_end
        }
    );

    // Destroy A while B (and dom0) hold channels to it.
    let before = env.rec.total();
    ec.destroy_domain(A).unwrap();
    for p in [bp2, b_offer] {
        assert_eq!(
            ec.status(B, B, p).unwrap().status,
            PortStatus::Unbound { dom: A },
            "{p}"
        );
        ec.send(B, p).unwrap();
    }
    assert_eq!(
        ec.status(0, 0, d0_be).unwrap().status,
        PortStatus::Unbound { dom: A }
    );
    ec.send(0, d0_be).unwrap();
    assert_eq!(env.rec.total(), before);
    assert_eq!(errno(ec.bind_interdomain(B, A, ap)), Errno::ESRCH);
    // B can close its reverted ends normally.
    ec.close(B, bp2).unwrap();
    ec.close(B, b_offer).unwrap();
    assert_eq!(ec.alloc_unbound(B, B, 0).unwrap(), 1);
}

#[test]
fn loopback_lifecycle() {
    let env = env();
    let ec = &env.ec;
    let p1 = ec.alloc_unbound(A, A, A).unwrap();
    let p2 = ec.bind_interdomain(A, A, p1).unwrap();
    ec.send(A, p1).unwrap();
    ec.send(A, p2).unwrap();
    assert!(ec.is_pending(A, p1).unwrap());
    assert!(ec.is_pending(A, p2).unwrap());
    // Close the offering end: the binding end reverts to unbound naming A itself.
    ec.close(A, p1).unwrap();
    assert_eq!(
        ec.status(A, A, p2).unwrap().status,
        PortStatus::Unbound { dom: A }
    );
    assert!(!ec.is_pending(A, p1).unwrap());
    assert!(ec.is_pending(A, p2).unwrap());
    // A re-binds its own reverted port: it gets the freed port back, raised.
    let p3 = ec.bind_interdomain(A, DOMID_SELF, p2).unwrap();
    assert_eq!(p3, p1);
    assert!(ec.is_pending(A, p3).unwrap());
    assert_eq!(
        ec.status(A, A, p2).unwrap().status,
        PortStatus::Interdomain { dom: A, port: p3 }
    );
    // Reset of self closes both ends.
    ec.reset(A, A).unwrap();
    assert_eq!(ec.status(A, A, p2).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.status(A, A, p3).unwrap().status, PortStatus::Closed);
    assert!(!ec.is_pending(A, p2).unwrap());
    assert!(!ec.is_pending(A, p3).unwrap());
}

#[test]
fn close_while_the_peer_sends_from_other_threads() {
    let env = env();
    let ec = &env.ec;
    for round in 0..200 {
        let ap = ec.alloc_unbound(A, A, B).unwrap();
        let bp = ec.bind_interdomain(B, A, ap).unwrap();
        assert_eq!(
            (ap, bp),
            (1, 1),
            "round {round}: ports were freed and reused"
        );
        let stop = AtomicBool::new(false);
        let (a_sends, b_results) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) || n < 10 {
                    ec.send(A, ap).unwrap();
                    n += 1;
                }
                n
            });
            let b = s.spawn(|| {
                (0..50)
                    .map(|_| ec.send(B, bp).map_err(|e| e.errno()))
                    .collect::<Vec<_>>()
            });
            let c = s.spawn(|| {
                std::thread::yield_now();
                ec.close(B, bp).unwrap();
                stop.store(true, Ordering::Relaxed);
            });
            c.join().unwrap();
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(a_sends >= 10);
        // B's sends either worked (before the close) or found a free port.
        for r in &b_results {
            assert!(
                matches!(r, Ok(()) | Err(Errno::EINVAL)),
                "round {round}: {r:?}"
            );
        }
        // Final state: B's port closed and not pending; A's end waits for B.
        assert_eq!(ec.status(B, B, bp).unwrap().status, PortStatus::Closed);
        assert!(
            !ec.is_pending(B, bp).unwrap(),
            "round {round}: stale pending bit"
        );
        assert_eq!(
            ec.status(A, A, ap).unwrap().status,
            PortStatus::Unbound { dom: B }
        );
        // A send now does nothing.
        ec.send(A, ap).unwrap();
        assert!(!ec.is_pending(B, bp).unwrap());
        ec.close(A, ap).unwrap();
        clear_pending(ec, A, ap);
        assert!(!ec.is_pending(A, ap).unwrap());
    }
}

#[test]
fn both_ends_closed_at_once_do_not_deadlock() {
    with_watchdog(120, || {
        let env = env();
        let ec = &env.ec;
        for round in 0..300 {
            let ap = ec.alloc_unbound(A, A, B).unwrap();
            let bp = ec.bind_interdomain(B, A, ap).unwrap();
            let (ra, rb) = std::thread::scope(|s| {
                let a = s.spawn(|| ec.close(A, ap));
                let b = s.spawn(|| ec.close(B, bp));
                (a.join().unwrap(), b.join().unwrap())
            });
            // Whichever goes second finds its end unbound and frees it: both succeed.
            assert_eq!(ra, Ok(()), "round {round}");
            assert_eq!(rb, Ok(()), "round {round}");
            assert_eq!(ec.status(A, A, ap).unwrap().status, PortStatus::Closed);
            assert_eq!(ec.status(B, B, bp).unwrap().status, PortStatus::Closed);
            assert!(!ec.is_pending(B, bp).unwrap());
        }
        // Everything was freed.
        assert_eq!(ec.alloc_unbound(A, A, B).unwrap(), 1);
        assert_eq!(ec.alloc_unbound(B, B, A).unwrap(), 1);
    });
}

#[test]
fn racing_binds_of_one_offer_give_one_winner_and_leak_nothing() {
    let env = env();
    let ec = &env.ec;
    for round in 0..200 {
        let ap = ec.alloc_unbound(A, A, B).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| ec.bind_interdomain(B, A, ap)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<u32> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(ok.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.errno(), Errno::EINVAL, "round {round}");
            }
        }
        let bp = ok[0];
        assert_eq!(
            ec.status(A, A, ap).unwrap().status,
            PortStatus::Interdomain { dom: B, port: bp }
        );
        // Losers leaked no port: B's only allocated port is the winner's.
        assert_eq!(bp, 1, "round {round}");
        assert_eq!(ec.status(B, B, 2).unwrap().status, PortStatus::Closed);
        ec.close(B, bp).unwrap();
        ec.close(A, ap).unwrap();
    }
}

#[test]
fn destroy_while_the_peer_sends() {
    let env = env();
    let ec = &env.ec;
    let mut ports = Vec::new();
    for _ in 0..10 {
        let ap = ec.alloc_unbound(A, A, B).unwrap();
        ports.push(ec.bind_interdomain(B, A, ap).unwrap());
    }
    std::thread::scope(|s| {
        let senders: Vec<_> = ports
            .chunks(5)
            .map(|chunk| {
                s.spawn(move || {
                    for i in 0..20_000 {
                        ec.send(B, chunk[i % chunk.len()]).unwrap();
                    }
                })
            })
            .collect();
        std::thread::yield_now();
        ec.destroy_domain(A).unwrap();
        for h in senders {
            h.join().unwrap();
        }
    });
    assert!(!ec.domain_exists(A));
    for &p in &ports {
        assert_eq!(
            ec.status(B, B, p).unwrap().status,
            PortStatus::Unbound { dom: A }
        );
    }
}

#[test]
fn concurrent_allocations_hand_out_distinct_lowest_ports() {
    let env = env();
    let ec = &env.ec;
    let got: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..100)
                        .map(|i| match (t + i) % 3 {
                            0 => ec.alloc_unbound(A, A, B).unwrap(),
                            1 => ec.bind_ipi(A, (i % 2) as u32).unwrap(),
                            _ => ec.alloc_unbound(0, A, 0).unwrap(),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let set: BTreeSet<u32> = got.iter().copied().collect();
    assert_eq!(set.len(), 400, "a port was handed out twice");
    assert_eq!(set, (1..=400).collect::<BTreeSet<_>>());
    // Close half concurrently, then the lowest free ones come back in order.
    std::thread::scope(|s| {
        for t in 0..4u32 {
            s.spawn(move || {
                for p in (1..=400).filter(|p| p % 8 == t) {
                    ec.close(A, p).unwrap();
                }
            });
        }
    });
    for want in [1, 2, 3, 8, 9, 10, 11, 16] {
        assert_eq!(ec.bind_ipi(A, 0).unwrap(), want);
    }
}
