//! The 2-level event channel ABI: where the pending/mask bitmaps and the
//! per-vCPU upcall flags live in guest memory.
//!
//! The 2-level ABI keeps two bitmaps of `xen_ulong_t` words in the shared
//! info page (`evtchn_pending`, `evtchn_mask`) and, per vCPU, a selector word
//! (`evtchn_pending_sel`, one bit per bitmap word) plus the
//! `evtchn_upcall_pending` / `evtchn_upcall_mask` bytes in `vcpu_info`.
//! Port `p` is bit `p % W` of word `p / W`, and selector bit `p / W`, where
//! `W` is the width of `xen_ulong_t` in bits. With `W` words of `W` bits the
//! ABI addresses `W * W` ports.
//!
//! The layout depends on the guest's architecture, so it is described by a
//! [`TwoLevelLayout`] value, one per architecture:
//!
//! | | [`X86_64`](TwoLevelLayout::X86_64) | [`X86_32`](TwoLevelLayout::X86_32) | [`ARM`](TwoLevelLayout::ARM) |
//! |---|---|---|---|
//! | `xen_ulong_t` bits | 64 | 32 | 64 |
//! | ports | 4096 | 1024 | 4096 |
//! | legacy `vcpu_info` slots | 32 | 32 | 1 |
//! | `vcpu_info` size | 64 | 64 | 48 |
//! | `shared_info.vcpu_info` | 0x000 | 0x000 | 0x000 |
//! | `shared_info.evtchn_pending` | 0x800 | 0x800 | 0x030 |
//! | `shared_info.evtchn_mask` | 0xA00 | 0x880 | 0x230 |
//! | `vcpu_info.evtchn_upcall_pending` | 0 | 0 | 0 |
//! | `vcpu_info.evtchn_upcall_mask` | 1 | 1 | (none) |
//! | `vcpu_info.evtchn_pending_sel` | 8 | 4 | 8 |
//!
//! Sources: `xen/include/public/xen.h` (`struct shared_info`,
//! `struct vcpu_info`), `xen/include/public/event_channel.h`
//! (`EVTCHN_2L_NR_CHANNELS`), `xen/include/public/arch-x86/xen.h`,
//! `arch-x86/xen-x86_64.h`, `arch-x86/xen-x86_32.h` and `arch-arm.h`
//! (`xen_ulong_t`, `XEN_LEGACY_MAX_VCPUS`, `struct arch_vcpu_info`). The
//! offsets were confirmed by compiling those headers for each architecture.
//!
//! ```
//! use xen_evtchn_abi::TwoLevelLayout;
//!
//! let l = TwoLevelLayout::X86_64;
//! // Port 130 is bit 2 of word 2 of the bitmaps.
//! assert_eq!((l.word_index(130), l.bit_index(130)), (2, 2));
//! assert_eq!(l.pending_word_offset(130), Some(0x800 + 2 * 8));
//! assert_eq!(l.mask_word_offset(130), Some(0xA00 + 2 * 8));
//! // vCPU 3's legacy vcpu_info, and a vCPU with no legacy slot.
//! assert_eq!(l.vcpu_info_offset(3), Some(3 * 64));
//! assert_eq!(l.vcpu_info_offset(32), None);
//! ```

use crate::types::EvtchnPort;

/// Ports addressable by the 2-level ABI when `xen_ulong_t` is 64 bits
/// (x86_64, and both 32- and 64-bit Arm): 64 words of 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;

/// Ports addressable by the 2-level ABI for a 32-bit x86 guest, whose
/// `xen_ulong_t` is 32 bits: 32 words of 32 bits. (Xen's header computes
/// `EVTCHN_2L_NR_CHANNELS` from `sizeof(xen_ulong_t)`, so it has a single
/// name with a per-architecture value; this crate gives the 32-bit value its
/// own name.)
pub const EVTCHN_2L_NR_CHANNELS_32: u32 = 32 * 32;

/// `vcpu_info` slots in the x86 shared info page: vCPUs 0 to 31 find their
/// `vcpu_info` there until they register one elsewhere.
///
/// This is the x86 value; see [`XEN_LEGACY_MAX_VCPUS_ARM`] for Arm.
pub const XEN_LEGACY_MAX_VCPUS: u32 = 32;

/// `vcpu_info` slots in the Arm shared info page: only vCPU 0 has one; every
/// other vCPU must register its `vcpu_info` elsewhere.
pub const XEN_LEGACY_MAX_VCPUS_ARM: u32 = 1;

