//! Success paths of every operation, checked against Xen's behaviour (guest-visible state:
//! status, pending/mask bits, selector words, upcall flags and upcall notifications).
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{
    Env, L, Rng, ack_vcpu, clear_pending, errno, guest_mask, pending_word, sel, upcall_pending,
};
use xen_evtchn::abi::{DOMID_SELF, Errno, VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_TIMER, VIRQ_XENOPROF};
use xen_evtchn::test_utils::{InMemoryGuest, TwoLevelGuest};
use xen_evtchn::{PortStatus, Status};

fn st(status: PortStatus, vcpu: u32) -> Status {
    Status { status, vcpu }
}

// ----------------------------------------------------------------------------------------
// alloc_unbound
// ----------------------------------------------------------------------------------------

#[test]
fn alloc_unbound_gives_lowest_free_port_from_one() {
    let env = Env::new();
    env.guest(1, 1);
    let ec = &env.ec;
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 1);
    assert_eq!(ec.alloc_unbound(1, DOMID_SELF, 0).unwrap(), 2);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 3);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 4);
    ec.close(1, 2).unwrap();
    ec.close(1, 3).unwrap();
    // The lowest free one comes back first, then the next, then a fresh one.
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 2);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 3);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 5);
    // Nothing raised by allocation.
    for p in 1..=5 {
        assert!(!ec.is_pending(1, p).unwrap(), "port {p}");
        assert_eq!(
            ec.status(1, 1, p).unwrap(),
            st(PortStatus::Unbound { dom: 0 }, 0)
        );
    }
    assert_eq!(env.rec.total(), 0);
}

