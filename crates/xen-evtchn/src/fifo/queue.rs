//! One (VCPU, priority) queue as the hypervisor sees it: the port of its tail, and a lock.
//!
//! The tail and the lock share one host word (bit 31: locked; bits 0..17: tail port, 0 for
//! "empty or unknown"), so taking the lock is one swap that also reads the tail, and
//! releasing it is one store that also writes the new tail. The lock is held only for a
//! bounded number of guest-memory atomics (a raise: at most one word CAS or three bit
//! operations, then at most five CAS on the old tail and a HEAD store), so waiters spin briefly.
//! Guest memory never decides how long the lock is held.

use xen_evtchn_abi::{EVTCHN_FIFO_LINK_MASK, EvtchnPort};

use crate::sync::{AtomicU32, Backoff, Ordering};

const LOCKED: u32 = 1 << 31;

/// A queue's hypervisor-side state.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    word: AtomicU32,
}

impl Queue {
    /// Takes the lock; returns the tail (at most [`EVTCHN_FIFO_LINK_MASK`]).
    ///
    /// One swap that writes LOCKED: if the word was unlocked, the swap both took the lock and
    /// read the tail; if it was locked, the swap changed nothing that matters (while the lock
    /// is held the word's tail bits are not read, and the holder's unlock overwrites them).
    #[inline(always)]
    pub(crate) fn lock(&self) -> EvtchnPort {
        let old = self.word.swap(LOCKED, Ordering::Acquire);
        let tail = if old & LOCKED == 0 {
            old
        } else {
            self.lock_slow()
        };
        // Only `unlock` writes the tail bits, masked; masking again tells the compiler that
        // the tail is a valid FIFO port, so looking up its event word needs no range check.
        tail & EVTCHN_FIFO_LINK_MASK
    }

    #[cold]
    fn lock_slow(&self) -> EvtchnPort {
        let backoff = Backoff::new();
        loop {
            // Spins on a plain load until the holder unlocks (a little, then yielding the
            // processor: the holder may be preempted), then tries again.
            while self.word.load(Ordering::Relaxed) & LOCKED != 0 {
                backoff.snooze();
            }
            let old = self.word.swap(LOCKED, Ordering::Acquire);
            if old & LOCKED == 0 {
                return old;
            }
        }
    }

    /// Releases the lock, publishing `tail` as the queue's tail.
    #[inline(always)]
    pub(crate) fn unlock(&self, tail: EvtchnPort) {
        self.word
            .store(tail & EVTCHN_FIFO_LINK_MASK, Ordering::Release);
    }

    /// The tail (not synchronised with a concurrent lock holder).
    #[cfg(test)]
    pub(crate) fn tail(&self) -> EvtchnPort {
        self.word.load(Ordering::Acquire) & EVTCHN_FIFO_LINK_MASK
    }
}

/// The FIFO fields of a port: its priority and the queue its event was last linked on (Xen's
/// `priority` and `fifo_lastq`), packed into the port slot's `fifo_queue` word.
///
/// | bits  | field                       |
/// |-------|-----------------------------|
/// | 0..4  | priority                    |
/// | 4..8  | last queue: priority        |
/// | 8..21 | last queue: VCPU            |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortQueue(pub(crate) u32);

impl PortQueue {
    /// Priority of future events.
    #[inline(always)]
    pub(crate) const fn priority(self) -> u32 {
        self.0 & 0xF
    }

    /// Priority of the queue the event was last linked on.
    #[inline(always)]
    pub(crate) const fn last_priority(self) -> u32 {
        (self.0 >> 4) & 0xF
    }

    /// VCPU of the queue the event was last linked on.
    #[inline(always)]
    pub(crate) const fn last_vcpu(self) -> u32 {
        (self.0 >> 8) & 0x1FFF
    }

    /// The same with another priority.
    pub(crate) const fn with_priority(self, priority: u32) -> Self {
        PortQueue((self.0 & !0xF) | (priority & 0xF))
    }

    /// Whether the last queue is (`vcpu`, this port's priority): the event would be linked on
    /// the queue it was last linked on, so only that one queue need be locked.
    #[inline(always)]
    pub(crate) const fn last_is_current(self, vcpu: u32) -> bool {
        // XOR-ing `vcpu` into the last-VCPU field clears it exactly when the VCPUs match
        // (VCPU ids are below 8192, inside the field); what is left, shifted down, is then
        // the last priority.
        (self.0 ^ (vcpu << 8)) >> 4 == self.priority()
    }

    /// The same with another last queue.
    pub(crate) const fn with_last(self, vcpu: u32, priority: u32) -> Self {
        PortQueue((self.0 & 0xF) | ((priority & 0xF) << 4) | ((vcpu & 0x1FFF) << 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn port_queue_fields_are_independent() {
        let q = PortQueue(0).with_priority(7).with_last(8191, 15);
        assert_eq!(
            (q.priority(), q.last_vcpu(), q.last_priority()),
            (7, 8191, 15)
        );
        let q = q.with_priority(2);
        assert_eq!(
            (q.priority(), q.last_vcpu(), q.last_priority()),
            (2, 8191, 15)
        );
        let q = q.with_last(3, 0);
        assert_eq!((q.priority(), q.last_vcpu(), q.last_priority()), (2, 3, 0));
    }

    #[test]
    fn last_is_current_compares_vcpu_and_priority() {
        let q = PortQueue(0).with_priority(5).with_last(3, 5);
        assert!(q.last_is_current(3));
        assert!(!q.last_is_current(2));
        assert!(!q.with_priority(4).last_is_current(3));
        assert!(!q.with_last(3, 4).last_is_current(3));
        assert!(PortQueue(0).last_is_current(0));
    }

    #[test]
    fn the_lock_carries_the_tail_and_excludes() {
        let q = Arc::new(Queue::default());
        assert_eq!(q.lock(), 0);
        q.unlock(42);
        assert_eq!(q.tail(), 42);
        // Two threads each add 1 to the tail 10_000 times under the lock: no update is lost.
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let t = q.lock();
                        q.unlock(t + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.tail(), 20_042);
    }
}
