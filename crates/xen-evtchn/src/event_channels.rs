//! The hypervisor-wide object: every domain by id, their life cycle, global VIRQ routing.

use std::fmt;

use xen_evtchn_abi::{DOMID_FIRST_RESERVED, DOMID_SELF, DomId, NR_VIRQS};

use crate::backend::EvtchnPortOps;
use crate::domain::{Domain, DomainConfig};
use crate::error::{Error, Reason, Result};
use crate::guest_memory::{GuestPage, RcuArc};
use crate::host::PirqHost;
use crate::host::SharedUpcallSink;
use crate::host::UpcallSink;
use crate::sync::rcu::{self, RcuGuard};
use crate::sync::{Arc, Mutex, Ordering};

/// Xen's event channel subsystem for every domain of one VMM.
///
/// `EventChannels` is `Send + Sync`: share it (e.g. in an `Arc`) between every VCPU thread and
/// device model. Each operation takes the calling domain's id; the raw hypercall entry is
/// [`EventChannels::hypercall`].
///
/// ```
/// use xen_evtchn::{DomainConfig, EventChannels};
///
/// let ec = EventChannels::new();
/// ec.create_domain(0, DomainConfig::new(1, |_, _| {}).privileged(true)).unwrap();
/// ec.create_domain(1, DomainConfig::new(2, |_, _| {})).unwrap();
///
/// // Domain 1 offers a port to domain 0, which binds to it.
/// let offered = ec.alloc_unbound(1, 1, 0).unwrap();
/// let local = ec.bind_interdomain(0, 1, offered).unwrap();
///
/// // A send from domain 0 makes the port pending in domain 1.
/// ec.send(0, local).unwrap();
/// assert!(ec.is_pending(1, offered).unwrap());
/// ```
pub struct EventChannels<U = SharedUpcallSink> {
    domains: Box<[RcuArc<Domain<U>>]>,
    /// Serialises domain creation and destruction.
    lifecycle: Mutex<()>,
    /// Explicit handlers of global VIRQs (None: the hardware domain).
    virq_handlers: Mutex<[Option<DomId>; NR_VIRQS as usize]>,
    hardware_domain: Mutex<Option<DomId>>,
    pub(crate) pirq_host: Option<Arc<dyn PirqHost>>,
}

impl<U: UpcallSink> fmt::Debug for EventChannels<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live: Vec<DomId> = (0..self.domains.len())
            .filter(|&i| self.domains[i].is_set())
            .map(|i| i as DomId)
            .collect();
        f.debug_struct("EventChannels")
            .field("domains", &live)
            .finish_non_exhaustive()
    }
}

impl Default for EventChannels {
    fn default() -> Self {
        Self::new()
    }
}