#[test]
fn alloc_unbound_remote_domid_self_is_the_caller() {
    let env = Env::new();
    env.dom0();
    env.guest(1, 1);
    let ec = &env.ec;
    // A guest for itself: DOMID_SELF as remote means the guest.
    let p = ec.alloc_unbound(1, DOMID_SELF, DOMID_SELF).unwrap();
    assert_eq!(p, 1);
    assert_eq!(
        ec.status(1, 1, p).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
    // dom0 on behalf of domain 1: DOMID_SELF means dom0, not domain 1.
    let q = ec.alloc_unbound(0, 1, DOMID_SELF).unwrap();
    assert_eq!(q, 2, "allocated in domain 1's table");
    assert_eq!(
        ec.status(0, 1, q).unwrap().status,
        PortStatus::Unbound { dom: 0 }
    );
    assert_eq!(
        ec.status(1, DOMID_SELF, q).unwrap().status,
        PortStatus::Unbound { dom: 0 }
    );
    // dom0's own table is untouched.
    assert_eq!(ec.status(0, 0, 1).unwrap().status, PortStatus::Closed);
    // remote_dom is not validated.
    let r = ec.alloc_unbound(1, 1, 999).unwrap();
    assert_eq!(
        ec.status(1, 1, r).unwrap().status,
        PortStatus::Unbound { dom: 999 }
    );
}

#[test]
fn privileged_dom0_allocates_in_domu_and_domu_can_bind_from_dom0_side() {
    let env = Env::new();
    env.dom0();
    env.guest(1, 1);
    let ec = &env.ec;
    // dom0 allocates a port in domU offered to dom0 itself, then binds to it.
    let gp = ec.alloc_unbound(0, 1, 0).unwrap();
    let bp = ec.bind_interdomain(0, 1, gp).unwrap();
    assert_eq!(bp, 1);
    assert_eq!(
        ec.status(0, 1, gp).unwrap().status,
        PortStatus::Interdomain { dom: 0, port: bp }
    );
    assert_eq!(
        ec.status(0, 0, bp).unwrap().status,
        PortStatus::Interdomain { dom: 1, port: gp }
    );
}

// ----------------------------------------------------------------------------------------
// bind_interdomain
// ----------------------------------------------------------------------------------------

#[test]
fn bind_interdomain_raises_the_local_port_only() {
    let env = Env::new();
    env.guest(1, 2);
    env.guest(2, 2);
    let ec = &env.ec;
    let ap = ec.alloc_unbound(1, 1, 2).unwrap();
    // Occupy a port in 2 so the local port differs from ap.
    ec.bind_ipi(2, 0).unwrap();
    let bp = ec.bind_interdomain(2, 1, ap).unwrap();
    assert_eq!(bp, 2);
    // Local (binder) end raised: pending bit, selector, upcall flag, one upcall on vcpu 0.
    assert!(ec.is_pending(2, bp).unwrap());
    assert_eq!(pending_word(ec, 2, 0), 1 << bp);
    assert_eq!(sel(ec, 2, 0), 1);
    assert_eq!(upcall_pending(ec, 2, 0), 1);
    assert_eq!(env.rec.count(2, 0), 1);
    // Remote (offering) end not raised.
    assert!(!ec.is_pending(1, ap).unwrap());
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(upcall_pending(ec, 1, 0), 0);
    assert_eq!(env.rec.count(1, 0), 0);
    assert_eq!(env.rec.total(), 1);
    assert_eq!(
        ec.status(1, 1, ap).unwrap(),
        st(PortStatus::Interdomain { dom: 2, port: bp }, 0)
    );
    assert_eq!(
        ec.status(2, 2, bp).unwrap(),
        st(PortStatus::Interdomain { dom: 1, port: ap }, 0)
    );
}

#[test]
fn bind_interdomain_keeps_the_remote_notify_vcpu_and_sends_both_ways() {
    let env = Env::new();
    env.guest(1, 2);
    env.guest(2, 2);
    let ec = &env.ec;
    let ap = ec.alloc_unbound(1, 1, 2).unwrap();
    ec.bind_vcpu(1, ap, 1).unwrap();
    let bp = ec.bind_interdomain(2, 1, ap).unwrap();
    assert_eq!(ec.status(1, 1, ap).unwrap().vcpu, 1);
    assert_eq!(ec.status(2, 2, bp).unwrap().vcpu, 0);
    env.rec.take(2, 0);
    ec.send(2, bp).unwrap();
    assert!(ec.is_pending(1, ap).unwrap());
    assert_eq!(sel(ec, 1, 1), 1);
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(env.rec.count(1, 1), 1);
    assert_eq!(env.rec.count(1, 0), 0);
    // Other direction: bp is already pending from the bind: no new edge, no upcall.
    ec.send(1, ap).unwrap();
    assert_eq!(env.rec.count(2, 0), 0);
    clear_pending(ec, 2, bp);
    ack_vcpu(ec, 2, 0);
    ec.send(1, ap).unwrap();
    assert!(ec.is_pending(2, bp).unwrap());
    assert_eq!(env.rec.count(2, 0), 1);
}

#[test]
fn loopback_channel_with_domid_self() {
    let env = Env::new();
    env.guest(1, 1);
    let ec = &env.ec;
    let p1 = ec.alloc_unbound(1, DOMID_SELF, DOMID_SELF).unwrap();
    let p2 = ec.bind_interdomain(1, DOMID_SELF, p1).unwrap();
    assert_eq!((p1, p2), (1, 2));
    assert!(ec.is_pending(1, p2).unwrap());
    assert!(!ec.is_pending(1, p1).unwrap());
    assert_eq!(
        ec.status(1, 1, p1).unwrap().status,
        PortStatus::Interdomain { dom: 1, port: p2 }
    );
    assert_eq!(
        ec.status(1, 1, p2).unwrap().status,
        PortStatus::Interdomain { dom: 1, port: p1 }
    );
    ec.send(1, p2).unwrap();
    assert!(ec.is_pending(1, p1).unwrap());
    clear_pending(ec, 1, p2);
    ec.send(1, p1).unwrap();
    assert!(ec.is_pending(1, p2).unwrap());
    // Closing one end reverts the other to unbound naming the domain itself.
    ec.close(1, p2).unwrap();
    assert_eq!(
        ec.status(1, 1, p1).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
    assert!(!ec.is_pending(1, p2).unwrap());
    assert!(
        ec.is_pending(1, p1).unwrap(),
        "peer's pending bit untouched"
    );
}

// ----------------------------------------------------------------------------------------
// bind_virq
// ----------------------------------------------------------------------------------------

#[test]
fn per_vcpu_virq_timer_on_vcpu_1() {
    let env = Env::new();
    env.guest(1, 2);
    let ec = &env.ec;
    let p = ec.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    assert_eq!(p, 1);
    assert_eq!(
        ec.status(1, 1, p).unwrap(),
        st(PortStatus::Virq(VIRQ_TIMER), 1)
    );
    assert!(!ec.is_pending(1, p).unwrap(), "binding raises nothing");
    // Raised on vcpu 0: no binding there, nothing happens.
    ec.raise_virq(1, 0, VIRQ_TIMER).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(env.rec.total(), 0);
    ec.raise_virq(1, 1, VIRQ_TIMER).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    assert_eq!(sel(ec, 1, 1), 1);
    assert_eq!(upcall_pending(ec, 1, 1), 1);
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(env.rec.count(1, 1), 1);
    assert_eq!(env.rec.total(), 1);
    // The same VIRQ binds separately on vcpu 0, with its own port.
    let q = ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    assert_eq!(q, 2);
    ec.raise_virq(1, 0, VIRQ_TIMER).unwrap();
    assert!(ec.is_pending(1, q).unwrap());
    assert_eq!(env.rec.count(1, 0), 1);
    // Other per-vcpu VIRQs bind on any vcpu.
    assert_eq!(ec.bind_virq(1, VIRQ_DEBUG, 1).unwrap(), 3);
    assert_eq!(ec.bind_virq(1, VIRQ_XENOPROF, 1).unwrap(), 4);
}

#[test]
fn global_virq_bound_by_the_hardware_domain() {
    let env = Env::new();
    env.dom0();
    let ec = &env.ec;
    assert_eq!(ec.global_virq_handler(VIRQ_CONSOLE), Some(0));
    let p = ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(
        ec.status(0, 0, p).unwrap(),
        st(PortStatus::Virq(VIRQ_CONSOLE), 0)
    );
    ec.raise_global_virq(VIRQ_CONSOLE).unwrap();
    assert!(ec.is_pending(0, p).unwrap());
    assert_eq!(env.rec.count(0, 0), 1);
    // A global VIRQ can be moved to another vcpu.
    clear_pending(ec, 0, p);
    ack_vcpu(ec, 0, 0);
    ec.bind_vcpu(0, p, 1).unwrap();
    assert_eq!(ec.status(0, 0, p).unwrap().vcpu, 1);
    ec.raise_virq(0, 0, VIRQ_CONSOLE).unwrap();
    assert!(ec.is_pending(0, p).unwrap());
    assert_eq!(sel(ec, 0, 1), 1);
    assert_eq!(sel(ec, 0, 0), 0);
    assert_eq!(env.rec.count(0, 1), 1);
    assert_eq!(env.rec.count(0, 0), 1);
}

#[test]
fn global_virq_handler_can_be_delegated() {
    let env = Env::new();
    env.dom0();
    env.guest(3, 1);
    let ec = &env.ec;
    ec.set_global_virq_handler(VIRQ_CONSOLE, Some(3)).unwrap();
    let p = ec.bind_virq(3, VIRQ_CONSOLE, 0).unwrap();
    ec.raise_global_virq(VIRQ_CONSOLE).unwrap();
    assert!(ec.is_pending(3, p).unwrap());
    assert_eq!(errno(ec.bind_virq(0, VIRQ_CONSOLE, 0)), Errno::EBUSY);
}

// ----------------------------------------------------------------------------------------
// bind_ipi, send
// ----------------------------------------------------------------------------------------

#[test]
fn ipi_send_sets_pending_selector_and_upcall_on_notify_vcpu() {
    let env = Env::new();
    env.guest(1, 2);
    let ec = &env.ec;
    // Push the port into word 1 of the bitmap: ports 1..=69 taken by unbound ports.
    for _ in 1..70 {
        ec.alloc_unbound(1, 1, 0).unwrap();
    }
    let p = ec.bind_ipi(1, 1).unwrap();
    assert_eq!(p, 70);
    assert_eq!(ec.status(1, 1, p).unwrap(), st(PortStatus::Ipi, 1));
    assert!(!ec.is_pending(1, p).unwrap());
    ec.send(1, p).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    assert_eq!(pending_word(ec, 1, 1), 1 << (70 - 64));
    assert_eq!(pending_word(ec, 1, 0), 0);
    assert_eq!(sel(ec, 1, 1), 1 << 1, "selector bit = word index");
    assert_eq!(upcall_pending(ec, 1, 1), 1);
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(upcall_pending(ec, 1, 0), 0);
    assert_eq!(env.rec.count(1, 1), 1);
    assert_eq!(env.rec.total(), 1);
    // Already pending: nothing more.
    ec.send(1, p).unwrap();
    assert_eq!(env.rec.total(), 1);
    // Pending cleared by the guest but selector still set: no new upcall.
    clear_pending(ec, 1, p);
    ec.send(1, p).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    assert_eq!(env.rec.total(), 1);
    // Fully acknowledged: a new edge gives a new upcall.
    clear_pending(ec, 1, p);
    ack_vcpu(ec, 1, 1);
    ec.send(1, p).unwrap();
    assert_eq!(env.rec.count(1, 1), 2);
}

#[test]
fn send_on_unbound_port_is_dropped() {
    let env = Env::new();
    env.guest(1, 1);
    env.guest(2, 1);
    let ec = &env.ec;
    let p = ec.alloc_unbound(1, 1, 2).unwrap();
    ec.send(1, p).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(
        ec.status(1, 1, p).unwrap(),
        st(PortStatus::Unbound { dom: 2 }, 0)
    );
    assert_eq!(env.rec.total(), 0);
    // A later bind still raises the binder (covering the dropped send), not the sender.
    let q = ec.bind_interdomain(2, 1, p).unwrap();
    assert!(ec.is_pending(2, q).unwrap());
    assert!(!ec.is_pending(1, p).unwrap());
}

// ----------------------------------------------------------------------------------------
// bind_pirq
// ----------------------------------------------------------------------------------------

#[test]
fn bind_pirq_and_raise_pirq() {
    let env = Env::new();
    env.ec.create_domain(1, env.cfg(2).nr_pirqs(8)).unwrap();
    let ec = &env.ec;
    let p = ec.bind_pirq(1, 5, 0).unwrap();
    assert_eq!(p, 1);
    assert_eq!(ec.status(1, 1, p).unwrap(), st(PortStatus::Pirq(5), 0));
    let q = ec
        .bind_pirq(1, 7, xen_evtchn::abi::BIND_PIRQ__WILL_SHARE)
        .unwrap();
    assert_eq!(q, 2);
    // An unbound pirq: nothing.
    ec.raise_pirq(1, 4).unwrap();
    assert_eq!(env.rec.total(), 0);
    ec.raise_pirq(1, 5).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    assert!(!ec.is_pending(1, q).unwrap());
    assert_eq!(sel(ec, 1, 0), 1);
    assert_eq!(env.rec.count(1, 0), 1);
    // PIRQ ports may move vcpu.
    ec.bind_vcpu(1, q, 1).unwrap();
    ec.raise_pirq(1, 7).unwrap();
    assert!(ec.is_pending(1, q).unwrap());
    assert_eq!(env.rec.count(1, 1), 1);
}

// ----------------------------------------------------------------------------------------
// close
// ----------------------------------------------------------------------------------------

#[test]
fn close_of_each_kind_frees_clears_pending_and_port_is_reused() {
    let env = Env::new();
    env.dom0();
    env.ec.create_domain(1, env.cfg(2).nr_pirqs(4)).unwrap();
    env.guest(2, 1);
    let ec = &env.ec;

    // Unbound.
    let p = ec.alloc_unbound(1, 1, 0).unwrap();
    ec.close(1, p).unwrap();
    assert_eq!(ec.status(1, 1, p).unwrap(), st(PortStatus::Closed, 0));
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), p);
    ec.close(1, p).unwrap();

    // IPI on vcpu 1, pending.
    let p = ec.bind_ipi(1, 1).unwrap();
    ec.send(1, p).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    ec.close(1, p).unwrap();
    assert!(!ec.is_pending(1, p).unwrap(), "close clears pending");
    assert_eq!(
        ec.status(1, 1, p).unwrap(),
        st(PortStatus::Closed, 0),
        "vcpu reset to 0"
    );
    assert_eq!(ec.bind_ipi(1, 0).unwrap(), p);
    ec.close(1, p).unwrap();

    // Per-vcpu VIRQ, pending: closing unbinds the VIRQ (can be bound again).
    let p = ec.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    ec.raise_virq(1, 1, VIRQ_TIMER).unwrap();
    ec.close(1, p).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    // Raising it now does nothing.
    ec.raise_virq(1, 1, VIRQ_TIMER).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(ec.bind_virq(1, VIRQ_TIMER, 1).unwrap(), p);
    ec.close(1, p).unwrap();

    // PIRQ, pending.
    let p = ec.bind_pirq(1, 3, 0).unwrap();
    ec.raise_pirq(1, 3).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    ec.close(1, p).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    ec.raise_pirq(1, 3).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(ec.bind_pirq(1, 3, 0).unwrap(), p);
    ec.close(1, p).unwrap();

    // Interdomain, local end pending (from the bind).
    let q = ec.alloc_unbound(2, 2, 1).unwrap();
    let p = ec.bind_interdomain(1, 2, q).unwrap();
    assert!(ec.is_pending(1, p).unwrap());
    ec.close(1, p).unwrap();
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(ec.status(1, 1, p).unwrap(), st(PortStatus::Closed, 0));
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), p);
}

