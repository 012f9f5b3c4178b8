//! The on-zone format (v2), sans I/O: the zone header, checksummed frames that name their
//! partition, and the zone summary (the index of a sealed zone) with its trailer.
//!
//! ```text
//! zone:    [zone header block][frame][frame]...[pad to block at a flush][frame]...
//!          ... sealed: [pad to block][summary: one entry per frame][zeros][trailer: last block]
//! frame:   len u32 | crc u32 | kind u8 | reserved [0;3] | partition i32 | boot u64 | topic id [16]
//!          | payload
//! ```
//! Zones are shared: the frames of many partitions interleave in one zone (one zone stream,
//! see `log::stream`), so each frame names its topic id and partition, and the boot epoch in
//! which the batch was first appended (kept when the frame is copied: see `store::resolve`,
//! which orders a partition's frames by it). `crc` is crc32fast
//! (CRC-32, IEEE) over `len`, the rest of the header and the covered payload: all of it, except
//! for a record batch, whose own CRC-32C already covers everything from its attributes on:
//! there the frame CRC covers the batch's first 21 bytes (base offset, length, leader epoch,
//! magic and that CRC), so each append checksums its bytes once. A torn or partial frame is thus
//! caught by the frame CRC or, at recovery, by the batch CRC (`batch::validate_integrity`). A
//! frame header never straddles a block boundary: when fewer than `FRAME_HEADER_BYTES` remain
//! in a block, the writer pads to the next block. An all-zero header means "padding: skip to the
//! next block"; at a block boundary it means "no more frames in this zone".
//!
//! A zone is sealed when the next frame would not fit: its summary (what recovery needs of
//! every frame: partition, kind, position, offsets, timestamps, producer fields) is written
//! after the frames, zeros up to the last block, and the trailer there (where the summary is,
//! its checksum). Recovery reads a sealed zone's trailer and summary instead of its frames.

use super::control::TxnRole;
use crate::buf::BLOCK_SIZE;

pub const ZONE_HEADER_BYTES: usize = BLOCK_SIZE;
pub const FRAME_HEADER_BYTES: usize = 40;
pub const TRAILER_BYTES: usize = BLOCK_SIZE;
const ZONE_MAGIC: &[u8; 8] = b"YOTTALOG";
const TRAILER_MAGIC: &[u8; 8] = b"YOTTASUM";
const ZONE_FORMAT_VERSION: u16 = 2;
/// Kafka's own limit on topic names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Which partition a frame belongs to: (topic id, partition). Topic names are not stored on
/// zones; the metadata log maps ids to names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic_id: [u8; 16],
    pub partition: i32,
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A Kafka record batch (v2) with its offsets assigned.
    RecordBatch = 1,
    /// An i64: the partition's log start offset after a DeleteRecords or retention.
    LogStartOffset = 2,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<FrameKind> {
        match value {
            1 => Some(FrameKind::RecordBatch),
            2 => Some(FrameKind::LogStartOffset),
            _ => None,
        }
    }
}

/// The self-describing first block of every zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneHeader {
    /// The zone stream that writes this zone (see `log::stream`).
    pub stream: u8,
    /// Device-wide, strictly increasing over zone openings: tells a zone's incarnations apart.
    pub zone_sequence: u64,
    /// The store's boot epoch when the zone was opened (one more than any zone's on the device
    /// at recovery): frames of a later boot supersede what an earlier boot left after a cut.
    pub boot: u64,
    pub created_ms: i64,
}

impl ZoneHeader {
    /// Encodes into a full block.
    pub fn encode(&self) -> [u8; ZONE_HEADER_BYTES] {
        let mut block = [0u8; ZONE_HEADER_BYTES];
        let mut writer = Writer {
            bytes: &mut block,
            at: 0,
        };
        writer.put(ZONE_MAGIC);
        writer.put(&ZONE_FORMAT_VERSION.to_be_bytes());
        writer.put(&[self.stream]);
        writer.put(&self.zone_sequence.to_be_bytes());
        writer.put(&self.boot.to_be_bytes());
        writer.put(&self.created_ms.to_be_bytes());
        writer.seal_crc();
        block
    }

