//! Guest-visible memory: the one module of this crate that contains `unsafe` code.
//!
//! Two things live here, because both are about keeping a piece of memory valid while another
//! thread may be using it:
//!
//! * [`GuestPage`]: a 4 KiB page shared with a guest (shared_info, a vcpu_info, a FIFO control
//!   block, a FIFO event-array page), translated once when it is registered and then touched
//!   word by word through atomics only. The guest may change any byte at any moment; nothing
//!   read from it is trusted beyond a single atomic operation.
//! * [`RcuArc`]: a replaceable `Arc<T>` that readers borrow without touching its reference
//!   count, inside a read-side section of [`crate::sync::rcu`]. This is how the send path
//!   reaches a domain, a mapped page or a backend without a lock and without a
//!   read-modify-write on host memory, and how the slow paths retire them safely.
//!
//! Built on those, two ways for the send path to reach guest words with one load: an
//! [`RcuWindow`] (a few words of a replaceable page, e.g. a `vcpu_info`) and a [`PageArray`]
//! (append-only pages, e.g. the FIFO event array), each publishing a word's address beside
//! the owner that keeps its page mapped.
//!
//! Every `unsafe` block below states why it is sound. Nothing else in the crate uses `unsafe`
//! (`#![deny(unsafe_code)]` is lifted for this module only).
//!
//! Under the model checker (`--cfg xen_evtchn_shuttle`, see `docs/design.md`, "Concurrency
//! model checking") a `GuestPage` is 1024 of shuttle's atomic 32-bit words instead of mapped
//! memory, so that every guest-word access of the library and of the test guests is a
//! scheduling point. Only library-owned pages exist then (`GuestPage::from_raw` is compiled
//! out). Byte and 64-bit accessors return views onto those words
//! ([`GuestAtomicU8`], [`GuestAtomicU64`]): a byte operation is one atomic operation on its
//! word; a 64-bit operation is one per 32-bit half it changes, so a single-bit operation is
//! exact and a whole-word load or store is two steps. The library itself uses 32-bit words
//! only.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::ptr::NonNull;

use crate::sync::rcu::{self, RcuGuard};
use crate::sync::{Arc, AtomicPtr, AtomicU32, Ordering};
#[cfg(not(xen_evtchn_shuttle))]
use crate::sync::{AtomicU8, AtomicU64};

/// Size of a guest page, in bytes. Every page this crate maps is exactly this large.
pub const PAGE_SIZE: usize = 4096;

/// What [`GuestPage::atomic_u8`] returns: `AtomicU8` (a view onto a model word under the
/// model checker), for code that names the type.
#[cfg(not(xen_evtchn_shuttle))]
#[allow(dead_code)] // named by the `test-utils` consumer models only
pub(crate) type GuestAtomicU8 = AtomicU8;

/// What [`GuestPage::atomic_u64`] returns: `AtomicU64` (a view onto two model words under the
/// model checker), for code that names the type.
#[cfg(not(xen_evtchn_shuttle))]
#[allow(dead_code)] // named by the `test-utils` consumer models only
pub(crate) type GuestAtomicU64 = AtomicU64;

#[cfg(xen_evtchn_shuttle)]
pub(crate) use model::{GuestAtomicU8, GuestAtomicU64};

/// Host memory for a page the library or a test owns: 4 KiB of atomics, page-aligned.
#[cfg(not(xen_evtchn_shuttle))]
#[repr(C, align(4096))]
struct HostPage([AtomicU64; PAGE_SIZE / 8]);

