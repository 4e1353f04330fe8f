//! EVTCHNOP_bind_vcpu and EVTCHNOP_unmask.

use xen_evtchn_abi::{DomId, EvtchnPort, VirqKind, virq_kind};

use crate::backend::EvtchnPortOps;
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::port::Binding;
use crate::sync::rcu;

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_bind_vcpu`: events on `port` now notify `vcpu`. Events already pending stay
    /// where they are.
    ///
    /// When it returns, no sender still raises the port on the old VCPU: it waits for every
    /// send that read the old binding (a grace period). Xen leaves that window open, and under
    /// the 2-level ABI it can lose an event: Linux moves a port with mask, bind_vcpu, unmask,
    /// and a late raise on the old VCPU would set the pending bit after the unmask, on a VCPU
    /// that no longer looks at the port.
    ///
    /// Errors (Xen's order): ENOENT (no such VCPU), EINVAL (port not valid; or an IPI, a
    /// per-VCPU VIRQ, a free or reserved port).
    pub fn bind_vcpu(&self, caller: DomId, port: EvtchnPort, vcpu: u32) -> Result<()> {
        let d = self.domain_arc(caller)?;
        d.vcpu(vcpu).ok_or(Error::NoEnt(Reason::NoSuchVcpu(vcpu)))?;
        let slot = d.slot(port)?;
        let _el = d.lock.lock();
        let state = slot.load();
        match state.binding() {
            Binding::Virq { virq } if virq_kind(virq) == Some(VirqKind::PerVcpu) => {
                Err(Error::Inval(Reason::WrongState {
                    port,
                    state: "per-vcpu virq",
                }))
            }
            Binding::Virq { .. }
            | Binding::Unbound { .. }
            | Binding::Interdomain { .. }
            | Binding::Pirq { .. } => {
                slot.set(state.with_vcpu(vcpu));
                rcu::synchronize();
                Ok(())
            }
            other => Err(Error::Inval(Reason::WrongState {
                port,
                state: other.name(),
            })),
        }
    }

    /// `EVTCHNOP_unmask`: clears the port's mask and delivers an event that arrived while it
    /// was masked. Unmasking a free port is a silent no-op, as in Xen.
    ///
    /// Errors: ESRCH (no such caller), EINVAL (port not valid).
    pub fn unmask(&self, caller: DomId, port: EvtchnPort) -> Result<()> {
        let guard = rcu::read();
        let d = self.live_domain(caller, &guard)?;
        let slot = d.slot(port)?;
        let state = slot.load();
        if state.is_usable() {
            if let Some(v) = d.vcpu(state.notify_vcpu()) {
                d.ops(&guard).unmask(v, port, slot, &guard);
            }
        }
        Ok(())
    }
}
