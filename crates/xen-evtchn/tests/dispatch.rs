//! The raw hypercall entry: argument bytes in, OUT fields and -errno back.
// Helpers outside #[test] functions unwrap too (test code).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, Rng};
use xen_evtchn::EventChannels;
use xen_evtchn::abi::{
    DOMID_SELF, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi,
    EVTCHNOP_bind_pirq, EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close,
    EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_reset, EVTCHNOP_reset_cont,
    EVTCHNOP_send, EVTCHNOP_set_priority, EVTCHNOP_status, EVTCHNOP_unmask, EVTCHNSTAT_closed,
    EVTCHNSTAT_interdomain, EVTCHNSTAT_ipi, EVTCHNSTAT_pirq, EVTCHNSTAT_unbound, EVTCHNSTAT_virq,
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu,
    EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOpArg, EvtchnReset,
    EvtchnSend, EvtchnSetPriority, EvtchnStatus, EvtchnUnmask, VIRQ_CONSOLE, VIRQ_TIMER,
};
use xen_evtchn::{PortStatus, Status};

/// Issues `arg`'s command from `caller` with an exact-size buffer; returns the result and the
/// struct as read back from the buffer.
fn call<T: EvtchnOpArg>(ec: &EventChannels, caller: u16, arg: T) -> (i64, T) {
    let mut buf = vec![0u8; T::SIZE];
    arg.write_to_guest(&mut buf).unwrap();
    let ret = ec.hypercall(caller, 0, T::CMD, &mut buf);
    (ret, T::read_from_guest(&buf).unwrap())
}

/// As `call`, asserting failure with `errno` and an unchanged buffer.
#[track_caller]
fn call_fails<T: EvtchnOpArg + PartialEq + std::fmt::Debug>(
    ec: &EventChannels,
    caller: u16,
    arg: T,
    errno: i64,
) {
    let (ret, back) = call(ec, caller, arg);
    assert_eq!(ret, -errno, "{}", T::NAME);
    assert_eq!(back, arg, "{}: buffer changed on failure", T::NAME);
}

/// dom0 (privileged, hardware, 2 vcpus), guest 1 (2 vcpus, 4 pirqs), guest 2 (1 vcpu).
fn env() -> Env {
    let env = Env::new();
    env.dom0();
    env.ec.create_domain(1, env.cfg(2).nr_pirqs(4)).unwrap();
    env.guest(2, 1);
    env
}

/// (command, argument size) of every command Xen knows.
const SIZES: [(u32, usize); 15] = [
    (EVTCHNOP_bind_interdomain, 12),
    (EVTCHNOP_bind_virq, 12),
    (EVTCHNOP_bind_pirq, 12),
    (EVTCHNOP_close, 4),
    (EVTCHNOP_send, 4),
    (EVTCHNOP_status, 24),
    (EVTCHNOP_alloc_unbound, 8),
    (EVTCHNOP_bind_ipi, 8),
    (EVTCHNOP_bind_vcpu, 8),
    (EVTCHNOP_unmask, 4),
    (EVTCHNOP_reset, 2),
    (EVTCHNOP_init_control, 24),
    (EVTCHNOP_expand_array, 8),
    (EVTCHNOP_set_priority, 8),
    (EVTCHNOP_reset_cont, 2),
];

/// Every errno this subsystem can return.
const XEN_ERRNOS: [i64; 13] = [1, 2, 3, 11, 12, 13, 14, 16, 17, 22, 28, 38, 95];

#[test]
fn struct_sizes_match_xen() {
    assert_eq!(EvtchnBindInterdomain::SIZE, 12);
    assert_eq!(EvtchnBindVirq::SIZE, 12);
    assert_eq!(EvtchnBindPirq::SIZE, 12);
    assert_eq!(EvtchnClose::SIZE, 4);
    assert_eq!(EvtchnSend::SIZE, 4);
    assert_eq!(EvtchnStatus::SIZE, 24);
    assert_eq!(EvtchnAllocUnbound::SIZE, 8);
    assert_eq!(EvtchnBindIpi::SIZE, 8);
    assert_eq!(EvtchnBindVcpu::SIZE, 8);
    assert_eq!(EvtchnUnmask::SIZE, 4);
    assert_eq!(EvtchnReset::SIZE, 2);
    assert_eq!(EvtchnInitControl::SIZE, 24);
    assert_eq!(EvtchnExpandArray::SIZE, 8);
    assert_eq!(EvtchnSetPriority::SIZE, 8);
}