#[cfg(not(xen_evtchn_shuttle))]
impl HostPage {
    fn new_zeroed() -> Arc<Self> {
        Arc::new(HostPage(std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

/// A mapped 4 KiB guest page, accessed only through atomics.
///
/// A `GuestPage` is a handle: cloning it is cheap and every clone keeps the mapping alive
/// (through the keep-alive object given when it was created). The library keeps the handles it
/// needs for as long as the guest has the page registered, so the send path never translates a
/// frame number.
///
/// Word accessors check bounds and alignment and return `None` instead of panicking; the
/// library only asks for offsets it computed itself, but a VMM can use the same accessors.
///
/// # Example
///
/// ```
/// use std::sync::atomic::Ordering;
/// use xen_evtchn::GuestPage;
///
/// let page = GuestPage::new_zeroed();
/// let word = page.atomic_u32(8).expect("in bounds and aligned");
/// word.fetch_or(1 << 31, Ordering::SeqCst);
/// assert_eq!(page.atomic_u32(8).unwrap().load(Ordering::SeqCst), 1 << 31);
/// assert!(page.atomic_u32(4094).is_none()); // would cross the end of the page
/// assert!(page.atomic_u64(4).is_none()); // misaligned
/// ```
#[cfg(not(xen_evtchn_shuttle))]
#[derive(Clone)]
pub struct GuestPage {
    base: NonNull<u8>,
    /// Held, never read: keeps the mapping alive as long as any clone of the handle.
    _keep_alive: Arc<dyn Send + Sync>,
}

// SAFETY: a GuestPage only hands out shared references to atomics inside the page, which may be
// used from any thread; the keep-alive object is itself Send + Sync.
#[cfg(not(xen_evtchn_shuttle))]
unsafe impl Send for GuestPage {}
// SAFETY: as above; all access through `&GuestPage` is atomic.
#[cfg(not(xen_evtchn_shuttle))]
unsafe impl Sync for GuestPage {}

#[cfg(not(xen_evtchn_shuttle))]
impl fmt::Debug for GuestPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestPage")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[cfg(not(xen_evtchn_shuttle))]
impl GuestPage {
    /// Allocates a zeroed, page-aligned page of host memory.
    ///
    /// Used for pages the library owns (a domain's shared_info when the VMM does not supply
    /// one), by the in-memory guest of `test_utils`, and by VMMs that want to hand such a page
    /// to their guest.
    pub fn new_zeroed() -> Self {
        let page = HostPage::new_zeroed();
        let base = NonNull::from(&page.0[0]).cast::<u8>();
        GuestPage {
            base,
            _keep_alive: page,
        }
    }

    /// Wraps a page that the VMM has mapped.
    ///
    /// `keep_alive` is dropped when the last clone of the handle is dropped; use it to hold
    /// whatever keeps the mapping in place (an `Arc` of the VMM's memory region, a page
    /// reference count, ...).
    ///
    /// # Safety
    ///
    /// For as long as `keep_alive` lives:
    /// * `base` must point to [`PAGE_SIZE`] bytes that are mapped readable and writable in this
    ///   process, and `base` must be at least 8-byte aligned;
    /// * the memory must only be accessed by this crate through atomics, and otherwise only by
    ///   the guest (or by the VMM with atomic or volatile accesses): no Rust reference to it as
    ///   non-atomic data may exist.
    pub unsafe fn from_raw(base: NonNull<u8>, keep_alive: Arc<dyn Send + Sync>) -> Self {
        GuestPage {
            base,
            _keep_alive: keep_alive,
        }
    }

    /// The host address of the page, for a VMM that maps it into the guest's physical address
    /// space (for example a library-owned shared_info page).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// True if both handles refer to the same host page.
    pub fn same_page(&self, other: &GuestPage) -> bool {
        self.base == other.base
    }

    #[inline(always)]
    fn checked<T>(&self, offset: usize) -> Option<NonNull<T>> {
        let size = std::mem::size_of::<T>();
        if offset > PAGE_SIZE - size || offset % size != 0 {
            return None;
        }
        // SAFETY: offset + size <= PAGE_SIZE, so the result stays inside the mapped page the
        // constructor's contract guarantees.
        let p = unsafe { self.base.as_ptr().add(offset) };
        NonNull::new(p.cast::<T>())
    }

    /// The byte at `offset`, as an atomic.
    #[inline(always)]
    pub fn atomic_u8(&self, offset: usize) -> Option<&AtomicU8> {
        let p = self.checked::<AtomicU8>(offset)?;
        // SAFETY: in bounds (checked), alignment 1, mapped for the lifetime of `self` (the
        // keep-alive object), and only ever accessed atomically by the host.
        Some(unsafe { p.as_ref() })
    }

    /// The naturally aligned 32-bit word at `offset`, as an atomic.
    #[inline(always)]
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.checked::<AtomicU32>(offset)?;
        // SAFETY: in bounds and 4-byte aligned (checked against an 8-byte aligned base),
        // mapped for the lifetime of `self`, only accessed atomically by the host.
        Some(unsafe { p.as_ref() })
    }

    /// The whole page as 32-bit atomic words (word `i` is bytes `4 * i .. 4 * i + 4`).
    ///
    /// For code that indexes the page by word: one bounds check against a constant instead
    /// of a range and alignment check per access.
    ///
    /// ```
    /// use xen_evtchn::GuestPage;
    /// use std::sync::atomic::Ordering;
    ///
    /// let page = GuestPage::new_zeroed();
    /// page.words32()[3].store(7, Ordering::SeqCst);
    /// assert_eq!(page.atomic_u32(12).unwrap().load(Ordering::SeqCst), 7);
    /// assert!(page.words32().get(1024).is_none());
    /// ```
    #[inline(always)]
    pub fn words32(&self) -> &[AtomicU32; PAGE_SIZE / 4] {
        // SAFETY: the page is PAGE_SIZE bytes, mapped for the lifetime of `self` and at least
        // 8-byte aligned (constructor contract), so it is a valid array of PAGE_SIZE / 4
        // 4-byte-aligned atomic words, only ever accessed atomically by the host.
        unsafe { self.base.cast::<[AtomicU32; PAGE_SIZE / 4]>().as_ref() }
    }

    /// The naturally aligned 64-bit word at `offset`, as an atomic.
    #[inline(always)]
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.checked::<AtomicU64>(offset)?;
        // SAFETY: in bounds and 8-byte aligned (checked against an 8-byte aligned base),
        // mapped for the lifetime of `self`, only accessed atomically by the host.
        Some(unsafe { p.as_ref() })
    }
}

/// A guest page under the model checker: shuttle's atomic words (see the module
/// documentation). Same accessors, same bounds and alignment checks; no `from_raw`.
#[cfg(xen_evtchn_shuttle)]
#[derive(Clone)]
pub struct GuestPage {
    page: Arc<model::Page>,
}

#[cfg(xen_evtchn_shuttle)]
impl fmt::Debug for GuestPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestPage")
            .field("base", &self.as_ptr())
            .finish_non_exhaustive()
    }
}

