//! Produce, Fetch and ListOffsets at the handler level, over a real cluster on an in-memory
//! zoned device: `broker::api::handle` with requests built as a client would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::api::handle;
use broker::cluster::{now_ms, BrokerConfig, Cluster, ResponseError};
use broker::log::batch::{self, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use uuid::Uuid;

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;

async fn cluster() -> Arc<Cluster> {
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 64, max_open_zones: 4, max_active_zones: 64 };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap()
}

async fn create(cluster: &Cluster, name: &str, partitions: i32, configs: &[(&str, &str)]) -> [u8; 16] {
    let configs: BTreeMap<String, String> = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    cluster.create_topic(name, partitions, &configs, false).await.unwrap().unwrap().id
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One uncompressed batch of records (key, value, timestamp).
fn batch_of(records: &[(&str, &str, i64)]) -> Vec<u8> {
    let records: Vec<SimpleRecord> =
        records.iter().map(|(k, v, ts)| SimpleRecord::new(Some(k.as_bytes()), Some(v.as_bytes()), &[("h", Some(b"x"))], *ts)).collect();
    batch::encode_batch(&records, Compression::None).unwrap()
}

/// A batch of `count` records with `value_bytes` values, timestamped now.
fn sized_batch(count: usize, value_bytes: usize) -> Vec<u8> {
    let value = "v".repeat(value_bytes);
    let now = now_ms();
    let records: Vec<(&str, &str, i64)> = (0..count).map(|_| ("k", value.as_str(), now)).collect();
    batch_of(&records)
}

/// The batch as the log stores it: the same bytes with the assigned base offset.
fn stored(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut stored = batch.to_vec();
    batch::set_base_offset(&mut stored, base_offset).unwrap();
    stored
}

fn encodes<T: Encodable>(message: &T, version: i16) {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).unwrap_or_else(|error| panic!("response does not encode at v{version}: {error}"));
}

async fn produce_raw(cluster: &Arc<Cluster>, version: i16, acks: i16, topic: &str, partitions: Vec<(i32, Option<Bytes>)>) -> Option<Vec<PartitionProduceResponse>> {
    let partition_data = partitions.into_iter().map(|(index, records)| PartitionProduceData::default().with_index(index).with_records(records)).collect();
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data)]);
    match handle(cluster, version, RequestKind::Produce(request)).await {
        None => None,
        Some(ResponseKind::Produce(response)) => {
            encodes(&response, version);
            assert_eq!(response.responses.len(), 1);
            assert_eq!(response.responses[0].name.0.as_str(), topic);
            Some(response.responses[0].partition_responses.clone())
        }
        Some(_) => panic!("not a produce response"),
    }
}

async fn produce(cluster: &Arc<Cluster>, topic: &str, partition: i32, records: &[u8]) -> PartitionProduceResponse {
    let responses = produce_raw(cluster, 11, -1, topic, vec![(partition, Some(Bytes::copy_from_slice(records)))]).await.unwrap();
    responses.into_iter().next().unwrap()
}

fn fetch_request(topic: &str, topic_id: [u8; 16], partitions: &[(i32, i64, i32)]) -> FetchRequest {
    let partitions = partitions
        .iter()
        .map(|&(partition, fetch_offset, partition_max_bytes)| {
            FetchPartition::default().with_partition(partition).with_fetch_offset(fetch_offset).with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_topic_id(Uuid::from_bytes(topic_id)).with_partitions(partitions)])
}

async fn fetch_with(cluster: &Arc<Cluster>, version: i16, request: FetchRequest) -> FetchResponse {
    match handle(cluster, version, RequestKind::Fetch(request)).await {
        Some(ResponseKind::Fetch(response)) => {
            encodes(&response, version);
            response
        }
        _ => panic!("not a fetch response"),
    }
}

async fn fetch(cluster: &Arc<Cluster>, topic: &str, partition: i32, offset: i64) -> PartitionData {
    let response = fetch_with(cluster, 12, fetch_request(topic, [0; 16], &[(partition, offset, 1 << 20)])).await;
    assert_eq!(response.error_code, 0);
    response.responses[0].partitions[0].clone()
}

