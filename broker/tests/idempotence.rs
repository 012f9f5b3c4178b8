//! Idempotent producers at the handler level, over a real cluster on an in-memory zoned device:
//! InitProducerId hands out ids never reused across reopens; Produce answers a resend of any of
//! a producer's last five batches with the original offsets and appends nothing; gaps and stale
//! epochs are refused; and all of it holds after a reopen, rebuilt from the log alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::api::handle;
use broker::cluster::{now_ms, BrokerConfig, Cluster};
use broker::log::batch::{self, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::pending::block_on;
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProducerId, RequestKind, ResponseKind, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;

fn device() -> Arc<dyn ZonedDevice> {
    // Small zones, so the producers' batches span several zones and recovery chains them.
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 64, max_open_zones: 4, max_active_zones: 64 };
    Arc::new(MemZonedDevice::new(geometry).unwrap())
}

fn open(device: &Arc<dyn ZonedDevice>) -> Arc<Cluster> {
    let recovered = block_on(LogStore::open(device.clone(), LogConfig::default())).unwrap();
    block_on(Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default())).unwrap()
}

fn init_producer_id(cluster: &Arc<Cluster>, version: i16, transactional_id: Option<&str>) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match block_on(handle(cluster, version, RequestKind::InitProducerId(request))) {
        Some(ResponseKind::InitProducerId(response)) => (response.error_code, response.producer_id.0, response.producer_epoch),
        _ => panic!("not an InitProducerId response"),
    }
}

/// An idempotent batch of `records` records of `value_bytes` bytes each.
fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: usize, value_bytes: usize) -> Bytes {
    let value = vec![b'v'; value_bytes];
    let now = now_ms();
    let records: Vec<SimpleRecord> = (0..records).map(|_| SimpleRecord::new(None, Some(&value), &[], now)).collect();
    let mut batch = batch::encode_batch(&records, Compression::None).unwrap();
    batch::set_producer(&mut batch, producer_id, epoch, base_sequence).unwrap();
    Bytes::from(batch)
}

fn produce(cluster: &Arc<Cluster>, topic: &str, acks: i16, records: Bytes) -> Option<PartitionProduceResponse> {
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))])]);
    match block_on(handle(cluster, 11, RequestKind::Produce(request))) {
        None => None,
        Some(ResponseKind::Produce(response)) => Some(response.responses[0].partition_responses[0].clone()),
        _ => panic!("not a produce response"),
    }
}

fn log_end(cluster: &Arc<Cluster>, topic: &str) -> i64 {
    cluster.topic(topic).unwrap().partition(0).unwrap().with_log(|log| log.log_end_offset()).unwrap()
}

#[test]
fn producer_ids_are_never_reused_across_reopens() {
    let device = device();
    let cluster = open(&device);
    let mut seen = Vec::new();
    for version in 0..=4 {
        let (error, id, epoch) = init_producer_id(&cluster, version, None);
        assert_eq!((error, epoch), (0, 0));
        seen.push(id);
    }
    // A transactional id's producer id comes from the same sequence.
    let (error, id, epoch) = init_producer_id(&cluster, 4, Some("txn"));
    assert_eq!((error, epoch), (0, 0));
    assert!(seen.iter().all(|&old| id > old), "transactional id {id}, already handed out: {seen:?}");
    seen.push(id);
    drop(cluster);
    for _ in 0..2 {
        let cluster = open(&device);
        let (error, id, _) = init_producer_id(&cluster, 4, None);
        assert_eq!(error, 0);
        assert!(seen.iter().all(|&old| id > old), "id {id} after reopen, already handed out: {seen:?}");
        seen.push(id);
    }
}

