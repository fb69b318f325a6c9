//! The npm package's heap: power-of-two size classes, each with a free list,
//! on pages from `memory.grow`. It replaces std's dlmalloc, which is ~3 KB
//! of the gzipped SDK (the whole of this is a few hundred bytes of wasm).
//!
//! - A request of `size` bytes aligned to `align` takes a block of the
//!   smallest class `2^k ≥ max(size, align, a pointer)`.
//! - Blocks of a page (64 KiB) or less are cut from a fresh page that holds
//!   blocks of one class only, so every block is aligned to its size. Larger
//!   blocks are whole pages, aligned to a page (more than any Rust type asks;
//!   a larger alignment is refused).
//! - A freed block goes on its class's free list (the link lives in the
//!   block) and the next request of that class takes it back: allocation and
//!   free are O(1), and `realloc` within a class keeps the block. As with
//!   dlmalloc, nothing is given back to the browser (wasm memory cannot
//!   shrink).
//!
//! The price is memory: a block is up to twice its request, a class in use
//! holds at least one page, and a freed block serves its class only, so the
//! heap is the sum of each class's peak rather than the peak of the sum.
//! For the SDK's allocations (strings, JSON, small vectors) that is a few
//! hundred KiB.
//!
//! Unsafe code, audited here: the free lists are raw addresses in the
//! blocks; the state is one `UnsafeCell`, sound because wasm32 without the
//! `atomics` feature has one thread and nothing here calls out (no
//! re-entry). The unit tests drive it natively over an arena that stands in
//! for `memory.grow`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// A wasm page: what `memory.grow` adds at a time.
pub(crate) const PAGE: usize = 65536;

/// One free list per class `2^0 ..= 2^(BITS-1)` (the first few stay unused).
const CLASSES: usize = usize::BITS as usize;

/// The class (log2 of the block size) that serves `layout`; `None` when no
/// block can (larger than the address space, or aligned beyond a page).
fn class(layout: Layout) -> Option<usize> {
    if layout.align() > PAGE {
        return None;
    }
    let need = layout.size().max(layout.align()).max(size_of::<usize>());
    Some(need.checked_next_power_of_two()?.trailing_zeros() as usize)
}

/// The allocator, over `grow`: `grow(pages)` adds that many pages and
/// returns the address of the first (page-aligned), or `None` when memory
/// is exhausted.
pub(crate) struct SizeClasses<G> {
    /// Each class's first free block (0: none); a free block's first word is
    /// the address of the next one.
    free: UnsafeCell<[usize; CLASSES]>,
    grow: G,
}

// SAFETY: wasm32 without the `atomics` target feature runs one thread, so
// the free lists are never touched concurrently.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<G: Sync> Sync for SizeClasses<G> {}

impl<G: Fn(usize) -> Option<usize>> SizeClasses<G> {
    pub(crate) const fn new(grow: G) -> Self {
        SizeClasses { free: UnsafeCell::new([0; CLASSES]), grow }
    }

    /// A block of `class`: the head of its free list, else the first of a
    /// fresh page (or run of pages) whose other blocks go onto the list.
    ///
    /// # Safety
    /// Not called while another call on `self` is running (one thread, no
    /// re-entry).
    unsafe fn take(&self, class: usize) -> *mut u8 {
        // SAFETY: no other reference to the lists exists (see above).
        let free = unsafe { &mut *self.free.get() };
        let head = free[class];
        if head != 0 {
            // SAFETY: `head` is a free block of this class; its first word
            // is the next free block's address (written by `put` or below).
            free[class] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let size = 1usize << class;
        let pages = size.div_ceil(PAGE);
        let Some(base) = (self.grow)(pages) else {
            return ptr::null_mut();
        };
        let blocks = pages * PAGE / size;
        if blocks > 1 {
            // Chain blocks 1.. (the list was empty): each links to the next,
            // the last to nothing. Offsets stay below the page's end, so no
            // address wraps even at the top of a 4 GiB memory.
            for i in 1..blocks {
                let next = if i + 1 < blocks { base + (i + 1) * size } else { 0 };
                // SAFETY: block `i` lies within the pages `grow` just added.
                unsafe { *((base + i * size) as *mut usize) = next };
            }
            free[class] = base + size;
        }
        base as *mut u8
    }

    /// Puts a block of `class` back on its free list.
    ///
    /// # Safety
    /// `block` came from `take(class)` and is no longer used; as for `take`.
    unsafe fn put(&self, block: *mut u8, class: usize) {
        // SAFETY: as in `take`; the block is at least a word long and
        // aligned to a word (classes start at a pointer's size).
        unsafe {
            let free = &mut *self.free.get();
            *(block as *mut usize) = free[class];
            free[class] = block as usize;
        }
    }
}

// SAFETY: blocks of a class never overlap (each is handed out once until it
// is put back) and are aligned to their size (up to a page) or to a page,
// which covers every layout `class` accepts.
unsafe impl<G: Fn(usize) -> Option<usize>> GlobalAlloc for SizeClasses<G> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: the allocator's caller does not re-enter it.
            Some(c) => unsafe { self.take(c) },
            None => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // `layout` is the one `block` was allocated with, so a class exists.
        if let Some(c) = class(layout) {
            // SAFETY: `block` came from `alloc(layout)`, i.e. `take(c)`.
            unsafe { self.put(block, c) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract: `new_size`, rounded up
        // to `layout.align()`, does not overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class(new) == class(layout) {
            return block;
        }
        // SAFETY: as for `alloc` / `dealloc`; the two blocks are distinct.
        unsafe {
            let moved = self.alloc(new);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
            moved
        }
    }
}

