//! Fetch: whole record batches below the high watermark, with Kafka's byte limits (KIP-74) and
//! long polling (max_wait_ms, min_bytes).
//!
//! Fetch sessions (KIP-227) are answered sessionless: a full request (epoch 0 or -1) gets
//! session id 0, which tells the client that no session was created, so it keeps sending full
//! requests. An incremental request (epoch > 0) names a session this broker never created and
//! gets FETCH_SESSION_ID_NOT_FOUND, as Kafka answers for an unknown session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

use crate::cluster::{ApiError, Cluster, Partition, ResponseError};
use crate::log::txn_index::AbortedTxn;
use crate::log::ReadPlan;

/// The longest a fetch waits for data, whatever the client asks (Kafka clients use 500 ms).
pub const MAX_WAIT_MS_CAP: i32 = 30_000;
/// The most record bytes one response carries, whatever max_bytes says (clients ask for 50 MiB
/// by default). A single batch larger than what remains is still served first (KIP-74); it is
/// bounded by max.message.bytes and the zone size.
pub const RESPONSE_BYTES_CAP: usize = 64 << 20;
/// Reads of one partition per request. Each read covers at most one zone and every read but
/// the last returns at least one batch, so this only bounds pathological chains of nearly
/// empty zones; a fetch cut short by it is answered with what was read.
const READS_PER_PARTITION_MAX: usize = 64;
/// Partitions of one request read at once (each with one read in flight).
const CONCURRENT_READS_MAX: usize = 32;

/// How long a readahead read waits for its consumer before its memory is given back.
const READAHEAD_TTL: Duration = Duration::from_secs(5);

/// Kafka's READ_COMMITTED isolation level.
const READ_COMMITTED: i8 = 1;

/// A requested partition, resolved once per request.
struct Wanted {
    index: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
    partition: Result<Arc<Partition>, ResponseError>,
}

struct WantedTopic {
    name: TopicName,
    topic_id: Uuid,
    partitions: Vec<Wanted>,
}

/// A Fetch answer with each partition's batches kept apart, as read (zero-copy slices of the
/// cache or of device windows): `protocol::encode_fetch_response` writes them into the frame
/// without copying. `records` has one list per partition of `response`, in order; a
/// partition's `records` field is empty where its list is used.
pub struct FetchAnswer {
    pub response: FetchResponse,
    pub records: Vec<Vec<Bytes>>,
}

impl FetchAnswer {
    /// The plain response, each partition's batches concatenated into its records.
    pub fn into_response(self) -> FetchResponse {
        let FetchAnswer { mut response, records } = self;
        for (partition, batches) in response.responses.iter_mut().flat_map(|topic| topic.partitions.iter_mut()).zip(records) {
            if !batches.is_empty() {
                let total_bytes = batches.iter().map(|batch| batch.len()).sum();
                partition.records = Some(concat(batches, total_bytes));
            }
        }
        response
    }
}

pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, request: FetchRequest) -> FetchResponse {
    handle_segmented(cluster, api_version, request).await.into_response()
}

