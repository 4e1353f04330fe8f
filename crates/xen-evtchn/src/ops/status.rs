//! EVTCHNOP_status.

use xen_evtchn_abi::{DomId, EvtchnPort};

use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::port::Binding;

/// What `EVTCHNOP_status` reports about a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Free or reserved (`EVTCHNSTAT_closed`).
    Closed,
    /// Waiting for `dom` to bind (`EVTCHNSTAT_unbound`).
    Unbound {
        /// The domain allowed to bind.
        dom: DomId,
    },
    /// Connected to `port` of `dom` (`EVTCHNSTAT_interdomain`).
    Interdomain {
        /// Peer domain.
        dom: DomId,
        /// Peer port.
        port: EvtchnPort,
    },
    /// Bound to a PIRQ (`EVTCHNSTAT_pirq`).
    Pirq(u32),
    /// Bound to a VIRQ (`EVTCHNSTAT_virq`).
    Virq(u32),
    /// An IPI (`EVTCHNSTAT_ipi`).
    Ipi,
}

impl PortStatus {
    /// The `EVTCHNSTAT_*` code.
    pub const fn code(&self) -> u32 {
        use xen_evtchn_abi::*;
        match self {
            PortStatus::Closed => EVTCHNSTAT_closed,
            PortStatus::Unbound { .. } => EVTCHNSTAT_unbound,
            PortStatus::Interdomain { .. } => EVTCHNSTAT_interdomain,
            PortStatus::Pirq(_) => EVTCHNSTAT_pirq,
            PortStatus::Virq(_) => EVTCHNSTAT_virq,
            PortStatus::Ipi => EVTCHNSTAT_ipi,
        }
    }
}

/// A port's status and notify VCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The binding.
    pub status: PortStatus,
    /// The VCPU notified of events on the port.
    pub vcpu: u32,
}

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_status`: the state of `port` in `dom` (DOMID_SELF allowed).
    ///
    /// Errors (Xen's order): ESRCH (no such domain), EINVAL (port not valid), EPERM (the
    /// caller may not look at `dom`).
    pub fn status(&self, caller: DomId, dom: DomId, port: EvtchnPort) -> Result<Status> {
        let d = self.domain_by_any_id(caller, dom)?;
        let slot = d.slot(port)?;
        let c = self.domain_arc(caller)?;
        let _el = d.lock.lock();
        if !d.permits(&c) {
            return Err(Error::Perm(Reason::NotPermitted {
                caller,
                target: d.id,
            }));
        }
        let state = slot.load();
        let status = match state.binding() {
            Binding::Free | Binding::Reserved => PortStatus::Closed,
            Binding::Unbound { remote } => PortStatus::Unbound { dom: remote },
            Binding::Interdomain { dom, port } => PortStatus::Interdomain { dom, port },
            Binding::Pirq { pirq } => PortStatus::Pirq(pirq),
            Binding::Virq { virq } => PortStatus::Virq(virq),
            Binding::Ipi => PortStatus::Ipi,
        };
        Ok(Status {
            status,
            vcpu: state.notify_vcpu(),
        })
    }
}