#[test]
fn alloc_unbound_and_bind_interdomain_write_their_out_fields() {
    let env = env();
    let ec = &env.ec;
    let (ret, a) = call(ec, 1, EvtchnAllocUnbound::new(DOMID_SELF, 2));
    assert_eq!(ret, 0);
    assert_eq!(a.port, 1);
    assert_eq!(
        (a.dom, a.remote_dom),
        (DOMID_SELF, 2),
        "IN fields preserved"
    );
    // Byte layout: port at offset 4.
    let mut raw = [0u8; 8];
    raw[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    raw[2..4].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_alloc_unbound, &mut raw), 0);
    assert_eq!(u32::from_le_bytes(raw[4..8].try_into().unwrap()), 2);

    let (ret, b) = call(ec, 2, EvtchnBindInterdomain::new(1, a.port));
    assert_eq!(ret, 0);
    assert_eq!(b.local_port, 1);
    assert_eq!((b.remote_dom, b.remote_port), (1, a.port));
    assert!(ec.is_pending(2, 1).unwrap());
    // Raw layout: remote_dom @0, remote_port @4, local_port @8.
    let mut raw = [0xEEu8; 12];
    raw[0..2].copy_from_slice(&1u16.to_le_bytes());
    raw[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(ec.hypercall(2, 0, EVTCHNOP_bind_interdomain, &mut raw), 0);
    assert_eq!(u32::from_le_bytes(raw[8..12].try_into().unwrap()), 2);
    assert_eq!(&raw[2..4], &[0xEE, 0xEE], "padding carried through");
    assert_eq!(
        ec.status(2, 2, 2).unwrap().status,
        PortStatus::Interdomain { dom: 1, port: 2 }
    );
}

#[test]
fn bind_virq_pirq_ipi_write_their_out_fields() {
    let env = env();
    let ec = &env.ec;
    let (ret, v) = call(ec, 1, EvtchnBindVirq::new(VIRQ_TIMER, 1));
    assert_eq!((ret, v.port, v.virq, v.vcpu), (0, 1, VIRQ_TIMER, 1));
    let (ret, p) = call(ec, 1, EvtchnBindPirq::new(3, 1));
    assert_eq!((ret, p.port, p.pirq, p.flags), (0, 2, 3, 1));
    let (ret, i) = call(ec, 1, EvtchnBindIpi::new(1));
    assert_eq!((ret, i.port, i.vcpu), (0, 3, 1));
    let (ret, g) = call(ec, 0, EvtchnBindVirq::new(VIRQ_CONSOLE, 0));
    assert_eq!((ret, g.port), (0, 1));
    assert_eq!(
        ec.status(1, 1, 1).unwrap(),
        Status {
            status: PortStatus::Virq(0),
            vcpu: 1
        }
    );
    assert_eq!(ec.status(1, 1, 2).unwrap().status, PortStatus::Pirq(3));
    assert_eq!(
        ec.status(1, 1, 3).unwrap(),
        Status {
            status: PortStatus::Ipi,
            vcpu: 1
        }
    );
}

#[test]
fn send_close_unmask_bind_vcpu_reset_through_bytes() {
    let env = env();
    let ec = &env.ec;
    let p = ec.bind_ipi(1, 0).unwrap();
    let (ret, _) = call(ec, 1, EvtchnSend::new(p));
    assert_eq!(ret, 0);
    assert!(ec.is_pending(1, p).unwrap());
    assert_eq!(call(ec, 1, EvtchnUnmask::new(p)).0, 0);
    let u = ec.alloc_unbound(1, 1, 0).unwrap();
    assert_eq!(call(ec, 1, EvtchnBindVcpu::new(u, 1)).0, 0);
    assert_eq!(ec.status(1, 1, u).unwrap().vcpu, 1);
    assert_eq!(call(ec, 1, EvtchnClose::new(p)).0, 0);
    assert!(!ec.is_pending(1, p).unwrap());
    assert_eq!(ec.status(1, 1, p).unwrap().status, PortStatus::Closed);
    // reset by dom0 (domain 1 is paused), then reset_cont finds nothing running.
    assert_eq!(call(ec, 0, EvtchnReset::new(1)).0, 0);
    assert_eq!(ec.status(1, 1, u).unwrap().status, PortStatus::Closed);
    assert_eq!(call(ec, 0, EvtchnReset::new(1)).0, 0);
    assert_eq!(call(ec, 1, EvtchnReset::new(DOMID_SELF)).0, 0);
    let mut raw = DOMID_SELF.to_le_bytes();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_reset_cont, &mut raw), -16);
    // set_priority on 2-level.
    let q = ec.bind_ipi(1, 0).unwrap();
    assert_eq!(call(ec, 1, EvtchnSetPriority::new(q, 3)).0, -38);
    assert_eq!(call(ec, 1, EvtchnSetPriority::new(100, 3)).0, -22);
}