#[cfg(xen_evtchn_shuttle)]
impl GuestPage {
    /// A zeroed page of model words.
    pub fn new_zeroed() -> Self {
        GuestPage {
            page: Arc::new(model::Page::new()),
        }
    }

    /// The address of the model words (only good for telling pages apart).
    pub fn as_ptr(&self) -> *mut u8 {
        self.page.words.as_ptr().cast::<u8>().cast_mut()
    }

    /// True if both handles refer to the same page.
    pub fn same_page(&self, other: &GuestPage) -> bool {
        Arc::ptr_eq(&self.page, &other.page)
    }

    /// `offset` if an access of `size` bytes there is inside the page and aligned.
    #[inline(always)]
    fn checked(offset: usize, size: usize) -> Option<usize> {
        (offset <= PAGE_SIZE - size && offset % size == 0).then_some(offset)
    }

    /// The byte at `offset`: a view onto its model word.
    pub fn atomic_u8(&self, offset: usize) -> Option<&GuestAtomicU8> {
        Self::checked(offset, 1).map(|o| self.page.byte(o))
    }

    /// The naturally aligned 32-bit word at `offset`, as a model atomic.
    #[inline(always)]
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        Self::checked(offset, 4).map(|o| &self.page.words[o / 4])
    }

    /// The whole page as 32-bit model atomics (word `i` is bytes `4 * i .. 4 * i + 4`).
    #[inline(always)]
    pub fn words32(&self) -> &[AtomicU32; PAGE_SIZE / 4] {
        &self.page.words
    }

    /// The naturally aligned 64-bit word at `offset`: a view onto its two model words.
    pub fn atomic_u64(&self, offset: usize) -> Option<&GuestAtomicU64> {
        Self::checked(offset, 8).map(|o| self.page.long(o))
    }
}

/// The model checker's guest memory: pages of shuttle atomics and the byte and 64-bit views
/// onto them.
#[cfg(xen_evtchn_shuttle)]
mod model {
    use std::sync::OnceLock;

    use super::PAGE_SIZE;
    use crate::sync::{Arc, AtomicU32, Ordering};

    const WORDS: usize = PAGE_SIZE / 4;

    /// A page: its words, and the views, made on first use (most pages never need them).
    pub(super) struct Page {
        pub(super) words: Arc<[AtomicU32; WORDS]>,
        bytes: OnceLock<Box<[GuestAtomicU8]>>,
        longs: OnceLock<Box<[GuestAtomicU64]>>,
    }

