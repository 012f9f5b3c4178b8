//! Produce over a real socket to the in-process server: an acks=0 produce that fails closes the
//! connection (Kafka's only signal to a client that gets no response), after the responses to
//! the requests before it; one that succeeds leaves the connection open. Batches are stored as
//! sent, but for a max timestamp that does not match the records (recomputed, as Kafka does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker::cluster::{now_ms, BrokerConfig, Cluster};
use broker::log::batch::{self, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::server::{run, ServerConfig};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn frame(api_key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("server-produce-test")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api_key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn produce_request(acks: i16, topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))])])
}

fn produce_frame(correlation_id: i32, acks: i16, topic: &str, records: Bytes) -> Vec<u8> {
    frame(ApiKey::Produce, 9, correlation_id, &produce_request(acks, topic, records))
}

fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    frame(ApiKey::ApiVersions, 3, correlation_id, &ApiVersionsRequest::default())
}

/// The next response's correlation id, or `None` at end of stream.
async fn next_correlation_id(stream: &mut TcpStream) -> Option<i32> {
    let read = async {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).await.is_err() {
            return None;
        }
        let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut response).await.ok()?;
        Some(i32::from_be_bytes(response[..4].try_into().unwrap()))
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the broker neither answered nor closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acks_zero_produce_closes_the_connection() {
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 16, max_open_zones: 4, max_active_zones: 16 };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    let cluster = Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap();
    cluster.create_topic("events", 1, &BTreeMap::new(), false).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(run(listener, cluster.clone(), ServerConfig::default(), shutdown));

    let records = Bytes::from(batch::encode_batch(&[SimpleRecord::new(None, Some(b"v"), &[], now_ms())], Compression::None).unwrap());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A good acks=0 produce: no response, the connection stays open.
    stream.write_all(&produce_frame(1, 0, "events", records.clone())).await.unwrap();
    stream.write_all(&api_versions_frame(2)).await.unwrap();
    assert_eq!(next_correlation_id(&mut stream).await, Some(2));
    // A failing one (unknown topic): the response due before it is still written, then the
    // connection closes and the request after it is never answered.
    let mut pipelined = api_versions_frame(3);
    pipelined.extend(produce_frame(4, 0, "missing", records.clone()));
    pipelined.extend(api_versions_frame(5));
    stream.write_all(&pipelined).await.unwrap();
    assert_eq!(next_correlation_id(&mut stream).await, Some(3));
    assert_eq!(next_correlation_id(&mut stream).await, None, "the connection is closed after a failed acks=0 produce");
    // A corrupt batch fails the same way.
    let mut corrupt = records.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&produce_frame(6, 0, "events", Bytes::from(corrupt))).await.unwrap();
    stream.write_all(&api_versions_frame(7)).await.unwrap();
    assert_eq!(next_correlation_id(&mut stream).await, None);
    // The good acks=0 batch was appended; the failed ones were not.
    let end = cluster.topic("events").unwrap().partition(0).unwrap().with_log(|log| log.log_end_offset()).unwrap();
    assert_eq!(end, 1);

    shutdown_tx.send(true).unwrap();
    server.await.unwrap();
}

/// A produce request of several partitions' batches (`(topic, partition, batch)`), acks=all.
fn produce_frame_of(correlation_id: i32, batches: &[(&str, i32, Bytes)]) -> Vec<u8> {
    let topics = batches
        .iter()
        .map(|(topic, partition, records)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default().with_index(*partition).with_records(Some(records.clone()))])
        })
        .collect();
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(topics);
    frame(ApiKey::Produce, 9, correlation_id, &request)
}

/// A batch of `count` records of `value_bytes` each, values distinct per `seed`.
fn batch_of(seed: u8, count: usize, value_bytes: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count).map(|index| (0..value_bytes).map(|at| seed ^ (index as u8).wrapping_add(at as u8)).collect()).collect();
    let records: Vec<SimpleRecord> = values.iter().map(|value| SimpleRecord::new(None, Some(value), &[], now_ms())).collect();
    Bytes::from(batch::encode_batch(&records, Compression::None).unwrap())
}

