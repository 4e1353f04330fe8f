//! EVTCHNOP_set_priority.

use xen_evtchn_abi::{DomId, EVTCHN_FIFO_PRIORITY_MIN, EvtchnPort};

use crate::backend::EvtchnPortOps;
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::sync::rcu;

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_set_priority`: the FIFO priority of `port` (0 highest, 15 lowest) for future
    /// events; an event already queued stays on its queue.
    ///
    /// Errors (Xen's order): EINVAL (port not valid), ENOSYS (the domain uses the 2-level ABI),
    /// EACCES (port free or reserved), EINVAL (priority above 15).
    pub fn set_priority(&self, caller: DomId, port: EvtchnPort, priority: u32) -> Result<()> {
        let guard = rcu::read();
        let d = self.live_domain(caller, &guard)?;
        let slot = d.slot(port)?;
        let ops = d.ops(&guard);
        if !ops.has_priorities() {
            return Err(Error::NoSys(Reason::NotSupportedByAbi(
                "EVTCHNOP_set_priority",
            )));
        }
        if !slot.load().is_usable() {
            return Err(Error::Acces(Reason::PortNotBound(port)));
        }
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Error::Inval(Reason::PriorityOutOfRange(priority)));
        }
        ops.set_priority(port, slot, priority);
        Ok(())
    }
}