    impl Page {
        pub(super) fn new() -> Self {
            // Built on the heap: 1024 model atomics are too big for a model thread's stack.
            let words: Arc<[AtomicU32]> = (0..WORDS).map(|_| AtomicU32::new(0)).collect();
            Page {
                words: words.try_into().expect("exactly one page of words"),
                bytes: OnceLock::new(),
                longs: OnceLock::new(),
            }
        }

        /// The view of byte `offset` (in bounds: checked by the caller).
        pub(super) fn byte(&self, offset: usize) -> &GuestAtomicU8 {
            let views = self.bytes.get_or_init(|| {
                (0..PAGE_SIZE)
                    .map(|b| GuestAtomicU8 {
                        words: self.words.clone(),
                        word: b / 4,
                        shift: (b % 4) as u32 * 8,
                    })
                    .collect()
            });
            &views[offset]
        }

        /// The view of the 64-bit word at byte `offset` (in bounds and aligned: checked by the
        /// caller).
        pub(super) fn long(&self, offset: usize) -> &GuestAtomicU64 {
            let views = self.longs.get_or_init(|| {
                (0..PAGE_SIZE / 8)
                    .map(|l| GuestAtomicU64 {
                        words: self.words.clone(),
                        lo: 2 * l,
                    })
                    .collect()
            });
            &views[offset / 8]
        }
    }

    /// A guest byte under the model checker: byte `shift / 8` (little-endian) of a model word.
    /// Each operation is one atomic operation on the word (a compare-and-swap loop for those
    /// that are not a bitwise AND or OR).
    #[allow(unreachable_pub)] // returned by `GuestPage::atomic_u8`
    pub struct GuestAtomicU8 {
        words: Arc<[AtomicU32; WORDS]>,
        word: usize,
        shift: u32,
    }

