//! The FIFO event channel ABI: event words, priorities and the per-vCPU
//! control block.
//!
//! Values come from `xen/include/public/event_channel.h`, except
//! [`EVTCHN_FIFO_EVENT_WORDS_PER_PAGE`] and
//! [`EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`], which Xen defines privately in
//! `xen/common/event_fifo.c` (a guest still depends on them: they decide
//! which array page holds a port and how many pages Xen accepts).
//!
//! # Event words
//!
//! Every port owns one 32-bit *event word* in the guest's event array
//! (page `port / 1024`, word `port % 1024`):
//!
//! | bits | name | meaning |
//! |---|---|---|
//! | 31 | PENDING | the event is raised |
//! | 30 | MASKED | the guest does not want upcalls for it |
//! | 29 | LINKED | the word is on a queue |
//! | 28 | BUSY | Xen is rewriting this word's LINK field |
//! | 27..17 | | unused |
//! | 16..0 | LINK | next port in the queue (0: none) |
//!
//! [`EventWord`] decodes and encodes these bits so a backend and a test
//! guest agree on them:
//!
//! ```
//! use xen_evtchn_abi::EventWord;
//!
//! let w = EventWord(0xA000_0005); // PENDING | LINKED, LINK = 5
//! assert!(w.is_pending() && w.is_linked());
//! assert!(!w.is_masked() && !w.is_busy());
//! assert_eq!(w.link(), 5);
//!
//! let w = w.with_linked(false).with_link(0).with_masked(true);
//! assert_eq!(w.0, EventWord::PENDING | EventWord::MASKED);
//! ```

use core::fmt;
use core::mem::size_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{EvtchnPort, XEN_PAGE_SIZE};

/// Bit number of PENDING in an event word.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// Bit number of MASKED in an event word.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// Bit number of LINKED in an event word.
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// Bit number of BUSY in an event word.
pub const EVTCHN_FIFO_BUSY: u32 = 28;

/// Width of an event word's LINK field, in bits. Reported to the guest in
/// [`EvtchnInitControl::link_bits`](crate::EvtchnInitControl::link_bits).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// Mask of an event word's LINK field (`(1 << 17) - 1`).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Number of ports the FIFO ABI can address (`1 << 17`: ports 0 to
/// 131071).
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

/// Highest FIFO priority (numerically smallest).
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// Priority a port gets when it is bound.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// Lowest FIFO priority (numerically largest).
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// Number of queues (one per priority) on each vCPU.
pub const EVTCHN_FIFO_MAX_QUEUES: u32 = EVTCHN_FIFO_PRIORITY_MIN + 1;

/// Event words in one event array page (4096 / 4).
///
/// Xen-internal (`xen/common/event_fifo.c`), not in the public header, but
/// guest-visible: port `p` lives in array page `p / 1024`.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = (XEN_PAGE_SIZE / size_of::<u32>()) as u32;
/// Most event array pages a domain may add with
/// [`EVTCHNOP_expand_array`](crate::EVTCHNOP_expand_array)
/// (131072 / 1024); a further request fails with `ENOSPC`.
///
/// Xen-internal (`xen/common/event_fifo.c`), not in the public header.
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 =
    EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;

/// Index of the event array page holding `port`'s event word.
pub const fn evtchn_fifo_word_page(port: EvtchnPort) -> u32 {
    port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
}