impl EventChannels {
    /// An empty hypervisor: no domains. Each domain has its own [`UpcallSink`] (given to
    /// [`DomainConfig::new`]), called through a [`SharedUpcallSink`].
    pub fn new() -> Self {
        Self::with_upcall_type()
    }
}

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// An empty hypervisor whose domains all notify through sinks of one type `U`
    /// (configured with [`DomainConfig::with_upcall`]), called directly: no dynamic dispatch
    /// on the send path, and a sink the compiler can inline. See
    /// [`DomainConfig::with_upcall`] for an example.
    pub fn with_upcall_type() -> Self {
        EventChannels {
            domains: (0..DOMID_FIRST_RESERVED)
                .map(|_| RcuArc::new(None))
                .collect(),
            lifecycle: Mutex::new(()),
            virq_handlers: Mutex::new([None; NR_VIRQS as usize]),
            hardware_domain: Mutex::new(None),
            pirq_host: None,
        }
    }

    /// Routes `EVTCHNOP_bind_pirq` through `host`.
    pub fn with_pirq_host(mut self, host: Arc<dyn PirqHost>) -> Self {
        self.pirq_host = Some(host);
        self
    }

    /// Creates domain `domid`. The domain starts paused (as Xen creates it).
    ///
    /// Errors: EINVAL for a reserved id or a bad configuration, EEXIST if the id is taken.
    pub fn create_domain(&self, domid: DomId, config: DomainConfig<U>) -> Result<()> {
        let slot = self
            .domains
            .get(domid as usize)
            .ok_or(Error::Inval(Reason::ReservedDomainId(domid)))?;
        let _l = self.lifecycle.lock();
        if slot.is_set() {
            return Err(Error::Exist(Reason::DomainExists(domid)));
        }
        let domain = Domain::new(domid, config)?;
        if domain.hardware {
            *self.hardware_domain.lock() = Some(domid);
        }
        slot.replace(Some(Arc::new(domain)));
        Ok(())
    }

    /// Destroys domain `domid`: every port is closed (interdomain peers go back to unbound,
    /// naming this domain), then the domain disappears.
    pub fn destroy_domain(&self, domid: DomId) -> Result<()> {
        let _l = self.lifecycle.lock();
        let d = self.domain_arc(domid)?;
        d.dying.store(true, Ordering::Release);
        // Taking the event lock once orders every allocation after the flag (they re-check it
        // under the lock).
        drop(d.lock.lock());
        // Every port unbound (peers revert to unbound), then one grace period for all of them.
        let mut batch = Vec::new();
        for port in (1..d.ports.valid_ports()).rev() {
            let _ = self.close_port_batched(&d, port, &mut batch);
        }
        self.finish_closes(&d, &mut batch);
        if let Some(slot) = self.domains.get(domid as usize) {
            slot.replace(None);
        }
        let mut handlers = self.virq_handlers.lock();
        for h in handlers.iter_mut() {
            if *h == Some(domid) {
                *h = None;
            }
        }
        let mut hw = self.hardware_domain.lock();
        if *hw == Some(domid) {
            *hw = None;
        }
        Ok(())
    }

    /// Tells the library whether the VMM has paused the domain (Xen lets another domain reset
    /// a domain's event channels only while it is paused). Domains start paused.
    pub fn set_paused(&self, domid: DomId, paused: bool) -> Result<()> {
        self.domain_arc(domid)?
            .paused
            .store(paused, Ordering::Release);
        Ok(())
    }

    /// Makes `handler` the domain that receives global VIRQ `virq` (Xen's
    /// `XEN_DOMCTL_set_virq_handler`); `None` gives it back to the hardware domain.
    pub fn set_global_virq_handler(&self, virq: u32, handler: Option<DomId>) -> Result<()> {
        if xen_evtchn_abi::virq_kind(virq) != Some(xen_evtchn_abi::VirqKind::Global) {
            return Err(Error::Inval(Reason::VirqOutOfRange(virq)));
        }
        if let Some(h) = handler {
            self.domain_arc(h)?;
        }
        self.virq_handlers.lock()[virq as usize] = handler;
        Ok(())
    }

    /// The domain that handles global VIRQ `virq` now.
    pub fn global_virq_handler(&self, virq: u32) -> Option<DomId> {
        let explicit = *self.virq_handlers.lock().get(virq as usize)?;
        explicit.or(*self.hardware_domain.lock())
    }

    /// The shared_info page of a domain, for the VMM to map into the guest.
    pub fn shared_info(&self, domid: DomId) -> Result<GuestPage> {
        Ok(self.domain_arc(domid)?.shared_info.clone())
    }

    /// The ABI a domain uses now: `"2-level"` or `"FIFO"`.
    pub fn abi_name(&self, domid: DomId) -> Result<&'static str> {
        let guard = rcu::read();
        Ok(self.live_domain(domid, &guard)?.ops(&guard).name())
    }

    /// True if the domain exists.
    pub fn domain_exists(&self, domid: DomId) -> bool {
        self.domains.get(domid as usize).is_some_and(|d| d.is_set())
    }

    /// Host memory used by a domain's port table, in bytes.
    pub fn port_table_bytes(&self, domid: DomId) -> Result<usize> {
        Ok(self.domain_arc(domid)?.ports.host_bytes())
    }

    /// Hot-path lookup of a live domain, borrowed for the read-side section.
    #[inline(always)]
    pub(crate) fn domain<'g>(&'g self, id: DomId, guard: &'g RcuGuard) -> Option<&'g Domain<U>> {
        self.domains.get(id as usize)?.load(guard)
    }

    /// Hot-path lookup, ESRCH if absent.
    #[inline(always)]
    pub(crate) fn live_domain<'g>(
        &'g self,
        id: DomId,
        guard: &'g RcuGuard,
    ) -> Result<&'g Domain<U>> {
        self.domain(id, guard)
            .ok_or(Error::Srch(Reason::NoSuchDomain(id)))
    }

    /// Slow-path lookup: a counted reference, ESRCH if absent.
    pub(crate) fn domain_arc(&self, id: DomId) -> Result<Arc<Domain<U>>> {
        self.domains
            .get(id as usize)
            .and_then(|d| d.load_arc())
            .ok_or(Error::Srch(Reason::NoSuchDomain(id)))
    }

    /// Resolves DOMID_SELF to the caller, then looks the domain up (Xen's
    /// `rcu_lock_domain_by_any_id`).
    pub(crate) fn domain_by_any_id(&self, caller: DomId, id: DomId) -> Result<Arc<Domain<U>>> {
        self.domain_arc(if id == DOMID_SELF { caller } else { id })
    }
}
