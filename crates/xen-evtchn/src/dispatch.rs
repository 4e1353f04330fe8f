//! The raw hypercall entry: guest argument bytes → typed operation → bytes back.
//!
//! Xen's `do_event_channel_op` reads the command's argument struct from the guest, runs the
//! operation, and copies the struct back only if the operation succeeded and has OUT fields.
//! A buffer too short for the struct gives EFAULT (Xen's failed copy from guest memory); an
//! unknown command gives ENOSYS.

// Xen's command names are matched as written in its headers.
#![allow(non_upper_case_globals)]

use xen_evtchn_abi::{
    DomId, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi,
    EVTCHNOP_bind_pirq, EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close,
    EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_reset, EVTCHNOP_reset_cont,
    EVTCHNOP_send, EVTCHNOP_set_priority, EVTCHNOP_status, EVTCHNOP_unmask, EvtchnAllocUnbound,
    EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOpArg, EvtchnReset, EvtchnSend,
    EvtchnSetPriority, EvtchnStatus, EvtchnUnmask,
};

use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::host::UpcallSink;
use crate::ops::PortStatus;

/// Reads a command's argument struct from the front of the guest buffer.
#[inline(always)]
fn arg<T: EvtchnOpArg>(args: &[u8]) -> Result<T> {
    T::read_from_guest(args).map_err(|e| {
        Error::Fault(Reason::ShortBuffer {
            expected: e.expected,
            actual: e.actual,
        })
    })
}