async fn list_offsets(cluster: &Arc<Cluster>, version: i16, topic: &str, partition: i32, timestamp: i64) -> ListOffsetsPartitionResponse {
    let request = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp)])]);
    match handle(cluster, version, RequestKind::ListOffsets(request)).await {
        Some(ResponseKind::ListOffsets(response)) => {
            encodes(&response, version);
            assert_eq!(response.topics[0].name.0.as_str(), topic);
            response.topics[0].partitions[0].clone()
        }
        _ => panic!("not a list offsets response"),
    }
}

fn records(data: &PartitionData) -> Bytes {
    data.records.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_fetch_returns_the_same_batches() {
    let cluster = cluster().await;
    let topic_id = create(&cluster, "orders", 2, &[]).await;
    let now = now_ms();
    let first = batch_of(&[("a", "1", now), ("b", "2", now)]);
    let second = batch_of(&[("c", "3", now)]);
    let third = batch::encode_batch(&[SimpleRecord::new(Some(b"d"), None, &[], now)], Compression::Zstd).unwrap();

    let mut expected = Vec::new();
    for (batch, base_offset) in [(&first, 0), (&second, 2), (&third, 3)] {
        let response = produce(&cluster, "orders", 0, batch).await;
        assert_eq!((response.error_code, response.base_offset, response.log_append_time_ms, response.log_start_offset), (0, base_offset, -1, 0));
        expected.extend_from_slice(&stored(batch, base_offset));
    }
    // Every produce version we serve encodes its answer.
    for version in [3, 5, 8, 11] {
        let responses = produce_raw(&cluster, version, 1, "orders", vec![(1, Some(Bytes::copy_from_slice(&second)))]).await.unwrap();
        assert_eq!(responses[0].error_code, 0);
    }

    let data = fetch(&cluster, "orders", 0, 0).await;
    assert_eq!((data.error_code, data.high_watermark, data.last_stable_offset, data.log_start_offset), (0, 4, 4, 0));
    assert_eq!(records(&data), Bytes::from(expected.clone()), "byte-identical batches with assigned offsets");
    assert_eq!(data.aborted_transactions, None, "READ_UNCOMMITTED gets no aborted transaction list");

    // From the middle of the first batch: the whole batch comes back (clients skip records).
    assert_eq!(records(&fetch(&cluster, "orders", 0, 1).await), Bytes::from(expected.clone()));
    // From the second batch, and at the end.
    assert_eq!(records(&fetch(&cluster, "orders", 0, 2).await), Bytes::from(expected[first.len()..].to_vec()));
    let at_end = fetch(&cluster, "orders", 0, 4).await;
    assert_eq!((at_end.error_code, records(&at_end).len()), (0, 0));

    // v13+ addresses the topic by id; old and new versions encode.
    for version in [4, 7, 11, 12, 13, 16] {
        let mut request = fetch_request("orders", topic_id, &[(0, 0, 1 << 20), (1, 0, 1 << 20)]).with_isolation_level(1);
        if version >= 7 {
            request = request.with_session_epoch(0);
        }
        let response = fetch_with(&cluster, version, request).await;
        let topic = &response.responses[0];
        if version >= 13 {
            assert_eq!(topic.topic_id, Uuid::from_bytes(topic_id));
        } else {
            assert_eq!(topic.topic.0.as_str(), "orders");
        }
        assert_eq!(records(&topic.partitions[0]), Bytes::from(expected.clone()), "v{version}");
        assert_eq!(topic.partitions[1].high_watermark, 4, "v{version}");
        assert_eq!(topic.partitions[0].aborted_transactions, Some(vec![]), "READ_COMMITTED gets an empty list");
        assert_eq!(response.session_id, 0);
    }
}

#[tokio::test]
async fn unknown_topics_partitions_and_acks() {
    let cluster = cluster().await;
    create(&cluster, "known", 1, &[]).await;
    let batch = Bytes::from(sized_batch(1, 10));
    let unknown = ResponseError::UnknownTopicOrPartition.code();

    let responses = produce_raw(&cluster, 11, -1, "missing", vec![(0, Some(batch.clone()))]).await.unwrap();
    assert_eq!((responses[0].error_code, responses[0].base_offset), (unknown, -1));
    assert!(responses[0].error_message.is_some());
    assert!(cluster.topic("missing").is_none(), "Produce does not create topics");
    let responses = produce_raw(&cluster, 11, -1, "known", vec![(1, Some(batch.clone())), (0, Some(batch.clone()))]).await.unwrap();
    assert_eq!((responses[0].index, responses[0].error_code), (1, unknown));
    assert_eq!((responses[1].index, responses[1].error_code, responses[1].base_offset), (0, 0, 0));
    let responses = produce_raw(&cluster, 11, 2, "known", vec![(0, Some(batch.clone()))]).await.unwrap();
    assert_eq!(responses[0].error_code, ResponseError::InvalidRequiredAcks.code());

    let response = fetch_with(&cluster, 12, fetch_request("missing", [0; 16], &[(0, 0, 1000)])).await;
    assert_eq!(response.responses[0].partitions[0].error_code, unknown);
    let response = fetch_with(&cluster, 12, fetch_request("known", [0; 16], &[(3, 0, 1000)])).await;
    assert_eq!(response.responses[0].partitions[0].error_code, unknown);
    let response = fetch_with(&cluster, 13, fetch_request("known", [7; 16], &[(0, 0, 1000)])).await;
    assert_eq!(response.responses[0].partitions[0].error_code, ResponseError::UnknownTopicId.code());

    assert_eq!(list_offsets(&cluster, 8, "missing", 0, -1).await.error_code, unknown);
    assert_eq!(list_offsets(&cluster, 8, "known", 9, -1).await.error_code, unknown);
    // Nothing of the rejected requests was appended.
    assert_eq!(list_offsets(&cluster, 8, "known", 0, -1).await.offset, 1);
}

#[tokio::test]
async fn invalid_batches_are_rejected_and_not_appended() {
    let cluster = cluster().await;
    create(&cluster, "t", 1, &[]).await;
    create(&cluster, "small", 1, &[("max.message.bytes", "200")]).await;
    let good = sized_batch(2, 20);

    let mut corrupt = good.clone();
    corrupt[17] ^= 0xff; // the CRC
    assert_eq!(produce(&cluster, "t", 0, &corrupt).await.error_code, CORRUPT_MESSAGE);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01; // a record byte under the CRC
    assert_eq!(produce(&cluster, "t", 0, &flipped).await.error_code, CORRUPT_MESSAGE);
    assert_eq!(produce(&cluster, "t", 0, &good[..good.len() - 3]).await.error_code, CORRUPT_MESSAGE, "truncated");

    let mut two = good.clone();
    two.extend_from_slice(&good);
    let response = produce(&cluster, "t", 0, &two).await;
    assert_eq!(response.error_code, INVALID_RECORD);
    assert!(response.error_message.unwrap().contains("exactly one record batch"));
    let responses = produce_raw(&cluster, 11, -1, "t", vec![(0, None), (0, Some(Bytes::new()))]).await.unwrap();
    assert_eq!((responses[0].error_code, responses[1].error_code), (INVALID_RECORD, INVALID_RECORD));

    let large = sized_batch(1, 300);
    assert!(large.len() > 200);
    assert_eq!(produce(&cluster, "small", 0, &large).await.error_code, MESSAGE_TOO_LARGE);
    assert_eq!(produce(&cluster, "small", 0, &sized_batch(1, 10)).await.error_code, 0);

    // zstd needs Produce v7+.
    let zstd = batch::encode_batch(&[SimpleRecord::new(None, Some(b"z"), &[], now_ms())], Compression::Zstd).unwrap();
    let responses = produce_raw(&cluster, 6, -1, "t", vec![(0, Some(Bytes::from(zstd)))]).await.unwrap();
    assert_eq!(responses[0].error_code, ResponseError::UnsupportedCompressionType.code());

    // Nothing was appended to "t".
    assert_eq!(list_offsets(&cluster, 8, "t", 0, -1).await.offset, 0);
    assert_eq!(records(&fetch(&cluster, "t", 0, 0).await).len(), 0);
}

#[tokio::test]
async fn create_time_bounds_give_invalid_timestamp() {
    let cluster = cluster().await;
    create(&cluster, "bounded", 1, &[("message.timestamp.after.max.ms", "60000"), ("message.timestamp.before.max.ms", "60000")]).await;
    let now = now_ms();
    let future = batch_of(&[("k", "v", now + 3_600_000)]);
    let past = batch_of(&[("k", "v", now - 3_600_000)]);
    let mixed = batch_of(&[("k", "v", now - 3_600_000), ("k", "v", now)]);
    for batch in [&future, &past, &mixed] {
        assert_eq!(produce(&cluster, "bounded", 0, batch).await.error_code, INVALID_TIMESTAMP);
    }
    // A corrupt batch is CORRUPT_MESSAGE whatever its header's timestamps say.
    let mut corrupt = future.clone();
    corrupt[17] ^= 0xff;
    assert_eq!(produce(&cluster, "bounded", 0, &corrupt).await.error_code, CORRUPT_MESSAGE);
    assert_eq!(produce(&cluster, "bounded", 0, &batch_of(&[("k", "v", now)])).await.error_code, 0);
    // Unbounded by default, with saturating arithmetic at the extremes.
    create(&cluster, "free", 1, &[]).await;
    assert_eq!(produce(&cluster, "free", 0, &batch_of(&[("k", "v", i64::MAX - 1)])).await.error_code, 0);
    assert_eq!(produce(&cluster, "free", 0, &batch_of(&[("k", "v", 0)])).await.error_code, 0);
}

/// Needs `PartitionLog::append` to accept the broker's own LogAppendTime rewrite (today it
/// applies the client rule that forbids the LogAppendTime bit, so the handler falls back to
/// storing CreateTime and answering -1).
#[tokio::test]
async fn log_append_time_topic_rewrites_timestamps() {
    let cluster = cluster().await;
    create(&cluster, "lat", 1, &[("message.timestamp.type", "LogAppendTime")]).await;
    let batch = batch_of(&[("k", "v", 5), ("k", "w", 6)]);
    let before = now_ms();
    let response = produce(&cluster, "lat", 0, &batch).await;
    let after = now_ms();
    assert_eq!(response.error_code, 0);
    assert!((before..=after).contains(&response.log_append_time_ms), "{}", response.log_append_time_ms);
    let stored = records(&fetch(&cluster, "lat", 0, 0).await);
    let header = batch::parse_header(&stored).unwrap();
    assert_eq!(header.timestamp_type(), batch::TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp_ms, response.log_append_time_ms);
    batch::validate_integrity(&stored).expect("the CRC was recomputed");
    // ListOffsets by time sees the append time.
    let found = list_offsets(&cluster, 8, "lat", 0, before).await;
    assert_eq!((found.offset, found.timestamp), (0, response.log_append_time_ms));
}

/// What LogAppendTime topics do until the log accepts the rewrite: data is stored as sent and
/// the answer says CreateTime (-1), consistently.
#[tokio::test]
async fn log_append_time_topic_accepts_produce() {
    let cluster = cluster().await;
    create(&cluster, "lat", 1, &[("message.timestamp.type", "LogAppendTime")]).await;
    let batch = batch_of(&[("k", "v", 5)]);
    let response = produce(&cluster, "lat", 0, &batch).await;
    assert_eq!(response.error_code, 0);
    let stored = records(&fetch(&cluster, "lat", 0, 0).await);
    let header = batch::parse_header(&stored).unwrap();
    if response.log_append_time_ms == -1 {
        assert_eq!(header.timestamp_type(), batch::TimestampType::CreateTime);
    } else {
        assert_eq!(header.max_timestamp_ms, response.log_append_time_ms);
    }
}

#[tokio::test]
async fn fetch_out_of_range() {
    let cluster = cluster().await;
    create(&cluster, "t", 1, &[]).await;
    produce(&cluster, "t", 0, &sized_batch(3, 10)).await;
    for offset in [4, 100, -1] {
        let response = fetch_with(&cluster, 12, fetch_request("t", [0; 16], &[(0, offset, 1000)])).await;
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, ResponseError::OffsetOutOfRange.code(), "offset {offset}");
        assert_eq!((data.high_watermark, data.log_start_offset, records(data).len()), (3, 0, 0));
    }
    // An out-of-range partition answers at once even with min_bytes, and others still get data.
    let request = fetch_request("t", [0; 16], &[(0, 9, 1000), (0, 0, 1000)]).with_min_bytes(1 << 20).with_max_wait_ms(5000);
    let started = Instant::now();
    let response = fetch_with(&cluster, 12, request).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    assert!(!records(&response.responses[0].partitions[1]).is_empty());
}