    /// Decodes a zone's first block; `None` if it is not a valid header (never written, torn,
    /// or another format).
    pub fn decode(block: &[u8]) -> Option<ZoneHeader> {
        let mut reader = Reader {
            bytes: block,
            at: 0,
        };
        if reader.take(8)? != ZONE_MAGIC
            || u16::from_be_bytes(reader.array()?) != ZONE_FORMAT_VERSION
        {
            return None;
        }
        let [stream] = reader.array()?;
        let zone_sequence = u64::from_be_bytes(reader.array()?);
        let boot = u64::from_be_bytes(reader.array()?);
        let created_ms = i64::from_be_bytes(reader.array()?);
        reader.check_crc()?;
        Some(ZoneHeader {
            stream,
            zone_sequence,
            boot,
            created_ms,
        })
    }
}

/// The last block of a sealed zone: where its summary is and its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub zone_sequence: u64,
    pub summary_start_bytes: u64,
    pub entry_count: u32,
    pub summary_crc: u32,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        let mut block = [0u8; TRAILER_BYTES];
        let mut writer = Writer {
            bytes: &mut block,
            at: 0,
        };
        writer.put(TRAILER_MAGIC);
        writer.put(&ZONE_FORMAT_VERSION.to_be_bytes());
        writer.put(&self.zone_sequence.to_be_bytes());
        writer.put(&self.summary_start_bytes.to_be_bytes());
        writer.put(&self.entry_count.to_be_bytes());
        writer.put(&self.summary_crc.to_be_bytes());
        writer.seal_crc();
        block
    }

    pub fn decode(block: &[u8]) -> Option<Trailer> {
        let mut reader = Reader {
            bytes: block,
            at: 0,
        };
        if reader.take(8)? != TRAILER_MAGIC
            || u16::from_be_bytes(reader.array()?) != ZONE_FORMAT_VERSION
        {
            return None;
        }
        let zone_sequence = u64::from_be_bytes(reader.array()?);
        let summary_start_bytes = u64::from_be_bytes(reader.array()?);
        let entry_count = u32::from_be_bytes(reader.array()?);
        let summary_crc = u32::from_be_bytes(reader.array()?);
        reader.check_crc()?;
        Some(Trailer {
            zone_sequence,
            summary_start_bytes,
            entry_count,
            summary_crc,
        })
    }

    pub fn summary_bytes(&self) -> u64 {
        u64::from(self.entry_count) * SUMMARY_ENTRY_BYTES as u64
    }
}

/// What recovery needs to know of one frame, without reading it: the summary's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEntry {
    pub key: PartitionKey,
    pub kind: FrameKind,
    /// The boot epoch in which the frame was first appended.
    pub boot: u64,
    /// Where the frame starts in its zone, and its length with the header.
    pub position_bytes: u64,
    pub frame_bytes: u32,
    /// A batch's base offset; for a LogStartOffset frame, the log start offset.
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub max_timestamp_ms: i64,
    /// A lower bound on the batch's record timestamps (`records::timestamp_lower_bound_ms`).
    pub min_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// What the batch is to transactions (a byte that zones written before held 0: None).
    pub txn_role: TxnRole,
}

pub const SUMMARY_ENTRY_BYTES: usize = 84;

impl FrameEntry {
    /// The entry of a record batch frame, `batch` whole with its `header` (its position and
    /// length filled in when placed).
    pub fn for_batch(key: PartitionKey, boot: u64, batch: &[u8], header: &super::batch::BatchHeader) -> FrameEntry {
        FrameEntry {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
            max_timestamp_ms: header.max_timestamp_ms,
            min_timestamp_ms: super::records::timestamp_lower_bound_ms(batch, header),
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            kind: FrameKind::RecordBatch,
            txn_role: super::control::role(batch, header),
            ..FrameEntry::for_log_start(key, boot, 0)
        }
    }

    /// The entry of a log start offset frame.
    pub fn for_log_start(key: PartitionKey, boot: u64, offset: i64) -> FrameEntry {
        FrameEntry {
            key,
            kind: FrameKind::LogStartOffset,
            boot,
            position_bytes: 0,
            frame_bytes: 0,
            base_offset: offset,
            last_offset_delta: 0,
            max_timestamp_ms: -1,
            min_timestamp_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            txn_role: TxnRole::None,
        }
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn end_bytes(&self) -> u64 {
        self.position_bytes + u64::from(self.frame_bytes)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.key.topic_id);
        out.extend_from_slice(&self.key.partition.to_be_bytes());
        out.extend_from_slice(&[self.kind as u8, self.txn_role as u8, 0, 0]);
        out.extend_from_slice(&self.boot.to_be_bytes());
        let position = u32::try_from(self.position_bytes).expect("zone capacity fits in u32");
        out.extend_from_slice(&position.to_be_bytes());
        out.extend_from_slice(&self.frame_bytes.to_be_bytes());
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.min_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        assert_eq!(out.len() - start, SUMMARY_ENTRY_BYTES);
    }