/// Large produce requests are read into buffers of their own and their one batch is kept in
/// place (no copy); small and several-partition requests share the input buffer and are
/// copied. Pipelined on one connection and written in odd-sized pieces so that frames straddle
/// socket reads, every batch must be stored and read back byte for byte as sent (but for the
/// base offset the log assigns), LogAppendTime stamping included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_pipelined_produce_requests_are_stored_as_sent() {
    let geometry = ZoneGeometry { zone_size_bytes: 4 << 20, zone_capacity_bytes: 4 << 20, zone_count: 24, max_open_zones: 8, max_active_zones: 24 };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    let cluster = Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap();
    cluster.create_topic("events", 2, &BTreeMap::new(), false).await.unwrap();
    let stamped = BTreeMap::from([("message.timestamp.type".to_string(), "LogAppendTime".to_string())]);
    cluster.create_topic("stamped", 1, &stamped, false).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(run(listener, cluster.clone(), ServerConfig::default(), shutdown));

    // (topic, partition, batch) per request.
    let requests: Vec<Vec<(&str, i32, Bytes)>> = vec![
        vec![("events", 0, batch_of(1, 1000, 1000))],
        vec![("events", 1, batch_of(2, 1, 10))],
        vec![("events", 1, batch_of(3, 200, 1024))],
        vec![("events", 0, batch_of(4, 100, 700)), ("events", 1, batch_of(5, 100, 900))],
        vec![("stamped", 0, batch_of(6, 300, 1024))],
        vec![("events", 0, batch_of(7, 60, 1000))],
        vec![("events", 0, batch_of(8, 1010, 1024))],
    ];
    let mut wire = Vec::new();
    for (index, batches) in requests.iter().enumerate() {
        wire.extend(produce_frame_of(index as i32, batches));
    }
    let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    let writing = tokio::spawn(async move {
        for piece in wire.chunks(7919) {
            writer.write_all(piece).await.unwrap();
        }
        writer
    });
    for (index, batches) in requests.iter().enumerate() {
        let mut size = [0u8; 4];
        reader.read_exact(&mut size).await.unwrap();
        let mut response = Bytes::from({
            let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
            reader.read_exact(&mut response).await.unwrap();
            response
        });
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut response, ApiKey::Produce.response_header_version(9)).unwrap();
        assert_eq!(header.correlation_id, index as i32);
        let response = kafka_protocol::messages::ProduceResponse::decode(&mut response, 9).unwrap();
        let answers: Vec<_> = response.responses.iter().flat_map(|topic| topic.partition_responses.iter().map(move |answer| (topic.name.as_str().to_string(), answer))).collect();
        assert_eq!(answers.len(), batches.len());
        for ((topic, partition, sent), (answered_topic, answer)) in batches.iter().zip(answers) {
            assert_eq!((answered_topic.as_str(), answer.index, answer.error_code), (*topic, *partition, 0), "request {index}");
            let plan = cluster.topic(topic).unwrap().partition(*partition).unwrap().with_log(|log| log.read(answer.base_offset, 1)).unwrap().unwrap();
            let stored = plan.execute().await.unwrap();
            let mut expected = sent.to_vec();
            expected[..8].copy_from_slice(&answer.base_offset.to_be_bytes());
            if *topic == "stamped" {
                // The broker stamps the batch: the timestamp type bit, the max timestamp and the CRC.
                assert_ne!(stored[0][..], expected[..]);
                let header = batch::validate_integrity(&stored[0]).unwrap();
                assert_eq!(header.timestamp_type(), batch::TimestampType::LogAppendTime);
                assert_eq!(header.max_timestamp_ms, answer.log_append_time_ms);
                assert_eq!(stored[0][61..], expected[61..], "records are stored as sent");
            } else {
                assert_eq!(stored[0][..], expected[..], "request {index}: {topic}/{partition} stored as sent");
            }
        }
    }
    drop(writing.await.unwrap());
    shutdown_tx.send(true).unwrap();
    server.await.unwrap();
}

/// One request over `stream` and its response body (the response header checked and dropped).
async fn call(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Bytes {
    stream
        .write_all(&frame(api_key, version, correlation_id, body))
        .await
        .unwrap();
    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut size))
        .await
        .expect("an answer")
        .unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).await.unwrap();
    let mut response = Bytes::from(response);
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut response,
        api_key.response_header_version(version),
    )
    .unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    response
}