    impl std::fmt::Debug for GuestAtomicU8 {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("GuestAtomicU8")
                .field(&self.get(Ordering::SeqCst))
                .finish()
        }
    }

    impl GuestAtomicU8 {
        fn w(&self) -> &AtomicU32 {
            &self.words[self.word]
        }

        fn get(&self, order: Ordering) -> u8 {
            (self.w().load(order) >> self.shift) as u8
        }

        /// Replaces the byte with `f(byte)`; returns the old byte.
        fn update(&self, order: Ordering, f: impl Fn(u8) -> Option<u8>) -> Result<u8, u8> {
            let mask = 0xFFu32 << self.shift;
            let mut cur = self.w().load(order);
            loop {
                let old = (cur >> self.shift) as u8;
                let Some(new) = f(old) else {
                    return Err(old);
                };
                let next = (cur & !mask) | (u32::from(new) << self.shift);
                match self
                    .w()
                    .compare_exchange(cur, next, order, Ordering::SeqCst)
                {
                    Ok(_) => return Ok(old),
                    Err(now) => cur = now,
                }
            }
        }

        /// As `AtomicU8::load`.
        pub fn load(&self, order: Ordering) -> u8 {
            self.get(order)
        }

        /// As `AtomicU8::store`.
        pub fn store(&self, val: u8, order: Ordering) {
            let _ = self.update(order, |_| Some(val));
        }

        /// As `AtomicU8::swap`.
        pub fn swap(&self, val: u8, order: Ordering) -> u8 {
            self.update(order, |_| Some(val)).unwrap_or_else(|v| v)
        }

        /// As `AtomicU8::fetch_or`.
        pub fn fetch_or(&self, val: u8, order: Ordering) -> u8 {
            (self.w().fetch_or(u32::from(val) << self.shift, order) >> self.shift) as u8
        }

        /// As `AtomicU8::fetch_and`.
        pub fn fetch_and(&self, val: u8, order: Ordering) -> u8 {
            let keep = !(0xFFu32 << self.shift) | (u32::from(val) << self.shift);
            (self.w().fetch_and(keep, order) >> self.shift) as u8
        }

        /// As `AtomicU8::compare_exchange`.
        pub fn compare_exchange(
            &self,
            current: u8,
            new: u8,
            success: Ordering,
            _failure: Ordering,
        ) -> Result<u8, u8> {
            self.update(success, |old| (old == current).then_some(new))
        }
    }

    /// A guest 64-bit word under the model checker: model words `lo` and `lo + 1`
    /// (little-endian). A bitwise operation is one atomic operation per half it changes (so a
    /// single-bit operation is exact); a load or store is one per half.
    #[allow(unreachable_pub)] // returned by `GuestPage::atomic_u64`
    pub struct GuestAtomicU64 {
        words: Arc<[AtomicU32; WORDS]>,
        lo: usize,
    }

    impl std::fmt::Debug for GuestAtomicU64 {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("GuestAtomicU64")
                .field(&self.load(Ordering::SeqCst))
                .finish()
        }
    }

    fn join(lo: u32, hi: u32) -> u64 {
        u64::from(lo) | u64::from(hi) << 32
    }

    impl GuestAtomicU64 {
        fn halves(&self) -> (&AtomicU32, &AtomicU32) {
            (&self.words[self.lo], &self.words[self.lo + 1])
        }

        /// As `AtomicU64::load` (two loads).
        pub fn load(&self, order: Ordering) -> u64 {
            let (lo, hi) = self.halves();
            join(lo.load(order), hi.load(order))
        }

        /// As `AtomicU64::store` (two stores).
        pub fn store(&self, val: u64, order: Ordering) {
            let (lo, hi) = self.halves();
            lo.store(val as u32, order);
            hi.store((val >> 32) as u32, order);
        }

        /// As `AtomicU64::swap` (two swaps).
        pub fn swap(&self, val: u64, order: Ordering) -> u64 {
            let (lo, hi) = self.halves();
            join(
                lo.swap(val as u32, order),
                hi.swap((val >> 32) as u32, order),
            )
        }

        /// As `AtomicU64::fetch_or`: one `fetch_or` per half with bits to set (the other half
        /// is only loaded).
        pub fn fetch_or(&self, val: u64, order: Ordering) -> u64 {
            let (lo, hi) = self.halves();
            let (vl, vh) = (val as u32, (val >> 32) as u32);
            let l = if vl != 0 {
                lo.fetch_or(vl, order)
            } else {
                lo.load(order)
            };
            let h = if vh != 0 {
                hi.fetch_or(vh, order)
            } else {
                hi.load(order)
            };
            join(l, h)
        }

        /// As `AtomicU64::fetch_and`: one `fetch_and` per half with bits to clear (the other
        /// half is only loaded).
        pub fn fetch_and(&self, val: u64, order: Ordering) -> u64 {
            let (lo, hi) = self.halves();
            let (vl, vh) = (val as u32, (val >> 32) as u32);
            let l = if vl != u32::MAX {
                lo.fetch_and(vl, order)
            } else {
                lo.load(order)
            };
            let h = if vh != u32::MAX {
                hi.fetch_and(vh, order)
            } else {
                hi.load(order)
            };
            join(l, h)
        }
    }
}

/// A published `Arc<T>` that readers borrow inside an RCU read-side section.
///
/// * [`load`](Self::load) is one acquire load; the borrow lives as long as the guard.
/// * [`replace`](Self::replace) swaps the value and, if there was an old one, waits for a grace
///   period ([`rcu::synchronize`]) before handing it back, so no reader can still hold it.
pub(crate) struct RcuArc<T> {
    ptr: AtomicPtr<T>,
    _owns: PhantomData<Arc<T>>,
}

impl<T> fmt::Debug for RcuArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcuArc")
            .field("set", &!self.ptr.load(Ordering::Relaxed).is_null())
            .finish()
    }
}

fn into_raw<T>(value: Option<Arc<T>>) -> *mut T {
    value.map_or(ptr::null_mut(), |a| Arc::into_raw(a).cast_mut())
}

impl<T: Send + Sync> RcuArc<T> {
    /// A cell holding `value`.
    pub(crate) fn new(value: Option<Arc<T>>) -> Self {
        RcuArc {
            ptr: AtomicPtr::new(into_raw(value)),
            _owns: PhantomData,
        }
    }

    /// The current value, borrowed for as long as the read-side section lasts.
    #[inline(always)]
    pub(crate) fn load<'a>(&'a self, _guard: &'a RcuGuard) -> Option<&'a T> {
        // Acquire pairs with the release in `replace`: the pointee's initialisation is visible.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Arc::into_raw` and this cell still owns that
        // strong reference, or owned it when the current read-side section began; `replace`
        // only gives the reference up after a grace period, which cannot end while `_guard`
        // is alive. The borrow is bounded by the guard's lifetime.
        unsafe { p.as_ref() }
    }

