//! `EVTCHNOP_*` command numbers and their argument structs.
//!
//! Layouts and numbers come from `xen/include/public/event_channel.h`. Every
//! argument struct is a `#[repr(C)]` mirror of Xen's struct, with any
//! compiler-inserted padding turned into an explicit, zero-by-default field
//! so the whole struct can be copied to and from guest memory byte for byte.
//!
//! The argument layouts contain no pointer-sized or `long` fields, so they
//! are the same for 32-bit and 64-bit guests. The only difference is the
//! alignment of the two structs holding a `u64` ([`EvtchnInitControl`],
//! [`EvtchnExpandArray`]): 8 on x86_64 and Arm, 4 for a 32-bit x86 guest.
//! Sizes and offsets do not change. The parsing helpers copy bytes, so they
//! work on buffers of any alignment.
//!
//! Integer fields are in host byte order. Xen's ABI is little-endian on every
//! architecture it supports, and this crate refuses to build on a big-endian
//! host.
//!
//! ```
//! use xen_evtchn_abi::{EvtchnOpArg, EvtchnSend, EVTCHNOP_send};
//!
//! // The four bytes a guest passed for EVTCHNOP_send on port 5.
//! let guest_buffer = 5u32.to_le_bytes();
//! let send = EvtchnSend::read_from_guest(&guest_buffer).expect("long enough");
//! assert_eq!(send.port, 5);
//! assert_eq!(EvtchnSend::CMD, EVTCHNOP_send);
//!
//! // A short buffer is an error, never a panic.
//! let err = EvtchnSend::read_from_guest(&guest_buffer[..2]).unwrap_err();
//! assert_eq!(err.to_string(), "EVTCHNOP_send argument needs 4 bytes, got 2");
//! ```

use core::fmt;
use core::mem::size_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, EvtchnPort};

// ---------------------------------------------------------------------------
// Command numbers
// ---------------------------------------------------------------------------

/// Command 0: connect a new local port to an unbound port of another domain
/// (argument [`EvtchnBindInterdomain`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_bind_interdomain: u32 = 0;
/// Command 1: bind a new local port to a virtual IRQ (argument
/// [`EvtchnBindVirq`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_bind_virq: u32 = 1;
/// Command 2: bind a new local port to a physical IRQ (argument
/// [`EvtchnBindPirq`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_bind_pirq: u32 = 2;
/// Command 3: close a local port (argument [`EvtchnClose`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_close: u32 = 3;
/// Command 4: notify the other end of a local port (argument
/// [`EvtchnSend`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_send: u32 = 4;
/// Command 5: query the state of a port (argument [`EvtchnStatus`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_status: u32 = 5;
/// Command 6: allocate a port that waits for an interdomain connection
/// (argument [`EvtchnAllocUnbound`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_alloc_unbound: u32 = 6;
/// Command 7: bind a new local port for inter-vCPU notifications (argument
/// [`EvtchnBindIpi`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_bind_ipi: u32 = 7;
/// Command 8: choose the vCPU a port notifies (argument [`EvtchnBindVcpu`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_bind_vcpu: u32 = 8;
/// Command 9: unmask a port and deliver a pending event (argument
/// [`EvtchnUnmask`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_unmask: u32 = 9;
/// Command 10: close every port of a domain (argument [`EvtchnReset`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_reset: u32 = 10;
/// Command 11: register a vCPU's FIFO control block, switching the domain to
/// the FIFO ABI (argument [`EvtchnInitControl`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_init_control: u32 = 11;
/// Command 12: add one page to the FIFO event array (argument
/// [`EvtchnExpandArray`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_expand_array: u32 = 12;
/// Command 13: set a port's FIFO priority (argument [`EvtchnSetPriority`]).
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_set_priority: u32 = 13;
/// Command 14: continue an interrupted [`EVTCHNOP_reset`] (argument
/// [`EvtchnReset`], the same buffer as the original call).
///
/// Xen-internal: the public header only defines this number when building
/// Xen itself, which uses it to re-issue a preempted reset as a hypercall
/// continuation. Xen's dispatcher does not check where the command came
/// from, so a guest that issues it directly is served too (resuming a reset
/// in progress, or failing with `EBUSY` when none is). A faithful backend
/// must accept it.
#[allow(non_upper_case_globals)]
pub const EVTCHNOP_reset_cont: u32 = 14;

/// Flag for [`EvtchnBindPirq::flags`]: the physical IRQ may be shared with
/// other domains.
#[allow(non_upper_case_globals)]
pub const BIND_PIRQ__WILL_SHARE: u32 = 1;

/// [`EvtchnStatus::status`]: the port is not in use (free or reserved).
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_closed: u32 = 0;
/// [`EvtchnStatus::status`]: the port waits for an interdomain connection;
/// [`EvtchnStatus::unbound_dom`] names the domain allowed to connect.
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_unbound: u32 = 1;
/// [`EvtchnStatus::status`]: the port is connected to another port;
/// [`EvtchnStatus::interdomain`] names the peer.
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_interdomain: u32 = 2;
/// [`EvtchnStatus::status`]: the port is bound to a physical IRQ;
/// [`EvtchnStatus::pirq`] gives it.
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_pirq: u32 = 3;
/// [`EvtchnStatus::status`]: the port is bound to a virtual IRQ;
/// [`EvtchnStatus::virq`] gives it.
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_virq: u32 = 4;
/// [`EvtchnStatus::status`]: the port is an IPI port.
#[allow(non_upper_case_globals)]
pub const EVTCHNSTAT_ipi: u32 = 5;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A guest buffer had the wrong length for the struct being read or written.
///
/// `actual < expected` means the buffer was too short; `actual > expected`
/// only happens for the exact-length checks ([`EvtchnOpArg::read_exact`]).
///
/// ```
/// use xen_evtchn_abi::{AbiError, EvtchnOpArg, EvtchnSend};
///
/// let err = EvtchnSend::read_from_guest(&[0u8; 2]).unwrap_err();
/// assert_eq!(err, AbiError { name: "EVTCHNOP_send", expected: 4, actual: 2 });
/// assert_eq!(err.to_string(), "EVTCHNOP_send argument needs 4 bytes, got 2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbiError {
    /// What was being read or written (a command name such as
    /// `"EVTCHNOP_send"`, or a struct name).
    pub name: &'static str,
    /// The length the struct needs.
    pub expected: usize,
    /// The length of the buffer that was offered.
    pub actual: usize,
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actual < self.expected {
            write!(
                f,
                "{} argument needs {} bytes, got {}",
                self.name, self.expected, self.actual
            )
        } else {
            write!(
                f,
                "{} argument must be exactly {} bytes, got {}",
                self.name, self.expected, self.actual
            )
        }
    }
}

impl core::error::Error for AbiError {}

/// Copies a `T` out of the start of `bytes`.
pub(crate) fn read_prefix<T: FromBytes>(name: &'static str, bytes: &[u8]) -> Result<T, AbiError> {
    match T::read_from_prefix(bytes) {
        Ok((value, _rest)) => Ok(value),
        Err(_) => Err(AbiError {
            name,
            expected: size_of::<T>(),
            actual: bytes.len(),
        }),
    }
}

/// Copies a `T` out of `bytes`, which must be exactly `size_of::<T>()` long.
pub(crate) fn read_all<T: FromBytes>(name: &'static str, bytes: &[u8]) -> Result<T, AbiError> {
    match T::read_from_bytes(bytes) {
        Ok(value) => Ok(value),
        Err(_) => Err(AbiError {
            name,
            expected: size_of::<T>(),
            actual: bytes.len(),
        }),
    }
}

