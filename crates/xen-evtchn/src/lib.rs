//! Xen's hypervisor-side event channel subsystem, for Rust VMMs.
//!
//! A VMM that runs unmodified Xen guests embeds one [`EventChannels`], creates a domain per
//! guest, and routes the guest's `HYPERVISOR_event_channel_op` hypercalls to
//! [`EventChannels::hypercall`] (or calls the typed operations directly). Events land in guest
//! memory exactly where Xen puts them (the 2-level bitmaps of shared_info, or the FIFO event
//! array), and the VMM is told through [`UpcallSink`] when a VCPU must take the event upcall.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use xen_evtchn::{DomainConfig, EventChannels};
//!
//! // Upcalls: the VMM would inject the guest's callback vector; here we record them.
//! let upcalls = Arc::new(Mutex::new(Vec::new()));
//! let sink = {
//!     let upcalls = upcalls.clone();
//!     move |domid, vcpu| upcalls.lock().unwrap().push((domid, vcpu))
//! };
//!
//! let ec = EventChannels::new();
//! ec.create_domain(0, DomainConfig::new(1, |_, _| {}).privileged(true)).unwrap();
//! ec.create_domain(7, DomainConfig::new(2, sink)).unwrap();
//!
//! // The guest (domain 7) offers a port to domain 0 (say, for a PV backend)...
//! let guest_port = ec.alloc_unbound(7, 7, 0).unwrap();
//! // ...domain 0 binds to it...
//! let backend_port = ec.bind_interdomain(0, 7, guest_port).unwrap();
//! // ...and notifies: the guest's pending bit is set and VCPU 0 gets an upcall.
//! ec.send(0, backend_port).unwrap();
//! assert!(ec.is_pending(7, guest_port).unwrap());
//! assert_eq!(*upcalls.lock().unwrap(), vec![(7, 0)]);
//!
//! // The same through the raw hypercall entry: EVTCHNOP_send with the port in the argument.
//! let mut args = backend_port.to_le_bytes();
//! assert_eq!(ec.hypercall(0, 0, xen_evtchn_abi::EVTCHNOP_send, &mut args), 0);
//! // An unknown command gives -ENOSYS, as Xen does.
//! assert_eq!(ec.hypercall(0, 0, 99, &mut args), -38);
//! ```
//!
//! Each domain's sink above is called through a [`SharedUpcallSink`]: one dynamic call per
//! upcall. A VMM whose domains share one sink type builds the hypervisor with
//! [`EventChannels::with_upcall_type`] and its domains with [`DomainConfig::with_upcall`]; the
//! sink is then called directly, and a send costs what its guest-memory atomics cost.
//!
//! See `docs/design.md` for the architecture, the locking and memory-ordering rules and the
//! guest-memory trust model.
#![deny(unsafe_code)]

mod backend;
mod bitops;
mod dispatch;
mod domain;
mod error;
mod event_channels;
mod fifo;
mod guest_memory;
mod host;
mod ops;
mod port;
mod port_table;
mod sync;
mod two_level;
mod vcpu;

#[cfg(any(test, feature = "test-utils"))]
#[doc(hidden)]
pub mod test_utils;

pub use domain::DomainConfig;
pub use error::{Error, Reason, Result};
pub use event_channels::EventChannels;
pub use fifo::{FifoCounters, FifoFrames};
pub use guest_memory::{GuestPage, PAGE_SIZE};
pub use host::{GuestMemory, MapError, PirqHost, SharedUpcallSink, UpcallSink};
pub use ops::{PortStatus, Status};
pub use xen_evtchn_abi as abi;