/// Byte offset of `port`'s event word inside its event array page.
pub const fn evtchn_fifo_word_offset_in_page(port: EvtchnPort) -> usize {
    (port % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize * size_of::<u32>()
}

// ---------------------------------------------------------------------------
// Event word
// ---------------------------------------------------------------------------

/// One FIFO event word (`event_word_t`), by value.
///
/// This is a plain value: reading and updating the word in guest memory
/// (atomically) is the caller's business. The bit constants are masks, ready
/// for `fetch_or`/`fetch_and`/compare-and-swap on an `AtomicU32`.
#[repr(transparent)]
#[derive(
    Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EventWord(pub u32);

impl EventWord {
    /// Mask of the PENDING bit (bit 31).
    pub const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
    /// Mask of the MASKED bit (bit 30).
    pub const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
    /// Mask of the LINKED bit (bit 29).
    pub const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
    /// Mask of the BUSY bit (bit 28).
    pub const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
    /// Mask of the LINK field (bits 16..0).
    pub const LINK_MASK: u32 = EVTCHN_FIFO_LINK_MASK;

    /// The word with every bit clear.
    pub const ZERO: EventWord = EventWord(0);

    /// Wraps a raw word.
    pub const fn new(raw: u32) -> Self {
        EventWord(raw)
    }

    /// The raw word.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// PENDING is set.
    pub const fn is_pending(self) -> bool {
        self.0 & Self::PENDING != 0
    }

    /// MASKED is set.
    pub const fn is_masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }

    /// LINKED is set.
    pub const fn is_linked(self) -> bool {
        self.0 & Self::LINKED != 0
    }

    /// BUSY is set.
    pub const fn is_busy(self) -> bool {
        self.0 & Self::BUSY != 0
    }

    /// The LINK field: the next port in the queue (0 for none).
    pub const fn link(self) -> EvtchnPort {
        self.0 & Self::LINK_MASK
    }

    const fn with_bit(self, mask: u32, on: bool) -> Self {
        if on {
            EventWord(self.0 | mask)
        } else {
            EventWord(self.0 & !mask)
        }
    }

    /// The word with PENDING set to `on`, other bits unchanged.
    pub const fn with_pending(self, on: bool) -> Self {
        self.with_bit(Self::PENDING, on)
    }

    /// The word with MASKED set to `on`, other bits unchanged.
    pub const fn with_masked(self, on: bool) -> Self {
        self.with_bit(Self::MASKED, on)
    }

    /// The word with LINKED set to `on`, other bits unchanged.
    pub const fn with_linked(self, on: bool) -> Self {
        self.with_bit(Self::LINKED, on)
    }

    /// The word with BUSY set to `on`, other bits unchanged.
    pub const fn with_busy(self, on: bool) -> Self {
        self.with_bit(Self::BUSY, on)
    }

    /// The word with its LINK field replaced by `port`, truncated to the low
    /// 17 bits; all other bits unchanged.
    pub const fn with_link(self, port: EvtchnPort) -> Self {
        EventWord((self.0 & !Self::LINK_MASK) | (port & Self::LINK_MASK))
    }
}

impl From<u32> for EventWord {
    fn from(raw: u32) -> Self {
        EventWord(raw)
    }
}

impl From<EventWord> for u32 {
    fn from(w: EventWord) -> Self {
        w.0
    }
}

impl fmt::Debug for EventWord {
    /// Shows the raw value and the decoded fields, e.g.
    /// `EventWord { raw: 0xa0000005, pending: true, masked: false, linked: true, busy: false, link: 5 }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWord")
            .field("raw", &format_args!("{:#010x}", self.0))
            .field("pending", &self.is_pending())
            .field("masked", &self.is_masked())
            .field("linked", &self.is_linked())
            .field("busy", &self.is_busy())
            .field("link", &self.link())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Control block
// ---------------------------------------------------------------------------

/// The per-vCPU FIFO control block (`struct evtchn_fifo_control_block`,
/// 72 bytes), which the guest places in one of its pages with
/// [`EVTCHNOP_init_control`](crate::EVTCHNOP_init_control).
///
/// | field | offset | type | writer |
/// |---|---|---|---|
/// | `ready` | 0 | u32 | Xen sets bit `q` when queue `q` becomes non-empty; the guest clears it |
/// | `_rsvd` | 4 | u32 | reserved |
/// | `head[q]` | 8 + 4·q | u32 | Xen stores the first port of an empty queue it adds to; the guest advances it |
///
/// The C struct only needs 4-byte alignment, but Xen insists that the guest
/// place it at an 8-byte-aligned offset that keeps it inside the page: see
/// [`evtchn_fifo_control_block_offset_is_valid`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EvtchnFifoControlBlock {
    /// Bit `q` set: queue `q` (priority `q`) has events.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// `head[q]`: first port of the priority-`q` queue (0: empty).
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES as usize],
}

