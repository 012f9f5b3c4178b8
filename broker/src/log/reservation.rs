//! `Reservation`: bytes counted in a shared total while alive (the readahead budget).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Reservation {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `bytes` if the total stays within `max`.
    pub fn take(total: &Arc<AtomicUsize>, bytes: usize, max: usize) -> Option<Reservation> {
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved.checked_add(bytes).filter(|&after| after <= max)
            })
            .ok()
            .map(|_| Reservation {
                total: total.clone(),
                bytes,
            })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