#[tokio::test]
async fn incremental_fetch_sessions_are_unknown() {
    let cluster = cluster().await;
    create(&cluster, "t", 1, &[]).await;
    let request = fetch_request("t", [0; 16], &[(0, 0, 1000)]).with_session_id(12).with_session_epoch(3);
    let response = fetch_with(&cluster, 12, request).await;
    assert_eq!(response.error_code, ResponseError::FetchSessionIdNotFound.code());
    assert!(response.responses.is_empty());
    // Closing a session (epoch -1) is a full, sessionless fetch.
    let request = fetch_request("t", [0; 16], &[(0, 0, 1000)]).with_session_id(12).with_session_epoch(-1);
    let response = fetch_with(&cluster, 12, request).await;
    assert_eq!((response.error_code, response.session_id, response.responses.len()), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_produce_and_times_out() {
    let cluster = cluster().await;
    create(&cluster, "t", 2, &[]).await;

    // Times out with nothing.
    let started = Instant::now();
    let request = fetch_request("t", [0; 16], &[(0, 0, 1000), (1, 0, 1000)]).with_min_bytes(1).with_max_wait_ms(300);
    let response = fetch_with(&cluster, 12, request).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(response.responses[0].partitions.iter().all(|p| p.error_code == 0 && records(p).is_empty()));

    // Wakes early when a concurrent produce makes data durable on either partition.
    let waiter = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let request = fetch_request("t", [0; 16], &[(0, 0, 1000), (1, 0, 1000)]).with_min_bytes(1).with_max_wait_ms(10_000);
            (fetch_with(&cluster, 12, request).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batch = sized_batch(1, 10);
    assert_eq!(produce(&cluster, "t", 1, &batch).await.error_code, 0);
    let (response, waited) = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert_eq!(records(&response.responses[0].partitions[1]), Bytes::from(stored(&batch, 0)));

    // acks=0: no answer, and the data still becomes visible (and wakes fetchers).
    let waiter = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let request = fetch_request("t", [0; 16], &[(0, 0, 1000)]).with_min_bytes(1).with_max_wait_ms(10_000);
            fetch_with(&cluster, 12, request).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(produce_raw(&cluster, 11, 0, "t", vec![(0, Some(Bytes::from(batch.clone())))]).await.is_none());
    let response = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
    assert_eq!(records(&response.responses[0].partitions[0]), Bytes::from(stored(&batch, 0)));
}

#[tokio::test]
async fn max_bytes_limits_with_at_least_one_batch() {
    let cluster = cluster().await;
    create(&cluster, "t", 2, &[]).await;
    let batches: Vec<Vec<u8>> = (0..3).map(|_| sized_batch(1, 1000)).collect();
    let size = batches[0].len();
    for (index, batch) in batches.iter().enumerate() {
        assert_eq!(produce(&cluster, "t", 0, batch).await.base_offset, index as i64);
        assert_eq!(produce(&cluster, "t", 1, batch).await.base_offset, index as i64);
    }
    let fetch_bytes = |max_bytes: i32, partitions: Vec<(i32, i64, i32)>| {
        let cluster = cluster.clone();
        async move {
            let response = fetch_with(&cluster, 12, fetch_request("t", [0; 16], &partitions).with_max_bytes(max_bytes)).await;
            response.responses[0].partitions.iter().map(|p| records(p).len()).collect::<Vec<_>>()
        }
    };
    // partition_max_bytes: whole batches that fit, at least one.
    assert_eq!(fetch_bytes(1 << 20, vec![(0, 0, 1)]).await, vec![size]);
    assert_eq!(fetch_bytes(1 << 20, vec![(0, 0, (2 * size + 10) as i32)]).await, vec![2 * size]);
    assert_eq!(fetch_bytes(1 << 20, vec![(0, 0, 1 << 20)]).await, vec![3 * size]);
    // max_bytes across partitions: the first partition gets its first batch even if larger,
    // the budget then runs out for the next.
    assert_eq!(fetch_bytes(1, vec![(0, 0, 1 << 20), (1, 0, 1 << 20)]).await, vec![size, 0]);
    assert_eq!(fetch_bytes((2 * size + 10) as i32, vec![(0, 1, 1 << 20), (1, 0, 1 << 20)]).await, vec![2 * size, 0]);
    assert_eq!(fetch_bytes((4 * size) as i32, vec![(0, 1, 1 << 20), (1, 0, 1 << 20)]).await, vec![2 * size, 2 * size]);
    // An empty first partition does not use up the "at least one batch".
    assert_eq!(fetch_bytes(1, vec![(0, 3, 1 << 20), (1, 2, 1 << 20)]).await, vec![0, size]);
}

#[tokio::test]
async fn fetch_spans_zones() {
    // Zones of 1 MiB: 6 MiB of batches cross several zone boundaries, and outgrow the log's
    // 4 MiB cache of recent batches, so the start is read from the device, zone by zone.
    let cluster = cluster().await;
    create(&cluster, "t", 1, &[]).await;
    let mut expected = Vec::new();
    let mut offset = 0;
    while expected.len() < 6 << 20 {
        let batch = sized_batch(4, 60_000);
        assert_eq!(produce(&cluster, "t", 0, &batch).await.base_offset, offset);
        expected.extend_from_slice(&stored(&batch, offset));
        offset += 4;
    }
    let response = fetch_with(&cluster, 12, fetch_request("t", [0; 16], &[(0, 0, 8 << 20)])).await;
    assert_eq!(records(&response.responses[0].partitions[0]), Bytes::from(expected.clone()));
    // The byte limits hold across zones too: whole batches, at most partition_max_bytes.
    let batch_bytes = expected.len() / (offset as usize / 4);
    let limit = 15 * batch_bytes + 100;
    let response = fetch_with(&cluster, 12, fetch_request("t", [0; 16], &[(0, 0, limit as i32)])).await;
    assert_eq!(records(&response.responses[0].partitions[0]), Bytes::from(expected[..15 * batch_bytes].to_vec()));
}

#[tokio::test]
async fn list_offsets_earliest_latest_max_and_by_timestamp() {
    let cluster = cluster().await;
    create(&cluster, "t", 2, &[]).await;
    // Empty partition.
    assert_eq!((list_offsets(&cluster, 8, "t", 0, -2).await.offset, list_offsets(&cluster, 8, "t", 0, -1).await.offset), (0, 0));
    let max = list_offsets(&cluster, 8, "t", 0, -3).await;
    assert_eq!((max.error_code, max.offset, max.timestamp), (0, -1, -1));
    assert_eq!(list_offsets(&cluster, 8, "t", 0, 0).await.offset, -1);

    // Offsets 0-2 at times 100, 900, 300; offsets 3-4 at 400, 500.
    produce(&cluster, "t", 0, &batch_of(&[("a", "", 100), ("b", "", 900), ("c", "", 300)])).await;
    produce(&cluster, "t", 0, &batch_of(&[("d", "", 400), ("e", "", 500)])).await;
    let answer = |response: ListOffsetsPartitionResponse| (response.error_code, response.offset, response.timestamp);
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, -2).await), (0, 0, -1));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, -4).await), (0, 0, -1));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, -1).await), (0, 5, -1));
    // The first record with the largest timestamp, not the batch's last offset.
    assert_eq!(answer(list_offsets(&cluster, 7, "t", 0, -3).await), (0, 1, 900));
    // By time: the first record (in offset order) at or after the target.
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, 50).await), (0, 0, 100));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, 100).await), (0, 0, 100));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, 101).await), (0, 1, 900));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 0, 901).await), (0, -1, -1));

    produce(&cluster, "t", 1, &batch_of(&[("a", "", 100), ("b", "", 200), ("c", "", 300)])).await;
    produce(&cluster, "t", 1, &batch_of(&[("d", "", 400), ("e", "", 500)])).await;
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 1, 150).await), (0, 1, 200));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 1, 450).await), (0, 4, 500));
    assert_eq!(answer(list_offsets(&cluster, 8, "t", 1, -3).await), (0, 4, 500));
    // Leader epoch from v4 on; v1 still encodes without it.
    assert_eq!(list_offsets(&cluster, 4, "t", 1, 150).await.leader_epoch, 0);
    assert_eq!(answer(list_offsets(&cluster, 1, "t", 1, 150).await), (0, 1, 200));
    assert_eq!(list_offsets(&cluster, 1, "t", 1, 150).await.leader_epoch, -1);
}