#[test]
fn close_interdomain_reverts_peer_silently() {
    let env = Env::new();
    env.guest(1, 2);
    env.guest(2, 2);
    let ec = &env.ec;
    let ap = ec.alloc_unbound(1, 1, 2).unwrap();
    ec.bind_vcpu(1, ap, 1).unwrap();
    let bp = ec.bind_interdomain(2, 1, ap).unwrap();
    ec.send(2, bp).unwrap();
    assert!(ec.is_pending(1, ap).unwrap());
    guest_mask(ec, 1, ap);
    let upcalls = env.rec.total();
    let sel_before = sel(ec, 1, 1);
    let flag_before = upcall_pending(ec, 1, 1);

    ec.close(2, bp).unwrap();
    // Peer end: Unbound naming the closer, vcpu, pending and mask untouched, no event.
    assert_eq!(
        ec.status(1, 1, ap).unwrap(),
        st(PortStatus::Unbound { dom: 2 }, 1)
    );
    assert!(ec.is_pending(1, ap).unwrap());
    assert!(ec.is_masked(1, ap).unwrap());
    assert_eq!(sel(ec, 1, 1), sel_before);
    assert_eq!(upcall_pending(ec, 1, 1), flag_before);
    assert_eq!(env.rec.total(), upcalls);
    // Closer's end: free and not pending.
    assert_eq!(ec.status(2, 2, bp).unwrap(), st(PortStatus::Closed, 0));
    assert!(!ec.is_pending(2, bp).unwrap());
    // Sends on the reverted end are dropped.
    clear_pending(ec, 1, ap);
    ec.send(1, ap).unwrap();
    assert!(!ec.is_pending(2, bp).unwrap());
    assert_eq!(env.rec.total(), upcalls);
}

