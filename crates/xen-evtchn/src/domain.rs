//! A domain: its configuration, its event lock, its ports, its VCPUs and its ABI backend.

use std::fmt;

use xen_evtchn_abi::{DomId, EvtchnPort, TwoLevelLayout};

use crate::backend::{Backend, EvtchnPortOps};
use crate::error::{Error, Reason, Result};
use crate::fifo::Fifo;
use crate::guest_memory::{GuestPage, RcuArc};
use crate::host::{GuestMemory, Opaque, SharedUpcallSink, UpcallSink};
use crate::port::{MAX_VCPUS, PortSlot, PortState};
use crate::port_table::{AllocState, PortTable};
use crate::sync::rcu::RcuGuard;
use crate::sync::{Arc, AtomicBool, AtomicU32, Mutex, Ordering};
use crate::two_level::TwoLevel;
use crate::vcpu::Vcpu;

/// Storage ceiling of any domain's port table: the FIFO ABI's 131072 ports.
pub(crate) const MAX_PORTS: u32 = xen_evtchn_abi::EVTCHN_FIFO_NR_CHANNELS;

/// How a VMM describes a domain to the library.
///
/// ```
/// use xen_evtchn::DomainConfig;
///
/// let config = DomainConfig::new(4, |domid, vcpu| println!("upcall for d{domid}v{vcpu}"))
///     .max_evtchn_port(4095)
///     .privileged(true);
/// assert_eq!(config.vcpus(), 4);
/// ```
#[derive(Clone)]
pub struct DomainConfig<U = SharedUpcallSink> {
    pub(crate) max_vcpus: u32,
    pub(crate) max_evtchn_port: u32,
    pub(crate) privileged: bool,
    pub(crate) hardware: bool,
    pub(crate) device_model_for: Option<DomId>,
    pub(crate) nr_pirqs: u32,
    pub(crate) layout: TwoLevelLayout,
    pub(crate) shared_info: Option<GuestPage>,
    pub(crate) memory: Option<Arc<dyn GuestMemory>>,
    pub(crate) upcall: U,
}

impl<U> fmt::Debug for DomainConfig<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainConfig")
            .field("max_vcpus", &self.max_vcpus)
            .field("max_evtchn_port", &self.max_evtchn_port)
            .field("privileged", &self.privileged)
            .field("hardware", &self.hardware)
            .field("device_model_for", &self.device_model_for)
            .field("nr_pirqs", &self.nr_pirqs)
            .field("layout", &self.layout)
            .field("shared_info", &self.shared_info)
            .field(
                "memory",
                &self.memory.as_ref().map(|_| Opaque("dyn GuestMemory")),
            )
            .field("upcall", &Opaque(std::any::type_name::<U>()))
            .finish()
    }
}

impl DomainConfig {
    /// A domain with `max_vcpus` VCPUs whose upcalls go to `upcall`; everything else as Xen's
    /// toolstack defaults: `max_evtchn_port` 1023, unprivileged, no PIRQs, an x86_64 guest,
    /// a library-owned shared_info page. For an [`EventChannels::new`](crate::EventChannels::new)
    /// hypervisor, whose domains may each have a different kind of sink.
    pub fn new(max_vcpus: u32, upcall: impl UpcallSink + 'static) -> Self {
        Self::with_upcall(max_vcpus, SharedUpcallSink::new(upcall))
    }
}