/// Copies `value` into the start of `bytes`, leaving the rest untouched.
pub(crate) fn write_prefix<T: IntoBytes + Immutable>(
    name: &'static str,
    value: &T,
    bytes: &mut [u8],
) -> Result<(), AbiError> {
    let actual = bytes.len();
    match value.write_to_prefix(bytes) {
        Ok(()) => Ok(()),
        Err(_) => Err(AbiError {
            name,
            expected: size_of::<T>(),
            actual,
        }),
    }
}

// ---------------------------------------------------------------------------
// The argument trait
// ---------------------------------------------------------------------------

mod sealed {
    /// Restricts [`super::EvtchnOpArg`] to the structs of this crate: the set
    /// of commands is fixed by Xen's ABI.
    #[allow(unreachable_pub)]
    pub trait Sealed {}
}

/// An `EVTCHNOP_*` argument struct, tied to its command number.
///
/// Implemented by every argument struct of this crate (and only by them).
/// The provided methods copy the struct to and from guest bytes without ever
/// panicking; a buffer of the wrong length gives an [`AbiError`].
///
/// A hypercall argument buffer may be larger than the struct (for example a
/// page the backend mapped), so [`read_from_guest`](Self::read_from_guest)
/// and [`write_to_guest`](Self::write_to_guest) work on the *prefix* of the
/// buffer; [`read_exact`](Self::read_exact) insists on the exact length.
///
/// ```
/// use xen_evtchn_abi::{EvtchnAllocUnbound, EvtchnOpArg, DOMID_SELF};
///
/// // A guest asks for an unbound port that domain 3 may connect to.
/// let mut guest = [0u8; 8];
/// guest[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
/// guest[2..4].copy_from_slice(&3u16.to_le_bytes());
///
/// let mut arg = EvtchnAllocUnbound::read_from_guest(&guest).unwrap();
/// assert_eq!((arg.dom, arg.remote_dom), (DOMID_SELF, 3));
///
/// // The backend allocates port 7 and writes the OUT field back.
/// arg.port = 7;
/// arg.write_to_guest(&mut guest).unwrap();
/// assert_eq!(&guest[4..8], &7u32.to_le_bytes());
/// ```
pub trait EvtchnOpArg:
    FromBytes + IntoBytes + KnownLayout + Immutable + Copy + sealed::Sealed
{
    /// The command this struct is the argument of.
    const CMD: u32;
    /// The command's name, e.g. `"EVTCHNOP_send"`.
    const NAME: &'static str;
    /// Size of the struct in guest memory, in bytes.
    const SIZE: usize = size_of::<Self>();

    /// Reads the struct from the start of `bytes`, which may be longer than
    /// the struct. Fails if `bytes.len() < Self::SIZE`.
    fn read_from_guest(bytes: &[u8]) -> Result<Self, AbiError> {
        read_prefix::<Self>(Self::NAME, bytes)
    }

    /// Reads the struct from `bytes`, which must be exactly `Self::SIZE`
    /// bytes long.
    fn read_exact(bytes: &[u8]) -> Result<Self, AbiError> {
        read_all::<Self>(Self::NAME, bytes)
    }

    /// Writes the struct to the start of `bytes`, leaving any further bytes
    /// untouched. Fails (writing nothing) if `bytes.len() < Self::SIZE`.
    fn write_to_guest(&self, bytes: &mut [u8]) -> Result<(), AbiError> {
        write_prefix(Self::NAME, self, bytes)
    }
}

macro_rules! impl_arg {
    ($ty:ty, $cmd:ident) => {
        impl sealed::Sealed for $ty {}
        impl EvtchnOpArg for $ty {
            const CMD: u32 = $cmd;
            const NAME: &'static str = stringify!($cmd);
        }
    };
}

// ---------------------------------------------------------------------------
// Argument structs
// ---------------------------------------------------------------------------

/// Argument of [`EVTCHNOP_alloc_unbound`] (`struct evtchn_alloc_unbound`,
/// 8 bytes, alignment 4).
///
/// Allocates a fresh port in domain `dom` that only domain `remote_dom` may
/// later connect to with [`EVTCHNOP_bind_interdomain`].
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `dom` | 0 | u16 | IN |
/// | `remote_dom` | 2 | u16 | IN |
/// | `port` | 4 | u32 | OUT |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnAllocUnbound {
    /// IN: domain to allocate the port in (usually [`DOMID_SELF`](crate::DOMID_SELF)).
    pub dom: DomId,
    /// IN: domain allowed to connect ([`DOMID_SELF`](crate::DOMID_SELF)
    /// allowed, for loopback).
    pub remote_dom: DomId,
    /// OUT: the allocated port.
    pub port: EvtchnPort,
}

impl EvtchnAllocUnbound {
    /// Builds the argument from its IN fields (`port` = 0).
    pub const fn new(dom: DomId, remote_dom: DomId) -> Self {
        Self {
            dom,
            remote_dom,
            port: 0,
        }
    }
}
impl_arg!(EvtchnAllocUnbound, EVTCHNOP_alloc_unbound);

/// Argument of [`EVTCHNOP_bind_interdomain`]
/// (`struct evtchn_bind_interdomain`, 12 bytes, alignment 4).
///
/// Connects a fresh local port to `(remote_dom, remote_port)`, which must be
/// unbound and waiting for the caller.
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `remote_dom` | 0 | u16 | IN |
/// | `_pad0` | 2 | \[u8; 2\] | (padding) |
/// | `remote_port` | 4 | u32 | IN |
/// | `local_port` | 8 | u32 | OUT |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain ([`DOMID_SELF`](crate::DOMID_SELF) allowed, for
    /// loopback).
    pub remote_dom: DomId,
    /// Padding the C compiler inserts after `remote_dom`; not a Xen field.
    /// Carried through unchanged when a struct is read and written back.
    pub _pad0: [u8; 2],
    /// IN: the remote unbound port.
    pub remote_port: EvtchnPort,
    /// OUT: the new local port.
    pub local_port: EvtchnPort,
}

impl EvtchnBindInterdomain {
    /// Builds the argument from its IN fields (padding and `local_port` = 0).
    pub const fn new(remote_dom: DomId, remote_port: EvtchnPort) -> Self {
        Self {
            remote_dom,
            _pad0: [0; 2],
            remote_port,
            local_port: 0,
        }
    }
}
impl_arg!(EvtchnBindInterdomain, EVTCHNOP_bind_interdomain);

/// Argument of [`EVTCHNOP_bind_virq`] (`struct evtchn_bind_virq`, 12 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `virq` | 0 | u32 | IN |
/// | `vcpu` | 4 | u32 | IN |
/// | `port` | 8 | u32 | OUT |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnBindVirq {
    /// IN: the virtual IRQ (`VIRQ_*`, below [`NR_VIRQS`](crate::NR_VIRQS)).
    pub virq: u32,
    /// IN: the vCPU to bind on (must be 0 unless the VIRQ is per-vCPU).
    pub vcpu: u32,
    /// OUT: the new local port.
    pub port: EvtchnPort,
}

impl EvtchnBindVirq {
    /// Builds the argument from its IN fields (`port` = 0).
    pub const fn new(virq: u32, vcpu: u32) -> Self {
        Self {
            virq,
            vcpu,
            port: 0,
        }
    }
}
impl_arg!(EvtchnBindVirq, EVTCHNOP_bind_virq);

/// Argument of [`EVTCHNOP_bind_pirq`] (`struct evtchn_bind_pirq`, 12 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `pirq` | 0 | u32 | IN |
/// | `flags` | 4 | u32 | IN (`BIND_PIRQ__*`) |
/// | `port` | 8 | u32 | OUT |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnBindPirq {
    /// IN: the physical IRQ number.
    pub pirq: u32,
    /// IN: flags; [`BIND_PIRQ__WILL_SHARE`] is the only one defined.
    pub flags: u32,
    /// OUT: the new local port.
    pub port: EvtchnPort,
}

