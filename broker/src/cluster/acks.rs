//! When produces were acknowledged, per partition: what the materializer's freshness figure
//! (ack to visible in a view) is measured from. A bounded ring of (end offset, instant), the end
//! offset being the high watermark the acknowledging flush reached; the oldest entries are
//! forgotten first, so memory is fixed however fast producers go.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Entries kept per partition: at a few thousand acks per second per partition, several
/// seconds of history, more than a view that keeps up needs to find its entries.
pub const ACK_TIMES_MAX: usize = 4096;

#[derive(Default)]
pub struct AckTimes {
    entries: Mutex<VecDeque<(i64, Instant)>>,
}

impl AckTimes {
    /// Records that everything below `end_offset` was acknowledged at `at`.
    pub fn record(&self, end_offset: i64, at: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Flushes complete in order, but their acks are recorded by different tasks: keep the
        // ring sorted by offset so readers can stop early; an out-of-order entry adds nothing
        // (an earlier entry already covers that end offset).
        if entries.back().is_some_and(|&(last, _)| last >= end_offset) {
            return;
        }
        if entries.len() == ACK_TIMES_MAX {
            entries.pop_front();
        }
        entries.push_back((end_offset, at));
        debug_assert!(entries.len() <= ACK_TIMES_MAX);
    }

    /// Entries with `after < end_offset <= through`, oldest first, at most `limit`.
    pub fn between(&self, after: i64, through: i64, limit: usize) -> Vec<(i64, Instant)> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = entries.partition_point(|&(end, _)| end <= after);
        entries.range(start..).take_while(|&&(end, _)| end <= through).take(limit).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_sorted() {
        let acks = AckTimes::default();
        let now = Instant::now();
        for end in 1..=(ACK_TIMES_MAX as i64 + 10) {
            acks.record(end, now);
        }
        acks.record(5, now); // late and covered: ignored
        let all = acks.between(i64::MIN, i64::MAX, usize::MAX);
        assert_eq!(all.len(), ACK_TIMES_MAX);
        assert_eq!(all[0].0, 11);
        let some: Vec<i64> = acks.between(100, 103, 10).into_iter().map(|(end, _)| end).collect();
        assert_eq!(some, [101, 102, 103]);
        assert_eq!(acks.between(100, 200, 2).len(), 2);
    }
}
