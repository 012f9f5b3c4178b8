//! ListOffsets: earliest, latest, max timestamp, and the first record at or after a timestamp.
//!
//! Isolation: READ_COMMITTED is answered like READ_UNCOMMITTED. Without transactions the last
//! stable offset is the high watermark.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::cluster::{ApiError, Cluster, Partition, ResponseError};
use crate::log::batch::{self, TimestampType};
use crate::log::records;
use crate::log::{ReadPlan, TimestampPlan};

/// Kafka's special timestamps (ListOffsetsRequest).
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// v7+ (KIP-734): the record with the largest timestamp.
pub const MAX_TIMESTAMP: i64 = -3;
/// v8+ (KIP-405): the earliest offset on local storage: the whole log is local here.
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
/// v9+ (KIP-1005): the latest offset in tiered storage: there is none here.
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// Kafka's READ_COMMITTED isolation level (v2+).
const READ_COMMITTED: i8 = 1;

/// The leader epoch this single broker reports (as Metadata does).
const LEADER_EPOCH: i32 = 0;

pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut topics = Vec::with_capacity(request.topics.len());
    for wanted in request.topics {
        let topic = cluster.topic(&wanted.name.0);
        let mut partitions = Vec::with_capacity(wanted.partitions.len());
        for partition in wanted.partitions {
            let found = match topic.as_ref().and_then(|topic| topic.partition(partition.partition_index)) {
                None => Err(ApiError::new(ResponseError::UnknownTopicOrPartition, "")),
                Some(log) => lookup(&log, partition.timestamp, read_committed).await,
            };
            let response = ListOffsetsPartitionResponse::default().with_partition_index(partition.partition_index);
            let response = match found {
                Ok(Some((offset, timestamp))) => {
                    let response = response.with_offset(offset).with_timestamp(timestamp);
                    if api_version >= 4 { response.with_leader_epoch(LEADER_EPOCH) } else { response }
                }
                // Nothing at or after the timestamp: offset and timestamp -1, as Kafka answers.
                Ok(None) => response.with_offset(-1).with_timestamp(-1),
                Err(error) => response.with_error_code(error.code()).with_offset(-1).with_timestamp(-1),
            };
            partitions.push(response);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(wanted.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// What the partition lock gave: an answer, or I/O to do after releasing it.
enum Lookup {
    Done(Option<(i64, i64)>),
    /// The batch holding the largest timestamp (its last offset, that timestamp).
    MaxTimestamp { offset: i64, timestamp: i64, log_start_offset: i64, plan: ReadPlan },
    ByTimestamp(TimestampPlan),
}

/// (offset, timestamp) for `timestamp` (a time or one of the special values). With
/// `read_committed`, as Kafka: the latest offset is the last stable offset, and a time or the
/// max timestamp found at or above it is no answer yet.
async fn lookup(partition: &Partition, timestamp: i64, read_committed: bool) -> Result<Option<(i64, i64)>, ApiError> {
    let (planned, fetchable_end) = partition.with_log(|log| -> Result<(Lookup, i64), ApiError> {
        let fetchable_end = if read_committed { log.last_stable_offset() } else { log.high_watermark() };
        let planned = match timestamp {
            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Lookup::Done(Some((log.log_start_offset(), -1))),
            LATEST_TIMESTAMP => Lookup::Done(Some((fetchable_end, -1))),
            LATEST_TIERED_TIMESTAMP => Lookup::Done(None),
            MAX_TIMESTAMP => match log.max_timestamp() {
                None => Lookup::Done(None),
                Some((offset, timestamp)) => Lookup::MaxTimestamp {
                    offset,
                    timestamp,
                    log_start_offset: log.log_start_offset(),
                    plan: log.read(offset, 1)?,
                },
            },
            // Any other value is a time (Kafka searches by time for unknown negative values too).
            target => Lookup::ByTimestamp(log.offset_for_timestamp(target)?),
        };
        Ok((planned, fetchable_end))
    })??;
    let searched = !matches!(timestamp, EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP | LATEST_TIMESTAMP | LATEST_TIERED_TIMESTAMP);
    let found = find(planned, timestamp).await?;
    Ok(found.filter(|&(offset, _)| !searched || offset < fetchable_end))
}

/// Completes a lookup for `timestamp` planned under the partition lock.
async fn find(planned: Lookup, timestamp: i64) -> Result<Option<(i64, i64)>, ApiError> {
    match planned {
        Lookup::Done(answer) => Ok(answer),
        Lookup::MaxTimestamp { offset, timestamp, log_start_offset, plan } => {
            // Kafka (KAFKA-16310) answers the first record carrying the largest timestamp, not
            // the batch's last offset.
            let batches = plan.execute().await?;
            let refined = batches.first().and_then(|batch| first_record_at_or_after(batch, timestamp, log_start_offset));
            Ok(Some(refined.unwrap_or((offset, timestamp))))
        }
        Lookup::ByTimestamp(plan) => {
            let Some(found) = plan.execute().await? else { return Ok(None) };
            // The match is a batch whose max timestamp is >= the target: the answer is its first
            // record at or after the target (and not below the log start offset).
            let refined = first_record_at_or_after(&found.batch, timestamp, found.offset);
            Ok(Some(refined.unwrap_or((found.offset, found.max_timestamp_ms))))
        }
    }
}

/// The first record of `batch` at offset `min_offset` or later whose timestamp is `target` or
/// later: (offset, timestamp). `None` if the batch cannot be decoded or has no such record.
///
/// The batch is one this broker validated on append (CRC, record framing, contiguous offsets),
/// so record `i` is at base offset + i.
fn first_record_at_or_after(batch: &Bytes, target: i64, min_offset: i64) -> Option<(i64, i64)> {
    let header = batch::parse_header(batch).ok()?;
    if header.timestamp_type() == TimestampType::LogAppendTime {
        // Every record of a LogAppendTime batch carries the batch's max timestamp.
        return (header.max_timestamp_ms >= target && header.last_offset() >= min_offset)
            .then(|| (header.base_offset.max(min_offset), header.max_timestamp_ms));
    }
    // The records of a client's batch, decompressed within a bound (a small batch can expand a
    // thousandfold); a batch that does not read falls back to the batch-level answer.
    let timestamps = records::record_timestamps(batch, records::DECOMPRESSED_BYTES_MAX).ok()?;
    (header.base_offset..)
        .zip(timestamps)
        .find(|&(offset, timestamp)| offset >= min_offset && timestamp >= target)
}
