//! EVTCHNOP_close, and the unbinding shared by reset and domain destruction.

use xen_evtchn_abi::{DomId, EvtchnPort, VirqKind, virq_kind};

use crate::backend::EvtchnPortOps;
use crate::domain::{Domain, EventLock};
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::port::{Binding, PortState};
use crate::sync::rcu;
use crate::sync::{Arc, MutexGuard, Ordering};

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_close`: unbinds `port` of the calling domain.
    ///
    /// Errors (Xen's order): ESRCH if the caller does not exist; EINVAL if the port is not
    /// valid, is free or reserved, or its interdomain peer changed while the close waited for
    /// the peer's lock. Closing one end of an interdomain channel turns the other end back to
    /// unbound (bindable again by the closer); the peer gets no event.
    pub fn close(&self, caller: DomId, port: EvtchnPort) -> Result<()> {
        let d = self.domain_arc(caller)?;
        self.close_port(&d, port)
    }

    /// Xen's `evtchn_close`. On success the port is FREE, no sender can still be acting on its
    /// old binding, and its pending bit is clear.
    pub(crate) fn close_port(&self, d: &Domain<U>, port: EvtchnPort) -> Result<()> {
        self.close_port_in(d, port, None)
    }

    /// `close_port` as part of a batch (reset, destruction): the port is unbound now but only
    /// marked CLOSING, and queued in `batch`; [`finish_closes`](Self::finish_closes) frees the
    /// whole batch after a single grace period instead of one per port.
    pub(crate) fn close_port_batched(
        &self,
        d: &Domain<U>,
        port: EvtchnPort,
        batch: &mut Vec<EvtchnPort>,
    ) -> Result<()> {
        self.close_port_in(d, port, Some(batch))
    }

    fn close_port_in(
        &self,
        d: &Domain<U>,
        port: EvtchnPort,
        mut batch: Option<&mut Vec<EvtchnPort>>,
    ) -> Result<()> {
        if !d.ports.is_valid(port) {
            return Err(Error::Inval(Reason::PortNotValid(port)));
        }
        // The peer whose lock we also need, once known; locks are taken in domain id order.
        let mut peer: Option<Arc<Domain<U>>> = None;
        loop {
            match self.close_attempt(d, port, peer.as_deref(), batch.as_deref_mut())? {
                None => return Ok(()),
                Some(p) => peer = Some(p),
            }
        }
    }

    /// Frees the ports a batch of [`close_port_batched`](Self::close_port_batched) calls left
    /// CLOSING: one grace period (no sender still acts on any of their old bindings), then each
    /// port's pending state is cleared and the port becomes FREE and allocatable. Must not be
    /// called inside a read-side section.
    pub(crate) fn finish_closes(&self, d: &Domain<U>, batch: &mut Vec<EvtchnPort>) {
        if batch.is_empty() {
            return;
        }
        rcu::synchronize();
        let mut el = d.lock.lock();
        for port in batch.drain(..) {
            finish_free(d, &mut el, port);
        }
    }

    /// One pass of `close_port` holding `d`'s lock and, if known, `peer`'s. Returns the peer
    /// domain to retry with when the port turns out to be interdomain with a peer whose lock
    /// is not held yet.
    fn close_attempt(
        &self,
        d: &Domain<U>,
        port: EvtchnPort,
        peer: Option<&Domain<U>>,
        batch: Option<&mut Vec<EvtchnPort>>,
    ) -> Result<Option<Arc<Domain<U>>>> {
        let (mut el, peer_el) = lock_in_order(d, peer);
        let slot = d.slot(port)?;
        let state = slot.load();
        match state.binding() {
            Binding::Free | Binding::Reserved => {
                return Err(Error::Inval(Reason::PortNotBound(port)));
            }
            Binding::Unbound { .. } | Binding::Ipi => {}
            Binding::Pirq { pirq } => {
                if let Some(p) = d.pirq_to_port.get(pirq as usize) {
                    let _ = p.compare_exchange(port, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
                if let Some(host) = &self.pirq_host {
                    host.unbind(d.id, pirq);
                }
            }
            Binding::Virq { virq } => {
                let map_vcpu = match virq_kind(virq) {
                    Some(VirqKind::PerVcpu) => state.notify_vcpu(),
                    _ => 0,
                };
                if let Some(entry) = d
                    .vcpu(map_vcpu)
                    .and_then(|v| v.virq_to_port.get(virq as usize))
                {
                    let _ = entry.compare_exchange(port, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
            Binding::Interdomain {
                dom: peer_id,
                port: peer_port,
            } => match peer {
                Some(p) if p.id != peer_id => {
                    // Closed and re-bound while we waited for the peer's lock: it passed
                    // through FREE, so report what a FREE port gives.
                    return Err(Error::Inval(Reason::PeerChanged(port)));
                }
                Some(p) => revert_to_unbound(p, peer_port, d.id),
                // A loopback channel: both ends are ours and under our lock.
                None if peer_id == d.id => revert_to_unbound(d, peer_port, d.id),
                None => {
                    if let Ok(p) = self.domain_arc(peer_id) {
                        return Ok(Some(p));
                    }
                    // The peer is gone (destruction closes its ends first, so this cannot
                    // happen): just free ours.
                }
            },
        }
        if let Some(batch) = batch {
            slot.set(PortState::CLOSING);
            batch.push(port);
            return Ok(None);
        }
        slot.set(PortState::FREE);
        // Wait until no sender can still act on the old binding, then clear what it may have
        // left pending and make the port allocatable again.
        drop(peer_el);
        rcu::synchronize();
        finish_free(d, &mut el, port);
        Ok(None)
    }
}

/// Takes `d`'s event lock and, if given, the peer's, lower domain id first.
fn lock_in_order<'a, U: UpcallSink>(
    d: &'a Domain<U>,
    peer: Option<&'a Domain<U>>,
) -> (MutexGuard<'a, EventLock>, Option<MutexGuard<'a, EventLock>>) {
    match peer {
        None => (d.lock.lock(), None),
        Some(p) if p.id < d.id => {
            let pl = p.lock.lock();
            (d.lock.lock(), Some(pl))
        }
        Some(p) => {
            let dl = d.lock.lock();
            (dl, Some(p.lock.lock()))
        }
    }
}

/// The other end of a closed interdomain channel waits for `closer` again; its notify VCPU,
/// pending and mask bits are untouched and it gets no event.
fn revert_to_unbound<U: UpcallSink>(peer: &Domain<U>, peer_port: EvtchnPort, closer: DomId) {
    if let Some(slot) = peer.ports.slot(peer_port) {
        let s = slot.load();
        if matches!(s.binding(), Binding::Interdomain { .. }) {
            slot.set(PortState::new(
                Binding::Unbound { remote: closer },
                s.notify_vcpu(),
            ));
        }
    }
}

/// Xen's `evtchn_free` after the state went FREE or CLOSING and a grace period passed.
fn finish_free<U: UpcallSink + Clone>(d: &Domain<U>, el: &mut EventLock, port: EvtchnPort) {
    if let Some(slot) = d.ports.slot(port) {
        let guard = rcu::read();
        d.ops(&guard).clear_pending(port, slot, &guard);
        drop(guard);
        slot.set(PortState::FREE);
        d.ports.release(&mut el.alloc, port);
    }
}
