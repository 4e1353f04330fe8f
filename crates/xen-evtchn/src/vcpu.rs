//! A VCPU as event delivery sees it: where its vcpu_info is, its VIRQ map, its upcall flag.

use xen_evtchn_abi::{DomId, NR_VIRQS, TwoLevelLayout};

use crate::bitops;
use crate::guest_memory::{GuestPage, RcuArc};
use crate::host::UpcallSink;
use crate::sync::rcu::RcuGuard;
use crate::sync::{Arc, AtomicU32};

/// Where a VCPU's `vcpu_info` lives: a slot of shared_info, a page the guest registered, or
/// (for a VCPU beyond shared_info's legacy slots that registered nothing yet) a private page.
#[derive(Debug)]
pub(crate) struct VcpuInfoLocation {
    pub(crate) page: GuestPage,
    pub(crate) offset: usize,
    /// True once the guest registered it (VCPUOP_register_vcpu_info).
    pub(crate) registered: bool,
    /// Index in `page` of the 32-bit word holding `evtchn_upcall_pending`.
    upcall_word: usize,
    /// Bit of `evtchn_upcall_pending`'s bit 0 within that word (little-endian).
    upcall_bit: u32,
    /// Index in `page` of the first 32-bit word of `evtchn_pending_sel`.
    pending_sel: usize,
}

impl VcpuInfoLocation {
    /// The vcpu_info at byte `offset` of `page`, laid out as `layout` says.
    pub(crate) fn new(
        page: GuestPage,
        offset: usize,
        registered: bool,
        layout: &TwoLevelLayout,
    ) -> Self {
        let upcall = offset + layout.upcall_pending_offset;
        VcpuInfoLocation {
            page,
            offset,
            registered,
            // The flag is a byte; Xen sets it with a bit instruction on the word around it,
            // and so do we: one `lock bts` instead of a byte compare-exchange loop.
            upcall_word: upcall / 4,
            upcall_bit: (upcall % 4) as u32 * 8,
            pending_sel: (offset + layout.pending_sel_offset) / 4,
        }
    }
}

/// Per-VCPU event state.
pub(crate) struct Vcpu {
    pub(crate) id: u32,
    pub(crate) domid: DomId,
    pub(crate) vcpu_info: RcuArc<VcpuInfoLocation>,
    /// VIRQ → port (0: not bound). Global and per-domain VIRQs use VCPU 0's map.
    pub(crate) virq_to_port: [AtomicU32; NR_VIRQS as usize],
    upcall: Arc<dyn UpcallSink>,
}

impl Vcpu {
    pub(crate) fn new(
        id: u32,
        domid: DomId,
        layout: TwoLevelLayout,
        shared_info: &GuestPage,
        upcall: Arc<dyn UpcallSink>,
    ) -> Self {
        let location = match layout.vcpu_info_offset(id) {
            Some(offset) => VcpuInfoLocation::new(shared_info.clone(), offset, false, &layout),
            None => VcpuInfoLocation::new(GuestPage::new_zeroed(), 0, false, &layout),
        };
        Vcpu {
            id,
            domid,
            vcpu_info: RcuArc::new(Some(Arc::new(location))),
            virq_to_port: std::array::from_fn(|_| AtomicU32::new(0)),
            upcall,
        }
    }

    /// Xen's "mark events pending": test-and-set bit 0 of `evtchn_upcall_pending`; only on its
    /// 0 → 1 edge is the VMM asked to deliver the upcall.
    #[inline]
    pub(crate) fn mark_events_pending(&self, guard: &RcuGuard) {
        if let Some(info) = self.vcpu_info.load(guard) {
            self.mark_events_pending_at(info);
        }
    }

    #[inline(always)]
    fn mark_events_pending_at(&self, info: &VcpuInfoLocation) {
        if let Some(word) = info.page.words32().get(info.upcall_word) {
            if !bitops::test_and_set(word, info.upcall_bit) {
                self.upcall.upcall(self.domid, self.id);
            }
        }
    }

    /// The 2-level notification: test-and-set selector bit `selector` of
    /// `evtchn_pending_sel` and, if it was clear, mark events pending. One load of the
    /// vcpu_info location serves both steps.
    #[inline]
    pub(crate) fn notify_selector(&self, selector: u32, guard: &RcuGuard) {
        let Some(info) = self.vcpu_info.load(guard) else {
            return;
        };
        let Some(word) = info
            .page
            .words32()
            .get(info.pending_sel + (selector / 32) as usize)
        else {
            return;
        };
        if !bitops::test_and_set(word, selector) {
            self.mark_events_pending_at(info);
        }
    }
}
