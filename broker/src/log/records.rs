//! The records inside a batch, read with limits: record timestamps (ListOffsets by timestamp)
//! and whole records (keys, values, headers: views and SQL over topics). Batches are stored as
//! received, compressed by the client, so this is the one place the broker decompresses client data: the decompressed
//! size is bounded (a small batch can expand a thousandfold), and nothing is allocated from a
//! count read off the batch.

use std::borrow::Cow;
use std::io::Read;

use bytes::Bytes;

use super::batch::{self, BatchError, BatchHeader, Compression, TimestampType, BATCH_HEADER_BYTES};

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

/// One record of a batch, its bytes shared with the batch (or with its decompressed records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// (name, value) in the order sent; names are bytes as on the wire (UTF-8 by contract).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Headers per record beyond this are refused (a record claiming more is malformed input).
pub const HEADERS_PER_RECORD_MAX: usize = 1 << 16;

/// The timestamp of every record of `batch`, in order (record `i` has offset base + i for
/// batches this broker validated).
pub fn record_timestamps(batch: &[u8], decompressed_bytes_max: usize) -> Result<Vec<i64>, RecordsError> {
    let (header, records) = records_section(batch, decompressed_bytes_max)?;
    let mut timestamps = Vec::with_capacity(capacity_for(&header, &records));
    walk_records(&header, &records, |record| timestamps.push(record.timestamp_ms))?;
    Ok(timestamps)
}

/// A lower bound on the timestamps of `batch`'s records, as reported to readers: exact for
/// LogAppendTime batches (all records carry the batch's max timestamp) and for uncompressed
/// ones (a walk over the record headers, no copy); `i64::MIN` (no bound) for compressed
/// CreateTime batches, whose records are not inflated on the append path, and for records that
/// do not parse. A batch's base timestamp is *not* a bound: record deltas may be negative.
pub fn timestamp_lower_bound_ms(batch: &[u8], header: &BatchHeader) -> i64 {
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return header.max_timestamp_ms;
    }
    if !matches!(header.compression(), Ok(Compression::None)) || batch.len() < BATCH_HEADER_BYTES {
        return i64::MIN;
    }
    let mut min_ms = i64::MAX;
    match walk_records(header, &batch[BATCH_HEADER_BYTES..], |record| min_ms = min_ms.min(record.timestamp_ms)) {
        Ok(()) if min_ms != i64::MAX => min_ms,
        _ => i64::MIN,
    }
}

/// Every record of `batch` with its offset (base offset + offset delta), timestamp (the batch's
/// max timestamp for LogAppendTime batches, as Kafka reports them), key, value and headers.
/// Zero-copy for uncompressed batches; compressed records are inflated within
/// `decompressed_bytes_max`. Control batches (transaction markers) hold no user records: they
/// decode to none.
pub fn decode_records(batch: &Bytes, decompressed_bytes_max: usize) -> Result<Vec<Record>, RecordsError> {
    let (header, records) = records_section(batch, decompressed_bytes_max)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let records = match records {
        Cow::Borrowed(_) => batch.slice(BATCH_HEADER_BYTES..),
        Cow::Owned(records) => Bytes::from(records),
    };
    let mut decoded = Vec::with_capacity(capacity_for(&header, &records));
    walk_records(&header, &records, |record| {
        let slice = |range: Option<std::ops::Range<usize>>| range.map(|range| records.slice(range));
        decoded.push(Record {
            offset: header.base_offset.saturating_add(record.offset_delta),
            timestamp_ms: if log_append_time { header.max_timestamp_ms } else { record.timestamp_ms },
            key: slice(record.key),
            value: slice(record.value),
            headers: record.headers.into_iter().map(|(name, value)| (records.slice(name), slice(value))).collect(),
        })
    })?;
    Ok(decoded)
}

/// A batch's header and records section: in place when uncompressed, else inflated.
fn records_section(batch: &[u8], decompressed_bytes_max: usize) -> Result<(BatchHeader, Cow<'_, [u8]>), RecordsError> {
    let header = batch::validate_integrity(batch)?;
    let section = &batch[BATCH_HEADER_BYTES..];
    let records = match header.compression()? {
        Compression::None => Cow::Borrowed(section),
        codec => Cow::Owned(decompress(codec, section, decompressed_bytes_max)?),
    };
    Ok((header, records))
}

/// Room for the declared records, but never more than the bytes could hold: the count is
/// read off the batch.
fn capacity_for(header: &BatchHeader, records: &[u8]) -> usize {
    (header.record_count.max(0) as usize).min(records.len() / batch::MIN_RECORD_BYTES)
}

/// One record as laid out in the records bytes: ranges into them.
struct RawRecord {
    timestamp_ms: i64,
    offset_delta: i64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Vec<(std::ops::Range<usize>, Option<std::ops::Range<usize>>)>,
}