/// `handle`, with the records left as the batches read (see `FetchAnswer`).
pub async fn handle_segmented(cluster: &Arc<Cluster>, api_version: i16, request: FetchRequest) -> FetchAnswer {
    if api_version >= 7 && !(request.session_epoch == 0 || request.session_epoch == -1) {
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()).with_session_id(0);
        return FetchAnswer { response, records: Vec::new() };
    }
    // v13+ (KIP-516) names topics by id.
    let by_id = api_version >= 13;
    let topics: Vec<WantedTopic> = request
        .topics
        .into_iter()
        .map(|fetch_topic| {
            let topic = if by_id { cluster.topic_by_id(fetch_topic.topic_id.as_bytes()) } else { cluster.topic(&fetch_topic.topic.0) };
            let partitions = fetch_topic
                .partitions
                .into_iter()
                .map(|wanted| {
                    let partition = match &topic {
                        None if by_id => Err(ResponseError::UnknownTopicId),
                        None => Err(ResponseError::UnknownTopicOrPartition),
                        Some(topic) => topic.partition(wanted.partition).ok_or(ResponseError::UnknownTopicOrPartition),
                    };
                    Wanted { index: wanted.partition, fetch_offset: wanted.fetch_offset, partition_max_bytes: wanted.partition_max_bytes, partition }
                })
                .collect();
            WantedTopic { name: fetch_topic.topic, topic_id: fetch_topic.topic_id, partitions }
        })
        .collect();

    let limits = Limits {
        api_version,
        max_bytes: usize::try_from(request.max_bytes).unwrap_or(0).min(RESPONSE_BYTES_CAP),
        read_committed: request.isolation_level == READ_COMMITTED,
    };
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
    let deadline = Instant::now() + max_wait;
    let partitions: Vec<Arc<Partition>> =
        topics.iter().flat_map(|topic| topic.partitions.iter().filter_map(|wanted| wanted.partition.as_ref().ok().cloned())).collect();

    let responses = loop {
        // Register for wake-ups before reading, so data that arrives between the read and the
        // wait is not missed.
        let mut notified: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            partitions.iter().map(|partition| Box::pin(partition.data_ready.notified())).collect();
        for future in &mut notified {
            future.as_mut().enable();
        }
        let (responses, total_bytes, any_error) = read_all(&topics, &limits).await;
        // Kafka answers at once on an error, on enough data, or when there is nothing to wait for.
        if any_error || total_bytes >= min_bytes || partitions.is_empty() || Instant::now() >= deadline {
            break responses;
        }
        let any_ready = std::future::poll_fn(|context| {
            if notified.iter_mut().any(|future| future.as_mut().poll(context).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if tokio::time::timeout_at(deadline, any_ready).await.is_err() {
            // Timed out: answer with what there is now (data may have arrived at the deadline).
            break read_all(&topics, &limits).await.0;
        }
    };

    if tracing::enabled!(tracing::Level::DEBUG) {
        // (partition, fetch offset, error code, bytes answered) per partition asked for.
        let answered: Vec<(i32, i64, i16, usize)> = topics
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .zip(responses.iter().flatten())
            .map(|(wanted, (data, batches))| (wanted.index, wanted.fetch_offset, data.error_code, batches.iter().map(Bytes::len).sum()))
            .collect();
        let waited_ms = max_wait.saturating_sub(deadline.saturating_duration_since(Instant::now())).as_millis();
        tracing::debug!(?answered, waited_ms, max_wait_ms = request.max_wait_ms, session_epoch = request.session_epoch, "Fetch");
    }
    let mut records = Vec::new();
    let responses = topics
        .iter()
        .zip(responses)
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(data, batches)| {
                    records.push(batches);
                    data
                })
                .collect();
            let response = FetchableTopicResponse::default().with_partitions(partitions);
            if by_id { response.with_topic_id(topic.topic_id) } else { response.with_topic(topic.name.clone()) }
        })
        .collect();
    FetchAnswer { response: FetchResponse::default().with_session_id(0).with_responses(responses), records }
}

struct Limits {
    api_version: i16,
    /// The response's byte budget (KIP-74: the first batch found is served even if larger).
    max_bytes: usize,
    read_committed: bool,
}