impl EvtchnBindPirq {
    /// Builds the argument from its IN fields (`port` = 0).
    pub const fn new(pirq: u32, flags: u32) -> Self {
        Self {
            pirq,
            flags,
            port: 0,
        }
    }
}
impl_arg!(EvtchnBindPirq, EVTCHNOP_bind_pirq);

/// Argument of [`EVTCHNOP_bind_ipi`] (`struct evtchn_bind_ipi`, 8 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `vcpu` | 0 | u32 | IN |
/// | `port` | 4 | u32 | OUT |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnBindIpi {
    /// IN: the vCPU the port will notify (fixed for the port's life).
    pub vcpu: u32,
    /// OUT: the new local port.
    pub port: EvtchnPort,
}

impl EvtchnBindIpi {
    /// Builds the argument from its IN field (`port` = 0).
    pub const fn new(vcpu: u32) -> Self {
        Self { vcpu, port: 0 }
    }
}
impl_arg!(EvtchnBindIpi, EVTCHNOP_bind_ipi);

/// Argument of [`EVTCHNOP_close`] (`struct evtchn_close`, 4 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `port` | 0 | u32 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnClose {
    /// IN: the local port to close.
    pub port: EvtchnPort,
}

impl EvtchnClose {
    /// Builds the argument.
    pub const fn new(port: EvtchnPort) -> Self {
        Self { port }
    }
}
impl_arg!(EvtchnClose, EVTCHNOP_close);

/// Argument of [`EVTCHNOP_send`] (`struct evtchn_send`, 4 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `port` | 0 | u32 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnSend {
    /// IN: the local port whose other end is notified.
    pub port: EvtchnPort,
}

impl EvtchnSend {
    /// Builds the argument.
    pub const fn new(port: EvtchnPort) -> Self {
        Self { port }
    }
}
impl_arg!(EvtchnSend, EVTCHNOP_send);

/// Size of the union `u` inside [`EvtchnStatus`], in bytes.
pub const EVTCHN_STATUS_UNION_SIZE: usize = 8;

/// Argument of [`EVTCHNOP_status`] (`struct evtchn_status`, 24 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `dom` | 0 | u16 | IN |
/// | `_pad0` | 2 | \[u8; 2\] | (padding) |
/// | `port` | 4 | u32 | IN |
/// | `status` | 8 | u32 | OUT (`EVTCHNSTAT_*`) |
/// | `vcpu` | 12 | u32 | OUT |
/// | `u` | 16 | \[u8; 8\] | OUT (union, see below) |
///
/// Xen's `u` is a C union whose live member depends on `status`. Here it is
/// kept as raw bytes, read and written through accessors that decode the
/// member's little-endian bytes:
///
/// | status | member | bytes of `u` (struct offset) | accessors |
/// |---|---|---|---|
/// | [`EVTCHNSTAT_unbound`] | `unbound.dom` (u16) | 0..2 (16) | [`unbound_dom`](Self::unbound_dom), [`set_unbound_dom`](Self::set_unbound_dom) |
/// | [`EVTCHNSTAT_interdomain`] | `interdomain.dom` (u16), `interdomain.port` (u32) | 0..2 (16), 4..8 (20) | [`interdomain`](Self::interdomain), [`set_interdomain`](Self::set_interdomain) |
/// | [`EVTCHNSTAT_pirq`] | `pirq` (u32) | 0..4 (16) | [`pirq`](Self::pirq), [`set_pirq`](Self::set_pirq) |
/// | [`EVTCHNSTAT_virq`] | `virq` (u32) | 0..4 (16) | [`virq`](Self::virq), [`set_virq`](Self::set_virq) |
///
/// A setter writes only the bytes of its member, like a member assignment in
/// C; the other bytes of `u` keep whatever they held (Xen likewise leaves the
/// rest of the guest's buffer as the guest supplied it).
///
/// ```
/// use xen_evtchn_abi::{EvtchnStatus, EVTCHNSTAT_interdomain, DOMID_SELF};
///
/// let mut st = EvtchnStatus::new(DOMID_SELF, 4);
/// st.status = EVTCHNSTAT_interdomain;
/// st.set_interdomain(2, 9);
/// assert_eq!(st.interdomain(), (2, 9));
/// assert_eq!(st.u, [2, 0, 0, 0, 9, 0, 0, 0]);
/// ```
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnStatus {
    /// IN: domain owning the port ([`DOMID_SELF`](crate::DOMID_SELF) allowed).
    pub dom: DomId,
    /// Padding the C compiler inserts after `dom`; not a Xen field.
    /// Carried through unchanged when a struct is read and written back.
    pub _pad0: [u8; 2],
    /// IN: the port to query.
    pub port: EvtchnPort,
    /// OUT: one of the `EVTCHNSTAT_*` values.
    pub status: u32,
    /// OUT: the vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: the union of per-status details, as raw bytes; use the
    /// accessors.
    pub u: [u8; EVTCHN_STATUS_UNION_SIZE],
}

impl EvtchnStatus {
    /// Builds the argument from its IN fields (everything else zero).
    pub const fn new(dom: DomId, port: EvtchnPort) -> Self {
        Self {
            dom,
            _pad0: [0; 2],
            port,
            status: 0,
            vcpu: 0,
            u: [0; EVTCHN_STATUS_UNION_SIZE],
        }
    }

    /// `u.unbound.dom`: the domain allowed to connect to an unbound port.
    pub const fn unbound_dom(&self) -> DomId {
        u16::from_le_bytes([self.u[0], self.u[1]])
    }

    /// Sets `u.unbound.dom` (bytes 0..2 of `u`; the rest is untouched).
    pub const fn set_unbound_dom(&mut self, dom: DomId) {
        let b = dom.to_le_bytes();
        self.u[0] = b[0];
        self.u[1] = b[1];
    }

    /// `(u.interdomain.dom, u.interdomain.port)`: the peer of a connected
    /// port.
    pub const fn interdomain(&self) -> (DomId, EvtchnPort) {
        (
            u16::from_le_bytes([self.u[0], self.u[1]]),
            u32::from_le_bytes([self.u[4], self.u[5], self.u[6], self.u[7]]),
        )
    }

    /// Sets `u.interdomain` (bytes 0..2 and 4..8 of `u`; bytes 2..4, the
    /// member's padding, are untouched).
    pub const fn set_interdomain(&mut self, dom: DomId, port: EvtchnPort) {
        let d = dom.to_le_bytes();
        let p = port.to_le_bytes();
        self.u[0] = d[0];
        self.u[1] = d[1];
        self.u[4] = p[0];
        self.u[5] = p[1];
        self.u[6] = p[2];
        self.u[7] = p[3];
    }

    /// `u.pirq`: the physical IRQ of a PIRQ port.
    pub const fn pirq(&self) -> u32 {
        self.u32_at_0()
    }

    /// Sets `u.pirq` (bytes 0..4 of `u`; the rest is untouched).
    pub const fn set_pirq(&mut self, pirq: u32) {
        self.set_u32_at_0(pirq);
    }

    /// `u.virq`: the virtual IRQ of a VIRQ port.
    pub const fn virq(&self) -> u32 {
        self.u32_at_0()
    }

    /// Sets `u.virq` (bytes 0..4 of `u`; the rest is untouched).
    pub const fn set_virq(&mut self, virq: u32) {
        self.set_u32_at_0(virq);
    }

    const fn u32_at_0(&self) -> u32 {
        u32::from_le_bytes([self.u[0], self.u[1], self.u[2], self.u[3]])
    }

    const fn set_u32_at_0(&mut self, v: u32) {
        let b = v.to_le_bytes();
        self.u[0] = b[0];
        self.u[1] = b[1];
        self.u[2] = b[2];
        self.u[3] = b[3];
    }
}
impl_arg!(EvtchnStatus, EVTCHNOP_status);

