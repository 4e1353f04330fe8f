//! The 2-level ABI: pending and mask bitmaps in shared_info, a selector word and an upcall flag
//! in each vcpu_info.
//!
//! Port `p` is bit `p % W` of word `p / W` in `evtchn_pending` / `evtchn_mask`, and its
//! selector is bit `p / W` of the notify VCPU's `evtchn_pending_sel` (W = 64 for a 64-bit
//! guest, 32 for a 32-bit one). The bitmaps are little-endian, so bit `i` is also bit `i % 32`
//! of 32-bit word `i / 32`: the backend uses 32-bit atomics for every guest width.
//!
//! Raising follows Xen's order, each step an atomic on guest memory (a full barrier on x86):
//! 1. test-and-set the pending bit; if it was already set, stop (the guest has yet to see it);
//! 2. if the mask bit is clear and test-and-set of the selector bit finds it clear, mark the
//!    VCPU's events pending (test-and-set `evtchn_upcall_pending`, upcall on 0 → 1).
//!
//! Unmask: test-and-clear the mask bit; only if it was set, the port is pending and the
//! selector bit was clear, mark events pending. Together with the guest's own order (clear
//! `evtchn_upcall_pending`, exchange the selector to 0, then scan pending & !mask) no event on
//! an unmasked port can go unnoticed.

use xen_evtchn_abi::{EvtchnPort, TwoLevelLayout};

use crate::backend::EvtchnPortOps;
use crate::bitops;
use crate::guest_memory::{GuestPage, PAGE_SIZE};
use crate::host::UpcallSink;
use crate::port::PortSlot;
use crate::sync::AtomicU32;
use crate::sync::rcu::RcuGuard;
use crate::vcpu::Vcpu;

/// The 2-level backend of one domain.
#[derive(Debug)]
pub(crate) struct TwoLevel {
    shared_info: GuestPage,
    /// Ports the layout addresses (4096 or 1024).
    nr_channels: u32,
    /// Word (32-bit) indexes of the pending and mask bitmaps in shared_info.
    pending_word: usize,
    mask_word: usize,
    /// log2 of the guest's word size in bits: port >> word_shift is the selector bit.
    word_shift: u32,
}

impl TwoLevel {
    pub(crate) fn new(shared_info: GuestPage, layout: TwoLevelLayout) -> Self {
        // The layouts are the ABI crate's constants (`TwoLevelLayout` is non-exhaustive):
        // both bitmaps lie inside the page, which `word` relies on.
        debug_assert!(layout.evtchn_pending_offset + layout.nr_channels as usize / 8 <= PAGE_SIZE);
        debug_assert!(layout.evtchn_mask_offset + layout.nr_channels as usize / 8 <= PAGE_SIZE);
        TwoLevel {
            shared_info,
            nr_channels: layout.nr_channels,
            pending_word: layout.evtchn_pending_offset / 4,
            mask_word: layout.evtchn_mask_offset / 4,
            word_shift: layout.word_bits.trailing_zeros(),
        }
    }

    /// The 32-bit guest word holding bit `port` of the bitmap starting at word `base` (None
    /// beyond the ports the layout addresses).
    #[inline(always)]
    fn word(&self, base: usize, port: EvtchnPort) -> Option<&AtomicU32> {
        if port >= self.nr_channels {
            return None;
        }
        // The bitmap of `nr_channels` bits lies inside the page (`new`), so the index is
        // below the page's word count already; the wrap only spares the bounds check.
        let words = self.shared_info.words32();
        Some(&words[(base + (port / 32) as usize) % words.len()])
    }

    /// The pending and mask words of `port`.
    #[inline(always)]
    fn words(&self, port: EvtchnPort) -> Option<(&AtomicU32, &AtomicU32)> {
        Some((
            self.word(self.pending_word, port)?,
            self.word(self.mask_word, port)?,
        ))
    }

    /// The selector bit of `port`.
    #[inline(always)]
    fn selector(&self, port: EvtchnPort) -> u32 {
        port >> self.word_shift
    }
}

