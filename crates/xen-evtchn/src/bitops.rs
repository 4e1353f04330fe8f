//! Single-bit atomic operations on guest words, written so that x86 gets one `lock bts` /
//! `lock btr` instead of a compare-exchange loop.
//!
//! Xen's own guest bitops are single locked bit instructions on x86; a `fetch_or` whose mask
//! the compiler cannot prove to be one bit becomes a load plus a `cmpxchg` loop, which costs a
//! second access to the line and, against a guest writing the same word, retries. Each helper
//! takes a bit number (taken modulo 32) so the mask is visibly `1 << n`.

use crate::sync::{AtomicU32, Ordering};

/// Sets bit `bit % 32` of `word`; true if it was already set.
#[inline(always)]
pub(crate) fn test_and_set(word: &AtomicU32, bit: u32) -> bool {
    let mask = 1u32 << (bit % 32);
    word.fetch_or(mask, Ordering::SeqCst) & mask != 0
}

/// Clears bit `bit % 32` of `word`; true if it was set.
#[inline(always)]
pub(crate) fn test_and_clear(word: &AtomicU32, bit: u32) -> bool {
    let mask = 1u32 << (bit % 32);
    word.fetch_and(!mask, Ordering::SeqCst) & mask != 0
}

/// Whether bit `bit % 32` of `word` is set (a sequentially consistent load).
#[inline(always)]
pub(crate) fn test(word: &AtomicU32, bit: u32) -> bool {
    // Shift-and-mask form: a register `bt`, no mask to build.
    (word.load(Ordering::SeqCst) >> (bit % 32)) & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_test_report_the_previous_value() {
        let w = AtomicU32::new(0x8000_0000);
        assert!(!test_and_set(&w, 3));
        assert!(test_and_set(&w, 3));
        assert!(test(&w, 31));
        assert!(test(&w, 3 + 32), "bit numbers are taken modulo 32");
        assert!(test_and_clear(&w, 31));
        assert!(!test_and_clear(&w, 31));
        assert_eq!(w.load(Ordering::SeqCst), 1 << 3);
    }
}
