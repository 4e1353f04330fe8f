//! Scalar types, special domain ids and hypercall numbers.
//!
//! Values come from `xen/include/public/xen.h` (domain ids, hypercall
//! numbers) and `xen/include/public/event_channel.h` (`evtchn_port_t`).

/// A domain id (`domid_t` in Xen: an unsigned 16-bit number).
pub type DomId = u16;

/// An event channel port number (`evtchn_port_t` in Xen: an unsigned 32-bit
/// number).
pub type EvtchnPort = u32;

/// Size of a Xen page in bytes. Every guest frame named by a gfn in this ABI
/// (FIFO control block page, event array pages, the shared info page) is one
/// page of this size.
pub const XEN_PAGE_SIZE: usize = 4096;

/// First domain id that does not name an ordinary domain; every id from here
/// up is a reserved, special-purpose id.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;

/// "The calling domain". Accepted in the `dom`/`remote_dom` fields of several
/// event channel commands. Numerically equal to [`DOMID_FIRST_RESERVED`].
pub const DOMID_SELF: DomId = 0x7FF0;

/// Pseudo-domain used when mapping I/O memory (a memory-management id; never
/// a valid event channel peer).
pub const DOMID_IO: DomId = 0x7FF1;

/// Pseudo-domain standing for the hypervisor itself (owner of Xen heap pages).
pub const DOMID_XEN: DomId = 0x7FF2;

/// Pseudo-domain owning pages shared copy-on-write between domains.
pub const DOMID_COW: DomId = 0x7FF3;

/// Marks "no valid owner"; used by Xen for pages with an unknown owner.
pub const DOMID_INVALID: DomId = 0x7FF4;

/// "Any domain id": asks the handler to choose an id (or to treat the value
/// as a wildcard, depending on the interface).
pub const DOMID_ANY: DomId = 0x7FF5;

/// Id of Xen's idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;

/// Mask covering every bit a valid domain id may use (15 bits).
pub const DOMID_MASK: DomId = 0x7FFF;

/// Hypercall number of `HYPERVISOR_event_channel_op(cmd, arg)`: the current
/// entry point. `cmd` is one of the `EVTCHNOP_*` numbers, `arg` points at the
/// command's argument struct.
#[allow(non_upper_case_globals)]
pub const __HYPERVISOR_event_channel_op: u32 = 32;

/// Hypercall number of the legacy `HYPERVISOR_event_channel_op_compat(op)`
/// entry point (superseded since interface version 0x00030202). Its single
/// argument points at a [`EvtchnOp`](crate::EvtchnOp), which carries the
/// command number and the argument together.
#[allow(non_upper_case_globals)]
pub const __HYPERVISOR_event_channel_op_compat: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    // Values from xen/include/public/xen.h.
    #[test]
    fn special_domids() {
        assert_eq!(DOMID_FIRST_RESERVED, 0x7FF0);
        assert_eq!(DOMID_SELF, 0x7FF0);
        assert_eq!(DOMID_IO, 0x7FF1);
        assert_eq!(DOMID_XEN, 0x7FF2);
        assert_eq!(DOMID_COW, 0x7FF3);
        assert_eq!(DOMID_INVALID, 0x7FF4);
        assert_eq!(DOMID_ANY, 0x7FF5);
        assert_eq!(DOMID_IDLE, 0x7FFF);
        assert_eq!(DOMID_MASK, 0x7FFF);
        // Every special id lies inside the mask and at or above the first
        // reserved id.
        for d in [
            DOMID_SELF,
            DOMID_IO,
            DOMID_XEN,
            DOMID_COW,
            DOMID_INVALID,
            DOMID_ANY,
            DOMID_IDLE,
        ] {
            assert!(d >= DOMID_FIRST_RESERVED);
            assert_eq!(d & DOMID_MASK, d);
        }
    }

    #[test]
    fn hypercall_numbers() {
        assert_eq!(__HYPERVISOR_event_channel_op, 32);
        assert_eq!(__HYPERVISOR_event_channel_op_compat, 16);
    }

    #[test]
    fn scalar_widths() {
        assert_eq!(core::mem::size_of::<DomId>(), 2);
        assert_eq!(core::mem::size_of::<EvtchnPort>(), 4);
        assert_eq!(XEN_PAGE_SIZE, 4096);
    }
}
