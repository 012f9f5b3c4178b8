//! A partition's index: its batches as runs in shared zones, offset and time to zone and
//! position.
//!
//! A run is a stretch of one zone holding only this partition's frames (padding aside), in
//! offset order: consecutive appends of one partition to a stream become one run until another
//! partition's frame comes between, the zone changes, or the run reaches `interval_bytes`
//! (Kafka's index.interval.bytes: a lookup scans at most that much before the batch it wants).
//! So a reader of one partition reads only its own batches, and memory is one small entry per
//! run, not per record.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::format::PartitionKey;
use crate::zone::ZoneId;

/// A partition's index and start marker, shared between its log and the garbage collector
/// (which moves runs out of nearly empty zones, see `log::gc`). Locked for memory work only,
/// after the partition's own lock when both are held.
#[derive(Debug)]
pub struct LogIndex {
    pub key: PartitionKey,
    pub runs: PartitionIndex,
    pub start_marker: Option<StartMarker>,
}

pub type SharedIndex = Arc<Mutex<LogIndex>>;

pub fn lock(index: &SharedIndex) -> MutexGuard<'_, LogIndex> {
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The latest log start offset frame of a partition: live (its zone kept) until superseded, so
/// recovery finds the log start even when every batch below it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartMarker {
    pub zone: ZoneId,
    pub sequence: u64,
    pub start_bytes: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub zone: ZoneId,
    /// The zone's incarnation (its header's zone sequence).
    pub sequence: u64,
    pub start_bytes: u64,
    pub end_bytes: u64,
    /// Frame bytes in the run (headers included, padding not): what the run keeps live.
    pub bytes: u64,
    pub base_offset: i64,
    /// The offset after the run's last batch.
    pub end_offset: i64,
    pub max_timestamp_ms: i64,
    /// Last offset of the batch holding `max_timestamp_ms` (what Kafka reports for MAX_TIMESTAMP).
    pub offset_of_max_timestamp: i64,
    /// A lower bound on every record timestamp in the run.
    pub min_timestamp_ms: i64,
}

/// One batch as the index learns it (appended, or found by recovery).
#[derive(Clone, Copy, Debug)]
pub struct IndexedBatch {
    pub zone: ZoneId,
    pub sequence: u64,
    pub start_bytes: u64,
    pub end_bytes: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp_ms: i64,
    pub min_timestamp_ms: i64,
    /// The frame before it in the zone is this partition's previous batch.
    pub follows_previous: bool,
}

#[derive(Clone, Debug)]
pub struct PartitionIndex {
    interval_bytes: u64,
    runs: VecDeque<Run>,
    bytes: u64,
}

