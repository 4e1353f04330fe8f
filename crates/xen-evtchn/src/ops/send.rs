//! EVTCHNOP_send and the host-side event sources (VIRQ, PIRQ, host notification): the hot path.
//!
//! A send takes no lock and performs no read-modify-write on host memory: it opens an RCU
//! read-side section (two plain stores), loads the port's state word, and for an interdomain
//! channel the peer domain and the peer port's state word, then runs the backend's
//! `set_pending`, whose atomics on guest memory are the only real cost. Closing a port waits
//! for a grace period before the port can be reused, so a sender never acts on a binding
//! after its close has returned.

use xen_evtchn_abi::{DomId, EvtchnPort, VirqKind, virq_kind};

use crate::backend::EvtchnPortOps;
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::port::{Binding, PortState};
use crate::sync::{Ordering, rcu};

/// The error for a send on a port that cannot send. Out of line, so that decoding the state
/// for the message does not turn the hot path's tests into a jump table.
#[cold]
#[inline(never)]
fn wrong_state(port: EvtchnPort, state: PortState) -> Error {
    Error::Inval(Reason::WrongState {
        port,
        state: state.binding().name(),
    })
}

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_send`: notifies the other end of `port` (interdomain), or the domain itself
    /// (IPI). A send on an unbound port is silently dropped, as in Xen.
    ///
    /// Errors: ESRCH (no such caller), EINVAL (port not valid, free, reserved, VIRQ or PIRQ).
    ///
    /// Always inlined: an out-of-line call (its register saves, and a result returned through
    /// memory) costs about 2 ns next to the locked instructions, a third of the whole send;
    /// see `docs/performance.md`.
    #[inline(always)]
    pub fn send(&self, caller: DomId, port: EvtchnPort) -> Result<()> {
        let guard = rcu::read();
        let d = self.live_domain(caller, &guard)?;
        let slot = d.slot(port)?;
        let state = slot.load();
        // Tested in order of frequency; no jump table on the state.
        if let Some((dom, peer_port)) = state.interdomain_peer() {
            if let Some(rd) = self.domain(dom, &guard) {
                if let Some(rslot) = rd.ports.slot(peer_port) {
                    rd.raise(peer_port, rslot, &guard);
                }
            }
            Ok(())
        } else if state.is_ipi() {
            if let Some(v) = d.vcpu(state.notify_vcpu()) {
                d.ops(&guard).set_pending(v, port, slot, &guard);
            }
            Ok(())
        } else if state.is_unbound() {
            Ok(())
        } else {
            Err(wrong_state(port, state))
        }
    }

    /// Raises VIRQ `virq` for a domain, as Xen's timer, console or debug code does.
    ///
    /// A per-VCPU VIRQ (TIMER, DEBUG, XENOPROF, XENPMU) is raised on `vcpu`, through the port
    /// bound on that VCPU. Any other VIRQ uses the port bound on VCPU 0 and goes to that
    /// port's notify VCPU (`vcpu` is ignored). Nothing happens if the VIRQ is not bound.
    ///
    /// Errors: ESRCH (no such domain), EINVAL (`virq` out of range), ENOENT (no such VCPU).
    pub fn raise_virq(&self, domid: DomId, vcpu: u32, virq: u32) -> Result<()> {
        let kind = virq_kind(virq).ok_or(Error::Inval(Reason::VirqOutOfRange(virq)))?;
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        let map_vcpu = if kind == VirqKind::PerVcpu { vcpu } else { 0 };
        let v = d
            .vcpu(map_vcpu)
            .ok_or(Error::NoEnt(Reason::NoSuchVcpu(map_vcpu)))?;
        let port = v.virq_to_port[virq as usize].load(Ordering::Acquire);
        if port == 0 {
            return Ok(());
        }
        let Some(slot) = d.ports.slot(port) else {
            return Ok(());
        };
        let state = slot.load();
        if state.binding() != (Binding::Virq { virq }) {
            return Ok(());
        }
        let target = if kind == VirqKind::PerVcpu {
            Some(v)
        } else {
            d.vcpu(state.notify_vcpu())
        };
        if let Some(target) = target {
            d.ops(&guard).set_pending(target, port, slot, &guard);
        }
        Ok(())
    }

    /// Raises global VIRQ `virq` in the domain that handles it (see
    /// [`set_global_virq_handler`](Self::set_global_virq_handler)). Nothing happens if no
    /// domain handles it or it is not bound.
    pub fn raise_global_virq(&self, virq: u32) -> Result<()> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return Err(Error::Inval(Reason::VirqOutOfRange(virq)));
        }
        match self.global_virq_handler(virq) {
            Some(domid) => self.raise_virq(domid, 0, virq),
            None => Ok(()),
        }
    }

    /// Raises PIRQ `pirq` of a domain (a physical or emulated interrupt routed to an event
    /// channel). Nothing happens if it is not bound.
    ///
    /// Errors: ESRCH (no such domain), EINVAL (`pirq` out of range).
    pub fn raise_pirq(&self, domid: DomId, pirq: u32) -> Result<()> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        let entry = d
            .pirq_to_port
            .get(pirq as usize)
            .ok_or(Error::Inval(Reason::PirqOutOfRange(pirq)))?;
        let port = entry.load(Ordering::Acquire);
        if port == 0 {
            return Ok(());
        }
        if let Some(slot) = d.ports.slot(port) {
            if slot.load().binding() == (Binding::Pirq { pirq }) {
                d.raise(port, slot, &guard);
            }
        }
        Ok(())
    }

    /// Raises `port` of a domain from the host, as if its peer had sent (a VMM device model
    /// acting as the remote end). The port must be bound (any state but free or reserved).
    ///
    /// Errors: ESRCH (no such domain), EINVAL (port not valid, free or reserved).
    pub fn raise_port(&self, domid: DomId, port: EvtchnPort) -> Result<()> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        let slot = d.slot(port)?;
        if !slot.load().is_usable() {
            return Err(Error::Inval(Reason::PortNotBound(port)));
        }
        d.raise(port, slot, &guard);
        Ok(())
    }

    /// Whether `port` of a domain is pending in guest memory (what the guest would see).
    pub fn is_pending(&self, domid: DomId, port: EvtchnPort) -> Result<bool> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        d.slot(port)?;
        Ok(d.ops(&guard).is_pending(port, &guard))
    }

    /// Whether `port` of a domain is masked in guest memory.
    pub fn is_masked(&self, domid: DomId, port: EvtchnPort) -> Result<bool> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        d.slot(port)?;
        Ok(d.ops(&guard).is_masked(port, &guard))
    }
}
