//! EVTCHNOP_init_control and EVTCHNOP_expand_array: switching a domain to the FIFO ABI and
//! growing its event array.
//!
//! The switch publishes the FIFO state (which selects the FIFO backend for every later
//! operation), waits for a grace period so that no sender still acts through the 2-level
//! backend, and only then carries the ports pending in the 2-level bitmaps over: each gets
//! the "raised while it had no event word" flag, and is raised for real when
//! `EVTCHNOP_expand_array` adds the page that holds its event word. None is lost.
//!
//! Lock rule (as everywhere): the event lock is never taken inside an RCU read-side section;
//! a section may be opened while holding it.

use xen_evtchn_abi::{
    DomId, EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES,
    evtchn_fifo_control_block_offset_is_valid,
};

use crate::backend::EvtchnPortOps;
use crate::domain::Domain;
use crate::error::{Error, Reason, Result};
use crate::event_channels::EventChannels;
use crate::fifo::{AddPageError, ControlError, Fifo, FifoCounters, FifoFrames};
use crate::guest_memory::GuestPage;
use crate::host::UpcallSink;
use crate::sync::{Arc, rcu};

impl<U: UpcallSink + Clone> EventChannels<U> {
    /// `EVTCHNOP_init_control`: VCPU `vcpu`'s FIFO control block is at byte `offset` of guest
    /// frame `control_gfn`. The first call switches the domain to the FIFO ABI: bindings stay,
    /// events pending under the 2-level ABI are carried over. Returns the LINK width (17).
    ///
    /// Errors (Xen's order): ESRCH (no such caller), ENOENT (no such VCPU), EINVAL (`offset`
    /// misaligned or the block would cross the page end; the frame cannot be mapped; the VCPU
    /// already has a control block).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xen_evtchn::test_utils::{InMemoryGuest, UpcallRecorder};
    /// use xen_evtchn::{DomainConfig, EventChannels};
    ///
    /// let memory = Arc::new(InMemoryGuest::new());
    /// let ec = EventChannels::new();
    /// let config = DomainConfig::new(1, UpcallRecorder::new()).guest_memory(memory.clone());
    /// ec.create_domain(1, config)?;
    /// memory.page(0x100);
    /// assert_eq!(ec.init_control(1, 0x100, 0, 0)?, 17);
    /// assert_eq!(ec.abi_name(1)?, "FIFO");
    /// # Ok::<(), xen_evtchn::Error>(())
    /// ```
    pub fn init_control(
        &self,
        caller: DomId,
        control_gfn: u64,
        offset: u32,
        vcpu: u32,
    ) -> Result<u32> {
        let d = self.domain_arc(caller)?;
        if d.vcpu(vcpu).is_none() {
            return Err(Error::NoEnt(Reason::NoSuchVcpu(vcpu)));
        }
        if !evtchn_fifo_control_block_offset_is_valid(offset) {
            return Err(Error::Inval(Reason::BadOffset(offset)));
        }
        let _el = d.lock.lock();
        let page = map(&d, control_gfn)?;
        let map_err = |e| match e {
            ControlError::NoSuchVcpu => Error::NoEnt(Reason::NoSuchVcpu(vcpu)),
            ControlError::BadOffset => Error::Inval(Reason::BadOffset(offset)),
            ControlError::AlreadyMapped => Error::Inval(Reason::ControlBlockExists(vcpu)),
        };
        if let Some(fifo) = d.fifo.load_arc() {
            fifo.map_control_block(vcpu, control_gfn, page, offset)
                .map_err(map_err)?;
            return Ok(EVTCHN_FIFO_LINK_BITS);
        }
        let fifo = Fifo::new(d.vcpus.len() as u32);
        fifo.map_control_block(vcpu, control_gfn, page, offset)
            .map_err(map_err)?;
        let prev = d.two_level.max_ports();
        // Every port gets the default priority before any sender can see the FIFO state.
        for port in 1..prev {
            let Some(slot) = d.ports.slot(port) else {
                break;
            };
            Fifo::reset_priority(slot);
        }
        d.fifo.replace(Some(Arc::new(fifo)));
        // Wait for every sender that chose the 2-level backend: after this, no 2-level
        // pending bit can appear, so the scan below sees all of them.
        rcu::synchronize();
        let guard = rcu::read();
        for port in 1..prev {
            let Some(slot) = d.ports.slot(port) else {
                break;
            };
            if d.two_level.is_pending(port, &guard) {
                Fifo::save_pending(slot);
            }
        }
        Ok(EVTCHN_FIFO_LINK_BITS)
    }