/// Where the 2-level ABI's words live for one guest architecture.
///
/// All offsets are in bytes: the `shared_info` ones from the start of the
/// shared info page, the `vcpu_info` ones from the start of a `vcpu_info`
/// (wherever that lives). Use the per-architecture constants
/// [`X86_64`](Self::X86_64), [`X86_32`](Self::X86_32) and [`ARM`](Self::ARM);
/// the struct is `#[non_exhaustive]` so that other crates read these values
/// rather than invent new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TwoLevelLayout {
    /// Bits per `xen_ulong_t` word: 64, or 32 for a 32-bit x86 guest. Also
    /// the number of words in each bitmap and of bits used in
    /// `evtchn_pending_sel`.
    pub word_bits: u32,
    /// Ports the ABI can address (`word_bits`²): 4096, or 1024.
    pub nr_channels: u32,
    /// `XEN_LEGACY_MAX_VCPUS`: how many vCPUs have a `vcpu_info` slot inside
    /// the shared info page (32 on x86, 1 on Arm).
    pub legacy_vcpus: u32,
    /// Size of one `vcpu_info` (64 on x86, 48 on Arm).
    pub vcpu_info_size: usize,
    /// Offset of the `vcpu_info` array in the shared info page (0).
    pub vcpu_info_array_offset: usize,
    /// Offset of `evtchn_pending[0]` in the shared info page.
    pub evtchn_pending_offset: usize,
    /// Offset of `evtchn_mask[0]` in the shared info page.
    pub evtchn_mask_offset: usize,
    /// Offset of the `evtchn_upcall_pending` byte in a `vcpu_info` (0).
    pub upcall_pending_offset: usize,
    /// Offset of the `evtchn_upcall_mask` byte in a `vcpu_info` (1 on x86),
    /// or `None` where the architecture has no such field (Arm).
    pub upcall_mask_offset: Option<usize>,
    /// Offset of the `evtchn_pending_sel` word in a `vcpu_info` (8 for
    /// 64-bit words, 4 for 32-bit words).
    pub pending_sel_offset: usize,
}

impl TwoLevelLayout {
    /// 64-bit x86 guests (PV or HVM): 64-bit words, 32 legacy `vcpu_info`
    /// slots of 64 bytes.
    pub const X86_64: TwoLevelLayout = TwoLevelLayout {
        word_bits: 64,
        nr_channels: EVTCHN_2L_NR_CHANNELS,
        legacy_vcpus: XEN_LEGACY_MAX_VCPUS,
        vcpu_info_size: 64,
        vcpu_info_array_offset: 0,
        evtchn_pending_offset: 0x800,
        evtchn_mask_offset: 0xA00,
        upcall_pending_offset: 0,
        upcall_mask_offset: Some(1),
        pending_sel_offset: 8,
    };

    /// 32-bit x86 guests (32-bit shared info): 32-bit words, 32 legacy
    /// `vcpu_info` slots of 64 bytes.
    pub const X86_32: TwoLevelLayout = TwoLevelLayout {
        word_bits: 32,
        nr_channels: EVTCHN_2L_NR_CHANNELS_32,
        legacy_vcpus: XEN_LEGACY_MAX_VCPUS,
        vcpu_info_size: 64,
        vcpu_info_array_offset: 0,
        evtchn_pending_offset: 0x800,
        evtchn_mask_offset: 0x880,
        upcall_pending_offset: 0,
        upcall_mask_offset: Some(1),
        pending_sel_offset: 4,
    };

    /// Arm guests, 32- and 64-bit alike (`xen_ulong_t` is 64 bits on both):
    /// 64-bit words and a single legacy `vcpu_info` slot of 48 bytes (Arm's
    /// `arch_vcpu_info` is empty).
    ///
    /// Arm has no `evtchn_upcall_mask`: the byte after
    /// `evtchn_upcall_pending` is padding, so
    /// [`upcall_mask_offset`](Self::upcall_mask_offset) is `None`.
    pub const ARM: TwoLevelLayout = TwoLevelLayout {
        word_bits: 64,
        nr_channels: EVTCHN_2L_NR_CHANNELS,
        legacy_vcpus: XEN_LEGACY_MAX_VCPUS_ARM,
        vcpu_info_size: 48,
        vcpu_info_array_offset: 0,
        evtchn_pending_offset: 0x30,
        evtchn_mask_offset: 0x230,
        upcall_pending_offset: 0,
        upcall_mask_offset: None,
        pending_sel_offset: 8,
    };

    /// Bytes per `xen_ulong_t` word (8 or 4).
    pub const fn word_bytes(&self) -> usize {
        (self.word_bits / 8) as usize
    }

    /// Whether `port` is addressable by this layout (below
    /// [`nr_channels`](Self::nr_channels)).
    pub const fn port_in_range(&self, port: EvtchnPort) -> bool {
        port < self.nr_channels
    }

