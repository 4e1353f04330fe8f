//! One port's hypervisor-side state, packed so a sender reads it with one atomic load.
//!
//! The binding of a port lives in a single 64-bit word, written only under the owning domain's
//! event lock and read by senders without any lock:
//!
//! | bits   | field        | meaning                                                        |
//! |--------|--------------|----------------------------------------------------------------|
//! | 0..3   | state        | FREE 0, RESERVED 1, UNBOUND 2, INTERDOMAIN 3, PIRQ 4, VIRQ 5, IPI 6 (Xen's values); 7 CLOSING (ours, below) |
//! | 3..16  | notify vcpu  | the VCPU that is told about events on this port (13 bits)      |
//! | 16..32 | domain       | UNBOUND: the domain allowed to bind; INTERDOMAIN: the peer      |
//! | 32..64 | payload      | INTERDOMAIN: peer port; PIRQ: pirq; VIRQ: virq                 |
//!
//! Transitions (all under the event lock of every domain involved; see `docs/design.md`):
//!
//! | from        | to          | by                                                      |
//! |-------------|-------------|---------------------------------------------------------|
//! | FREE        | RESERVED    | domain creation (port 0 only)                           |
//! | FREE        | UNBOUND     | alloc_unbound                                           |
//! | FREE        | INTERDOMAIN | bind_interdomain (local end; the remote UNBOUND end moves too) |
//! | UNBOUND     | INTERDOMAIN | the remote domain's bind_interdomain                    |
//! | FREE        | VIRQ, IPI, PIRQ | bind_virq, bind_ipi, bind_pirq                      |
//! | any bound   | FREE        | close                                                   |
//! | any bound   | CLOSING → FREE | reset and domain destruction: unbound port by port, then freed together after one grace period |
//! | INTERDOMAIN | UNBOUND     | the peer end was closed (remote := the closer)          |
//! | any bound   | same        | bind_vcpu (only the notify vcpu changes)                |
//!
//! Two 32-bit words hold what only the FIFO backend uses: the priority with the queue the event
//! was last linked on, and the "raised while its event-array page was missing" flag; their
//! layout belongs to the backend (`fifo::port_queue`).

use xen_evtchn_abi::{DomId, EvtchnPort};

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Highest VCPU id a port can name (13 bits).
pub(crate) const MAX_VCPUS: u32 = 1 << 13;

/// A port's binding, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// Not allocated.
    Free,
    /// Never allocatable (port 0).
    Reserved,
    /// Allocated, waiting for `remote` to bind to it.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to a port of a domain (possibly the same one).
    Interdomain {
        /// Peer domain.
        dom: DomId,
        /// Peer port.
        port: EvtchnPort,
    },
    /// Bound to a physical IRQ.
    Pirq {
        /// The PIRQ.
        pirq: u32,
    },
    /// Bound to a virtual IRQ.
    Virq {
        /// The VIRQ.
        virq: u32,
    },
    /// An inter-processor interrupt within the domain.
    Ipi,
}

impl Binding {
    /// Xen's name of the state, for messages.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Binding::Free => "free",
            Binding::Reserved => "reserved",
            Binding::Unbound { .. } => "unbound",
            Binding::Interdomain { .. } => "interdomain",
            Binding::Pirq { .. } => "pirq",
            Binding::Virq { .. } => "virq",
            Binding::Ipi => "ipi",
        }
    }
}

const STATE_BITS: u32 = 3;
const VCPU_SHIFT: u32 = 3;
const VCPU_MASK: u64 = (MAX_VCPUS as u64 - 1) << VCPU_SHIFT;
const DOM_SHIFT: u32 = 16;
const PAYLOAD_SHIFT: u32 = 32;

const S_FREE: u64 = 0;
const S_RESERVED: u64 = 1;
const S_UNBOUND: u64 = 2;
const S_INTERDOMAIN: u64 = 3;
const S_PIRQ: u64 = 4;
const S_VIRQ: u64 = 5;
const S_IPI: u64 = 6;
/// Unbound, waiting for the grace period after which it becomes FREE: every operation sees a
/// free port (it decodes as [`Binding::Free`]), but allocation skips it.
const S_CLOSING: u64 = 7;

/// A snapshot of a port's state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortState(u64);

impl PortState {
    /// The state of a never-used port.
    pub(crate) const FREE: PortState = PortState(0);

    /// A port unbound by a batch (reset, destruction) whose grace period has not passed.
    pub(crate) const CLOSING: PortState = PortState(S_CLOSING);

    /// Encodes a binding with its notify VCPU (which must be below [`MAX_VCPUS`]).
    pub(crate) const fn new(binding: Binding, vcpu: u32) -> Self {
        let (state, dom, payload) = match binding {
            Binding::Free => (S_FREE, 0, 0),
            Binding::Reserved => (S_RESERVED, 0, 0),
            Binding::Unbound { remote } => (S_UNBOUND, remote, 0),
            Binding::Interdomain { dom, port } => (S_INTERDOMAIN, dom, port),
            Binding::Pirq { pirq } => (S_PIRQ, 0, pirq),
            Binding::Virq { virq } => (S_VIRQ, 0, virq),
            Binding::Ipi => (S_IPI, 0, 0),
        };
        PortState(
            state
                | (((vcpu as u64) << VCPU_SHIFT) & VCPU_MASK)
                | ((dom as u64) << DOM_SHIFT)
                | ((payload as u64) << PAYLOAD_SHIFT),
        )
    }