    /// A counted reference to the current value, for slow paths that must hold it across a
    /// grace period (they may not stay inside a read-side section).
    pub(crate) fn load_arc(&self) -> Option<Arc<T>> {
        let guard = rcu::read();
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: as in `load`, `p` is a live `Arc` allocation for the duration of `guard`;
        // adding a strong reference keeps it alive afterwards.
        unsafe { Arc::increment_strong_count(p.cast_const()) };
        // SAFETY: the strong reference added just above is the one this `Arc` takes over.
        let arc = unsafe { Arc::from_raw(p.cast_const()) };
        drop(guard);
        Some(arc)
    }

    /// True if the cell holds a value right now.
    pub(crate) fn is_set(&self) -> bool {
        !self.ptr.load(Ordering::Acquire).is_null()
    }

    /// Publishes `value` and returns the previous one once no reader can see it any more.
    ///
    /// Must not be called inside a read-side section (it waits for a grace period and panics
    /// there, see [`rcu::synchronize`]). Callers serialise their `replace` calls on one cell
    /// (the domain's event lock, the domain table lock).
    pub(crate) fn replace(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        // Release publishes the new value's initialisation to readers' acquire loads.
        let old = self.ptr.swap(into_raw(value), Ordering::AcqRel);
        if old.is_null() {
            return None;
        }
        rcu::synchronize();
        // SAFETY: `old` came from `Arc::into_raw` and the cell owned that strong reference;
        // it is unpublished and a grace period has passed, so no borrow from `load` remains.
        Some(unsafe { Arc::from_raw(old.cast_const()) })
    }
}

impl<T> Drop for RcuArc<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: we own the cell exclusively (`&mut self`), so no reader borrows from it;
            // the pointer came from `Arc::into_raw` and the cell owns that strong reference.
            drop(unsafe { Arc::from_raw(p.cast_const()) });
        }
    }
}

/// What an [`RcuWindow`] can point into: a value that owns a guest page and names a word in it.
pub(crate) trait WindowOwner: Send + Sync {
    /// The page.
    fn page(&self) -> &GuestPage;
    /// Index of the window's first 32-bit word in the page.
    fn first_word(&self) -> usize;
}

/// `N` consecutive 32-bit words of a guest page that readers reach with **one** load: the
/// address of the first word, published next to the [`RcuArc`] that owns the page.
///
/// The send path uses it for a VCPU's `vcpu_info`: a plain `RcuArc` would cost two dependent
/// loads (the owner, then the page's base) before the first guest atomic.
pub(crate) struct RcuWindow<T, const N: usize> {
    /// Address of word `first_word()` of the current owner's page; null if there is none.
    first: AtomicPtr<AtomicU32>,
    owner: RcuArc<T>,
}

impl<T, const N: usize> fmt::Debug for RcuWindow<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcuWindow")
            .field("words", &N)
            .field("owner", &self.owner)
            .finish()
    }
}

/// The address of word `first` of `page`, if `N` words fit from there.
fn window_start<const N: usize>(page: &GuestPage, first: usize) -> *mut AtomicU32 {
    match page.words32().get(first..first.saturating_add(N)) {
        Some(words) => ptr::from_ref(&words[0]).cast_mut(),
        None => ptr::null_mut(),
    }
}

/// The words of an [`RcuWindow`] as one read-side section saw them.
pub(crate) struct WindowView<'g, const N: usize> {
    /// A non-null address published by the window (see [`RcuWindow::view`]).
    first: NonNull<AtomicU32>,
    /// Borrows the window and the read-side section that keeps its page mapped.
    _section: PhantomData<&'g AtomicU32>,
}

