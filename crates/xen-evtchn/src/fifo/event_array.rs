//! The event array: the guest pages of 32-bit event words, one word per port.
//!
//! Pages are added one at a time by `EVTCHNOP_expand_array` (page `i` holds ports
//! `1024 * i .. 1024 * i + 1024`) and never removed while the FIFO state lives. A lookup takes
//! no lock: one acquire load of the page's published address ([`PageArray`]). The count of
//! covered ports grows after each page is published.

use xen_evtchn_abi::{
    EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EvtchnPort,
};

use crate::guest_memory::{GuestPage, PageArray};
use crate::sync::{AtomicU32, Ordering};

const WORDS_PER_PAGE: u32 = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
const MAX_PAGES: usize = EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize;

/// Why a page could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddPageError {
    /// All 128 pages are present.
    Full,
}

/// A domain's event array.
#[derive(Debug)]
pub(crate) struct EventArray {
    /// Inline (not boxed): one dependent load fewer on every send. A port's word is one
    /// acquire load away ([`PageArray`]).
    pages: PageArray<MAX_PAGES>,
    /// Ports covered by the pages present (Xen's `num_evtchns`): a multiple of 1024. Grows
    /// after each page is published.
    ports: AtomicU32,
}

impl EventArray {
    /// An array with no pages.
    pub(crate) fn new() -> Self {
        EventArray {
            pages: PageArray::new(),
            ports: AtomicU32::new(0),
        }
    }

    /// Number of ports the present pages cover.
    #[inline(always)]
    pub(crate) fn ports(&self) -> u32 {
        self.ports.load(Ordering::Acquire)
    }

    /// The event word of `port`, if its page is present.
    #[inline(always)]
    pub(crate) fn word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        self.pages.word(port)
    }

    /// Appends `page`; returns the range of ports it covers. Callers serialise (event lock).
    /// The page's words are published (visible to [`word`](Self::word)) when this returns.
    pub(crate) fn add_page(
        &self,
        page: GuestPage,
    ) -> Result<std::ops::Range<EvtchnPort>, AddPageError> {
        let first = self.ports.load(Ordering::Relaxed);
        let index = (first / WORDS_PER_PAGE) as usize;
        self.pages
            .add(index, page)
            .map_err(|_| AddPageError::Full)?;
        self.ports.store(first + WORDS_PER_PAGE, Ordering::Release);
        Ok(first..first + WORDS_PER_PAGE)
    }

    /// Number of pages present.
    pub(crate) fn pages(&self) -> u32 {
        self.ports() / WORDS_PER_PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_ports_in_order_up_to_128() {
        let a = EventArray::new();
        assert!(a.word(0).is_none());
        let first = GuestPage::new_zeroed();
        assert_eq!(a.add_page(first.clone()).unwrap(), 0..1024);
        a.word(1023).unwrap().store(5, Ordering::SeqCst);
        assert_eq!(first.words32()[1023].load(Ordering::SeqCst), 5);
        assert!(a.word(1024).is_none());
        for i in 1..128 {
            assert_eq!(a.add_page(GuestPage::new_zeroed()).unwrap().start, i * 1024);
        }
        assert_eq!(a.pages(), 128);
        assert!(a.word(131_071).is_some());
        assert!(a.word(131_072).is_none());
        assert_eq!(a.add_page(GuestPage::new_zeroed()), Err(AddPageError::Full));
    }
}