#[test]
fn status_writes_every_variant_and_leaves_the_union_for_closed_and_ipi() {
    let env = env();
    let ec = &env.ec;
    let unb = ec.alloc_unbound(1, 1, 2).unwrap();
    let offer = ec.alloc_unbound(2, 2, 1).unwrap();
    let inter = ec.bind_interdomain(1, 2, offer).unwrap();
    let pirq = ec.bind_pirq(1, 2, 0).unwrap();
    let virq = ec.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    let ipi = ec.bind_ipi(1, 1).unwrap();

    let query = |caller: u16, dom: u16, port: u32| {
        let mut s = EvtchnStatus::new(dom, port);
        s.u = [0xAB; 8];
        s.status = 0xDEAD;
        s.vcpu = 0xBEEF;
        call(ec, caller, s)
    };
    let (ret, s) = query(1, DOMID_SELF, unb);
    assert_eq!(
        (ret, s.status, s.vcpu, s.unbound_dom()),
        (0, EVTCHNSTAT_unbound, 0, 2)
    );
    assert_eq!(&s.u[2..], &[0xAB; 6], "only u.unbound.dom written");
    assert_eq!((s.dom, s.port), (DOMID_SELF, unb));
    let (ret, s) = query(1, 1, inter);
    assert_eq!(
        (ret, s.status, s.interdomain()),
        (0, EVTCHNSTAT_interdomain, (2, offer))
    );
    let (ret, s) = query(0, 2, offer);
    assert_eq!(
        (ret, s.status, s.interdomain()),
        (0, EVTCHNSTAT_interdomain, (1, inter))
    );
    let (ret, s) = query(1, 1, pirq);
    assert_eq!(
        (ret, s.status, s.pirq(), s.vcpu),
        (0, EVTCHNSTAT_pirq, 2, 0)
    );
    let (ret, s) = query(1, 1, virq);
    assert_eq!(
        (ret, s.status, s.virq(), s.vcpu),
        (0, EVTCHNSTAT_virq, VIRQ_TIMER, 1)
    );
    let (ret, s) = query(1, 1, ipi);
    assert_eq!(
        (ret, s.status, s.vcpu, s.u),
        (0, EVTCHNSTAT_ipi, 1, [0xAB; 8])
    );
    let (ret, s) = query(1, 1, 0);
    assert_eq!(
        (ret, s.status, s.vcpu, s.u),
        (0, EVTCHNSTAT_closed, 0, [0xAB; 8])
    );
    let (ret, s) = query(1, 1, 40);
    assert_eq!(
        (ret, s.status, s.vcpu, s.u),
        (0, EVTCHNSTAT_closed, 0, [0xAB; 8])
    );

    // Raw offsets: status @8, vcpu @12, u @16.
    let mut raw = [0u8; 24];
    raw[0..2].copy_from_slice(&1u16.to_le_bytes());
    raw[4..8].copy_from_slice(&virq.to_le_bytes());
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_status, &mut raw), 0);
    assert_eq!(u32::from_le_bytes(raw[8..12].try_into().unwrap()), 4);
    assert_eq!(u32::from_le_bytes(raw[12..16].try_into().unwrap()), 1);
    assert_eq!(
        u32::from_le_bytes(raw[16..20].try_into().unwrap()),
        VIRQ_TIMER
    );
}