    /// `EVTCHNOP_expand_array`: guest frame `array_gfn` becomes the next page of the event
    /// array (1024 more ports have an event word). Events raised meanwhile on those ports are
    /// raised now.
    ///
    /// Errors (Xen's order): ESRCH (no such caller), EOPNOTSUPP (the domain is not using the
    /// FIFO ABI), ENOSPC (already 128 pages), EINVAL (the frame cannot be mapped).
    pub fn expand_array(&self, caller: DomId, array_gfn: u64) -> Result<()> {
        let d = self.domain_arc(caller)?;
        let _el = d.lock.lock();
        // Checked under the event lock: a concurrent reset cannot free the state (XSA-505).
        let fifo = d.fifo.load_arc().ok_or(Error::OpNotSupp(Reason::NotFifo))?;
        if fifo.array_pages() >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            return Err(Error::NoSpc(Reason::EventArrayFull));
        }
        let page = map(&d, array_gfn)?;
        let ports = fifo
            .publish_page(array_gfn, page)
            .map_err(|AddPageError::Full| Error::NoSpc(Reason::EventArrayFull))?;
        let guard = rcu::read();
        for port in ports {
            let Some(slot) = d.ports.slot(port) else {
                break;
            };
            if Fifo::has_saved_pending(slot) {
                if let Some(v) = d.vcpu(slot.load().notify_vcpu()) {
                    fifo.set_pending(v, port, slot, &guard);
                }
            }
        }
        Ok(())
    }

    /// The guest frames of a domain's FIFO set-up: each VCPU's control block (frame, offset)
    /// and the event-array frames in order (`None` while the domain uses the 2-level ABI).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xen_evtchn::test_utils::{InMemoryGuest, UpcallRecorder};
    /// use xen_evtchn::{DomainConfig, EventChannels};
    ///
    /// let memory = Arc::new(InMemoryGuest::new());
    /// let ec = EventChannels::new();
    /// ec.create_domain(1, DomainConfig::new(2, UpcallRecorder::new()).guest_memory(memory.clone()))?;
    /// assert_eq!(ec.fifo_frames(1)?, None);
    /// for gfn in [0x100, 0x200] {
    ///     memory.page(gfn);
    /// }
    /// ec.init_control(1, 0x100, 64, 1)?;
    /// ec.expand_array(1, 0x200)?;
    /// let frames = ec.fifo_frames(1)?.unwrap();
    /// assert_eq!(frames.control, vec![None, Some((0x100, 64))]);
    /// assert_eq!(frames.array, vec![0x200]);
    /// # Ok::<(), xen_evtchn::Error>(())
    /// ```
    ///
    /// Errors: ESRCH (no such domain).
    pub fn fifo_frames(&self, domid: DomId) -> Result<Option<FifoFrames>> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        Ok(d.fifo.load(&guard).map(Fifo::frames))
    }

    /// What the FIFO backend had to do about a misbehaving guest (`None` while the domain
    /// uses the 2-level ABI).
    ///
    /// Errors: ESRCH (no such domain).
    pub fn fifo_counters(&self, domid: DomId) -> Result<Option<FifoCounters>> {
        let guard = rcu::read();
        let d = self.live_domain(domid, &guard)?;
        Ok(d.fifo.load(&guard).map(Fifo::counters))
    }
}

/// Maps a guest frame of `d` (EINVAL if the domain has no guest memory or the frame is not
/// there, as Xen answers for a frame it cannot get).
fn map<U: UpcallSink>(d: &Domain<U>, gfn: u64) -> Result<GuestPage> {
    d.memory
        .as_ref()
        .ok_or(Error::Inval(Reason::BadFrame(gfn)))?
        .map_page(gfn)
        .map_err(|_| Error::Inval(Reason::BadFrame(gfn)))
}
