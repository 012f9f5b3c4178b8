//! Produce: validate each partition's record batch as Kafka's broker does, append it, make it
//! durable, then answer.
//!
//! Every partition of a request is appended (and its flush started) first; the flushes are then
//! awaited together, so one request's partitions share the storage thread's group commit.
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
use crate::cluster::{now_ms, ApiError, Cluster, Partition, ResponseError, Topic, TopicConfig};
use crate::log::batch::{self, BatchError, Compression, TimestampType};
use crate::log::{Flush, LogError};

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
    start(cluster, api_version, request).completion.await
}

/// Appends every partition of the request now, before returning; the returned future waits
/// for durability and builds the response. The server calls this in request order on each
/// connection, so pipelined Produce requests for one partition are appended in the order the
/// client sent them (Kafka handles one request per connection at a time), while their flushes
/// still overlap (group commit).
pub fn start(
    cluster: &Arc<Cluster>,
    api_version: i16,
    request: ProduceRequest,
) -> Started<impl Future<Output = Option<ProduceResponse>> + Send + 'static> {
    let now = now_ms();
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    // v13 (KIP-516) addresses topics by id; earlier versions by name.
    let by_id = api_version >= 13;

    let mut topics = Vec::with_capacity(request.topic_data.len());
    // Every partition's flush is started as it is appended; they are awaited together below
    // (group commit).
    let mut flushes = Vec::new();
    let mut close_connection = false;
    for topic_data in request.topic_data {
        let topic = if by_id { cluster.topic_by_id(topic_data.topic_id.as_bytes()) } else { cluster.topic(&topic_data.name.0) };
        // Once per topic, not per partition.
        let config = topic.as_ref().map(|topic| topic.shared_config());
        let mut outcomes = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let outcome = if !acks_valid {
                Err(ApiError::new(ResponseError::InvalidRequiredAcks, format!("Invalid required acks {acks}: only -1, 0 and 1 are allowed")))
            } else {
                append_partition(topic.as_deref().zip(config.as_deref()), by_id, partition_data.index, partition_data.records, api_version, now)
            };
            let outcome = outcome.map(|(appended, partition, flush)| {
                flushes.push(complete_flush(partition, flush));
                appended
            });
            close_connection |= acks == 0 && outcome.is_err();
            outcomes.push((partition_data.index, outcome));
        }
        topics.push((topic_data.name, topic_data.topic_id, outcomes));
    }
    Started { completion: async move { respond(api_version, acks, by_id, topics, flushes).await }, close_connection }
}

type TopicOutcomes = Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, Vec<(i32, Outcome)>)>;