#[test]
fn failures_leave_the_buffer_unchanged() {
    let env = env();
    let ec = &env.ec;
    let mut a = EvtchnAllocUnbound::new(2, 1);
    a.port = 0xDEAD_BEEF;
    call_fails(ec, 1, a, 1); // EPERM
    a.dom = 9;
    call_fails(ec, 1, a, 3); // ESRCH
    let mut b = EvtchnBindInterdomain::new(2, 5000);
    b.local_port = 0x1234_5678;
    call_fails(ec, 1, b, 22);
    b.remote_dom = 9;
    call_fails(ec, 1, b, 3);
    let mut v = EvtchnBindVirq::new(24, 0);
    v.port = 77;
    call_fails(ec, 1, v, 22);
    v.virq = VIRQ_TIMER;
    v.vcpu = 5;
    call_fails(ec, 1, v, 2);
    v.virq = VIRQ_CONSOLE;
    v.vcpu = 0;
    call_fails(ec, 1, v, 16);
    let mut p = EvtchnBindPirq::new(4, 0);
    p.port = 77;
    call_fails(ec, 1, p, 22);
    let mut i = EvtchnBindIpi::new(2);
    i.port = 77;
    call_fails(ec, 1, i, 2);
    let mut s = EvtchnStatus::new(2, 0);
    s.status = 9;
    s.vcpu = 9;
    s.u = [9; 8];
    call_fails(ec, 1, s, 1);
    s.port = 5000;
    call_fails(ec, 0, s, 22);
    s.dom = 9;
    call_fails(ec, 0, s, 3);
    call_fails(ec, 1, EvtchnClose::new(0), 22);
    call_fails(ec, 1, EvtchnSend::new(70), 22);
    call_fails(ec, 1, EvtchnUnmask::new(70), 22);
    call_fails(ec, 1, EvtchnBindVcpu::new(1, 3), 2);
    call_fails(ec, 1, EvtchnReset::new(2), 1);
    call_fails(ec, 1, EvtchnSetPriority::new(0, 0), 38);
    // EEXIST for a second VIRQ binding, with the OUT field untouched.
    ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    v.virq = VIRQ_TIMER;
    v.vcpu = 0;
    call_fails(ec, 1, v, 17);
    // ENOSPC leaves it untouched too.
    env.ec
        .create_domain(3, env.cfg(1).max_evtchn_port(1))
        .unwrap();
    ec.bind_ipi(3, 0).unwrap();
    i.vcpu = 0;
    call_fails(ec, 3, i, 28);
}

#[test]
fn short_buffers_give_efault_for_every_command() {
    let env = env();
    let ec = &env.ec;
    // Make some commands succeed if they were executed: a pending IPI, an unbound offer.
    let ipi = ec.bind_ipi(1, 0).unwrap();
    for (cmd, size) in SIZES {
        if cmd == EVTCHNOP_init_control || cmd == EVTCHNOP_expand_array {
            continue; // see `short_buffers_give_efault_for_fifo_commands`
        }
        for len in 0..size {
            let mut buf = vec![0u8; len];
            if len >= 4 {
                buf[0..4].copy_from_slice(&ipi.to_le_bytes());
            }
            let copy = buf.clone();
            assert_eq!(
                ec.hypercall(1, 0, cmd, &mut buf),
                -14,
                "cmd {cmd} len {len}"
            );
            assert_eq!(buf, copy, "cmd {cmd} len {len}: buffer changed");
        }
    }
    // Nothing was executed: the IPI is still bound and not pending, no new ports.
    assert_eq!(ec.status(1, 1, ipi).unwrap().status, PortStatus::Ipi);
    assert!(!ec.is_pending(1, ipi).unwrap());
    assert_eq!(ec.status(1, 1, ipi + 1).unwrap().status, PortStatus::Closed);
    assert_eq!(env.rec.total(), 0);
}

#[test]
fn short_buffers_give_efault_for_fifo_commands() {
    let env = env();
    let ec = &env.ec;
    for (cmd, size) in [(EVTCHNOP_init_control, 24), (EVTCHNOP_expand_array, 8)] {
        for len in 0..size {
            let mut buf = vec![0u8; len];
            assert_eq!(
                ec.hypercall(1, 0, cmd, &mut buf),
                -14,
                "cmd {cmd} len {len}"
            );
        }
    }
}

#[test]
fn unknown_commands_give_enosys() {
    let env = env();
    let ec = &env.ec;
    for cmd in [15, 16, 17, 19, 20, 99, 1000, u32::MAX] {
        let mut buf = [0u8; 32];
        assert_eq!(ec.hypercall(1, 0, cmd, &mut buf), -38, "cmd {cmd}");
        assert_eq!(buf, [0u8; 32]);
        // Unknown: no copy from the guest, so even an empty buffer gives ENOSYS.
        assert_eq!(ec.hypercall(1, 0, cmd, &mut []), -38, "cmd {cmd}");
    }
    // 14 (reset_cont) is known: EBUSY, not ENOSYS.
    let mut buf = DOMID_SELF.to_le_bytes();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_reset_cont, &mut buf), -16);
}

#[test]
fn longer_buffers_work_and_trailing_bytes_are_untouched() {
    let env = env();
    let ec = &env.ec;
    let mut buf = [0x5Au8; 64];
    EvtchnBindIpi::new(1).write_to_guest(&mut buf).unwrap();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_bind_ipi, &mut buf), 0);
    assert_eq!(EvtchnBindIpi::read_from_guest(&buf).unwrap().port, 1);
    assert!(buf[8..].iter().all(|&b| b == 0x5A));

    let mut buf = [0x5Au8; 100];
    EvtchnStatus::new(1, 1).write_to_guest(&mut buf).unwrap();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_status, &mut buf), 0);
    let s = EvtchnStatus::read_from_guest(&buf).unwrap();
    assert_eq!((s.status, s.vcpu), (EVTCHNSTAT_ipi, 1));
    assert!(buf[24..].iter().all(|&b| b == 0x5A));

    let mut buf = [0u8; 4096];
    EvtchnSend::new(1).write_to_guest(&mut buf).unwrap();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_send, &mut buf), 0);
    assert!(ec.is_pending(1, 1).unwrap());
}