impl<'g, const N: usize> WindowView<'g, N> {
    /// Word `i % N` of the window, without a branch: for indexes the host derived from its
    /// own configuration and knows to be below `N` (checked in debug builds). A wrong index
    /// still stays inside the window.
    #[inline(always)]
    pub(crate) fn word(&self, i: usize) -> &'g AtomicU32 {
        debug_assert!(i < N, "window index {i} out of 0..{N}");
        self.word_at(i % N)
    }

    #[inline(always)]
    fn word_at(&self, i: usize) -> &'g AtomicU32 {
        debug_assert!(i < N);
        // SAFETY: `first` was computed by `window_start` from the page of an owner that the
        // window published, with words `first .. first + N` inside that page, so `first + i`
        // (i < N: `word` reduces it modulo N) stays in the same
        // allocation.
        let word = unsafe { self.first.as_ptr().add(i) };
        // SAFETY: that owner is either the current one, or one that `replace` unpublished
        // while the read-side section `'g` was already running: `replace` stores the new
        // address before it swaps owners, and waits for a grace period before it gives the old
        // owner (and its page mapping) up, which cannot end while the section lives. The word
        // is aligned (an element of `words32`) and only ever accessed atomically.
        unsafe { &*word }
    }
}

impl<T: WindowOwner, const N: usize> RcuWindow<T, N> {
    /// A window owned by `value` (none if its words do not fit in its page).
    pub(crate) fn new(value: Arc<T>) -> Self {
        RcuWindow {
            first: AtomicPtr::new(window_start::<N>(value.page(), value.first_word())),
            owner: RcuArc::new(Some(value)),
        }
    }

    /// The current window, usable for as long as the read-side section lasts (`None` if
    /// there is none). One acquire load; every word of the view comes from that one load.
    #[inline(always)]
    pub(crate) fn view<'g>(&'g self, _guard: &'g RcuGuard) -> Option<WindowView<'g, N>> {
        // Acquire pairs with the release in `replace`.
        let first = NonNull::new(self.first.load(Ordering::Acquire))?;
        Some(WindowView {
            first,
            _section: PhantomData,
        })
    }

    /// The owner, for slow paths (see [`RcuArc::load_arc`]).
    pub(crate) fn load_arc(&self) -> Option<Arc<T>> {
        self.owner.load_arc()
    }

    /// Publishes `value` as the new owner and returns the old one once no reader can still
    /// use its words (a grace period). Callers serialise their `replace` calls, and must not
    /// be inside a read-side section.
    pub(crate) fn replace(&self, value: Arc<T>) -> Option<Arc<T>> {
        // The new page is kept alive by `value` until the swap below hands it to `owner`.
        let first = window_start::<N>(value.page(), value.first_word());
        self.first.store(first, Ordering::Release);
        self.owner.replace(Some(value))
    }
}

/// Up to `N` guest pages, added one at a time and never removed while the array lives, whose
/// words readers reach with **one** load: the address of each page's first word, published
/// once the page is owned by the array.
///
/// The FIFO event array uses it: finding a port's event word costs a bounds test and one
/// acquire load, where an array of `OnceLock<GuestPage>` costs the lock's state, then the
/// page's base, and a count of covered ports besides.
pub(crate) struct PageArray<const N: usize> {
    /// Address of word 0 of page `i`; null until page `i` is added.
    first: [AtomicPtr<AtomicU32>; N],
    /// Owns the pages, so they stay mapped as long as the array (and so any borrow of it).
    pages: [std::sync::OnceLock<GuestPage>; N],
}

impl<const N: usize> fmt::Debug for PageArray<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = self.pages.iter().filter(|p| p.get().is_some()).count();
        f.debug_struct("PageArray")
            .field("pages", &present)
            .field("capacity", &N)
            .finish()
    }
}

/// 32-bit words per page.
const WORDS_PER_PAGE: usize = PAGE_SIZE / 4;

