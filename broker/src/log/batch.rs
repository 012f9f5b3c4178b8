//! Kafka record batches, magic v2: zero-copy header parsing, validation, and the few in-place
//! rewrites a broker makes before storing a batch (base offset, partition leader epoch,
//! LogAppendTime).
//!
//! The log stores batches exactly as the producer sent them: compressed payloads are passed
//! through, never re-encoded. Everything here works on borrowed byte slices, and nothing
//! allocates from a size read off the wire, so a hostile length or count costs an error, not
//! memory or a panic.
//!
//! Wire layout (big-endian), offsets in bytes from the start of the batch:
//!
//! ```text
//!  0 baseOffset i64            27 baseTimestamp i64
//!  8 batchLength i32           35 maxTimestamp i64
//! 12 partitionLeaderEpoch i32  43 producerId i64
//! 16 magic i8 (= 2)            51 producerEpoch i16
//! 17 crc u32                   53 baseSequence i32
//! 21 attributes i16            57 recordCount i32
//! 23 lastOffsetDelta i32       61 records...
//! ```
//!
//! batchLength counts the bytes after itself; the CRC is CRC-32C (Castagnoli) over bytes 21..end.
//!
//! The CRC deliberately does not cover baseOffset, batchLength, partitionLeaderEpoch and magic, so a
//! broker can assign offsets and stamp the leader epoch without recomputing it.
//!
//! Two levels of validation:
//! - [`validate_integrity`]: the batch is structurally sound and uncorrupted. Right for batches
//!   the broker itself wrote (control markers, compacted batches with holes or zero records).
//! - [`validate`]: integrity plus the rules Kafka's `LogValidator` applies to batches from
//!   clients (`AppendOrigin.CLIENT`). This is what the Produce path must use.
//!
//! The last section holds a small encoder/decoder built on `kafka-protocol`, for tests and
//! benchmarks only.

use bytes::Bytes;

/// Size of the fixed v2 batch header; records start here.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only batch format this broker accepts (Kafka >= 0.11; Produce v3+ requires it).
pub const RECORD_BATCH_MAGIC_V2: i8 = 2;
/// baseOffset + batchLength: the bytes batchLength does not count (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal batchLength: a full header and no records.
pub const MIN_BATCH_LENGTH_BYTES: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// producerId of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// Smallest possible v2 record: length varint, attributes, then five one-byte varints
/// (timestampDelta, offsetDelta, keyLength, valueLength, headerCount).
pub const MIN_RECORD_BYTES: usize = 7;
/// Smallest record body (what a record's length varint counts).
const MIN_RECORD_BODY_BYTES: i32 = 6;

/// Byte offsets of the header fields.
mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    /// The CRC covers everything from here to the end of the batch.
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
}

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
pub(crate) const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub(crate) const CONTROL_BIT: i16 = 1 << 5;
const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec for an attributes code, `None` for the undefined codes 5-7.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

/// Meaning of the record timestamps (attributes bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker: consumers read `max_timestamp_ms` for every record of the batch.
    LogAppendTime,
}

/// Kafka error codes [`BatchError::kafka_error_code`] maps to.
pub mod error_code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const INVALID_RECORD: i16 = 87;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {needed_bytes} bytes needed, {available_bytes} available")]
    TooShort {
        needed_bytes: usize,
        available_bytes: usize,
    },
    #[error(
        "record batch length field is {batch_length_bytes}, the minimum is {MIN_BATCH_LENGTH_BYTES}"
    )]
    InvalidBatchLength { batch_length_bytes: i32 },
    #[error(
        "record batch declares {declared_bytes} bytes but {actual_bytes} were given \
         (exactly one whole batch expected)"
    )]
    LengthMismatch {
        declared_bytes: usize,
        actual_bytes: usize,
    },
    #[error("unsupported record batch magic {magic}, only magic 2 is supported")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch is corrupt: stored CRC-32C {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record count {record_count} in record batch")]
    InvalidRecordCount { record_count: i32 },
    #[error("invalid lastOffsetDelta {last_offset_delta} for a batch of {record_count} records")]
    InvalidLastOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("unknown compression codec {code} in record batch attributes")]
    UnknownCompression { code: i16 },
    #[error("record batch of {batch_bytes} bytes exceeds the limit of {max_batch_bytes} bytes")]
    BatchTooLarge {
        batch_bytes: usize,
        max_batch_bytes: usize,
    },
    #[error("clients are not allowed to write control batches")]
    ControlBatchNotAllowed,
    #[error("producers must not set the LogAppendTime timestamp type")]
    LogAppendTimeNotAllowed,
    #[error("invalid base sequence {base_sequence} for producer id {producer_id}")]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    #[error("malformed record {record_index} in uncompressed batch: {reason}")]
    MalformedRecords {
        record_index: usize,
        reason: &'static str,
    },
    #[error(
        "base offset {base_offset} is invalid for a batch with lastOffsetDelta {last_offset_delta}"
    )]
    InvalidBaseOffset {
        base_offset: i64,
        last_offset_delta: i32,
    },
}

impl BatchError {
    /// The Kafka error code a Produce response should carry for this error (what Kafka's
    /// broker answers for the same defect).
    pub fn kafka_error_code(&self) -> i16 {
        use error_code::*;
        match self {
            Self::TooShort { .. }
            | Self::InvalidBatchLength { .. }
            | Self::LengthMismatch { .. }
            | Self::CrcMismatch { .. }
            | Self::UnknownCompression { .. }
            | Self::MalformedRecords { .. } => CORRUPT_MESSAGE,
            // Magic 0/1 is a well-formed legacy message set that Produce v3+ forbids; any other
            // magic is garbage.
            Self::UnsupportedMagic { magic: 0 | 1 } => INVALID_RECORD,
            Self::UnsupportedMagic { .. } => CORRUPT_MESSAGE,
            Self::InvalidRecordCount { .. }
            | Self::InvalidLastOffsetDelta { .. }
            | Self::ControlBatchNotAllowed
            | Self::InvalidSequence { .. } => INVALID_RECORD,
            Self::LogAppendTimeNotAllowed => INVALID_TIMESTAMP,
            Self::BatchTooLarge { .. } => MESSAGE_TOO_LARGE,
            // Only the broker's own offset assignment produces this.
            Self::InvalidBaseOffset { .. } => UNKNOWN_SERVER_ERROR,
        }
    }
}

