//! Durable group state: committed offsets and group generations, as JSON records of an
//! internal partition log (`__yotta_groups`) on the same device, replayed at start — the same
//! mechanism as the cluster metadata log (`cluster::metadata`), and like it hidden from
//! Metadata responses. Kafka's `__consumer_offsets` plays this part there.
//!
//! A record is applied to the in-memory coordinator only once it is durable, and in log order
//! (`Unapplied`), so what OffsetFetch answers is never something a crash could take back.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::cluster::ApiError;
use crate::log::batch::{self, Compression, SimpleRecord};
use crate::log::{PartitionId, PartitionLog};

/// The internal topic holding the group log (partition 0).
pub const GROUPS_TOPIC: &str = "__yotta_groups";
pub const GROUPS_TOPIC_ID: [u8; 16] = *b"yotta.groups...0";

pub fn groups_partition_id() -> PartitionId {
    PartitionId { topic: GROUPS_TOPIC.to_string(), topic_id: GROUPS_TOPIC_ID, partition: 0 }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub topic: String,
    /// Hex topic id: offsets of a topic deleted (and perhaps recreated) are dropped at replay.
    pub topic_id: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupRecord {
    /// One OffsetCommit request's accepted offsets.
    OffsetCommit { group: String, offsets: Vec<OffsetRecord> },
    /// OffsetDelete.
    OffsetDelete { group: String, partitions: Vec<(String, i32)> },
    /// A new generation: keeps generations increasing across restarts and Empty groups listed.
    GroupMetadata { group: String, protocol_type: Option<String>, generation_id: i32 },
    /// DeleteGroups.
    GroupDelete { group: String },
}

impl GroupRecord {
    pub fn to_batch(&self, now_ms: i64) -> Vec<u8> {
        let value = serde_json::to_vec(self).expect("group records serialize");
        let record = SimpleRecord::new(None, Some(&value), &[], now_ms);
        batch::encode_batch(&[record], Compression::None).expect("a one-record batch encodes")
    }

    pub fn from_batch(bytes: &Bytes) -> Result<Vec<GroupRecord>, String> {
        let records = batch::decode_records(bytes).map_err(|error| error.to_string())?;
        records
            .iter()
            .map(|record| {
                let value = record.value.as_ref().ok_or("group record without a value")?;
                serde_json::from_slice(value).map_err(|error| error.to_string())
            })
            .collect()
    }
}

/// Offsets per OffsetCommit record of a snapshot (each at most ~4.3 KiB with its metadata, so
/// a batch stays far below a zone).
const SNAPSHOT_OFFSETS_PER_RECORD: usize = 256;
/// The log is compacted once it holds this many zones' worth of bytes, and twice what the last
/// snapshot left behind (so that a large state does not compact over and over).
const COMPACT_ZONES: u64 = 4;

/// The group log and the records appended to it but not yet applied to memory.
///
/// Compaction (Kafka compacts `__consumer_offsets` by key): when the log has grown enough, the
/// whole state is appended again as a snapshot and the log start moves to it (DeleteRecords),
/// which releases the zones before it. Replaying a snapshot after the records it summarises
/// (a crash before the log start moved) rebuilds the same state, so no step needs to be atomic.
pub struct GroupLog {
    log: tokio::sync::Mutex<PartitionLog>,
    /// (last offset of the record's batch, record), in log order.
    unapplied: std::sync::Mutex<VecDeque<(i64, GroupRecord)>>,
    /// Log bytes right after the last compaction (or at open).
    compacted_bytes: std::sync::atomic::AtomicU64,
}

impl GroupLog {
    pub fn new(log: PartitionLog) -> GroupLog {
        let compacted_bytes = std::sync::atomic::AtomicU64::new(log.size_bytes());
        GroupLog { log: tokio::sync::Mutex::new(log), unapplied: std::sync::Mutex::new(VecDeque::new()), compacted_bytes }
    }

    /// Compacts the log if it is due (see `GroupLog`). `snapshot` gives the state as records,
    /// once every record written is applied (with `apply`).
    pub async fn compact_if_due(
        &self,
        now_ms: i64,
        mut apply: impl FnMut(&GroupRecord),
        snapshot: impl FnOnce() -> Vec<GroupRecord>,
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
            let batch = record.to_batch(now_ms);
            log.append(BytesMut::from(&batch[..]), now_ms)?;
        }
        log.start_flush().complete().await?;
        log.delete_records(snapshot_start, now_ms)?.complete().await?;
        let after_bytes = log.size_bytes();
        self.compacted_bytes.store(after_bytes, Ordering::Relaxed);
        tracing::info!(before_bytes = size_bytes, after_bytes, records = records.len(), "group log compacted");
        Ok(true)
    }

    /// Appends `record` and waits until it is durable; then applies, with `apply`, every record
    /// durable by now that is not applied yet, in log order. Errors: the log failed.
    pub async fn write(&self, record: GroupRecord, now_ms: i64, mut apply: impl FnMut(&GroupRecord)) -> Result<(), ApiError> {
        let batch = record.to_batch(now_ms);
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

/// The state of `groups` as records that rebuild it: a generation record per group and its
/// offsets in chunks.
pub fn snapshot_records<'a>(groups: impl Iterator<Item = &'a crate::group::coordinator::Group>) -> Vec<GroupRecord> {
    let mut records = Vec::new();
    for group in groups {
        records.push(GroupRecord::GroupMetadata {
            group: group.group_id.clone(),
            protocol_type: group.protocol_type.clone(),
            generation_id: group.generation_id,
        });
        let offsets: Vec<OffsetRecord> = group
            .offsets()
            .iter()
            .map(|((topic, partition), committed)| OffsetRecord {
                topic: topic.clone(),
                topic_id: crate::cluster::metadata::topic_id_to_hex(&committed.topic_id),
                partition: *partition,
                offset: committed.offset,
                leader_epoch: committed.leader_epoch,
                metadata: committed.metadata.clone(),
                commit_timestamp_ms: committed.commit_timestamp_ms,
            })
            .collect();
        for chunk in offsets.chunks(SNAPSHOT_OFFSETS_PER_RECORD) {
            records.push(GroupRecord::OffsetCommit { group: group.group_id.clone(), offsets: chunk.to_vec() });
        }
    }
    records
}

/// Replays the group log from its start: every record, in order.
pub async fn replay(log: &PartitionLog, mut apply: impl FnMut(GroupRecord)) -> Result<(), String> {
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    while offset < high_watermark {
        let batches = log.read(offset, 1 << 20).map_err(|e| e.to_string())?.execute().await.map_err(|e| e.to_string())?;
        if batches.is_empty() {
            return Err(format!("group log: no batch at offset {offset} below {high_watermark}"));
        }
        for bytes in &batches {
            let header = crate::log::batch::parse_header(bytes).map_err(|e| e.to_string())?;
            offset = header.last_offset() + 1;
            for record in GroupRecord::from_batch(bytes).map_err(|e| format!("group log at {}: {e}", header.base_offset))? {
                apply(record);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_batches() {
        let record = GroupRecord::OffsetCommit {
            group: "g".into(),
            offsets: vec![OffsetRecord {
                topic: "t".into(),
                topic_id: "ab".repeat(16),
                partition: 2,
                offset: 42,
                leader_epoch: -1,
                metadata: Some("meta".into()),
                commit_timestamp_ms: 7,
            }],
        };
        let batch = Bytes::from(record.to_batch(1));
        assert_eq!(GroupRecord::from_batch(&batch).unwrap(), vec![record]);
    }
}
