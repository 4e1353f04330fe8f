//! Guest memory made of host pages.

use std::collections::HashMap;

use crate::guest_memory::GuestPage;
use crate::host::{GuestMemory, MapError};
use crate::sync::Mutex;

/// A guest whose RAM is a sparse set of host pages, added on demand.
#[derive(Debug, Default)]
pub struct InMemoryGuest {
    pages: Mutex<HashMap<u64, GuestPage>>,
}

impl InMemoryGuest {
    /// An empty guest.
    pub fn new() -> Self {
        Self::default()
    }

    /// The page at `gfn`, created zeroed if it did not exist.
    pub fn page(&self, gfn: u64) -> GuestPage {
        self.pages
            .lock()
            .entry(gfn)
            .or_insert_with(GuestPage::new_zeroed)
            .clone()
    }

    /// Removes the page at `gfn` (later maps fail).
    pub fn remove(&self, gfn: u64) {
        self.pages.lock().remove(&gfn);
    }
}

impl GuestMemory for InMemoryGuest {
    fn map_page(&self, gfn: u64) -> Result<GuestPage, MapError> {
        self.pages
            .lock()
            .get(&gfn)
            .cloned()
            .ok_or(MapError::NotMapped(gfn))
    }
}