/// Argument of [`EVTCHNOP_bind_vcpu`] (`struct evtchn_bind_vcpu`, 8 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `port` | 0 | u32 | IN |
/// | `vcpu` | 4 | u32 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnBindVcpu {
    /// IN: the local port to re-target.
    pub port: EvtchnPort,
    /// IN: the vCPU to notify from now on.
    pub vcpu: u32,
}

impl EvtchnBindVcpu {
    /// Builds the argument.
    pub const fn new(port: EvtchnPort, vcpu: u32) -> Self {
        Self { port, vcpu }
    }
}
impl_arg!(EvtchnBindVcpu, EVTCHNOP_bind_vcpu);

/// Argument of [`EVTCHNOP_unmask`] (`struct evtchn_unmask`, 4 bytes,
/// alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `port` | 0 | u32 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnUnmask {
    /// IN: the local port to unmask.
    pub port: EvtchnPort,
}

impl EvtchnUnmask {
    /// Builds the argument.
    pub const fn new(port: EvtchnPort) -> Self {
        Self { port }
    }
}
impl_arg!(EvtchnUnmask, EVTCHNOP_unmask);

/// Argument of [`EVTCHNOP_reset`] and [`EVTCHNOP_reset_cont`]
/// (`struct evtchn_reset`, 2 bytes, alignment 2).
///
/// Its [`EvtchnOpArg::CMD`] is [`EVTCHNOP_reset`]; the continuation command
/// reuses the same struct.
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `dom` | 0 | u16 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnReset {
    /// IN: the domain whose ports are closed ([`DOMID_SELF`](crate::DOMID_SELF)
    /// allowed).
    pub dom: DomId,
}

impl EvtchnReset {
    /// Builds the argument.
    pub const fn new(dom: DomId) -> Self {
        Self { dom }
    }
}
impl_arg!(EvtchnReset, EVTCHNOP_reset);

/// Argument of [`EVTCHNOP_init_control`] (`struct evtchn_init_control`,
/// 24 bytes, alignment 8 on x86_64 and Arm, 4 for 32-bit x86 guests).
///
/// Registers the FIFO control block of vCPU `vcpu`: it lives in guest frame
/// `control_gfn` at byte `offset` (see
/// [`evtchn_fifo_control_block_offset_is_valid`](crate::evtchn_fifo_control_block_offset_is_valid)).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `control_gfn` | 0 | u64 | IN |
/// | `offset` | 8 | u32 | IN |
/// | `vcpu` | 12 | u32 | IN |
/// | `link_bits` | 16 | u8 | OUT |
/// | `_pad` | 17 | \[u8; 7\] | (Xen's own padding field) |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnInitControl {
    /// IN: guest frame number of the page holding the control block.
    pub control_gfn: u64,
    /// IN: byte offset of the control block inside that page.
    pub offset: u32,
    /// IN: the vCPU the control block belongs to.
    pub vcpu: u32,
    /// OUT: number of bits in an event word's LINK field
    /// ([`EVTCHN_FIFO_LINK_BITS`](crate::EVTCHN_FIFO_LINK_BITS)).
    pub link_bits: u8,
    /// Padding, declared by Xen's header itself.
    pub _pad: [u8; 7],
}

impl EvtchnInitControl {
    /// Builds the argument from its IN fields (`link_bits` and padding = 0).
    pub const fn new(control_gfn: u64, offset: u32, vcpu: u32) -> Self {
        Self {
            control_gfn,
            offset,
            vcpu,
            link_bits: 0,
            _pad: [0; 7],
        }
    }
}
impl_arg!(EvtchnInitControl, EVTCHNOP_init_control);

/// Argument of [`EVTCHNOP_expand_array`] (`struct evtchn_expand_array`,
/// 8 bytes, alignment 8 on x86_64 and Arm, 4 for 32-bit x86 guests).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `array_gfn` | 0 | u64 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnExpandArray {
    /// IN: guest frame number of the next event array page.
    pub array_gfn: u64,
}

impl EvtchnExpandArray {
    /// Builds the argument.
    pub const fn new(array_gfn: u64) -> Self {
        Self { array_gfn }
    }
}
impl_arg!(EvtchnExpandArray, EVTCHNOP_expand_array);

/// Argument of [`EVTCHNOP_set_priority`] (`struct evtchn_set_priority`,
/// 8 bytes, alignment 4).
///
/// | field | offset | type | direction |
/// |---|---|---|---|
/// | `port` | 0 | u32 | IN |
/// | `priority` | 4 | u32 | IN |
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnSetPriority {
    /// IN: the local port.
    pub port: EvtchnPort,
    /// IN: the new priority, from
    /// [`EVTCHN_FIFO_PRIORITY_MAX`](crate::EVTCHN_FIFO_PRIORITY_MAX) (0,
    /// highest) to [`EVTCHN_FIFO_PRIORITY_MIN`](crate::EVTCHN_FIFO_PRIORITY_MIN)
    /// (15, lowest).
    pub priority: u32,
}

impl EvtchnSetPriority {
    /// Builds the argument.
    pub const fn new(port: EvtchnPort, priority: u32) -> Self {
        Self { port, priority }
    }
}
impl_arg!(EvtchnSetPriority, EVTCHNOP_set_priority);

// ---------------------------------------------------------------------------
// Per-command tables
// ---------------------------------------------------------------------------

/// The name of command `cmd` (e.g. `"EVTCHNOP_send"` for 4), or `None` for
/// a number Xen does not define. Knows [`EVTCHNOP_reset_cont`] (14).
///
/// ```
/// use xen_evtchn_abi::evtchnop_name;
///
/// assert_eq!(evtchnop_name(4), Some("EVTCHNOP_send"));
/// assert_eq!(evtchnop_name(14), Some("EVTCHNOP_reset_cont"));
/// assert_eq!(evtchnop_name(15), None);
/// ```
// Matching on the lower-case command constants needs the allow.
#[allow(non_upper_case_globals)]
pub const fn evtchnop_name(cmd: u32) -> Option<&'static str> {
    Some(match cmd {
        EVTCHNOP_bind_interdomain => "EVTCHNOP_bind_interdomain",
        EVTCHNOP_bind_virq => "EVTCHNOP_bind_virq",
        EVTCHNOP_bind_pirq => "EVTCHNOP_bind_pirq",
        EVTCHNOP_close => "EVTCHNOP_close",
        EVTCHNOP_send => "EVTCHNOP_send",
        EVTCHNOP_status => "EVTCHNOP_status",
        EVTCHNOP_alloc_unbound => "EVTCHNOP_alloc_unbound",
        EVTCHNOP_bind_ipi => "EVTCHNOP_bind_ipi",
        EVTCHNOP_bind_vcpu => "EVTCHNOP_bind_vcpu",
        EVTCHNOP_unmask => "EVTCHNOP_unmask",
        EVTCHNOP_reset => "EVTCHNOP_reset",
        EVTCHNOP_init_control => "EVTCHNOP_init_control",
        EVTCHNOP_expand_array => "EVTCHNOP_expand_array",
        EVTCHNOP_set_priority => "EVTCHNOP_set_priority",
        EVTCHNOP_reset_cont => "EVTCHNOP_reset_cont",
        _ => return None,
    })
}