/// Reads every requested partition once, within the byte budget: the partitions' responses per
/// topic (in request order), the record bytes gathered and whether any partition failed.
///
/// Partitions are read concurrently, in waves of consecutive partitions whose budgets add up to
/// about what remains of the response (at most `CONCURRENT_READS_MAX` at once), so the device
/// sees them together instead of one after another while a response never over-reads by much
/// more than one partition's budget. Each read gets min(partition_max_bytes, remaining) and, if
/// nothing was gathered before its wave, keeps its first batch whatever the size. The results
/// are then walked in request order, applying the response budget and KIP-74 as a sequential
/// read would (the first batch overall is served whatever its size; after that only batches
/// that fit): a read with a larger budget returns a prefix-extended list of the same batches,
/// so trimming it gives exactly what the smaller budget would have read.
async fn read_all(topics: &[WantedTopic], limits: &Limits) -> (Vec<Vec<(PartitionData, Vec<Bytes>)>>, usize, bool) {
    let wanted: Vec<&Wanted> = topics.iter().flat_map(|topic| topic.partitions.iter()).collect();
    let partition_max = |wanted: &Wanted| usize::try_from(wanted.partition_max_bytes).unwrap_or(0);
    let mut remaining = limits.max_bytes;
    let mut total_bytes = 0usize;
    let mut any_error = false;
    let mut answered: Vec<(PartitionData, Vec<Bytes>)> = Vec::with_capacity(wanted.len());
    let mut next = 0;
    while next < wanted.len() {
        let min_one = total_bytes == 0;
        let mut end = next;
        let mut planned = 0usize;
        while end < wanted.len() && end - next < CONCURRENT_READS_MAX && (end == next || remaining == 0 || planned < remaining) {
            planned = planned.saturating_add(partition_max(wanted[end]).min(remaining));
            end += 1;
        }
        let reads = crate::pending::join_all(
            wanted[next..end]
                .iter()
                .map(|wanted| {
                    let budget = partition_max(wanted).min(remaining);
                    async move {
                        match &wanted.partition {
                            Err(error) => Err((ApiError::new(*error, ""), None)),
                            Ok(partition) => read_partition(partition, wanted.fetch_offset, budget, min_one, limits.read_committed).await,
                        }
                    }
                })
                .collect(),
        )
        .await;
        for (wanted, read) in wanted[next..end].iter().zip(reads) {
            let response = match read {
                Ok(read) => {
                    let budget = partition_max(wanted).min(remaining);
                    // Until some partition returned data, the first batch is served whatever its size.
                    let first_free = total_bytes == 0;
                    let mut kept_bytes = 0usize;
                    let mut kept = 0usize;
                    for batch in &read.batches {
                        if kept_bytes + batch.len() > budget && !(first_free && kept == 0) {
                            break;
                        }
                        kept_bytes += batch.len();
                        kept += 1;
                    }
                    let mut batches = read.batches;
                    batches.truncate(kept);
                    total_bytes += kept_bytes;
                    remaining = remaining.saturating_sub(kept_bytes);
                    let offsets = Offsets { high_watermark: read.high_watermark, last_stable_offset: read.last_stable_offset, log_start_offset: read.log_start_offset };
                    (partition_data(limits, wanted.index, 0, offsets, read.aborted, Bytes::new()), batches)
                }
                Err((error, offsets)) => {
                    any_error = true;
                    let (high_watermark, log_start_offset) = offsets.unwrap_or((-1, -1));
                    let offsets = Offsets { high_watermark, last_stable_offset: high_watermark, log_start_offset };
                    (partition_data(limits, wanted.index, error.code(), offsets, Vec::new(), Bytes::new()), Vec::new())
                }
            };
            answered.push(response);
        }
        next = end;
    }
    let mut answered = answered.into_iter();
    let responses = topics.iter().map(|topic| answered.by_ref().take(topic.partitions.len()).collect()).collect();
    (responses, total_bytes, any_error)
}

/// One partition's batches as the single records buffer a response carries.
fn concat(mut batches: Vec<Bytes>, total_bytes: usize) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.pop().expect("one batch"),
        _ => {
            let mut records = BytesMut::with_capacity(total_bytes);
            for batch in &batches {
                records.extend_from_slice(batch);
            }
            records.freeze()
        }
    }
}

/// A partition's offsets as a fetch response reports them.
struct Offsets {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

fn partition_data(limits: &Limits, index: i32, error_code: i16, offsets: Offsets, aborted: Vec<AbortedTxn>, records: Bytes) -> PartitionData {
    // Kafka sends the list (empty or not) only to READ_COMMITTED consumers, null otherwise.
    let aborted = limits.read_committed.then(|| {
        aborted
            .iter()
            .map(|txn| AbortedTransaction::default().with_producer_id(ProducerId(txn.producer_id)).with_first_offset(txn.first_offset))
            .collect()
    });
    let mut data = PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error_code)
        .with_high_watermark(offsets.high_watermark)
        .with_last_stable_offset(offsets.last_stable_offset)
        .with_aborted_transactions(aborted)
        .with_records(Some(records));
    if limits.api_version >= 5 {
        data = data.with_log_start_offset(offsets.log_start_offset);
    }
    if limits.api_version >= 11 {
        data = data.with_preferred_read_replica(BrokerId(-1));
    }
    data
}

struct PartitionRead {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// For a read_committed fetch: the aborted transactions the batches may hold records of.
    aborted: Vec<AbortedTxn>,
    /// Whole batches in offset order, zero-copy slices of the windows read.
    batches: Vec<Bytes>,
}

/// An error, with (high watermark, log start offset) when the partition could say.
type ReadError = (ApiError, Option<(i64, i64)>);