/// `batch` as a transactional producer's (attributes bit 4, producer id, epoch 0, sequence).
fn transactional(batch: &[u8], producer_id: i64, base_sequence: i32) -> BytesMut {
    let mut batch = BytesMut::from(batch);
    batch::set_transactional_producer(&mut batch, producer_id, 0, base_sequence).unwrap();
    batch
}

async fn list_offsets_committed(cluster: &Arc<Cluster>, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default().with_replica_id((-1).into()).with_isolation_level(1).with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]);
    match handle(cluster, 8, RequestKind::ListOffsets(request)).await {
        Some(ResponseKind::ListOffsets(response)) => response.topics[0].partitions[0].offset,
        _ => panic!("not a list offsets response"),
    }
}

/// A read_committed Fetch serves only below the last stable offset and lists the aborted
/// transactions of what it serves; ListOffsets' latest for read_committed is the LSO; a read
/// uncommitted consumer reads everything. Transactional data and markers are appended to the
/// log directly (the coordinator is not served yet: a client's transactional batch is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_stops_at_the_last_stable_offset_and_lists_aborted_transactions() {
    let cluster = cluster().await;
    let topic_id = create(&cluster, "txn", 1, &[]).await;
    let refused = produce(&cluster, "txn", 0, &transactional(&batch_of(&[("k", "v", now_ms())]), 9, 0)).await;
    assert_eq!(refused.error_code, ResponseError::InvalidTxnState.code());
    let partition = cluster.topic("txn").unwrap().partition(0).unwrap();
    let append = |batch: BytesMut| {
        let flush = partition.with_log(|log| {
            log.append(batch, now_ms()).unwrap();
            log.start_flush()
        });
        flush.unwrap()
    };
    let marker = |producer_id: i64, commit: bool| {
        let flush = partition.with_log(|log| {
            log.append_marker(producer_id, 0, commit, 0, now_ms()).unwrap();
            log.start_flush()
        });
        flush.unwrap()
    };
    let plain = || BytesMut::from(&batch_of(&[("k", "plain", now_ms())])[..]);
    let now = now_ms();
    append(plain()).wait().unwrap(); // 0
    append(transactional(&batch_of(&[("a", "1", now), ("a", "2", now)]), 7, 0)).wait().unwrap(); // 1-2
    append(plain()).wait().unwrap(); // 3
    append(transactional(&batch_of(&[("b", "1", now)]), 8, 0)).wait().unwrap(); // 4
    let read = |offset: i64, isolation: i8| {
        let request = fetch_request("txn", topic_id, &[(0, offset, 1 << 20)]).with_isolation_level(isolation);
        let cluster = cluster.clone();
        async move { fetch_with(&cluster, 12, request).await.responses[0].partitions[0].clone() }
    };
    let offsets_of = |data: &PartitionData| -> Vec<i64> {
        batch::BatchIter::new(&records(data)).map(|batch| batch.unwrap().0.base_offset).collect()
    };
    let committed = read(0, 1).await;
    assert_eq!((committed.high_watermark, committed.last_stable_offset), (5, 1));
    assert_eq!(offsets_of(&committed), vec![0], "nothing at or above the LSO");
    assert_eq!(committed.aborted_transactions, Some(vec![]));
    assert!(offsets_of(&read(1, 1).await).is_empty(), "at the LSO: nothing yet, no error");
    assert_eq!(read(1, 1).await.error_code, 0);
    let uncommitted = read(0, 0).await;
    assert_eq!(offsets_of(&uncommitted), vec![0, 1, 3, 4]);
    assert_eq!((uncommitted.last_stable_offset, uncommitted.aborted_transactions.clone()), (1, None));
    assert_eq!(list_offsets_committed(&cluster, "txn").await, 1);

    marker(7, false).wait().unwrap(); // 5: aborts 1-2
    assert_eq!(read(0, 1).await.last_stable_offset, 4, "producer 8's transaction is still open");
    assert_eq!(list_offsets_committed(&cluster, "txn").await, 4);
    marker(8, true).wait().unwrap(); // 6: commits 4
    let committed = read(0, 1).await;
    assert_eq!((committed.high_watermark, committed.last_stable_offset), (7, 7));
    assert_eq!(offsets_of(&committed), vec![0, 1, 3, 4, 5, 6]);
    let aborted = committed.aborted_transactions.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (7, 1));
    assert_eq!(read(6, 1).await.aborted_transactions, Some(vec![]), "the abort marker is below 6");
    assert_eq!(list_offsets_committed(&cluster, "txn").await, 7);
}
