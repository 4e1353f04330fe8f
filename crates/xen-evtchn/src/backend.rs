//! `EvtchnPortOps`: everything ABI-specific, behind one trait.
//!
//! The core (port table, operations, dispatch) never looks at which ABI a domain uses: it calls
//! these hooks, exactly as Xen's generic code calls its `evtchn_port_ops` table. The 2-level
//! backend is [`crate::two_level::TwoLevel`], the FIFO backend [`crate::fifo::Fifo`]; [`Backend`]
//! is the one a domain uses now.
//!
//! The hooks that notify a VCPU are generic over the VCPU's upcall sink type, so that a
//! statically typed sink is called directly (see `EventChannels::with_upcall_type`).
//!
//! Hooks are called with the port's state already checked by the core (Xen's "usable" rule:
//! `set_pending`, `clear_pending` and `unmask` are only called on ports that are bound or
//! unbound, never free or reserved) and, on the send path, inside an RCU read-side section.

use std::fmt;

use xen_evtchn_abi::EvtchnPort;

use crate::fifo::Fifo;
use crate::host::UpcallSink;
use crate::port::PortSlot;
use crate::sync::rcu::RcuGuard;
use crate::two_level::TwoLevel;
use crate::vcpu::Vcpu;

/// The ABI-specific half of event delivery.
pub(crate) trait EvtchnPortOps: Send + Sync + fmt::Debug {
    /// Short name of the ABI ("2-level", "FIFO").
    fn name(&self) -> &'static str;

    /// Number of ports the ABI can address (4096 or 1024 for 2-level, 131072 for FIFO).
    fn max_ports(&self) -> u32;

    /// Marks `port` pending and, if the guest should look, notifies `vcpu`.
    fn set_pending<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    );

    /// Clears `port`'s pending state (on close).
    fn clear_pending(&self, port: EvtchnPort, slot: &PortSlot, guard: &RcuGuard);

    /// `EVTCHNOP_unmask`: clears the mask and delivers an event left pending meanwhile.
    fn unmask<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    );

    /// Whether the guest sees `port` pending.
    fn is_pending(&self, port: EvtchnPort, guard: &RcuGuard) -> bool;

    /// Whether the guest has `port` masked (ports the ABI cannot address count as masked).
    fn is_masked(&self, port: EvtchnPort, guard: &RcuGuard) -> bool;

    /// Whether a free `port` may not be reused yet (FIFO: its event word is still LINKED).
    fn is_busy(&self, _port: EvtchnPort, _guard: &RcuGuard) -> bool {
        false
    }

    /// Called when `port` becomes bound (FIFO: priority back to the default).
    fn init_port(&self, _port: EvtchnPort, _slot: &PortSlot, _guard: &RcuGuard) {}

    /// Whether the ABI has priorities (`EVTCHNOP_set_priority` gives ENOSYS if not).
    fn has_priorities(&self) -> bool {
        false
    }

    /// Stores a priority (already checked to be in range) for future raises of `port`.
    fn set_priority(&self, _port: EvtchnPort, _slot: &PortSlot, _priority: u32) {}
}

/// The backend a domain uses right now, chosen by [`Domain::ops`](crate::domain::Domain::ops)
/// (Xen's `d->evtchn_port_ops` pointer). An enum rather than a trait object so the send path
/// inlines the backend's code; callers only ever use it through [`EvtchnPortOps`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend<'a> {
    /// The 2-level ABI.
    TwoLevel(&'a TwoLevel),
    /// The FIFO ABI.
    Fifo(&'a Fifo),
}

/// Forwards a hook to whichever backend is selected.
macro_rules! forward {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Backend::TwoLevel($b) => $call,
            Backend::Fifo($b) => $call,
        }
    };
}

impl EvtchnPortOps for Backend<'_> {
    fn name(&self) -> &'static str {
        forward!(self, b => b.name())
    }

    fn max_ports(&self) -> u32 {
        forward!(self, b => b.max_ports())
    }

    #[inline(always)]
    fn set_pending<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        forward!(self, b => b.set_pending(vcpu, port, slot, guard))
    }

    fn clear_pending(&self, port: EvtchnPort, slot: &PortSlot, guard: &RcuGuard) {
        forward!(self, b => b.clear_pending(port, slot, guard))
    }

    fn unmask<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        forward!(self, b => b.unmask(vcpu, port, slot, guard))
    }

    fn is_pending(&self, port: EvtchnPort, guard: &RcuGuard) -> bool {
        forward!(self, b => b.is_pending(port, guard))
    }

    fn is_masked(&self, port: EvtchnPort, guard: &RcuGuard) -> bool {
        forward!(self, b => b.is_masked(port, guard))
    }

    fn is_busy(&self, port: EvtchnPort, guard: &RcuGuard) -> bool {
        forward!(self, b => b.is_busy(port, guard))
    }

    fn init_port(&self, port: EvtchnPort, slot: &PortSlot, guard: &RcuGuard) {
        forward!(self, b => b.init_port(port, slot, guard))
    }

    fn has_priorities(&self) -> bool {
        forward!(self, b => b.has_priorities())
    }

    fn set_priority(&self, port: EvtchnPort, slot: &PortSlot, priority: u32) {
        forward!(self, b => b.set_priority(port, slot, priority))
    }
}
