//! Produce: validate each partition's record batch as Kafka's broker does, append it, make it
//! durable, then answer.
//!
//! Every partition of a request is appended first; one flush then makes all of them durable (a
//! padded tail and a device flush per stream for the whole request, not per partition), and
//! requests of many connections still share the storage thread's group commit.
//!
//! Durability: acks=1 and acks=-1 are both answered only once the data is durable on the device.
//! That is stronger than Kafka for acks=1 (Kafka answers when the leader's page cache has it),
//! and it is what this single-replica broker's high watermark means: readers only ever see
//! durable data, so an acknowledged record is always readable.
//!
//! timeout_ms is not applied. In Kafka it bounds only the wait for the other in-sync replicas
//! with acks=all; with a single replica there is nothing to wait for, and Kafka answers at once.
//! Here the wait is for our own durable flush, which the storage thread completes or fails (a
//! failed flush fails the partition and is answered with KAFKA_STORAGE_ERROR). Answering
//! REQUEST_TIMED_OUT before the flush completes would tell a client that data about to become
//! durable and readable was not written, and a non-idempotent client would then duplicate it on
//! retry. The client's own request.timeout.ms still bounds how long it waits.
//!
//! acks=0: no response; but when any partition fails, the connection is closed after the
//! responses already due, as Kafka does, so that the client notices (`Started::close_connection`).
//!
//! Idempotent producers: a resend of a batch already in the log is answered with the original's
//! base offset (and append time) and appended nothing; see `log::producer_state`.

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::str_bytes;
use crate::txn::coordinator::TxnTarget;
use crate::txn::Transactions;
use crate::cluster::{now_ms, ApiError, Cluster, Partition, ResponseError, Topic, TopicConfig};
use crate::log::batch::{self, BatchError, BatchHeader, Compression, TimestampType};
use crate::log::records;
use crate::log::{FlushTarget, LogError};

/// A Produce request whose batches are appended: `completion` waits for durability and yields
/// the response (`None` for acks=0).
pub struct Started<F> {
    pub completion: F,
    /// acks=0 and some partition failed: close the connection (Kafka's signal to the client,
    /// which gets no response).
    pub close_connection: bool,
}

/// A partition appended, its flush started.
struct Appended {
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

/// The outcome of one partition before its flush completes.
type Outcome = Result<Appended, ApiError>;

pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, request: ProduceRequest) -> Option<ProduceResponse> {
    start(cluster, api_version, request, None).completion.await
}

/// Appends every partition of the request now, before returning; the returned future waits
/// for durability and builds the response. The server calls this in request order on each
/// connection, so pipelined Produce requests for one partition are appended in the order the
/// client sent them (Kafka handles one request per connection at a time), while their flushes
/// still overlap (group commit).
///
/// `frame`: the request frame `request` was decoded from, when the caller has it; a request
/// whose one batch is most of its frame then hands that batch to the log in place instead of
/// copying it (see `take_records`).
pub fn start(
    cluster: &Arc<Cluster>,
    api_version: i16,
    mut request: ProduceRequest,
    frame: Option<Bytes>,
) -> Started<impl Future<Output = Option<ProduceResponse>> + Send + 'static> {
    let now = now_ms();
    let mut records = take_records(&mut request, frame).into_iter();
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    // v13 (KIP-516) addresses topics by id; earlier versions by name.
    let by_id = api_version >= 13;

    let mut topics = Vec::with_capacity(request.topic_data.len());
    // Every partition is appended first; then one flush makes them all durable (one padded
    // tail and one device flush per stream for the whole request, not one per partition).
    let mut targets = Vec::new();
    let mut appended_partitions = Vec::new();
    let mut close_connection = false;
    for topic_data in request.topic_data {
        let topic = if by_id { cluster.topic_by_id(topic_data.topic_id.as_bytes()) } else { cluster.topic(&topic_data.name.0) };
        // Once per topic, not per partition.
        let config = topic.as_ref().map(|topic| topic.shared_config());
        let mut outcomes = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let records = records.next().expect("one taken record set per partition");
            let outcome = if !acks_valid {
                Err(ApiError::new(ResponseError::InvalidRequiredAcks, format!("Invalid required acks {acks}: only -1, 0 and 1 are allowed")))
            } else {
                append_partition(cluster.transactions(), topic.as_deref().zip(config.as_deref()), by_id, partition_data.index, records, api_version, now)
            };
            let outcome = outcome.map(|(appended, partition, target)| {
                appended_partitions.push((partition, target.end_offset()));
                targets.push(target);
                appended
            });
            close_connection |= acks == 0 && outcome.is_err();
            outcomes.push((partition_data.index, outcome));
        }
        topics.push((topic_data.name, topic_data.topic_id, outcomes));
    }
    let flush = (!targets.is_empty()).then(|| FlushTarget::start(targets));
    let flushes = crate::cluster::complete_flush(flush, appended_partitions);
    Started { completion: async move { respond(api_version, acks, by_id, topics, flushes).await }, close_connection }
}

