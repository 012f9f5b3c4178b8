//! The cluster metadata log: topic creations, deletions, partition counts and configs, and the
//! producer ids allocated, as
//! records of an internal partition log on the same device. Replaying it rebuilds the topic
//! table, so topic metadata has the same durability and recovery as data, and no side file.
//!
//! Each change is one Kafka record batch with one record whose value is the JSON of a
//! `MetadataRecord` (readable with any Kafka tool that can read the internal log).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::batch::{self, Compression, SimpleRecord};
use crate::log::PartitionId;

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
        let value = serde_json::to_vec(self).expect("metadata records serialize");
        let record = SimpleRecord::new(None, Some(&value), &[], now_ms);
        batch::encode_batch(&[record], Compression::None).expect("a one-record batch encodes")
    }

    /// The changes in one batch of the metadata log (written by this broker, so a record that
    /// does not parse is a bug or corruption, reported with its position).
    pub fn from_batch(bytes: &Bytes) -> Result<Vec<MetadataRecord>, String> {
        let records = batch::decode_records(bytes).map_err(|error| error.to_string())?;
        records
            .iter()
            .map(|record| {
                let value = record.value.as_ref().ok_or("metadata record without a value")?;
                serde_json::from_slice(value).map_err(|error| error.to_string())
            })
            .collect()
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
