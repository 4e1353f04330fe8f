//! A hypervisor whose upcall sink type is static (`EventChannels::with_upcall_type`) behaves
//! exactly like one calling its sinks through `SharedUpcallSink` (`EventChannels::new`): the
//! same scenarios, run on both, give the same deliveries and the same upcalls, and those are
//! the ones the scenario expects.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use xen_evtchn::abi::{DomId, EvtchnPort, VIRQ_TIMER};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, UpcallRecorder};
use xen_evtchn::{DomainConfig, EventChannels, UpcallSink};

/// What a scenario observed: per round, the ports each VCPU's upcall handled and the upcalls
/// the VMM was asked for, per VCPU.
type Trace = Vec<(Vec<Vec<EvtchnPort>>, Vec<u64>)>;

const DOM0: DomId = 0;
const GUEST: DomId = 1;
const ROUNDS: u32 = 40;

/// Two-level: an interdomain channel from dom0 (notified on VCPU 1), an IPI (VCPU 0) and the
/// per-VCPU timer VIRQ (VCPU 1) of a 2-VCPU guest, raised in a pattern that varies per round,
/// then the Linux 2-level handler runs on both VCPUs.
fn two_level<U: UpcallSink + Clone>(
    ec: &EventChannels<U>,
    config: impl Fn(u32) -> DomainConfig<U>,
    rec: &UpcallRecorder,
) -> Trace {
    ec.create_domain(DOM0, config(1).privileged(true)).unwrap();
    ec.create_domain(GUEST, config(2)).unwrap();
    let remote = ec.alloc_unbound(GUEST, GUEST, DOM0).unwrap();
    let local = ec.bind_interdomain(DOM0, GUEST, remote).unwrap();
    ec.bind_vcpu(GUEST, remote, 1).unwrap();
    let ipi = ec.bind_ipi(GUEST, 0).unwrap();
    let timer = ec.bind_virq(GUEST, VIRQ_TIMER, 1).unwrap();
    let mut guest = TwoLevelGuest::new(ec, GUEST, 2);
    guest.bind_to_cpu(remote, 1);
    guest.bind_to_cpu(timer, 1);
    // bind_interdomain made the remote end pending; start from a quiet guest.
    guest.upcall(0);
    guest.upcall(1);
    rec.take(GUEST, 0);
    rec.take(GUEST, 1);

    let mut trace = Trace::new();
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ec.send(DOM0, local).unwrap();
        }
        if round % 3 == 0 {
            ec.send(GUEST, ipi).unwrap();
        }
        if round % 5 == 0 {
            ec.raise_virq(GUEST, 1, VIRQ_TIMER).unwrap();
        }
        let handled = vec![guest.upcall(0), guest.upcall(1)];
        trace.push((handled, vec![rec.take(GUEST, 0), rec.take(GUEST, 1)]));
    }
    let expected: Trace = (0..ROUNDS)
        .map(|round| {
            let v0: Vec<EvtchnPort> = if round % 3 == 0 { vec![ipi] } else { vec![] };
            let mut v1 = Vec::new();
            if round % 2 == 0 {
                v1.push(remote);
            }
            if round % 5 == 0 {
                v1.push(timer);
            }
            v1.sort_unstable();
            let upcalls = vec![u64::from(!v0.is_empty()), u64::from(!v1.is_empty())];
            (vec![v0, v1], upcalls)
        })
        .collect();
    let sorted: Trace = trace
        .iter()
        .map(|(handled, upcalls)| {
            let mut handled = handled.clone();
            handled.iter_mut().for_each(|v| v.sort_unstable());
            (handled, upcalls.clone())
        })
        .collect();
    assert_eq!(sorted, expected, "2-level deliveries or upcalls");
    trace
}

/// FIFO: a 2-VCPU guest on the FIFO ABI with ports of three priorities on VCPU 0 and one on
/// VCPU 1, sent in an order the priorities must reorder, then the Linux FIFO handler drains.
fn fifo<U: UpcallSink + Clone>(
    ec: &EventChannels<U>,
    config: impl Fn(u32) -> DomainConfig<U>,
    rec: &UpcallRecorder,
) -> Trace {
    let memory = Arc::new(InMemoryGuest::new());
    ec.create_domain(GUEST, config(2).guest_memory(memory.clone()))
        .unwrap();
    let mut guest = FifoGuest::new(ec, &memory, GUEST, 2, 0x1000).unwrap();
    let mut bind = |vcpu: u32, priority: u32| {
        let port = ec.bind_ipi(GUEST, vcpu).unwrap();
        ec.set_priority(GUEST, port, priority).unwrap();
        guest.ensure_port(ec, port).unwrap();
        guest.expect_route(port, vcpu, priority);
        assert!(!guest.unmask(ec, port));
        port
    };
    let (low, mid, high, other) = (bind(0, 9), bind(0, 7), bind(0, 2), bind(1, 7));
    rec.take(GUEST, 0);
    rec.take(GUEST, 1);

    let mut trace = Trace::new();
    for round in 0..ROUNDS {
        let order: &[EvtchnPort] = match round % 3 {
            0 => &[low, mid, high, other],
            1 => &[other, high, low],
            _ => &[mid, mid, low],
        };
        for &port in order {
            ec.send(GUEST, port).unwrap();
        }
        let handled = vec![guest.upcall(0), guest.upcall(1)];
        trace.push((handled, vec![rec.take(GUEST, 0), rec.take(GUEST, 1)]));
    }
    let expected: Trace = (0..ROUNDS)
        .map(|round| {
            let (v0, v1) = match round % 3 {
                0 => (vec![high, mid, low], vec![other]),
                1 => (vec![high, low], vec![other]),
                _ => (vec![mid, low], vec![]),
            };
            let upcalls = vec![1, u64::from(!v1.is_empty())];
            (vec![v0, v1], upcalls)
        })
        .collect();
    assert_eq!(
        trace, expected,
        "FIFO deliveries (in priority order) or upcalls"
    );
    trace
}

/// Runs `scenario` on a shared-sink and on a static-sink hypervisor (each with a fresh
/// recorder) and checks that they observed the same things.
macro_rules! shared_and_static_agree {
    ($scenario:ident) => {{
        let rec = Arc::new(UpcallRecorder::new());
        let r = rec.clone();
        let shared = $scenario(
            &EventChannels::new(),
            move |n| DomainConfig::new(n, r.clone()),
            &rec,
        );
        let rec = Arc::new(UpcallRecorder::new());
        let r = rec.clone();
        let fixed = $scenario(
            &EventChannels::<Arc<UpcallRecorder>>::with_upcall_type(),
            move |n| DomainConfig::with_upcall(n, r.clone()),
            &rec,
        );
        assert_eq!(shared, fixed);
    }};
}

#[test]
fn two_level_static_and_shared_sinks_agree() {
    shared_and_static_agree!(two_level);
}

#[test]
fn fifo_static_and_shared_sinks_agree() {
    shared_and_static_agree!(fifo);
}
