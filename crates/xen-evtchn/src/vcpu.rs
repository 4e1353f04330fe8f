//! A VCPU as event delivery sees it: where its vcpu_info is, its VIRQ map, its upcall flag.

use xen_evtchn_abi::{DomId, NR_VIRQS, TwoLevelLayout};

use crate::guest_memory::{GuestPage, RcuArc};
use crate::host::UpcallSink;
use crate::sync::rcu::RcuGuard;
use crate::sync::{Arc, AtomicU32, Ordering};

/// Where a VCPU's `vcpu_info` lives: a slot of shared_info, a page the guest registered, or
/// (for a VCPU beyond shared_info's legacy slots that registered nothing yet) a private page.
#[derive(Debug)]
pub(crate) struct VcpuInfoLocation {
    pub(crate) page: GuestPage,
    pub(crate) offset: usize,
    /// True once the guest registered it (VCPUOP_register_vcpu_info).
    pub(crate) registered: bool,
}

/// Per-VCPU event state.
pub(crate) struct Vcpu {
    pub(crate) id: u32,
    pub(crate) domid: DomId,
    layout: TwoLevelLayout,
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
            Some(offset) => VcpuInfoLocation {
                page: shared_info.clone(),
                offset,
                registered: false,
            },
            None => VcpuInfoLocation {
                page: GuestPage::new_zeroed(),
                offset: 0,
                registered: false,
            },
        };
        Vcpu {
            id,
            domid,
            layout,
            vcpu_info: RcuArc::new(Some(Arc::new(location))),
            virq_to_port: std::array::from_fn(|_| AtomicU32::new(0)),
            upcall,
        }
    }

    /// Xen's "mark events pending": test-and-set bit 0 of `evtchn_upcall_pending`; only on its
    /// 0 → 1 edge is the VMM asked to deliver the upcall.
    #[inline]
    pub(crate) fn mark_events_pending(&self, guard: &RcuGuard) {
        let Some(info) = self.vcpu_info.load(guard) else {
            return;
        };
        let Some(flag) = info
            .page
            .atomic_u8(info.offset + self.layout.upcall_pending_offset)
        else {
            return;
        };
        if flag.fetch_or(1, Ordering::SeqCst) & 1 == 0 {
            self.upcall.upcall(self.domid, self.id);
        }
    }

    /// Test-and-set of selector bit `bit` in `evtchn_pending_sel`; true if it was clear.
    #[inline]
    pub(crate) fn set_pending_sel(&self, bit: u32, guard: &RcuGuard) -> bool {
        let Some(info) = self.vcpu_info.load(guard) else {
            return false;
        };
        let Some(word) = info
            .page
            .atomic_u32(info.offset + self.layout.pending_sel_offset + (bit / 32) as usize * 4)
        else {
            return false;
        };
        let mask = 1u32 << (bit % 32);
        word.fetch_or(mask, Ordering::SeqCst) & mask == 0
    }
}
