//! A model of Linux's 2-level event consumer (`events_2l.c`), for tests.
//!
//! It follows `shared/reference/guest-consumer.md` part 2: the upcall loop clears
//! `evtchn_upcall_pending`, exchanges the selector with 0, then scans the selected words of
//! `pending & !mask & bound-to-this-cpu` round-robin from where the previous scan stopped,
//! acknowledging (clearing the pending bit of) each port before "handling" it.

use std::sync::atomic::Ordering;

use xen_evtchn_abi::{DomId, EvtchnPort, TwoLevelLayout};

use crate::event_channels::EventChannels;
use crate::guest_memory::GuestPage;
use crate::host::UpcallSink;

/// One domain's 2-level consumer: the guest side of shared_info.
#[derive(Debug)]
pub struct TwoLevelGuest {
    shared_info: GuestPage,
    layout: TwoLevelLayout,
    /// Linux's private per-CPU binding bitmap, as a port → CPU map.
    cpu_of_port: Vec<u32>,
    /// Per-CPU resume point of the round-robin scan: (word, bit).
    resume: Vec<(u32, u32)>,
}

impl TwoLevelGuest {
    /// The consumer of domain `domid` with `vcpus` VCPUs (all ports start bound to CPU 0, as
    /// Linux binds them).
    pub fn new<U: UpcallSink + Clone>(ec: &EventChannels<U>, domid: DomId, vcpus: u32) -> Self {
        let shared_info = ec.shared_info(domid).expect("domain exists");
        TwoLevelGuest {
            shared_info,
            layout: TwoLevelLayout::X86_64,
            cpu_of_port: vec![0; TwoLevelLayout::X86_64.nr_channels as usize],
            resume: vec![(0, 0); vcpus as usize],
        }
    }

    fn bit(&self, base: usize, port: EvtchnPort) -> (&crate::sync::AtomicU32, u32) {
        (
            self.shared_info
                .atomic_u32(base + (port / 32) as usize * 4)
                .expect("in shared_info"),
            1 << (port % 32),
        )
    }

    fn word(&self, base: usize, word: u32) -> u64 {
        let lo = self
            .shared_info
            .atomic_u32(base + word as usize * 8)
            .expect("in shared_info")
            .load(Ordering::SeqCst) as u64;
        let hi = self
            .shared_info
            .atomic_u32(base + word as usize * 8 + 4)
            .expect("in shared_info")
            .load(Ordering::SeqCst) as u64;
        lo | hi << 32
    }

    fn vcpu_info(&self, vcpu: u32) -> usize {
        self.layout
            .vcpu_info_offset(vcpu)
            .expect("legacy vcpu_info slot")
    }

    /// Masks `port` (a guest store to `evtchn_mask`, no hypercall).
    pub fn mask(&self, port: EvtchnPort) {
        let (w, b) = self.bit(self.layout.evtchn_mask_offset, port);
        w.fetch_or(b, Ordering::SeqCst);
    }

    /// Linux's unmask for an HVM guest: clear the mask, and if the port is pending re-mask it
    /// and ask the hypervisor (`EVTCHNOP_unmask`), which re-delivers it.
    pub fn unmask<U: UpcallSink + Clone>(
        &self,
        ec: &EventChannels<U>,
        domid: DomId,
        port: EvtchnPort,
    ) {
        let (m, b) = self.bit(self.layout.evtchn_mask_offset, port);
        let (p, _) = self.bit(self.layout.evtchn_pending_offset, port);
        m.fetch_and(!b, Ordering::SeqCst);
        if p.load(Ordering::SeqCst) & b != 0 {
            m.fetch_or(b, Ordering::SeqCst);
            ec.unmask(domid, port).expect("unmask of a valid port");
        }
    }

    /// Records in the guest's bookkeeping that `port` is handled on `cpu` (Linux updates its
    /// private bitmap when it calls `EVTCHNOP_bind_vcpu`).
    pub fn bind_to_cpu(&mut self, port: EvtchnPort, cpu: u32) {
        if let Some(c) = self.cpu_of_port.get_mut(port as usize) {
            *c = cpu;
        }
    }

    /// Whether VCPU `vcpu`'s `evtchn_upcall_pending` is set.
    pub fn upcall_pending(&self, vcpu: u32) -> bool {
        self.shared_info
            .atomic_u8(self.vcpu_info(vcpu) + self.layout.upcall_pending_offset)
            .expect("in shared_info")
            .load(Ordering::SeqCst)
            != 0
    }

    /// Runs the upcall handler of `vcpu` and returns the ports it handled, in order.
    pub fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        let mut handled = Vec::new();
        let info = self.vcpu_info(vcpu);
        let page = self.shared_info.clone();
        let flag = page
            .atomic_u8(info + self.layout.upcall_pending_offset)
            .expect("in shared_info");
        loop {
            flag.store(0, Ordering::SeqCst);
            self.handle(vcpu, &mut handled);
            if flag.load(Ordering::SeqCst) == 0 {
                break;
            }
        }
        handled
    }

    fn handle(&mut self, vcpu: u32, handled: &mut Vec<EvtchnPort>) {
        let bits = self.layout.word_bits;
        let info = self.vcpu_info(vcpu);
        let sel_lo = self
            .shared_info
            .atomic_u32(info + self.layout.pending_sel_offset)
            .expect("in vcpu_info")
            .swap(0, Ordering::SeqCst) as u64;
        let sel_hi = self
            .shared_info
            .atomic_u32(info + self.layout.pending_sel_offset + 4)
            .expect("in vcpu_info")
            .swap(0, Ordering::SeqCst) as u64;
        let mut sel = sel_lo | sel_hi << 32;
        let (start_word, start_bit) = self.resume[vcpu as usize];
        let mut word = start_word;
        let mut first_pass = true;
        // Bounded: each selector bit is removed once, the start word at most twice.
        for _ in 0..2 * bits + 2 {
            if sel == 0 {
                break;
            }
            let remaining = sel & (!0u64).checked_shl(word).unwrap_or(0);
            if remaining == 0 {
                word = 0;
                first_pass = false;
                continue;
            }
            word = remaining.trailing_zeros();
            let pending = self.word(self.layout.evtchn_pending_offset, word);
            let mask = self.word(self.layout.evtchn_mask_offset, word);
            let mut bound = 0u64;
            for b in 0..bits {
                let port = word * bits + b;
                if self.cpu_of_port[port as usize] == vcpu {
                    bound |= 1 << b;
                }
            }
            let active = pending & !mask & bound;
            let is_start = first_pass && word == start_word;
            let mut bit = if is_start { start_bit } else { 0 };
            loop {
                let rest = active & (!0u64).checked_shl(bit).unwrap_or(0);
                if rest == 0 {
                    break;
                }
                bit = rest.trailing_zeros();
                let port = word * bits + bit;
                // Ack: clear the pending bit, then handle.
                let (p, m) = self.bit(self.layout.evtchn_pending_offset, port);
                p.fetch_and(!m, Ordering::SeqCst);
                handled.push(port);
                bit = (bit + 1) % bits;
                self.resume[vcpu as usize] = if bit != 0 {
                    (word, bit)
                } else {
                    ((word + 1) % bits, 0)
                };
                if bit == 0 {
                    break;
                }
            }
            if !is_start {
                sel &= !(1 << word);
            }
            first_pass = first_pass && !is_start;
            word = (word + 1) % bits;
        }
    }
}
