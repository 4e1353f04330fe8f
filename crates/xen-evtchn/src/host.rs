//! What the VMM provides: small, object-safe traits.
//!
//! * [`GuestMemory`]: turn a guest frame number into a mapped [`GuestPage`]. Called only when
//!   the guest registers a page (a vcpu_info, a FIFO control block, an event-array page), never
//!   on the send path.
//! * [`UpcallSink`]: "VCPU `v` of domain `d` has events": inject the guest's callback vector
//!   or kick the VCPU thread. Called only on the 0 → 1 edge of `evtchn_upcall_pending`.
//! * [`PirqHost`]: bind and unbind physical IRQs for `EVTCHNOP_bind_pirq`.

use std::fmt;

use xen_evtchn_abi::{DomId, Errno};

use crate::guest_memory::GuestPage;
use crate::sync::Arc;

/// Why a guest frame could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// No memory is mapped at this frame (or it is not RAM).
    #[error("guest frame {0:#x} is not mapped")]
    NotMapped(u64),
    /// The frame exists but may not be written by the hypervisor (e.g. read-only or MMIO).
    #[error("guest frame {0:#x} is not writable")]
    NotWritable(u64),
    /// The host ran out of resources to map it.
    #[error("out of host resources mapping frame {0:#x}")]
    OutOfResources(u64),
}

/// A domain's guest-physical memory, as the VMM sees it.
///
/// ```
/// use std::collections::HashMap;
/// use xen_evtchn::{GuestMemory, GuestPage, MapError};
///
/// /// A guest whose RAM is a handful of host pages.
/// struct Pages(HashMap<u64, GuestPage>);
///
/// impl GuestMemory for Pages {
///     fn map_page(&self, gfn: u64) -> Result<GuestPage, MapError> {
///         self.0.get(&gfn).cloned().ok_or(MapError::NotMapped(gfn))
///     }
/// }
///
/// let mem = Pages(HashMap::from([(0x100, GuestPage::new_zeroed())]));
/// assert!(mem.map_page(0x100).is_ok());
/// assert_eq!(mem.map_page(0x101).unwrap_err(), MapError::NotMapped(0x101));
/// ```
pub trait GuestMemory: Send + Sync {
    /// Maps guest frame `gfn` for reading and writing by the hypervisor. The returned handle
    /// must keep the mapping valid for as long as any clone of it lives.
    fn map_page(&self, gfn: u64) -> Result<GuestPage, MapError>;
}

/// Where upcalls go: the VMM injects the guest's event callback (HVM vector, or the PV
/// upcall) or wakes the VCPU thread.
///
/// Any `Fn(DomId, u32) + Send + Sync` is an `UpcallSink`.
///
/// It is called on the thread that raised the event, in the middle of the operation: inside
/// the library's read-side section, and from some operations (`bind_interdomain`,
/// `expand_array`, `register_vcpu_info`) with a domain's event lock held. It must be short
/// and must not block: set a flag, write an eventfd, queue an interrupt. It may call the
/// library's send-side methods (`send`, `raise_virq`, `raise_pirq`, `raise_port`,
/// `is_pending`, `is_masked`) and nothing else: an operation that closes a port, resets or
/// destroys a domain or switches its ABI waits for every sender to leave (the library
/// panics rather than wait for itself), and one that takes an event lock (`status`, every
/// bind, `close`, ...) can deadlock against the lock the caller holds.
pub trait UpcallSink: Send + Sync {
    /// VCPU `vcpu` of domain `domid` has pending events: `evtchn_upcall_pending` in its
    /// vcpu_info just went from 0 to 1.
    fn upcall(&self, domid: DomId, vcpu: u32);
}

impl<F: Fn(DomId, u32) + Send + Sync> UpcallSink for F {
    #[inline(always)]
    fn upcall(&self, domid: DomId, vcpu: u32) {
        self(domid, vcpu)
    }
}

/// Any [`UpcallSink`] behind one type: what [`EventChannels::new`] and [`DomainConfig::new`]
/// use, so that every domain can have a sink of its own kind. Each upcall is then one
/// dynamic call; a VMM whose domains all share one sink type can avoid it with
/// [`EventChannels::with_upcall_type`] (see there).
///
/// [`EventChannels::new`]: crate::EventChannels::new
/// [`EventChannels::with_upcall_type`]: crate::EventChannels::with_upcall_type
/// [`DomainConfig::new`]: crate::DomainConfig::new
#[derive(Clone)]
pub struct SharedUpcallSink(Arc<dyn UpcallSink>);

impl SharedUpcallSink {
    /// Wraps `sink`.
    pub fn new(sink: impl UpcallSink + 'static) -> Self {
        SharedUpcallSink(Arc::new(sink))
    }
}

impl fmt::Debug for SharedUpcallSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedUpcallSink(dyn UpcallSink)")
    }
}

impl UpcallSink for SharedUpcallSink {
    #[inline(always)]
    fn upcall(&self, domid: DomId, vcpu: u32) {
        self.0.upcall(domid, vcpu)
    }
}

/// Binding of physical IRQs, for `EVTCHNOP_bind_pirq`.
///
/// Without a `PirqHost` every PIRQ below the domain's `nr_pirqs` binds (a VMM that routes its
/// emulated interrupts itself needs nothing more).
pub trait PirqHost: Send + Sync {
    /// Route `pirq` of `domid` to the event channel layer. An error is returned to the guest.
    fn bind(&self, domid: DomId, pirq: u32, will_share: bool) -> Result<(), Errno>;
    /// The port bound to `pirq` was closed.
    fn unbind(&self, domid: DomId, pirq: u32);
}

/// Prints trait objects in `Debug` output.
pub(crate) struct Opaque(pub(crate) &'static str);

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