impl<U: UpcallSink + Clone> DomainConfig<U> {
    /// As [`new`](DomainConfig::new), with a sink of type `U` used as it is (each VCPU holds a
    /// clone): for an [`EventChannels::with_upcall_type`](crate::EventChannels::with_upcall_type)
    /// hypervisor, which calls it without dynamic dispatch.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use xen_evtchn::{DomainConfig, EventChannels, UpcallSink};
    ///
    /// /// Every upcall of this VMM goes through one type (here it only counts them; a VMM
    /// /// would inject the guest's callback vector).
    /// #[derive(Clone, Default)]
    /// struct Kick(Arc<AtomicU32>);
    /// impl UpcallSink for Kick {
    ///     fn upcall(&self, _domid: u16, _vcpu: u32) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let kick = Kick::default();
    /// let ec = EventChannels::<Kick>::with_upcall_type();
    /// ec.create_domain(1, DomainConfig::with_upcall(2, kick.clone())).unwrap();
    /// let port = ec.bind_ipi(1, 0).unwrap();
    /// ec.send(1, port).unwrap();
    /// assert_eq!(kick.0.load(Ordering::Relaxed), 1);
    /// ```
    pub fn with_upcall(max_vcpus: u32, upcall: U) -> Self {
        DomainConfig {
            max_vcpus,
            max_evtchn_port: 1023,
            privileged: false,
            hardware: false,
            device_model_for: None,
            nr_pirqs: 0,
            layout: TwoLevelLayout::X86_64,
            shared_info: None,
            memory: None,
            upcall,
        }
    }

    /// The highest port number the domain may use (Xen's `max_evtchn_port`; `u32::MAX` for
    /// "as many as the ABI allows", as Xen's dom0).
    pub fn max_evtchn_port(mut self, port: u32) -> Self {
        self.max_evtchn_port = port;
        self
    }

    /// A control domain: may act on other domains' event channels.
    pub fn privileged(mut self, yes: bool) -> Self {
        self.privileged = yes;
        self
    }

    /// The hardware domain: by default the handler of global VIRQs.
    pub fn hardware(mut self, yes: bool) -> Self {
        self.hardware = yes;
        self
    }

    /// This domain is the device model of `target` and may act on its event channels.
    pub fn device_model_for(mut self, target: DomId) -> Self {
        self.device_model_for = Some(target);
        self
    }

    /// Number of PIRQs the domain may bind (PIRQ numbers `0..n`).
    pub fn nr_pirqs(mut self, n: u32) -> Self {
        self.nr_pirqs = n;
        self
    }