    /// Index of the bitmap word holding `port`; also the bit of
    /// `evtchn_pending_sel` that covers that word. Not range-checked: for
    /// ports beyond [`nr_channels`](Self::nr_channels) the result is past the
    /// bitmap.
    pub const fn word_index(&self, port: EvtchnPort) -> u32 {
        // `checked_div` only matters for a hand-edited layout with
        // `word_bits == 0`; it keeps this function panic-free.
        match port.checked_div(self.word_bits) {
            Some(word) => word,
            None => 0,
        }
    }

    /// Bit of `port` inside its bitmap word.
    pub const fn bit_index(&self, port: EvtchnPort) -> u32 {
        match port.checked_rem(self.word_bits) {
            Some(bit) => bit,
            None => 0,
        }
    }

    /// Offset in the shared info page of the `evtchn_pending` word holding
    /// `port`, or `None` if `port` is out of range.
    pub const fn pending_word_offset(&self, port: EvtchnPort) -> Option<usize> {
        self.bitmap_word_offset(self.evtchn_pending_offset, port)
    }

    /// Offset in the shared info page of the `evtchn_mask` word holding
    /// `port`, or `None` if `port` is out of range.
    pub const fn mask_word_offset(&self, port: EvtchnPort) -> Option<usize> {
        self.bitmap_word_offset(self.evtchn_mask_offset, port)
    }

    const fn bitmap_word_offset(&self, base: usize, port: EvtchnPort) -> Option<usize> {
        if !self.port_in_range(port) {
            return None;
        }
        // Checked arithmetic keeps this panic-free even for a hand-edited
        // layout; for the real ones it is at most 63 * 8 bytes past `base`.
        match (self.word_index(port) as usize).checked_mul(self.word_bytes()) {
            Some(delta) => base.checked_add(delta),
            None => None,
        }
    }

