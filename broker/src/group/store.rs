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

/// The group log and the records appended to it but not yet applied to memory.
pub struct GroupLog {
    log: tokio::sync::Mutex<PartitionLog>,
    /// (last offset of the record's batch, record), in log order.
    unapplied: std::sync::Mutex<VecDeque<(i64, GroupRecord)>>,
}

impl GroupLog {
    pub fn new(log: PartitionLog) -> GroupLog {
        GroupLog { log: tokio::sync::Mutex::new(log), unapplied: std::sync::Mutex::new(VecDeque::new()) }
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

    /// Makes everything appended durable (shutdown).
    pub async fn flush(&self) -> Result<(), ApiError> {
        let flush = self.log.lock().await.start_flush();
        flush.complete().await?;
        Ok(())
    }
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
