//! The C allocator's tuning, for a process that serves bursts and must
//! give the memory back after them. glibc keeps what it frees for reuse;
//! a node that held 10,000 connections or ran a burst of argon2 checks
//! would otherwise stay at its peak for good. Other C libraries already
//! return large blocks when freed, and these calls do nothing there.

/// Largest allocation glibc serves from its heaps; larger ones are mapped
/// on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Makes freed large allocations go back to the system at once. glibc
/// otherwise raises its mmap threshold after the first large block is
/// freed (up to 32 MiB), so every later argon2 check's 19 MiB comes from
/// a heap and stays there, one heap per thread that ran one: a burst of
/// logins left a node at 700 MB resident. Setting the threshold fixes it.
/// Other C libraries already unmap large blocks when freed.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is called
    // before the node's threads allocate large blocks.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 {
            tracing::warn!("cannot set the allocator's mmap threshold");
        }
    }
}

/// Gives whole free pages back to the system, from every heap: called when
/// a burst is over (many connections closed), not on every free.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it takes the heaps'
    // locks as malloc does.
    unsafe {
        libc::malloc_trim(0);
    }
}