    /// The binding.
    #[inline(always)]
    pub(crate) const fn binding(self) -> Binding {
        let dom = (self.0 >> DOM_SHIFT) as u16;
        let payload = (self.0 >> PAYLOAD_SHIFT) as u32;
        match self.0 & ((1 << STATE_BITS) - 1) {
            S_RESERVED => Binding::Reserved,
            S_UNBOUND => Binding::Unbound { remote: dom },
            S_INTERDOMAIN => Binding::Interdomain { dom, port: payload },
            S_PIRQ => Binding::Pirq { pirq: payload },
            S_VIRQ => Binding::Virq { virq: payload },
            S_IPI => Binding::Ipi,
            _ => Binding::Free,
        }
    }

    /// The peer of an INTERDOMAIN port (a cheaper test than decoding the whole binding).
    #[inline(always)]
    pub(crate) const fn interdomain_peer(self) -> Option<(DomId, EvtchnPort)> {
        if self.0 & ((1 << STATE_BITS) - 1) == S_INTERDOMAIN {
            Some((
                (self.0 >> DOM_SHIFT) as u16,
                (self.0 >> PAYLOAD_SHIFT) as u32,
            ))
        } else {
            None
        }
    }

    /// IPI.
    #[inline(always)]
    pub(crate) const fn is_ipi(self) -> bool {
        self.0 & ((1 << STATE_BITS) - 1) == S_IPI
    }

    /// UNBOUND.
    #[inline(always)]
    pub(crate) const fn is_unbound(self) -> bool {
        self.0 & ((1 << STATE_BITS) - 1) == S_UNBOUND
    }

    /// The VCPU told about events on this port.
    #[inline(always)]
    pub(crate) const fn notify_vcpu(self) -> u32 {
        ((self.0 & VCPU_MASK) >> VCPU_SHIFT) as u32
    }

    /// The same binding with another notify VCPU.
    pub(crate) const fn with_vcpu(self, vcpu: u32) -> Self {
        PortState((self.0 & !VCPU_MASK) | (((vcpu as u64) << VCPU_SHIFT) & VCPU_MASK))
    }

    /// FREE or RESERVED (or CLOSING, which every operation treats as free).
    #[inline(always)]
    pub(crate) const fn is_free_or_reserved(self) -> bool {
        let s = self.0 & ((1 << STATE_BITS) - 1);
        s <= S_RESERVED || s == S_CLOSING
    }

    /// FREE.
    pub(crate) const fn is_free(self) -> bool {
        self.0 & ((1 << STATE_BITS) - 1) == S_FREE
    }

    /// Xen's "usable": bound in some way (UNBOUND counts), so the ABI hooks act on it.
    #[inline(always)]
    pub(crate) const fn is_usable(self) -> bool {
        !self.is_free_or_reserved()
    }
}

/// Hypervisor-side storage of one port: 16 bytes.
#[derive(Debug, Default)]
pub(crate) struct PortSlot {
    /// The [`PortState`] word.
    state: AtomicU64,
    /// FIFO: priority and the queue the event was last linked on; unused by 2-level.
    pub(crate) fifo_queue: AtomicU32,
    /// FIFO: flags (raised while its event word was not mapped); unused by 2-level.
    pub(crate) fifo_flags: AtomicU32,
}

impl PortSlot {
    /// The current state. Acquire: pairs with [`PortSlot::set`], so whatever the writer set up
    /// before publishing the state (a peer's binding, a VIRQ map) is visible.
    #[inline(always)]
    pub(crate) fn load(&self) -> PortState {
        PortState(self.state.load(Ordering::Acquire))
    }

    /// Publishes a new state. Callers hold the event lock of the owning domain.
    pub(crate) fn set(&self, state: PortState) {
        self.state.store(state.0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_round_trips_with_its_vcpu() {
        let cases = [
            Binding::Free,
            Binding::Reserved,
            Binding::Unbound { remote: 0x7FF0 },
            Binding::Interdomain {
                dom: 0xFFFF,
                port: 131_071,
            },
            Binding::Pirq { pirq: u32::MAX },
            Binding::Virq { virq: 23 },
            Binding::Ipi,
        ];
        for b in cases {
            for vcpu in [0, 1, 127, MAX_VCPUS - 1] {
                let s = PortState::new(b, vcpu);
                assert_eq!(s.binding(), b);
                assert_eq!(s.is_ipi(), b == Binding::Ipi);
                assert_eq!(s.is_unbound(), matches!(b, Binding::Unbound { .. }));
                match b {
                    Binding::Interdomain { dom, port } => {
                        assert_eq!(s.interdomain_peer(), Some((dom, port)));
                    }
                    _ => assert_eq!(s.interdomain_peer(), None),
                }
                assert_eq!(s.notify_vcpu(), vcpu);
                let moved = s.with_vcpu(vcpu ^ 5);
                assert_eq!(moved.binding(), b);
                assert_eq!(moved.notify_vcpu(), vcpu ^ 5);
            }
        }
    }

    #[test]
    fn usability_follows_xen() {
        let st = |b| PortState::new(b, 0);
        assert!(!st(Binding::Free).is_usable());
        assert!(!st(Binding::Reserved).is_usable());
        assert!(st(Binding::Unbound { remote: 1 }).is_usable());
        assert!(st(Binding::Ipi).is_usable());
        assert_eq!(PortState::FREE, st(Binding::Free));
        assert!(PortState::FREE.is_free());
        assert!(!st(Binding::Reserved).is_free());
        // CLOSING: unusable and reported free, but not allocatable.
        assert!(!PortState::CLOSING.is_usable());
        assert!(!PortState::CLOSING.is_free());
        assert_eq!(PortState::CLOSING.binding(), Binding::Free);
        assert_eq!(PortState::CLOSING.interdomain_peer(), None);
        assert!(!PortState::CLOSING.is_ipi() && !PortState::CLOSING.is_unbound());
    }

    #[test]
    fn a_slot_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<PortSlot>(), 16);
    }
}
