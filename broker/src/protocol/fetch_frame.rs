//! Fetch response frames that reference their record batches instead of copying them, sans I/O.
//!
//! A Fetch response is mostly records: the batches read from the cache or the device. Encoding
//! it with kafka-protocol copies every partition's records (which must first be concatenated
//! into one buffer: another copy) into the frame. Here the frame is a list of segments to write
//! in order (vectored writes): small pieces encoded into one buffer, and each large batch as
//! the very `Bytes` it was read as.
//!
//! kafka-protocol still encodes every field: each partition with batches is given a one-byte
//! marker as its records, and the buffer kafka-protocol writes into recognises the marker by
//! its address when the records are put, replaces the length prefix just written for it (INT32
//! before v12, UNSIGNED_VARINT length + 1 in the flexible versions) with the real one, and
//! splices the batches in. The result is byte for byte what kafka-protocol encodes for the
//! concatenated records (tested for every version served).

use std::ops::Range;

use bytes::{buf::UninitSlice, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use super::codec::EncodeError;
use super::frame::SIZE_PREFIX_BYTES;

/// Batches smaller than this are copied into the frame's buffer: one more slice to write costs
/// more than copying a few KiB.
pub const COPY_BELOW_BYTES: usize = 16 << 10;

/// The records placeholder, recognised by its address.
static MARKER: [u8; 1] = [0x5a];

/// First flexible version of Fetch (compact bytes for records).
const FLEXIBLE_FROM: i16 = 12;

/// Encodes a whole Fetch response frame (size prefix, header, body) as segments to write in
/// order. `records` has one entry per partition of `body`, in order (topics, then their
/// partitions): a partition with batches gets them, in order, as its records (whatever its own
/// `records` field holds); a partition with none keeps its `records` field.
pub fn encode_fetch_response(
    api_version: i16,
    correlation_id: i32,
    mut body: FetchResponse,
    records: &[Vec<Bytes>],
) -> Result<Vec<Bytes>, EncodeError> {
    let encode_error = |reason: String| EncodeError::Encode { api_key: ApiKey::Fetch, api_version, reason };
    let partitions = body.responses.iter().map(|topic| topic.partitions.len()).sum::<usize>();
    if partitions != records.len() {
        return Err(encode_error(format!("{} records lists for {partitions} partitions", records.len())));
    }
    let mut spliced: Vec<&[Bytes]> = Vec::new();
    let mut copied_bytes = 0usize;
    let mut lists = records.iter();
    for partition in body.responses.iter_mut().flat_map(|topic| topic.partitions.iter_mut()) {
        let batches = lists.next().expect("counted");
        if !batches.is_empty() {
            partition.records = Some(Bytes::from_static(&MARKER));
            copied_bytes += batches.iter().filter(|batch| batch.len() < COPY_BELOW_BYTES).map(|batch| batch.len()).sum::<usize>();
            spliced.push(batches);
        }
    }
    let header_version = ApiKey::Fetch.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let head_bytes = header.compute_size(header_version).map_err(|e| encode_error(format!("header: {e:#}")))?
        + body.compute_size(api_version).map_err(|e| encode_error(format!("{e:#}")))?
        + spliced.len() * 5
        + copied_bytes;
    let mut out = Splicer {
        out: BytesMut::with_capacity(SIZE_PREFIX_BYTES + head_bytes),
        flexible: api_version >= FLEXIBLE_FROM,
        spliced: spliced.into_iter(),
        cuts: Vec::new(),
        spliced_bytes: 0,
        error: None,
    };
    out.out.put_i32(0);
    header.encode(&mut out, header_version).map_err(|e| encode_error(format!("header: {e:#}")))?;
    body.encode(&mut out, api_version).map_err(|e| encode_error(format!("{e:#}")))?;
    if let Some(error) = out.error.take() {
        return Err(encode_error(error));
    }
    if out.spliced.len() != 0 {
        return Err(encode_error("records of some partitions were not encoded".to_string()));
    }
    let size_bytes = out.out.len() - SIZE_PREFIX_BYTES + out.spliced_bytes;
    let size_prefix = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
    out.out[..SIZE_PREFIX_BYTES].copy_from_slice(&size_prefix.to_be_bytes());
    let head = out.out.freeze();
    let mut segments = Vec::with_capacity(2 * out.cuts.len() + 1);
    let mut at = 0;
    for (position, batch) in out.cuts {
        if position > at {
            segments.push(head.slice(at..position));
        }
        segments.push(batch);
        at = position;
    }
    if at < head.len() {
        segments.push(head.slice(at..));
    }
    Ok(segments)
}

/// The buffer kafka-protocol encodes into: a `BytesMut` that splices batches in at markers.
struct Splicer<'a> {
    out: BytesMut,
    flexible: bool,
    /// The batches of each marked partition, in encoding order.
    spliced: std::vec::IntoIter<&'a [Bytes]>,
    /// (position in `out`, batch): the batch goes after `out[..position]`.
    cuts: Vec<(usize, Bytes)>,
    spliced_bytes: usize,
    error: Option<String>,
}