/// Walks the declared records of a batch, every length checked against the bytes that remain.
fn walk_records(header: &BatchHeader, records: &[u8], mut visit: impl FnMut(RawRecord)) -> Result<(), RecordsError> {
    let mut reader = Varints { bytes: records, at: 0 };
    for index in 0..header.record_count.max(0) as usize {
        let malformed = |reason| RecordsError::Malformed { index, reason };
        let length = reader.zigzag_i64(5).ok_or(malformed("record length"))?;
        let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
        let end = reader.at.checked_add(length).filter(|&end| end <= records.len()).ok_or(malformed("record past the batch end"))?;
        let mut record = Varints { bytes: &records[..end], at: reader.at };
        record.byte().ok_or(malformed("attributes"))?;
        let delta = record.zigzag_i64(10).ok_or(malformed("timestamp delta"))?;
        let timestamp_ms = header.base_timestamp_ms.checked_add(delta).ok_or(malformed("timestamp overflows"))?;
        let offset_delta = record.zigzag_i64(5).ok_or(malformed("offset delta"))?;
        let key = record.nullable_bytes().ok_or(malformed("key"))?;
        let value = record.nullable_bytes().ok_or(malformed("value"))?;
        let header_count = record.zigzag_i64(5).ok_or(malformed("header count"))?;
        let header_count = usize::try_from(header_count).ok().filter(|&count| count <= HEADERS_PER_RECORD_MAX).ok_or(malformed("header count"))?;
        // Each header takes at least two bytes: a count beyond that is a lie, not a reservation.
        let mut headers = Vec::with_capacity(header_count.min((end - record.at) / 2));
        for _ in 0..header_count {
            let name = record.nullable_bytes().ok_or(malformed("header name"))?.ok_or(malformed("null header name"))?;
            let value = record.nullable_bytes().ok_or(malformed("header value"))?;
            headers.push((name, value));
        }
        if record.at != end {
            return Err(malformed("bytes after the record's headers"));
        }
        visit(RawRecord { timestamp_ms, offset_delta, key, value, headers });
        reader.at = end;
    }
    Ok(())
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

    /// A length-prefixed byte string (length -1: null), as a range of `bytes`.
    fn nullable_bytes(&mut self) -> Option<Option<std::ops::Range<usize>>> {
        let length = self.zigzag_i64(5)?;
        if length == -1 {
            return Some(None);
        }
        let length = usize::try_from(length).ok()?;
        let end = self.at.checked_add(length).filter(|&end| end <= self.bytes.len())?;
        let range = self.at..end;
        self.at = end;
        Some(Some(range))
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
    fn records_of_every_codec_match_the_reference_decoder() {
        let records: Vec<SimpleRecord> = (0..40u8)
            .map(|i| {
                let key = (i % 4 != 0).then(|| vec![i; 3]);
                let value = (i % 5 != 0).then(|| vec![i ^ 0x5a; 100 + i as usize]);
                let headers: Vec<(String, Option<Vec<u8>>)> =
                    (0..i % 3).map(|h| (format!("h{h}"), (h != 1).then(|| vec![h; 2]))).collect();
                let headers: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
                SimpleRecord::new(key.as_deref(), value.as_deref(), &headers, 1_700_000_000_000 + i as i64 * 3)
            })
            .collect();
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut batch = encode_batch(&records, codec).unwrap();
            batch::set_base_offset(&mut batch, 1000).unwrap();
            let reference = batch::decode_records(&batch).unwrap();
            let decoded = decode_records(&Bytes::from(batch.clone()), DECOMPRESSED_BYTES_MAX).unwrap();
            assert_eq!(decoded.len(), reference.len(), "{codec:?}");
            for (index, (got, want)) in decoded.iter().zip(&reference).enumerate() {
                assert_eq!(got.offset, 1000 + index as i64);
                assert_eq!(got.timestamp_ms, want.timestamp_ms);
                assert_eq!(got.key, want.key, "{codec:?} record {index}");
                assert_eq!(got.value, want.value);
                let headers: Vec<(String, Option<Bytes>)> =
                    got.headers.iter().map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.clone())).collect();
                let mut want_headers = want.headers.clone();
                let mut got_headers = headers;
                want_headers.sort();
                got_headers.sort();
                assert_eq!(got_headers, want_headers);
            }
            // LogAppendTime: every record reports the batch's max timestamp, as Kafka does.
            batch::set_log_append_time(&mut batch, 42).unwrap();
            let appended = decode_records(&Bytes::from(batch), DECOMPRESSED_BYTES_MAX).unwrap();
            assert!(appended.iter().all(|record| record.timestamp_ms == 42), "{codec:?}");
        }
    }

    #[test]
    fn timestamp_lower_bounds_are_bounds() {
        // Deltas going back: the base timestamp is not the minimum.
        let records: Vec<SimpleRecord> = [500, 300, 900, 100, 700].iter().map(|&ts| SimpleRecord::new(None, Some(b"v"), &[], ts)).collect();
        let plain = encode_batch(&records, Compression::None).unwrap();
        let header = batch::validate_integrity(&plain).unwrap();
        assert_eq!(timestamp_lower_bound_ms(&plain, &header), 100);
        let compressed = encode_batch(&records, Compression::Zstd).unwrap();
        let header = batch::validate_integrity(&compressed).unwrap();
        assert_eq!(timestamp_lower_bound_ms(&compressed, &header), i64::MIN);
        let mut appended = compressed;
        batch::set_log_append_time(&mut appended, 42).unwrap();
        let header = batch::validate_integrity(&appended).unwrap();
        assert_eq!(timestamp_lower_bound_ms(&appended, &header), 42);
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
            let _ = decode_records(&Bytes::from(batch.clone()), DECOMPRESSED_BYTES_MAX);
        }
    }
}
