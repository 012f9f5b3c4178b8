//! Durable group state: committed offsets and group generations, as records of a
//! `RecordLog` (`__yotta_groups`), replayed at start. Kafka's `__consumer_offsets` plays this
//! part there.

use serde::{Deserialize, Serialize};

use crate::log::PartitionId;
pub use crate::record_log::RecordLog;

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
    /// TxnOffsetCommit: offsets of `producer_id`'s ongoing transaction, committed with it.
    TxnOffsetCommit { group: String, producer_id: i64, offsets: Vec<OffsetRecord> },
    /// The transaction's marker for the group: its offsets become committed, or are dropped.
    TxnOffsetEnd { group: String, producer_id: i64, commit: bool },
}

/// The group log: group records on `__yotta_groups`.
pub type GroupLog = RecordLog<GroupRecord>;

/// Offsets per OffsetCommit record of a snapshot (each at most ~4.3 KiB with its metadata, so
/// a batch stays far below a zone).
const SNAPSHOT_OFFSETS_PER_RECORD: usize = 256;
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
        for (&producer_id, offsets) in group.pending_txn_offsets() {
            for chunk in offsets.chunks(SNAPSHOT_OFFSETS_PER_RECORD) {
                records.push(GroupRecord::TxnOffsetCommit { group: group.group_id.clone(), producer_id, offsets: chunk.to_vec() });
            }
        }
    }
    records
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
        let batch = bytes::Bytes::from(crate::record_log::to_batch(&record, 1));
        assert_eq!(crate::record_log::from_batch::<GroupRecord>(&batch).unwrap(), vec![record]);
    }
}