// ----------------------------------------------------------------------------------------
// status
// ----------------------------------------------------------------------------------------

#[test]
fn status_reports_every_state() {
    let env = Env::new();
    env.dom0();
    env.ec.create_domain(1, env.cfg(3).nr_pirqs(4)).unwrap();
    let ec = &env.ec;
    // Port 0 is reserved: reported closed, vcpu 0. A free valid port likewise.
    assert_eq!(ec.status(1, 1, 0).unwrap(), st(PortStatus::Closed, 0));
    assert_eq!(ec.status(1, 1, 63).unwrap(), st(PortStatus::Closed, 0));
    let unbound = ec.alloc_unbound(1, 1, 0).unwrap();
    let inter = ec.bind_interdomain(0, 1, unbound).unwrap();
    let unbound2 = ec.alloc_unbound(1, 1, 7).unwrap();
    let pirq = ec.bind_pirq(1, 2, 0).unwrap();
    let virq = ec.bind_virq(1, VIRQ_DEBUG, 2).unwrap();
    let ipi = ec.bind_ipi(1, 1).unwrap();
    assert_eq!(
        ec.status(1, 1, unbound).unwrap(),
        st(
            PortStatus::Interdomain {
                dom: 0,
                port: inter
            },
            0
        )
    );
    assert_eq!(
        ec.status(0, 0, inter).unwrap(),
        st(
            PortStatus::Interdomain {
                dom: 1,
                port: unbound
            },
            0
        )
    );
    assert_eq!(
        ec.status(1, 1, unbound2).unwrap(),
        st(PortStatus::Unbound { dom: 7 }, 0)
    );
    assert_eq!(ec.status(1, 1, pirq).unwrap(), st(PortStatus::Pirq(2), 0));
    assert_eq!(
        ec.status(1, 1, virq).unwrap(),
        st(PortStatus::Virq(VIRQ_DEBUG), 2)
    );
    assert_eq!(ec.status(1, 1, ipi).unwrap(), st(PortStatus::Ipi, 1));
    // Codes as Xen numbers them.
    assert_eq!(PortStatus::Closed.code(), 0);
    assert_eq!(PortStatus::Unbound { dom: 0 }.code(), 1);
    assert_eq!(PortStatus::Interdomain { dom: 0, port: 0 }.code(), 2);
    assert_eq!(PortStatus::Pirq(0).code(), 3);
    assert_eq!(PortStatus::Virq(0).code(), 4);
    assert_eq!(PortStatus::Ipi.code(), 5);
    // The privileged domain sees the same through its own id and DOMID_SELF maps to caller.
    assert_eq!(ec.status(0, 1, ipi).unwrap(), st(PortStatus::Ipi, 1));
    assert_eq!(
        ec.status(1, DOMID_SELF, ipi).unwrap(),
        st(PortStatus::Ipi, 1)
    );
}