/// Size of [`EvtchnFifoControlBlock`] in guest memory (72 bytes).
pub const EVTCHN_FIFO_CONTROL_BLOCK_SIZE: usize = size_of::<EvtchnFifoControlBlock>();
/// Alignment Xen requires of the control block's offset inside its page
/// (8 bytes; stricter than the C struct's own alignment of 4).
pub const EVTCHN_FIFO_CONTROL_BLOCK_ALIGN: usize = 8;
/// Largest offset Xen accepts for the control block (4096 − 72 = 4024), so
/// that it ends inside the page.
pub const EVTCHN_FIFO_CONTROL_BLOCK_MAX_OFFSET: usize =
    XEN_PAGE_SIZE - EVTCHN_FIFO_CONTROL_BLOCK_SIZE;
/// Byte offset of `ready` inside the control block.
pub const EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET: usize = 0;
/// Byte offset of `head[0]` inside the control block.
pub const EVTCHN_FIFO_CONTROL_BLOCK_HEAD_OFFSET: usize = 8;

/// Byte offset of `head[priority]` inside the control block, or `None` if
/// `priority` is not below [`EVTCHN_FIFO_MAX_QUEUES`].
///
/// ```
/// use xen_evtchn_abi::{evtchn_fifo_head_offset, EVTCHN_FIFO_PRIORITY_DEFAULT};
///
/// assert_eq!(evtchn_fifo_head_offset(0), Some(8));
/// assert_eq!(evtchn_fifo_head_offset(EVTCHN_FIFO_PRIORITY_DEFAULT), Some(36));
/// assert_eq!(evtchn_fifo_head_offset(15), Some(68));
/// assert_eq!(evtchn_fifo_head_offset(16), None);
/// ```
pub const fn evtchn_fifo_head_offset(priority: u32) -> Option<usize> {
    if priority < EVTCHN_FIFO_MAX_QUEUES {
        Some(EVTCHN_FIFO_CONTROL_BLOCK_HEAD_OFFSET + priority as usize * size_of::<u32>())
    } else {
        None
    }
}

/// Whether Xen accepts `offset` ([`EvtchnInitControl::offset`](crate::EvtchnInitControl::offset))
/// as the control block's position in its page: at most
/// [`EVTCHN_FIFO_CONTROL_BLOCK_MAX_OFFSET`] and a multiple of
/// [`EVTCHN_FIFO_CONTROL_BLOCK_ALIGN`]. (Xen answers `EINVAL` otherwise.)
pub const fn evtchn_fifo_control_block_offset_is_valid(offset: u32) -> bool {
    (offset as usize) <= EVTCHN_FIFO_CONTROL_BLOCK_MAX_OFFSET
        && (offset as usize) % EVTCHN_FIFO_CONTROL_BLOCK_ALIGN == 0
}