    pub fn decode(bytes: &[u8]) -> Option<FrameEntry> {
        let mut reader = Reader { bytes, at: 0 };
        let topic_id = reader.array()?;
        let partition = i32::from_be_bytes(reader.array()?);
        let [kind, txn_role, _, _]: [u8; 4] = reader.array()?;
        let entry = FrameEntry {
            key: PartitionKey {
                topic_id,
                partition,
            },
            kind: FrameKind::from_u8(kind)?,
            boot: u64::from_be_bytes(reader.array()?),
            position_bytes: u64::from(u32::from_be_bytes(reader.array()?)),
            frame_bytes: u32::from_be_bytes(reader.array()?),
            base_offset: i64::from_be_bytes(reader.array()?),
            last_offset_delta: i32::from_be_bytes(reader.array()?),
            max_timestamp_ms: i64::from_be_bytes(reader.array()?),
            min_timestamp_ms: i64::from_be_bytes(reader.array()?),
            producer_id: i64::from_be_bytes(reader.array()?),
            producer_epoch: i16::from_be_bytes(reader.array()?),
            base_sequence: {
                reader.take(2)?;
                i32::from_be_bytes(reader.array()?)
            },
            txn_role: TxnRole::from_u8(txn_role)?,
        };
        let valid = entry.base_offset >= 0
            && entry.last_offset_delta >= 0
            && partition >= 0
            && (entry.frame_bytes as usize) > FRAME_HEADER_BYTES;
        valid.then_some(entry)
    }
}

struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    /// Appends the CRC of everything written so far.
    fn seal_crc(&mut self) {
        let crc = crc32fast::hash(&self.bytes[..self.at]);
        self.put(&crc.to_be_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn check_crc(&mut self) -> Option<()> {
        let end = self.at;
        let crc = u32::from_be_bytes(self.array()?);
        (crc == crc32fast::hash(&self.bytes[..end])).then_some(())
    }
}

/// The bytes of a record batch's start that the frame CRC covers: up to and including the
/// batch's own CRC field, which covers the rest.
pub const RECORD_BATCH_PREFIX_COVERED_BYTES: usize = 21;

/// The part of a payload the frame CRC covers.
fn covered(kind: FrameKind, payload: &[u8]) -> &[u8] {
    match kind {
        FrameKind::RecordBatch => &payload[..payload.len().min(RECORD_BATCH_PREFIX_COVERED_BYTES)],
        FrameKind::LogStartOffset => payload,
    }
}

/// Bytes a frame with `payload_bytes` occupies, header included.
pub fn frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

fn frame_crc(header: &[u8], kind: FrameKind, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..4]);
    hasher.update(&header[8..FRAME_HEADER_BYTES]);
    hasher.update(covered(kind, payload));
    hasher.finalize()
}

/// Encodes a frame header for `payload` of `key`'s partition, first appended in `boot`.
pub fn frame_header(
    kind: FrameKind,
    key: &PartitionKey,
    boot: u64,
    payload: &[u8],
) -> [u8; FRAME_HEADER_BYTES] {
    let len = u32::try_from(payload.len()).expect("frame payload bounded by the zone capacity");
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_be_bytes());
    header[8] = kind as u8;
    header[12..16].copy_from_slice(&key.partition.to_be_bytes());
    header[16..24].copy_from_slice(&boot.to_be_bytes());
    header[24..40].copy_from_slice(&key.topic_id);
    let crc = frame_crc(&header, kind, payload);
    header[4..8].copy_from_slice(&crc.to_be_bytes());
    header
}

/// Where the next frame may start, given the current position in the zone: frames never start
/// with fewer than `FRAME_HEADER_BYTES` left in a block.
pub fn next_frame_start(position_bytes: u64) -> u64 {
    let block = BLOCK_SIZE as u64;
    let left_in_block = block - position_bytes % block;
    if left_in_block < FRAME_HEADER_BYTES as u64 {
        position_bytes + left_in_block
    } else {
        position_bytes
    }
}

/// One step of scanning a zone's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanStep<'a> {
    /// A valid frame: its kind, partition, boot, payload, and where it starts and ends.
    Frame {
        kind: FrameKind,
        key: PartitionKey,
        boot: u64,
        payload: &'a [u8],
        start_bytes: u64,
        end_bytes: u64,
    },
    /// Padding: continue at `next_bytes`.
    Padding { next_bytes: u64 },
    /// No more frames (zeros at a block boundary, or the end of the written data).
    End,
    /// The bytes at this position are not a valid frame: a torn or corrupt write. Everything
    /// from here on must be ignored.
    Invalid,
    /// The frame continues past the bytes given: read more and scan again from the same place.
    NeedMore { frame_end_bytes: u64 },
}