impl EvtchnPortOps for TwoLevel {
    fn name(&self) -> &'static str {
        "2-level"
    }

    fn max_ports(&self) -> u32 {
        self.nr_channels
    }

    #[inline(always)]
    fn set_pending<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        _slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        let Some((pending, mask)) = self.words(port) else {
            return;
        };
        if bitops::test_and_set(pending, port) {
            return;
        }
        if !bitops::test(mask, port) {
            vcpu.notify_selector(self.selector(port), guard);
        }
    }

    fn clear_pending(&self, port: EvtchnPort, _slot: &PortSlot, _guard: &RcuGuard) {
        if let Some(pending) = self.word(self.pending_word, port) {
            bitops::test_and_clear(pending, port);
        }
    }

    fn unmask<U: UpcallSink>(
        &self,
        vcpu: &Vcpu<U>,
        port: EvtchnPort,
        _slot: &PortSlot,
        guard: &RcuGuard,
    ) {
        let Some((pending, mask)) = self.words(port) else {
            return;
        };
        if bitops::test_and_clear(mask, port) && bitops::test(pending, port) {
            vcpu.notify_selector(self.selector(port), guard);
        }
    }

    fn is_pending(&self, port: EvtchnPort, _guard: &RcuGuard) -> bool {
        self.word(self.pending_word, port)
            .is_some_and(|w| bitops::test(w, port))
    }

    fn is_masked(&self, port: EvtchnPort, _guard: &RcuGuard) -> bool {
        self.word(self.mask_word, port)
            .is_none_or(|w| bitops::test(w, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SharedUpcallSink;
    use crate::sync::rcu;
    use crate::sync::{Arc, Ordering};
    use crate::test_utils::UpcallRecorder;

    struct Fixture {
        page: GuestPage,
        backend: TwoLevel,
        vcpus: Vec<Vcpu<SharedUpcallSink>>,
        upcalls: Arc<UpcallRecorder>,
        slot: PortSlot,
    }

    const L: TwoLevelLayout = TwoLevelLayout::X86_64;

    fn fixture() -> Fixture {
        let page = GuestPage::new_zeroed();
        let upcalls = Arc::new(UpcallRecorder::new());
        let vcpus = (0..2)
            .map(|v| Vcpu::new(v, 3, L, &page, SharedUpcallSink::new(upcalls.clone())))
            .collect();
        Fixture {
            backend: TwoLevel::new(page.clone(), L),
            page,
            vcpus,
            upcalls,
            slot: PortSlot::default(),
        }
    }

    impl Fixture {
        fn bit(&self, base: usize, port: u32) -> bool {
            self.page
                .atomic_u32(base + (port / 32) as usize * 4)
                .unwrap()
                .load(Ordering::SeqCst)
                & (1 << (port % 32))
                != 0
        }
        fn sel(&self, vcpu: u32) -> u64 {
            self.page
                .atomic_u64(L.vcpu_info_offset(vcpu).unwrap() + L.pending_sel_offset)
                .unwrap()
                .load(Ordering::SeqCst)
        }
        fn upcall_flag(&self, vcpu: u32) -> u8 {
            self.page
                .atomic_u8(L.vcpu_info_offset(vcpu).unwrap() + L.upcall_pending_offset)
                .unwrap()
                .load(Ordering::SeqCst)
        }
        fn mask(&self, port: u32) {
            self.page
                .atomic_u32(L.evtchn_mask_offset + (port / 32) as usize * 4)
                .unwrap()
                .fetch_or(1 << (port % 32), Ordering::SeqCst);
        }
    }

    #[test]
    fn raise_sets_pending_selector_and_upcall_once() {
        let f = fixture();
        let g = rcu::read();
        f.backend.set_pending(&f.vcpus[1], 130, &f.slot, &g);
        assert!(f.bit(L.evtchn_pending_offset, 130));
        assert_eq!(f.sel(1), 1 << 2, "selector bit 130 / 64");
        assert_eq!(f.sel(0), 0);
        assert_eq!(f.upcall_flag(1), 1);
        assert_eq!(f.upcalls.take(3, 1), 1);
        // Already pending: nothing more happens, even after the guest cleared the selector.
        f.page
            .atomic_u64(L.vcpu_info_offset(1).unwrap() + L.pending_sel_offset)
            .unwrap()
            .store(0, Ordering::SeqCst);
        f.backend.set_pending(&f.vcpus[1], 130, &f.slot, &g);
        assert_eq!(f.sel(1), 0);
        assert_eq!(f.upcalls.take(3, 1), 0);
    }

    #[test]
    fn a_masked_port_only_becomes_pending_until_unmasked() {
        let f = fixture();
        let g = rcu::read();
        f.mask(7);
        f.backend.set_pending(&f.vcpus[0], 7, &f.slot, &g);
        assert!(f.bit(L.evtchn_pending_offset, 7));
        assert_eq!(f.sel(0), 0);
        assert_eq!(f.upcalls.total(), 0);
        assert!(f.backend.is_masked(7, &g));
        f.backend.unmask(&f.vcpus[0], 7, &f.slot, &g);
        assert!(!f.backend.is_masked(7, &g));
        assert_eq!(f.sel(0), 1);
        assert_eq!(f.upcalls.take(3, 0), 1);
        // Unmasking an unmasked port does nothing more.
        f.page
            .atomic_u64(L.vcpu_info_offset(0).unwrap() + L.pending_sel_offset)
            .unwrap()
            .store(0, Ordering::SeqCst);
        f.backend.unmask(&f.vcpus[0], 7, &f.slot, &g);
        assert_eq!(f.sel(0), 0);
    }

    #[test]
    fn upcall_edge_is_reported_only_on_zero_to_one() {
        let f = fixture();
        let g = rcu::read();
        f.backend.set_pending(&f.vcpus[0], 1, &f.slot, &g);
        // A different word: a new selector bit, but the upcall flag is still set.
        f.backend.set_pending(&f.vcpus[0], 64, &f.slot, &g);
        assert_eq!(f.sel(0), 0b11);
        assert_eq!(f.upcalls.take(3, 0), 1);
    }

    #[test]
    fn clear_pending_and_out_of_range_ports() {
        let f = fixture();
        let g = rcu::read();
        f.backend.set_pending(&f.vcpus[0], 4095, &f.slot, &g);
        assert!(f.backend.is_pending(4095, &g));
        f.backend.clear_pending(4095, &f.slot, &g);
        assert!(!f.backend.is_pending(4095, &g));
        // Beyond the 2-level limit: never pending, always masked, nothing written.
        f.backend.set_pending(&f.vcpus[0], 4096, &f.slot, &g);
        assert!(!f.backend.is_pending(4096, &g));
        assert!(f.backend.is_masked(4096, &g));
        assert_eq!(f.backend.max_ports(), 4096);
        let x32 = TwoLevel::new(GuestPage::new_zeroed(), TwoLevelLayout::X86_32);
        assert_eq!(x32.max_ports(), 1024);
        assert_eq!(x32.selector(1023), 31);
    }
}
