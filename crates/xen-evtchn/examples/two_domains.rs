//! Two domains exchanging events, first over the 2-level ABI, then (after the guest switches
//! with `EVTCHNOP_init_control`) over the FIFO ABI, each side consumed by a model of a Linux
//! guest's upcall handler.
//!
//! `cargo run --release -p xen-evtchn --example two_domains`

use std::sync::Arc;

use xen_evtchn::abi::DOMID_SELF;
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, UpcallRecorder};
use xen_evtchn::{DomainConfig, EventChannels, PortStatus};

fn main() -> Result<(), xen_evtchn::Error> {
    let upcalls = Arc::new(UpcallRecorder::new());
    let ec = EventChannels::new();

    // Domain 0 is the control/hardware domain; domain 1 a guest with two VCPUs, whose RAM
    // (for the FIFO control blocks and event array later) is host memory here.
    let guest_ram = Arc::new(InMemoryGuest::new());
    ec.create_domain(
        0,
        DomainConfig::new(1, upcalls.clone())
            .privileged(true)
            .hardware(true),
    )?;
    ec.create_domain(
        1,
        DomainConfig::new(2, upcalls.clone()).guest_memory(guest_ram.clone()),
    )?;
    println!("== 2-level ABI ==");
    let mut dom0 = TwoLevelGuest::new(&ec, 0, 1);
    let mut guest = TwoLevelGuest::new(&ec, 1, 2);

    // The guest offers a port to dom0 (as a PV frontend does for its backend)...
    let guest_port = ec.alloc_unbound(1, 1, 0)?;
    // ...dom0 binds to it; binding raises dom0's new local port once.
    let dom0_port = ec.bind_interdomain(0, 1, guest_port)?;
    println!("domain 1 offered port {guest_port}; domain 0 bound it as port {dom0_port}");
    println!("  dom0 handles {:?} (the bind's own event)", dom0.upcall(0));

    // The guest moves the channel to its VCPU 1, as Linux rebinds IRQs.
    ec.bind_vcpu(1, guest_port, 1)?;
    guest.bind_to_cpu(guest_port, 1);

    for round in 1..=3 {
        ec.send(0, dom0_port)?;
        let upcall = upcalls.take(1, 1);
        let handled = guest.upcall(1);
        println!("round {round}: dom0 → guest: {upcall} upcall on vcpu 1, handled {handled:?}");
        assert_eq!(handled, vec![guest_port]);

        ec.send(1, guest_port)?;
        let handled = dom0.upcall(0);
        println!("         guest → dom0: handled {handled:?}");
        assert_eq!(handled, vec![dom0_port]);
    }

    // A masked port collects the event without an upcall; unmasking delivers it.
    guest.mask(guest_port);
    ec.send(0, dom0_port)?;
    println!(
        "masked: pending={} upcalls={}",
        ec.is_pending(1, guest_port)?,
        upcalls.take(1, 1)
    );
    guest.unmask(&ec, 1, guest_port);
    println!(
        "unmasked: upcalls={} handled {:?}",
        upcalls.take(1, 1),
        guest.upcall(1)
    );

    // An IPI and a timer VIRQ inside the guest.
    let ipi = ec.bind_ipi(1, 0)?;
    let timer = ec.bind_virq(1, xen_evtchn::abi::VIRQ_TIMER, 0)?;
    ec.send(1, ipi)?;
    ec.raise_virq(1, 0, xen_evtchn::abi::VIRQ_TIMER)?;
    println!(
        "ipi port {ipi} and timer port {timer}: vcpu 0 handles {:?}",
        guest.upcall(0)
    );

    // The guest closes its end: dom0's end goes back to unbound, waiting for domain 1.
    ec.close(1, guest_port)?;
    let status = ec.status(0, 0, dom0_port)?;
    println!(
        "after the guest closed its end, dom0's port is {:?}",
        status.status
    );
    assert_eq!(status.status, PortStatus::Unbound { dom: 1 });

    // Through the raw hypercall entry: an unknown command is -ENOSYS, as in Xen.
    let mut args = [0u8; 8];
    println!(
        "hypercall(EVTCHNOP 99) = {}",
        ec.hypercall(1, 0, 99, &mut args)
    );

    // == FIFO ==
    // The guest resets its event channels (back to a clean 2-level state), then switches to
    // FIFO as Linux does at boot: a control block per VCPU, event-array pages as ports appear.
    println!("== FIFO ABI ==");
    ec.reset(1, DOMID_SELF)?;
    let mut guest = FifoGuest::new(&ec, &guest_ram, 1, 2, 0x1000)?;
    println!("guest domain now uses the {} ABI", ec.abi_name(1)?);
    let net = ec.alloc_unbound(1, 1, 0)?;
    let blk = ec.alloc_unbound(1, 1, 0)?;
    guest.ensure_port(&ec, blk)?;
    for port in [net, blk] {
        guest.unmask(&ec, port);
    }
    let dom0_net = ec.bind_interdomain(0, 1, net)?;
    let dom0_blk = ec.bind_interdomain(0, 1, blk)?;
    dom0.upcall(0);
    // The block device's events get a higher priority (0 is the highest, 7 the default).
    ec.set_priority(1, blk, 3)?;
    for _ in 0..2 {
        ec.send(0, dom0_net)?;
        ec.send(0, dom0_blk)?;
    }
    let handled = guest.upcall(0);
    println!(
        "dom0 sent net, blk, net, blk; the guest handled {handled:?} (blk at priority 3 \
         first, each event once)"
    );
    assert_eq!(handled, vec![blk, net]);
    ec.send(1, net)?;
    println!(
        "  guest → dom0 on the net channel: dom0 handles {:?}",
        dom0.upcall(0)
    );
    guest.check_invariants().map_err(|e| {
        eprintln!("{e}");
        xen_evtchn::Error::Inval(xen_evtchn::Reason::BadConfig("FIFO invariants"))
    })?;

    ec.destroy_domain(1)?;
    ec.destroy_domain(0)?;
    println!("total upcalls requested: {}", upcalls.total());
    Ok(())
}
