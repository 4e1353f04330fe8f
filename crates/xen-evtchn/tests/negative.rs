//! Every error path, with Xen's errno and Xen's order of checks.
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Env, errno};
use xen_evtchn::abi::{
    DOMID_SELF, Errno, TwoLevelLayout, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_TIMER,
    VIRQ_XENPMU,
};
use xen_evtchn::test_utils::InMemoryGuest;
use xen_evtchn::{DomainConfig, PortStatus, Reason};

/// dom0 (privileged, hardware) + unprivileged guests 1 and 2 (2 vcpus each).
fn env3() -> Env {
    let env = Env::new();
    env.dom0();
    env.guest(1, 2);
    env.guest(2, 2);
    env
}

// ----------------------------------------------------------------------------------------
// ESRCH
// ----------------------------------------------------------------------------------------

#[test]
fn esrch_for_unknown_domains() {
    let env = env3();
    let ec = &env.ec;
    assert_eq!(errno(ec.alloc_unbound(1, 9, 1)), Errno::ESRCH);
    assert_eq!(errno(ec.alloc_unbound(0, 9, 0)), Errno::ESRCH);
    assert_eq!(errno(ec.status(0, 9, 1)), Errno::ESRCH);
    assert_eq!(errno(ec.reset(0, 9)), Errno::ESRCH);
    assert_eq!(errno(ec.bind_interdomain(1, 9, 1)), Errno::ESRCH);
    // ESRCH comes first: before EPERM (unprivileged caller) and before EINVAL (bad port).
    assert_eq!(errno(ec.status(1, 9, 5000)), Errno::ESRCH);
    assert_eq!(errno(ec.reset(1, 9)), Errno::ESRCH);
    assert_eq!(errno(ec.bind_interdomain(1, 9, 5000)), Errno::ESRCH);
    // Ids at or above DOMID_FIRST_RESERVED other than DOMID_SELF don't exist either.
    assert_eq!(errno(ec.status(0, 0x7FF1, 0)), Errno::ESRCH);
    assert_eq!(errno(ec.alloc_unbound(0, 0x7FF2, 0)), Errno::ESRCH);
    // A destroyed domain is gone.
    ec.destroy_domain(2).unwrap();
    assert_eq!(errno(ec.alloc_unbound(0, 2, 0)), Errno::ESRCH);
    assert_eq!(errno(ec.destroy_domain(2)), Errno::ESRCH);
    assert_eq!(errno(ec.set_paused(2, true)), Errno::ESRCH);
}

// ----------------------------------------------------------------------------------------
// EINVAL: port validity (beyond the allocated bucket)
// ----------------------------------------------------------------------------------------

#[test]
fn einval_for_ports_that_are_not_valid() {
    let env = env3();
    let ec = &env.ec;
    // Only bucket 0 (ports 0..64) exists.
    for port in [64, 65, 5000, u32::MAX] {
        assert_eq!(errno(ec.close(1, port)), Errno::EINVAL, "close {port}");
        assert_eq!(errno(ec.send(1, port)), Errno::EINVAL, "send {port}");
        assert_eq!(errno(ec.unmask(1, port)), Errno::EINVAL, "unmask {port}");
        assert_eq!(errno(ec.status(1, 1, port)), Errno::EINVAL, "status {port}");
        assert_eq!(
            errno(ec.bind_vcpu(1, port, 0)),
            Errno::EINVAL,
            "bind_vcpu {port}"
        );
        assert_eq!(
            errno(ec.set_priority(1, port, 0)),
            Errno::EINVAL,
            "prio {port}"
        );
        assert_eq!(
            errno(ec.bind_interdomain(2, 1, port)),
            Errno::EINVAL,
            "bind {port}"
        );
        assert!(matches!(
            ec.close(1, port).unwrap_err().reason(),
            Reason::PortNotValid(p) if p == port
        ));
    }
    // Free ports below 64 are valid: unmask succeeds, status says closed.
    ec.unmask(1, 63).unwrap();
    assert_eq!(ec.status(1, 1, 63).unwrap().status, PortStatus::Closed);
    // Growing into bucket 1 makes 64..128 valid (and not more).
    for _ in 1..=64 {
        ec.alloc_unbound(1, 1, 0).unwrap();
    }
    ec.unmask(1, 127).unwrap();
    assert_eq!(ec.status(1, 1, 127).unwrap().status, PortStatus::Closed);
    assert_eq!(errno(ec.unmask(1, 128)), Errno::EINVAL);
    // A valid but free port gives EINVAL for a different reason.
    assert!(matches!(
        ec.close(1, 127).unwrap_err().reason(),
        Reason::PortNotBound(127)
    ));
}