impl Splicer<'_> {
    fn splice(&mut self) {
        let Some(batches) = self.spliced.next() else {
            self.error = Some("more records markers than partitions with batches".to_string());
            return;
        };
        // Replace the marker's length prefix, just written, with the records' own.
        let total_bytes: usize = batches.iter().map(|batch| batch.len()).sum();
        let len = self.out.len();
        if self.flexible {
            // UNSIGNED_VARINT(1 + 1) is the single byte 2.
            if len == 0 || self.out[len - 1] != 2 {
                self.error = Some("unexpected length prefix before the records marker".to_string());
                return;
            }
            self.out.truncate(len - 1);
            let Some(prefixed) = u32::try_from(total_bytes).ok().and_then(|total| total.checked_add(1)) else {
                self.error = Some(format!("records of {total_bytes} bytes are too long"));
                return;
            };
            put_unsigned_varint(&mut self.out, prefixed);
        } else {
            if len < 4 || self.out[len - 4..] != 1i32.to_be_bytes() {
                self.error = Some("unexpected length prefix before the records marker".to_string());
                return;
            }
            self.out.truncate(len - 4);
            let Ok(total) = i32::try_from(total_bytes) else {
                self.error = Some(format!("records of {total_bytes} bytes are too long"));
                return;
            };
            self.out.put_i32(total);
        }
        for batch in batches {
            if batch.len() < COPY_BELOW_BYTES {
                self.out.extend_from_slice(batch);
            } else {
                self.cuts.push((self.out.len(), batch.clone()));
                self.spliced_bytes += batch.len();
            }
        }
    }
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

// Safety: every method forwards to the `BytesMut`, which upholds BufMut's contract.
unsafe impl BufMut for Splicer<'_> {
    fn remaining_mut(&self) -> usize {
        self.out.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        // Safety: the caller's promise (initialised bytes) is passed on unchanged.
        unsafe { self.out.advance_mut(count) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.out.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if std::ptr::eq(src.as_ptr(), MARKER.as_ptr()) && src.len() == MARKER.len() {
            self.splice();
        } else {
            self.out.extend_from_slice(src);
        }
    }
}

