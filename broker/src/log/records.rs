//! The records inside a batch, read with limits: what the broker itself needs of them (record
//! timestamps, for ListOffsets by timestamp). Batches are stored as received, compressed by
//! the client, so this is the one place the broker decompresses client data: the decompressed
//! size is bounded (a small batch can expand a thousandfold), and nothing is allocated from a
//! count read off the batch.

use std::io::Read;

use super::batch::{self, BatchError, Compression, BATCH_HEADER_BYTES};

/// Decompressed records section larger than this are not read (ListOffsets then answers at
/// batch granularity). Far above any batch a client sends: max.message.bytes is 1 MiB by default.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("records decompress to more than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("cannot decompress the records: {0}")]
    Decompress(String),
    #[error("malformed record {index}: {reason}")]
    Malformed { index: usize, reason: &'static str },
}

/// The timestamp of every record of `batch`, in order (record `i` has offset base + i for
/// batches this broker validated).
pub fn record_timestamps(batch: &[u8], decompressed_bytes_max: usize) -> Result<Vec<i64>, RecordsError> {
    let header = batch::validate_integrity(batch)?;
    let section = &batch[BATCH_HEADER_BYTES..];
    let decompressed;
    let records = match header.compression()? {
        Compression::None => section,
        codec => {
            decompressed = decompress(codec, section, decompressed_bytes_max)?;
            &decompressed[..]
        }
    };
    let mut timestamps = Vec::with_capacity((header.record_count.max(0) as usize).min(records.len() / batch::MIN_RECORD_BYTES));
    let mut reader = Varints { bytes: records, at: 0 };
    for index in 0..header.record_count.max(0) as usize {
        let malformed = |reason| RecordsError::Malformed { index, reason };
        let length = reader.zigzag_i64(5).ok_or(malformed("record length"))?;
        let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
        let end = reader.at.checked_add(length).filter(|&end| end <= records.len()).ok_or(malformed("record past the batch end"))?;
        let mut record = Varints { bytes: &records[..end], at: reader.at };
        record.byte().ok_or(malformed("attributes"))?;
        let delta = record.zigzag_i64(10).ok_or(malformed("timestamp delta"))?;
        timestamps.push(header.base_timestamp_ms.checked_add(delta).ok_or(malformed("timestamp overflows"))?);
        reader.at = end;
    }
    Ok(timestamps)
}

/// Decompresses a records section, refusing to produce more than `limit_bytes`.
pub fn decompress(codec: Compression, section: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    let failed = |error: std::io::Error| RecordsError::Decompress(error.to_string());
    match codec {
        Compression::None => bounded_copy(section, limit_bytes),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(section), limit_bytes),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(section).map_err(failed)?, limit_bytes),
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(section).map_err(failed)?, limit_bytes),
        Compression::Snappy => snappy(section, limit_bytes),
    }
}

fn bounded_copy(bytes: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    if bytes.len() > limit_bytes {
        return Err(RecordsError::TooLarge { limit_bytes });
    }
    Ok(bytes.to_vec())
}

fn read_bounded(reader: impl Read, limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(limit_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| RecordsError::Decompress(error.to_string()))?;
    if out.len() > limit_bytes {
        return Err(RecordsError::TooLarge { limit_bytes });
    }
    Ok(out)
}

/// Kafka's snappy: the xerial framing (a magic header, then length-prefixed raw blocks), or raw
/// snappy without it, as the Java client accepts.
fn snappy(section: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_BYTES: usize = 16;
    let failed = |error: snap::Error| RecordsError::Decompress(error.to_string());
    let mut out = Vec::new();
    let decode_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let block_bytes = snap::raw::decompress_len(block).map_err(failed)?;
        if out.len().saturating_add(block_bytes) > limit_bytes {
            return Err(RecordsError::TooLarge { limit_bytes });
        }
        out.extend_from_slice(&snap::raw::Decoder::new().decompress_vec(block).map_err(failed)?);
        Ok(())
    };
    if !section.starts_with(XERIAL_MAGIC) {
        decode_block(section, &mut out)?;
        return Ok(out);
    }
    let mut at = XERIAL_HEADER_BYTES;
    while at < section.len() {
        let length_bytes: [u8; 4] = section.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or(RecordsError::Decompress("snappy block length cut".into()))?;
        let length = u32::from_be_bytes(length_bytes) as usize;
        let block = section.get(at + 4..at + 4 + length).ok_or(RecordsError::Decompress("snappy block cut".into()))?;
        decode_block(block, &mut out)?;
        at += 4 + length;
    }
    Ok(out)
}

/// Kafka's zig-zag varints, bounds-checked.
struct Varints<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Varints<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// A zig-zag varint of at most `bytes_max` bytes (5 for an int, 10 for a long).
    fn zigzag_i64(&mut self, bytes_max: usize) -> Option<i64> {
        let mut value = 0u64;
        for index in 0..bytes_max {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{encode_batch, SimpleRecord};
    use std::io::Write;

    #[test]
    fn timestamps_of_every_codec() {
        let records: Vec<SimpleRecord> = (0..50)
            .map(|i| SimpleRecord::new(Some(b"k"), Some(&[i as u8; 300]), &[], 1_700_000_000_000 + i * 7 - (i % 3) * 1000))
            .collect();
        let expected: Vec<i64> = records.iter().map(|r| r.timestamp_ms).collect();
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let batch = encode_batch(&records, codec).unwrap();
            assert_eq!(record_timestamps(&batch, DECOMPRESSED_BYTES_MAX).unwrap(), expected, "{codec:?}");
            // A limit below the records' decompressed size (~16 KB) refuses instead of
            // allocating; uncompressed records are read in place, with no limit to apply.
            let limited = record_timestamps(&batch, 1000);
            if codec == Compression::None {
                assert_eq!(limited.unwrap(), expected);
            } else {
                assert_eq!(limited, Err(RecordsError::TooLarge { limit_bytes: 1000 }), "{codec:?}");
            }
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 32 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 128 << 10, "32 MiB of zeros compress to {} bytes", bomb.len());
        assert_eq!(decompress(Compression::Gzip, &bomb, 1 << 20), Err(RecordsError::TooLarge { limit_bytes: 1 << 20 }));
        let zeros = vec![0u8; 8 << 20];
        let snappy_bomb = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert_eq!(decompress(Compression::Snappy, &snappy_bomb, 1 << 20), Err(RecordsError::TooLarge { limit_bytes: 1 << 20 }));
        let zstd_bomb = zstd::encode_all(&zeros[..], 19).unwrap();
        assert_eq!(decompress(Compression::Zstd, &zstd_bomb, 1 << 20), Err(RecordsError::TooLarge { limit_bytes: 1 << 20 }));
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        let records = vec![SimpleRecord::new(None, Some(b"v"), &[], 5)];
        let mut batch = encode_batch(&records, Compression::None).unwrap();
        // Corrupt the record section and fix the CRC so only the record walk can object.
        for value in [0x7fu8, 0xff, 0x00, 0x01] {
            let last = batch.len() - 1;
            batch[BATCH_HEADER_BYTES] = value;
            batch[last] = value;
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = record_timestamps(&batch, DECOMPRESSED_BYTES_MAX);
        }
    }
}
