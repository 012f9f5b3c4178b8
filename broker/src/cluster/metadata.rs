//! The cluster metadata log: topic creations, deletions, partition counts and configs, and the
//! producer ids allocated, as
//! records of an internal partition log on the same device. Replaying it rebuilds the topic
//! table, so topic metadata has the same durability and recovery as data, and no side file.
//!
//! Each change is one Kafka record batch with one record whose value is the JSON of a
//! `MetadataRecord` (readable with any Kafka tool that can read the internal log).
//!
//! Compaction: created and deleted topics, configs and producer id blocks would grow the log
//! forever and pin the zones holding it. Once the log holds `compact_bytes_min` and twice what
//! its last snapshot left (`MetadataLog::compact_due`), the live state is appended again as a
//! snapshot (a `CreateTopic` per topic with its partition count and configs, the last producer
//! id block; many records a batch), flushed, and the log start moves to the snapshot
//! (DeleteRecords), which releases the runs before it. Replaying the old records and then the
//! snapshot, or any prefix of it, rebuilds the same state (each snapshot record restates what
//! the records before it left), so a crash anywhere in between recovers the same topics.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::log::batch::{self, Compression, SimpleRecord};
use crate::log::{PartitionId, PartitionLog, FRAME_HEADER_BYTES};

/// The internal topic holding the metadata log (partition 0).
pub const METADATA_TOPIC: &str = "__yotta_metadata";
pub const METADATA_TOPIC_ID: [u8; 16] = *b"yotta.metadata.0";

pub fn metadata_partition_id() -> PartitionId {
    PartitionId { topic: METADATA_TOPIC.to_string(), topic_id: METADATA_TOPIC_ID, partition: 0 }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    CreateTopic { name: String, topic_id: String, partitions: i32, configs: BTreeMap<String, String> },
    DeleteTopic { name: String, topic_id: String },
    /// The partition count after CreatePartitions.
    SetPartitionCount { name: String, topic_id: String, partitions: i32 },
    /// The complete set of overrides after an AlterConfigs or IncrementalAlterConfigs.
    SetConfigs { name: String, topic_id: String, configs: BTreeMap<String, String> },
    /// Producer ids below `end` may have been handed out (InitProducerId): ids are allocated in
    /// blocks, each recorded before its first id is given, so none is reused after a restart.
    ProducerIdBlock { end: i64 },
}

impl MetadataRecord {
    /// The record batch that carries this change.
    pub fn to_batch(&self, now_ms: i64) -> Vec<u8> {
        MetadataRecord::to_batch_of(std::slice::from_ref(self), now_ms)
    }

    /// One record batch carrying `records` in order (a snapshot's).
    pub fn to_batch_of(records: &[MetadataRecord], now_ms: i64) -> Vec<u8> {
        let values: Vec<Vec<u8>> =
            records.iter().map(|record| serde_json::to_vec(record).expect("metadata records serialize")).collect();
        let records: Vec<SimpleRecord> = values.iter().map(|value| SimpleRecord::new(None, Some(value), &[], now_ms)).collect();
        batch::encode_batch(&records, Compression::None).expect("metadata records encode")
    }

    /// The changes in one batch of the metadata log (written by this broker, so a record that
    /// does not parse is a bug or corruption, reported with its position).
    pub fn from_batch(bytes: &Bytes) -> Result<Vec<MetadataRecord>, String> {
        crate::record_log::from_batch(bytes)
    }
}

/// Records per batch of a snapshot (a topic's record is at most a few KiB with its configs, so
/// a batch stays far below a zone).
const SNAPSHOT_RECORDS_PER_BATCH: usize = 128;

/// The metadata log, what its last snapshot left, and the producer id block it last recorded.
pub struct MetadataLog {
    pub(crate) log: PartitionLog,
    /// Log bytes right after the last compaction (or at open).
    compacted_bytes: u64,
    /// The log compacts once it holds at least this many bytes (`BrokerConfig`).
    compact_bytes_min: u64,
    /// The end of the last producer id block recorded: restated by every snapshot.
    producer_id_end: i64,
    /// Compactions since the broker started.
    compactions: u64,
}

impl MetadataLog {
    pub fn new(log: PartitionLog, producer_id_end: i64, compact_bytes_min: u64) -> MetadataLog {
        MetadataLog { compacted_bytes: log.size_bytes(), log, compact_bytes_min, producer_id_end, compactions: 0 }
    }

    /// Takes the bytes a snapshot of `topics` would be as what the last compaction left (at
    /// open: the replayed log may hold much more garbage than that).
    pub fn set_snapshot_bytes(&mut self, topics: &[MetadataRecord]) {
        self.compacted_bytes = topics
            .chunks(SNAPSHOT_RECORDS_PER_BATCH)
            .map(|chunk| (MetadataRecord::to_batch_of(chunk, 0).len() + FRAME_HEADER_BYTES) as u64)
            .sum();
    }

    /// Appends a change and waits until it is durable.
    pub async fn record(&mut self, record: &MetadataRecord, now_ms: i64) -> Result<(), ApiError> {
        let batch = record.to_batch(now_ms);
        self.log.append(BytesMut::from(&batch[..]), now_ms)?;
        self.log.start_flush().complete().await?;
        if let MetadataRecord::ProducerIdBlock { end } = record {
            self.producer_id_end = self.producer_id_end.max(*end);
        }
        Ok(())
    }

    /// Whether the log's garbage has reached the bound (see the module's "Compaction").
    pub fn compact_due(&self) -> bool {
        self.log.size_bytes() >= self.compact_bytes_min.max(2 * self.compacted_bytes)
    }

    /// Rewrites the log as `topics` (the live state, every recorded change applied) and the
    /// last producer id block, then moves the log start to that snapshot.
    pub async fn compact(&mut self, topics: Vec<MetadataRecord>, now_ms: i64) -> Result<(), ApiError> {
        let before_bytes = self.log.size_bytes();
        let snapshot_start = self.log.log_end_offset();
        let mut records = topics;
        if self.producer_id_end > 0 {
            records.push(MetadataRecord::ProducerIdBlock { end: self.producer_id_end });
        }
        for chunk in records.chunks(SNAPSHOT_RECORDS_PER_BATCH) {
            self.log.append(BytesMut::from(&MetadataRecord::to_batch_of(chunk, now_ms)[..]), now_ms)?;
        }
        self.log.start_flush().complete().await?;
        self.log.delete_records(snapshot_start, now_ms)?.complete().await?;
        self.compacted_bytes = self.log.size_bytes();
        self.compactions += 1;
        tracing::info!(before_bytes, after_bytes = self.compacted_bytes, records = records.len(), "metadata log compacted");
        Ok(())
    }

    /// (log bytes, bytes right after the last compaction, compactions since start).
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.log.size_bytes(), self.compacted_bytes, self.compactions)
    }
}

pub fn topic_id_to_hex(topic_id: &[u8; 16]) -> String {
    topic_id.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn topic_id_from_hex(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (index, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_batches() {
        let record = MetadataRecord::CreateTopic {
            name: "orders".into(),
            topic_id: topic_id_to_hex(&[0xab; 16]),
            partitions: 3,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        };
        let batch = Bytes::from(record.to_batch(1));
        assert_eq!(MetadataRecord::from_batch(&batch).unwrap(), vec![record]);
        assert_eq!(topic_id_from_hex(&topic_id_to_hex(&[7; 16])), Some([7; 16]));
        assert_eq!(topic_id_from_hex("zz"), None);
    }
}
