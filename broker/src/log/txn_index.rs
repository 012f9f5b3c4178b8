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

use std::collections::{HashMap, HashSet, VecDeque};

use super::batch::BatchHeader;
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

/// Drops, from batches read in offset order, what a read_committed consumer drops: control
/// batches and the batches of aborted transactions (Kafka's consumer algorithm, for the
/// broker's own readers: views and SQL over topics).
pub struct AbortedFilter {
    /// Aborted transactions not yet reached, by first offset.
    pending: VecDeque<AbortedTxn>,
    /// Producers whose aborted transaction is being read.
    aborting: HashSet<i64>,
}

impl AbortedFilter {
    /// For a read from some offset on: `aborted` as `TxnIndex::aborted_between` lists them.
    pub fn new(mut aborted: Vec<AbortedTxn>) -> AbortedFilter {
        aborted.sort_by_key(|txn| txn.first_offset);
        AbortedFilter { pending: aborted.into(), aborting: HashSet::new() }
    }

    /// Whether the batch with `header` holds committed records (the next batch in order).
    pub fn keeps(&mut self, header: &BatchHeader) -> bool {
        while self.pending.front().is_some_and(|txn| txn.first_offset <= header.base_offset) {
            let txn = self.pending.pop_front().expect("checked");
            self.aborting.insert(txn.producer_id);
        }
        if header.is_control() {
            // The abort marker ends the producer's aborted transaction.
            self.aborting.remove(&header.producer_id);
            return false;
        }
        !(header.is_transactional() && self.aborting.contains(&header.producer_id))
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

    #[test]
    fn the_filter_drops_markers_and_aborted_batches_only() {
        let batch = |base_offset: i64, producer_id: i64, attributes: i16| BatchHeader {
            base_offset,
            batch_length_bytes: 0,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 1,
        };
        let (data, marker) = (0x10, 0x30);
        // Producer 1 aborts 1..=4, producer 2 commits 2..=5, producer 1 commits 6..=7.
        let log = [
            (batch(0, -1, 0), true),
            (batch(1, 1, data), false),
            (batch(2, 2, data), true),
            (batch(3, 1, data), false),
            (batch(4, 1, marker), false),
            (batch(5, 2, marker), false),
            (batch(6, 1, data), true),
            (batch(7, 1, marker), false),
        ];
        let aborted = vec![AbortedTxn { producer_id: 1, first_offset: 1, last_offset: 4 }];
        let mut filter = AbortedFilter::new(aborted.clone());
        for (header, kept) in &log {
            assert_eq!(filter.keeps(header), *kept, "offset {}", header.base_offset);
        }
        // A read from the middle of the aborted transaction.
        let mut filter = AbortedFilter::new(aborted);
        assert!(!filter.keeps(&log[3].0));
        assert!(!filter.keeps(&log[4].0), "its abort marker");
        assert!(filter.keeps(&log[6].0), "the producer's next transaction, committed");
    }
}
