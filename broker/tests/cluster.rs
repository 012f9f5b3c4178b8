//! The cluster model: topic metadata survives a reopen through the metadata log; errors carry
//! Kafka's codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::cluster::{BrokerConfig, Cluster, ResponseError};
use broker::log::{LogConfig, LogStore};
use broker::pending::block_on;
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::BytesMut;

fn device() -> Arc<dyn ZonedDevice> {
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 64, max_open_zones: 4, max_active_zones: 64 };
    Arc::new(MemZonedDevice::new(geometry).unwrap())
}

fn open(device: &Arc<dyn ZonedDevice>) -> Arc<Cluster> {
    let recovered = block_on(LogStore::open(device.clone(), LogConfig::default())).unwrap();
    block_on(Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default())).unwrap()
}

#[test]
fn topics_survive_reopen() {
    let device = device();
    let cluster = open(&device);
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    assert!(block_on(cluster.create_topic("orders", 3, &configs, true)).unwrap().is_none());
    assert!(cluster.topic("orders").is_none(), "validate_only creates nothing");
    let orders = block_on(cluster.create_topic("orders", 3, &configs, false)).unwrap().unwrap();
    block_on(cluster.create_topic("gone", 1, &BTreeMap::new(), false)).unwrap();
    let error = block_on(cluster.create_topic("orders", 3, &BTreeMap::new(), false)).unwrap_err();
    assert_eq!(error.error, ResponseError::TopicAlreadyExists);
    assert_eq!(block_on(cluster.create_topic("bad name!", 1, &BTreeMap::new(), false)).unwrap_err().error, ResponseError::InvalidTopicException);
    assert_eq!(block_on(cluster.create_topic("zero", 0, &BTreeMap::new(), false)).unwrap_err().error, ResponseError::InvalidPartitions);
    let bad_config = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
    assert_eq!(block_on(cluster.create_topic("cfg", 1, &bad_config, false)).unwrap_err().error, ResponseError::InvalidConfig);

    block_on(cluster.create_partitions("orders", 5, false)).unwrap();
    assert_eq!(block_on(cluster.create_partitions("orders", 4, false)).unwrap_err().error, ResponseError::InvalidPartitions);
    block_on(cluster.alter_topic_config("orders", |config| config.set("retention.bytes", "4096"), false)).unwrap();
    let gone_id = cluster.topic("gone").unwrap().id;
    assert_eq!(block_on(cluster.delete_topic("gone", Some(&[9; 16]))).unwrap_err().error, ResponseError::UnknownTopicId);
    block_on(cluster.delete_topic("gone", Some(&gone_id))).unwrap();

    // Data in a partition.
    let batch = broker::log::batch::encode_batch(&[broker::log::batch::SimpleRecord::new(Some(b"k"), Some(b"v"), &[], 5)], broker::log::batch::Compression::None).unwrap();
    let partition = orders.partition(4).unwrap();
    partition.with_log(|log| log.append(BytesMut::from(&batch[..]), 0).unwrap()).unwrap();
    let flush = partition.with_log(|log| log.start_flush()).unwrap();
    block_on(flush.complete()).unwrap();
    drop((orders, partition));
    drop(cluster);

    let cluster = open(&device);
    let orders = cluster.topic("orders").expect("orders survives");
    assert_eq!(orders.partition_count(), 5);
    let config = orders.config();
    assert_eq!(config.retention_ms(), Some(1000));
    assert_eq!(config.retention_bytes(), Some(4096));
    assert!(cluster.topic("gone").is_none());
    let partition = orders.partition(4).unwrap();
    assert_eq!(partition.with_log(|log| log.log_end_offset()).unwrap(), 1);
    assert_eq!(cluster.topic_by_id(&orders.id).unwrap().name, "orders");
}
