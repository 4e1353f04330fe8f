//! Records upcalls per (domain, VCPU).

use std::collections::HashMap;

use xen_evtchn_abi::DomId;

use crate::host::UpcallSink;
use crate::sync::Mutex;

/// Counts the upcalls the library asked for.
#[derive(Debug, Default)]
pub struct UpcallRecorder {
    counts: Mutex<HashMap<(DomId, u32), u64>>,
}

impl UpcallRecorder {
    /// No upcalls yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upcalls requested for `(domid, vcpu)` since the last `take`, and resets the count.
    pub fn take(&self, domid: DomId, vcpu: u32) -> u64 {
        self.counts.lock().remove(&(domid, vcpu)).unwrap_or(0)
    }

    /// Upcalls requested for `(domid, vcpu)` since the last `take`.
    pub fn count(&self, domid: DomId, vcpu: u32) -> u64 {
        self.counts.lock().get(&(domid, vcpu)).copied().unwrap_or(0)
    }

    /// Total upcalls over every VCPU.
    pub fn total(&self) -> u64 {
        self.counts.lock().values().sum()
    }
}

impl UpcallSink for UpcallRecorder {
    fn upcall(&self, domid: DomId, vcpu: u32) {
        *self.counts.lock().entry((domid, vcpu)).or_insert(0) += 1;
    }
}

impl UpcallSink for std::sync::Arc<UpcallRecorder> {
    fn upcall(&self, domid: DomId, vcpu: u32) {
        (**self).upcall(domid, vcpu)
    }
}
