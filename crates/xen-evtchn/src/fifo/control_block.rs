//! A VCPU's FIFO control block: READY and `HEAD[16]` in a guest page.
//!
//! The hypervisor only ever *writes* HEAD (when it starts a new list on a queue it believes
//! empty) and test-and-sets READY bits; it never reads a value the guest wrote there, so nothing
//! the guest scribbles into the block can steer it.

use xen_evtchn_abi::{
    EVTCHN_FIFO_CONTROL_BLOCK_HEAD_OFFSET, EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET,
    EVTCHN_FIFO_MAX_QUEUES, EvtchnPort, evtchn_fifo_control_block_offset_is_valid,
};

use crate::bitops;
use crate::guest_memory::GuestPage;
use crate::sync::Ordering;

/// A mapped control block.
#[derive(Debug)]
pub(crate) struct ControlBlock {
    page: GuestPage,
    /// Word index of READY in `page`.
    ready: usize,
    /// Word index of `HEAD[0]` in `page`.
    head: usize,
}

impl ControlBlock {
    /// The block at byte `offset` of `page`; None unless `offset` is 8-byte aligned and the
    /// whole block fits in the page (Xen's checks, done again here so the word indexes below
    /// are in bounds by construction).
    pub(crate) fn new(page: GuestPage, offset: u32) -> Option<Self> {
        if !evtchn_fifo_control_block_offset_is_valid(offset) {
            return None;
        }
        let offset = offset as usize;
        Some(ControlBlock {
            page,
            ready: (offset + EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET) / 4,
            head: (offset + EVTCHN_FIFO_CONTROL_BLOCK_HEAD_OFFSET) / 4,
        })
    }

    /// Starts a new list on queue `priority`: `HEAD[priority] := port`.
    ///
    /// Release is enough: the READY test-and-set that follows is a full barrier, and the guest
    /// reads HEAD only after it saw READY.
    #[inline(always)]
    pub(crate) fn set_head(&self, priority: u32, port: EvtchnPort) {
        debug_assert!(priority < EVTCHN_FIFO_MAX_QUEUES);
        if let Some(head) = self.page.words32().get(self.head + priority as usize) {
            head.store(port, Ordering::Release);
        }
    }

    /// Test-and-set of READY bit `priority`; true if it was already set.
    #[inline(always)]
    pub(crate) fn test_and_set_ready(&self, priority: u32) -> bool {
        match self.page.words32().get(self.ready) {
            Some(ready) => bitops::test_and_set(ready, priority),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_checked_and_words_land_where_the_abi_says() {
        let page = GuestPage::new_zeroed();
        assert!(ControlBlock::new(page.clone(), 4).is_none());
        assert!(ControlBlock::new(page.clone(), 4032).is_none());
        let cb = ControlBlock::new(page.clone(), 4024).unwrap();
        cb.set_head(15, 77);
        assert_eq!(
            page.atomic_u32(4024 + 8 + 60)
                .unwrap()
                .load(Ordering::SeqCst),
            77
        );
        assert!(!cb.test_and_set_ready(3));
        assert!(cb.test_and_set_ready(3));
        assert_eq!(
            page.atomic_u32(4024).unwrap().load(Ordering::SeqCst),
            1 << 3
        );
    }
}
