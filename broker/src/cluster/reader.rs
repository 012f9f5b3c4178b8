//! `PartitionReader`: everything a reader outside the broker (materialized views, SQL scans,
//! the system tables) may know of a partition, and nothing of how it is stored.
//!
//! Readers used to reach into the partition's lock and its `PartitionLog`; the storage layout
//! (zones per partition today, interleaved zone streams with a per-partition index tomorrow)
//! now stays behind these few calls: the bounds readers may read between, batches from an
//! offset within a byte budget, the offset for a time, the zones holding the partition (for
//! EXPLAIN ANALYZE and the system tables), and a wake-up when new data becomes readable.
//!
//! Every call takes the partition's lock for memory work only and never across an await: a read
//! is planned under the lock and its I/O awaited after (the broker's invariant). A deleted
//! partition answers UNKNOWN_TOPIC_OR_PARTITION.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::futures::Notified;

use super::{ApiError, Partition};
use crate::log::batch;
use crate::log::txn_index::AbortedFilter;
use crate::log::LogError;
use crate::zone::ZoneId;

/// A partition, for reading. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct PartitionReader {
    partition: Arc<Partition>,
}

/// The offsets a reader may read: `log_start_offset..high_watermark`. Everything below the high
/// watermark is durable; nothing above it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub log_start_offset: i64,
    /// Exclusive.
    pub high_watermark: i64,
}

/// Committed batches read, and where the next read starts.
#[derive(Debug, Default)]
pub struct CommittedRead {
    pub batches: Vec<Bytes>,
    pub next_offset: i64,
}

/// What `system.partitions` shows of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    pub bounds: Bounds,
    /// Appended, durable or not (the high watermark follows once flushed).
    pub log_end_offset: i64,
    pub size_bytes: u64,
    /// Zones holding the partition's batches.
    pub zones: Vec<ZoneId>,
    /// Why the partition refuses appends and reads, after a storage failure.
    pub failure: Option<String>,
}

impl Partition {
    /// This partition, for reading.
    pub fn reader(self: &Arc<Partition>) -> PartitionReader {
        PartitionReader {
            partition: self.clone(),
        }
    }
}

impl PartitionReader {
    /// The partition's index in its topic.
    pub fn index(&self) -> i32 {
        self.partition.index
    }

    pub fn bounds(&self) -> Result<Bounds, ApiError> {
        self.partition.with_log(|log| Bounds {
            log_start_offset: log.log_start_offset(),
            high_watermark: log.high_watermark(),
        })
    }

    /// What a committed reader (views, SQL over topics: read_committed by default) may read:
    /// [`Bounds`] up to the last stable offset, not the high watermark.
    pub fn committed_bounds(&self) -> Result<Bounds, ApiError> {
        self.partition.with_log(|log| Bounds {
            log_start_offset: log.log_start_offset(),
            high_watermark: log.last_stable_offset(),
        })
    }

    /// [`PartitionReader::committed_bounds`], with the upper one lowered for a reader that
    /// wants no record later than `timestamp_ms_max`: from the returned end on, every record is
    /// later (a bound, not exact: records before it may be later too). Never below the log
    /// start offset.
    pub fn bounds_until(&self, timestamp_ms_max: i64) -> Result<Bounds, ApiError> {
        self.partition.with_log(|log| Bounds {
            log_start_offset: log.log_start_offset(),
            high_watermark: if timestamp_ms_max == i64::MAX {
                log.last_stable_offset()
            } else {
                log.end_offset_for_timestamp(timestamp_ms_max).min(log.last_stable_offset())
            },
        })
    }

    /// Whole record batches from the one holding `offset` on, up to about `max_bytes` (at
    /// least one batch when any is readable), all below the high watermark. Empty when
    /// nothing is readable at `offset` (at the high watermark, or removed by retention).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, ApiError> {
        let plan = self
            .partition
            .with_log(|log| log.read(offset, max_bytes))??;
        Ok(plan.execute().await?)
    }

    /// `read`, as a read_committed consumer sees it: only below the last stable offset, without
    /// control batches or the batches of aborted transactions. `next_offset` is where the
    /// following read starts (past what was dropped too).
    pub async fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<CommittedRead, ApiError> {
        let (plan, aborted, end) = self.partition.with_log(|log| {
            let end = log.last_stable_offset();
            (log.read(offset, max_bytes), log.aborted_between(offset, end), end)
        })?;
        let batches = plan?.execute().await?;
        let mut filter = AbortedFilter::new(aborted);
        let mut read = CommittedRead { batches: Vec::with_capacity(batches.len()), next_offset: offset };
        for batch in batches {
            let header = batch::parse_header(&batch).map_err(|error| ApiError::from(LogError::from(error)))?;
            if header.base_offset >= end {
                break;
            }
            read.next_offset = header.last_offset() + 1;
            if filter.keeps(&header) {
                read.batches.push(batch);
            }
        }
        Ok(read)
    }

    /// The offset of the first batch, below the high watermark, whose largest record timestamp
    /// is `timestamp_ms` or later (Kafka's ListOffsets by time, at batch granularity): a reader
    /// of records from that time on can start there. `None` if there is none.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<i64>, ApiError> {
        let plan = self
            .partition
            .with_log(|log| log.offset_for_timestamp(timestamp_ms))??;
        Ok(plan.execute().await?.map(|found| found.offset))
    }

    /// The zone holding `offset`, while the log still has it (scans count the zones they read).
    pub fn zone_for_offset(&self, offset: i64) -> Option<ZoneId> {
        self.partition
            .with_log(|log| log.zone_id_for_offset(offset))
            .ok()
            .flatten()
    }

    /// The zones holding the partition's batches.
    pub fn zones(&self) -> Result<Vec<ZoneId>, ApiError> {
        self.partition.with_log(|log| log.zone_ids())
    }

    /// The bytes of the partition's batches in each zone holding some (zones are shared).
    pub fn zone_bytes(&self) -> Result<Vec<(ZoneId, u64)>, ApiError> {
        self.partition.with_log(|log| log.zone_bytes())
    }

    pub fn status(&self) -> Result<PartitionStatus, ApiError> {
        self.partition.with_log(|log| PartitionStatus {
            bounds: Bounds {
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
            },
            log_end_offset: log.log_end_offset(),
            size_bytes: log.size_bytes(),
            zones: log.zone_ids(),
            failure: log.failure(),
        })
    }

    /// Completes when the high watermark next advances (or the partition is deleted). Enable it
    /// (`Notified::enable`) before looking at the bounds, so that data arriving between the look
    /// and the wait still wakes the reader.
    pub fn notified(&self) -> Notified<'_> {
        self.partition.data_ready.notified()
    }
}
