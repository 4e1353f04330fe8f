//! The hypervisor's atomic steps on one guest event word, each bounded against a guest that
//! rewrites the word continuously.
//!
//! Xen sets PENDING and LINKED with two test-and-sets and a read of MASKED in between. Where the
//! word is quiet, one compare-and-swap does all three at once (the same effect: the CAS sees
//! one snapshot and publishes PENDING, and LINKED when the event is unmasked and unlinked, in
//! one step); after a few failed tries, which only a guest writing the word can cause, the
//! code falls back to Xen's sequence of single-bit operations, which cannot fail. No loop here
//! runs more than a fixed number of times.

use xen_evtchn_abi::{EventWord, EvtchnPort};

use crate::bitops;
use crate::sync::{AtomicU32, Ordering};

const PENDING: u32 = EventWord::PENDING;
const MASKED: u32 = EventWord::MASKED;
const LINKED: u32 = EventWord::LINKED;
const BUSY: u32 = EventWord::BUSY;
const LINK_MASK: u32 = EventWord::LINK_MASK;

/// Compare-and-swap attempts on a word before falling back to single-bit operations.
const CAS_TRIES: u32 = 2;

/// Attempts to store LINK after the first one fails and BUSY is set (Xen: 4).
pub(crate) const LINK_RETRIES: u32 = 4;

/// What raising an event word did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raised {
    /// PENDING was already set.
    pub(crate) was_pending: bool,
    /// The event was unmasked and unlinked: LINKED is now set and the caller must link it.
    pub(crate) must_link: bool,
}

/// Sets PENDING on a word that is already LINKED or MASKED, without touching anything else.
///
/// Returns `Ok(was_pending)` if it did, or `Err(seen)` with the last value it read if the word
/// is unmasked and unlinked (the caller must take the queue lock and [`raise_from`] that
/// value), or if the word kept changing under it. Safe outside the queue lock: it never sets
/// LINKED, and PENDING is published in the same atomic step that observed LINKED or MASKED,
/// so a guest unlinking or unmasking the event afterwards sees it pending.
#[inline(always)]
pub(crate) fn set_pending_if_queued_or_masked(word: &AtomicU32) -> Result<bool, u32> {
    let mut cur = word.load(Ordering::Relaxed);
    for _ in 0..CAS_TRIES {
        if cur & (LINKED | MASKED) == 0 {
            return Err(cur);
        }
        match word.compare_exchange(cur, cur | PENDING, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return Ok(cur & PENDING != 0),
            Err(now) => cur = now,
        }
    }
    Err(cur)
}

/// [`raise`], for a word last seen (outside the lock) as `seen`: if the word still holds
/// that value with MASKED and LINKED clear, one compare-and-swap sets PENDING and LINKED and
/// the event must be linked, with no need to read the word again or to work out which bits to
/// set; anything else (the word changed, or was masked or linked) goes through [`raise`].
///
/// The compare-and-swap expects `seen` with MASKED and LINKED cleared, so it can only succeed
/// on a word that is unmasked and unlinked, whatever `seen` was.
#[inline(always)]
pub(crate) fn raise_from(word: &AtomicU32, seen: u32) -> Raised {
    let expected = seen & !(MASKED | LINKED);
    match word.compare_exchange(
        expected,
        expected | PENDING | LINKED,
        Ordering::SeqCst,
        Ordering::Relaxed,
    ) {
        Ok(_) => Raised {
            was_pending: expected & PENDING != 0,
            must_link: true,
        },
        Err(_) => raise_cold(word),
    }
}

#[cold]
#[inline(never)]
fn raise_cold(word: &AtomicU32) -> Raised {
    raise(word)
}

/// Xen's raise of an event word, under the queue lock: set PENDING and, if the event is
/// neither masked nor linked, set LINKED.
#[inline(always)]
pub(crate) fn raise(word: &AtomicU32) -> Raised {
    let mut cur = word.load(Ordering::Relaxed);
    for _ in 0..CAS_TRIES {
        let must_link = cur & (MASKED | LINKED) == 0;
        let new = cur | PENDING | if must_link { LINKED } else { 0 };
        match word.compare_exchange(cur, new, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => {
                return Raised {
                    was_pending: cur & PENDING != 0,
                    must_link,
                };
            }
            Err(now) => cur = now,
        }
    }
    // The guest keeps rewriting the word: Xen's three steps, each a single-bit operation.
    let was_pending = bitops::test_and_set(word, xen_evtchn_abi::EVTCHN_FIFO_PENDING);
    let must_link = !bitops::test(word, xen_evtchn_abi::EVTCHN_FIFO_MASKED)
        && !bitops::test_and_set(word, xen_evtchn_abi::EVTCHN_FIFO_LINKED);
    Raised {
        was_pending,
        must_link,
    }
}

/// The result of [`set_link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// The old tail was still linked: its LINK now names the new event.
    Linked,
    /// The old tail was no longer linked (the guest consumed it): start a new list at HEAD.
    NotLinked,
    /// The guest kept rewriting the old tail's word: gave up after Xen's number of tries and
    /// treated it as linked (the new event is pending and linked but unreachable; only the
    /// misbehaving guest loses it).
    GaveUp,
}

