//! A partition's transactions: which are open, where each began, and which were aborted, as
//! Kafka's `ProducerStateManager` (ongoing transactions) and `TransactionIndex` (aborted ones)
//! keep them.
//!
//! Why: a read_committed consumer may read only below the **last stable offset** (LSO), the
//! first offset of the earliest transaction still open here (or the high watermark when none
//! is), and it drops the records of aborted transactions, which the fetch lists with their
//! producer id and first offset. The client does the dropping: the broker serves batches
//! unchanged.
//!
//! The log is the truth: like producer state, the index is rebuilt at recovery from the zone
//! summaries (each entry records its batch's `TxnRole`), with no side file. Aborted
//! transactions are forgotten as the log start passes their marker; there is no other bound:
//! each entry (24 bytes) stands for a marker batch of 78 bytes on the device.

use std::collections::{HashMap, VecDeque};

use super::control::TxnRole;

/// An aborted transaction's span in this partition: the consumer drops `producer_id`'s
/// records from `first_offset` up to its abort marker at `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Default)]
pub struct TxnIndex {
    /// Producers with a transaction open here, and the offset of its first batch here.
    ongoing: HashMap<i64, i64>,
    /// In marker order, so by `last_offset`.
    aborted: VecDeque<AbortedTxn>,
}

impl TxnIndex {
    /// A batch appended (or recovered, in offset order) at `base_offset..=last_offset`.
    pub fn on_batch(&mut self, producer_id: i64, base_offset: i64, last_offset: i64, role: TxnRole) {
        match role {
            TxnRole::None => {}
            TxnRole::Data => {
                self.ongoing.entry(producer_id).or_insert(base_offset);
            }
            TxnRole::Commit | TxnRole::Abort => {
                // A marker for a transaction that wrote nothing here is still written (Kafka
                // writes one to every partition added): nothing to end then.
                let Some(first_offset) = self.ongoing.remove(&producer_id) else {
                    return;
                };
                if role == TxnRole::Abort {
                    assert!(
                        self.aborted.back().is_none_or(|last| last.last_offset < last_offset),
                        "markers are appended in offset order"
                    );
                    self.aborted.push_back(AbortedTxn { producer_id, first_offset, last_offset });
                }
            }
        }
    }

    /// The offset below which no transaction is open: what read_committed consumers may read.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.ongoing.values().copied().min().map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The aborted transactions a read of `from..to` may hold records of: those whose marker is
    /// at or after `from` and which began before `to` (Kafka's `collectAbortedTxns`).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let at = self.aborted.partition_point(|txn| txn.last_offset < from);
        self.aborted.range(at..).filter(|txn| txn.first_offset < to).copied().collect()
    }

    /// The log start moved to `log_start_offset`: aborted transactions wholly below are gone.
    pub fn on_log_start(&mut self, log_start_offset: i64) {
        while self.aborted.front().is_some_and(|txn| txn.last_offset < log_start_offset) {
            self.aborted.pop_front();
        }
    }

    /// Transactions open here: (producer id, first offset), by first offset.
    pub fn ongoing(&self) -> Vec<(i64, i64)> {
        let mut ongoing: Vec<(i64, i64)> = self.ongoing.iter().map(|(&producer, &first)| (producer, first)).collect();
        ongoing.sort_by_key(|&(producer, first)| (first, producer));
        ongoing
    }

    pub fn aborted_count(&self) -> usize {
        self.aborted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lso_stops_at_the_earliest_open_transaction() {
        let mut index = TxnIndex::default();
        assert_eq!(index.last_stable_offset(10), 10);
        index.on_batch(-1, 10, 14, TxnRole::None);
        index.on_batch(7, 15, 16, TxnRole::Data);
        index.on_batch(8, 17, 17, TxnRole::Data);
        index.on_batch(7, 18, 19, TxnRole::Data);
        assert_eq!(index.last_stable_offset(20), 15);
        assert_eq!(index.last_stable_offset(12), 12, "never above the high watermark");
        index.on_batch(7, 20, 20, TxnRole::Commit);
        assert_eq!(index.last_stable_offset(21), 17);
        index.on_batch(8, 21, 21, TxnRole::Abort);
        assert_eq!(index.last_stable_offset(22), 22);
        assert_eq!(index.ongoing(), vec![]);
        // A marker for a producer with nothing open here changes nothing.
        index.on_batch(9, 22, 22, TxnRole::Abort);
        assert_eq!(index.aborted_count(), 1);
    }

    #[test]
    fn aborted_transactions_are_listed_for_the_reads_they_overlap() {
        let mut index = TxnIndex::default();
        index.on_batch(1, 0, 4, TxnRole::Data);
        index.on_batch(2, 5, 5, TxnRole::Data);
        index.on_batch(1, 6, 6, TxnRole::Abort);
        index.on_batch(2, 7, 9, TxnRole::Data);
        index.on_batch(2, 10, 10, TxnRole::Abort);
        let first = AbortedTxn { producer_id: 1, first_offset: 0, last_offset: 6 };
        let second = AbortedTxn { producer_id: 2, first_offset: 5, last_offset: 10 };
        assert_eq!(index.aborted_between(0, 11), vec![first, second]);
        assert_eq!(index.aborted_between(0, 5), vec![first], "the second began at 5");
        assert_eq!(index.aborted_between(7, 11), vec![second], "the first ended at 6");
        assert_eq!(index.aborted_between(11, 20), vec![]);
        index.on_log_start(7);
        assert_eq!(index.aborted_between(0, 11), vec![second]);
        index.on_log_start(11);
        assert_eq!(index.aborted_count(), 0);
    }
}
