//! A global allocator that counts, per thread, the allocations made while
//! a closure runs, so tests can check that decoders do not allocate (or
//! allocate no more than their input justifies). Include with
//! `#[path = "common/counting_alloc.rs"] mod counting_alloc;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    // Const-initialized cells without destructors: touching them never allocates.
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to `System` unchanged; the counters are
// plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What `f` allocated on this thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocations {
    pub count: usize,
    pub largest: usize,
}

pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Allocations) {
    COUNT.with(|c| c.set(0));
    LARGEST.with(|l| l.set(0));
    let out = f();
    let allocations = Allocations { count: COUNT.with(Cell::get), largest: LARGEST.with(Cell::get) };
    (out, allocations)
}
