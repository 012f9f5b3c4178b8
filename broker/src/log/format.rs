//! The on-zone format, sans I/O: the zone header and checksummed frames.
//!
//! ```text
//! zone:   [zone header block: 4 KiB][frame][frame]...[pad to block at a flush][frame]...
//! frame:  len u32 | crc u32 | kind u8 | reserved [0;3] | payload (len bytes)
//! ```
//! `crc` is crc32fast (CRC-32, IEEE) over `len`, `kind`, `reserved` and the covered payload:
//! all of it, except for a record batch, whose own CRC-32C already covers everything from its
//! attributes on: there the frame CRC covers the batch's first 21 bytes (base offset, length,
//! leader epoch, magic and that CRC), so each append checksums its bytes once. A torn or partial
//! frame is thus caught by the frame CRC or, at recovery, by the batch CRC (`batch::
//! validate_integrity`); reads, which only ever see durable data, check the frame CRC only. A frame header never
//! straddles a block boundary: when fewer than `FRAME_HEADER_BYTES` remain in a block, the
//! writer pads to the next block. An all-zero header means "padding: skip to the next block";
//! at a block boundary it means "no more frames in this zone".

use crate::buf::BLOCK_SIZE;

pub const ZONE_HEADER_BYTES: usize = BLOCK_SIZE;
pub const FRAME_HEADER_BYTES: usize = 12;
const ZONE_MAGIC: &[u8; 8] = b"YOTTALOG";
const ZONE_FORMAT_VERSION: u16 = 1;
/// Kafka's own limit on topic names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A Kafka record batch (v2) with its offsets assigned.
    RecordBatch = 1,
    /// An i64: the log start offset after a DeleteRecords (persisted in the log itself).
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

/// The self-describing first block of every zone a partition owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneHeader {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    /// Position of this zone in its partition's chain; strictly increasing.
    pub zone_sequence: u64,
    /// Offset of the first batch in this zone.
    pub base_offset: i64,
    pub created_ms: i64,
}

