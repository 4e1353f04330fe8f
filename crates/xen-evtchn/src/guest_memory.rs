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
//! Every `unsafe` block below states why it is sound. Nothing else in the crate uses `unsafe`
//! (`#![deny(unsafe_code)]` is lifted for this module only).
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::sync::rcu::{self, RcuGuard};
use crate::sync::{Arc, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Size of a guest page, in bytes. Every page this crate maps is exactly this large.
pub const PAGE_SIZE: usize = 4096;

/// Host memory for a page the library or a test owns: 4 KiB of atomics, page-aligned.
#[repr(C, align(4096))]
struct HostPage([AtomicU64; PAGE_SIZE / 8]);

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
#[derive(Clone)]
pub struct GuestPage {
    base: NonNull<u8>,
    /// Held, never read: keeps the mapping alive as long as any clone of the handle.
    _keep_alive: Arc<dyn Send + Sync>,
}

// SAFETY: a GuestPage only hands out shared references to atomics inside the page, which may be
// used from any thread; the keep-alive object is itself Send + Sync.
unsafe impl Send for GuestPage {}
// SAFETY: as above; all access through `&GuestPage` is atomic.
unsafe impl Sync for GuestPage {}

impl fmt::Debug for GuestPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestPage")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