    /// The guest's 2-level layout (x86_64 by default; `TwoLevelLayout::X86_32` for a 32-bit
    /// guest, which limits it to 1024 ports under the 2-level ABI).
    pub fn two_level_layout(mut self, layout: TwoLevelLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Use this page as the domain's shared_info (by default the library allocates one; get
    /// it with `EventChannels::shared_info` to map it into the guest).
    pub fn shared_info(mut self, page: GuestPage) -> Self {
        self.shared_info = Some(page);
        self
    }

    /// How to map the domain's guest frames (needed for the FIFO ABI and vcpu_info
    /// registration).
    pub fn guest_memory(mut self, memory: Arc<dyn GuestMemory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Number of VCPUs.
    pub fn vcpus(&self) -> u32 {
        self.max_vcpus
    }
}

/// Data guarded by the domain's event lock (Xen's `d->event_lock`).
#[derive(Debug, Default)]
pub(crate) struct EventLock {
    pub(crate) alloc: AllocState,
    /// Next port an in-progress `EVTCHNOP_reset` will close (0: none running).
    pub(crate) reset_next: u32,
}

/// A domain's event channel state; `U` is the type of its VCPUs' upcall sink.
pub(crate) struct Domain<U> {
    pub(crate) id: DomId,
    pub(crate) privileged: bool,
    pub(crate) hardware: bool,
    pub(crate) device_model_for: Option<DomId>,
    pub(crate) memory: Option<Arc<dyn GuestMemory>>,
    pub(crate) shared_info: GuestPage,
    pub(crate) layout: TwoLevelLayout,
    pub(crate) lock: Mutex<EventLock>,
    pub(crate) ports: PortTable,
    pub(crate) vcpus: Box<[Vcpu<U>]>,
    pub(crate) pirq_to_port: Box<[AtomicU32]>,
    pub(crate) two_level: TwoLevel,
    /// The FIFO state once the guest switched to FIFO (`EVTCHNOP_init_control`); its presence
    /// selects the backend.
    pub(crate) fifo: RcuArc<Fifo>,
    pub(crate) paused: AtomicBool,
    pub(crate) dying: AtomicBool,
}

impl<U: UpcallSink + Clone> Domain<U> {
    pub(crate) fn new(id: DomId, config: DomainConfig<U>) -> Result<Self> {
        if config.max_vcpus == 0 || config.max_vcpus > MAX_VCPUS {
            return Err(Error::Inval(Reason::BadConfig(
                "max_vcpus must be between 1 and 8192",
            )));
        }
        let shared_info = config.shared_info.unwrap_or_else(GuestPage::new_zeroed);
        let vcpus = (0..config.max_vcpus)
            .map(|v| Vcpu::new(v, id, config.layout, &shared_info, config.upcall.clone()))
            .collect();
        let domain = Domain {
            id,
            privileged: config.privileged,
            hardware: config.hardware,
            device_model_for: config.device_model_for,
            memory: config.memory,
            two_level: TwoLevel::new(shared_info.clone(), config.layout),
            fifo: RcuArc::new(None),
            shared_info,
            layout: config.layout,
            lock: Mutex::new(EventLock::default()),
            ports: PortTable::new(config.max_evtchn_port, MAX_PORTS),
            vcpus,
            pirq_to_port: (0..config.nr_pirqs).map(|_| AtomicU32::new(0)).collect(),
            paused: AtomicBool::new(true),
            dying: AtomicBool::new(false),
        };
        // Port 0 is reserved forever and not counted as active.
        if let Some(slot) = domain.ports.slot(0) {
            slot.set(PortState::new(crate::port::Binding::Reserved, 0));
        }
        Ok(domain)
    }

    /// The ABI backend in use (Xen's `d->evtchn_port_ops`), valid for the read-side section.
    #[inline(always)]
    pub(crate) fn ops<'g>(&'g self, guard: &'g RcuGuard) -> Backend<'g> {
        match self.fifo.load(guard) {
            Some(fifo) => Backend::Fifo(fifo),
            None => Backend::TwoLevel(&self.two_level),
        }
    }

    /// VCPU `id`, if it exists.
    #[inline(always)]
    pub(crate) fn vcpu(&self, id: u32) -> Option<&Vcpu<U>> {
        self.vcpus.get(id as usize)
    }

    /// The slot of a valid port, or EINVAL.
    #[inline(always)]
    pub(crate) fn slot(&self, port: EvtchnPort) -> Result<&PortSlot> {
        self.ports
            .slot(port)
            .ok_or(Error::Inval(Reason::PortNotValid(port)))
    }

    /// Raises `port` (a usable port of this domain) on its notify VCPU.
    #[inline(always)]
    pub(crate) fn raise(&self, port: EvtchnPort, slot: &PortSlot, guard: &RcuGuard) {
        let state = slot.load();
        if !state.is_usable() {
            return;
        }
        if let Some(vcpu) = self.vcpu(state.notify_vcpu()) {
            self.ops(guard).set_pending(vcpu, port, slot, guard);
        }
    }

    /// Allocates the lowest free port (Xen's `get_free_port`). Caller holds the event lock.
    pub(crate) fn alloc_port(&self, lock: &mut EventLock) -> Result<EvtchnPort> {
        if self.dying.load(Ordering::Acquire) {
            return Err(Error::Inval(Reason::DomainDying));
        }
        let guard = crate::sync::rcu::read();
        let ops = self.ops(&guard);
        self.ports
            .alloc_lowest(&mut lock.alloc, ops.max_ports(), |p| ops.is_busy(p, &guard))
    }

    /// Publishes a new binding on a freshly allocated port and runs the ABI's init hook.
    pub(crate) fn bind_port(&self, port: EvtchnPort, state: PortState) {
        if let Some(slot) = self.ports.slot(port) {
            let guard = crate::sync::rcu::read();
            self.ops(&guard).init_port(port, slot, &guard);
            slot.set(state);
        }
    }

    /// The caller may act on this domain (Xen's XSM_TARGET default policy): itself, its device
    /// model, or a control domain.
    pub(crate) fn permits(&self, caller: &Domain<U>) -> bool {
        caller.id == self.id || caller.privileged || caller.device_model_for == Some(self.id)
    }
}