impl ZoneHeader {
    /// Encodes into a full block.
    pub fn encode(&self) -> [u8; ZONE_HEADER_BYTES] {
        assert!(
            self.topic.len() <= TOPIC_NAME_BYTES_MAX,
            "topic name length checked by callers"
        );
        let mut block = [0u8; ZONE_HEADER_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            block[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(ZONE_MAGIC);
        put(&ZONE_FORMAT_VERSION.to_be_bytes());
        put(&self.topic_id);
        put(&self.partition.to_be_bytes());
        put(&self.zone_sequence.to_be_bytes());
        put(&self.base_offset.to_be_bytes());
        put(&self.created_ms.to_be_bytes());
        put(&(self.topic.len() as u16).to_be_bytes());
        put(self.topic.as_bytes());
        let end = at;
        let crc = crc32fast::hash(&block[..end]);
        block[end..end + 4].copy_from_slice(&crc.to_be_bytes());
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
        let topic_id: [u8; 16] = reader.array()?;
        let partition = i32::from_be_bytes(reader.array()?);
        let zone_sequence = u64::from_be_bytes(reader.array()?);
        let base_offset = i64::from_be_bytes(reader.array()?);
        let created_ms = i64::from_be_bytes(reader.array()?);
        let topic_len = u16::from_be_bytes(reader.array()?) as usize;
        if topic_len > TOPIC_NAME_BYTES_MAX {
            return None;
        }
        let topic = std::str::from_utf8(reader.take(topic_len)?)
            .ok()?
            .to_string();
        let end = reader.at;
        let crc = u32::from_be_bytes(reader.array()?);
        if crc != crc32fast::hash(&block[..end]) || base_offset < 0 || partition < 0 {
            return None;
        }
        Some(ZoneHeader {
            topic,
            topic_id,
            partition,
            zone_sequence,
            base_offset,
            created_ms,
        })
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

/// Encodes a frame header for `payload`.
pub fn frame_header(kind: FrameKind, payload: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    let len = u32::try_from(payload.len()).expect("frame payload bounded by the zone capacity");
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_be_bytes());
    header[8] = kind as u8;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..4]);
    hasher.update(&header[8..12]);
    hasher.update(covered(kind, payload));
    header[4..8].copy_from_slice(&hasher.finalize().to_be_bytes());
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
    /// A valid frame: its kind, payload and the position just after it.
    Frame {
        kind: FrameKind,
        payload: &'a [u8],
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
    if header[9..12] != [0, 0, 0] {
        return ScanStep::Invalid;
    }
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
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..4]);
    hasher.update(&header[8..12]);
    hasher.update(covered(kind, payload));
    if hasher.finalize() != crc {
        return ScanStep::Invalid;
    }
    ScanStep::Frame {
        kind,
        payload,
        end_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ZoneHeader {
        ZoneHeader {
            topic: "vehicles".into(),
            topic_id: [7; 16],
            partition: 3,
            zone_sequence: 9,
            base_offset: 1234,
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn zone_header_round_trip_and_corruption() {
        let block = header().encode();
        assert_eq!(ZoneHeader::decode(&block), Some(header()));
        for index in 0..60 {
            let mut corrupt = block;
            corrupt[index] ^= 0x40;
            assert_eq!(ZoneHeader::decode(&corrupt), None, "byte {index}");
        }
        assert_eq!(ZoneHeader::decode(&[0u8; ZONE_HEADER_BYTES]), None);
        assert_eq!(ZoneHeader::decode(&block[..20]), None);
    }

    fn zone_with(frames: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut zone = vec![0u8; ZONE_HEADER_BYTES];
        for payload in frames {
            let start = next_frame_start(zone.len() as u64) as usize;
            zone.resize(start, 0);
            zone.extend_from_slice(&frame_header(FrameKind::RecordBatch, payload));
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
                    payload, end_bytes, ..
                } => {
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
    fn record_batch_frames_cover_the_batch_prefix_only() {
        let (zone, end) = zone_with(&[&[9u8; 300]]);
        let start = ZONE_HEADER_BYTES as u64;
        for index in [0usize, 5, 8, 12, 12 + 20] {
            let mut corrupt = zone.clone();
            corrupt[ZONE_HEADER_BYTES + index] ^= 1;
            assert_eq!(scan_frame(&corrupt, 0, start, end), ScanStep::Invalid, "byte {index}");
        }
        // Past the batch's CRC field, the batch's own CRC-32C covers the bytes.
        let mut body = zone.clone();
        body[ZONE_HEADER_BYTES + 12 + 21] ^= 1;
        assert!(matches!(scan_frame(&body, 0, start, end), ScanStep::Frame { .. }));
    }

    #[test]
    fn torn_and_corrupt_frames_are_invalid() {
        let mut zone = vec![0u8; ZONE_HEADER_BYTES];
        let payload = [9u8; 300];
        zone.extend_from_slice(&frame_header(FrameKind::LogStartOffset, &payload));
        zone.extend_from_slice(&payload);
        let end = zone.len() as u64;
        let start = ZONE_HEADER_BYTES as u64;
        // Torn: the write pointer cuts the frame.
        assert_eq!(scan_frame(&zone, 0, start, end - 1), ScanStep::Invalid);
        // Any flipped bit in header or payload.
        for index in [0usize, 5, 8, 9, 12, 200, 311] {
            let mut corrupt = zone.clone();
            corrupt[ZONE_HEADER_BYTES + index] ^= 1;
            assert_eq!(
                scan_frame(&corrupt, 0, start, end),
                ScanStep::Invalid,
                "byte {index}"
            );
        }
        // Short window: ask for more rather than guess.
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
        zone[second_block..second_block + FRAME_HEADER_BYTES]
            .copy_from_slice(&frame_header(FrameKind::RecordBatch, payload));
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