/// The decoded fixed header of a v2 batch. Plain values: it borrows nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the batchLength field; the batch occupies `12 + batch_length_bytes` bytes.
    pub batch_length_bytes: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Bytes the whole batch occupies, header included. A negative length (only possible in a
    /// hand-built header; [`parse_header`] rejects it) counts as zero.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + usize::try_from(self.batch_length_bytes).unwrap_or(0)
    }

    /// Bytes of the (possibly compressed) records section.
    pub fn records_bytes(&self) -> usize {
        self.total_bytes().saturating_sub(BATCH_HEADER_BYTES)
    }

    /// Offset of the last record. Saturates instead of wrapping: a client-sent base offset is
    /// arbitrary until the broker assigns the real one.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        let code = self.attributes & COMPRESSION_MASK;
        Compression::from_code(code).ok_or(BatchError::UnknownCompression { code })
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Set by log compaction once tombstones may be removed (KIP-534).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }

    /// Idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }
}

/// Big-endian field readers. Callers check bounds first (`parse_header` guarantees 61 bytes).
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}
fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(read_array(bytes, at))
}
fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(read_array(bytes, at))
}
fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(read_array(bytes, at))
}

/// Parses the fixed header at the start of `bytes`, which may hold more (the rest of the batch,
/// further batches) or, for the batch itself, less: only the header is bounds-checked here.
/// Checks that the format is v2 and that batchLength could hold a header; nothing else.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let too_short = BatchError::TooShort {
        needed_bytes: BATCH_HEADER_BYTES,
        available_bytes: bytes.len(),
    };
    // The magic byte decides what the other bytes mean, so it is checked before any v2 field
    // is trusted (a legacy v0/v1 message set is shorter and laid out differently).
    let Some(&magic_byte) = bytes.get(field::MAGIC) else {
        return Err(too_short);
    };
    let magic = i8::from_be_bytes([magic_byte]);
    if magic != RECORD_BATCH_MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic { magic });
    }
    let batch_length_bytes = read_i32(bytes, field::BATCH_LENGTH);
    // Rejects negative lengths too: they must never reach a usize conversion.
    if batch_length_bytes < MIN_BATCH_LENGTH_BYTES {
        return Err(BatchError::InvalidBatchLength { batch_length_bytes });
    }
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(too_short);
    }
    Ok(BatchHeader {
        base_offset: read_i64(bytes, field::BASE_OFFSET),
        batch_length_bytes,
        partition_leader_epoch: read_i32(bytes, field::PARTITION_LEADER_EPOCH),
        magic,
        crc: u32::from_be_bytes(read_array(bytes, field::CRC)),
        attributes: read_i16(bytes, field::ATTRIBUTES),
        last_offset_delta: read_i32(bytes, field::LAST_OFFSET_DELTA),
        base_timestamp_ms: read_i64(bytes, field::BASE_TIMESTAMP),
        max_timestamp_ms: read_i64(bytes, field::MAX_TIMESTAMP),
        producer_id: read_i64(bytes, field::PRODUCER_ID),
        producer_epoch: read_i16(bytes, field::PRODUCER_EPOCH),
        base_sequence: read_i32(bytes, field::BASE_SEQUENCE),
        record_count: read_i32(bytes, field::RECORD_COUNT),
    })
}

/// Parses the header of `batch`, which must be exactly one whole batch.
fn parse_exact(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(batch)?;
    let declared_bytes = header.total_bytes();
    if batch.len() < declared_bytes {
        return Err(BatchError::TooShort {
            needed_bytes: declared_bytes,
            available_bytes: batch.len(),
        });
    }
    if batch.len() > declared_bytes {
        return Err(BatchError::LengthMismatch {
            declared_bytes,
            actual_bytes: batch.len(),
        });
    }
    Ok(header)
}

/// Checks that `batch` is exactly one whole, uncorrupted v2 batch:
/// - the length field matches `batch.len()`, and is at least a header;
/// - magic is 2;
/// - the CRC-32C over attributes..end matches (checked before any CRC-covered field is
///   interpreted, so corruption anywhere reports as [`BatchError::CrcMismatch`]);
/// - the compression code is defined;
/// - recordCount >= 0 and lastOffsetDelta >= 0 (zero records and offset holes are legal in
///   batches written by compaction);
/// - for uncompressed batches, recordCount fits in the records section (7 bytes per record at
///   least), so a consumer can trust it as an upper bound when sizing anything.
///
/// Use this for batches the broker wrote itself; use [`validate`] for batches from clients.
pub fn validate_integrity(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_exact(batch)?;
    let computed = crc32c::crc32c(&batch[field::ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let compression = header.compression()?;
    if header.record_count < 0 {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
        });
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::InvalidLastOffsetDelta {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    let max_plausible_records = header.records_bytes() / MIN_RECORD_BYTES;
    if compression == Compression::None
        && usize::try_from(header.record_count).unwrap_or(usize::MAX) > max_plausible_records
    {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
        });
    }
    Ok(header)
}

/// Validates one batch from a producer: [`validate_integrity`] plus the rules Kafka's
/// `LogValidator.validateBatch` applies to client appends (magic v2):
/// - recordCount >= 1 and lastOffsetDelta == recordCount - 1 (Kafka checks this for every
///   v2 client batch, compressed or not: offsets inside a client batch are contiguous);
/// - no control batches (only the transaction coordinator writes those);
/// - an idempotent/transactional batch (producerId >= 0) has baseSequence >= 0;
/// - the timestamp type is CreateTime (producers must not claim LogAppendTime);
/// - uncompressed batches only: the record framing (each record's length varint) tiles the
///   records section exactly and yields recordCount records. Compressed payloads are passed
///   through unopened, so their inner records are not checked here.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_integrity(batch)?;
    check_client_rules(&header, batch)?;
    Ok(header)
}

/// [`validate`] with a size limit (Kafka's `max.message.bytes`, compared with the whole batch,
/// header included). The limit is checked before the CRC pass, so oversized input is rejected
/// without reading it.
pub fn validate_with_limit(
    batch: &[u8],
    max_batch_bytes: usize,
) -> Result<BatchHeader, BatchError> {
    check_size(batch.len(), max_batch_bytes)?;
    validate(batch)
}

fn check_size(batch_bytes: usize, max_batch_bytes: usize) -> Result<(), BatchError> {
    if batch_bytes > max_batch_bytes {
        return Err(BatchError::BatchTooLarge {
            batch_bytes,
            max_batch_bytes,
        });
    }
    Ok(())
}