#[test]
fn resends_get_the_original_offsets_before_and_after_a_reopen() {
    let device = device();
    let cluster = open(&device);
    block_on(cluster.create_topic("events", 1, &BTreeMap::new(), false)).unwrap();
    let producers: Vec<i64> = (0..3).map(|_| init_producer_id(&cluster, 4, None).1).collect();
    // ~20 KiB batches: about 50 per 1 MiB zone.
    let mut sent: BTreeMap<(i64, i32), (Bytes, i64)> = BTreeMap::new();
    let mut next_sequence = vec![0i32; producers.len()];
    let zones = |cluster: &Arc<Cluster>| cluster.topic("events").unwrap().partition(0).unwrap().with_log(|log| log.zone_ids().len()).unwrap();
    // Until the third zone has 7 batches: each producer's last five batches then span two
    // zones, so recovery must chain the zones' producer states.
    let mut after_third_zone = None;
    for i in 0.. {
        if after_third_zone == Some(7) {
            break;
        }
        let p = i % producers.len();
        let records = 1 + i % 4;
        let bytes = batch(producers[p], 0, next_sequence[p], records, 20_000 / records);
        let response = produce(&cluster, "events", -1, bytes.clone()).unwrap();
        assert_eq!(response.error_code, 0);
        sent.insert((producers[p], next_sequence[p]), (bytes, response.base_offset));
        next_sequence[p] += records as i32;
        after_third_zone = match after_third_zone {
            None if zones(&cluster) == 3 => Some(1),
            None => None,
            Some(count) => Some(count + 1),
        };
        assert!(i < 1000, "the log never reached a third zone");
        if i == 70 {
            // Non-idempotent batches in between change nothing.
            let plain = batch::encode_batch(&[SimpleRecord::new(None, Some(b"x"), &[], now_ms())], Compression::None).unwrap();
            assert_eq!(produce(&cluster, "events", -1, Bytes::from(plain)).unwrap().error_code, 0);
        }
    }
    let end = log_end(&cluster, "events");

    let check_resends = |cluster: &Arc<Cluster>| {
        for &producer in &producers {
            let last: Vec<_> = sent.range((producer, 0)..(producer, i32::MAX)).rev().take(5).collect();
            assert_eq!(last.len(), 5);
            for (_, (bytes, base_offset)) in &last {
                let response = produce(cluster, "events", -1, bytes.clone()).unwrap();
                assert_eq!((response.error_code, response.base_offset), (0, *base_offset));
            }
            // The sixth most recent batch is no longer remembered: out of order, not appended.
            let (_, (older, _)) = sent.range((producer, 0)..(producer, i32::MAX)).rev().nth(5).unwrap();
            assert_eq!(produce(cluster, "events", -1, older.clone()).unwrap().error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        assert_eq!(log_end(cluster, "events"), end, "resends append nothing");
    };
    check_resends(&cluster);
    // acks=0 resends append nothing either.
    let (_, (bytes, _)) = sent.iter().next_back().unwrap();
    assert!(produce(&cluster, "events", 0, bytes.clone()).is_none());
    assert_eq!(log_end(&cluster, "events"), end);

    drop(cluster);
    let cluster = open(&device);
    assert_eq!(log_end(&cluster, "events"), end);
    check_resends(&cluster);

    let p0 = producers[0];
    // A gap is refused; the next sequence is appended.
    let response = produce(&cluster, "events", -1, batch(p0, 0, next_sequence[0] + 1, 1, 10)).unwrap();
    assert_eq!(response.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let response = produce(&cluster, "events", -1, batch(p0, 0, next_sequence[0], 1, 10)).unwrap();
    assert_eq!((response.error_code, response.base_offset), (0, end));
    // A new epoch must start at 0; then the old epoch is fenced.
    assert_eq!(produce(&cluster, "events", -1, batch(p0, 1, 5, 1, 10)).unwrap().error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(produce(&cluster, "events", -1, batch(p0, 1, 0, 1, 10)).unwrap().error_code, 0);
    assert_eq!(produce(&cluster, "events", -1, batch(p0, 0, next_sequence[0] + 1, 1, 10)).unwrap().error_code, INVALID_PRODUCER_EPOCH);
    // The epoch bump survives a reopen too.
    drop(cluster);
    let cluster = open(&device);
    assert_eq!(produce(&cluster, "events", -1, batch(p0, 0, next_sequence[0] + 1, 1, 10)).unwrap().error_code, INVALID_PRODUCER_EPOCH);
    let response = produce(&cluster, "events", -1, batch(p0, 1, 0, 1, 10)).unwrap();
    assert_eq!((response.error_code, response.base_offset), (0, end + 1), "a resend of the new epoch's first batch");
    // A transactional batch is refused.
    let mut transactional = batch(producers[1], 0, next_sequence[1], 1, 10).to_vec();
    transactional[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    batch::set_producer(&mut transactional, producers[1], 0, next_sequence[1]).unwrap();
    assert_eq!(produce(&cluster, "events", -1, Bytes::from(transactional)).unwrap().error_code, INVALID_TXN_STATE);
}

#[test]
fn log_append_time_resends_report_the_original_append_time() {
    let device = device();
    let cluster = open(&device);
    let configs = BTreeMap::from([("message.timestamp.type".to_string(), "LogAppendTime".to_string())]);
    block_on(cluster.create_topic("stamped", 1, &configs, false)).unwrap();
    let producer = init_producer_id(&cluster, 4, None).1;
    let first = produce(&cluster, "stamped", -1, batch(producer, 0, 0, 2, 10)).unwrap();
    assert!(first.error_code == 0 && first.log_append_time_ms > 0);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let resend = produce(&cluster, "stamped", -1, batch(producer, 0, 0, 2, 10)).unwrap();
    assert_eq!((resend.base_offset, resend.log_append_time_ms), (first.base_offset, first.log_append_time_ms));
}

#[test]
fn idle_producers_expire_with_the_retention_check() {
    let device = device();
    let cluster = open(&device);
    block_on(cluster.create_topic("idle", 1, &BTreeMap::new(), false)).unwrap();
    let producer = init_producer_id(&cluster, 4, None).1;
    assert_eq!(produce(&cluster, "idle", -1, batch(producer, 0, 0, 1, 10)).unwrap().error_code, 0);
    assert_eq!(produce(&cluster, "idle", -1, batch(producer, 0, 5, 1, 10)).unwrap().error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // Within producer.id.expiration.ms (1 day) the producer is kept.
    cluster.apply_retention(now_ms() + 3_600_000);
    assert_eq!(produce(&cluster, "idle", -1, batch(producer, 0, 5, 1, 10)).unwrap().error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // After it, forgotten: its next batch is accepted at any sequence, as Kafka does.
    cluster.apply_retention(now_ms() + 2 * 86_400_000);
    assert_eq!(produce(&cluster, "idle", -1, batch(producer, 0, 5, 1, 10)).unwrap().error_code, 0);
    // And known again from there.
    assert_eq!(produce(&cluster, "idle", -1, batch(producer, 0, 5, 1, 10)).unwrap().base_offset, 1);
}
