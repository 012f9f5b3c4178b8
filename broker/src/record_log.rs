//! A coordinator's durable state as JSON records of an internal partition log, replayed at
//! start: consumer groups (`group::store`, `__yotta_groups`) and transactions (`txn`,
//! `__yotta_txns`), as Kafka keeps them in `__consumer_offsets` and `__transaction_state`.
//! Internal logs are hidden from Metadata responses.
//!
//! A record is applied to the coordinator's memory only once it is durable, and in log order
//! (`unapplied`), so what a coordinator answers is never something a crash could take back.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::ApiError;
use crate::log::batch::{self, Compression, SimpleRecord};
use crate::log::PartitionLog;

/// A record of a coordinator's log: JSON in a one-record batch.
pub trait Record: Serialize + DeserializeOwned + Send + 'static {}

impl<R: Serialize + DeserializeOwned + Send + 'static> Record for R {}

/// `record` as a one-record batch.
pub fn to_batch<R: Record>(record: &R, now_ms: i64) -> Vec<u8> {
    let value = serde_json::to_vec(record).expect("coordinator records serialize");
    let record = SimpleRecord::new(None, Some(&value), &[], now_ms);
    batch::encode_batch(&[record], Compression::None).expect("a one-record batch encodes")
}

/// The records of a batch `to_batch` wrote.
pub fn from_batch<R: Record>(bytes: &Bytes) -> Result<Vec<R>, String> {
    let records = batch::decode_records(bytes).map_err(|error| error.to_string())?;
    records
        .iter()
        .map(|record| {
            let value = record.value.as_ref().ok_or("a log record without a value")?;
            serde_json::from_slice(value).map_err(|error| error.to_string())
        })
        .collect()
}

/// The log is compacted once it holds this many zones' worth of bytes, and twice what the last
/// snapshot left behind (so that a large state does not compact over and over).
const COMPACT_ZONES: u64 = 4;

/// A coordinator's log and the records appended to it but not yet applied to memory.
///
/// Compaction (Kafka compacts its internal topics by key): when the log has grown enough, the
/// whole state is appended again as a snapshot and the log start moves to it (DeleteRecords),
/// which releases the zones before it. Replaying a snapshot after the records it summarises
/// (a crash before the log start moved) rebuilds the same state, so no step needs to be atomic.
pub struct RecordLog<R> {
    log: tokio::sync::Mutex<PartitionLog>,
    /// (last offset of the record's batch, record), in log order.
    unapplied: std::sync::Mutex<VecDeque<(i64, R)>>,
    /// Log bytes right after the last compaction (or at open).
    compacted_bytes: std::sync::atomic::AtomicU64,
}

impl<R: Record> RecordLog<R> {
    pub fn new(log: PartitionLog) -> RecordLog<R> {
        let compacted_bytes = std::sync::atomic::AtomicU64::new(log.size_bytes());
        RecordLog { log: tokio::sync::Mutex::new(log), unapplied: std::sync::Mutex::new(VecDeque::new()), compacted_bytes }
    }

    /// Compacts the log if it is due (see `GroupLog`). `snapshot` gives the state as records,
    /// once every record written is applied (with `apply`).
    pub async fn compact_if_due(
        &self,
        now_ms: i64,
        mut apply: impl FnMut(&R),
        snapshot: impl FnOnce() -> Vec<R>,
    ) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering;
        let mut log = self.log.lock().await;
        let size_bytes = log.size_bytes();
        let threshold_bytes = (COMPACT_ZONES * log.batch_bytes_max() as u64).max(2 * self.compacted_bytes.load(Ordering::Relaxed));
        if size_bytes < threshold_bytes {
            return Ok(false);
        }
        // Writers wait on the log lock meanwhile: every record appended is in `unapplied`.
        log.start_flush().complete().await?;
        {
            let mut unapplied = self.unapplied.lock().unwrap_or_else(|p| p.into_inner());
            while let Some((_, record)) = unapplied.pop_front() {
                apply(&record);
            }
        }
        let snapshot_start = log.log_end_offset();
        let records = snapshot();
        for record in &records {
            let batch = to_batch(record, now_ms);
            log.append(BytesMut::from(&batch[..]), now_ms)?;
        }
        log.start_flush().complete().await?;
        log.delete_records(snapshot_start, now_ms)?.complete().await?;
        let after_bytes = log.size_bytes();
        self.compacted_bytes.store(after_bytes, Ordering::Relaxed);
        tracing::info!(before_bytes = size_bytes, after_bytes, records = records.len(), "coordinator log compacted");
        Ok(true)
    }

    /// Appends `record` and waits until it is durable; then applies, with `apply`, every record
    /// durable by now that is not applied yet, in log order. Errors: the log failed.
    pub async fn write(&self, record: R, now_ms: i64, mut apply: impl FnMut(&R)) -> Result<(), ApiError> {
        let batch = to_batch(&record, now_ms);
        let (flush, last_offset) = {
            let mut log = self.log.lock().await;
            let appended = log.append(BytesMut::from(&batch[..]), now_ms)?;
            self.unapplied.lock().unwrap_or_else(|p| p.into_inner()).push_back((appended.last_offset, record));
            (log.start_flush(), appended.last_offset)
        };
        let durable_end = flush.complete().await?;
        assert!(durable_end > last_offset, "a completed flush covers what was appended before it");
        // Flushes complete in order: everything up to our record is durable now.
        let mut unapplied = self.unapplied.lock().unwrap_or_else(|p| p.into_inner());
        while unapplied.front().is_some_and(|(offset, _)| *offset <= last_offset) {
            let (_, record) = unapplied.pop_front().expect("non-empty");
            apply(&record);
        }
        Ok(())
    }

    pub async fn size_bytes(&self) -> u64 {
        self.log.lock().await.size_bytes()
    }

    /// Makes everything appended durable (shutdown).
    pub async fn flush(&self) -> Result<(), ApiError> {
        let flush = self.log.lock().await.start_flush();
        flush.complete().await?;
        Ok(())
    }
}

/// Replays a coordinator's log from its start: every record, in order.
pub async fn replay<R: Record>(log: &PartitionLog, mut apply: impl FnMut(R)) -> Result<(), String> {
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    while offset < high_watermark {
        let batches = log.read(offset, 1 << 20).map_err(|e| e.to_string())?.execute().await.map_err(|e| e.to_string())?;
        if batches.is_empty() {
            return Err(format!("coordinator log {}: no batch at offset {offset} below {high_watermark}", log.id().topic));
        }
        for bytes in &batches {
            let header = crate::log::batch::parse_header(bytes).map_err(|e| e.to_string())?;
            offset = header.last_offset() + 1;
            for record in from_batch::<R>(bytes).map_err(|e| format!("coordinator log {} at {}: {e}", log.id().topic, header.base_offset))? {
                apply(record);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Example {
        name: String,
        value: i64,
    }

    #[test]
    fn records_round_trip_through_batches() {
        let record = Example { name: "g".into(), value: 42 };
        let batch = Bytes::from(to_batch(&record, 1));
        assert_eq!(from_batch::<Example>(&batch).unwrap(), vec![record]);
    }
}
