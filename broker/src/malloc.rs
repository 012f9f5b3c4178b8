//! The C allocator's policy for the broker's large buffers.
//!
//! A produce request of a megabyte is read into an allocation of its own, and its batch stays
//! there while the read cache holds it (`server::connection`, `api::produce`); eviction frees
//! it. glibc serves allocations of 128 KiB and more with a fresh mmap (until its dynamic
//! threshold happens to rise), so each batch would cost a new mapping, a page fault per 4 KiB
//! and an munmap at eviction. From the heap, memory that eviction frees is reused by the next
//! frames without faults. Measured with `bench produce --runs 3 --no-limits` (1.5 GiB through a
//! 1 GiB cache; glibc's settings given through GLIBC_TUNABLES): broker CPU 0.90-0.93 s and
//! about 200,000 page faults with these settings, 1.22-1.31 s and 330,000-365,000 without
//! (0.94-1.03 s and 205,000-225,000 when each batch was still copied out of its frame).

/// Allocations below this come from the heap: glibc's own ceiling for its dynamic threshold,
/// above a produce frame's usual size (1 MiB batches).
const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// The least free heap memory kept rather than returned to the system.
const TRIM_THRESHOLD_BYTES_MIN: usize = 64 << 20;

/// Serves large buffers from the heap and keeps up to `retained_bytes` (the read cache's
/// budget, which turns over through it) of freed memory for reuse. Returns whether the
/// allocator took the settings (only glibc has them).
pub fn keep_large_buffers_in_heap(retained_bytes: usize) -> bool {
    let trim_threshold_bytes = retained_bytes.max(TRIM_THRESHOLD_BYTES_MIN).min(i32::MAX as usize);
    apply(MMAP_THRESHOLD_BYTES, trim_threshold_bytes)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply(mmap_threshold_bytes: usize, trim_threshold_bytes: usize) -> bool {
    let as_int = |bytes: usize| libc::c_int::try_from(bytes).expect("thresholds are below i32::MAX");
    // Safety: mallopt only sets allocator parameters; it is thread-safe in glibc.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(mmap_threshold_bytes)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(trim_threshold_bytes)) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply(_mmap_threshold_bytes: usize, _trim_threshold_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc accepts the settings (it refuses an mmap threshold above its ceiling, so this
    /// fails if the constant is raised past it), and large allocations then still work.
    #[test]
    fn glibc_takes_the_settings() {
        assert_eq!(keep_large_buffers_in_heap(1 << 30), cfg!(all(target_os = "linux", target_env = "gnu")));
        let buffers: Vec<Vec<u8>> = (0..8).map(|index| vec![index as u8; 1 << 20]).collect();
        assert!(buffers.iter().enumerate().all(|(index, buffer)| buffer.iter().all(|&byte| byte == index as u8)));
    }
}
