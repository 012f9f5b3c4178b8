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

/// Each topic as the cluster has it: (id, partition count, config overrides) by name.
type Topics = BTreeMap<String, ([u8; 16], i32, BTreeMap<String, String>)>;

fn topics_of(cluster: &Cluster) -> Topics {
    cluster.topics().iter().map(|topic| (topic.name.clone(), (topic.id, topic.partition_count(), topic.config().overrides().clone()))).collect()
}

fn open_with(device: &Arc<dyn ZonedDevice>, broker: BrokerConfig) -> Arc<Cluster> {
    let recovered = block_on(LogStore::open(device.clone(), LogConfig::default())).unwrap();
    block_on(Cluster::open(recovered.store, recovered.partitions, broker)).unwrap()
}

/// Zones holding anything, once the reclaimer has reset the dead ones.
fn zones_in_use(cluster: &Cluster) -> usize {
    block_on(cluster.store().settle()).unwrap();
    cluster.store().allocator().zone_uses().iter().flatten().count()
}

/// One step of topic churn: creates `t{step}` (its configs naming the step), deletes the topic
/// created `live` steps before, and every few steps alters a config or adds a partition.
fn churn(cluster: &Cluster, step: usize, live: usize) -> Result<(), broker::cluster::ApiError> {
    let name = format!("t{step}");
    let configs = BTreeMap::from([("retention.ms".to_string(), format!("{}", 1000 + step))]);
    block_on(cluster.create_topic(&name, 1 + (step % 3) as i32, &configs, false))?;
    // (A crash may have lost the creation of the topic to delete.)
    if step >= live && cluster.topic(&format!("t{}", step - live)).is_some() {
        block_on(cluster.delete_topic(&format!("t{}", step - live), None))?;
    }
    if step % 5 == 0 {
        block_on(cluster.alter_topic_config(&name, |config| config.set("retention.bytes", &format!("{}", 4096 + step)), false))?;
    }
    if step % 7 == 0 {
        block_on(cluster.create_partitions(&name, 4, false))?;
    }
    Ok(())
}

#[test]
fn metadata_log_stays_bounded_through_topic_churn() {
    let device = device();
    let broker = BrokerConfig { metadata_compact_bytes_min: 32 << 10, ..BrokerConfig::default() };
    let cluster = open_with(&device, broker.clone());
    let zones_at_start = zones_in_use(&cluster);
    let first_producer_id = block_on(cluster.allocate_producer_id()).unwrap();
    let mut largest = 0;
    const STEPS: usize = 3000;
    for step in 0..STEPS {
        churn(&cluster, step, 20).unwrap();
        largest = largest.max(block_on(cluster.metadata_log_stats()).0);
    }
    let (bytes, compacted, compactions) = block_on(cluster.metadata_log_stats());
    // 3,000 creations and deletions and their changes wrote about 1.5 MB of records.
    assert!(compactions >= 10, "{compactions} compactions");
    assert!(largest < 96 << 10, "the metadata log peaked at {largest} bytes");
    assert!(bytes < 96 << 10 && compacted < 32 << 10, "{bytes} bytes, {compacted} after the last compaction");
    // The zones the old records held were reclaimed.
    let zones = zones_in_use(&cluster);
    assert!(zones <= zones_at_start + 2, "{zones} zones in use, {zones_at_start} at start");
    let before = topics_of(&cluster);
    assert_eq!(before.len(), 20);
    drop(cluster);

    let cluster = open_with(&device, broker);
    assert_eq!(topics_of(&cluster), before, "a restart restores exactly the live topics and configs");
    assert!(cluster.topic("t0").is_none());
    let last = cluster.topic(&format!("t{}", STEPS - 1)).unwrap();
    assert_eq!(last.config().retention_ms(), Some(1000 + STEPS as i64 - 1));
    assert!(block_on(cluster.allocate_producer_id()).unwrap() > first_producer_id, "producer ids never reused");
}

#[test]
fn metadata_compaction_survives_crashes_anywhere() {
    use broker::zone::fault::{FaultyZonedDevice, WriteFault};
    let (faulty, control) = FaultyZonedDevice::new(device());
    let device: Arc<dyn ZonedDevice> = Arc::new(faulty);
    // Compactions every few changes, so the faults land in them often.
    let broker = BrokerConfig { metadata_compact_bytes_min: 4 << 10, ..BrokerConfig::default() };
    let mut cluster = open_with(&device, broker.clone());
    let mut model = topics_of(&cluster);
    let (mut crashes, mut failed, mut compactions, mut mid_compaction) = (0, 0, 0, 0);
    for step in 0..400 {
        let (bytes, compacted, _) = block_on(cluster.metadata_log_stats());
        let compaction_due = bytes >= (4u64 << 10).max(2 * compacted);
        // Every third step crashes, and every step a compaction is due in.
        let crash = step % 3 == 0 || compaction_due;
        mid_compaction += usize::from(crash && compaction_due);
        if crash {
            // A write (any stream's) torn or lost a few writes from now: mid-compaction or not.
            let mode = [WriteFault::Torn, WriteFault::Dropped][step % 2];
            control.fail_write_in((step % 4) as u64, libc::EIO, mode);
        }
        let outcome = churn(&cluster, step, 6);
        let after = topics_of(&cluster);
        if !crash {
            outcome.unwrap();
            model = after;
            continue;
        }
        // Crash: nothing flushed on the way out; recover from what reached the device.
        control.clear();
        compactions += block_on(cluster.metadata_log_stats()).2;
        drop(cluster);
        crashes += 1;
        cluster = open_with(&device, broker.clone());
        // Each crash leaves the zones being written finished with a little live metadata: GC
        // moves it on (the reclaimer would, at its own pace; a crash every few changes is faster).
        for _ in 0..3 {
            cluster.store().collect_garbage(0).unwrap();
        }
        block_on(cluster.store().settle()).unwrap();
        let recovered = topics_of(&cluster);
        if outcome.is_ok() {
            assert_eq!(recovered, after, "step {step}: acknowledged changes survive");
        } else {
            failed += 1;
            // The changes of a failed step that were acknowledged survive; the rest may not.
            for (name, topic) in &recovered {
                assert!(model.get(name) == Some(topic) || after.get(name) == Some(topic), "step {step}: topic {name} is one acknowledged");
            }
            for (name, topic) in &model {
                if after.get(name) == Some(topic) {
                    assert_eq!(recovered.get(name), Some(topic), "step {step}: untouched topic {name} survives");
                }
            }
        }
        model = recovered;
    }
    assert!(failed > 10, "{failed} of {crashes} crashes failed a change");
    println!("{crashes} crashes ({mid_compaction} with a compaction due), {failed} of them failing a change, {compactions} compactions");
    assert!(compactions > 10 && mid_compaction > 20, "{compactions} compactions, {mid_compaction} crashes with one due");
    drop(cluster);
    let cluster = open_with(&device, broker);
    assert_eq!(topics_of(&cluster), model);
}
