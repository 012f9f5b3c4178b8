//! The views' memory budget (`serve --view-memory-mib`): the bytes of Arrow data that sealed
//! chunks hold in memory, over all views. Past it, views spill their durable chunks (already
//! written by a checkpoint) by dropping the in-memory copy; queries then read those chunks
//! from their files. The budget is soft: tails and chunks not yet written stay in memory until
//! a checkpoint has written them.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    limit_bytes: usize,
    used_bytes: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit_bytes: usize) -> MemoryBudget {
        assert!(limit_bytes > 0, "a memory budget of zero bytes");
        MemoryBudget {
            limit_bytes,
            used_bytes: AtomicUsize::new(0),
        }
    }

    pub fn unlimited() -> MemoryBudget {
        MemoryBudget::new(usize::MAX)
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn over(&self) -> bool {
        self.used_bytes() > self.limit_bytes
    }

    pub fn add(&self, bytes: usize) {
        self.used_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: usize) {
        let before = self.used_bytes.fetch_sub(bytes, Ordering::Relaxed);
        assert!(before >= bytes, "released {bytes} bytes of {before} held");
    }
}