const _: () = {
    assert!(size_of::<EvtchnFifoControlBlock>() == 72);
    assert!(size_of::<EventWord>() == 4);
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of};
    use std::format;

    // Values from xen/include/public/event_channel.h.
    #[test]
    fn header_constants() {
        assert_eq!(EVTCHN_FIFO_PENDING, 31);
        assert_eq!(EVTCHN_FIFO_MASKED, 30);
        assert_eq!(EVTCHN_FIFO_LINKED, 29);
        assert_eq!(EVTCHN_FIFO_BUSY, 28);
        assert_eq!(EVTCHN_FIFO_LINK_BITS, 17);
        assert_eq!(EVTCHN_FIFO_LINK_MASK, 0x1FFFF);
        assert_eq!(EVTCHN_FIFO_NR_CHANNELS, 131_072);
        assert_eq!(EVTCHN_FIFO_PRIORITY_MAX, 0);
        assert_eq!(EVTCHN_FIFO_PRIORITY_DEFAULT, 7);
        assert_eq!(EVTCHN_FIFO_PRIORITY_MIN, 15);
        assert_eq!(EVTCHN_FIFO_MAX_QUEUES, 16);
    }

    // Values from xen/common/event_fifo.c.
    #[test]
    fn xen_internal_constants() {
        assert_eq!(EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, 1024);
        assert_eq!(EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, 128);
        assert_eq!(evtchn_fifo_word_page(0), 0);
        assert_eq!(evtchn_fifo_word_page(1023), 0);
        assert_eq!(evtchn_fifo_word_page(1024), 1);
        assert_eq!(evtchn_fifo_word_page(EVTCHN_FIFO_NR_CHANNELS - 1), 127);
        assert_eq!(evtchn_fifo_word_offset_in_page(1), 4);
        assert_eq!(evtchn_fifo_word_offset_in_page(1023), 4092);
        assert_eq!(evtchn_fifo_word_offset_in_page(1025), 4);
    }

    // struct evtchn_fifo_control_block: 72 bytes, alignment 4, ready @0,
    // _rsvd @4, head @8 (compiled xen/include/public/event_channel.h).
    #[test]
    fn control_block_layout() {
        assert_eq!(size_of::<EvtchnFifoControlBlock>(), 72);
        assert_eq!(align_of::<EvtchnFifoControlBlock>(), 4);
        assert_eq!(offset_of!(EvtchnFifoControlBlock, ready), 0);
        assert_eq!(offset_of!(EvtchnFifoControlBlock, _rsvd), 4);
        assert_eq!(offset_of!(EvtchnFifoControlBlock, head), 8);
        assert_eq!(EVTCHN_FIFO_CONTROL_BLOCK_SIZE, 72);
        assert_eq!(EVTCHN_FIFO_CONTROL_BLOCK_READY_OFFSET, 0);
        assert_eq!(EVTCHN_FIFO_CONTROL_BLOCK_HEAD_OFFSET, 8);
        assert_eq!(EVTCHN_FIFO_CONTROL_BLOCK_ALIGN, 8);
        assert_eq!(EVTCHN_FIFO_CONTROL_BLOCK_MAX_OFFSET, 4024);
        for q in 0..16u32 {
            assert_eq!(evtchn_fifo_head_offset(q), Some(8 + 4 * q as usize));
        }
        assert_eq!(evtchn_fifo_head_offset(16), None);
        assert_eq!(evtchn_fifo_head_offset(u32::MAX), None);
    }

    #[test]
    fn control_block_round_trip() {
        let mut bytes = [0u8; 72];
        bytes[0..4].copy_from_slice(&0x8081u32.to_le_bytes());
        for q in 0..16usize {
            let off = 8 + 4 * q;
            bytes[off..off + 4].copy_from_slice(&(1000 + q as u32).to_le_bytes());
        }
        let cb = EvtchnFifoControlBlock::read_from_bytes(&bytes).unwrap();
        assert_eq!(cb.ready, 0x8081);
        assert_eq!(cb._rsvd, 0);
        for q in 0..16usize {
            assert_eq!(cb.head[q], 1000 + q as u32);
        }
        assert_eq!(cb.as_bytes(), &bytes);
        assert!(EvtchnFifoControlBlock::read_from_bytes(&bytes[..71]).is_err());
    }

    #[test]
    fn control_block_offsets_xen_accepts() {
        assert!(evtchn_fifo_control_block_offset_is_valid(0));
        assert!(evtchn_fifo_control_block_offset_is_valid(8));
        assert!(evtchn_fifo_control_block_offset_is_valid(4024));
        assert!(!evtchn_fifo_control_block_offset_is_valid(4));
        assert!(!evtchn_fifo_control_block_offset_is_valid(4025));
        assert!(!evtchn_fifo_control_block_offset_is_valid(4032));
        assert!(!evtchn_fifo_control_block_offset_is_valid(4096));
        assert!(!evtchn_fifo_control_block_offset_is_valid(u32::MAX));
    }

    #[test]
    fn event_word_masks() {
        assert_eq!(EventWord::PENDING, 0x8000_0000);
        assert_eq!(EventWord::MASKED, 0x4000_0000);
        assert_eq!(EventWord::LINKED, 0x2000_0000);
        assert_eq!(EventWord::BUSY, 0x1000_0000);
        assert_eq!(EventWord::LINK_MASK, 0x0001_FFFF);
    }

    #[test]
    fn event_word_decode() {
        let w = EventWord(0);
        assert!(!w.is_pending() && !w.is_masked() && !w.is_linked() && !w.is_busy());
        assert_eq!(w.link(), 0);

        let w = EventWord(0xF001_FFFF);
        assert!(w.is_pending() && w.is_masked() && w.is_linked() && w.is_busy());
        assert_eq!(w.link(), 0x1FFFF);

        // Unused bits 27..17 do not leak into any field.
        let w = EventWord(0x0FFE_0000);
        assert!(!w.is_pending() && !w.is_masked() && !w.is_linked() && !w.is_busy());
        assert_eq!(w.link(), 0);

        for (raw, p, m, l, b) in [
            (0x8000_0000u32, true, false, false, false),
            (0x4000_0000, false, true, false, false),
            (0x2000_0000, false, false, true, false),
            (0x1000_0000, false, false, false, true),
        ] {
            let w = EventWord::new(raw);
            assert_eq!(
                (w.is_pending(), w.is_masked(), w.is_linked(), w.is_busy()),
                (p, m, l, b)
            );
        }
    }

    #[test]
    fn event_word_encode() {
        let w = EventWord::ZERO
            .with_pending(true)
            .with_masked(true)
            .with_linked(true)
            .with_busy(true)
            .with_link(42);
        assert_eq!(w.raw(), 0xF000_002A);
        assert_eq!(w.with_pending(false).raw(), 0x7000_002A);
        assert_eq!(w.with_masked(false).raw(), 0xB000_002A);
        assert_eq!(w.with_linked(false).raw(), 0xD000_002A);
        assert_eq!(w.with_busy(false).raw(), 0xE000_002A);
        assert_eq!(w.with_link(0).raw(), 0xF000_0000);
        // Idempotent.
        assert_eq!(w.with_pending(true), w);
        // Unused bits are preserved by every encoder.
        let u = EventWord(0x0FFE_0000);
        assert_eq!(u.with_link(7).raw(), 0x0FFE_0007);
        assert_eq!(u.with_pending(true).raw(), 0x8FFE_0000);
    }

    #[test]
    fn event_word_link_masked_to_17_bits() {
        let w = EventWord(EventWord::PENDING);
        // Port 131072 (1 << 17) does not fit: it wraps to 0.
        assert_eq!(w.with_link(EVTCHN_FIFO_NR_CHANNELS).link(), 0);
        assert_eq!(
            w.with_link(EVTCHN_FIFO_NR_CHANNELS).raw(),
            EventWord::PENDING
        );
        // High bits of the port never reach the flag bits.
        let all = w.with_link(u32::MAX);
        assert_eq!(all.link(), 0x1FFFF);
        assert!(all.is_pending() && !all.is_masked() && !all.is_linked() && !all.is_busy());
        assert_eq!(w.with_link(0x0002_0005).link(), 5);
        for port in [0u32, 1, 1023, 1024, 0x1FFFF] {
            assert_eq!(EventWord::ZERO.with_link(port).link(), port);
        }
    }

    #[test]
    fn event_word_debug_and_conversions() {
        let s = format!("{:?}", EventWord(0xA000_0005));
        assert_eq!(
            s,
            "EventWord { raw: 0xa0000005, pending: true, masked: false, linked: true, busy: false, link: 5 }"
        );
        assert_eq!(u32::from(EventWord::from(9)), 9);
        assert_eq!(EventWord(5).as_bytes(), &5u32.to_le_bytes());
    }
}
