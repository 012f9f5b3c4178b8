//! Produce over a real socket to the in-process server: an acks=0 produce that fails closes the
//! connection (Kafka's only signal to a client that gets no response), after the responses to
//! the requests before it; one that succeeds leaves the connection open.

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
use kafka_protocol::protocol::{Encodable, StrBytes};
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

fn produce_frame(correlation_id: i32, acks: i16, topic: &str, records: Bytes) -> Vec<u8> {
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))])]);
    frame(ApiKey::Produce, 9, correlation_id, &request)
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
