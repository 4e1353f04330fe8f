//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use xen_evtchn::abi::{DomId, Errno, EvtchnPort, TwoLevelLayout};
use xen_evtchn::test_utils::UpcallRecorder;
use xen_evtchn::{DomainConfig, EventChannels, Result};

pub(crate) const L: TwoLevelLayout = TwoLevelLayout::X86_64;

/// The errno of a failed operation (panics on success, showing the value).
#[track_caller]
pub(crate) fn errno<T: std::fmt::Debug>(r: Result<T>) -> Errno {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

/// A hypervisor with one shared upcall recorder.
pub(crate) struct Env {
    pub(crate) ec: EventChannels,
    pub(crate) rec: Arc<UpcallRecorder>,
}

impl Env {
    pub(crate) fn new() -> Self {
        Env {
            ec: EventChannels::new(),
            rec: Arc::new(UpcallRecorder::new()),
        }
    }

    /// A config whose upcalls go to the shared recorder.
    pub(crate) fn cfg(&self, vcpus: u32) -> DomainConfig {
        DomainConfig::new(vcpus, self.rec.clone())
    }

    /// dom0: privileged, hardware domain, 2 vcpus.
    pub(crate) fn dom0(&self) {
        self.ec
            .create_domain(0, self.cfg(2).privileged(true).hardware(true))
            .unwrap();
    }

    /// An unprivileged guest.
    pub(crate) fn guest(&self, id: DomId, vcpus: u32) {
        self.ec.create_domain(id, self.cfg(vcpus)).unwrap();
    }
}

fn u8_at(ec: &EventChannels, d: DomId, off: usize) -> u8 {
    ec.shared_info(d)
        .unwrap()
        .atomic_u8(off)
        .unwrap()
        .load(Ordering::SeqCst)
}

fn u64_at(ec: &EventChannels, d: DomId, off: usize) -> u64 {
    ec.shared_info(d)
        .unwrap()
        .atomic_u64(off)
        .unwrap()
        .load(Ordering::SeqCst)
}

/// `evtchn_pending_sel` of a vcpu (legacy slot in shared_info).
pub(crate) fn sel(ec: &EventChannels, d: DomId, vcpu: u32) -> u64 {
    u64_at(
        ec,
        d,
        L.vcpu_info_offset(vcpu).unwrap() + L.pending_sel_offset,
    )
}

/// `evtchn_upcall_pending` of a vcpu (legacy slot in shared_info).
pub(crate) fn upcall_pending(ec: &EventChannels, d: DomId, vcpu: u32) -> u8 {
    u8_at(
        ec,
        d,
        L.vcpu_info_offset(vcpu).unwrap() + L.upcall_pending_offset,
    )
}

/// Guest-side acknowledgement of a vcpu's upcall state (clear flag and selector).
pub(crate) fn ack_vcpu(ec: &EventChannels, d: DomId, vcpu: u32) {
    let si = ec.shared_info(d).unwrap();
    let base = L.vcpu_info_offset(vcpu).unwrap();
    si.atomic_u8(base + L.upcall_pending_offset)
        .unwrap()
        .store(0, Ordering::SeqCst);
    si.atomic_u64(base + L.pending_sel_offset)
        .unwrap()
        .store(0, Ordering::SeqCst);
}

/// Pending word `w` of the 2-level bitmap.
pub(crate) fn pending_word(ec: &EventChannels, d: DomId, w: usize) -> u64 {
    u64_at(ec, d, L.evtchn_pending_offset + 8 * w)
}

/// Guest-side clear of a port's pending bit.
pub(crate) fn clear_pending(ec: &EventChannels, d: DomId, port: EvtchnPort) {
    let si = ec.shared_info(d).unwrap();
    si.atomic_u64(L.evtchn_pending_offset + 8 * (port / 64) as usize)
        .unwrap()
        .fetch_and(!(1u64 << (port % 64)), Ordering::SeqCst);
}

/// Guest-side mask of a port (a store to `evtchn_mask`, no hypercall).
pub(crate) fn guest_mask(ec: &EventChannels, d: DomId, port: EvtchnPort) {
    let si = ec.shared_info(d).unwrap();
    si.atomic_u64(L.evtchn_mask_offset + 8 * (port / 64) as usize)
        .unwrap()
        .fetch_or(1u64 << (port % 64), Ordering::SeqCst);
}

/// A tiny seeded xorshift64* PRNG.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