/// Interdomain peers must point back at each other.
fn assert_consistent(ec: &EventChannels, doms: &[u16]) {
    for &d in doms {
        for p in 0.. {
            let Ok(s) = ec.status(0, d, p) else { break };
            if let PortStatus::Interdomain { dom, port } = s.status {
                assert_eq!(
                    ec.status(0, dom, port).unwrap().status,
                    PortStatus::Interdomain { dom: d, port: p },
                    "d{d} port {p}"
                );
            }
        }
    }
}

#[test]
fn fuzz_random_commands_and_bytes() {
    let env = env();
    let ec = &env.ec;
    ec.set_paused(1, false).unwrap();
    let mut rng = Rng::new(0xC0FF_EE00_1234_5678);
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..20_000u32 {
        let cmd = rng.below(20) as u32;
        let len = rng.below(33) as usize;
        let mut buf = vec![0u8; len];
        if rng.below(2) == 0 {
            for b in &mut buf {
                *b = rng.next_u64() as u8;
            }
        } else {
            // Plausible values: small u32 fields, domain ids among the live ones.
            for chunk in buf.chunks_mut(4) {
                let v = rng.below(8) as u32;
                let v = v.to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            if len >= 2 && rng.below(3) == 0 {
                let d: u16 = [0, 1, 2, DOMID_SELF, 9][rng.below(5) as usize];
                buf[0..2].copy_from_slice(&d.to_le_bytes());
            }
        }
        let caller = [1u16, 2, 2, 1, 0][rng.below(5) as usize];
        let vcpu = rng.below(2) as u32;
        let ret = ec.hypercall(caller, vcpu, cmd, &mut buf);
        assert!(
            ret == 0 || XEN_ERRNOS.contains(&-ret),
            "iteration {i}: cmd {cmd} returned {ret}"
        );
        if cmd > 14 {
            assert_eq!(ret, -38);
        }
        *seen.entry(ret).or_insert(0u32) += 1;
        if i % 1000 == 0 {
            assert_consistent(ec, &[0, 1, 2]);
        }
    }
    assert_consistent(ec, &[0, 1, 2]);
    // The run exercised successes and a good range of errors.
    assert!(seen.get(&0).copied().unwrap_or(0) > 500, "{seen:?}");
    for e in [-14, -22, -38] {
        assert!(seen.contains_key(&e), "never saw {e}: {seen:?}");
    }
}

/// The raw entry handles EVTCHNOP_send inline (not through the general dispatch): hostile
/// ports and callers get exactly the errno of the typed `send`, and a 3-byte buffer EFAULT.
#[test]
fn raw_send_answers_hostile_ports_like_the_typed_send() {
    let env = env();
    let ec = &env.ec;
    let ipi = ec.bind_ipi(1, 0).unwrap();
    let virq = ec.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    let unbound = ec.alloc_unbound(1, 1, 2).unwrap();
    let cases: [(u16, u32); 9] = [
        (1, ipi),
        (1, unbound),
        (1, virq),
        (1, 0),
        (1, 999),
        (1, 4096),
        (1, u32::MAX),
        (77, ipi),
        (DOMID_SELF, ipi),
    ];
    for (caller, port) in cases {
        let typed = match ec.send(caller, port) {
            Ok(()) => 0,
            Err(e) => e.as_hypercall_ret(),
        };
        let (raw, back) = call(ec, caller, EvtchnSend::new(port));
        assert_eq!(raw, typed, "caller {caller} port {port:#x}");
        assert_eq!(back.port, port, "IN-only struct unchanged");
    }
    // The values themselves, so both sides cannot agree on a wrong answer.
    assert_eq!(call(ec, 1, EvtchnSend::new(ipi)).0, 0);
    assert_eq!(call(ec, 1, EvtchnSend::new(virq)).0, -22);
    assert_eq!(call(ec, 1, EvtchnSend::new(u32::MAX)).0, -22);
    assert_eq!(call(ec, 77, EvtchnSend::new(ipi)).0, -3);
    let mut short = ipi.to_le_bytes();
    assert_eq!(ec.hypercall(1, 0, EVTCHNOP_send, &mut short[..3]), -14);
}
