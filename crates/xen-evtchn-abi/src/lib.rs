//! Bit-exact definitions of Xen's guest-visible event channel ABI.
//!
//! This crate holds data only: command numbers, argument structs, constants
//! and layouts, with just enough code to copy structs to and from guest bytes
//! and to decode bit fields. It is `no_std`, never allocates, and contains no
//! event channel logic; that lives in the `xen-evtchn` crate.
//!
//! Every value was checked against Xen's public headers
//! (`xen/include/public/...`, which are MIT licensed); the definitions and
//! their documentation here are written independently. `docs/abi.md` in the
//! repository has the full tables.
//!
//! # Naming
//!
//! A VMM author should find everything under the name Xen uses:
//!
//! * Xen's structs become UpperCamelCase: `struct evtchn_alloc_unbound` is
//!   [`EvtchnAllocUnbound`], `struct evtchn_fifo_control_block` is
//!   [`EvtchnFifoControlBlock`].
//! * Fields keep Xen's names (`remote_dom`, `control_gfn`, `head`, ...).
//!   Padding the C compiler inserts silently becomes an explicit `_pad0`
//!   field.
//! * Constants keep Xen's exact spelling, lower-case parts included:
//!   [`EVTCHNOP_send`], [`EVTCHN_FIFO_PRIORITY_DEFAULT`], [`VIRQ_TIMER`],
//!   [`__HYPERVISOR_event_channel_op`].
//!
//! # What lives where
//!
//! Everything is re-exported at the crate root.
//!
//! | module | contents | Xen source |
//! |---|---|---|
//! | [`types`] | [`DomId`], [`EvtchnPort`], `DOMID_*`, hypercall numbers, [`XEN_PAGE_SIZE`] | `xen.h` |
//! | [`ops`] | `EVTCHNOP_*`, every argument struct, [`EvtchnOpArg`], [`AbiError`], `EVTCHNSTAT_*`, legacy [`EvtchnOp`] | `event_channel.h` |
//! | [`fifo`] | FIFO event word bits, [`EventWord`], priorities, [`EvtchnFifoControlBlock`] | `event_channel.h`, `common/event_fifo.c` |
//! | [`two_level`] | 2-level bitmap sizes and offsets, [`TwoLevelLayout`] | `xen.h`, `event_channel.h`, `arch-x86/*.h`, `arch-arm.h` |
//! | [`virq`] | `VIRQ_*`, [`NR_VIRQS`], [`VirqKind`], [`virq_kind`] | `xen.h` |
//! | [`errno`] | [`Errno`] | `errno.h` |
//!
//! # Example: serving a hypercall buffer
//!
//! ```
//! use xen_evtchn_abi::*;
//!
//! /// What a backend's dispatcher might look like (the real work is elided).
//! // Xen's command names are not upper case, so matching on them needs:
//! #[allow(non_upper_case_globals)]
//! fn dispatch(cmd: u32, guest: &mut [u8]) -> i64 {
//!     match cmd {
//!         EVTCHNOP_alloc_unbound => {
//!             let Ok(mut arg) = EvtchnAllocUnbound::read_from_guest(guest) else {
//!                 return Errno::EFAULT.as_hypercall_ret();
//!             };
//!             if arg.dom != DOMID_SELF {
//!                 return Errno::EPERM.as_hypercall_ret();
//!             }
//!             arg.port = 1; // the allocated port
//!             match arg.write_to_guest(guest) {
//!                 Ok(()) => 0,
//!                 Err(_) => Errno::EFAULT.as_hypercall_ret(),
//!             }
//!         }
//!         EVTCHNOP_send => match EvtchnSend::read_from_guest(guest) {
//!             Ok(send) if send.port < EVTCHN_FIFO_NR_CHANNELS => 0,
//!             Ok(_) => Errno::EINVAL.as_hypercall_ret(),
//!             Err(_) => Errno::EFAULT.as_hypercall_ret(),
//!         },
//!         _ => Errno::ENOSYS.as_hypercall_ret(),
//!     }
//! }
//!
//! let mut buf = [0u8; 8];
//! EvtchnAllocUnbound::new(DOMID_SELF, 0).write_to_guest(&mut buf).unwrap();
//! assert_eq!(dispatch(EVTCHNOP_alloc_unbound, &mut buf), 0);
//! assert_eq!(EvtchnAllocUnbound::read_from_guest(&buf).unwrap().port, 1);
//!
//! assert_eq!(dispatch(EVTCHNOP_send, &mut [0u8; 2]), -14); // short buffer: EFAULT
//! assert_eq!(dispatch(EVTCHNOP_init_control + 100, &mut buf), -38); // ENOSYS
//! ```
//!
//! # Byte order
//!
//! Xen's ABI is little-endian on every architecture Xen supports. The
//! structs' integer fields are in host order, so the crate only builds for
//! little-endian targets.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

#[cfg(target_endian = "big")]
compile_error!("xen-evtchn-abi mirrors Xen's little-endian ABI and needs a little-endian host");

pub mod errno;
pub mod fifo;
pub mod ops;
pub mod two_level;
pub mod types;
pub mod virq;

pub use crate::errno::*;
pub use crate::fifo::*;
pub use crate::ops::*;
pub use crate::two_level::*;
pub use crate::types::*;
pub use crate::virq::*;