/// The most bytes of a request's allocation besides its batches (request header, topic names,
/// spare capacity) for the batches to be kept in place: the read cache holds a batch kept in
/// place with its whole allocation, and counts only the batch against its budget.
const IN_PLACE_OVERHEAD_BYTES_MAX: usize = 64 << 10;

/// Takes each partition's records out of `request` (in topic, then partition order) as buffers
/// of their own that the log can rewrite and keep.
///
/// When `frame`, the request the records were decoded from, is otherwise unreferenced and is
/// mostly record batches (what a producer sends: one batch, or the batches of several
/// partitions packed up to max.request.size), the batches are given in place, as disjoint
/// mutable pieces of the frame's one allocation: no copy, and no second buffer to fault in. The
/// allocation is freed once every piece is dropped, so a piece held by the read cache keeps at
/// most the frame's few other bytes (request header, names, a rejected partition's batch) with
/// it. The byte fields that are slices of the frame (topic names, transactional id, unknown
/// tagged fields) are copied out first so that nothing else holds it. Every other case copies
/// the records, as pieces kept in place would pin a frame that is mostly something else.
fn take_records(request: &mut ProduceRequest, frame: Option<Bytes>) -> Vec<Option<BytesMut>> {
    let mut taken: Vec<Option<Bytes>> =
        request.topic_data.iter_mut().flat_map(|topic| topic.partition_data.iter_mut()).map(|partition| partition.records.take()).collect();
    if let Some(frame) = frame {
        if let Some(ranges) = in_place_ranges(&frame, &taken) {
            // The pieces below are the only references to the records left.
            taken.clear();
            detach_from_frame(request);
            return in_place(frame, &ranges);
        }
    }
    taken.into_iter().map(|records| records.map(|records| BytesMut::from(&records[..]))).collect()
}

/// Where each record set lies in `frame`, if all are slices of it, in frame order without
/// overlap, and together all of the frame but `IN_PLACE_OVERHEAD_BYTES_MAX`.
fn in_place_ranges(frame: &Bytes, taken: &[Option<Bytes>]) -> Option<Vec<Option<std::ops::Range<usize>>>> {
    let mut ranges = Vec::with_capacity(taken.len());
    let (mut end, mut batch_bytes) = (0usize, 0usize);
    for records in taken {
        let range = match records {
            None => None,
            Some(records) => {
                let range = range_within(frame, records)?;
                if range.start < end {
                    return None;
                }
                end = range.end;
                batch_bytes += range.len();
                Some(range)
            }
        };
        ranges.push(range);
    }
    (batch_bytes > 0 && frame.len() - batch_bytes <= IN_PLACE_OVERHEAD_BYTES_MAX).then_some(ranges)
}

/// The `ranges` of `frame` (in frame order, disjoint) as buffers of their own: in place when
/// nothing else references the frame and its allocation is not much larger than the ranges,
/// else copies.
fn in_place(frame: Bytes, ranges: &[Option<std::ops::Range<usize>>]) -> Vec<Option<BytesMut>> {
    let batch_bytes: usize = ranges.iter().flatten().map(|range| range.len()).sum();
    let copies = |frame: &[u8]| ranges.iter().map(|range| range.clone().map(|range| BytesMut::from(&frame[range]))).collect();
    match frame.try_into_mut() {
        Ok(mut whole) if whole.capacity() - batch_bytes <= IN_PLACE_OVERHEAD_BYTES_MAX => {
            let mut at = 0usize;
            ranges
                .iter()
                .map(|range| {
                    range.clone().map(|range| {
                        bytes::Buf::advance(&mut whole, range.start - at);
                        at = range.end;
                        whole.split_to(range.len())
                    })
                })
                .collect()
        }
        Ok(whole) => copies(&whole),
        Err(frame) => copies(&frame),
    }
}