fn check_client_rules(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    if header.record_count < 1 {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
        });
    }
    // record_count >= 1 here, so the subtraction cannot overflow.
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::InvalidLastOffsetDelta {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    if header.is_control() {
        return Err(BatchError::ControlBatchNotAllowed);
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BatchError::InvalidSequence {
            producer_id: header.producer_id,
            base_sequence: header.base_sequence,
        });
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return Err(BatchError::LogAppendTimeNotAllowed);
    }
    if header.compression()? == Compression::None {
        check_record_framing(&batch[BATCH_HEADER_BYTES..], header.record_count)?;
    }
    Ok(())
}

/// Walks the length prefixes of uncompressed records without decoding their bodies: the
/// records must tile `records` exactly and number `record_count`. This is the part of Kafka's
/// "declared count must match the records" rule that costs no decoding.
fn check_record_framing(records: &[u8], record_count: i32) -> Result<(), BatchError> {
    let declared_records = usize::try_from(record_count).unwrap_or(0);
    let mut position_bytes = 0usize;
    let mut record_index = 0usize;
    while position_bytes < records.len() {
        let malformed = |reason| BatchError::MalformedRecords {
            record_index,
            reason,
        };
        if record_index >= declared_records {
            return Err(malformed("more records than recordCount"));
        }
        let (body_bytes, prefix_bytes) = read_varint_i32(&records[position_bytes..])
            .ok_or_else(|| malformed("truncated or overlong record length varint"))?;
        if body_bytes < MIN_RECORD_BODY_BYTES {
            return Err(malformed("record length below the 6-byte minimum"));
        }
        // body_bytes >= 6 here, so the conversion is lossless; checked_add guards 32-bit usize.
        let end_bytes = usize::try_from(body_bytes)
            .ok()
            .and_then(|body| (position_bytes + prefix_bytes).checked_add(body))
            .filter(|&end| end <= records.len())
            .ok_or_else(|| malformed("record runs past the end of the batch"))?;
        position_bytes = end_bytes;
        record_index += 1;
    }
    if record_index != declared_records {
        return Err(BatchError::MalformedRecords {
            record_index,
            reason: "fewer records than recordCount",
        });
    }
    Ok(())
}

/// Zigzag varint (Kafka's `ByteUtils.readVarint`): value and bytes used; `None` if truncated
/// or longer than the 5 bytes an i32 can take.
fn read_varint_i32(bytes: &[u8]) -> Option<(i32, usize)> {
    let mut raw = 0u64;
    for (index, &byte) in bytes.iter().take(5).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let raw = u32::try_from(raw).ok()?;
            let value = i32::from_ne_bytes(((raw >> 1) ^ (raw & 1).wrapping_neg()).to_ne_bytes());
            return Some((value, index + 1));
        }
    }
    None
}

/// Zigzag varlong (Kafka's `ByteUtils.readVarlong`): value and bytes used; `None` if truncated
/// or longer than the 10 bytes an i64 can take.
fn read_varint_i64(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (index, &byte) in bytes.iter().take(10).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may carry only the top bit of 64.
        if index == 9 && bits > 1 {
            return None;
        }
        raw |= bits << (7 * index);
        if byte & 0x80 == 0 {
            let value = i64::from_ne_bytes(((raw >> 1) ^ (raw & 1).wrapping_neg()).to_ne_bytes());
            return Some((value, index + 1));
        }
    }
    None
}