#[test]
fn device_model_may_act_on_its_target() {
    let env = Env::new();
    env.guest(1, 1);
    env.ec
        .create_domain(2, env.cfg(1).device_model_for(1))
        .unwrap();
    let ec = &env.ec;
    let p = ec.alloc_unbound(2, 1, 2).unwrap();
    assert_eq!(
        ec.status(2, 1, p).unwrap(),
        st(PortStatus::Unbound { dom: 2 }, 0)
    );
    let q = ec.bind_interdomain(2, 1, p).unwrap();
    assert_eq!(
        ec.status(2, 1, p).unwrap().status,
        PortStatus::Interdomain { dom: 2, port: q }
    );
    ec.reset(2, 1).unwrap();
    assert_eq!(ec.status(2, 1, p).unwrap().status, PortStatus::Closed);
    assert_eq!(
        ec.status(2, 2, q).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
}

// ----------------------------------------------------------------------------------------
// bind_vcpu
// ----------------------------------------------------------------------------------------

#[test]
fn bind_vcpu_moves_future_delivery() {
    let env = Env::new();
    env.guest(1, 3);
    env.guest(2, 1);
    let ec = &env.ec;
    let ap = ec.alloc_unbound(1, 1, 2).unwrap();
    let bp = ec.bind_interdomain(2, 1, ap).unwrap();
    ec.send(2, bp).unwrap();
    assert_eq!(sel(ec, 1, 0), 1);
    assert_eq!(env.rec.count(1, 0), 1);
    clear_pending(ec, 1, ap);
    ack_vcpu(ec, 1, 0);
    ec.bind_vcpu(1, ap, 2).unwrap();
    assert_eq!(ec.status(1, 1, ap).unwrap().vcpu, 2);
    ec.send(2, bp).unwrap();
    assert!(ec.is_pending(1, ap).unwrap());
    assert_eq!(sel(ec, 1, 2), 1);
    assert_eq!(upcall_pending(ec, 1, 2), 1);
    assert_eq!(sel(ec, 1, 0), 0);
    assert_eq!(upcall_pending(ec, 1, 0), 0);
    assert_eq!(env.rec.count(1, 2), 1);
    assert_eq!(env.rec.count(1, 0), 1);
    // Unbound ports may be bound to a vcpu too.
    let u = ec.alloc_unbound(1, 1, 2).unwrap();
    ec.bind_vcpu(1, u, 1).unwrap();
    assert_eq!(
        ec.status(1, 1, u).unwrap(),
        st(PortStatus::Unbound { dom: 2 }, 1)
    );
}

// ----------------------------------------------------------------------------------------
// unmask
// ----------------------------------------------------------------------------------------

#[test]
fn unmask_delivers_exactly_one_upcall_for_a_masked_pending_port() {
    let env = Env::new();
    env.guest(1, 2);
    let ec = &env.ec;
    let p = ec.bind_ipi(1, 1).unwrap();
    guest_mask(ec, 1, p);
    assert!(ec.is_masked(1, p).unwrap());
    ec.send(1, p).unwrap();
    // Only the pending bit.
    assert!(ec.is_pending(1, p).unwrap());
    assert_eq!(sel(ec, 1, 1), 0);
    assert_eq!(upcall_pending(ec, 1, 1), 0);
    assert_eq!(env.rec.total(), 0);
    ec.unmask(1, p).unwrap();
    assert!(!ec.is_masked(1, p).unwrap());
    assert_eq!(sel(ec, 1, 1), 1);
    assert_eq!(upcall_pending(ec, 1, 1), 1);
    assert_eq!(env.rec.count(1, 1), 1);
    assert_eq!(env.rec.total(), 1);
    // Unmask of an unmasked port does nothing, even after the guest acknowledged.
    ack_vcpu(ec, 1, 1);
    ec.unmask(1, p).unwrap();
    assert_eq!(sel(ec, 1, 1), 0);
    assert_eq!(upcall_pending(ec, 1, 1), 0);
    assert_eq!(env.rec.total(), 1);
    // Masked but not pending: unmask clears the mask, nothing else.
    clear_pending(ec, 1, p);
    guest_mask(ec, 1, p);
    ec.unmask(1, p).unwrap();
    assert!(!ec.is_masked(1, p).unwrap());
    assert_eq!(env.rec.total(), 1);
    assert_eq!(sel(ec, 1, 1), 0);
}

#[test]
fn unmask_of_free_valid_port_is_ok_and_changes_nothing() {
    let env = Env::new();
    env.guest(1, 1);
    let ec = &env.ec;
    guest_mask(ec, 1, 10);
    ec.unmask(1, 10).unwrap();
    // Not usable: Xen skips the ABI unmask (the guest's mask bit stays).
    assert!(ec.is_masked(1, 10).unwrap());
    ec.unmask(1, 63).unwrap();
    ec.unmask(1, 0).unwrap();
    assert_eq!(env.rec.total(), 0);
}

// ----------------------------------------------------------------------------------------
// reset, destroy
// ----------------------------------------------------------------------------------------

#[test]
fn reset_by_privileged_domain_closes_everything_and_peers_revert() {
    let env = Env::new();
    env.dom0();
    env.ec.create_domain(1, env.cfg(2).nr_pirqs(2)).unwrap();
    let ec = &env.ec;
    let to_dom0 = ec.alloc_unbound(1, 1, 0).unwrap();
    let d0 = ec.bind_interdomain(0, 1, to_dom0).unwrap();
    let d0_offer = ec.alloc_unbound(0, 0, 1).unwrap();
    let from_dom0 = ec.bind_interdomain(1, 0, d0_offer).unwrap();
    let ipi = ec.bind_ipi(1, 1).unwrap();
    let virq = ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    let pirq = ec.bind_pirq(1, 1, 0).unwrap();
    let lb1 = ec.alloc_unbound(1, 1, 1).unwrap();
    let lb2 = ec.bind_interdomain(1, 1, lb1).unwrap();
    let _unb = ec.alloc_unbound(1, 1, 0).unwrap();
    ec.send(1, ipi).unwrap();
    // Domain 1 starts paused.
    ec.reset(0, 1).unwrap();
    for p in 0..64 {
        assert_eq!(
            ec.status(0, 1, p).unwrap(),
            st(PortStatus::Closed, 0),
            "port {p}"
        );
        assert!(!ec.is_pending(1, p).unwrap(), "port {p}");
    }
    assert_eq!(
        ec.status(0, 0, d0).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
    assert_eq!(
        ec.status(0, 0, d0_offer).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
    // Everything can be bound again and the lowest port is 1 again.
    assert_eq!(ec.bind_virq(1, VIRQ_TIMER, 0).unwrap(), 1);
    assert_eq!(ec.bind_pirq(1, 1, 0).unwrap(), 2);
    // The reverted dom0 ends can be re-bound by domain 1.
    let again = ec.bind_interdomain(1, 0, d0).unwrap();
    assert_eq!(again, 3);
    assert_eq!(
        ec.status(0, 0, d0).unwrap().status,
        PortStatus::Interdomain {
            dom: 1,
            port: again
        }
    );
    let _ = (from_dom0, virq, pirq, lb2);
}

#[test]
fn reset_of_self_needs_no_pause() {
    let env = Env::new();
    env.guest(1, 1);
    let ec = &env.ec;
    ec.set_paused(1, false).unwrap();
    ec.bind_ipi(1, 0).unwrap();
    ec.alloc_unbound(1, 1, 0).unwrap();
    ec.reset(1, DOMID_SELF).unwrap();
    assert_eq!(ec.status(1, 1, 1).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.status(1, 1, 2).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.bind_ipi(1, 0).unwrap(), 1);
    // A reset with nothing bound is fine too.
    ec.close(1, 1).unwrap();
    ec.reset(1, 1).unwrap();
}

#[test]
fn destroy_domain_reverts_peers_and_their_sends_do_nothing() {
    let env = Env::new();
    env.guest(1, 1);
    env.guest(2, 2);
    let ec = &env.ec;
    let ap = ec.alloc_unbound(1, 1, 2).unwrap();
    let bp = ec.bind_interdomain(2, 1, ap).unwrap();
    let bq_offer = ec.alloc_unbound(2, 2, 1).unwrap();
    ec.bind_vcpu(2, bq_offer, 1).unwrap();
    let aq = ec.bind_interdomain(1, 2, bq_offer).unwrap();
    ec.send(1, aq).unwrap();
    assert!(ec.is_pending(2, bq_offer).unwrap());
    clear_pending(ec, 2, bp);
    let before = env.rec.total();

    ec.destroy_domain(1).unwrap();
    assert!(!ec.domain_exists(1));
    assert_eq!(
        ec.status(2, 2, bp).unwrap(),
        st(PortStatus::Unbound { dom: 1 }, 0)
    );
    assert_eq!(
        ec.status(2, 2, bq_offer).unwrap(),
        st(PortStatus::Unbound { dom: 1 }, 1)
    );
    assert!(ec.is_pending(2, bq_offer).unwrap(), "peer bits untouched");
    ec.send(2, bp).unwrap();
    ec.send(2, bq_offer).unwrap();
    assert!(!ec.is_pending(2, bp).unwrap());
    assert_eq!(env.rec.total(), before);
    assert_eq!(errno(ec.status(2, 1, 1)), Errno::ESRCH);
    // The id can be reused by a new domain, which starts empty.
    env.guest(1, 1);
    assert_eq!(ec.status(1, 1, ap).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.alloc_unbound(1, 1, 2).unwrap(), 1);
}

// ----------------------------------------------------------------------------------------
// register_vcpu_info
// ----------------------------------------------------------------------------------------

#[test]
fn register_vcpu_info_moves_selector_and_upcall_flag() {
    let env = Env::new();
    let mem = Arc::new(InMemoryGuest::new());
    let page = mem.page(0x100);
    env.ec
        .create_domain(1, env.cfg(2).guest_memory(mem.clone()))
        .unwrap();
    let ec = &env.ec;
    let off = 128usize;
    ec.register_vcpu_info(1, 1, 0x100, off as u32).unwrap();
    // Xen flags everything after the move (a spurious upcall).
    assert_eq!(
        page.atomic_u8(off + L.upcall_pending_offset)
            .unwrap()
            .load(Ordering::SeqCst),
        1
    );
    assert_eq!(
        page.atomic_u64(off + L.pending_sel_offset)
            .unwrap()
            .load(Ordering::SeqCst),
        u64::MAX
    );
    assert_eq!(env.rec.take(1, 1), 1);
    // The guest acknowledges in the new location.
    page.atomic_u8(off + L.upcall_pending_offset)
        .unwrap()
        .store(0, Ordering::SeqCst);
    page.atomic_u64(off + L.pending_sel_offset)
        .unwrap()
        .store(0, Ordering::SeqCst);
    let legacy_sel = sel(ec, 1, 1);
    let legacy_flag = upcall_pending(ec, 1, 1);

    for _ in 1..100 {
        ec.alloc_unbound(1, 1, 0).unwrap();
    }
    let p = ec.bind_ipi(1, 1).unwrap();
    assert_eq!(p, 100);
    ec.send(1, p).unwrap();
    assert!(
        ec.is_pending(1, p).unwrap(),
        "pending bitmap stays in shared_info"
    );
    assert_eq!(
        page.atomic_u64(off + L.pending_sel_offset)
            .unwrap()
            .load(Ordering::SeqCst),
        1 << 1
    );
    assert_eq!(
        page.atomic_u8(off + L.upcall_pending_offset)
            .unwrap()
            .load(Ordering::SeqCst),
        1
    );
    assert_eq!(env.rec.count(1, 1), 1);
    // The legacy slot is not written any more.
    assert_eq!(sel(ec, 1, 1), legacy_sel);
    assert_eq!(upcall_pending(ec, 1, 1), legacy_flag);
    // vcpu 0 still uses its legacy slot.
    let q = ec.bind_ipi(1, 0).unwrap();
    ec.send(1, q).unwrap();
    assert_eq!(sel(ec, 1, 0), 1 << (q / 64));
    assert_eq!(env.rec.count(1, 0), 1);
}

// ----------------------------------------------------------------------------------------
// 2-level delivery with a model of Linux's consumer
// ----------------------------------------------------------------------------------------

#[test]
fn two_level_guest_handles_each_pending_edge_exactly_once() {
    const PORTS: u32 = 300;
    let env = Env::new();
    env.ec
        .create_domain(1, env.cfg(2).max_evtchn_port(4095))
        .unwrap();
    let ec = &env.ec;
    let mut guest = TwoLevelGuest::new(ec, 1, 2);
    let mut cpu = HashMap::new();
    for i in 0..PORTS {
        let v = i % 2;
        let p = ec.bind_ipi(1, v).unwrap();
        assert_eq!(p, i + 1);
        guest.bind_to_cpu(p, v);
        cpu.insert(p, v);
    }
    let mut rng = Rng::new(0x5eed_2001);
    let mut pending = BTreeSet::new();
    let mut masked = BTreeSet::new();
    let mut edges: HashMap<u32, u64> = HashMap::new();
    let mut handled_count: HashMap<u32, u64> = HashMap::new();

    let run_upcall = |guest: &mut TwoLevelGuest,
                      v: u32,
                      pending: &mut BTreeSet<u32>,
                      masked: &BTreeSet<u32>,
                      handled_count: &mut HashMap<u32, u64>| {
        let expected: BTreeSet<u32> = pending
            .iter()
            .copied()
            .filter(|p| !masked.contains(p) && cpu[p] == v)
            .collect();
        if !expected.is_empty() {
            assert!(
                guest.upcall_pending(v),
                "events on vcpu {v} but no upcall flagged"
            );
        }
        let handled = guest.upcall(v);
        let set: BTreeSet<u32> = handled.iter().copied().collect();
        assert_eq!(
            set.len(),
            handled.len(),
            "a port handled twice in one upcall"
        );
        assert_eq!(set, expected, "vcpu {v}");
        for p in handled {
            pending.remove(&p);
            *handled_count.entry(p).or_default() += 1;
        }
    };

    for _ in 0..20_000 {
        let p = 1 + rng.below(PORTS as u64) as u32;
        match rng.below(100) {
            0..50 => {
                ec.send(1, p).unwrap();
                if pending.insert(p) {
                    *edges.entry(p).or_default() += 1;
                }
                assert!(ec.is_pending(1, p).unwrap());
            }
            50..65 => {
                guest.mask(p);
                masked.insert(p);
            }
            65..80 => {
                guest.unmask(ec, 1, p);
                masked.remove(&p);
            }
            _ => {
                let v = rng.below(2) as u32;
                run_upcall(&mut guest, v, &mut pending, &masked, &mut handled_count);
            }
        }
    }
    // Unmask everything, then drain both vcpus.
    for p in std::mem::take(&mut masked) {
        guest.unmask(ec, 1, p);
    }
    for v in 0..2 {
        run_upcall(&mut guest, v, &mut pending, &masked, &mut handled_count);
    }
    assert!(pending.is_empty(), "left pending: {pending:?}");
    for p in 1..=PORTS {
        assert_eq!(
            handled_count.get(&p).copied().unwrap_or(0),
            edges.get(&p).copied().unwrap_or(0),
            "port {p}"
        );
        assert!(!ec.is_pending(1, p).unwrap());
    }
    assert!(
        edges.values().sum::<u64>() > 1000,
        "the test did exercise delivery"
    );
}

#[test]
fn two_level_guest_round_robin_resumes_after_last_handled_port() {
    let env = Env::new();
    env.guest(1, 1);
    let ec = &env.ec;
    let mut guest = TwoLevelGuest::new(ec, 1, 1);
    for i in 1..=130 {
        assert_eq!(ec.bind_ipi(1, 0).unwrap(), i);
    }
    ec.send(1, 10).unwrap();
    assert_eq!(guest.upcall(0), vec![10]);
    // The port after the last handled one comes first.
    ec.send(1, 5).unwrap();
    ec.send(1, 20).unwrap();
    assert_eq!(guest.upcall(0), vec![20, 5]);
    // Across words: last handled 5 → resume at 6.
    ec.send(1, 70).unwrap();
    ec.send(1, 3).unwrap();
    ec.send(1, 6).unwrap();
    assert_eq!(guest.upcall(0), vec![6, 70, 3]);
    // Last handled 3 (word 0): 4.. first, then word 1, word 2, then wrap.
    ec.send(1, 129).unwrap();
    ec.send(1, 100).unwrap();
    ec.send(1, 2).unwrap();
    ec.send(1, 50).unwrap();
    assert_eq!(guest.upcall(0), vec![50, 100, 129, 2]);
    assert_eq!(guest.upcall(0), Vec::<u32>::new());
    // Masked ports wait for the unmask, which re-delivers them.
    guest.mask(7);
    ec.send(1, 7).unwrap();
    assert!(!guest.upcall_pending(0));
    assert_eq!(guest.upcall(0), Vec::<u32>::new());
    guest.unmask(ec, 1, 7);
    assert!(guest.upcall_pending(0));
    assert_eq!(guest.upcall(0), vec![7]);
}

// ----------------------------------------------------------------------------------------
// Raw guest-memory layout (numbers from the reference, not from the library's constants)
// ----------------------------------------------------------------------------------------

#[test]
fn raw_offsets_of_a_64_bit_guest() {
    let env = Env::new();
    env.guest(1, 2);
    let ec = &env.ec;
    for _ in 1..130 {
        ec.alloc_unbound(1, 1, 0).unwrap();
    }
    let p = ec.bind_ipi(1, 1).unwrap();
    assert_eq!(p, 130);
    let si = ec.shared_info(1).unwrap();
    // Masked first: only the pending bit (word 2 of evtchn_pending at 0x800).
    si.atomic_u64(0xA00 + 16)
        .unwrap()
        .fetch_or(1 << 2, Ordering::SeqCst);
    ec.send(1, p).unwrap();
    assert_eq!(
        si.atomic_u64(0x800 + 16).unwrap().load(Ordering::SeqCst),
        1 << 2
    );
    assert_eq!(si.atomic_u64(64 + 8).unwrap().load(Ordering::SeqCst), 0);
    ec.unmask(1, p).unwrap();
    assert_eq!(si.atomic_u64(0xA00 + 16).unwrap().load(Ordering::SeqCst), 0);
    // vcpu_info of vcpu 1 at 64: upcall_pending @0, pending_sel @8 (bit = word index 2).
    assert_eq!(
        si.atomic_u64(64 + 8).unwrap().load(Ordering::SeqCst),
        1 << 2
    );
    assert_eq!(si.atomic_u8(64).unwrap().load(Ordering::SeqCst), 1);
    assert_eq!(si.atomic_u8(0).unwrap().load(Ordering::SeqCst), 0);
}

#[test]
fn raw_offsets_of_a_32_bit_guest() {
    let env = Env::new();
    env.ec
        .create_domain(
            1,
            env.cfg(2)
                .two_level_layout(xen_evtchn::abi::TwoLevelLayout::X86_32),
        )
        .unwrap();
    let ec = &env.ec;
    for _ in 1..40 {
        ec.alloc_unbound(1, 1, 0).unwrap();
    }
    let p = ec.bind_ipi(1, 1).unwrap();
    assert_eq!(p, 40);
    let si = ec.shared_info(1).unwrap();
    // evtchn_pending: 32 x u32 at 2048; evtchn_mask at 2176; 32-bit words.
    si.atomic_u32(2176 + 4)
        .unwrap()
        .fetch_or(1 << 8, Ordering::SeqCst);
    ec.send(1, p).unwrap();
    assert_eq!(
        si.atomic_u32(2048 + 4).unwrap().load(Ordering::SeqCst),
        1 << 8
    );
    assert_eq!(si.atomic_u32(64 + 4).unwrap().load(Ordering::SeqCst), 0);
    assert_eq!(env.rec.total(), 0);
    ec.unmask(1, p).unwrap();
    // vcpu_info of vcpu 1 at 64: pending_sel is a u32 at +4; selector bit 40 / 32 = 1.
    assert_eq!(
        si.atomic_u32(64 + 4).unwrap().load(Ordering::SeqCst),
        1 << 1
    );
    assert_eq!(si.atomic_u8(64).unwrap().load(Ordering::SeqCst), 1);
    assert_eq!(env.rec.count(1, 1), 1);
    // Nothing written where a 64-bit layout would have put it.
    assert_eq!(si.atomic_u32(64 + 8).unwrap().load(Ordering::SeqCst), 0);
    assert_eq!(si.atomic_u32(0xA00).unwrap().load(Ordering::SeqCst), 0);
}

// ----------------------------------------------------------------------------------------
// VIRQ routing corner cases
// ----------------------------------------------------------------------------------------

#[test]
fn per_domain_and_global_virqs_can_move_and_rebind_after_close() {
    let env = Env::new();
    env.dom0();
    env.guest(1, 2);
    let ec = &env.ec;
    let argo = ec.bind_virq(1, xen_evtchn::abi::VIRQ_ARGO, 0).unwrap();
    ec.bind_vcpu(1, argo, 1).unwrap();
    ec.raise_virq(1, 0, xen_evtchn::abi::VIRQ_ARGO).unwrap();
    assert!(ec.is_pending(1, argo).unwrap());
    assert_eq!(env.rec.count(1, 1), 1);
    assert_eq!(env.rec.count(1, 0), 0);
    // Closing a moved global VIRQ clears the vcpu-0 map entry: it binds again.
    let c = ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    ec.bind_vcpu(0, c, 1).unwrap();
    ec.close(0, c).unwrap();
    assert_eq!(ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap(), c);
    ec.close(1, argo).unwrap();
    assert_eq!(
        ec.bind_virq(1, xen_evtchn::abi::VIRQ_ARGO, 0).unwrap(),
        argo
    );
}

#[test]
fn destroying_a_global_virq_handler_falls_back_to_the_hardware_domain() {
    let env = Env::new();
    env.dom0();
    env.guest(3, 1);
    let ec = &env.ec;
    ec.set_global_virq_handler(VIRQ_CONSOLE, Some(3)).unwrap();
    assert_eq!(ec.global_virq_handler(VIRQ_CONSOLE), Some(3));
    ec.destroy_domain(3).unwrap();
    assert_eq!(ec.global_virq_handler(VIRQ_CONSOLE), Some(0));
    let p = ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    ec.raise_global_virq(VIRQ_CONSOLE).unwrap();
    assert!(ec.is_pending(0, p).unwrap());
    // Without a hardware domain, nobody handles it and raising does nothing.
    ec.destroy_domain(0).unwrap();
    assert_eq!(ec.global_virq_handler(VIRQ_CONSOLE), None);
    ec.raise_global_virq(VIRQ_CONSOLE).unwrap();
}
