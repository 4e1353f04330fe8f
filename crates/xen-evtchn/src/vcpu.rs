//! A VCPU as event delivery sees it: where its vcpu_info is, its VIRQ map, its upcall flag.

use xen_evtchn_abi::{DomId, NR_VIRQS, TwoLevelLayout};

use crate::bitops;
use crate::guest_memory::{GuestPage, RcuWindow, WindowOwner, WindowView};
use crate::host::UpcallSink;
use crate::sync::rcu::RcuGuard;
use crate::sync::{Arc, AtomicU32};

/// Where a VCPU's `vcpu_info` lives: a slot of shared_info, a page the guest registered, or
/// (for a VCPU beyond shared_info's legacy slots that registered nothing yet) a private page.
/// `offset` is a multiple of 8 with the whole `vcpu_info` inside the page.
#[derive(Debug)]
pub(crate) struct VcpuInfoLocation {
    pub(crate) page: GuestPage,
    pub(crate) offset: usize,
    /// True once the guest registered it (VCPUOP_register_vcpu_info).
    pub(crate) registered: bool,
}

impl WindowOwner for VcpuInfoLocation {
    fn page(&self) -> &GuestPage {
        &self.page
    }
    fn first_word(&self) -> usize {
        self.offset / 4
    }
}

/// The 32-bit words of a `vcpu_info` the send path touches, from its start: the upcall flag
/// (word 0 on every layout) and `evtchn_pending_sel` (at most words 2 and 3).
const VCPU_INFO_WINDOW: usize = 4;

/// Per-VCPU event state; `U` is the type of its upcall sink.
pub(crate) struct Vcpu<U> {
    pub(crate) id: u32,
    pub(crate) domid: DomId,
    /// The `vcpu_info`, reached with one load (see [`RcuWindow`]).
    pub(crate) vcpu_info: RcuWindow<VcpuInfoLocation, VCPU_INFO_WINDOW>,
    /// Window word holding `evtchn_upcall_pending`, and the flag's bit in it (little-endian:
    /// the byte's bit 0). The flag is a byte; Xen sets it with a bit instruction on the word
    /// around it, and so do we: one `lock bts` instead of a byte compare-exchange loop.
    upcall_word: usize,
    upcall_bit: u32,
    /// Window word of `evtchn_pending_sel`'s first 32 bits.
    pending_sel: usize,
    /// VIRQ → port (0: not bound). Global and per-domain VIRQs use VCPU 0's map.
    pub(crate) virq_to_port: [AtomicU32; NR_VIRQS as usize],
    upcall: U,
}

impl<U: UpcallSink> Vcpu<U> {
    pub(crate) fn new(
        id: u32,
        domid: DomId,
        layout: TwoLevelLayout,
        shared_info: &GuestPage,
        upcall: U,
    ) -> Self {
        let (page, offset) = match layout.vcpu_info_offset(id) {
            Some(offset) => (shared_info.clone(), offset),
            None => (GuestPage::new_zeroed(), 0),
        };
        let location = VcpuInfoLocation {
            page,
            offset,
            registered: false,
        };
        Vcpu {
            id,
            domid,
            vcpu_info: RcuWindow::new(Arc::new(location)),
            upcall_word: layout.upcall_pending_offset / 4,
            upcall_bit: (layout.upcall_pending_offset % 4) as u32 * 8,
            pending_sel: layout.pending_sel_offset / 4,
            virq_to_port: std::array::from_fn(|_| AtomicU32::new(0)),
            upcall,
        }
    }

    /// Xen's "mark events pending": test-and-set bit 0 of `evtchn_upcall_pending`; only on its
    /// 0 → 1 edge is the VMM asked to deliver the upcall.
    #[inline]
    pub(crate) fn mark_events_pending(&self, guard: &RcuGuard) {
        if let Some(info) = self.vcpu_info.view(guard) {
            self.mark_events_pending_in(&info);
        }
    }

    #[inline(always)]
    fn mark_events_pending_in(&self, info: &WindowView<'_, VCPU_INFO_WINDOW>) {
        // `upcall_word` comes from the layout (word 0 on every layout).
        if !bitops::test_and_set(info.word(self.upcall_word), self.upcall_bit) {
            self.upcall.upcall(self.domid, self.id);
        }
    }

    /// The 2-level notification: test-and-set selector bit `selector` (below 64, from a port
    /// the layout addresses) of `evtchn_pending_sel` and, if it was clear, mark events pending
    /// (both in the same `vcpu_info`, found with one load).
    #[inline(always)]
    pub(crate) fn notify_selector(&self, selector: u32, guard: &RcuGuard) {
        let Some(info) = self.vcpu_info.view(guard) else {
            return;
        };
        // `pending_sel` is word 1 or 2 and `selector / 32` at most 1: inside the window.
        let word = info.word(self.pending_sel + (selector / 32) as usize);
        if !bitops::test_and_set(word, selector) {
            self.mark_events_pending_in(&info);
        }
    }
}
