//! EVTCHNOP_reset and EVTCHNOP_reset_cont.

use xen_evtchn_abi::DomId;

use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::sync::Ordering;

/// Ports a reset unbinds before it waits for one grace period and frees them together.
const RESET_BATCH: usize = 256;

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_reset`: closes every port of `dom` (DOMID_SELF allowed), as the guest would,
    /// and puts a FIFO domain back on the 2-level ABI (its control blocks and event-array
    /// pages are released).
    ///
    /// Errors (Xen's order): ESRCH (no such domain), EPERM (the caller may not act on it),
    /// EINVAL (another domain's reset while it is not paused), EBUSY (a reset of `dom` is
    /// already running), EAGAIN (ports were bound while the reset ran).
    pub fn reset(&self, caller: DomId, dom: DomId) -> Result<()> {
        self.reset_impl(caller, dom, false)
    }

    /// `EVTCHNOP_reset_cont`: Xen's continuation of a preempted reset, which Xen also accepts
    /// from guests. This library never preempts a reset, so the continuation only finds one
    /// running on another VCPU (and helps it) or gives EBUSY.
    pub fn reset_cont(&self, caller: DomId, dom: DomId) -> Result<()> {
        self.reset_impl(caller, dom, true)
    }

    fn reset_impl(&self, caller: DomId, dom: DomId, resume: bool) -> Result<()> {
        let d = self.domain_by_any_id(caller, dom)?;
        let c = self.domain_arc(caller)?;
        if !d.permits(&c) {
            return Err(Error::Perm(Reason::NotPermitted {
                caller,
                target: d.id,
            }));
        }
        if d.id != caller && !d.paused.load(Ordering::Acquire) {
            return Err(Error::Inval(Reason::TargetNotPaused(d.id)));
        }
        let start = {
            let mut el = d.lock.lock();
            match (resume, el.reset_next) {
                (false, 0) => {
                    el.reset_next = 1;
                    1
                }
                (false, _) => return Err(Error::Busy(Reason::ResetState("already running"))),
                (true, 0) => return Err(Error::Busy(Reason::ResetState("not running"))),
                (true, next) => next,
            }
        };
        let mut port = start;
        let mut batch = Vec::new();
        while port < d.ports.valid_ports() && d.lock.lock().alloc.active > batch.len() as u32 {
            // Errors are expected: free ports give EINVAL and are skipped.
            let _ = self.close_port_batched(&d, port, &mut batch);
            port += 1;
            d.lock.lock().reset_next = port;
            if batch.len() >= RESET_BATCH {
                self.finish_closes(&d, &mut batch);
            }
        }
        self.finish_closes(&d, &mut batch);
        let mut el = d.lock.lock();
        el.reset_next = 0;
        if el.alloc.active > 0 {
            return Err(Error::Again(Reason::BoundDuringReset));
        }
        // Back to the 2-level ABI: unpublish the FIFO state and wait until no sender can still
        // be using it (still under the event lock, so no init_control or expand_array races).
        if d.fifo.is_set() {
            d.fifo.replace(None);
        }
        drop(el);
        Ok(())
    }
}