/// One attempt: LINK := `port` if the word observed as `cur` is still linked.
#[inline(always)]
fn try_set_link(word: &AtomicU32, cur: u32, port: EvtchnPort) -> Result<Link, u32> {
    if cur & LINKED == 0 {
        return Ok(Link::NotLinked);
    }
    let new = (cur & !(BUSY | LINK_MASK)) | (port & LINK_MASK);
    word.compare_exchange(cur, new, Ordering::SeqCst, Ordering::Relaxed)
        .map(|_| Link::Linked)
}

/// Appends `port` after the old tail whose word is `tail`: sets the tail's LINK if the tail is
/// still LINKED, atomically with that test. One attempt, then BUSY (which keeps a well-behaved
/// guest from unmasking the word) and at most [`LINK_RETRIES`] more, as Xen does.
#[inline(always)]
pub(crate) fn set_link(tail: &AtomicU32, port: EvtchnPort) -> Link {
    if let Ok(link) = try_set_link(tail, tail.load(Ordering::Relaxed), port) {
        return link;
    }
    let mut cur = tail.fetch_or(BUSY, Ordering::SeqCst) | BUSY;
    for _ in 0..LINK_RETRIES {
        match try_set_link(tail, cur, port) {
            Ok(Link::NotLinked) => {
                tail.fetch_and(!BUSY, Ordering::SeqCst);
                return Link::NotLinked;
            }
            Ok(link) => return link,
            Err(now) => cur = now,
        }
    }
    tail.fetch_and(!BUSY, Ordering::SeqCst);
    Link::GaveUp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: u32) -> AtomicU32 {
        AtomicU32::new(v)
    }

    #[test]
    fn raise_links_only_unmasked_unlinked_events() {
        let a = w(0);
        assert_eq!(
            raise(&a),
            Raised {
                was_pending: false,
                must_link: true
            }
        );
        assert_eq!(a.load(Ordering::SeqCst), PENDING | LINKED);
        let m = w(MASKED);
        assert_eq!(
            raise(&m),
            Raised {
                was_pending: false,
                must_link: false
            }
        );
        assert_eq!(m.load(Ordering::SeqCst), MASKED | PENDING);
        let l = w(LINKED | PENDING | 9);
        assert_eq!(
            raise(&l),
            Raised {
                was_pending: true,
                must_link: false
            }
        );
        assert_eq!(l.load(Ordering::SeqCst), LINKED | PENDING | 9);
    }

    #[test]
    fn the_unlocked_fast_path_refuses_events_that_need_linking() {
        assert_eq!(set_pending_if_queued_or_masked(&w(0)), Err(0));
        assert_eq!(set_pending_if_queued_or_masked(&w(PENDING)), Err(PENDING));
        let l = w(LINKED | 3);
        assert_eq!(set_pending_if_queued_or_masked(&l), Ok(false));
        assert_eq!(l.load(Ordering::SeqCst), LINKED | PENDING | 3);
        assert_eq!(set_pending_if_queued_or_masked(&l), Ok(true));
        let m = w(MASKED | PENDING);
        assert_eq!(set_pending_if_queued_or_masked(&m), Ok(true));
    }

    #[test]
    fn raise_from_a_stale_value_does_what_raise_does() {
        // Still as seen: one CAS links it.
        let a = w(PENDING | 4);
        let r = raise_from(&a, PENDING | 4);
        assert_eq!((r.was_pending, r.must_link), (true, true));
        assert_eq!(a.load(Ordering::SeqCst), PENDING | LINKED | 4);
        // Changed since it was seen (the guest masked it, or linked it): the word decides.
        for (now, seen) in [(MASKED, 0), (LINKED, 0), (0, LINKED), (PENDING, 0)] {
            let (x, y) = (w(now), w(now));
            assert_eq!(
                raise_from(&x, seen),
                raise(&y),
                "word {now:#x} seen as {seen:#x}"
            );
            assert_eq!(x.load(Ordering::SeqCst), y.load(Ordering::SeqCst));
        }
    }

    #[test]
    fn set_link_replaces_link_and_clears_busy_only_on_linked_words() {
        let t = w(LINKED | PENDING | BUSY | 5);
        assert_eq!(set_link(&t, 131_071), Link::Linked);
        assert_eq!(t.load(Ordering::SeqCst), LINKED | PENDING | 131_071);
        let gone = w(PENDING | MASKED);
        assert_eq!(set_link(&gone, 7), Link::NotLinked);
        assert_eq!(gone.load(Ordering::SeqCst), PENDING | MASKED);
    }

    #[test]
    fn a_word_rewritten_by_another_thread_never_makes_the_hypervisor_loop() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let word = Arc::new(w(LINKED));
        let stop = Arc::new(AtomicBool::new(false));
        let scribbler = {
            let (word, stop) = (word.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9u32;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    word.store(x | LINKED, Ordering::Relaxed);
                }
            })
        };
        let mut outcomes = [0u32; 3];
        for i in 0..20_000 {
            match set_link(&word, i % 100 + 1) {
                Link::Linked => outcomes[0] += 1,
                Link::NotLinked => outcomes[1] += 1,
                Link::GaveUp => outcomes[2] += 1,
            }
            raise(&word);
            raise_from(&word, i);
            let _ = set_pending_if_queued_or_masked(&word);
        }
        stop.store(true, Ordering::Relaxed);
        scribbler.join().unwrap();
        // Every call returned (bounded); the scribbler keeps LINKED set, so none saw NotLinked.
        assert_eq!(outcomes[1], 0);
        assert_eq!(outcomes.iter().sum::<u32>(), 20_000);
    }
}