    /// Offset in the shared info page of vCPU `vcpu`'s legacy `vcpu_info`,
    /// or `None` if that vCPU has no slot there (`vcpu >=`
    /// [`legacy_vcpus`](Self::legacy_vcpus)) and must register one with
    /// `VCPUOP_register_vcpu_info`.
    pub const fn vcpu_info_offset(&self, vcpu: u32) -> Option<usize> {
        if vcpu >= self.legacy_vcpus {
            return None;
        }
        match (vcpu as usize).checked_mul(self.vcpu_info_size) {
            Some(delta) => self.vcpu_info_array_offset.checked_add(delta),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Numbers from compiling xen/include/public/xen.h with
    // arch-x86/xen-x86_64.h (x86_64), arch-x86/xen-x86_32.h (i386) and
    // arch-arm.h (Arm): struct shared_info / struct vcpu_info offsets.
    #[test]
    fn x86_64_numbers() {
        let l = TwoLevelLayout::X86_64;
        assert_eq!(l.word_bits, 64);
        assert_eq!(l.word_bytes(), 8);
        assert_eq!(l.word_bits, 64);
        assert_eq!(l.nr_channels, 4096);
        assert_eq!(l.legacy_vcpus, 32);
        assert_eq!(l.vcpu_info_size, 64);
        assert_eq!(l.vcpu_info_array_offset, 0);
        assert_eq!(l.evtchn_pending_offset, 0x800);
        assert_eq!(l.evtchn_mask_offset, 0xA00);
        assert_eq!(l.upcall_pending_offset, 0);
        assert_eq!(l.upcall_mask_offset, Some(1));
        assert_eq!(l.pending_sel_offset, 8);
        // The bitmaps fill exactly the space between them (64 × 8 bytes).
        assert_eq!(l.evtchn_mask_offset - l.evtchn_pending_offset, 512);
        assert_eq!(32 * 64, l.evtchn_pending_offset);
    }

    #[test]
    fn x86_32_numbers() {
        let l = TwoLevelLayout::X86_32;
        assert_eq!(l.word_bits, 32);
        assert_eq!(l.word_bytes(), 4);
        assert_eq!(l.nr_channels, 1024);
        assert_eq!(l.legacy_vcpus, 32);
        assert_eq!(l.vcpu_info_size, 64);
        assert_eq!(l.evtchn_pending_offset, 0x800);
        assert_eq!(l.evtchn_mask_offset, 0x880);
        assert_eq!(l.upcall_pending_offset, 0);
        assert_eq!(l.upcall_mask_offset, Some(1));
        assert_eq!(l.pending_sel_offset, 4);
        assert_eq!(l.evtchn_mask_offset - l.evtchn_pending_offset, 128);
    }

    #[test]
    fn arm_numbers() {
        let l = TwoLevelLayout::ARM;
        assert_eq!(l.word_bits, 64);
        assert_eq!(l.nr_channels, 4096);
        assert_eq!(l.legacy_vcpus, 1);
        assert_eq!(l.vcpu_info_size, 48);
        assert_eq!(l.evtchn_pending_offset, 0x30);
        assert_eq!(l.evtchn_mask_offset, 0x230);
        assert_eq!(l.upcall_pending_offset, 0);
        assert_eq!(l.upcall_mask_offset, None);
        assert_eq!(l.pending_sel_offset, 8);
        assert_eq!(l.vcpu_info_offset(0), Some(0));
        assert_eq!(l.vcpu_info_offset(1), None);
    }

    #[test]
    fn constants() {
        assert_eq!(EVTCHN_2L_NR_CHANNELS, 4096);
        assert_eq!(EVTCHN_2L_NR_CHANNELS_32, 1024);
        assert_eq!(XEN_LEGACY_MAX_VCPUS, 32);
        assert_eq!(XEN_LEGACY_MAX_VCPUS_ARM, 1);
    }

    #[test]
    fn x86_64_port_math() {
        let l = TwoLevelLayout::X86_64;
        assert_eq!((l.word_index(0), l.bit_index(0)), (0, 0));
        assert_eq!((l.word_index(63), l.bit_index(63)), (0, 63));
        assert_eq!((l.word_index(64), l.bit_index(64)), (1, 0));
        assert_eq!((l.word_index(4095), l.bit_index(4095)), (63, 63));
        assert_eq!(l.pending_word_offset(0), Some(0x800));
        assert_eq!(l.pending_word_offset(4095), Some(0x800 + 63 * 8));
        assert_eq!(l.mask_word_offset(4095), Some(0xA00 + 63 * 8));
        assert_eq!(l.pending_word_offset(4096), None);
        assert_eq!(l.mask_word_offset(u32::MAX), None);
        assert!(l.port_in_range(4095));
        assert!(!l.port_in_range(4096));
    }

    #[test]
    fn x86_32_port_math() {
        let l = TwoLevelLayout::X86_32;
        assert_eq!((l.word_index(1023), l.bit_index(1023)), (31, 31));
        assert_eq!((l.word_index(32), l.bit_index(32)), (1, 0));
        assert_eq!(l.pending_word_offset(1023), Some(0x800 + 31 * 4));
        assert_eq!(l.mask_word_offset(1023), Some(0x880 + 31 * 4));
        assert_eq!(l.pending_word_offset(1024), None);
        // The last pending word ends where the mask begins.
        assert_eq!(
            l.pending_word_offset(1023).map(|o| o + 4),
            Some(l.evtchn_mask_offset)
        );
    }

    #[test]
    fn arm_port_math() {
        let l = TwoLevelLayout::ARM;
        assert_eq!((l.word_index(4095), l.bit_index(4095)), (63, 63));
        assert_eq!(l.pending_word_offset(4095), Some(0x30 + 63 * 8));
        assert_eq!(l.mask_word_offset(64), Some(0x230 + 8));
    }

    #[test]
    fn vcpu_info_slots() {
        for l in [TwoLevelLayout::X86_64, TwoLevelLayout::X86_32] {
            assert_eq!(l.vcpu_info_offset(0), Some(0));
            assert_eq!(l.vcpu_info_offset(1), Some(64));
            assert_eq!(l.vcpu_info_offset(31), Some(31 * 64));
            assert_eq!(l.vcpu_info_offset(32), None);
            assert_eq!(l.vcpu_info_offset(u32::MAX), None);
            // The last legacy slot ends where the pending bitmap starts.
            assert_eq!(
                l.vcpu_info_offset(31).map(|o| o + l.vcpu_info_size),
                Some(l.evtchn_pending_offset)
            );
        }
        let arm = TwoLevelLayout::ARM;
        assert_eq!(
            arm.vcpu_info_offset(0).map(|o| o + arm.vcpu_info_size),
            Some(arm.evtchn_pending_offset)
        );
    }

    #[test]
    fn degenerate_layout_never_panics() {
        // Not a real layout; the public fields could be edited like this.
        let mut l = TwoLevelLayout::X86_64;
        l.word_bits = 0;
        l.nr_channels = u32::MAX;
        l.legacy_vcpus = u32::MAX;
        l.vcpu_info_size = usize::MAX;
        l.evtchn_pending_offset = usize::MAX;
        assert_eq!(l.word_index(5), 0);
        assert_eq!(l.bit_index(5), 0);
        assert_eq!(l.word_bytes(), 0);
        assert_eq!(l.pending_word_offset(5), Some(usize::MAX));
        l.word_bits = 8;
        assert_eq!(l.pending_word_offset(4096), None, "overflow is None");
        assert_eq!(l.vcpu_info_offset(0), Some(0));
        assert_eq!(l.vcpu_info_offset(2), None, "overflow is None");
    }
}
