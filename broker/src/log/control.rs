//! Transaction markers (Kafka's control batches) and what a batch is to transactions.
//!
//! A transaction ends, in each partition it wrote to, with a control batch from its producer: one
//! record whose key is (version 0, type) with type 0 for abort and 1 for commit, and whose value
//! is (version 0, coordinator epoch). Consumers never see it as a record (clients skip control
//! batches); read_committed consumers use it, through the partition's last stable offset and
//! aborted-transaction list (`txn_index`), to drop what an aborted transaction wrote.
//!
//! Markers are written by the broker only: client batches with the control bit are refused by
//! `batch::validate`. So a control batch read back from the device is one this module encoded,
//! and `role` parses only that fixed shape.

use super::batch::{self, BatchError, BatchHeader};

/// What a batch is to transactions: one byte of its zone summary entry (0 in zones written
/// before transactions existed, which is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnRole {
    /// Not transactional.
    None = 0,
    /// Records of a transaction.
    Data = 1,
    /// The marker that commits its producer's transaction.
    Commit = 2,
    /// The marker that aborts it.
    Abort = 3,
}

impl TxnRole {
    pub fn from_u8(value: u8) -> Option<TxnRole> {
        match value {
            0 => Some(TxnRole::None),
            1 => Some(TxnRole::Data),
            2 => Some(TxnRole::Commit),
            3 => Some(TxnRole::Abort),
            _ => None,
        }
    }

    pub fn is_marker(self) -> bool {
        matches!(self, TxnRole::Commit | TxnRole::Abort)
    }
}

/// The control record key's type for an abort and a commit (Kafka's `ControlRecordType`).
const ABORT_TYPE: i16 = 0;
const COMMIT_TYPE: i16 = 1;

/// The one record of a marker, after the batch header: length 16 (zigzag varint 32), attributes
/// 0, timestamp delta 0, offset delta 0, key length 4 (varint 8), key (version 0, type), value
/// length 6 (varint 12), value (version 0, coordinator epoch), no headers.
const MARKER_RECORD_BYTES: usize = 17;
const RECORDS_AT: usize = batch::BATCH_HEADER_BYTES;
/// The key's type: after the record's length, attributes, both deltas, key length and version.
const TYPE_AT: usize = RECORDS_AT + 7;

/// What `batch` (whole, validated) is to transactions.
pub fn role(batch: &[u8], header: &BatchHeader) -> TxnRole {
    if !header.is_transactional() {
        return TxnRole::None;
    }
    if !header.is_control() {
        return TxnRole::Data;
    }
    match batch.get(TYPE_AT..TYPE_AT + 2).map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]])) {
        Some(COMMIT_TYPE) => TxnRole::Commit,
        Some(ABORT_TYPE) => TxnRole::Abort,
        // Another control type (none is written here): not a marker this broker acts on.
        _ => TxnRole::None,
    }
}

/// A marker batch of `producer_id` at `producer_epoch`, base offset 0 (set at append).
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if commit { COMMIT_TYPE } else { ABORT_TYPE };
    let mut record = Vec::with_capacity(MARKER_RECORD_BYTES);
    record.extend_from_slice(&[32, 0, 0, 0, 8]);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    record.push(12);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    record.push(0);
    assert_eq!(record.len(), MARKER_RECORD_BYTES);
    let attributes = batch::TRANSACTIONAL_BIT | batch::CONTROL_BIT;
    let header = BatchHeader {
        base_offset: 0,
        batch_length_bytes: (RECORDS_AT + MARKER_RECORD_BYTES - batch::LOG_OVERHEAD_BYTES) as i32,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes,
        last_offset_delta: 0,
        base_timestamp_ms: timestamp_ms,
        max_timestamp_ms: timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence: -1,
        record_count: 1,
    };
    let mut out = batch::encode_header(&header);
    out.extend_from_slice(&record);
    batch::seal_crc(&mut out);
    out
}

/// Checks a marker built by `encode_marker` as the log checks any batch it stores.
pub fn validate_marker(marker: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = batch::validate_integrity(marker)?;
    assert!(role(marker, &header).is_marker(), "encode_marker builds markers");
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_decode_as_kafka_control_records() {
        for commit in [true, false] {
            let marker = encode_marker(42, 3, commit, 7, 1_000);
            let header = validate_marker(&marker).unwrap();
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert!(header.is_control() && header.is_transactional());
            let expected = if commit { TxnRole::Commit } else { TxnRole::Abort };
            assert_eq!(role(&marker, &header), expected);
            // kafka-protocol's decoder (a client's view) reads the same control record.
            let records = batch::decode_records(&marker).unwrap();
            assert_eq!(records.len(), 1);
            let key = records[0].key.as_ref().unwrap();
            assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
            assert_eq!(&records[0].value.as_ref().unwrap()[..], &[0, 0, 0, 0, 0, 7]);
        }
    }

    #[test]
    fn client_batches_are_data_or_none() {
        let plain = batch::encode_batch(
            &[batch::SimpleRecord::new(None, Some(b"v"), &[], 1)],
            batch::Compression::None,
        )
        .unwrap();
        let header = batch::parse_header(&plain).unwrap();
        assert_eq!(role(&plain, &header), TxnRole::None);
        let transactional = BatchHeader {
            attributes: batch::TRANSACTIONAL_BIT,
            ..header
        };
        assert_eq!(role(&plain, &transactional), TxnRole::Data);
        for value in 0..4 {
            assert_eq!(TxnRole::from_u8(value).unwrap() as u8, value);
        }
        assert_eq!(TxnRole::from_u8(4), None);
    }
}
