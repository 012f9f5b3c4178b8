//! Sparse per-zone indexes: offset -> position and timestamp -> position.
//!
//! One entry per `index_interval_bytes` of frames (Kafka's index.interval.bytes), so memory is
//! bounded by data size / interval, not by batch count. A lookup returns the position to start
//! scanning from; the scan finds the exact batch.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry {
    base_offset: i64,
    position_bytes: u64,
    /// Largest batch max-timestamp of all batches strictly before this entry in the zone, so a
    /// timestamp lookup may start here if this is below the target.
    max_timestamp_before_ms: i64,
}

#[derive(Clone, Debug)]
pub struct ZoneIndex {
    interval_bytes: u64,
    entries: Vec<IndexEntry>,
    last_entry_position_bytes: Option<u64>,
    max_timestamp_ms: i64,
    /// Last offset of the batch holding `max_timestamp_ms` (what Kafka reports for MAX_TIMESTAMP).
    offset_of_max_timestamp: i64,
    /// A lower bound on every record timestamp in the zone (`records::timestamp_lower_bound_ms`
    /// of each batch): a reader of a time range skips the zone when this is above the range.
    min_timestamp_ms: i64,
}

impl ZoneIndex {
    pub fn new(interval_bytes: u64) -> ZoneIndex {
        assert!(interval_bytes > 0);
        ZoneIndex {
            interval_bytes,
            entries: Vec::new(),
            last_entry_position_bytes: None,
            max_timestamp_ms: i64::MIN,
            offset_of_max_timestamp: -1,
            min_timestamp_ms: i64::MAX,
        }
    }

    /// Records a batch appended (or recovered) at `position_bytes`. Batches arrive in order.
    pub fn on_batch(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        position_bytes: u64,
        max_timestamp_ms: i64,
        min_timestamp_ms: i64,
    ) {
        self.min_timestamp_ms = self.min_timestamp_ms.min(min_timestamp_ms);
        let due = match self.last_entry_position_bytes {
            None => true,
            Some(last) => position_bytes >= last + self.interval_bytes,
        };
        if due {
            if let Some(previous) = self.entries.last() {
                assert!(
                    previous.base_offset < base_offset && previous.position_bytes < position_bytes
                );
            }
            self.entries.push(IndexEntry {
                base_offset,
                position_bytes,
                max_timestamp_before_ms: self.max_timestamp_ms,
            });
            self.last_entry_position_bytes = Some(position_bytes);
        }
        if max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = max_timestamp_ms;
            self.offset_of_max_timestamp = last_offset;
        }
    }

    /// Where to start scanning for the batch containing `offset`: (position, base offset of the
    /// batch there). `zone_start` is the zone's first frame position and base offset.
    pub fn position_for_offset(&self, offset: i64, zone_start: (u64, i64)) -> (u64, i64) {
        let after = self
            .entries
            .partition_point(|entry| entry.base_offset <= offset);
        self.entry_before(after, zone_start)
    }

    /// Where to start scanning for the first batch whose max timestamp is >= `timestamp_ms`.
    pub fn position_for_timestamp(&self, timestamp_ms: i64, zone_start: (u64, i64)) -> (u64, i64) {
        let after = self
            .entries
            .partition_point(|entry| entry.max_timestamp_before_ms < timestamp_ms);
        self.entry_before(after, zone_start)
    }

    fn entry_before(&self, after: usize, zone_start: (u64, i64)) -> (u64, i64) {
        match after {
            0 => zone_start,
            n => (
                self.entries[n - 1].position_bytes,
                self.entries[n - 1].base_offset,
            ),
        }
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    /// A lower bound on the zone's record timestamps; i64::MAX for a zone without batches.
    pub fn min_timestamp_ms(&self) -> i64 {
        self.min_timestamp_ms
    }

    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_lookups() {
        let mut index = ZoneIndex::new(1000);
        // Batches of 400 bytes each, offsets 10 apart, timestamps rising then a dip.
        let timestamps = [100, 200, 300, 250, 500, 600, 700];
        for (i, ts) in timestamps.iter().enumerate() {
            index.on_batch(i as i64 * 10, i as i64 * 10 + 9, 4096 + i as u64 * 400, *ts, *ts);
        }
        // Entries at batches 0 (pos 4096), 3 (pos 5296), 6 (pos 6496).
        assert_eq!(index.entry_count(), 3);
        let start = (4096, 0);
        assert_eq!(index.position_for_offset(0, start), (4096, 0));
        assert_eq!(index.position_for_offset(29, start), (4096, 0));
        assert_eq!(index.position_for_offset(30, start), (5296, 30));
        assert_eq!(index.position_for_offset(65, start), (6496, 60));
        assert_eq!(index.position_for_timestamp(250, start), (4096, 0));
        assert_eq!(index.position_for_timestamp(301, start), (5296, 30));
        assert_eq!(index.position_for_timestamp(650, start), (6496, 60));
        assert_eq!(index.position_for_timestamp(701, start), (6496, 60));
        assert_eq!(
            (index.max_timestamp_ms(), index.offset_of_max_timestamp()),
            (700, 69)
        );
    }
}