impl ByteBufMut for Splicer<'_> {
    fn offset(&self) -> usize {
        self.out.len()
    }

    fn seek(&mut self, offset: usize) {
        self.out.resize(offset, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        &mut self.out[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode_response;
    use crate::protocol::versions;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, ResponseKind, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use uuid::Uuid;

    fn batch(len: usize, seed: u8) -> Bytes {
        Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
    }

    /// A response as fetch builds it, plus the batches of each partition; `concatenated` is the
    /// same response with the records joined, as kafka-protocol alone would encode it.
    fn sample(api_version: i16) -> (FetchResponse, Vec<Vec<Bytes>>, FetchResponse) {
        let lists: Vec<Vec<Bytes>> = vec![
            vec![batch(100, 1)],
            vec![],
            vec![batch(70_000, 2), batch(300, 3), batch(20_000, 4)],
            vec![batch(1 << 20, 5)],
            vec![],
        ];
        let partition = |index: i32, error_code: i16| {
            let mut data = PartitionData::default()
                .with_partition_index(index)
                .with_error_code(error_code)
                .with_high_watermark(1000 + i64::from(index))
                .with_last_stable_offset(1000 + i64::from(index))
                .with_aborted_transactions((index == 2).then(|| vec![AbortedTransaction::default().with_producer_id(kafka_protocol::messages::ProducerId(7)).with_first_offset(3)]))
                .with_records(Some(Bytes::new()));
            if api_version >= 5 {
                data = data.with_log_start_offset(i64::from(index));
            }
            if api_version >= 11 {
                data = data.with_preferred_read_replica(BrokerId(-1));
            }
            data
        };
        let topic = |name: &str, partitions: Vec<PartitionData>| {
            let response = FetchableTopicResponse::default().with_partitions(partitions);
            if api_version >= 13 {
                response.with_topic_id(Uuid::from_u128(name.len() as u128 * 0x1234_5678))
            } else {
                response.with_topic(TopicName(StrBytes::from_string(name.to_string())))
            }
        };
        let body = FetchResponse::default().with_session_id(0).with_responses(vec![
            topic("alpha", vec![partition(0, 0), partition(1, 0), partition(2, 0)]),
            topic("b", vec![partition(0, 0), partition(9, 3)]),
        ]);
        let mut concatenated = body.clone();
        for (partition, batches) in concatenated.responses.iter_mut().flat_map(|topic| topic.partitions.iter_mut()).zip(&lists) {
            if !batches.is_empty() {
                partition.records = Some(Bytes::from(batches.concat()));
            }
        }
        (body, lists, concatenated)
    }

    #[test]
    fn identical_to_kafka_protocol_for_every_version_served() {
        let (version_min, version_max) = versions::supported(ApiKey::Fetch).expect("Fetch is served");
        for api_version in version_min..=version_max {
            let (body, lists, concatenated) = sample(api_version);
            let segments = encode_fetch_response(api_version, 42, body, &lists).unwrap();
            let joined: Vec<u8> = segments.concat();
            let expected = encode_response(ApiKey::Fetch, api_version, 42, &ResponseKind::Fetch(concatenated.clone())).unwrap();
            assert_eq!(joined, &expected[..], "v{api_version}");
            // Large batches are referenced, not copied.
            let big = &lists[3][0];
            assert!(segments.iter().any(|segment| segment.as_ptr() == big.as_ptr() && segment.len() == big.len()), "v{api_version}");
            // And kafka-protocol's decoder reads it back.
            let mut frame = Bytes::from(joined).slice(SIZE_PREFIX_BYTES..);
            let header = ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(api_version)).unwrap();
            assert_eq!(header.correlation_id, 42);
            let decoded = FetchResponse::decode(&mut frame, api_version).unwrap();
            assert!(frame.is_empty());
            assert_eq!(decoded, concatenated, "v{api_version}");
        }
    }

    #[test]
    fn large_records_lengths_use_multi_byte_varints() {
        // 200 KiB of records needs a 3-byte varint in the flexible versions.
        for api_version in [11, 12, 16] {
            let lists = vec![vec![batch(100 << 10, 1), batch(100 << 10, 2)]];
            let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(if api_version < 13 { TopicName(StrBytes::from_static_str("t")) } else { Default::default() })
                .with_partitions(vec![PartitionData::default().with_records(Some(Bytes::new()))])]);
            let mut concatenated = body.clone();
            concatenated.responses[0].partitions[0].records = Some(Bytes::from(lists[0].concat()));
            let segments = encode_fetch_response(api_version, 1, body, &lists).unwrap();
            let expected = encode_response(ApiKey::Fetch, api_version, 1, &ResponseKind::Fetch(concatenated)).unwrap();
            assert_eq!(segments.concat(), &expected[..], "v{api_version}");
            // Head, the two batches, and (flexible versions) the tagged fields after them.
            assert_eq!(segments.len(), if api_version >= 12 { 4 } else { 3 }, "v{api_version}");
        }
    }

    #[test]
    fn refuses_mismatched_records_lists() {
        let (body, mut lists, _) = sample(12);
        lists.pop();
        assert!(encode_fetch_response(12, 1, body, &lists).is_err());
    }
}
