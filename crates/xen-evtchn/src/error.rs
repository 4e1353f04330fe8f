//! Errors: one variant per Xen errno, each carrying what exactly was wrong.
//!
//! A guest only ever sees the errno ([`Error::errno`], [`Error::as_hypercall_ret`]); the VMM
//! author sees the reason too, through `Display`.

use xen_evtchn_abi::{DomId, Errno, EvtchnPort};

/// What made an operation fail, in words a VMM author can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// No domain has this id (or it is being destroyed).
    #[error("no domain with id {0}")]
    NoSuchDomain(DomId),
    /// The domain id is already in use.
    #[error("domain {0} already exists")]
    DomainExists(DomId),
    /// The domain id is one of Xen's reserved ids (DOMID_SELF and above).
    #[error("domain id {0:#x} is reserved")]
    ReservedDomainId(DomId),
    /// The port number is beyond the domain's port table.
    #[error("port {0} is not valid in this domain")]
    PortNotValid(EvtchnPort),
    /// The port is free or reserved (port 0).
    #[error("port {0} is not bound")]
    PortNotBound(EvtchnPort),
    /// The port's state does not allow the operation.
    #[error("port {port} is in the wrong state for this operation ({state})")]
    WrongState {
        /// The port.
        port: EvtchnPort,
        /// Its current state, as Xen names it.
        state: &'static str,
    },
    /// The VCPU id is beyond the domain's VCPUs.
    #[error("vcpu {0} does not exist")]
    NoSuchVcpu(u32),
    /// The VIRQ number is not below NR_VIRQS.
    #[error("virq {0} does not exist")]
    VirqOutOfRange(u32),
    /// A global or per-domain VIRQ can only be bound on VCPU 0.
    #[error("virq {0} is not per-vcpu and must be bound on vcpu 0")]
    VirqNotPerVcpu(u32),
    /// Another domain handles this global VIRQ.
    #[error("global virq {0} is handled by another domain")]
    VirqHandledElsewhere(u32),
    /// The VIRQ is already bound on this VCPU.
    #[error("virq {virq} is already bound on vcpu {vcpu}")]
    VirqAlreadyBound {
        /// The VIRQ.
        virq: u32,
        /// The VCPU it is bound on.
        vcpu: u32,
    },
    /// The PIRQ number is not below the domain's PIRQ count.
    #[error("pirq {0} is out of range")]
    PirqOutOfRange(u32),
    /// The PIRQ is already bound to a port.
    #[error("pirq {0} is already bound")]
    PirqAlreadyBound(u32),
    /// The host refused to bind the physical IRQ.
    #[error("the host refused pirq {0}")]
    PirqRefused(u32),
    /// The remote port is not an unbound port offered to the caller.
    #[error("remote port {port} of domain {dom} is not offered to this domain")]
    RemoteNotOffered {
        /// Remote domain.
        dom: DomId,
        /// Remote port.
        port: EvtchnPort,
    },
    /// The interdomain peer changed while the close was waiting for its lock.
    #[error("the peer of port {0} changed during close")]
    PeerChanged(EvtchnPort),
    /// Every port up to the domain's limit is in use.
    #[error("no free port below the domain's limit")]
    NoFreePort,
    /// The domain is being destroyed.
    #[error("the domain is dying")]
    DomainDying,
    /// The caller may not act on that domain.
    #[error("domain {caller} may not act on domain {target}")]
    NotPermitted {
        /// The calling domain.
        caller: DomId,
        /// The domain it tried to act on.
        target: DomId,
    },
    /// Resetting another domain requires it to be paused.
    #[error("domain {0} must be paused to be reset by another domain")]
    TargetNotPaused(DomId),
    /// A reset of this domain is already running (or none is, for a continuation).
    #[error("a reset is {0}")]
    ResetState(&'static str),
    /// New channels were bound while the reset was running.
    #[error("ports were bound during the reset")]
    BoundDuringReset,
    /// The operation needs the FIFO ABI.
    #[error("the domain does not use the FIFO ABI")]
    NotFifo,
    /// The operation is not available in the current ABI.
    #[error("{0} is not supported by the current ABI")]
    NotSupportedByAbi(&'static str),
    /// The priority is above EVTCHN_FIFO_PRIORITY_MIN.
    #[error("priority {0} is out of range")]
    PriorityOutOfRange(u32),
    /// A guest frame could not be mapped.
    #[error("guest frame {0:#x} cannot be mapped")]
    BadFrame(u64),
    /// An offset inside a guest page is out of range or misaligned.
    #[error("offset {0:#x} is out of range or misaligned")]
    BadOffset(u32),
    /// The control block of this VCPU is already registered.
    #[error("vcpu {0} already has a control block")]
    ControlBlockExists(u32),
    /// The event array already has its maximum number of pages.
    #[error("the event array is full")]
    EventArrayFull,
    /// The vcpu_info of this VCPU is already registered.
    #[error("vcpu {0} already has a registered vcpu_info")]
    VcpuInfoExists(u32),
    /// The hypercall argument buffer is shorter than the command's struct.
    #[error("argument buffer of {actual} bytes, {expected} needed")]
    ShortBuffer {
        /// Bytes the command needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The EVTCHNOP command number is unknown.
    #[error("unknown EVTCHNOP command {0}")]
    UnknownCommand(u32),
    /// The configuration given by the VMM is invalid.
    #[error("invalid configuration: {0}")]
    BadConfig(&'static str),
    /// A host allocation failed.
    #[error("out of memory")]
    OutOfMemory,
}

/// An event channel error: the errno Xen returns, with the reason.
///
/// Each variant maps to exactly one Xen errno ([`Error::errno`]).
///
/// ```
/// use xen_evtchn::{Error, Reason};
/// use xen_evtchn_abi::Errno;
///
/// let e = Error::Inval(Reason::PortNotValid(5000));
/// assert_eq!(e.errno(), Errno::EINVAL);
/// assert_eq!(e.as_hypercall_ret(), -22);
/// assert_eq!(e.to_string(), "EINVAL: port 5000 is not valid in this domain");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// EPERM: not permitted.
    #[error("EPERM: {0}")]
    Perm(Reason),
    /// ENOENT: no such VCPU.
    #[error("ENOENT: {0}")]
    NoEnt(Reason),
    /// ESRCH: no such domain.
    #[error("ESRCH: {0}")]
    Srch(Reason),
    /// EAGAIN: try again.
    #[error("EAGAIN: {0}")]
    Again(Reason),
    /// ENOMEM: out of host memory.
    #[error("ENOMEM: {0}")]
    NoMem(Reason),
    /// EACCES: the channel cannot be used for this.
    #[error("EACCES: {0}")]
    Acces(Reason),
    /// EFAULT: bad guest buffer.
    #[error("EFAULT: {0}")]
    Fault(Reason),
    /// EBUSY: resource busy.
    #[error("EBUSY: {0}")]
    Busy(Reason),
    /// EEXIST: already bound.
    #[error("EEXIST: {0}")]
    Exist(Reason),
    /// EINVAL: invalid argument or state.
    #[error("EINVAL: {0}")]
    Inval(Reason),
    /// ENOSPC: no free port / array full.
    #[error("ENOSPC: {0}")]
    NoSpc(Reason),
    /// ENOSYS: operation not implemented (unknown command, or set_priority on 2-level).
    #[error("ENOSYS: {0}")]
    NoSys(Reason),
    /// EOPNOTSUPP: operation not supported in this configuration.
    #[error("EOPNOTSUPP: {0}")]
    OpNotSupp(Reason),
}

impl Error {
    /// The Xen errno a guest sees.
    pub const fn errno(&self) -> Errno {
        match self {
            Error::Perm(_) => Errno::EPERM,
            Error::NoEnt(_) => Errno::ENOENT,
            Error::Srch(_) => Errno::ESRCH,
            Error::Again(_) => Errno::EAGAIN,
            Error::NoMem(_) => Errno::ENOMEM,
            Error::Acces(_) => Errno::EACCES,
            Error::Fault(_) => Errno::EFAULT,
            Error::Busy(_) => Errno::EBUSY,
            Error::Exist(_) => Errno::EEXIST,
            Error::Inval(_) => Errno::EINVAL,
            Error::NoSpc(_) => Errno::ENOSPC,
            Error::NoSys(_) => Errno::ENOSYS,
            Error::OpNotSupp(_) => Errno::EOPNOTSUPP,
        }
    }

    /// The reason behind the errno.
    pub const fn reason(&self) -> Reason {
        match *self {
            Error::Perm(r)
            | Error::NoEnt(r)
            | Error::Srch(r)
            | Error::Again(r)
            | Error::NoMem(r)
            | Error::Acces(r)
            | Error::Fault(r)
            | Error::Busy(r)
            | Error::Exist(r)
            | Error::Inval(r)
            | Error::NoSpc(r)
            | Error::NoSys(r)
            | Error::OpNotSupp(r) => r,
        }
    }

    /// The hypercall return value: `-errno`.
    pub const fn as_hypercall_ret(&self) -> i64 {
        self.errno().as_hypercall_ret()
    }
}

/// Result of an event channel operation.
pub type Result<T> = std::result::Result<T, Error>;

/// The variant for an errno chosen by the host (a [`PirqHost`](crate::PirqHost) refusal);
/// errnos with no variant of their own become EINVAL.
pub(crate) fn from_errno(errno: Errno, reason: Reason) -> Error {
    match errno {
        Errno::EPERM => Error::Perm(reason),
        Errno::ENOENT => Error::NoEnt(reason),
        Errno::ESRCH => Error::Srch(reason),
        Errno::EAGAIN => Error::Again(reason),
        Errno::ENOMEM => Error::NoMem(reason),
        Errno::EACCES => Error::Acces(reason),
        Errno::EFAULT => Error::Fault(reason),
        Errno::EBUSY => Error::Busy(reason),
        Errno::EEXIST => Error::Exist(reason),
        Errno::ENOSPC => Error::NoSpc(reason),
        Errno::ENOSYS => Error::NoSys(reason),
        Errno::EOPNOTSUPP => Error::OpNotSupp(reason),
        _ => Error::Inval(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_own_errno() {
        let r = Reason::NoFreePort;
        let all = [
            (Error::Perm(r), 1),
            (Error::NoEnt(r), 2),
            (Error::Srch(r), 3),
            (Error::Again(r), 11),
            (Error::NoMem(r), 12),
            (Error::Acces(r), 13),
            (Error::Fault(r), 14),
            (Error::Busy(r), 16),
            (Error::Exist(r), 17),
            (Error::Inval(r), 22),
            (Error::NoSpc(r), 28),
            (Error::NoSys(r), 38),
            (Error::OpNotSupp(r), 95),
        ];
        for (e, n) in all {
            assert_eq!(e.errno().as_raw(), n, "{e}");
            assert_eq!(e.as_hypercall_ret(), -(n as i64));
            assert_eq!(e.reason(), r);
            assert_eq!(from_errno(e.errno(), r), e);
        }
        assert_eq!(from_errno(Errno::EIO, r), Error::Inval(r));
    }
}