/// Waits for the flushes of an appended request and builds its response.
async fn respond(
    api_version: i16,
    acks: i16,
    by_id: bool,
    topics: TopicOutcomes,
    flushes: Vec<impl Future<Output = Result<i64, LogError>> + Send + 'static>,
) -> Option<ProduceResponse> {
    if acks == 0 {
        // No response: the client does not wait. The flushes still run to completion (that is
        // what makes the data visible to readers), detached from this request.
        let complete = async move {
            for result in crate::pending::join_all(flushes).await {
                if let Err(error) = result {
                    tracing::warn!(%error, "acks=0 produce: flush failed");
                }
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
    // flushes still complete. A flush dropped half-way would leave its successors unable to
    // confirm it, failing the partition's log.
    let flush_count = flushes.len();
    let completion = crate::pending::join_all(flushes);
    let flush_results = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn(completion).await.unwrap_or_else(|error| {
            (0..flush_count).map(|_| Err(LogError::Failed(format!("the flush task ended: {error}")))).collect()
        }),
        Err(_) => completion.await,
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

/// Awaits a partition's flush, then wakes the fetches waiting for data: the flush advanced the
/// high watermark readers see.
async fn complete_flush(partition: Arc<Partition>, flush: Flush) -> Result<i64, LogError> {
    let result = flush.complete().await;
    if let Ok(high_watermark) = result {
        partition.acks.record(high_watermark, std::time::Instant::now());
    }
    partition.data_ready.notify_waiters();
    result
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

/// Validates one partition's records, appends them and starts their flush (to be awaited after
/// the partition lock is released).
fn append_partition(
    topic: Option<(&Topic, &TopicConfig)>,
    by_id: bool,
    index: i32,
    records: Option<Bytes>,
    api_version: i16,
    now: i64,
) -> Result<(Appended, Arc<Partition>, Flush), ApiError> {
    let Some((topic, config)) = topic else {
        return Err(if by_id {
            ApiError::new(ResponseError::UnknownTopicId, "This server does not host this topic ID.")
        } else {
            unknown_partition()
        });
    };
    let partition = topic.partition(index).ok_or_else(unknown_partition)?;
    let records = records.unwrap_or_default();

    // Kafka's ProduceRequest.validateRecords: v3+ carries exactly one v2 batch per partition.
    let mut batches = batch::BatchIter::new(&records);
    let (header, bytes) = match batches.next() {
        None => return Err(invalid_record(format!("Produce requests with version {api_version} must have at least one record batch per partition"))),
        Some(Err(error)) => return Err(batch_error(error)),
        Some(Ok(first)) => first,
    };
    if batches.next().is_some() {
        return Err(invalid_record(format!(
            "Produce requests with version {api_version} are only allowed to contain exactly one record batch per partition"
        )));
    }
    if api_version < 7 && header.compression().ok() == Some(Compression::Zstd) {
        return Err(ApiError::new(
            ResponseError::UnsupportedCompressionType,
            format!("Produce requests with version {api_version} are not allowed to use ZStandard compression"),
        ));
    }
    // max.message.bytes, on the whole batch, before anything reads its body.
    let max_message_bytes = config.max_message_bytes();
    if bytes.len() > max_message_bytes {
        return Err(batch_error(BatchError::BatchTooLarge { batch_bytes: bytes.len(), max_batch_bytes: max_message_bytes }));
    }
    // The CRC and Kafka's client rules are checked by PartitionLog::append, in its single pass
    // over the batch; the checks here need only the header. A header check that fails first
    // confirms the batch is intact, so a corrupt batch is CORRUPT_MESSAGE whatever its header says.
    let log_append_time = config.timestamp_type() == TimestampType::LogAppendTime;
    if !log_append_time {
        if let Err(error) = check_timestamps(&[header.base_timestamp_ms, header.max_timestamp_ms], config.timestamp_bounds_ms(), now) {
            batch::validate(bytes).map_err(batch_error)?;
            return Err(error);
        }
    }
    // The one copy of the batch: the log rewrites its base offset (and, for LogAppendTime, its
    // timestamps) and keeps it in the partition's recent-batch cache for tailing consumers.
    // `bytes` cannot be taken over instead: it is a slice of the whole request frame, shared
    // with the other partitions' batches and the topic names, which the cache would pin. Made
    // before the lock, so the lock covers memory work only.
    let batch = BytesMut::from(bytes);
    let appended = partition.with_log(|log| -> Result<_, LogError> {
        // For LogAppendTime topics the log validates the batch as sent, then stamps it; its max
        // timestamp is then the append time (the original's, for a producer's resend).
        let info = if log_append_time { log.append_log_append_time(batch, now, now)? } else { log.append(batch, now)? };
        let append_time = if log_append_time { info.max_timestamp_ms } else { -1 };
        // A resend appended nothing, but its original may not be durable yet: this flush
        // covers it, so the resend too is acknowledged only once durable.
        Ok((info.base_offset, append_time, log.log_start_offset(), log.start_flush(), info.duplicate))
    })?;
    let (base_offset, log_append_time_ms, log_start_offset, flush, duplicate) = appended?;
    if !duplicate {
        crate::metrics::global().count_produced(bytes.len(), header.record_count);
    }
    Ok((Appended { base_offset, log_append_time_ms, log_start_offset }, partition, flush))
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