/// A batch of records at `timestamps` whose maxTimestamp field says -1, as older Go clients
/// (sarama before 1.x's v2 support was complete) send it, with a CRC that matches.
fn batch_without_max_timestamp(timestamps: &[i64], compression: Compression) -> Bytes {
    let records: Vec<SimpleRecord> = timestamps
        .iter()
        .map(|&at| SimpleRecord::new(None, Some(format!("at {at}").as_bytes()), &[], at))
        .collect();
    let mut batch = batch::encode_batch(&records, compression).unwrap();
    batch[35..43].copy_from_slice(&(-1i64).to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(batch::validate(&batch).unwrap().max_timestamp_ms, -1);
    Bytes::from(batch)
}

/// Kafka's LogValidator recomputes a batch's max timestamp from its records on append; without
/// that, a batch whose field says -1 is invisible to ListOffsets by time. Raw Produce requests
/// over a socket, uncompressed and compressed, then ListOffsets (by time, and max timestamp)
/// and a read of the stored batches: the field is the records' largest timestamp, the CRC valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_max_timestamp_is_found_by_time() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ProduceResponse};
    let geometry = ZoneGeometry {
        zone_size_bytes: 1 << 20,
        zone_capacity_bytes: 1 << 20,
        zone_count: 16,
        max_open_zones: 4,
        max_active_zones: 16,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    let cluster = Cluster::open(
        recovered.store,
        recovered.partitions,
        BrokerConfig::default(),
    )
    .await
    .unwrap();
    cluster
        .create_topic("events", 1, &BTreeMap::new(), false)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(run(
        listener,
        cluster.clone(),
        ServerConfig::default(),
        shutdown,
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();

    // Offsets 0..3 uncompressed, 3..6 lz4, 6..9 zstd; within each batch the middle record is
    // the latest, so neither the first nor the last record's timestamp is the max.
    let t0 = now_ms() - 60_000;
    let batches = [
        (Compression::None, [t0, t0 + 20, t0 + 10]),
        (Compression::Lz4, [t0 + 30, t0 + 50, t0 + 40]),
        (Compression::Zstd, [t0 + 60, t0 + 80, t0 + 70]),
    ];
    for (index, (compression, timestamps)) in batches.iter().enumerate() {
        let request = produce_request(
            -1,
            "events",
            batch_without_max_timestamp(timestamps, *compression),
        );
        let mut response = call(&mut stream, ApiKey::Produce, 9, index as i32, &request).await;
        let response = ProduceResponse::decode(&mut response, 9).unwrap();
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(
            (answer.error_code, answer.base_offset),
            (0, 3 * index as i64),
            "{compression:?}"
        );
    }

    let list_offsets = |timestamp: i64| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("events")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])])
    };
    // (timestamp asked, offset and timestamp found); -3 is MAX_TIMESTAMP (ListOffsets v7+).
    let cases = [
        (t0 + 15, 1, t0 + 20),
        (t0 + 20, 1, t0 + 20),
        (t0 + 21, 3, t0 + 30),
        (t0 + 45, 4, t0 + 50),
        (t0 + 75, 7, t0 + 80),
        (t0 + 81, -1, -1),
        (-3, 7, t0 + 80),
    ];
    for (index, (timestamp, offset, found_ms)) in cases.into_iter().enumerate() {
        let mut response = call(
            &mut stream,
            ApiKey::ListOffsets,
            7,
            100 + index as i32,
            &list_offsets(timestamp),
        )
        .await;
        let response = ListOffsetsResponse::decode(&mut response, 7).unwrap();
        let answer = &response.topics[0].partitions[0];
        assert_eq!(
            (answer.error_code, answer.offset, answer.timestamp),
            (0, offset, found_ms),
            "ListOffsets at {timestamp} (t0 {t0})"
        );
    }
    // Stored with the max timestamp of their records and a valid CRC.
    let partition = cluster.topic("events").unwrap().partition(0).unwrap();
    for (index, (_, timestamps)) in batches.iter().enumerate() {
        let stored = partition
            .with_log(|log| log.read(3 * index as i64, 1))
            .unwrap()
            .unwrap()
            .execute()
            .await
            .unwrap();
        let header = batch::validate(&stored[0]).unwrap();
        assert_eq!(header.max_timestamp_ms, *timestamps.iter().max().unwrap());
    }
    shutdown_tx.send(true).unwrap();
    server.await.unwrap();
}
