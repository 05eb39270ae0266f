//! Hands memory that mimalloc (the service's global allocator) holds freed
//! back to the operating system. Rust has no garbage collector to trigger
//! under memory pressure; this is the real equivalent: freed pages of the
//! calling thread's heap (mimalloc 3 collects per thread) are purged, and
//! the process's resident set shrinks by what they held.

/// Collects the calling thread's mimalloc heap, forcing freed memory back
/// to the OS. Call it on each thread that allocates (each actix arbiter).
pub fn collect_this_thread() {
    // SAFETY: `mi_collect` takes a plain bool, touches only mimalloc's own
    // state for the calling thread and is documented as safe to call at any
    // time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