/// Iterates over the whole batches of a concatenation of batches (a Produce partition's
/// `records`, a fetch range, a recovered log segment). Checks framing only: each yielded slice
/// has a v2 header and exactly the length its header declares. Callers validate each slice
/// ([`validate`] or [`validate_integrity`]) as their origin requires.
///
/// The first error ends the iteration (a truncated trailing batch yields
/// [`BatchError::TooShort`]); [`BatchIter::position_bytes`] then tells where the bad batch
/// starts, which is the truncation point for recovery.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    remaining: &'a [u8],
    max_batch_bytes: usize,
    position_bytes: usize,
    finished: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(batches: &'a [u8]) -> Self {
        Self::with_max_batch_bytes(batches, usize::MAX)
    }

    /// Yields [`BatchError::BatchTooLarge`] for a batch whose declared size exceeds the limit,
    /// before looking at its body.
    pub fn with_max_batch_bytes(batches: &'a [u8], max_batch_bytes: usize) -> Self {
        Self {
            remaining: batches,
            max_batch_bytes,
            position_bytes: 0,
            finished: false,
        }
    }

    /// Byte offset, in the input, of the next batch (or of the batch that failed).
    pub fn position_bytes(&self) -> usize {
        self.position_bytes
    }

    fn next_batch(&mut self) -> Result<(BatchHeader, &'a [u8]), BatchError> {
        let header = parse_header(self.remaining)?;
        let batch_bytes = header.total_bytes();
        check_size(batch_bytes, self.max_batch_bytes)?;
        if batch_bytes > self.remaining.len() {
            return Err(BatchError::TooShort {
                needed_bytes: batch_bytes,
                available_bytes: self.remaining.len(),
            });
        }
        let (batch, rest) = self.remaining.split_at(batch_bytes);
        self.remaining = rest;
        self.position_bytes += batch_bytes;
        Ok((header, batch))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.remaining.is_empty() {
            return None;
        }
        let item = self.next_batch();
        // After an error the remaining bytes have no trustworthy framing: stop for good.
        self.finished = item.is_err();
        Some(item)
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

/// Sets baseOffset (the broker's offset assignment). Not covered by the CRC, so the CRC stays
/// valid. Rejects a negative offset or one whose last offset would overflow i64.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    // Refuse to scribble on bytes that are not a v2 batch header.
    let header = parse_header(batch)?;
    if base_offset < 0
        || base_offset
            .checked_add(i64::from(header.last_offset_delta))
            .is_none()
    {
        return Err(BatchError::InvalidBaseOffset {
            base_offset,
            last_offset_delta: header.last_offset_delta,
        });
    }
    batch[field::BASE_OFFSET..field::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Sets partitionLeaderEpoch, as Kafka's leader does on append. Not covered by the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    parse_header(batch)?;
    batch[field::PARTITION_LEADER_EPOCH..field::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// What Kafka does for a topic with `message.timestamp.type=LogAppendTime`: set the timestamp
/// type bit and maxTimestamp (consumers then use maxTimestamp for every record; record deltas
/// are left alone), and recompute the CRC. `batch` must be exactly one whole batch.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) -> Result<(), BatchError> {
    reseal_with(batch, |header, fields| {
        let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
        fields[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        fields[field::MAX_TIMESTAMP..field::MAX_TIMESTAMP + 8]
            .copy_from_slice(&timestamp_ms.to_be_bytes());
    })
}

/// Sets maxTimestamp to `max_timestamp_ms`, the largest record timestamp (see
/// [`records_max_timestamp_ms`]), as Kafka's `LogValidator` does on every client append
/// (`setMaxTimestamp`): clients may send anything there (older Go clients write -1), and
/// ListOffsets by time and time-bounded reads trust it. Only when the value differs is the
/// batch written and its CRC recomputed (the CRC covers the field): a correct batch costs a
/// comparison. True if the batch was changed. `batch` must be exactly one whole batch.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp_ms: i64) -> Result<bool, BatchError> {
    let header = parse_exact(batch)?;
    if header.max_timestamp_ms == max_timestamp_ms {
        return Ok(false);
    }
    reseal_with(batch, |_, fields| {
        fields[field::MAX_TIMESTAMP..field::MAX_TIMESTAMP + 8]
            .copy_from_slice(&max_timestamp_ms.to_be_bytes());
    })?;
    Ok(true)
}

/// Rewrites header fields covered by the CRC with `edit` (given the parsed header and the
/// header bytes) and recomputes the CRC. The stored CRC is verified first, in the same single
/// pass over the records that produces the new one (CRC-32C combine): recomputing a CRC over
/// corrupted bytes would launder the corruption.
fn reseal_with(
    batch: &mut [u8],
    edit: impl FnOnce(&BatchHeader, &mut [u8]),
) -> Result<(), BatchError> {
    let header = parse_exact(batch)?;
    let records = &batch[BATCH_HEADER_BYTES..];
    let records_crc = crc32c::crc32c(records);
    let records_bytes = records.len();
    let crc_with_header = |batch: &[u8]| {
        let header_crc = crc32c::crc32c(&batch[field::ATTRIBUTES..BATCH_HEADER_BYTES]);
        crc32c::crc32c_combine(header_crc, records_crc, records_bytes)
    };
    let computed = crc_with_header(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    edit(&header, &mut batch[..BATCH_HEADER_BYTES]);
    let crc = crc_with_header(batch);
    batch[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The largest timestamp of a batch's records (baseTimestamp + timestampDelta), or -1 (Kafka's
/// NO_TIMESTAMP) for a batch without records. `records` is the records section: the bytes after
/// the header for an uncompressed batch, the decompressed bytes otherwise. Reads only each
/// record's length, attributes and timestamp delta (no key, value or header is decoded), every
/// length checked against the bytes that remain; at most `header.record_count` records.
pub fn records_max_timestamp_ms(header: &BatchHeader, records: &[u8]) -> Result<i64, BatchError> {
    let mut max_timestamp_ms = -1i64;
    let mut position_bytes = 0usize;
    for record_index in 0..usize::try_from(header.record_count).unwrap_or(0) {
        let malformed = |reason| BatchError::MalformedRecords {
            record_index,
            reason,
        };
        let rest = records.get(position_bytes..).unwrap_or_default();
        let (body_bytes, prefix_bytes) = read_varint_i32(rest)
            .ok_or_else(|| malformed("truncated or overlong record length varint"))?;
        let body = usize::try_from(body_bytes)
            .ok()
            .filter(|&body| body >= MIN_RECORD_BODY_BYTES as usize)
            .and_then(|body| rest.get(prefix_bytes..prefix_bytes.checked_add(body)?))
            .ok_or_else(|| malformed("record length out of bounds"))?;
        // attributes (1 byte), then timestampDelta.
        let (delta_ms, _) = read_varint_i64(&body[1..])
            .ok_or_else(|| malformed("truncated or overlong timestamp delta"))?;
        let timestamp_ms = header
            .base_timestamp_ms
            .checked_add(delta_ms)
            .ok_or_else(|| malformed("timestamp overflows"))?;
        max_timestamp_ms = max_timestamp_ms.max(timestamp_ms);
        position_bytes += prefix_bytes + body.len();
    }
    Ok(max_timestamp_ms)
}

// ---------------------------------------------------------------------------------------------
// Encoder and decoder for tests and benchmarks, on kafka-protocol's RecordBatchEncoder/Decoder.
// Not for the serving path: they copy and allocate, and decoding trusts decompressed sizes.
// ---------------------------------------------------------------------------------------------

/// The header bytes of `header`, CRC as given: the batch is sealed with `seal_crc` once its
/// records follow (the broker's own batches: transaction markers).
pub(crate) fn encode_header(header: &BatchHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES);
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&header.batch_length_bytes.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.extend_from_slice(&header.magic.to_be_bytes());
    out.extend_from_slice(&header.crc.to_be_bytes());
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.record_count.to_be_bytes());
    assert_eq!(out.len(), BATCH_HEADER_BYTES);
    out
}

/// Sets the CRC of one whole batch from its bytes.
pub(crate) fn seal_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[field::ATTRIBUTES..]);
    batch[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Makes a batch an idempotent producer's: sets producerId, producerEpoch and baseSequence, and
/// recomputes the CRC over the whole batch (tests and benchmarks; the broker never rewrites
/// these fields). `batch` must be exactly one whole batch.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Result<(), BatchError> {
    parse_exact(batch)?;
    batch[field::PRODUCER_ID..field::PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[field::BASE_SEQUENCE..field::BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    seal_crc(batch);
    Ok(())
}

/// `set_producer`, for a transactional producer: also sets the transactional attribute (tests
/// and benchmarks; the broker never rewrites a client's batch this way).
pub fn set_transactional_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Result<(), BatchError> {
    let header = parse_exact(batch)?;
    let attributes = header.attributes | TRANSACTIONAL_BIT;
    batch[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    set_producer(batch, producer_id, producer_epoch, base_sequence)
}

/// One record as a test sees it. Duplicate header keys are legal in Kafka but not
/// representable through kafka-protocol (it keys headers by name), so they are rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

impl SimpleRecord {
    pub fn new(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
    ) -> Self {
        Self {
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.map(Bytes::copy_from_slice)))
                .collect(),
            timestamp_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("a record batch needs at least one record")]
    NoRecords,
    #[error("duplicate header key {0:?} (not representable through kafka-protocol)")]
    DuplicateHeaderKey(String),
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    #[error("kafka-protocol: {0}")]
    Protocol(String),
}

/// Decoding refuses batches claiming more records than this (the decoder reserves memory per
/// declared record, and a compressed batch's count cannot be bounded by its size).
const MAX_DECODE_RECORDS: i32 = 1 << 22;

/// Encodes one valid v2 batch as a non-idempotent producer would: base offset 0, offsets
/// 0..n, producer id/epoch -1, base sequence -1, partition leader epoch -1, CreateTime.
/// Needs kafka-protocol's default features (gzip, snappy, lz4, zstd) for compressed batches.
pub fn encode_batch(
    records: &[SimpleRecord],
    compression: Compression,
) -> Result<Vec<u8>, CodecError> {
    use kafka_protocol::records as kp;
    if records.is_empty() {
        return Err(CodecError::NoRecords);
    }
    let mut encoded = Vec::with_capacity(records.len());
    for (offset, record) in (0i64..).zip(records) {
        let mut kp_record = kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: kp::NO_PARTITION_LEADER_EPOCH,
            producer_id: kp::NO_PRODUCER_ID,
            producer_epoch: kp::NO_PRODUCER_EPOCH,
            timestamp_type: kp::TimestampType::Creation,
            offset,
            // kafka-protocol starts a new batch whenever offset - sequence changes; -1 + offset
            // keeps one batch and yields baseSequence -1 (Kafka's NO_SEQUENCE).
            sequence: i32::try_from(offset - 1)
                .map_err(|_| CodecError::Protocol("too many records for one batch".to_string()))?,
            timestamp: record.timestamp_ms,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: Default::default(),
        };
        for (name, value) in &record.headers {
            let name_bytes = kafka_protocol::protocol::StrBytes::from_string(name.clone());
            if kp_record
                .headers
                .insert(name_bytes, value.clone())
                .is_some()
            {
                return Err(CodecError::DuplicateHeaderKey(name.clone()));
            }
        }
        encoded.push(kp_record);
    }
    let kp_compression = match compression {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    };
    let options = kp::RecordEncodeOptions {
        version: RECORD_BATCH_MAGIC_V2,
        compression: kp_compression,
    };
    let mut batch = Vec::new();
    kp::RecordBatchEncoder::encode(&mut batch, &encoded, &options)
        .map_err(|error| CodecError::Protocol(error.to_string()))?;
    // Guards the "exactly one batch" promise against changes in kafka-protocol's batching.
    validate(&batch)?;
    Ok(batch)
}

/// Decodes the records of one whole batch (any codec), after [`validate_integrity`].
/// Test input only: kafka-protocol adds record deltas to the batch's base timestamp and offset
/// unchecked, so a crafted batch with a valid CRC can still make it overflow (a panic in debug
/// builds), and a compressed payload is inflated without a size limit.
pub fn decode_records(batch: &[u8]) -> Result<Vec<SimpleRecord>, CodecError> {
    let header = validate_integrity(batch)?;
    if header.record_count > MAX_DECODE_RECORDS {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
        }
        .into());
    }
    let mut buffer = Bytes::copy_from_slice(batch);
    let record_set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buffer)
        .map_err(|error| CodecError::Protocol(error.to_string()))?;
    Ok(record_set
        .records
        .into_iter()
        .map(|record| SimpleRecord {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(name, value)| (name.as_str().to_string(), value))
                .collect(),
            timestamp_ms: record.timestamp,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample_records() -> Vec<SimpleRecord> {
        vec![
            SimpleRecord::new(
                Some(b"key-0"),
                Some(b"value-0"),
                &[("trace", Some(b"abc")), ("empty", None)],
                1_700_000_000_000,
            ),
            SimpleRecord::new(None, Some(b"no key"), &[], 1_700_000_000_005),
            // A tombstone, with a timestamp before the first record's.
            SimpleRecord::new(Some(b"key-2"), None, &[], 1_699_999_999_990),
        ]
    }

    fn sample_batch(compression: Compression) -> Vec<u8> {
        encode_batch(&sample_records(), compression).expect("encode")
    }

    /// Recomputes the CRC after a test edits CRC-covered fields on purpose.
    fn reseal(batch: &mut [u8]) {
        seal_crc(batch);
    }

    fn write_i16(batch: &mut [u8], at: usize, value: i16) {
        batch[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    fn write_i32(batch: &mut [u8], at: usize, value: i32) {
        batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    fn write_i64(batch: &mut [u8], at: usize, value: i64) {
        batch[at..at + 8].copy_from_slice(&value.to_be_bytes());
    }

    /// A batch with a header and no records, as compaction leaves behind.
    fn empty_batch() -> Vec<u8> {
        let mut batch = vec![0u8; BATCH_HEADER_BYTES];
        write_i32(&mut batch, field::BATCH_LENGTH, MIN_BATCH_LENGTH_BYTES);
        batch[field::MAGIC] = 2;
        write_i64(&mut batch, field::PRODUCER_ID, -1);
        write_i16(&mut batch, field::PRODUCER_EPOCH, -1);
        write_i32(&mut batch, field::BASE_SEQUENCE, -1);
        write_i32(&mut batch, field::LAST_OFFSET_DELTA, 4);
        reseal(&mut batch);
        batch
    }

    #[test]
    fn round_trip_uncompressed_header_fields() {
        let batch = sample_batch(Compression::None);
        let header = validate(&batch).expect("valid");
        assert_eq!(header, parse_header(&batch).unwrap());
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.records_bytes(), batch.len() - BATCH_HEADER_BYTES);
        assert_eq!(header.base_offset, 0);
        assert_eq!(header.magic, RECORD_BATCH_MAGIC_V2);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.last_offset(), 2);
        assert_eq!(header.base_timestamp_ms, 1_699_999_999_990);
        assert_eq!(header.max_timestamp_ms, 1_700_000_000_005);
        assert_eq!(header.producer_id, NO_PRODUCER_ID);
        assert_eq!(header.producer_epoch, -1);
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.partition_leader_epoch, -1);
        assert_eq!(header.compression(), Ok(Compression::None));
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.has_delete_horizon());
        assert!(!header.has_producer_id());
        assert_eq!(decode_records(&batch).unwrap(), sample_records());
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in ALL_CODECS {
            let batch = sample_batch(codec);
            let header = validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(header.compression(), Ok(codec));
            assert_eq!(header.record_count, 3);
            assert_eq!(Compression::from_code(codec.code()), Some(codec));
            assert_eq!(
                decode_records(&batch).unwrap(),
                sample_records(),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn encoder_rejects_what_it_cannot_represent() {
        assert_eq!(
            encode_batch(&[], Compression::None),
            Err(CodecError::NoRecords)
        );
        let duplicate = SimpleRecord::new(None, None, &[("h", None), ("h", Some(b"x"))], 0);
        assert_eq!(
            encode_batch(&[duplicate], Compression::None),
            Err(CodecError::DuplicateHeaderKey("h".to_string()))
        );
    }

    #[test]
    fn crc_detects_any_flipped_byte_from_attributes_on() {
        for codec in [Compression::None, Compression::Zstd] {
            let batch = sample_batch(codec);
            for index in field::ATTRIBUTES..batch.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut corrupt = batch.clone();
                    corrupt[index] ^= mask;
                    assert!(
                        matches!(validate(&corrupt), Err(BatchError::CrcMismatch { .. })),
                        "{codec:?} byte {index} mask {mask:#x}"
                    );
                    assert!(matches!(
                        set_log_append_time(&mut corrupt, 1),
                        Err(BatchError::CrcMismatch { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn crc_field_itself_and_uncovered_prefix() {
        let batch = sample_batch(Compression::None);
        for index in field::CRC..field::ATTRIBUTES {
            let mut corrupt = batch.clone();
            corrupt[index] ^= 0x10;
            assert!(matches!(
                validate(&corrupt),
                Err(BatchError::CrcMismatch { .. })
            ));
        }
        let mut bad_magic = batch.clone();
        bad_magic[field::MAGIC] = 1;
        assert_eq!(
            validate(&bad_magic),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );
        assert_eq!(
            BatchError::UnsupportedMagic { magic: 1 }.kafka_error_code(),
            error_code::INVALID_RECORD
        );
        assert_eq!(
            BatchError::UnsupportedMagic { magic: 9 }.kafka_error_code(),
            error_code::CORRUPT_MESSAGE
        );
    }

    #[test]
    fn set_base_offset_keeps_crc_valid() {
        let mut batch = sample_batch(Compression::Lz4);
        set_base_offset(&mut batch, 1_000_000).unwrap();
        let header = validate(&batch).unwrap();
        assert_eq!(header.base_offset, 1_000_000);
        assert_eq!(header.last_offset(), 1_000_002);
        let before = batch.clone();
        assert!(matches!(
            set_base_offset(&mut batch, -1),
            Err(BatchError::InvalidBaseOffset { .. })
        ));
        assert!(matches!(
            set_base_offset(&mut batch, i64::MAX - 1),
            Err(BatchError::InvalidBaseOffset { .. })
        ));
        assert_eq!(batch, before, "a rejected rewrite must not touch the batch");
        set_base_offset(&mut batch, i64::MAX - 2).unwrap();
        assert_eq!(parse_header(&batch).unwrap().last_offset(), i64::MAX);
    }

    #[test]
    fn set_partition_leader_epoch_keeps_crc_valid() {
        let mut batch = sample_batch(Compression::None);
        set_partition_leader_epoch(&mut batch, 42).unwrap();
        assert_eq!(validate(&batch).unwrap().partition_leader_epoch, 42);
        assert!(set_partition_leader_epoch(&mut batch[..20], 1).is_err());
    }

    #[test]
    fn max_timestamp_is_recomputed_from_the_records_and_resealed() {
        for codec in ALL_CODECS {
            let mut batch = sample_batch(codec);
            let header = validate(&batch).unwrap();
            let inflated;
            let section = match codec {
                Compression::None => &batch[BATCH_HEADER_BYTES..],
                codec => {
                    inflated = super::super::records::decompress(
                        codec,
                        &batch[BATCH_HEADER_BYTES..],
                        1 << 20,
                    )
                    .unwrap();
                    &inflated[..]
                }
            };
            // The tombstone's negative delta does not win: the largest record timestamp does.
            assert_eq!(
                records_max_timestamp_ms(&header, section),
                Ok(1_700_000_000_005),
                "{codec:?}"
            );
            // A right field costs nothing and changes nothing.
            let before = batch.clone();
            assert_eq!(set_max_timestamp(&mut batch, 1_700_000_000_005), Ok(false));
            assert_eq!(batch, before);
            // What older Go clients send: -1. Rewritten, CRC recomputed.
            write_i64(&mut batch, field::MAX_TIMESTAMP, -1);
            reseal(&mut batch);
            assert_eq!(set_max_timestamp(&mut batch, 1_700_000_000_005), Ok(true));
            assert_eq!(
                validate(&batch).unwrap().max_timestamp_ms,
                1_700_000_000_005
            );
            assert_eq!(decode_records(&batch).unwrap(), sample_records());
            // A corrupt batch is not laundered by the rewrite.
            let last = batch.len() - 1;
            batch[last] ^= 1;
            assert!(matches!(
                set_max_timestamp(&mut batch, 1),
                Err(BatchError::CrcMismatch { .. })
            ));
        }
        // No records: -1, Kafka's NO_TIMESTAMP.
        let empty = empty_batch();
        assert_eq!(
            records_max_timestamp_ms(&parse_header(&empty).unwrap(), &[]),
            Ok(-1)
        );
        // Records that end early or claim more than they hold are errors, not panics.
        let batch = sample_batch(Compression::None);
        let header = parse_header(&batch).unwrap();
        for cut in [0, 1, 5, batch.len() - BATCH_HEADER_BYTES - 1] {
            let section = &batch[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + cut];
            assert!(
                matches!(
                    records_max_timestamp_ms(&header, section),
                    Err(BatchError::MalformedRecords { .. })
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn varlong_reader() {
        assert_eq!(read_varint_i64(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint_i64(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint_i64(&[0x02]), Some((1, 1)));
        assert_eq!(
            read_varint_i64(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((i64::MAX, 10))
        );
        assert_eq!(
            read_varint_i64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((i64::MIN, 10))
        );
        assert_eq!(
            read_varint_i64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(read_varint_i64(&[0x80; 11]), None);
        assert_eq!(read_varint_i64(&[0x80]), None);
    }

    #[test]
    fn set_log_append_time_reseals_the_batch() {
        for codec in ALL_CODECS {
            let mut batch = sample_batch(codec);
            set_log_append_time(&mut batch, 1_800_000_000_000).unwrap();
            let header = validate_integrity(&batch).expect("CRC valid after rewrite");
            assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(header.max_timestamp_ms, 1_800_000_000_000);
            assert_eq!(header.compression(), Ok(codec));
            // Producers may not send LogAppendTime: the strict path rejects a stamped batch.
            assert_eq!(validate(&batch), Err(BatchError::LogAppendTimeNotAllowed));
            // Idempotent: stamping again still leaves a valid batch.
            set_log_append_time(&mut batch, 1_800_000_000_001).unwrap();
            assert_eq!(
                validate_integrity(&batch).unwrap().max_timestamp_ms,
                1_800_000_000_001
            );
            assert_eq!(decode_records(&batch).unwrap().len(), 3);
        }
        // No records: the CRC-combine path with an empty second part.
        let mut empty = empty_batch();
        set_log_append_time(&mut empty, 7).unwrap();
        assert_eq!(validate_integrity(&empty).unwrap().max_timestamp_ms, 7);
        // Not exactly one batch.
        let mut two = sample_batch(Compression::None);
        two.extend_from_slice(&sample_batch(Compression::None));
        assert!(matches!(
            set_log_append_time(&mut two, 1),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn integrity_accepts_compacted_shapes_that_clients_may_not_send() {
        let empty = empty_batch();
        let header = validate_integrity(&empty).expect("empty batch is a legal stored batch");
        assert_eq!(header.record_count, 0);
        assert_eq!(header.last_offset(), 4);
        assert_eq!(
            validate(&empty),
            Err(BatchError::InvalidRecordCount { record_count: 0 })
        );
    }

    #[test]
    fn client_rules() {
        let batch = sample_batch(Compression::None);
        let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut copy = batch.clone();
            edit(&mut copy);
            reseal(&mut copy);
            copy
        };

        let control = edited(&|b| write_i16(b, field::ATTRIBUTES, CONTROL_BIT));
        assert!(validate_integrity(&control).is_ok());
        assert_eq!(validate(&control), Err(BatchError::ControlBatchNotAllowed));

        let gap = edited(&|b| write_i32(b, field::LAST_OFFSET_DELTA, 5));
        assert!(validate_integrity(&gap).is_ok());
        assert_eq!(
            validate(&gap),
            Err(BatchError::InvalidLastOffsetDelta {
                last_offset_delta: 5,
                record_count: 3
            })
        );

        let negative_delta = edited(&|b| write_i32(b, field::LAST_OFFSET_DELTA, -1));
        assert!(matches!(
            validate_integrity(&negative_delta),
            Err(BatchError::InvalidLastOffsetDelta { .. })
        ));

        let idempotent_without_sequence = edited(&|b| write_i64(b, field::PRODUCER_ID, 7));
        assert_eq!(
            validate(&idempotent_without_sequence),
            Err(BatchError::InvalidSequence {
                producer_id: 7,
                base_sequence: -1
            })
        );
        let idempotent = edited(&|b| {
            write_i64(b, field::PRODUCER_ID, 7);
            write_i32(b, field::BASE_SEQUENCE, 0);
        });
        assert!(validate(&idempotent).unwrap().has_producer_id());

        for code in 5..=7 {
            let unknown = edited(&|b| write_i16(b, field::ATTRIBUTES, code));
            assert_eq!(
                validate(&unknown),
                Err(BatchError::UnknownCompression { code })
            );
        }

        let negative_count = edited(&|b| write_i32(b, field::RECORD_COUNT, -1));
        assert_eq!(
            validate_integrity(&negative_count),
            Err(BatchError::InvalidRecordCount { record_count: -1 })
        );
        let absurd_count = edited(&|b| write_i32(b, field::RECORD_COUNT, i32::MAX));
        assert_eq!(
            validate_integrity(&absurd_count),
            Err(BatchError::InvalidRecordCount {
                record_count: i32::MAX
            })
        );

        // Count says 4 (and lastOffsetDelta agrees) but only 3 records are framed.
        let overclaim = edited(&|b| {
            write_i32(b, field::RECORD_COUNT, 4);
            write_i32(b, field::LAST_OFFSET_DELTA, 3);
        });
        assert_eq!(
            validate(&overclaim),
            Err(BatchError::MalformedRecords {
                record_index: 3,
                reason: "fewer records than recordCount"
            })
        );
        let underclaim = edited(&|b| {
            write_i32(b, field::RECORD_COUNT, 2);
            write_i32(b, field::LAST_OFFSET_DELTA, 1);
        });
        assert_eq!(
            validate(&underclaim),
            Err(BatchError::MalformedRecords {
                record_index: 2,
                reason: "more records than recordCount"
            })
        );
        // The first record's length prefix claims more bytes than the batch holds.
        let overrun = edited(&|b| b[BATCH_HEADER_BYTES] = 0x7e);
        assert!(matches!(
            validate(&overrun),
            Err(BatchError::MalformedRecords {
                record_index: 0,
                ..
            })
        ));
    }

    #[test]
    fn size_limit() {
        let batch = sample_batch(Compression::None);
        assert!(validate_with_limit(&batch, batch.len()).is_ok());
        let too_large = validate_with_limit(&batch, batch.len() - 1).unwrap_err();
        assert_eq!(
            too_large,
            BatchError::BatchTooLarge {
                batch_bytes: batch.len(),
                max_batch_bytes: batch.len() - 1
            }
        );
        assert_eq!(too_large.kafka_error_code(), error_code::MESSAGE_TOO_LARGE);
    }

    #[test]
    fn exact_length_is_required() {
        let batch = sample_batch(Compression::None);
        let mut trailing = batch.clone();
        trailing.push(0);
        assert_eq!(
            validate(&trailing),
            Err(BatchError::LengthMismatch {
                declared_bytes: batch.len(),
                actual_bytes: batch.len() + 1
            })
        );
        for cut in 0..batch.len() {
            let error = validate(&batch[..cut]).unwrap_err();
            assert!(
                matches!(error, BatchError::TooShort { .. }),
                "cut {cut}: {error}"
            );
            assert_eq!(error.kafka_error_code(), error_code::CORRUPT_MESSAGE);
        }
    }

    #[test]
    fn hostile_batch_lengths() {
        let batch = sample_batch(Compression::None);
        for length in [i32::MIN, -1, 0, 1, MIN_BATCH_LENGTH_BYTES - 1] {
            let mut hostile = batch.clone();
            write_i32(&mut hostile, field::BATCH_LENGTH, length);
            let expected = BatchError::InvalidBatchLength {
                batch_length_bytes: length,
            };
            assert_eq!(parse_header(&hostile), Err(expected.clone()));
            assert_eq!(validate(&hostile), Err(expected.clone()));
            assert_eq!(BatchIter::new(&hostile).next(), Some(Err(expected)));
        }
        for length in [i32::MAX, 1 << 30, 1_000_000] {
            let mut hostile = batch.clone();
            write_i32(&mut hostile, field::BATCH_LENGTH, length);
            let needed_bytes = LOG_OVERHEAD_BYTES + usize::try_from(length).unwrap();
            let expected = BatchError::TooShort {
                needed_bytes,
                available_bytes: batch.len(),
            };
            assert_eq!(validate(&hostile), Err(expected.clone()));
            assert_eq!(BatchIter::new(&hostile).next(), Some(Err(expected)));
            assert!(set_log_append_time(&mut hostile, 1).is_err());
            assert!(matches!(
                BatchIter::with_max_batch_bytes(&hostile, 1 << 19).next(),
                Some(Err(BatchError::BatchTooLarge { .. }))
            ));
        }
    }

    #[test]
    fn iterates_concatenated_batches() {
        let first = sample_batch(Compression::None);
        let second = sample_batch(Compression::Snappy);
        let third = empty_batch();
        let blob = [first.clone(), second.clone(), third.clone()].concat();
        let mut iter = BatchIter::new(&blob);
        let mut seen = Vec::new();
        for item in iter.by_ref() {
            let (header, slice) = item.unwrap();
            assert_eq!(header, validate_integrity(slice).unwrap());
            seen.push(slice.to_vec());
        }
        assert_eq!(seen, vec![first.clone(), second, third]);
        assert_eq!(iter.position_bytes(), blob.len());
        assert_eq!(BatchIter::new(&[]).next(), None);
    }

    #[test]
    fn truncated_trailing_batch_ends_iteration_with_an_error() {
        let batch = sample_batch(Compression::None);
        let blob = [batch.clone(), batch.clone()].concat();
        for cut in batch.len() + 1..blob.len() {
            let mut iter = BatchIter::new(&blob[..cut]);
            assert!(iter.next().unwrap().is_ok());
            assert!(
                matches!(iter.next(), Some(Err(BatchError::TooShort { .. }))),
                "cut {cut}"
            );
            assert_eq!(
                iter.position_bytes(),
                batch.len(),
                "points at the bad batch"
            );
            assert_eq!(iter.next(), None, "fused after an error");
        }
    }

    #[test]
    fn varint_reader() {
        assert_eq!(read_varint_i32(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint_i32(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint_i32(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint_i32(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(
            read_varint_i32(&[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            Some((i32::MAX, 5))
        );
        assert_eq!(
            read_varint_i32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((i32::MIN, 5))
        );
        assert_eq!(
            read_varint_i32(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            None,
            "over 32 bits"
        );
        assert_eq!(
            read_varint_i32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            None,
            "too long"
        );
        assert_eq!(read_varint_i32(&[0x80]), None, "truncated");
        assert_eq!(read_varint_i32(&[]), None);
    }

    /// Everything a caller might do with untrusted bytes; must never panic.
    fn exercise(bytes: &[u8]) {
        let _ = parse_header(bytes);
        let _ = validate(bytes);
        let _ = validate_with_limit(bytes, 1 << 20);
        if let Ok(header) = validate_integrity(bytes) {
            let _ = (
                header.compression(),
                header.last_offset(),
                header.records_bytes(),
            );
            let _ = decode_records(bytes);
        }
        let mut iter = BatchIter::new(bytes);
        let mut batches = 0usize;
        for item in iter.by_ref() {
            match item {
                Ok((header, slice)) => {
                    assert_eq!(slice.len(), header.total_bytes());
                    batches += 1;
                }
                Err(_) => break,
            }
        }
        assert!(batches * BATCH_HEADER_BYTES <= bytes.len());
        assert!(iter.position_bytes() <= bytes.len());
        let mut copy = bytes.to_vec();
        let _ = set_base_offset(&mut copy, 5);
        let _ = set_partition_leader_epoch(&mut copy, 5);
        let _ = set_log_append_time(&mut copy, 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            exercise(&bytes);
        }

        #[test]
        fn arbitrary_bytes_with_a_v2_header_never_panic(
            length in any::<i32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![0u8; 17];
            write_i32(&mut bytes, field::BATCH_LENGTH, length);
            bytes[field::MAGIC] = 2;
            bytes.extend_from_slice(&tail);
            exercise(&bytes);
        }

        /// Mutations of valid batches, resealed or not: resealing gets them past the CRC so
        /// the semantic checks, the record framing walk and the decoder see them.
        #[test]
        fn mutated_batches_never_panic(
            codec_index in 0usize..5,
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            reseal_after in any::<bool>(),
            truncate_to in proptest::option::of(any::<usize>()),
        ) {
            let mut batch = sample_batch(ALL_CODECS[codec_index]);
            for (index, mask) in mutations {
                let at = index % batch.len();
                batch[at] ^= mask;
            }
            if reseal_after {
                reseal(&mut batch);
            }
            if let Some(length) = truncate_to {
                batch.truncate(length % (batch.len() + 1));
            }
            exercise(&batch);
            let doubled = [batch.clone(), batch].concat();
            exercise(&doubled);
        }

        #[test]
        fn encode_validate_decode_round_trip(
            values in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                 -1_000i64..1_000),
                1..20),
            codec_index in 0usize..5,
        ) {
            let records: Vec<SimpleRecord> = values
                .iter()
                .map(|(key, value, delta_ms)| {
                    SimpleRecord::new(key.as_deref(), value.as_deref(), &[], 1_700_000_000_000 + delta_ms)
                })
                .collect();
            let codec = ALL_CODECS[codec_index];
            let batch = encode_batch(&records, codec).unwrap();
            let header = validate(&batch).unwrap();
            prop_assert_eq!(usize::try_from(header.record_count).unwrap(), records.len());
            prop_assert_eq!(header.compression(), Ok(codec));
            prop_assert_eq!(decode_records(&batch).unwrap(), records);
        }
    }
}