/// The wasm heap of the npm package (the `heap` feature; a Rust app that
/// depends on the SDK keeps its own allocator). Not with threads (the
/// `atomics` target feature): there the free lists would need a lock.
#[cfg(all(target_arch = "wasm32", feature = "heap", not(target_feature = "atomics")))]
mod global {
    use super::{SizeClasses, PAGE};

    fn grow(pages: usize) -> Option<usize> {
        let first = core::arch::wasm32::memory_grow(0, pages);
        (first != usize::MAX).then(|| first * PAGE)
    }

    #[global_allocator]
    static HEAP: SizeClasses<fn(usize) -> Option<usize>> = SizeClasses::new(grow);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    /// Stands in for wasm memory: `pages` page-aligned pages, handed out by
    /// a fake `memory.grow`.
    struct Arena {
        base: *mut u8,
        pages: usize,
        used: Cell<usize>,
    }

    impl Arena {
        fn new(pages: usize) -> Arena {
            let layout = Layout::from_size_align(pages * PAGE, PAGE).expect("invariant: a valid layout");
            // SAFETY: a non-zero size.
            let base = unsafe { std::alloc::alloc(layout) };
            assert!(!base.is_null());
            Arena { base, pages, used: Cell::new(0) }
        }

        fn grow(&self, pages: usize) -> Option<usize> {
            let used = self.used.get();
            if used + pages > self.pages {
                return None;
            }
            self.used.set(used + pages);
            Some(self.base as usize + used * PAGE)
        }
    }

    impl Drop for Arena {
        fn drop(&mut self) {
            let layout = Layout::from_size_align(self.pages * PAGE, PAGE).expect("invariant: a valid layout");
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.base, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("invariant: a valid layout")
    }

    #[test]
    fn classes_are_the_next_power_of_two_of_size_and_align() {
        let word = size_of::<usize>().trailing_zeros() as usize;
        assert_eq!(class(layout(1, 1)), Some(word));
        assert_eq!(class(layout(9, 1)), Some(4));
        assert_eq!(class(layout(16, 8)), Some(4));
        assert_eq!(class(layout(17, 4)), Some(5));
        assert_eq!(class(layout(1, 64)), Some(6));
        assert_eq!(class(layout(PAGE, 1)), Some(16));
        assert_eq!(class(layout(PAGE + 1, 1)), Some(17));
        assert_eq!(class(layout(1, PAGE * 2)), None);
    }