/// Size in bytes of command `cmd`'s argument struct, or `None` for a number
/// Xen does not define. [`EVTCHNOP_reset_cont`] uses [`EvtchnReset`] (2).
///
/// ```
/// use xen_evtchn_abi::{evtchnop_arg_size, EVTCHNOP_status};
///
/// assert_eq!(evtchnop_arg_size(EVTCHNOP_status), Some(24));
/// assert_eq!(evtchnop_arg_size(99), None);
/// ```
// Matching on the lower-case command constants needs the allow.
#[allow(non_upper_case_globals)]
pub const fn evtchnop_arg_size(cmd: u32) -> Option<usize> {
    Some(match cmd {
        EVTCHNOP_bind_interdomain => size_of::<EvtchnBindInterdomain>(),
        EVTCHNOP_bind_virq => size_of::<EvtchnBindVirq>(),
        EVTCHNOP_bind_pirq => size_of::<EvtchnBindPirq>(),
        EVTCHNOP_close => size_of::<EvtchnClose>(),
        EVTCHNOP_send => size_of::<EvtchnSend>(),
        EVTCHNOP_status => size_of::<EvtchnStatus>(),
        EVTCHNOP_alloc_unbound => size_of::<EvtchnAllocUnbound>(),
        EVTCHNOP_bind_ipi => size_of::<EvtchnBindIpi>(),
        EVTCHNOP_bind_vcpu => size_of::<EvtchnBindVcpu>(),
        EVTCHNOP_unmask => size_of::<EvtchnUnmask>(),
        EVTCHNOP_reset | EVTCHNOP_reset_cont => size_of::<EvtchnReset>(),
        EVTCHNOP_init_control => size_of::<EvtchnInitControl>(),
        EVTCHNOP_expand_array => size_of::<EvtchnExpandArray>(),
        EVTCHNOP_set_priority => size_of::<EvtchnSetPriority>(),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Legacy single-argument form
// ---------------------------------------------------------------------------

/// Size of the union `u` inside [`EvtchnOp`], in bytes (the size of its
/// largest member, [`EvtchnStatus`]).
pub const EVTCHN_OP_UNION_SIZE: usize = 24;

/// Whether `cmd` has a member in [`EvtchnOp`]'s union: commands 0 to 9
/// ([`EVTCHNOP_bind_interdomain`] to [`EVTCHNOP_unmask`]). Later commands
/// exist only for [`__HYPERVISOR_event_channel_op`](crate::__HYPERVISOR_event_channel_op);
/// Xen's x86 compat entry point answers them with `ENOSYS`.
pub const fn evtchnop_in_compat_union(cmd: u32) -> bool {
    cmd <= EVTCHNOP_unmask
}

/// Argument of the legacy hypercall
/// [`__HYPERVISOR_event_channel_op_compat`](crate::__HYPERVISOR_event_channel_op_compat)
/// (`struct evtchn_op`, 28 bytes, alignment 4): the command number followed
/// by a union of the argument structs of commands 0 to 9.
///
/// | field | offset | type |
/// |---|---|---|
/// | `cmd` | 0 | u32 (`EVTCHNOP_*`) |
/// | `u` | 4 | \[u8; 24\] (union of argument structs) |
///
/// None of the union's members holds a `u64`, so the union is 4-byte aligned
/// and sits right after `cmd` with no padding; the layout is exact. The
/// union is kept as raw bytes; [`arg`](Self::arg) reads the member selected
/// by `cmd` and [`write_arg`](Self::write_arg) stores one.
///
/// ```
/// use xen_evtchn_abi::{EvtchnBindIpi, EvtchnOp, EvtchnSend, EVTCHNOP_bind_ipi};
///
/// let mut op = EvtchnOp::new(&EvtchnBindIpi::new(1));
/// assert_eq!(op.cmd, EVTCHNOP_bind_ipi);
///
/// let mut arg: EvtchnBindIpi = op.arg().unwrap();
/// assert_eq!(arg.vcpu, 1);
/// arg.port = 12;
/// op.write_arg(&arg);
/// assert_eq!(op.arg::<EvtchnBindIpi>().unwrap().port, 12);
///
/// // Asking for the wrong member gives None.
/// assert_eq!(op.arg::<EvtchnSend>(), None);
/// ```
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnOp {
    /// IN: the command (`EVTCHNOP_*`).
    pub cmd: u32,
    /// IN/OUT: the command's argument struct, as raw bytes.
    pub u: [u8; EVTCHN_OP_UNION_SIZE],
}

impl EvtchnOp {
    /// Name used in [`AbiError`]s about this struct.
    pub const NAME: &'static str = "evtchn_op";

    /// Builds an op carrying `arg`: `cmd` = `T::CMD`, the union starts with
    /// `arg`'s bytes and is zero after them.
    ///
    /// Every argument struct fits in the union, so this cannot fail. Note
    /// that Xen only serves commands 0 to 9 through this form (see
    /// [`evtchnop_in_compat_union`]).
    pub fn new<T: EvtchnOpArg>(arg: &T) -> Self {
        let mut op = Self {
            cmd: T::CMD,
            u: [0; EVTCHN_OP_UNION_SIZE],
        };
        op.write_arg(arg);
        op
    }

    /// Reads the union as `T`, if `cmd` is `T::CMD`; `None` otherwise.
    pub fn arg<T: EvtchnOpArg>(&self) -> Option<T> {
        if self.cmd != T::CMD {
            return None;
        }
        match T::read_from_prefix(&self.u) {
            Ok((value, _rest)) => Some(value),
            Err(_) => None,
        }
    }

    /// Stores `arg` at the start of the union, leaving `cmd` and the union's
    /// remaining bytes untouched (this is what Xen does when it copies an
    /// argument's OUT fields back through the legacy entry point).
    pub fn write_arg<T: EvtchnOpArg>(&mut self, arg: &T) {
        const { assert!(size_of::<T>() <= EVTCHN_OP_UNION_SIZE) };
        // Cannot fail: the size was checked at compile time just above.
        let _ = arg.write_to_prefix(&mut self.u);
    }

    /// Reads the struct from the start of `bytes` (which may be longer).
    /// Fails if `bytes` is shorter than 28 bytes.
    pub fn read_from_guest(bytes: &[u8]) -> Result<Self, AbiError> {
        read_prefix::<Self>(Self::NAME, bytes)
    }

    /// Reads the struct from `bytes`, which must be exactly 28 bytes long.
    pub fn read_exact(bytes: &[u8]) -> Result<Self, AbiError> {
        read_all::<Self>(Self::NAME, bytes)
    }

    /// Writes the struct to the start of `bytes`, leaving any further bytes
    /// untouched. Fails (writing nothing) if `bytes` is shorter than 28
    /// bytes.
    pub fn write_to_guest(&self, bytes: &mut [u8]) -> Result<(), AbiError> {
        write_prefix(Self::NAME, self, bytes)
    }
}

// Compile-time layout checks (numbers from xen/include/public/event_channel.h).
const _: () = {
    assert!(size_of::<EvtchnAllocUnbound>() == 8);
    assert!(size_of::<EvtchnBindInterdomain>() == 12);
    assert!(size_of::<EvtchnBindVirq>() == 12);
    assert!(size_of::<EvtchnBindPirq>() == 12);
    assert!(size_of::<EvtchnBindIpi>() == 8);
    assert!(size_of::<EvtchnClose>() == 4);
    assert!(size_of::<EvtchnSend>() == 4);
    assert!(size_of::<EvtchnStatus>() == 24);
    assert!(size_of::<EvtchnBindVcpu>() == 8);
    assert!(size_of::<EvtchnUnmask>() == 4);
    assert!(size_of::<EvtchnReset>() == 2);
    assert!(size_of::<EvtchnInitControl>() == 24);
    assert!(size_of::<EvtchnExpandArray>() == 8);
    assert!(size_of::<EvtchnSetPriority>() == 8);
    assert!(size_of::<EvtchnOp>() == 28);
    assert!(core::mem::align_of::<EvtchnOp>() == 4);
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of};
    use std::string::ToString;

    /// Round trip: parse `bytes`, hand the value to `check`, write it back
    /// into a larger buffer and compare; also check short and exact-length
    /// handling.
    fn round_trip<T: EvtchnOpArg + fmt::Debug + PartialEq>(bytes: &[u8], check: impl Fn(&T)) {
        assert_eq!(bytes.len(), T::SIZE);
        let v = T::read_from_guest(bytes).unwrap();
        check(&v);
        assert_eq!(T::read_exact(bytes).unwrap(), v);
        assert_eq!(v.as_bytes(), bytes);

        // Written into a longer buffer, only the prefix changes.
        let mut out = [0xEEu8; 64];
        v.write_to_guest(&mut out).unwrap();
        assert_eq!(&out[..T::SIZE], bytes);
        assert!(out[T::SIZE..].iter().all(|&b| b == 0xEE));

        // A longer input buffer is fine for the prefix reader...
        let mut long = [0u8; 64];
        long[..T::SIZE].copy_from_slice(bytes);
        assert_eq!(T::read_from_guest(&long).unwrap(), v);
        // ...but not for the exact one.
        assert_eq!(
            T::read_exact(&long[..T::SIZE + 1]),
            Err(AbiError {
                name: T::NAME,
                expected: T::SIZE,
                actual: T::SIZE + 1
            })
        );

        // Every short length is an error, never a panic.
        for len in 0..T::SIZE {
            let err = T::read_from_guest(&bytes[..len]).unwrap_err();
            assert_eq!(
                err,
                AbiError {
                    name: T::NAME,
                    expected: T::SIZE,
                    actual: len
                }
            );
            assert_eq!(T::read_exact(&bytes[..len]).unwrap_err(), err);
            let mut short = [0x55u8; 64];
            assert_eq!(v.write_to_guest(&mut short[..len]), Err(err));
            assert!(short.iter().all(|&b| b == 0x55), "nothing written");
        }
        assert_eq!(evtchnop_arg_size(T::CMD), Some(T::SIZE));
        assert_eq!(evtchnop_name(T::CMD), Some(T::NAME));
    }

    /// Little-endian bytes of a sequence of fields, for building guest
    /// buffers by hand at the header's offsets.
    struct Buf<const N: usize>([u8; N]);
    impl<const N: usize> Buf<N> {
        fn new() -> Self {
            Self([0; N])
        }
        fn u8(mut self, off: usize, v: u8) -> Self {
            self.0[off] = v;
            self
        }
        fn u16(mut self, off: usize, v: u16) -> Self {
            self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn u32(mut self, off: usize, v: u32) -> Self {
            self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(mut self, off: usize, v: u64) -> Self {
            self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
            self
        }
    }

    // Command numbers: xen/include/public/event_channel.h (reset_cont is
    // under __XEN__ there).
    #[test]
    fn command_numbers() {
        assert_eq!(EVTCHNOP_bind_interdomain, 0);
        assert_eq!(EVTCHNOP_bind_virq, 1);
        assert_eq!(EVTCHNOP_bind_pirq, 2);
        assert_eq!(EVTCHNOP_close, 3);
        assert_eq!(EVTCHNOP_send, 4);
        assert_eq!(EVTCHNOP_status, 5);
        assert_eq!(EVTCHNOP_alloc_unbound, 6);
        assert_eq!(EVTCHNOP_bind_ipi, 7);
        assert_eq!(EVTCHNOP_bind_vcpu, 8);
        assert_eq!(EVTCHNOP_unmask, 9);
        assert_eq!(EVTCHNOP_reset, 10);
        assert_eq!(EVTCHNOP_init_control, 11);
        assert_eq!(EVTCHNOP_expand_array, 12);
        assert_eq!(EVTCHNOP_set_priority, 13);
        assert_eq!(EVTCHNOP_reset_cont, 14);
        assert_eq!(BIND_PIRQ__WILL_SHARE, 1);
        assert_eq!(EVTCHNSTAT_closed, 0);
        assert_eq!(EVTCHNSTAT_unbound, 1);
        assert_eq!(EVTCHNSTAT_interdomain, 2);
        assert_eq!(EVTCHNSTAT_pirq, 3);
        assert_eq!(EVTCHNSTAT_virq, 4);
        assert_eq!(EVTCHNSTAT_ipi, 5);
    }

    #[test]
    fn name_and_size_tables() {
        for cmd in 0..=14u32 {
            let name = evtchnop_name(cmd).unwrap();
            assert!(name.starts_with("EVTCHNOP_"));
            assert!(evtchnop_arg_size(cmd).is_some());
        }
        for cmd in [15u32, 16, 100, u32::MAX] {
            assert_eq!(evtchnop_name(cmd), None);
            assert_eq!(evtchnop_arg_size(cmd), None);
        }
        assert_eq!(evtchnop_arg_size(EVTCHNOP_reset_cont), Some(2));
        assert_eq!(EvtchnReset::CMD, EVTCHNOP_reset);
    }

    // Every layout number below was obtained by compiling
    // xen/include/public/event_channel.h (x86_64, i386 and Arm); the structs
    // are the same on all three except the u64 alignment noted.

    #[test]
    fn alloc_unbound_layout() {
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(align_of::<EvtchnAllocUnbound>(), 4);
        assert_eq!(offset_of!(EvtchnAllocUnbound, dom), 0);
        assert_eq!(offset_of!(EvtchnAllocUnbound, remote_dom), 2);
        assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
        let b = Buf::<8>::new().u16(0, 0x7FF0).u16(2, 5).u32(4, 77);
        round_trip::<EvtchnAllocUnbound>(&b.0, |v| {
            assert_eq!(
                *v,
                EvtchnAllocUnbound {
                    dom: 0x7FF0,
                    remote_dom: 5,
                    port: 77
                }
            );
        });
    }

    #[test]
    fn bind_interdomain_layout() {
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
        assert_eq!(align_of::<EvtchnBindInterdomain>(), 4);
        assert_eq!(offset_of!(EvtchnBindInterdomain, remote_dom), 0);
        assert_eq!(offset_of!(EvtchnBindInterdomain, _pad0), 2);
        assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
        assert_eq!(offset_of!(EvtchnBindInterdomain, local_port), 8);
        assert_eq!(EvtchnBindInterdomain::default()._pad0, [0, 0]);
        assert_eq!(EvtchnBindInterdomain::new(3, 9)._pad0, [0, 0]);
        // Guest garbage in the padding survives the round trip.
        let b = Buf::<12>::new()
            .u16(0, 3)
            .u8(2, 0xAB)
            .u8(3, 0xCD)
            .u32(4, 9)
            .u32(8, 41);
        round_trip::<EvtchnBindInterdomain>(&b.0, |v| {
            assert_eq!(v.remote_dom, 3);
            assert_eq!(v._pad0, [0xAB, 0xCD]);
            assert_eq!(v.remote_port, 9);
            assert_eq!(v.local_port, 41);
        });
    }

    #[test]
    fn bind_virq_layout() {
        assert_eq!(size_of::<EvtchnBindVirq>(), 12);
        assert_eq!(align_of::<EvtchnBindVirq>(), 4);
        assert_eq!(offset_of!(EvtchnBindVirq, virq), 0);
        assert_eq!(offset_of!(EvtchnBindVirq, vcpu), 4);
        assert_eq!(offset_of!(EvtchnBindVirq, port), 8);
        let b = Buf::<12>::new().u32(0, 3).u32(4, 0).u32(8, 12);
        round_trip::<EvtchnBindVirq>(&b.0, |v| {
            assert_eq!(
                *v,
                EvtchnBindVirq {
                    virq: 3,
                    vcpu: 0,
                    port: 12
                }
            );
        });
    }

    #[test]
    fn bind_pirq_layout() {
        assert_eq!(size_of::<EvtchnBindPirq>(), 12);
        assert_eq!(align_of::<EvtchnBindPirq>(), 4);
        assert_eq!(offset_of!(EvtchnBindPirq, pirq), 0);
        assert_eq!(offset_of!(EvtchnBindPirq, flags), 4);
        assert_eq!(offset_of!(EvtchnBindPirq, port), 8);
        let b = Buf::<12>::new()
            .u32(0, 33)
            .u32(4, BIND_PIRQ__WILL_SHARE)
            .u32(8, 6);
        round_trip::<EvtchnBindPirq>(&b.0, |v| {
            assert_eq!(
                *v,
                EvtchnBindPirq {
                    pirq: 33,
                    flags: 1,
                    port: 6
                }
            );
        });
    }

    #[test]
    fn bind_ipi_layout() {
        assert_eq!(size_of::<EvtchnBindIpi>(), 8);
        assert_eq!(align_of::<EvtchnBindIpi>(), 4);
        assert_eq!(offset_of!(EvtchnBindIpi, vcpu), 0);
        assert_eq!(offset_of!(EvtchnBindIpi, port), 4);
        let b = Buf::<8>::new().u32(0, 2).u32(4, 19);
        round_trip::<EvtchnBindIpi>(&b.0, |v| {
            assert_eq!(*v, EvtchnBindIpi { vcpu: 2, port: 19 });
        });
    }

    #[test]
    fn close_send_unmask_layout() {
        assert_eq!(size_of::<EvtchnClose>(), 4);
        assert_eq!(align_of::<EvtchnClose>(), 4);
        assert_eq!(offset_of!(EvtchnClose, port), 0);
        assert_eq!(size_of::<EvtchnSend>(), 4);
        assert_eq!(align_of::<EvtchnSend>(), 4);
        assert_eq!(offset_of!(EvtchnSend, port), 0);
        assert_eq!(size_of::<EvtchnUnmask>(), 4);
        assert_eq!(align_of::<EvtchnUnmask>(), 4);
        assert_eq!(offset_of!(EvtchnUnmask, port), 0);
        let b = Buf::<4>::new().u32(0, 0x0001_0203);
        round_trip::<EvtchnClose>(&b.0, |v| assert_eq!(v.port, 0x0001_0203));
        round_trip::<EvtchnSend>(&b.0, |v| assert_eq!(v.port, 0x0001_0203));
        round_trip::<EvtchnUnmask>(&b.0, |v| assert_eq!(v.port, 0x0001_0203));
    }

    #[test]
    fn status_layout() {
        assert_eq!(size_of::<EvtchnStatus>(), 24);
        assert_eq!(align_of::<EvtchnStatus>(), 4);
        assert_eq!(offset_of!(EvtchnStatus, dom), 0);
        assert_eq!(offset_of!(EvtchnStatus, _pad0), 2);
        assert_eq!(offset_of!(EvtchnStatus, port), 4);
        assert_eq!(offset_of!(EvtchnStatus, status), 8);
        assert_eq!(offset_of!(EvtchnStatus, vcpu), 12);
        // u at 16; u.unbound.dom / u.interdomain.dom / u.pirq / u.virq at 16,
        // u.interdomain.port at 20.
        assert_eq!(offset_of!(EvtchnStatus, u), 16);
        assert_eq!(EVTCHN_STATUS_UNION_SIZE, 8);
        let b = Buf::<24>::new()
            .u16(0, 0x7FF0)
            .u32(4, 8)
            .u32(8, EVTCHNSTAT_interdomain)
            .u32(12, 1)
            .u16(16, 4)
            .u32(20, 31);
        round_trip::<EvtchnStatus>(&b.0, |v| {
            assert_eq!(v.dom, 0x7FF0);
            assert_eq!(v.port, 8);
            assert_eq!(v.status, EVTCHNSTAT_interdomain);
            assert_eq!(v.vcpu, 1);
            assert_eq!(v.interdomain(), (4, 31));
        });
    }

    #[test]
    fn status_union_accessors() {
        let mut s = EvtchnStatus::new(1, 2);
        assert_eq!(s.u, [0; 8]);

        s.set_unbound_dom(0x1234);
        assert_eq!(s.unbound_dom(), 0x1234);
        assert_eq!(s.u, [0x34, 0x12, 0, 0, 0, 0, 0, 0]);

        s.u = [0xFF; 8];
        s.set_interdomain(0x0102, 0x0A0B_0C0D);
        assert_eq!(s.interdomain(), (0x0102, 0x0A0B_0C0D));
        // Bytes 2..4 (the member's padding) are left alone.
        assert_eq!(s.u, [0x02, 0x01, 0xFF, 0xFF, 0x0D, 0x0C, 0x0B, 0x0A]);

        s.u = [0; 8];
        s.set_pirq(0xDEAD_BEEF);
        assert_eq!(s.pirq(), 0xDEAD_BEEF);
        assert_eq!(s.virq(), 0xDEAD_BEEF, "pirq and virq share bytes");
        assert_eq!(s.u, [0xEF, 0xBE, 0xAD, 0xDE, 0, 0, 0, 0]);

        s.set_virq(13);
        assert_eq!(s.virq(), 13);
        assert_eq!(s.u[..4], [13, 0, 0, 0]);

        // The accessors agree with the struct's byte image at the header's
        // offsets.
        let mut s = EvtchnStatus::default();
        s.set_interdomain(7, 99);
        let bytes = s.as_bytes();
        assert_eq!(&bytes[16..18], &7u16.to_le_bytes());
        assert_eq!(&bytes[20..24], &99u32.to_le_bytes());

        // Untouched fields keep their values.
        let s2 = EvtchnStatus::read_from_guest(bytes).unwrap();
        assert_eq!(s2.interdomain(), (7, 99));
    }

    #[test]
    fn bind_vcpu_layout() {
        assert_eq!(size_of::<EvtchnBindVcpu>(), 8);
        assert_eq!(align_of::<EvtchnBindVcpu>(), 4);
        assert_eq!(offset_of!(EvtchnBindVcpu, port), 0);
        assert_eq!(offset_of!(EvtchnBindVcpu, vcpu), 4);
        let b = Buf::<8>::new().u32(0, 5).u32(4, 3);
        round_trip::<EvtchnBindVcpu>(&b.0, |v| {
            assert_eq!(*v, EvtchnBindVcpu { port: 5, vcpu: 3 });
        });
    }

    #[test]
    fn reset_layout() {
        assert_eq!(size_of::<EvtchnReset>(), 2);
        assert_eq!(align_of::<EvtchnReset>(), 2);
        assert_eq!(offset_of!(EvtchnReset, dom), 0);
        let b = Buf::<2>::new().u16(0, 0x7FF0);
        round_trip::<EvtchnReset>(&b.0, |v| assert_eq!(v.dom, 0x7FF0));
    }

    #[test]
    fn init_control_layout() {
        assert_eq!(size_of::<EvtchnInitControl>(), 24);
        // 8 on x86_64 and Arm; a 32-bit x86 guest aligns it to 4.
        assert_eq!(align_of::<EvtchnInitControl>(), align_of::<u64>());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(align_of::<EvtchnInitControl>(), 8);
        assert_eq!(offset_of!(EvtchnInitControl, control_gfn), 0);
        assert_eq!(offset_of!(EvtchnInitControl, offset), 8);
        assert_eq!(offset_of!(EvtchnInitControl, vcpu), 12);
        assert_eq!(offset_of!(EvtchnInitControl, link_bits), 16);
        assert_eq!(offset_of!(EvtchnInitControl, _pad), 17);
        let b = Buf::<24>::new()
            .u64(0, 0x0000_0012_3456_789A)
            .u32(8, 64)
            .u32(12, 3)
            .u8(16, 17)
            .u8(23, 0x99);
        round_trip::<EvtchnInitControl>(&b.0, |v| {
            assert_eq!(v.control_gfn, 0x0000_0012_3456_789A);
            assert_eq!(v.offset, 64);
            assert_eq!(v.vcpu, 3);
            assert_eq!(v.link_bits, 17);
            assert_eq!(v._pad, [0, 0, 0, 0, 0, 0, 0x99]);
        });
        // Parsing works from an odd (unaligned) address too.
        let mut odd = [0u8; 25];
        odd[1..].copy_from_slice(&b.0);
        assert_eq!(
            EvtchnInitControl::read_from_guest(&odd[1..])
                .unwrap()
                .control_gfn,
            0x0000_0012_3456_789A
        );
    }

    #[test]
    fn expand_array_layout() {
        assert_eq!(size_of::<EvtchnExpandArray>(), 8);
        assert_eq!(align_of::<EvtchnExpandArray>(), align_of::<u64>());
        assert_eq!(offset_of!(EvtchnExpandArray, array_gfn), 0);
        let b = Buf::<8>::new().u64(0, 0xFEDC_BA98_7654_3210);
        round_trip::<EvtchnExpandArray>(&b.0, |v| assert_eq!(v.array_gfn, 0xFEDC_BA98_7654_3210));
    }

    #[test]
    fn set_priority_layout() {
        assert_eq!(size_of::<EvtchnSetPriority>(), 8);
        assert_eq!(align_of::<EvtchnSetPriority>(), 4);
        assert_eq!(offset_of!(EvtchnSetPriority, port), 0);
        assert_eq!(offset_of!(EvtchnSetPriority, priority), 4);
        let b = Buf::<8>::new().u32(0, 100).u32(4, 15);
        round_trip::<EvtchnSetPriority>(&b.0, |v| {
            assert_eq!(
                *v,
                EvtchnSetPriority {
                    port: 100,
                    priority: 15
                }
            );
        });
    }

    #[test]
    fn evtchn_op_layout() {
        // struct evtchn_op: 28 bytes, alignment 4, u at 4 (compiled header).
        assert_eq!(size_of::<EvtchnOp>(), 28);
        assert_eq!(align_of::<EvtchnOp>(), 4);
        assert_eq!(offset_of!(EvtchnOp, cmd), 0);
        assert_eq!(offset_of!(EvtchnOp, u), 4);
        // The union is as large as its largest member.
        let largest = [
            size_of::<EvtchnAllocUnbound>(),
            size_of::<EvtchnBindInterdomain>(),
            size_of::<EvtchnBindVirq>(),
            size_of::<EvtchnBindPirq>(),
            size_of::<EvtchnBindIpi>(),
            size_of::<EvtchnClose>(),
            size_of::<EvtchnSend>(),
            size_of::<EvtchnStatus>(),
            size_of::<EvtchnBindVcpu>(),
            size_of::<EvtchnUnmask>(),
        ]
        .into_iter()
        .max();
        assert_eq!(largest, Some(EVTCHN_OP_UNION_SIZE));

        let b = Buf::<28>::new()
            .u32(0, EVTCHNOP_bind_virq)
            .u32(4, 0)
            .u32(8, 2)
            .u32(12, 9);
        let op = EvtchnOp::read_from_guest(&b.0).unwrap();
        assert_eq!(op.cmd, EVTCHNOP_bind_virq);
        assert_eq!(
            op.arg::<EvtchnBindVirq>(),
            Some(EvtchnBindVirq {
                virq: 0,
                vcpu: 2,
                port: 9
            })
        );
        assert_eq!(op.arg::<EvtchnSend>(), None);
        assert_eq!(EvtchnOp::read_exact(&b.0), Ok(op));
        let mut out = [0u8; 40];
        op.write_to_guest(&mut out).unwrap();
        assert_eq!(&out[..28], &b.0);
        let err = EvtchnOp::read_from_guest(&b.0[..27]).unwrap_err();
        assert_eq!(
            err,
            AbiError {
                name: "evtchn_op",
                expected: 28,
                actual: 27
            }
        );
        assert_eq!(
            EvtchnOp::write_to_guest(&op, &mut out[..3]),
            Err(AbiError {
                name: "evtchn_op",
                expected: 28,
                actual: 3
            })
        );
    }

    #[test]
    fn evtchn_op_write_arg_keeps_tail() {
        let mut op = EvtchnOp {
            cmd: EVTCHNOP_alloc_unbound,
            u: [0xAA; 24],
        };
        op.write_arg(&EvtchnAllocUnbound {
            dom: 1,
            remote_dom: 2,
            port: 3,
        });
        assert_eq!(op.cmd, EVTCHNOP_alloc_unbound);
        assert_eq!(&op.u[..8], &[1, 0, 2, 0, 3, 0, 0, 0]);
        assert!(op.u[8..].iter().all(|&b| b == 0xAA));

        let fresh = EvtchnOp::new(&EvtchnStatus::new(0x7FF0, 1));
        assert_eq!(fresh.cmd, EVTCHNOP_status);
        assert_eq!(
            fresh.arg::<EvtchnStatus>(),
            Some(EvtchnStatus::new(0x7FF0, 1))
        );
        // Every command can be carried (the union is large enough), even
        // though Xen serves only 0..=9 this way.
        let ic = EvtchnOp::new(&EvtchnInitControl::new(5, 8, 1));
        assert_eq!(
            ic.arg::<EvtchnInitControl>(),
            Some(EvtchnInitControl::new(5, 8, 1))
        );
        for cmd in 0..=9 {
            assert!(evtchnop_in_compat_union(cmd));
        }
        for cmd in 10..=14 {
            assert!(!evtchnop_in_compat_union(cmd));
        }
    }

    #[test]
    fn abi_error_display() {
        let short = AbiError {
            name: "EVTCHNOP_send",
            expected: 4,
            actual: 2,
        };
        assert_eq!(
            short.to_string(),
            "EVTCHNOP_send argument needs 4 bytes, got 2"
        );
        let long = AbiError {
            name: "EVTCHNOP_send",
            expected: 4,
            actual: 6,
        };
        assert_eq!(
            long.to_string(),
            "EVTCHNOP_send argument must be exactly 4 bytes, got 6"
        );
    }

    #[test]
    fn constructors_zero_out_fields() {
        assert_eq!(
            EvtchnAllocUnbound::new(1, 2),
            EvtchnAllocUnbound {
                dom: 1,
                remote_dom: 2,
                port: 0
            }
        );
        assert_eq!(EvtchnBindInterdomain::new(1, 2).local_port, 0);
        assert_eq!(EvtchnBindVirq::new(1, 2).port, 0);
        assert_eq!(EvtchnBindPirq::new(1, 2).port, 0);
        assert_eq!(EvtchnBindIpi::new(1).port, 0);
        assert_eq!(EvtchnInitControl::new(1, 2, 3).link_bits, 0);
        assert_eq!(EvtchnInitControl::new(1, 2, 3)._pad, [0; 7]);
        assert_eq!(
            EvtchnStatus::new(1, 2),
            EvtchnStatus {
                dom: 1,
                port: 2,
                ..Default::default()
            }
        );
        assert_eq!(EvtchnReset::new(4).dom, 4);
        assert_eq!(EvtchnExpandArray::new(4).array_gfn, 4);
        assert_eq!(EvtchnSetPriority::new(4, 5).priority, 5);
        assert_eq!(EvtchnBindVcpu::new(4, 5).vcpu, 5);
        assert_eq!(EvtchnClose::new(4).port, 4);
        assert_eq!(EvtchnSend::new(4).port, 4);
        assert_eq!(EvtchnUnmask::new(4).port, 4);
    }
}
