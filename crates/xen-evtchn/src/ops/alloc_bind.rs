//! EVTCHNOP_alloc_unbound, bind_interdomain, bind_virq, bind_ipi, bind_pirq.

use xen_evtchn_abi::{
    BIND_PIRQ__WILL_SHARE, DOMID_SELF, DomId, EvtchnPort, NR_VIRQS, VirqKind, virq_kind,
};

use crate::domain::{Domain, EventLock};
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::port::{Binding, PortState};
use crate::sync::{Arc, MutexGuard, Ordering, rcu};

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_alloc_unbound`: allocates a port in `dom` (DOMID_SELF allowed) that
    /// `remote_dom` may later bind to. `remote_dom` is not checked (any id is accepted);
    /// DOMID_SELF there means the **caller**.
    ///
    /// Errors: ESRCH (no such `dom`), EINVAL (`dom` is dying), ENOSPC (no free port), EPERM
    /// (the caller may not act on `dom`: only itself, its device model or a privileged domain).
    pub fn alloc_unbound(
        &self,
        caller: DomId,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<EvtchnPort> {
        let d = self.domain_by_any_id(caller, dom)?;
        let c = self.domain_arc(caller)?;
        let mut el = d.lock.lock();
        let port = d.alloc_port(&mut el)?;
        if !d.permits(&c) {
            d.ports.release(&mut el.alloc, port);
            return Err(Error::Perm(Reason::NotPermitted {
                caller,
                target: d.id,
            }));
        }
        let remote = if remote_dom == DOMID_SELF {
            caller
        } else {
            remote_dom
        };
        d.bind_port(port, PortState::new(Binding::Unbound { remote }, 0));
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote_port` of `remote_dom`
    /// (DOMID_SELF allowed: a loopback channel), which must be unbound and offered to the
    /// caller. The new local port is raised at once (covering sends made while the remote end
    /// was unbound); the remote end is not.
    ///
    /// Errors: ESRCH (no such domain), EINVAL (caller dying, remote port not valid or not
    /// offered to the caller), ENOSPC (no free local port).
    pub fn bind_interdomain(
        &self,
        caller: DomId,
        remote_dom: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort> {
        let ld = self.domain_arc(caller)?;
        let rd = self.domain_by_any_id(caller, remote_dom)?;
        let (mut lel, _rel) = lock_pair(&ld, &rd);
        let lport = ld.alloc_port(&mut lel)?;
        let offered = rd.ports.slot(remote_port).map(|s| s.load().binding());
        let rslot = match (rd.ports.slot(remote_port), offered) {
            (Some(s), Some(Binding::Unbound { remote })) if remote == ld.id => s,
            (None, _) => {
                ld.ports.release(&mut lel.alloc, lport);
                return Err(Error::Inval(Reason::PortNotValid(remote_port)));
            }
            _ => {
                ld.ports.release(&mut lel.alloc, lport);
                return Err(Error::Inval(Reason::RemoteNotOffered {
                    dom: rd.id,
                    port: remote_port,
                }));
            }
        };
        // Local end first: a sender on the remote end that sees the new binding finds the
        // local end already connected.
        ld.bind_port(
            lport,
            PortState::new(
                Binding::Interdomain {
                    dom: rd.id,
                    port: remote_port,
                },
                0,
            ),
        );
        let rstate = rslot.load();
        rslot.set(PortState::new(
            Binding::Interdomain {
                dom: ld.id,
                port: lport,
            },
            rstate.notify_vcpu(),
        ));
        let guard = rcu::read();
        if let Some(slot) = ld.ports.slot(lport) {
            ld.raise(lport, slot, &guard);
        }
        Ok(lport)
    }

    /// `EVTCHNOP_bind_virq`: binds VIRQ `virq` to a new port notifying `vcpu`.
    ///
    /// Errors (Xen's order): EINVAL (`virq` ≥ NR_VIRQS, or a global/per-domain VIRQ on a VCPU
    /// other than 0), ENOENT (no such VCPU), EBUSY (a global VIRQ handled by another domain),
    /// EEXIST (already bound on that VCPU), then the allocation errors.
    pub fn bind_virq(&self, caller: DomId, virq: u32, vcpu: u32) -> Result<EvtchnPort> {
        if virq >= NR_VIRQS {
            return Err(Error::Inval(Reason::VirqOutOfRange(virq)));
        }
        let kind = virq_kind(virq).ok_or(Error::Inval(Reason::VirqOutOfRange(virq)))?;
        if kind != VirqKind::PerVcpu && vcpu != 0 {
            return Err(Error::Inval(Reason::VirqNotPerVcpu(virq)));
        }
        let d = self.domain_arc(caller)?;
        let v = d.vcpu(vcpu).ok_or(Error::NoEnt(Reason::NoSuchVcpu(vcpu)))?;
        let mut el = d.lock.lock();
        if kind == VirqKind::Global && self.global_virq_handler(virq) != Some(d.id) {
            return Err(Error::Busy(Reason::VirqHandledElsewhere(virq)));
        }
        let entry = &v.virq_to_port[virq as usize];
        if entry.load(Ordering::Acquire) != 0 {
            return Err(Error::Exist(Reason::VirqAlreadyBound { virq, vcpu }));
        }
        let port = d.alloc_port(&mut el)?;
        d.bind_port(port, PortState::new(Binding::Virq { virq }, vcpu));
        // Published after the port is bound: a raise that finds the map entry finds the port.
        entry.store(port, Ordering::Release);
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: a new port that the domain raises on itself, notifying `vcpu`.
    ///
    /// Errors: ENOENT (no such VCPU), then the allocation errors.
    pub fn bind_ipi(&self, caller: DomId, vcpu: u32) -> Result<EvtchnPort> {
        let d = self.domain_arc(caller)?;
        d.vcpu(vcpu).ok_or(Error::NoEnt(Reason::NoSuchVcpu(vcpu)))?;
        let mut el = d.lock.lock();
        let port = d.alloc_port(&mut el)?;
        d.bind_port(port, PortState::new(Binding::Ipi, vcpu));
        Ok(port)
    }

    /// `EVTCHNOP_bind_pirq`: binds PIRQ `pirq` to a new port (notifying VCPU 0). `flags` may
    /// carry `BIND_PIRQ__WILL_SHARE`.
    ///
    /// Errors (Xen's order): EINVAL (`pirq` ≥ the domain's `nr_pirqs`), EEXIST (already
    /// bound), the allocation errors, then whatever the [`PirqHost`](crate::PirqHost) returns.
    pub fn bind_pirq(&self, caller: DomId, pirq: u32, flags: u32) -> Result<EvtchnPort> {
        let d = self.domain_arc(caller)?;
        let entry = d
            .pirq_to_port
            .get(pirq as usize)
            .ok_or(Error::Inval(Reason::PirqOutOfRange(pirq)))?;
        let mut el = d.lock.lock();
        if entry.load(Ordering::Acquire) != 0 {
            return Err(Error::Exist(Reason::PirqAlreadyBound(pirq)));
        }
        let port = d.alloc_port(&mut el)?;
        if let Some(host) = &self.pirq_host {
            if let Err(errno) = host.bind(d.id, pirq, flags & BIND_PIRQ__WILL_SHARE != 0) {
                d.ports.release(&mut el.alloc, port);
                return Err(crate::error::from_errno(errno, Reason::PirqRefused(pirq)));
            }
        }
        d.bind_port(port, PortState::new(Binding::Pirq { pirq }, 0));
        entry.store(port, Ordering::Release);
        Ok(port)
    }
}

/// Locks two domains' event locks in id order (once if they are the same domain); returns
/// the guards as (first argument's, second argument's).
pub(crate) fn lock_pair<'a, U: UpcallSink>(
    a: &'a Arc<Domain<U>>,
    b: &'a Arc<Domain<U>>,
) -> (MutexGuard<'a, EventLock>, Option<MutexGuard<'a, EventLock>>) {
    if a.id == b.id {
        (a.lock.lock(), None)
    } else if a.id < b.id {
        let ga = a.lock.lock();
        (ga, Some(b.lock.lock()))
    } else {
        let gb = b.lock.lock();
        (a.lock.lock(), Some(gb))
    }
}