    /// Random allocations, frees and reallocations of mixed sizes and
    /// alignments: every block is aligned, inside the arena, disjoint from
    /// every live block (each is filled with its own byte and checked before
    /// it is freed), and keeps its contents through `realloc`.
    #[test]
    fn blocks_are_aligned_disjoint_and_keep_their_contents() {
        let arena = Arena::new(1024);
        let heap = SizeClasses::new(|n| arena.grow(n));
        let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
        let mut seed = 0x2545_f491_u64;
        let mut random = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let check = |at: usize, l: Layout, fill: u8| {
            let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, l.size()) };
            assert!(bytes.iter().all(|&b| b == fill), "block at {at:#x} was overwritten");
        };
        for step in 0..20_000u32 {
            let fill = (step % 251) as u8 + 1;
            if live.len() < 1 + random(128) {
                let size = match random(10) {
                    0 => 1 + random(200_000),
                    1..=3 => 1 + random(4096),
                    _ => 1 + random(64),
                };
                let l = layout(size, 1 << random(5));
                let at = unsafe { heap.alloc(l) } as usize;
                assert_ne!(at, 0, "the arena ran out at step {step}");
                assert_eq!(at % l.align(), 0);
                assert!(at >= arena.base as usize && at + size <= arena.base as usize + arena.used.get() * PAGE);
                if let Some((&before, &(bl, _))) = live.range(..at).next_back() {
                    assert!(before + bl.size() <= at, "overlaps the block at {before:#x}");
                }
                if let Some((&after, _)) = live.range(at..).next() {
                    assert!(at + size <= after, "overlaps the block at {after:#x}");
                }
                unsafe { ptr::write_bytes(at as *mut u8, fill, size) };
                live.insert(at, (l, fill));
            } else {
                let nth = random(live.len());
                let (&at, &(l, old)) = live.iter().nth(nth).expect("invariant: nth < len");
                check(at, l, old);
                live.remove(&at);
                if random(2) == 0 {
                    unsafe { heap.dealloc(at as *mut u8, l) };
                } else {
                    let new_size = 1 + random((l.size() * 2 + 64).min(250_000));
                    let moved = unsafe { heap.realloc(at as *mut u8, l, new_size) } as usize;
                    assert_ne!(moved, 0);
                    let nl = layout(new_size, l.align());
                    let kept = unsafe { std::slice::from_raw_parts(moved as *const u8, l.size().min(new_size)) };
                    assert!(kept.iter().all(|&b| b == old), "realloc lost the contents");
                    unsafe { ptr::write_bytes(moved as *mut u8, fill, new_size) };
                    if let Some((&before, &(bl, _))) = live.range(..moved).next_back() {
                        assert!(before + bl.size() <= moved);
                    }
                    if let Some((&after, _)) = live.range(moved..).next() {
                        assert!(moved + new_size <= after);
                    }
                    live.insert(moved, (nl, fill));
                }
            }
        }
        for (&at, &(l, fill)) in &live {
            check(at, l, fill);
        }
    }

    /// Freed blocks are reused: the same work again, after everything was
    /// freed, takes no new pages; a realloc within a class keeps the block.
    #[test]
    fn freed_blocks_are_reused() {
        let arena = Arena::new(64);
        let heap = SizeClasses::new(|n| arena.grow(n));
        let sizes = [8, 24, 100, 3000, 70_000, 5, 640, 200_000];
        let round = |heap: &SizeClasses<_>| {
            let blocks: Vec<_> = sizes.iter().map(|&s| (unsafe { heap.alloc(layout(s, 8)) }, s)).collect();
            for &(b, s) in &blocks {
                assert!(!b.is_null());
                unsafe { heap.dealloc(b, layout(s, 8)) };
            }
        };
        round(&heap);
        let pages = arena.used.get();
        round(&heap);
        round(&heap);
        assert_eq!(arena.used.get(), pages);

        let b = unsafe { heap.alloc(layout(40, 8)) };
        assert_eq!(unsafe { heap.realloc(b, layout(40, 8), 64) }, b);
        let moved = unsafe { heap.realloc(b, layout(64, 8), 65) };
        assert_ne!(moved, b);
        assert_eq!(unsafe { heap.alloc(layout(64, 8)) }, b, "the old block went back on its list");
    }

    #[test]
    fn exhaustion_and_huge_alignment_are_null_not_a_panic() {
        let arena = Arena::new(2);
        let heap = SizeClasses::new(|n| arena.grow(n));
        assert!(unsafe { heap.alloc(layout(3 * PAGE, 8)) }.is_null());
        assert!(unsafe { heap.alloc(layout(8, PAGE * 2)) }.is_null());
        assert!(!unsafe { heap.alloc(layout(PAGE, 8)) }.is_null());
        assert!(!unsafe { heap.alloc(layout(PAGE, 8)) }.is_null());
        assert!(unsafe { heap.alloc(layout(8, 8)) }.is_null());
    }
}
