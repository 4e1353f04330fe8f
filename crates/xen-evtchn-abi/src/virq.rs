//! Virtual IRQ numbers (`VIRQ_*`) and their binding class.
//!
//! Numbers come from `xen/include/public/xen.h` (and `VIRQ_MCA` from
//! `xen/include/public/arch-x86/xen-mca.h`). The classification follows
//! Xen's `EVTCHNOP_bind_virq` handling (`xen/common/event_channel.c`), which
//! matches the V/D/G marks in the header.

/// Timer tick or requested timeout (per-vCPU).
pub const VIRQ_TIMER: u32 = 0;
/// Request to dump debug information (per-vCPU).
pub const VIRQ_DEBUG: u32 = 1;
/// Input on the emergency console (global).
pub const VIRQ_CONSOLE: u32 = 2;
/// Something exceptional happened to some domain (global).
pub const VIRQ_DOM_EXC: u32 = 3;
/// The trace buffer has records (global).
pub const VIRQ_TBUF: u32 = 4;
/// A domain stopped for a debugger (global).
pub const VIRQ_DEBUGGER: u32 = 6;
/// Xenoprof has a new sample (per-vCPU).
pub const VIRQ_XENOPROF: u32 = 7;
/// Input on the console ring (global).
pub const VIRQ_CON_RING: u32 = 8;
/// A physical CPU changed state (global).
pub const VIRQ_PCPU_STATE: u32 = 9;
/// A memory event occurred (global).
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Argo message notification (per-domain).
pub const VIRQ_ARGO: u32 = 11;
/// Xen is short of heap memory (global).
pub const VIRQ_ENOMEM: u32 = 12;
/// Performance counter interrupt (per-vCPU).
pub const VIRQ_XENPMU: u32 = 13;
/// First architecture-specific VIRQ.
pub const VIRQ_ARCH_0: u32 = 16;
/// Architecture-specific VIRQ 1.
pub const VIRQ_ARCH_1: u32 = 17;
/// Architecture-specific VIRQ 2.
pub const VIRQ_ARCH_2: u32 = 18;
/// Architecture-specific VIRQ 3.
pub const VIRQ_ARCH_3: u32 = 19;
/// Architecture-specific VIRQ 4.
pub const VIRQ_ARCH_4: u32 = 20;
/// Architecture-specific VIRQ 5.
pub const VIRQ_ARCH_5: u32 = 21;
/// Architecture-specific VIRQ 6.
pub const VIRQ_ARCH_6: u32 = 22;
/// Last architecture-specific VIRQ.
pub const VIRQ_ARCH_7: u32 = 23;
/// x86 machine-check notification for the hardware domain: another name for
/// [`VIRQ_ARCH_0`] (`arch-x86/xen-mca.h`).
pub const VIRQ_MCA: u32 = VIRQ_ARCH_0;

/// Number of VIRQ numbers (0 to 23); `EVTCHNOP_bind_virq` rejects anything
/// at or above this with `EINVAL`.
pub const NR_VIRQS: u32 = 24;

/// How a VIRQ may be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VirqKind {
    /// Bindable once on every vCPU, each binding with its own port; the port
    /// stays on the vCPU it was bound on.
    PerVcpu,
    /// Bindable once per domain, on vCPU 0; the port may later be moved to
    /// another vCPU.
    PerDomain,
    /// Like [`PerDomain`](Self::PerDomain), but only one domain at a time
    /// (the one registered as its handler) may bind it.
    Global,
}

/// The binding class of `virq`, or `None` if `virq >= NR_VIRQS`.
///
/// Per-vCPU: [`VIRQ_TIMER`], [`VIRQ_DEBUG`], [`VIRQ_XENOPROF`],
/// [`VIRQ_XENPMU`]. Per-domain: [`VIRQ_ARGO`]. Everything else below
/// [`NR_VIRQS`] is global, including the unassigned numbers 5, 14 and 15
/// and `VIRQ_ARCH_0` to `VIRQ_ARCH_7`. The architecture decides the class of
/// the `VIRQ_ARCH_*` numbers; every architecture Xen supports today (x86,
/// Arm, PPC, RISC-V) makes them global, and this function follows that.
///
/// ```
/// use xen_evtchn_abi::{virq_kind, VirqKind, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_TIMER};
///
/// assert_eq!(virq_kind(VIRQ_TIMER), Some(VirqKind::PerVcpu));
/// assert_eq!(virq_kind(VIRQ_ARGO), Some(VirqKind::PerDomain));
/// assert_eq!(virq_kind(VIRQ_CONSOLE), Some(VirqKind::Global));
/// assert_eq!(virq_kind(24), None);
/// ```
pub const fn virq_kind(virq: u32) -> Option<VirqKind> {
    match virq {
        VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU => Some(VirqKind::PerVcpu),
        VIRQ_ARGO => Some(VirqKind::PerDomain),
        v if v < NR_VIRQS => Some(VirqKind::Global),
        _ => None,
    }
}