/// Whole batches from `fetch_offset`, at most `max_bytes` of them, or (with `min_one`) the first
/// batch whatever its size; with `read_committed`, only below the last stable offset. Each read
/// plan is made under the partition lock and executed after.
async fn read_partition(partition: &Arc<Partition>, fetch_offset: i64, max_bytes: usize, min_one: bool, read_committed: bool) -> Result<PartitionRead, ReadError> {
    let mut from_device = false;
    let mut batches: Vec<Bytes> = Vec::new();
    let mut total_bytes = 0usize;
    let mut offset = fetch_offset;
    let mut offsets = None;
    // Fixed at the first read: the end this response serves up to (the last stable offset for
    // read_committed, else the high watermark), the last stable offset (reported to both, as
    // Kafka does) and the aborted transactions of fetch_offset..end for read_committed.
    let mut stable: Option<(i64, i64, Vec<AbortedTxn>)> = None;
    for _ in 0..READS_PER_PARTITION_MAX {
        let planned = partition
            .with_log(|log| {
                let (log_start_offset, high_watermark) = (log.log_start_offset(), log.high_watermark());
                let (stable_end, _, _) = stable.get_or_insert_with(|| {
                    let last_stable_offset = log.last_stable_offset();
                    match read_committed {
                        true => (last_stable_offset, last_stable_offset, log.aborted_between(fetch_offset, last_stable_offset)),
                        false => (high_watermark, last_stable_offset, Vec::new()),
                    }
                });
                // At or above the stable end (but within the log) there is nothing to serve yet.
                let plan = match offset >= *stable_end && offset >= log_start_offset && offset <= high_watermark {
                    true => Ok(ReadPlan::Ready(Vec::new())),
                    false => log.read(offset, max_bytes.saturating_sub(total_bytes)),
                };
                (log_start_offset, high_watermark, plan)
            })
            .map_err(|error| (error, offsets))?;
        let (log_start_offset, high_watermark, plan) = planned;
        let stable_end = stable.as_ref().expect("set under the first lock").0;
        // The latest values: the high watermark only grows, and every batch read is below it.
        offsets = Some((high_watermark, log_start_offset));
        let plan = match plan {
            Ok(plan) => plan,
            // Only the first read can be out of range (later ones start at the end of a batch
            // just read, unless retention removed it meanwhile: then answer what was read).
            Err(error) if batches.is_empty() => return Err((ApiError::from(error), offsets)),
            Err(_) => break,
        };
        from_device |= !plan.is_ready();
        let read = plan.execute().await.map_err(|error| (ApiError::from(error), offsets))?;
        let mut progressed = false;
        let mut last_bytes = 0usize;
        for batch in read {
            let allowed = total_bytes + batch.len() <= max_bytes || (min_one && batches.is_empty());
            if !allowed {
                break;
            }
            let header = crate::log::batch::parse_header(&batch).map_err(|error| (ApiError::from(crate::log::LogError::from(error)), offsets))?;
            if header.base_offset >= stable_end {
                break;
            }
            offset = header.last_offset() + 1;
            total_bytes += batch.len();
            last_bytes = batch.len();
            batches.push(batch);
            progressed = true;
        }
        // A read covers one zone; go on into the next only while there is data and room for
        // another batch like the last (a read for less would most likely return a batch that
        // does not fit: a device read for nothing, before the readahead could start).
        if !progressed || max_bytes.saturating_sub(total_bytes) < last_bytes || offset >= stable_end {
            break;
        }
    }
    let (high_watermark, log_start_offset) = offsets.expect("at least one read");
    let (stable_end, last_stable_offset, aborted) = stable.expect("at least one read");
    if from_device && !batches.is_empty() && offset < stable_end {
        start_readahead(partition, offset, max_bytes);
    }
    Ok(PartitionRead { high_watermark, last_stable_offset, log_start_offset, aborted, batches })
}

/// A consumer reading from the device will likely ask for what follows next: read it now, while
/// this response is written, a few fetches deep (see `PartitionLog::start_readahead`), and give
/// each read's memory back if nobody asked for it within `READAHEAD_TTL`.
fn start_readahead(partition: &Arc<Partition>, offset: i64, max_bytes: usize) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let Ok(readaheads) = partition.with_log(|log| log.start_readahead(offset, max_bytes)) else { return };
    for readahead in readaheads {
        let partition = partition.clone();
        // By id: a read started later from the same offset (a consumer reading it again) is
        // not this one's to drop.
        let id = readahead.id();
        runtime.spawn(async move {
            readahead.run().await;
            tokio::time::sleep(READAHEAD_TTL).await;
            let _ = partition.with_log(|log| log.drop_readahead(id));
        });
    }
}