/// Where `part` lies in `frame`, if it is a slice of it.
fn range_within(frame: &Bytes, part: &Bytes) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= frame.len()).then_some(start..end)
}

/// Replaces the request's byte fields that may be slices of its frame with copies (the records
/// were taken out already).
fn detach_from_frame(request: &mut ProduceRequest) {
    fn copy_str(text: &kafka_protocol::protocol::StrBytes) -> kafka_protocol::protocol::StrBytes {
        str_bytes(text.as_str())
    }
    fn copy_tagged(fields: &mut std::collections::BTreeMap<i32, Bytes>) {
        for value in fields.values_mut() {
            *value = Bytes::copy_from_slice(value);
        }
    }
    if let Some(id) = request.transactional_id.as_mut() {
        id.0 = copy_str(&id.0);
    }
    copy_tagged(&mut request.unknown_tagged_fields);
    for topic in &mut request.topic_data {
        topic.name.0 = copy_str(&topic.name.0);
        copy_tagged(&mut topic.unknown_tagged_fields);
        for partition in &mut topic.partition_data {
            copy_tagged(&mut partition.unknown_tagged_fields);
        }
    }
}

type TopicOutcomes = Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, Vec<(i32, Outcome)>)>;

/// Waits for the flushes of an appended request and builds its response.
async fn respond(
    api_version: i16,
    acks: i16,
    by_id: bool,
    topics: TopicOutcomes,
    flushes: impl Future<Output = Vec<Result<i64, LogError>>> + Send + 'static,
) -> Option<ProduceResponse> {
    if acks == 0 {
        // No response: the client does not wait. The flush still runs to completion (that is
        // what makes the data visible to readers), detached from this request.
        let complete = async move {
            if let Some(Err(error)) = flushes.await.into_iter().next() {
                tracing::warn!(%error, "acks=0 produce: flush failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(complete)),
            Err(_) => complete.await,
        }
        // The connection is closed for these (`Started::close_connection`); the reasons are
        // only logged.
        for (_, _, outcomes) in &topics {
            for (index, outcome) in outcomes {
                if let Err(error) = outcome {
                    tracing::debug!(partition = index, code = error.code(), message = %error.message, "acks=0 produce rejected");
                }
            }
        }
        return None;
    }

    // Awaited in a task of its own: if this request is dropped (the client went away), the
    // flush still completes. A flush dropped half-way would leave its successors unable to
    // confirm it, failing the partitions' logs.
    let flush_count = topics.iter().flat_map(|(_, _, outcomes)| outcomes).filter(|(_, outcome)| outcome.is_ok()).count();
    let flush_results = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn(flushes).await.unwrap_or_else(|error| {
            (0..flush_count).map(|_| Err(LogError::Failed(format!("the flush task ended: {error}")))).collect()
        }),
        Err(_) => flushes.await,
    };
    let mut flush_results = flush_results.into_iter();
    let responses = topics
        .into_iter()
        .map(|(name, topic_id, outcomes)| {
            let partitions = outcomes
                .into_iter()
                .map(|(index, outcome)| {
                    let outcome = outcome.and_then(|appended| match flush_results.next().expect("one flush result per append") {
                        Ok(_) => Ok(appended),
                        Err(error) => Err(ApiError::from(error)),
                    });
                    partition_response(api_version, index, outcome)
                })
                .collect();
            let response = TopicProduceResponse::default().with_partition_responses(partitions);
            if by_id { response.with_topic_id(topic_id) } else { response.with_name(name) }
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

fn partition_response(api_version: i16, index: i32, outcome: Outcome) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match outcome {
        Ok(appended) => {
            let response = response.with_base_offset(appended.base_offset).with_log_append_time_ms(appended.log_append_time_ms);
            if api_version >= 5 { response.with_log_start_offset(appended.log_start_offset) } else { response }
        }
        Err(error) => {
            // Kafka's answer for a failed partition: offsets and times unknown (-1).
            let response = response.with_error_code(error.code()).with_base_offset(-1).with_log_append_time_ms(-1);
            let response = if api_version >= 5 { response.with_log_start_offset(-1) } else { response };
            if api_version >= 8 { response.with_error_message(Some(str_bytes(error.message))) } else { response }
        }
    }
}

fn unknown_partition() -> ApiError {
    ApiError::new(ResponseError::UnknownTopicOrPartition, "This server does not host this topic-partition.")
}

/// Validates one partition's records and appends them; returns what a flush must cover to make
/// them durable (started for the whole request once every partition is appended, and awaited
/// after the partition locks are released).
fn append_partition(
    transactions: &Transactions,
    topic: Option<(&Topic, &TopicConfig)>,
    by_id: bool,
    index: i32,
    records: Option<BytesMut>,
    api_version: i16,
    now: i64,
) -> Result<(Appended, Arc<Partition>, FlushTarget), ApiError> {
    let Some((topic, config)) = topic else {
        return Err(if by_id {
            ApiError::new(ResponseError::UnknownTopicId, "This server does not host this topic ID.")
        } else {
            unknown_partition()
        });
    };
    let partition = topic.partition(index).ok_or_else(unknown_partition)?;
    let mut records = records.unwrap_or_default();

    // Kafka's ProduceRequest.validateRecords: v3+ carries exactly one v2 batch per partition.
    let mut batches = batch::BatchIter::new(&records);
    let header = match batches.next() {
        None => return Err(invalid_record(format!("Produce requests with version {api_version} must have at least one record batch per partition"))),
        Some(Err(error)) => return Err(batch_error(error)),
        Some(Ok((header, bytes))) => {
            debug_assert_eq!(bytes.len(), header.total_bytes());
            header
        }
    };
    if batches.next().is_some() {
        return Err(invalid_record(format!(
            "Produce requests with version {api_version} are only allowed to contain exactly one record batch per partition"
        )));
    }
    // The one batch is all of `records` (anything after it was refused above as a second batch).
    records.truncate(header.total_bytes());
    let mut batch = records;
    if api_version < 7 && header.compression().ok() == Some(Compression::Zstd) {
        return Err(ApiError::new(
            ResponseError::UnsupportedCompressionType,
            format!("Produce requests with version {api_version} are not allowed to use ZStandard compression"),
        ));
    }
    // A transactional batch must belong to its producer's ongoing transaction, which must hold
    // this partition (KIP-890's server-side check: a late batch cannot join a later transaction).
    if header.is_transactional() {
        transactions
            .coordinator()
            .verify(header.producer_id, header.producer_epoch, &TxnTarget::Partition { topic: topic.name.clone(), partition: index })
            .map_err(|error| ApiError::new(error, "the batch's transaction is not ongoing or does not hold this partition"))?;
    }
    // max.message.bytes, on the whole batch, before anything reads its body.
    let max_message_bytes = config.max_message_bytes();
    let batch_bytes = batch.len();
    if batch_bytes > max_message_bytes {
        return Err(batch_error(BatchError::BatchTooLarge { batch_bytes, max_batch_bytes: max_message_bytes }));
    }
    // The CRC and Kafka's client rules are checked by PartitionLog::append, in its single pass
    // over the batch; the checks here need only the header and the records' timestamps (a CRC
    // pass only when the max timestamp must be rewritten). A check that fails first confirms
    // the batch is intact, so a corrupt batch is CORRUPT_MESSAGE whatever its header says.
    let log_append_time = config.timestamp_type() == TimestampType::LogAppendTime;
    if !log_append_time {
        let header = seal_max_timestamp(&mut batch, header)?;
        if let Err(error) = check_timestamps(&[header.base_timestamp_ms, header.max_timestamp_ms], config.timestamp_bounds_ms(), now) {
            batch::validate(&batch).map_err(batch_error)?;
            return Err(error);
        }
    }
    // The log rewrites the batch's base offset (and, for LogAppendTime, its timestamps) and
    // keeps it in the partition's recent-batch cache for tailing consumers: `take_records` made
    // it a buffer of its own, before the lock, so the lock covers memory work only.
    let appended = partition.with_log(|log| -> Result<_, LogError> {
        // For LogAppendTime topics the log validates the batch as sent, then stamps it; its max
        // timestamp is then the append time (the original's, for a producer's resend).
        let info = if log_append_time { log.append_log_append_time(batch, now, now)? } else { log.append(batch, now)? };
        let append_time = if log_append_time { info.max_timestamp_ms } else { -1 };
        // A resend appended nothing, but its original may not be durable yet: this flush
        // covers it, so the resend too is acknowledged only once durable.
        Ok((info.base_offset, append_time, log.log_start_offset(), log.flush_target().map_err(LogError::Failed)?, info.duplicate))
    })?;
    let (base_offset, log_append_time_ms, log_start_offset, target, duplicate) = appended?;
    if !duplicate {
        crate::metrics::global().count_produced(batch_bytes, header.record_count);
    }
    Ok((Appended { base_offset, log_append_time_ms, log_start_offset }, partition, target))
}


/// Kafka's `LogValidator` sets every client batch's maxTimestamp to the largest timestamp of
/// its records: clients may write anything there (older Go clients write -1), and ListOffsets
/// by time and the query layer's time bounds trust it. Uncompressed records are walked in place
/// (lengths and timestamp deltas only); compressed ones are inflated, as Kafka does on append,
/// within `DECOMPRESSED_BYTES_MAX`. The batch is rewritten, and its CRC recomputed, only when
/// the field was wrong. A batch that fails here is validated whole first, so that a corrupt one
/// answers CORRUPT_MESSAGE whatever broke the walk. LogAppendTime topics overwrite the field
/// anyway and skip this.
fn seal_max_timestamp(batch: &mut BytesMut, header: BatchHeader) -> Result<BatchHeader, ApiError> {
    let section = &batch[batch::BATCH_HEADER_BYTES..];
    let computed = match header.compression() {
        Ok(Compression::None) => batch::records_max_timestamp_ms(&header, section).map_err(batch_error),
        Ok(codec) => records::decompress(codec, section, records::DECOMPRESSED_BYTES_MAX)
            .map_err(|error| ApiError::new(ResponseError::CorruptMessage, error.to_string()))
            .and_then(|inflated| batch::records_max_timestamp_ms(&header, &inflated).map_err(batch_error)),
        Err(error) => Err(batch_error(error)),
    };
    let max_timestamp_ms = match computed {
        Ok(max_timestamp_ms) => max_timestamp_ms,
        Err(error) => {
            batch::validate(batch).map_err(batch_error)?;
            return Err(error);
        }
    };
    if !batch::set_max_timestamp(batch, max_timestamp_ms).map_err(batch_error)? {
        return Ok(header);
    }
    let resealed = batch::parse_header(batch).map_err(batch_error)?;
    debug_assert_eq!(resealed.max_timestamp_ms, max_timestamp_ms);
    Ok(resealed)
}

/// Kafka's message.timestamp.before.max.ms / after.max.ms check for CreateTime topics, on the
/// timestamps the batch header carries (its first and its largest). -1 means "no timestamp"
/// and is not checked, as in Kafka.
fn check_timestamps(timestamps: &[i64], (before_max_ms, after_max_ms): (i64, i64), now: i64) -> Result<(), ApiError> {
    let earliest = now.saturating_sub(before_max_ms.max(0));
    let latest = now.saturating_add(after_max_ms.max(0));
    for &timestamp in timestamps {
        if timestamp != -1 && !(earliest..=latest).contains(&timestamp) {
            return Err(ApiError::new(
                ResponseError::InvalidTimestamp,
                format!("Timestamp {timestamp} of a record is out of range. The timestamp should be within [{earliest}, {latest}]"),
            ));
        }
    }
    Ok(())
}

fn invalid_record(message: String) -> ApiError {
    ApiError::new(ResponseError::InvalidRecord, message)
}

fn batch_error(error: BatchError) -> ApiError {
    let code = ResponseError::try_from_code(error.kafka_error_code()).unwrap_or(ResponseError::UnknownServerError);
    ApiError::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    /// The encoded body of a Produce v9 request with one batch per `(topic, records)`.
    fn encoded(batches: &[(&str, Vec<u8>)]) -> Bytes {
        let topics = batches
            .iter()
            .map(|(topic, records)| {
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records.clone())))])
            })
            .collect();
        let request = ProduceRequest::default().with_acks(-1).with_transactional_id(Some(StrBytes::from_static_str("tx").into())).with_topic_data(topics);
        let mut buf = BytesMut::new();
        request.encode(&mut buf, 9).unwrap();
        // An exact allocation, as the connection reads a large frame into.
        Bytes::from(buf.to_vec())
    }

    fn decoded(frame: &Bytes) -> ProduceRequest {
        ProduceRequest::decode(&mut frame.clone(), 9).unwrap()
    }

    fn lies_in(part: &[u8], whole: &std::ops::Range<usize>) -> bool {
        whole.contains(&(part.as_ptr() as usize))
    }

    #[test]
    fn batches_are_given_in_place_unless_the_frame_is_shared_or_mostly_other_bytes() {
        let batch: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

        // One batch, frame otherwise unreferenced: the batch stays where it arrived.
        let frame = encoded(&[("events", batch.clone())]);
        let span = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let mut request = decoded(&frame);
        let taken = take_records(&mut request, Some(frame));
        assert_eq!(taken.len(), 1);
        let records = taken[0].as_ref().unwrap();
        assert_eq!(&records[..], &batch[..]);
        assert!(lies_in(records, &span), "kept in place");
        // The fields left in the request no longer point into the frame.
        assert_eq!(request.topic_data[0].name.0.as_str(), "events");
        assert!(!lies_in(request.topic_data[0].name.0.as_bytes(), &span));
        assert_eq!(request.transactional_id.as_ref().unwrap().0.as_str(), "tx");

        // Someone else still holds the frame: copied.
        let frame = encoded(&[("events", batch.clone())]);
        let span = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let held = frame.clone();
        let mut request = decoded(&frame);
        let taken = take_records(&mut request, Some(frame));
        let records = taken[0].as_ref().unwrap();
        assert_eq!(&records[..], &batch[..]);
        assert!(!lies_in(records, &span), "copied");
        drop(held);

        // Two batches (a request packed with several partitions): in place too, in request
        // order, each a buffer of its own that can be rewritten without touching the other.
        let other: Vec<u8> = batch.iter().rev().copied().collect();
        let frame = encoded(&[("events", batch.clone()), ("other", other.clone())]);
        let span = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let mut request = decoded(&frame);
        let mut taken = take_records(&mut request, Some(frame));
        assert_eq!(taken.len(), 2);
        assert_eq!(&taken[0].as_ref().unwrap()[..], &batch[..]);
        assert_eq!(&taken[1].as_ref().unwrap()[..], &other[..]);
        assert!(taken.iter().all(|records| lies_in(records.as_ref().unwrap(), &span)));
        taken[0].as_mut().unwrap()[..8].copy_from_slice(&[0xff; 8]);
        assert_eq!(&taken[1].as_ref().unwrap()[..], &other[..]);
        let second = taken.pop().unwrap().unwrap().freeze();
        drop(taken);
        assert_eq!(&second[..], &other[..], "a piece outlives its siblings");

        // Two batches while someone else holds the frame: copied, in request order.
        let frame = encoded(&[("events", batch.clone()), ("other", other.clone())]);
        let span = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let held = frame.clone();
        let mut request = decoded(&frame);
        let taken = take_records(&mut request, Some(frame));
        assert_eq!(&taken[0].as_ref().unwrap()[..], &batch[..]);
        assert_eq!(&taken[1].as_ref().unwrap()[..], &other[..]);
        assert!(taken.iter().all(|records| !lies_in(records.as_ref().unwrap(), &span)));
        drop(held);

        // A small batch in a frame that is mostly something else: copied, so that the cache
        // does not pin the rest.
        let mut frame = encoded(&[("events", batch[..100].to_vec())]).to_vec();
        frame.extend(std::iter::repeat_n(0u8, IN_PLACE_OVERHEAD_BYTES_MAX + 1));
        let frame = Bytes::from(frame);
        let span = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let mut request = decoded(&frame);
        let taken = take_records(&mut request, Some(frame));
        assert_eq!(&taken[0].as_ref().unwrap()[..], &batch[..100]);
        assert!(!lies_in(taken[0].as_ref().unwrap(), &span));

        // No frame: copied.
        let frame = encoded(&[("events", batch.clone())]);
        let mut request = decoded(&frame);
        let taken = take_records(&mut request, None);
        assert_eq!(&taken[0].as_ref().unwrap()[..], &batch[..]);
    }
}