#[test]
fn einval_close_of_reserved_free_or_already_closed_port() {
    let env = env3();
    let ec = &env.ec;
    assert_eq!(errno(ec.close(1, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.close(1, 5)), Errno::EINVAL);
    let p = ec.bind_ipi(1, 0).unwrap();
    ec.close(1, p).unwrap();
    assert_eq!(errno(ec.close(1, p)), Errno::EINVAL);
    // Port 0 stays reserved.
    assert_eq!(ec.status(1, 1, 0).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 1);
}

#[test]
fn einval_send_on_virq_pirq_free_and_reserved_ports() {
    let env = Env::new();
    env.dom0();
    env.ec.create_domain(1, env.cfg(2).nr_pirqs(4)).unwrap();
    let ec = &env.ec;
    let virq = ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    let pirq = ec.bind_pirq(1, 0, 0).unwrap();
    let gvirq = ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(errno(ec.send(1, virq)), Errno::EINVAL);
    assert_eq!(errno(ec.send(1, pirq)), Errno::EINVAL);
    assert_eq!(errno(ec.send(0, gvirq)), Errno::EINVAL);
    assert_eq!(errno(ec.send(1, 10)), Errno::EINVAL);
    assert_eq!(errno(ec.send(1, 0)), Errno::EINVAL);
    // Nothing was raised by the failed sends.
    assert!(!ec.is_pending(1, virq).unwrap());
    assert!(!ec.is_pending(1, pirq).unwrap());
    assert_eq!(env.rec.total(), 0);
}

// ----------------------------------------------------------------------------------------
// EINVAL: bind_interdomain
// ----------------------------------------------------------------------------------------

#[test]
fn einval_bind_interdomain_to_a_port_not_offered_to_the_caller() {
    let env = env3();
    let ec = &env.ec;
    let ipi = ec.bind_ipi(1, 0).unwrap();
    let to_dom0 = ec.alloc_unbound(1, 1, 0).unwrap();
    let to_2 = ec.alloc_unbound(1, 1, 2).unwrap();
    // Not unbound (an IPI), reserved, free (valid).
    assert_eq!(errno(ec.bind_interdomain(2, 1, ipi)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_interdomain(2, 1, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_interdomain(2, 1, 40)), Errno::EINVAL);
    // Offered to someone else (even a privileged caller can't take it).
    assert_eq!(errno(ec.bind_interdomain(2, 1, to_dom0)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_interdomain(0, 1, to_2)), Errno::EINVAL);
    assert!(matches!(
        ec.bind_interdomain(2, 1, to_dom0).unwrap_err().reason(),
        Reason::RemoteNotOffered { dom: 1, port } if port == to_dom0
    ));
    // Already connected: not unbound any more.
    let b = ec.bind_interdomain(2, 1, to_2).unwrap();
    assert_eq!(b, 1, "the failed binds leaked no local port");
    assert_eq!(errno(ec.bind_interdomain(2, 1, to_2)), Errno::EINVAL);
    // Loopback: an unbound port offered to another domain can't be taken via DOMID_SELF.
    assert_eq!(
        errno(ec.bind_interdomain(1, DOMID_SELF, to_dom0)),
        Errno::EINVAL
    );
    // None of the failures leaked a local port.
    assert_eq!(ec.alloc_unbound(2, 2, 0).unwrap(), 2);
    assert_eq!(ec.alloc_unbound(0, 0, 0).unwrap(), 1);
    assert_eq!(ec.alloc_unbound(1, 1, 0).unwrap(), 4);
}

#[test]
fn bind_interdomain_allocates_the_local_port_before_checking_the_remote_one() {
    let env = Env::new();
    env.ec
        .create_domain(1, env.cfg(1).max_evtchn_port(1))
        .unwrap();
    env.guest(2, 1);
    let ec = &env.ec;
    ec.bind_ipi(1, 0).unwrap();
    // Local table full: ENOSPC wins over the bad remote port (Xen's order).
    assert_eq!(errno(ec.bind_interdomain(1, 2, 5000)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_interdomain(1, 2, 3)), Errno::ENOSPC);
    // But ESRCH (domain lookup) comes before allocation.
    assert_eq!(errno(ec.bind_interdomain(1, 9, 3)), Errno::ESRCH);
}

// ----------------------------------------------------------------------------------------
// bind_virq: EINVAL / ENOENT / EBUSY / EEXIST, in Xen's order
// ----------------------------------------------------------------------------------------

#[test]
fn bind_virq_errors_in_order() {
    let env = env3();
    let ec = &env.ec;
    // virq >= NR_VIRQS: EINVAL, before the vcpu check.
    for virq in [24, 25, 100, u32::MAX] {
        assert_eq!(
            errno(ec.bind_virq(1, virq, 0)),
            Errno::EINVAL,
            "virq {virq}"
        );
        let e = ec.bind_virq(1, virq, 99).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(matches!(e.reason(), Reason::VirqOutOfRange(v) if v == virq));
    }
    // Global / per-domain VIRQ with vcpu != 0: EINVAL, before ENOENT and EBUSY.
    for virq in [VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_ARGO, 5, 14, 15, 16, 23] {
        assert_eq!(
            errno(ec.bind_virq(1, virq, 1)),
            Errno::EINVAL,
            "virq {virq}"
        );
        assert_eq!(
            errno(ec.bind_virq(1, virq, 99)),
            Errno::EINVAL,
            "virq {virq}"
        );
        assert_eq!(
            errno(ec.bind_virq(0, virq, 1)),
            Errno::EINVAL,
            "virq {virq}"
        );
    }
    // Per-vcpu VIRQ on a vcpu that does not exist: ENOENT.
    assert_eq!(errno(ec.bind_virq(1, VIRQ_TIMER, 2)), Errno::ENOENT);
    assert_eq!(errno(ec.bind_virq(1, VIRQ_XENPMU, u32::MAX)), Errno::ENOENT);
    // Global VIRQ by a domain that is not its handler: EBUSY.
    assert_eq!(errno(ec.bind_virq(1, VIRQ_CONSOLE, 0)), Errno::EBUSY);
    assert_eq!(errno(ec.bind_virq(1, 16, 0)), Errno::EBUSY);
    // Per-domain VIRQ (ARGO) is bindable by any domain, once.
    let argo = ec.bind_virq(1, VIRQ_ARGO, 0).unwrap();
    assert_eq!(errno(ec.bind_virq(1, VIRQ_ARGO, 0)), Errno::EEXIST);
    // Per-vcpu: EEXIST on the same vcpu, fine on another.
    let t0 = ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    assert_eq!(errno(ec.bind_virq(1, VIRQ_TIMER, 0)), Errno::EEXIST);
    let t1 = ec.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    assert_eq!(errno(ec.bind_virq(1, VIRQ_TIMER, 1)), Errno::EEXIST);
    // Global by the handler: EEXIST the second time.
    ec.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(errno(ec.bind_virq(0, VIRQ_CONSOLE, 0)), Errno::EEXIST);
    // Failed binds leaked no port.
    assert_eq!((argo, t0, t1), (1, 2, 3));
    assert_eq!(ec.bind_ipi(1, 0).unwrap(), 4);
}

#[test]
fn bind_virq_eexist_comes_before_enospc() {
    let env = Env::new();
    env.ec
        .create_domain(1, env.cfg(1).max_evtchn_port(1))
        .unwrap();
    let ec = &env.ec;
    ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    assert_eq!(errno(ec.bind_virq(1, VIRQ_TIMER, 0)), Errno::EEXIST);
    assert_eq!(errno(ec.bind_virq(1, VIRQ_ARGO, 0)), Errno::ENOSPC);
}

// ----------------------------------------------------------------------------------------
// bind_ipi / bind_vcpu: ENOENT and EINVAL
// ----------------------------------------------------------------------------------------

#[test]
fn bind_ipi_enoent_for_bad_vcpu() {
    let env = env3();
    let ec = &env.ec;
    assert_eq!(errno(ec.bind_ipi(1, 2)), Errno::ENOENT);
    assert_eq!(errno(ec.bind_ipi(1, u32::MAX)), Errno::ENOENT);
    assert_eq!(ec.bind_ipi(1, 1).unwrap(), 1);
}

#[test]
fn bind_vcpu_errors() {
    let env = env3();
    let ec = &env.ec;
    let ipi = ec.bind_ipi(1, 0).unwrap();
    let timer = ec.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    let unb = ec.alloc_unbound(1, 1, 0).unwrap();
    // ENOENT for a bad vcpu, checked before the port (even a bad port).
    assert_eq!(errno(ec.bind_vcpu(1, unb, 2)), Errno::ENOENT);
    assert_eq!(errno(ec.bind_vcpu(1, 5000, 2)), Errno::ENOENT);
    assert_eq!(errno(ec.bind_vcpu(1, u32::MAX, u32::MAX)), Errno::ENOENT);
    assert_eq!(errno(ec.bind_vcpu(1, 0, 7)), Errno::ENOENT);
    // EINVAL for IPI, per-vcpu VIRQ, free and reserved ports.
    assert_eq!(errno(ec.bind_vcpu(1, ipi, 1)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_vcpu(1, timer, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_vcpu(1, timer, 1)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_vcpu(1, 30, 1)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_vcpu(1, 0, 1)), Errno::EINVAL);
    // The failed calls changed nothing.
    assert_eq!(ec.status(1, 1, ipi).unwrap().vcpu, 0);
    assert_eq!(ec.status(1, 1, timer).unwrap().vcpu, 1);
    assert_eq!(ec.status(1, 1, unb).unwrap().vcpu, 0);
}

// ----------------------------------------------------------------------------------------
// bind_pirq
// ----------------------------------------------------------------------------------------

#[test]
fn bind_pirq_errors() {
    let env = Env::new();
    env.ec.create_domain(1, env.cfg(1).nr_pirqs(4)).unwrap();
    env.guest(2, 1);
    let ec = &env.ec;
    assert_eq!(errno(ec.bind_pirq(1, 4, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.bind_pirq(1, u32::MAX, 0)), Errno::EINVAL);
    // A domain with no PIRQs.
    assert_eq!(errno(ec.bind_pirq(2, 0, 0)), Errno::EINVAL);
    let p = ec.bind_pirq(1, 3, 0).unwrap();
    assert_eq!(p, 1, "failed binds leaked no port");
    assert_eq!(errno(ec.bind_pirq(1, 3, 0)), Errno::EEXIST);
    assert_eq!(errno(ec.bind_pirq(1, 3, 1)), Errno::EEXIST);
    assert_eq!(ec.bind_pirq(1, 2, 0).unwrap(), 2);
    // raise_pirq out of range.
    assert_eq!(errno(ec.raise_pirq(1, 4)), Errno::EINVAL);
}

#[test]
fn bind_pirq_eexist_comes_before_enospc() {
    let env = Env::new();
    env.ec
        .create_domain(1, env.cfg(1).nr_pirqs(4).max_evtchn_port(1))
        .unwrap();
    let ec = &env.ec;
    ec.bind_pirq(1, 0, 0).unwrap();
    assert_eq!(errno(ec.bind_pirq(1, 0, 0)), Errno::EEXIST);
    assert_eq!(errno(ec.bind_pirq(1, 1, 0)), Errno::ENOSPC);
}

// ----------------------------------------------------------------------------------------
// EPERM
// ----------------------------------------------------------------------------------------

#[test]
fn eperm_for_unprivileged_access_to_another_domain() {
    let env = env3();
    let ec = &env.ec;
    let p = ec.alloc_unbound(2, 2, 1).unwrap();
    assert_eq!(errno(ec.alloc_unbound(1, 2, 1)), Errno::EPERM);
    assert_eq!(errno(ec.alloc_unbound(1, 0, 1)), Errno::EPERM);
    assert_eq!(errno(ec.status(1, 2, p)), Errno::EPERM);
    assert_eq!(errno(ec.status(1, 0, 0)), Errno::EPERM);
    assert_eq!(errno(ec.reset(1, 2)), Errno::EPERM);
    assert_eq!(errno(ec.reset(1, 0)), Errno::EPERM);
    // EPERM before the pause check of reset.
    ec.set_paused(2, false).unwrap();
    assert_eq!(errno(ec.reset(1, 2)), Errno::EPERM);
    // status: EINVAL (port not valid) comes before EPERM.
    assert_eq!(errno(ec.status(1, 2, 5000)), Errno::EINVAL);
    // Nothing changed in domain 2.
    assert_eq!(
        ec.status(2, 2, p).unwrap().status,
        PortStatus::Unbound { dom: 1 }
    );
}

#[test]
fn eperm_alloc_unbound_does_not_leak_a_port() {
    let env = env3();
    let ec = &env.ec;
    assert_eq!(ec.alloc_unbound(2, 2, 0).unwrap(), 1);
    for _ in 0..10 {
        assert_eq!(errno(ec.alloc_unbound(1, 2, 1)), Errno::EPERM);
    }
    assert_eq!(ec.status(2, 2, 2).unwrap().status, PortStatus::Closed);
    assert_eq!(ec.alloc_unbound(2, 2, 0).unwrap(), 2);
    // With a limit of 3 ports, 10 failed allocations did not use any up either.
    let env = Env::new();
    env.guest(1, 1);
    env.ec
        .create_domain(2, env.cfg(1).max_evtchn_port(3))
        .unwrap();
    for _ in 0..10 {
        assert_eq!(errno(env.ec.alloc_unbound(1, 2, 1)), Errno::EPERM);
    }
    for want in 1..=3 {
        assert_eq!(env.ec.alloc_unbound(2, 2, 1).unwrap(), want);
    }
}

#[test]
fn alloc_unbound_allocation_errors_come_before_eperm() {
    let env = Env::new();
    env.guest(1, 1);
    env.ec
        .create_domain(2, env.cfg(1).max_evtchn_port(1))
        .unwrap();
    let ec = &env.ec;
    ec.alloc_unbound(2, 2, 1).unwrap();
    // Xen allocates first, then asks XSM.
    assert_eq!(errno(ec.alloc_unbound(1, 2, 1)), Errno::ENOSPC);
}

#[test]
fn device_model_is_limited_to_its_target() {
    let env = env3();
    env.ec
        .create_domain(5, env.cfg(1).device_model_for(1))
        .unwrap();
    let ec = &env.ec;
    let p = ec.alloc_unbound(5, 1, 5).unwrap();
    assert_eq!(
        ec.status(5, 1, p).unwrap().status,
        PortStatus::Unbound { dom: 5 }
    );
    ec.reset(5, 1).unwrap();
    assert_eq!(errno(ec.alloc_unbound(5, 2, 5)), Errno::EPERM);
    assert_eq!(errno(ec.status(5, 2, 0)), Errno::EPERM);
    assert_eq!(errno(ec.reset(5, 2)), Errno::EPERM);
    assert_eq!(errno(ec.status(5, 0, 0)), Errno::EPERM);
    // The target has no power over its device model.
    assert_eq!(errno(ec.status(1, 5, 0)), Errno::EPERM);
}

// ----------------------------------------------------------------------------------------
// reset / reset_cont
// ----------------------------------------------------------------------------------------

#[test]
fn reset_of_an_unpaused_other_domain_is_einval() {
    let env = env3();
    let ec = &env.ec;
    let p = ec.bind_ipi(1, 0).unwrap();
    ec.set_paused(1, false).unwrap();
    let e = ec.reset(0, 1).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(matches!(e.reason(), Reason::TargetNotPaused(1)));
    assert_eq!(
        ec.status(1, 1, p).unwrap().status,
        PortStatus::Ipi,
        "nothing closed"
    );
    // Paused again: allowed.
    ec.set_paused(1, true).unwrap();
    ec.reset(0, 1).unwrap();
    assert_eq!(ec.status(1, 1, p).unwrap().status, PortStatus::Closed);
}

#[test]
fn reset_cont_without_a_reset_running_is_ebusy() {
    let env = env3();
    let ec = &env.ec;
    assert_eq!(errno(ec.reset_cont(1, DOMID_SELF)), Errno::EBUSY);
    assert_eq!(errno(ec.reset_cont(0, 1)), Errno::EBUSY);
    // Its checks before EBUSY are those of reset.
    assert_eq!(errno(ec.reset_cont(1, 9)), Errno::ESRCH);
    assert_eq!(errno(ec.reset_cont(1, 2)), Errno::EPERM);
    ec.set_paused(2, false).unwrap();
    assert_eq!(errno(ec.reset_cont(0, 2)), Errno::EINVAL);
    // A completed reset leaves no continuation behind.
    ec.reset(1, 1).unwrap();
    assert_eq!(errno(ec.reset_cont(1, 1)), Errno::EBUSY);
}

// ----------------------------------------------------------------------------------------
// ENOSPC
// ----------------------------------------------------------------------------------------

#[test]
fn enospc_at_max_evtchn_port_for_every_binding_op() {
    let env = env3();
    env.ec
        .create_domain(3, env.cfg(2).max_evtchn_port(3).nr_pirqs(2))
        .unwrap();
    let ec = &env.ec;
    assert_eq!(ec.alloc_unbound(3, 3, 0).unwrap(), 1);
    assert_eq!(ec.bind_ipi(3, 0).unwrap(), 2);
    assert_eq!(ec.bind_virq(3, VIRQ_TIMER, 0).unwrap(), 3);
    assert_eq!(errno(ec.alloc_unbound(3, 3, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.alloc_unbound(0, 3, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_ipi(3, 1)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_virq(3, VIRQ_TIMER, 1)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_pirq(3, 0, 0)), Errno::ENOSPC);
    let offer = ec.alloc_unbound(1, 1, 3).unwrap();
    assert_eq!(errno(ec.bind_interdomain(3, 1, offer)), Errno::ENOSPC);
    // The offer was not consumed by the failed bind.
    assert_eq!(
        ec.status(1, 1, offer).unwrap().status,
        PortStatus::Unbound { dom: 3 }
    );
    // The failed binds left no state behind: the VIRQ and PIRQ can be bound after a close.
    ec.close(3, 2).unwrap();
    assert_eq!(ec.bind_virq(3, VIRQ_TIMER, 1).unwrap(), 2);
    ec.close(3, 1).unwrap();
    assert_eq!(ec.bind_pirq(3, 0, 0).unwrap(), 1);
    // Ports beyond max_evtchn_port are not valid.
    assert_eq!(errno(ec.unmask(3, 64)), Errno::EINVAL);
}

#[test]
fn enospc_at_the_two_level_limit() {
    let env = Env::new();
    env.ec
        .create_domain(1, env.cfg(1).max_evtchn_port(u32::MAX))
        .unwrap();
    let ec = &env.ec;
    for want in 1..=4095 {
        assert_eq!(ec.bind_ipi(1, 0).unwrap(), want);
    }
    assert_eq!(errno(ec.bind_ipi(1, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.alloc_unbound(1, 1, 0)), Errno::ENOSPC);
    // The last port works like any other.
    ec.send(1, 4095).unwrap();
    assert!(ec.is_pending(1, 4095).unwrap());
    assert_eq!(errno(ec.unmask(1, 4096)), Errno::EINVAL);
    ec.close(1, 4095).unwrap();
    assert_eq!(ec.bind_ipi(1, 0).unwrap(), 4095);
}

#[test]
fn enospc_at_the_two_level_limit_of_a_32_bit_guest() {
    let ec = xen_evtchn::EventChannels::new();
    ec.create_domain(
        1,
        DomainConfig::new(1, |_, _| {})
            .two_level_layout(TwoLevelLayout::X86_32)
            .max_evtchn_port(u32::MAX),
    )
    .unwrap();
    for want in 1..=1023 {
        assert_eq!(ec.bind_ipi(1, 0).unwrap(), want);
    }
    assert_eq!(errno(ec.bind_ipi(1, 0)), Errno::ENOSPC);
}

// ----------------------------------------------------------------------------------------
// ENOSYS / EOPNOTSUPP
// ----------------------------------------------------------------------------------------

#[test]
fn set_priority_on_two_level_is_enosys_after_the_port_check() {
    let env = env3();
    let ec = &env.ec;
    let p = ec.bind_ipi(1, 0).unwrap();
    assert_eq!(errno(ec.set_priority(1, p, 0)), Errno::ENOSYS);
    // ENOSYS before EACCES (free/reserved) and before EINVAL (priority > 15).
    assert_eq!(errno(ec.set_priority(1, 0, 0)), Errno::ENOSYS);
    assert_eq!(errno(ec.set_priority(1, 20, 0)), Errno::ENOSYS);
    assert_eq!(errno(ec.set_priority(1, p, 99)), Errno::ENOSYS);
    // EINVAL (port not valid) before ENOSYS.
    assert_eq!(errno(ec.set_priority(1, 64, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.set_priority(1, 5000, 99)), Errno::EINVAL);
}

#[test]
fn fifo_command_errors_and_no_out_field_on_failure() {
    use xen_evtchn::abi::{
        EVTCHNOP_expand_array, EVTCHNOP_init_control, EvtchnExpandArray, EvtchnInitControl,
        EvtchnOpArg,
    };
    // These domains have no guest memory: no frame can be mapped.
    let env = env3();
    let ec = &env.ec;
    let mut ic = [0u8; 24];
    EvtchnInitControl::new(0x100, 0, 0)
        .write_to_guest(&mut ic)
        .unwrap();
    let before = ic;
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_init_control, &mut ic), -22);
    assert_eq!(ic, before, "no OUT field written on failure");
    let mut ea = [0u8; 8];
    EvtchnExpandArray::new(0x200)
        .write_to_guest(&mut ea)
        .unwrap();
    assert_eq!(
        ec.hypercall(1, 0, EVTCHNOP_expand_array, &mut ea),
        -95,
        "expand_array before init_control"
    );
    assert_eq!(ec.abi_name(1).unwrap(), "2-level");
}

// ----------------------------------------------------------------------------------------
// Host-side (library API) errors
// ----------------------------------------------------------------------------------------

#[test]
fn host_api_errors() {
    let env = env3();
    let ec = &env.ec;
    // Domain creation.
    assert_eq!(errno(ec.create_domain(1, env.cfg(1))), Errno::EEXIST);
    assert_eq!(
        errno(ec.create_domain(DOMID_SELF, env.cfg(1))),
        Errno::EINVAL
    );
    assert_eq!(errno(ec.create_domain(7, env.cfg(0))), Errno::EINVAL);
    assert!(!ec.domain_exists(7));
    // VIRQ raising.
    assert_eq!(errno(ec.raise_virq(1, 0, 24)), Errno::EINVAL);
    assert_eq!(errno(ec.raise_virq(1, 2, VIRQ_TIMER)), Errno::ENOENT);
    assert_eq!(errno(ec.raise_virq(9, 0, VIRQ_TIMER)), Errno::ESRCH);
    assert_eq!(errno(ec.raise_global_virq(VIRQ_TIMER)), Errno::EINVAL);
    assert_eq!(
        errno(ec.set_global_virq_handler(VIRQ_TIMER, Some(1))),
        Errno::EINVAL
    );
    assert_eq!(
        errno(ec.set_global_virq_handler(VIRQ_ARGO, Some(1))),
        Errno::EINVAL
    );
    assert_eq!(
        errno(ec.set_global_virq_handler(VIRQ_CONSOLE, Some(9))),
        Errno::ESRCH
    );
    // raise_port needs a bound port.
    assert_eq!(errno(ec.raise_port(1, 3)), Errno::EINVAL);
    assert_eq!(errno(ec.raise_port(1, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.raise_port(1, 64)), Errno::EINVAL);
    // Calls from a domain that does not exist.
    assert_eq!(errno(ec.send(9, 1)), Errno::ESRCH);
    assert_eq!(errno(ec.close(9, 1)), Errno::ESRCH);
    assert_eq!(errno(ec.bind_ipi(9, 0)), Errno::ESRCH);
}

#[test]
fn register_vcpu_info_errors() {
    let env = Env::new();
    let mem = Arc::new(InMemoryGuest::new());
    mem.page(0x10);
    env.ec
        .create_domain(1, env.cfg(2).guest_memory(mem.clone()))
        .unwrap();
    env.guest(2, 1);
    let ec = &env.ec;
    // No guest memory configured.
    assert_eq!(errno(ec.register_vcpu_info(2, 0, 0x10, 0)), Errno::EINVAL);
    assert_eq!(errno(ec.register_vcpu_info(1, 2, 0x10, 0)), Errno::ENOENT);
    assert_eq!(errno(ec.register_vcpu_info(9, 0, 0x10, 0)), Errno::ESRCH);
    // Misaligned, or the 64-byte vcpu_info would cross the page end.
    assert_eq!(errno(ec.register_vcpu_info(1, 0, 0x10, 4)), Errno::EINVAL);
    assert_eq!(
        errno(ec.register_vcpu_info(1, 0, 0x10, 4096 - 56)),
        Errno::EINVAL
    );
    // Unmapped frame.
    assert_eq!(errno(ec.register_vcpu_info(1, 0, 0x11, 0)), Errno::EINVAL);
    // Success, then a second registration of the same vcpu fails.
    ec.register_vcpu_info(1, 0, 0x10, 4096 - 64).unwrap();
    assert_eq!(errno(ec.register_vcpu_info(1, 0, 0x10, 0)), Errno::EINVAL);
    ec.register_vcpu_info(1, 1, 0x10, 0).unwrap();
}

/// A PIRQ host refusing pirq 2 and recording every call.
#[derive(Debug, Default)]
struct Host {
    calls: std::sync::Mutex<Vec<(&'static str, u16, u32, bool)>>,
}

impl xen_evtchn::PirqHost for Host {
    fn bind(&self, domid: u16, pirq: u32, will_share: bool) -> Result<(), Errno> {
        self.calls
            .lock()
            .unwrap()
            .push(("bind", domid, pirq, will_share));
        if pirq == 2 { Err(Errno::EPERM) } else { Ok(()) }
    }
    fn unbind(&self, domid: u16, pirq: u32) {
        self.calls
            .lock()
            .unwrap()
            .push(("unbind", domid, pirq, false));
    }
}

#[test]
fn pirq_host_refusal_is_returned_and_leaks_nothing() {
    let host = Arc::new(Host::default());
    let ec = xen_evtchn::EventChannels::new().with_pirq_host(host.clone());
    ec.create_domain(
        1,
        DomainConfig::new(1, |_, _| {})
            .nr_pirqs(4)
            .max_evtchn_port(2),
    )
    .unwrap();
    assert_eq!(errno(ec.bind_pirq(1, 2, 0)), Errno::EPERM);
    assert_eq!(
        errno(ec.bind_pirq(1, 2, 0)),
        Errno::EPERM,
        "not recorded as bound"
    );
    let p = ec.bind_pirq(1, 1, 1).unwrap();
    assert_eq!(p, 1, "refusals leaked no port");
    ec.raise_pirq(1, 2).unwrap();
    assert_eq!(ec.status(1, 1, 2).unwrap().status, PortStatus::Closed);
    ec.bind_ipi(1, 0).unwrap();
    // Table full: ENOSPC before the host is asked; EEXIST before that.
    let n = host.calls.lock().unwrap().len();
    assert_eq!(errno(ec.bind_pirq(1, 3, 0)), Errno::ENOSPC);
    assert_eq!(errno(ec.bind_pirq(1, 1, 0)), Errno::EEXIST);
    assert_eq!(host.calls.lock().unwrap().len(), n);
    ec.close(1, p).unwrap();
    assert_eq!(
        *host.calls.lock().unwrap(),
        vec![
            ("bind", 1, 2, false),
            ("bind", 1, 2, false),
            ("bind", 1, 1, true),
            ("unbind", 1, 1, false),
        ]
    );
}