/// The name of `virq` (e.g. `"VIRQ_TIMER"`), or `None` for an unassigned
/// number (5, 14, 15) or one at or above [`NR_VIRQS`]. The architecture
/// VIRQs are named generically (`"VIRQ_ARCH_0"`, not `"VIRQ_MCA"`).
pub const fn virq_name(virq: u32) -> Option<&'static str> {
    Some(match virq {
        VIRQ_TIMER => "VIRQ_TIMER",
        VIRQ_DEBUG => "VIRQ_DEBUG",
        VIRQ_CONSOLE => "VIRQ_CONSOLE",
        VIRQ_DOM_EXC => "VIRQ_DOM_EXC",
        VIRQ_TBUF => "VIRQ_TBUF",
        VIRQ_DEBUGGER => "VIRQ_DEBUGGER",
        VIRQ_XENOPROF => "VIRQ_XENOPROF",
        VIRQ_CON_RING => "VIRQ_CON_RING",
        VIRQ_PCPU_STATE => "VIRQ_PCPU_STATE",
        VIRQ_MEM_EVENT => "VIRQ_MEM_EVENT",
        VIRQ_ARGO => "VIRQ_ARGO",
        VIRQ_ENOMEM => "VIRQ_ENOMEM",
        VIRQ_XENPMU => "VIRQ_XENPMU",
        VIRQ_ARCH_0 => "VIRQ_ARCH_0",
        VIRQ_ARCH_1 => "VIRQ_ARCH_1",
        VIRQ_ARCH_2 => "VIRQ_ARCH_2",
        VIRQ_ARCH_3 => "VIRQ_ARCH_3",
        VIRQ_ARCH_4 => "VIRQ_ARCH_4",
        VIRQ_ARCH_5 => "VIRQ_ARCH_5",
        VIRQ_ARCH_6 => "VIRQ_ARCH_6",
        VIRQ_ARCH_7 => "VIRQ_ARCH_7",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Numbers from xen/include/public/xen.h.
    #[test]
    fn numbers() {
        assert_eq!(VIRQ_TIMER, 0);
        assert_eq!(VIRQ_DEBUG, 1);
        assert_eq!(VIRQ_CONSOLE, 2);
        assert_eq!(VIRQ_DOM_EXC, 3);
        assert_eq!(VIRQ_TBUF, 4);
        assert_eq!(VIRQ_DEBUGGER, 6);
        assert_eq!(VIRQ_XENOPROF, 7);
        assert_eq!(VIRQ_CON_RING, 8);
        assert_eq!(VIRQ_PCPU_STATE, 9);
        assert_eq!(VIRQ_MEM_EVENT, 10);
        assert_eq!(VIRQ_ARGO, 11);
        assert_eq!(VIRQ_ENOMEM, 12);
        assert_eq!(VIRQ_XENPMU, 13);
        assert_eq!(
            [
                VIRQ_ARCH_0,
                VIRQ_ARCH_1,
                VIRQ_ARCH_2,
                VIRQ_ARCH_3,
                VIRQ_ARCH_4,
                VIRQ_ARCH_5,
                VIRQ_ARCH_6,
                VIRQ_ARCH_7
            ],
            [16, 17, 18, 19, 20, 21, 22, 23]
        );
        assert_eq!(VIRQ_MCA, 16);
        assert_eq!(NR_VIRQS, 24);
    }

    #[test]
    fn kind_of_every_number() {
        use VirqKind::{Global, PerDomain, PerVcpu};
        let expected: [Option<VirqKind>; 25] = [
            Some(PerVcpu),   // 0 TIMER
            Some(PerVcpu),   // 1 DEBUG
            Some(Global),    // 2 CONSOLE
            Some(Global),    // 3 DOM_EXC
            Some(Global),    // 4 TBUF
            Some(Global),    // 5 unassigned
            Some(Global),    // 6 DEBUGGER
            Some(PerVcpu),   // 7 XENOPROF
            Some(Global),    // 8 CON_RING
            Some(Global),    // 9 PCPU_STATE
            Some(Global),    // 10 MEM_EVENT
            Some(PerDomain), // 11 ARGO
            Some(Global),    // 12 ENOMEM
            Some(PerVcpu),   // 13 XENPMU
            Some(Global),    // 14 unassigned
            Some(Global),    // 15 unassigned
            Some(Global),    // 16 ARCH_0
            Some(Global),    // 17 ARCH_1
            Some(Global),    // 18 ARCH_2
            Some(Global),    // 19 ARCH_3
            Some(Global),    // 20 ARCH_4
            Some(Global),    // 21 ARCH_5
            Some(Global),    // 22 ARCH_6
            Some(Global),    // 23 ARCH_7
            None,            // 24 = NR_VIRQS
        ];
        for (virq, want) in expected.iter().enumerate() {
            assert_eq!(virq_kind(virq as u32), *want, "virq {virq}");
        }
        assert_eq!(virq_kind(u32::MAX), None);
    }

    #[test]
    fn names() {
        assert_eq!(virq_name(0), Some("VIRQ_TIMER"));
        assert_eq!(virq_name(11), Some("VIRQ_ARGO"));
        assert_eq!(virq_name(12), Some("VIRQ_ENOMEM"));
        assert_eq!(virq_name(13), Some("VIRQ_XENPMU"));
        assert_eq!(virq_name(23), Some("VIRQ_ARCH_7"));
        for unassigned in [5, 14, 15, 24, 100, u32::MAX] {
            assert_eq!(virq_name(unassigned), None);
        }
        let named = (0..NR_VIRQS).filter(|&v| virq_name(v).is_some()).count();
        assert_eq!(named, 21);
    }
}