/// Scans the frame at `position_bytes` (a zone-relative position) within `window`, which holds
/// the zone's bytes starting at `window_start_bytes`; `written_end_bytes` is where the zone's
/// data ends (its write pointer).
pub fn scan_frame(
    window: &[u8],
    window_start_bytes: u64,
    position_bytes: u64,
    written_end_bytes: u64,
) -> ScanStep<'_> {
    let position_bytes = next_frame_start(position_bytes);
    if position_bytes >= written_end_bytes {
        return ScanStep::End;
    }
    if position_bytes + FRAME_HEADER_BYTES as u64 > written_end_bytes {
        return ScanStep::Invalid;
    }
    assert!(
        position_bytes >= window_start_bytes,
        "scan position before the window"
    );
    let at = (position_bytes - window_start_bytes) as usize;
    let Some(header) = window.get(at..at + FRAME_HEADER_BYTES) else {
        return ScanStep::NeedMore {
            frame_end_bytes: position_bytes + FRAME_HEADER_BYTES as u64,
        };
    };
    if header.iter().all(|&b| b == 0) {
        let block = BLOCK_SIZE as u64;
        if position_bytes % block == 0 {
            return ScanStep::End;
        }
        return ScanStep::Padding {
            next_bytes: position_bytes.next_multiple_of(block),
        };
    }
    let len = u64::from(u32::from_be_bytes(
        header[0..4].try_into().expect("4 bytes"),
    ));
    let crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    let Some(kind) = FrameKind::from_u8(header[8]) else {
        return ScanStep::Invalid;
    };
    let partition = i32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
    if header[9..12] != [0, 0, 0] || partition < 0 {
        return ScanStep::Invalid;
    }
    let boot = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
    let key = PartitionKey {
        topic_id: header[24..40].try_into().expect("16 bytes"),
        partition,
    };
    let end_bytes = position_bytes + FRAME_HEADER_BYTES as u64 + len;
    if end_bytes > written_end_bytes {
        return ScanStep::Invalid;
    }
    let payload_at = at + FRAME_HEADER_BYTES;
    let Some(payload) = window.get(payload_at..payload_at + len as usize) else {
        return ScanStep::NeedMore {
            frame_end_bytes: end_bytes,
        };
    };
    if frame_crc(header, kind, payload) != crc {
        return ScanStep::Invalid;
    }
    ScanStep::Frame {
        kind,
        key,
        boot,
        payload,
        start_bytes: position_bytes,
        end_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: PartitionKey = PartitionKey {
        topic_id: [7; 16],
        partition: 3,
    };

    fn header() -> ZoneHeader {
        ZoneHeader {
            stream: 2,
            zone_sequence: 9,
            boot: 4,
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn zone_header_and_trailer_round_trip_and_corruption() {
        let block = header().encode();
        assert_eq!(ZoneHeader::decode(&block), Some(header()));
        // Every byte of the header, its CRC included (39 bytes).
        for index in 0..39 {
            let mut corrupt = block;
            corrupt[index] ^= 0x40;
            assert_eq!(ZoneHeader::decode(&corrupt), None, "byte {index}");
        }
        assert_eq!(ZoneHeader::decode(&[0u8; ZONE_HEADER_BYTES]), None);
        assert_eq!(ZoneHeader::decode(&block[..20]), None);
        let trailer = Trailer {
            zone_sequence: 5,
            summary_start_bytes: 8192,
            entry_count: 3,
            summary_crc: 77,
        };
        let block = trailer.encode();
        assert_eq!(Trailer::decode(&block), Some(trailer));
        for index in 0..38 {
            let mut corrupt = block;
            corrupt[index] ^= 1;
            assert_eq!(Trailer::decode(&corrupt), None, "byte {index}");
        }
    }

    #[test]
    fn summary_entries_round_trip() {
        let entry = FrameEntry {
            key: KEY,
            kind: FrameKind::RecordBatch,
            boot: 3,
            position_bytes: 4096,
            frame_bytes: 500,
            base_offset: 77,
            last_offset_delta: 4,
            max_timestamp_ms: 1000,
            min_timestamp_ms: 990,
            producer_id: 12,
            producer_epoch: 3,
            base_sequence: 40,
            txn_role: TxnRole::Abort,
        };
        let mut bytes = Vec::new();
        entry.encode_into(&mut bytes);
        assert_eq!(FrameEntry::decode(&bytes), Some(entry));
        assert_eq!(entry.last_offset(), 81);
    }

    fn zone_with(frames: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut zone = vec![0u8; ZONE_HEADER_BYTES];
        for payload in frames {
            let start = next_frame_start(zone.len() as u64) as usize;
            zone.resize(start, 0);
            zone.extend_from_slice(&frame_header(FrameKind::RecordBatch, &KEY, 1, payload));
            zone.extend_from_slice(payload);
        }
        let end = zone.len() as u64;
        (zone, end)
    }

    #[test]
    fn scan_frames_then_end() {
        let (zone, end) = zone_with(&[b"one", &[5u8; 5000], b"three"]);
        let mut position = ZONE_HEADER_BYTES as u64;
        let mut payload_lens = Vec::new();
        loop {
            match scan_frame(&zone, 0, position, end) {
                ScanStep::Frame {
                    payload,
                    end_bytes,
                    key,
                    ..
                } => {
                    assert_eq!(key, KEY);
                    payload_lens.push(payload.len());
                    position = end_bytes;
                }
                ScanStep::End => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(payload_lens, vec![3, 5000, 5]);
    }

    #[test]
    fn record_batch_frames_cover_the_batch_prefix_and_the_partition() {
        let (zone, end) = zone_with(&[&[9u8; 300]]);
        let start = ZONE_HEADER_BYTES as u64;
        for index in [0usize, 5, 8, 12, 15, 20, 31, 39, 40 + 20] {
            let mut corrupt = zone.clone();
            corrupt[ZONE_HEADER_BYTES + index] ^= 1;
            assert_eq!(
                scan_frame(&corrupt, 0, start, end),
                ScanStep::Invalid,
                "byte {index}"
            );
        }
        // Past the batch's CRC field, the batch's own CRC-32C covers the bytes.
        let mut body = zone.clone();
        body[ZONE_HEADER_BYTES + 40 + 21] ^= 1;
        assert!(matches!(
            scan_frame(&body, 0, start, end),
            ScanStep::Frame { .. }
        ));
    }

    #[test]
    fn torn_and_corrupt_frames_are_invalid() {
        let mut zone = vec![0u8; ZONE_HEADER_BYTES];
        let payload = [9u8; 300];
        zone.extend_from_slice(&frame_header(FrameKind::LogStartOffset, &KEY, 1, &payload));
        zone.extend_from_slice(&payload);
        let end = zone.len() as u64;
        let start = ZONE_HEADER_BYTES as u64;
        assert_eq!(scan_frame(&zone, 0, start, end - 1), ScanStep::Invalid);
        for index in [0usize, 5, 8, 9, 12, 20, 200, 339] {
            let mut corrupt = zone.clone();
            corrupt[ZONE_HEADER_BYTES + index] ^= 1;
            assert_eq!(
                scan_frame(&corrupt, 0, start, end),
                ScanStep::Invalid,
                "byte {index}"
            );
        }
        assert!(matches!(
            scan_frame(&zone[..ZONE_HEADER_BYTES + 100], 0, start, end),
            ScanStep::NeedMore { .. }
        ));
    }

    #[test]
    fn padding_skips_to_next_block() {
        let mut zone = vec![0u8; 3 * BLOCK_SIZE];
        let payload = b"after padding";
        let second_block = 2 * BLOCK_SIZE;
        zone[second_block..second_block + FRAME_HEADER_BYTES].copy_from_slice(&frame_header(
            FrameKind::RecordBatch,
            &KEY,
            1,
            payload,
        ));
        zone[second_block + FRAME_HEADER_BYTES..second_block + FRAME_HEADER_BYTES + payload.len()]
            .copy_from_slice(payload);
        let end = (3 * BLOCK_SIZE) as u64;
        assert_eq!(
            scan_frame(&zone, 0, BLOCK_SIZE as u64 + 100, end),
            ScanStep::Padding {
                next_bytes: 2 * BLOCK_SIZE as u64
            }
        );
        assert!(matches!(
            scan_frame(&zone, 0, 2 * BLOCK_SIZE as u64, end),
            ScanStep::Frame { .. }
        ));
        assert_eq!(scan_frame(&zone, 0, BLOCK_SIZE as u64, end), ScanStep::End);
        assert_eq!(next_frame_start(BLOCK_SIZE as u64 - 5), BLOCK_SIZE as u64);
    }
}
