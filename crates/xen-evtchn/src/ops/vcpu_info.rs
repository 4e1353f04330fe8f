//! VCPUOP_register_vcpu_info: moving a VCPU's vcpu_info out of shared_info.
//!
//! Not an EVTCHNOP, but event delivery writes `evtchn_upcall_pending` and
//! `evtchn_pending_sel` wherever the vcpu_info lives, so the library must know. Linux HVM
//! guests register one per VCPU at boot; VCPUs beyond shared_info's legacy slots have nowhere
//! to receive events until they do.

use xen_evtchn_abi::DomId;

use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::guest_memory::PAGE_SIZE;
use crate::host::UpcallSink;
use crate::sync::{Arc, Ordering, rcu};
use crate::vcpu::VcpuInfoLocation;

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `VCPUOP_register_vcpu_info`: VCPU `vcpu`'s vcpu_info now lives at byte `offset` of
    /// guest frame `gfn` (mapped through the domain's [`GuestMemory`](crate::GuestMemory)).
    ///
    /// The old contents are copied over and, as Xen does, every selector bit and the upcall
    /// flag are then set, so no event raised during the move is lost (the guest may see a
    /// spurious upcall).
    ///
    /// Errors: ESRCH (no such domain), ENOENT (no such VCPU), EINVAL (already registered,
    /// `offset` misaligned or too close to the end of the page, no guest memory, or a frame
    /// that cannot be mapped).
    pub fn register_vcpu_info(&self, domid: DomId, vcpu: u32, gfn: u64, offset: u32) -> Result<()> {
        let d = self.domain_arc(domid)?;
        let v = d.vcpu(vcpu).ok_or(Error::NoEnt(Reason::NoSuchVcpu(vcpu)))?;
        let size = d.layout.vcpu_info_size;
        if offset as usize > PAGE_SIZE - size || offset % 8 != 0 {
            return Err(Error::Inval(Reason::BadOffset(offset)));
        }
        let _el = d.lock.lock();
        let old = v.vcpu_info.load_arc();
        if old.as_ref().is_some_and(|o| o.registered) {
            return Err(Error::Inval(Reason::VcpuInfoExists(vcpu)));
        }
        let page = d
            .memory
            .as_ref()
            .ok_or(Error::Inval(Reason::BadFrame(gfn)))?
            .map_page(gfn)
            .map_err(|_| Error::Inval(Reason::BadFrame(gfn)))?;
        let offset = offset as usize;
        if let Some(old) = &old {
            for i in (0..size).step_by(4) {
                if let (Some(from), Some(to)) = (
                    old.page.atomic_u32(old.offset + i),
                    page.atomic_u32(offset + i),
                ) {
                    to.store(from.load(Ordering::SeqCst), Ordering::SeqCst);
                }
            }
        }
        v.vcpu_info.replace(Arc::new(VcpuInfoLocation {
            page: page.clone(),
            offset,
            registered: true,
        }));
        // Every sender now uses the new location; flag everything so nothing raised into the
        // old one during the move goes unseen.
        for w in 0..(d.layout.word_bits / 32) as usize {
            if let Some(sel) = page.atomic_u32(offset + d.layout.pending_sel_offset + w * 4) {
                sel.store(u32::MAX, Ordering::SeqCst);
            }
        }
        let guard = rcu::read();
        v.mark_events_pending(&guard);
        Ok(())
    }
}