impl<const N: usize> PageArray<N> {
    /// An array with no page.
    pub(crate) fn new() -> Self {
        PageArray {
            first: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            pages: std::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }

    /// Adds `page` as page `index`; gives it back if the index is out of range or taken.
    /// Its words are visible to [`word`](Self::word) once this returns (and possibly a
    /// moment before: callers that pair the publication with a fence issue it afterwards).
    pub(crate) fn add(&self, index: usize, page: GuestPage) -> Result<(), GuestPage> {
        let Some(cell) = self.pages.get(index) else {
            return Err(page);
        };
        cell.set(page)?;
        if let (Some(page), Some(first)) = (cell.get(), self.first.get(index)) {
            let word0 = ptr::from_ref(&page.words32()[0]).cast_mut();
            // Release: whoever loads the address also sees the page owned by `pages`.
            first.store(word0, Ordering::Release);
        }
        Ok(())
    }

    /// Word `word % 1024` of page `word / 1024`, if that page was added.
    #[inline(always)]
    pub(crate) fn word(&self, word: u32) -> Option<&AtomicU32> {
        let first = self.first.get(word as usize / WORDS_PER_PAGE)?;
        let first = NonNull::new(first.load(Ordering::Acquire))?;
        // SAFETY: a non-null address was stored by `add`: word 0 of the 1024 words of a page
        // that `pages` owns, so word `word % 1024` is inside that same page.
        let word = unsafe { first.as_ptr().add(word as usize % WORDS_PER_PAGE) };
        // SAFETY: the page was moved into `pages` before its address was published, and stays
        // there, mapped, until the array is dropped, which cannot happen while `&self` is
        // borrowed. The word is aligned (an element of `words32`), and guest words are only
        // ever accessed atomically.
        Some(unsafe { &*word })
    }
}

#[cfg(all(test, not(xen_evtchn_shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn page_array_finds_words_of_added_pages_only() {
        let a = PageArray::<3>::new();
        assert!(a.word(0).is_none());
        let p1 = GuestPage::new_zeroed();
        assert!(a.add(1, p1.clone()).is_ok());
        assert!(a.word(1023).is_none(), "page 0 was not added");
        a.word(1024 + 7).unwrap().store(9, Ordering::SeqCst);
        assert_eq!(p1.words32()[7].load(Ordering::SeqCst), 9);
        assert!(a.add(1, GuestPage::new_zeroed()).is_err(), "index taken");
        assert!(
            a.add(3, GuestPage::new_zeroed()).is_err(),
            "index out of range"
        );
        assert!(a.word(3 * 1024).is_none());
        assert!(a.word(u32::MAX).is_none());
    }

    #[test]
    fn accessors_reject_out_of_bounds_and_misaligned_offsets() {
        let page = GuestPage::new_zeroed();
        assert!(page.atomic_u8(PAGE_SIZE - 1).is_some());
        assert!(page.atomic_u8(PAGE_SIZE).is_none());
        assert!(page.atomic_u32(PAGE_SIZE - 4).is_some());
        assert!(page.atomic_u32(PAGE_SIZE - 2).is_none());
        assert!(page.atomic_u32(2).is_none());
        assert!(page.atomic_u64(PAGE_SIZE - 8).is_some());
        assert!(page.atomic_u64(PAGE_SIZE - 4).is_none());
        assert!(page.atomic_u64(usize::MAX).is_none());
        assert!(page.atomic_u32(usize::MAX - 2).is_none());
    }

    #[test]
    fn accessors_alias_the_same_bytes_little_endian() {
        let page = GuestPage::new_zeroed();
        page.atomic_u64(16)
            .unwrap()
            .store(0x1122_3344_5566_7788, Ordering::SeqCst);
        assert_eq!(
            page.atomic_u32(16).unwrap().load(Ordering::SeqCst),
            0x5566_7788
        );
        assert_eq!(
            page.atomic_u32(20).unwrap().load(Ordering::SeqCst),
            0x1122_3344
        );
        assert_eq!(page.atomic_u8(16).unwrap().load(Ordering::SeqCst), 0x88);
        let clone = page.clone();
        assert!(clone.same_page(&page));
        assert!(!GuestPage::new_zeroed().same_page(&page));
        assert_eq!(page.as_ptr() as usize % PAGE_SIZE, 0);
    }

    #[test]
    fn rcu_arc_replace_returns_the_old_value_after_readers_leave() {
        let cell = RcuArc::new(Some(Arc::new(1u32)));
        {
            let g = rcu::read();
            assert_eq!(cell.load(&g), Some(&1));
        }
        let old = cell.replace(Some(Arc::new(2)));
        assert_eq!(old.as_deref(), Some(&1));
        assert_eq!(cell.load_arc().as_deref(), Some(&2));
        assert!(cell.is_set());
        assert_eq!(cell.replace(None).as_deref(), Some(&2));
        assert!(!cell.is_set());
        assert!(cell.replace(None).is_none());
    }

    #[test]
    fn rcu_arc_drops_its_value() {
        let value = Arc::new(5u32);
        let cell = RcuArc::new(Some(value.clone()));
        assert_eq!(Arc::strong_count(&value), 2);
        let counted = cell.load_arc().unwrap();
        assert_eq!(Arc::strong_count(&value), 3);
        drop(counted);
        drop(cell);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