/// Writes a command's argument struct back (OUT fields); a failure is EFAULT and, as in Xen,
/// does not undo the operation.
fn out<T: EvtchnOpArg>(value: &T, args: &mut [u8]) -> Result<()> {
    value.write_to_guest(args).map_err(|e| {
        Error::Fault(Reason::ShortBuffer {
            expected: e.expected,
            actual: e.actual,
        })
    })
}

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `HYPERVISOR_event_channel_op(cmd, args)` issued by VCPU `vcpu` of domain `caller`.
    ///
    /// `args` is the command's argument struct as the guest laid it out (at least its size;
    /// extra bytes are ignored). OUT fields are written back into `args` on success. Returns
    /// 0 or a negative Xen errno, ready to put in the guest's return register. Never panics,
    /// whatever the bytes.
    ///
    /// ```
    /// use xen_evtchn::{DomainConfig, EventChannels};
    /// use xen_evtchn::abi::{EVTCHNOP_bind_ipi, EvtchnBindIpi, EvtchnOpArg};
    ///
    /// let ec = EventChannels::new();
    /// ec.create_domain(1, DomainConfig::new(2, |_, _| {})).unwrap();
    /// let mut args = [0u8; 8];
    /// EvtchnBindIpi::new(1).write_to_guest(&mut args).unwrap();
    /// assert_eq!(ec.hypercall(1, 0, EVTCHNOP_bind_ipi, &mut args), 0);
    /// assert_eq!(EvtchnBindIpi::read_from_guest(&args).unwrap().port, 1);
    /// // A 2-byte buffer cannot hold the struct: -EFAULT.
    /// assert_eq!(ec.hypercall(1, 0, EVTCHNOP_bind_ipi, &mut args[..2]), -14);
    /// ```
    #[inline(always)]
    pub fn hypercall(&self, caller: DomId, vcpu: u32, cmd: u32, args: &mut [u8]) -> i64 {
        // EVTCHNOP_send, the hot one, is handled inline (it has no OUT field); every other
        // command goes through the out-of-line dispatch.
        let result = if cmd == EVTCHNOP_send {
            match arg::<EvtchnSend>(args) {
                Ok(a) => self.send(caller, a.port),
                Err(e) => Err(e),
            }
        } else {
            self.dispatch_cold(caller, vcpu, cmd, args)
        };
        match result {
            Ok(()) => 0,
            Err(e) => e.as_hypercall_ret(),
        }
    }

    /// The dispatch of every command, kept out of line so that inlining `hypercall` into a
    /// VMM's trap handler only brings the send path with it.
    #[inline(never)]
    fn dispatch_cold(&self, caller: DomId, vcpu: u32, cmd: u32, args: &mut [u8]) -> Result<()> {
        self.dispatch(caller, vcpu, cmd, args)
    }

    /// As [`hypercall`](Self::hypercall), with the typed error (for the VMM's logs).
    pub fn dispatch(&self, caller: DomId, _vcpu: u32, cmd: u32, args: &mut [u8]) -> Result<()> {
        match cmd {
            EVTCHNOP_send => {
                let a: EvtchnSend = arg(args)?;
                self.send(caller, a.port)
            }
            EVTCHNOP_unmask => {
                let a: EvtchnUnmask = arg(args)?;
                self.unmask(caller, a.port)
            }
            EVTCHNOP_alloc_unbound => {
                let mut a: EvtchnAllocUnbound = arg(args)?;
                a.port = self.alloc_unbound(caller, a.dom, a.remote_dom)?;
                out(&a, args)
            }
            EVTCHNOP_bind_interdomain => {
                let mut a: EvtchnBindInterdomain = arg(args)?;
                a.local_port = self.bind_interdomain(caller, a.remote_dom, a.remote_port)?;
                out(&a, args)
            }
            EVTCHNOP_bind_virq => {
                let mut a: EvtchnBindVirq = arg(args)?;
                a.port = self.bind_virq(caller, a.virq, a.vcpu)?;
                out(&a, args)
            }
            EVTCHNOP_bind_pirq => {
                let mut a: EvtchnBindPirq = arg(args)?;
                a.port = self.bind_pirq(caller, a.pirq, a.flags)?;
                out(&a, args)
            }
            EVTCHNOP_bind_ipi => {
                let mut a: EvtchnBindIpi = arg(args)?;
                a.port = self.bind_ipi(caller, a.vcpu)?;
                out(&a, args)
            }
            EVTCHNOP_close => {
                let a: EvtchnClose = arg(args)?;
                self.close(caller, a.port)
            }
            EVTCHNOP_status => {
                let mut a: EvtchnStatus = arg(args)?;
                let s = self.status(caller, a.dom, a.port)?;
                a.status = s.status.code();
                a.vcpu = s.vcpu;
                match s.status {
                    PortStatus::Unbound { dom } => a.set_unbound_dom(dom),
                    PortStatus::Interdomain { dom, port } => a.set_interdomain(dom, port),
                    PortStatus::Pirq(p) => a.set_pirq(p),
                    PortStatus::Virq(v) => a.set_virq(v),
                    // Xen leaves the union as the caller passed it.
                    PortStatus::Closed | PortStatus::Ipi => {}
                }
                out(&a, args)
            }
            EVTCHNOP_bind_vcpu => {
                let a: EvtchnBindVcpu = arg(args)?;
                self.bind_vcpu(caller, a.port, a.vcpu)
            }
            EVTCHNOP_reset => {
                let a: EvtchnReset = arg(args)?;
                self.reset(caller, a.dom)
            }
            EVTCHNOP_reset_cont => {
                let a: EvtchnReset = arg(args)?;
                self.reset_cont(caller, a.dom)
            }
            EVTCHNOP_set_priority => {
                let a: EvtchnSetPriority = arg(args)?;
                self.set_priority(caller, a.port, a.priority)
            }
            EVTCHNOP_init_control => {
                let mut a: EvtchnInitControl = arg(args)?;
                a.link_bits = self.init_control(caller, a.control_gfn, a.offset, a.vcpu)? as u8;
                out(&a, args)
            }
            EVTCHNOP_expand_array => {
                let a: EvtchnExpandArray = arg(args)?;
                self.expand_array(caller, a.array_gfn)
            }
            _ => Err(Error::NoSys(Reason::UnknownCommand(cmd))),
        }
    }
}