impl PartitionIndex {
    pub fn new(interval_bytes: u64) -> PartitionIndex {
        assert!(interval_bytes > 0);
        PartitionIndex {
            interval_bytes,
            runs: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records a batch (batches arrive in offset order). Returns whether it started a new run.
    pub fn on_batch(&mut self, batch: IndexedBatch) {
        assert!(
            self.runs
                .back()
                .is_none_or(|run| run.end_offset == batch.base_offset),
            "batches arrive in offset order"
        );
        let frame_bytes = batch.end_bytes - batch.start_bytes;
        self.bytes += frame_bytes;
        if let Some(run) = self.runs.back_mut() {
            let extends = batch.follows_previous
                && run.zone == batch.zone
                && run.sequence == batch.sequence
                && run.end_bytes <= batch.start_bytes
                && batch.start_bytes - run.start_bytes < self.interval_bytes;
            if extends {
                run.end_bytes = batch.end_bytes;
                run.bytes += frame_bytes;
                run.end_offset = batch.last_offset + 1;
                if batch.max_timestamp_ms > run.max_timestamp_ms {
                    run.max_timestamp_ms = batch.max_timestamp_ms;
                    run.offset_of_max_timestamp = batch.last_offset;
                }
                run.min_timestamp_ms = run.min_timestamp_ms.min(batch.min_timestamp_ms);
                return;
            }
        }
        self.runs.push_back(Run {
            zone: batch.zone,
            sequence: batch.sequence,
            start_bytes: batch.start_bytes,
            end_bytes: batch.end_bytes,
            bytes: frame_bytes,
            base_offset: batch.base_offset,
            end_offset: batch.last_offset + 1,
            max_timestamp_ms: batch.max_timestamp_ms,
            offset_of_max_timestamp: batch.last_offset,
            min_timestamp_ms: batch.min_timestamp_ms,
        });
    }

    pub fn runs(&self) -> &VecDeque<Run> {
        &self.runs
    }

    /// Frame bytes of every run.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The position in `runs()` of the run holding `offset`.
    pub fn run_for_offset(&self, offset: i64) -> Option<usize> {
        let after = self.runs.partition_point(|run| run.base_offset <= offset);
        let at = after.checked_sub(1)?;
        (offset < self.runs[at].end_offset).then_some(at)
    }

    pub fn first(&self) -> Option<&Run> {
        self.runs.front()
    }

    /// Drops the oldest run.
    pub fn pop_front(&mut self) -> Option<Run> {
        let run = self.runs.pop_front()?;
        self.bytes -= run.bytes;
        Some(run)
    }

    /// Replaces the run at `at` by `runs` (the same batches elsewhere: a GC copy).
    pub fn replace(&mut self, at: usize, runs: Vec<Run>) {
        let old = self.runs.remove(at).expect("a run to replace");
        assert_eq!(
            (
                runs.first().map(|run| run.base_offset),
                runs.last().map(|run| run.end_offset)
            ),
            (Some(old.base_offset), Some(old.end_offset))
        );
        assert_eq!(
            runs.iter().map(|run| run.bytes).sum::<u64>(),
            old.bytes,
            "a copy has the same frames"
        );
        for (offset, run) in runs.into_iter().enumerate() {
            self.runs.insert(at + offset, run);
        }
    }

    /// The position of the run starting at `start_bytes` of that zone incarnation.
    pub fn find(&self, zone: ZoneId, sequence: u64, start_bytes: u64) -> Option<usize> {
        self.runs.iter().position(|run| {
            run.zone == zone && run.sequence == sequence && run.start_bytes == start_bytes
        })
    }

    /// Drops every run.
    pub fn drain(&mut self) -> impl Iterator<Item = Run> + '_ {
        self.bytes = 0;
        self.runs.drain(..)
    }

    /// Bytes held in each zone (by zone id), in order of first use.
    pub fn zone_bytes(&self) -> Vec<(ZoneId, u64)> {
        let mut zones: Vec<(ZoneId, u64)> = Vec::new();
        for run in &self.runs {
            match zones.iter_mut().find(|(zone, _)| *zone == run.zone) {
                Some((_, bytes)) => *bytes += run.bytes,
                None => zones.push((run.zone, run.bytes)),
            }
        }
        zones
    }

    /// The distinct zones holding runs, oldest first.
    pub fn zone_ids(&self) -> Vec<ZoneId> {
        let mut zones: Vec<ZoneId> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for run in &self.runs {
            if seen.insert((run.zone, run.sequence)) {
                zones.push(run.zone);
            }
        }
        zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, start: u64, end: u64, follows_previous: bool, ts: i64) -> IndexedBatch {
        IndexedBatch {
            zone: 1,
            sequence: 1,
            start_bytes: start,
            end_bytes: end,
            base_offset: base,
            last_offset: base + 9,
            max_timestamp_ms: ts,
            min_timestamp_ms: ts,
            follows_previous,
        }
    }

    #[test]
    fn runs_join_adjacent_batches_up_to_the_interval() {
        let mut index = PartitionIndex::new(1000);
        index.on_batch(batch(0, 4096, 4496, false, 100));
        index.on_batch(batch(10, 4496, 4896, true, 300));
        index.on_batch(batch(20, 4896, 5296, true, 200));
        // Past the interval: a new run.
        index.on_batch(batch(30, 5296, 5696, true, 50));
        // Another partition's frame came between: a new run.
        index.on_batch(batch(40, 6000, 6400, false, 60));
        let runs: Vec<(i64, i64, u64, u64)> = index
            .runs()
            .iter()
            .map(|run| {
                (
                    run.base_offset,
                    run.end_offset,
                    run.start_bytes,
                    run.end_bytes,
                )
            })
            .collect();
        assert_eq!(
            runs,
            vec![
                (0, 30, 4096, 5296),
                (30, 40, 5296, 5696),
                (40, 50, 6000, 6400)
            ]
        );
        assert_eq!(
            (
                index.runs()[0].max_timestamp_ms,
                index.runs()[0].offset_of_max_timestamp
            ),
            (300, 19)
        );
        assert_eq!(index.run_for_offset(0), Some(0));
        assert_eq!(index.run_for_offset(29), Some(0));
        assert_eq!(index.run_for_offset(30), Some(1));
        assert_eq!(index.run_for_offset(49), Some(2));
        assert_eq!(index.run_for_offset(50), None);
        assert_eq!(index.bytes(), 2000);
        index.pop_front();
        assert_eq!(index.bytes(), 800);
        assert_eq!(index.run_for_offset(5), None);
    }
}
