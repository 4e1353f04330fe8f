//! The EVTCHNOP operations, one file per family. Each is a method of
//! [`EventChannels`](crate::EventChannels) taking the calling domain's id, checking its
//! arguments in Xen's order and returning Xen's errno.

mod alloc_bind;
mod close;
mod fifo_control;
mod priority;
mod reset;
mod send;
mod status;
mod vcpu;
mod vcpu_info;

pub use status::{PortStatus, Status};
