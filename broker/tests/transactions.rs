//! Transactions at the handler level, over a real cluster on an in-memory zoned device:
//! InitProducerId, AddPartitionsToTxn, transactional Produce, EndTxn; Kafka's errors for
//! batches outside a transaction and fenced producers; and after a reopen (the coordinator's
//! log and the partitions' transaction index rebuilt from the device), a transaction left open
//! is aborted at its timeout and read_committed moves past it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker::api::handle;
use broker::cluster::{Cluster, ResponseError};
use broker::log::batch::{self, Compression, SimpleRecord};
use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProduceRequest, ProducerId, RequestKind, ResponseKind, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

mod common;
use common::{device, open};

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

async fn init(cluster: &Arc<Cluster>, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match handle(cluster, 4, RequestKind::InitProducerId(request)).await {
        Some(ResponseKind::InitProducerId(response)) => (response.error_code, response.producer_id.0, response.producer_epoch),
        _ => panic!("not an InitProducerId response"),
    }
}

async fn add(cluster: &Arc<Cluster>, id: &str, (producer_id, epoch): (i64, i16), topic: &str, partitions: Vec<i32>) -> Vec<i16> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(id)))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(text(topic))).with_partitions(partitions)]);
    match handle(cluster, 3, RequestKind::AddPartitionsToTxn(request)).await {
        Some(ResponseKind::AddPartitionsToTxn(response)) => {
            response.results_by_topic_v3_and_below[0].results_by_partition.iter().map(|result| result.partition_error_code).collect()
        }
        _ => panic!("not an AddPartitionsToTxn response"),
    }
}

async fn end(cluster: &Arc<Cluster>, id: &str, (producer_id, epoch): (i64, i16), commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(id)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    match handle(cluster, 3, RequestKind::EndTxn(request)).await {
        Some(ResponseKind::EndTxn(response)) => response.error_code,
        _ => panic!("not an EndTxn response"),
    }
}

async fn produce(cluster: &Arc<Cluster>, topic: &str, partition: i32, (producer_id, epoch): (i64, i16), sequence: i32) -> i16 {
    let record = SimpleRecord::new(None, Some(b"{\"v\": 1}"), &[], broker::cluster::now_ms());
    let mut encoded = batch::encode_batch(&[record], Compression::None).unwrap();
    batch::set_transactional_producer(&mut encoded, producer_id, epoch, sequence).unwrap();
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(text(topic)))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(encoded)))])]);
    match handle(cluster, 9, RequestKind::Produce(request)).await {
        Some(ResponseKind::Produce(response)) => response.responses[0].partition_responses[0].error_code,
        _ => panic!("not a produce response"),
    }
}

/// (last stable offset, high watermark) of a partition.
fn stable(cluster: &Arc<Cluster>, topic: &str, partition: i32) -> (i64, i64) {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    partition.with_log(|log| (log.last_stable_offset(), log.high_watermark())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_refuse_outsiders_and_abort_at_their_timeout_after_a_reopen() {
    let device = device();
    let cluster = open(&device).await;
    cluster.create_topic("t", 2, &BTreeMap::new(), false).await.unwrap();
    cluster.create_topic("u", 1, &BTreeMap::new(), false).await.unwrap();
    let (error, producer_id, epoch) = init(&cluster, "app", 60_000).await;
    assert_eq!((error, epoch), (0, 0));
    let app = (producer_id, epoch);
    assert_eq!(add(&cluster, "app", app, "t", vec![0, 1]).await, vec![0, 0]);
    assert_eq!(add(&cluster, "app", app, "missing", vec![0]).await, vec![ResponseError::UnknownTopicOrPartition.code()]);
    assert_eq!(produce(&cluster, "t", 0, app, 0).await, 0);
    assert_eq!(produce(&cluster, "u", 0, app, 0).await, ResponseError::InvalidTxnState.code(), "u is not in the transaction");
    assert!(stable(&cluster, "t", 0).0 < stable(&cluster, "t", 0).1, "the open transaction holds the LSO");
    assert_eq!(end(&cluster, "app", app, true).await, 0);
    assert_eq!(stable(&cluster, "t", 0), (2, 2), "data and its commit marker, all stable");
    assert_eq!(stable(&cluster, "t", 1), (1, 1), "a marker only");
    assert_eq!(end(&cluster, "app", app, true).await, 0, "a retried commit is answered");
    assert_eq!(end(&cluster, "app", app, false).await, ResponseError::InvalidTxnState.code());
    assert_eq!(produce(&cluster, "t", 0, app, 1).await, ResponseError::InvalidTxnState.code(), "no transaction ongoing");

    // A second id opens a transaction with a short timeout; the broker is reopened meanwhile.
    let (error, slow_id, slow_epoch) = init(&cluster, "slow", 500).await;
    assert_eq!(error, 0);
    let slow = (slow_id, slow_epoch);
    assert_eq!(add(&cluster, "slow", slow, "t", vec![0]).await, vec![0]);
    assert_eq!(produce(&cluster, "t", 0, slow, 0).await, 0);
    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(stable(&cluster, "t", 0), (2, 3), "the open transaction holds the LSO after the reopen");
    tokio::time::sleep(Duration::from_millis(600)).await;
    cluster.transactions().expire(&*cluster).await;
    assert_eq!(stable(&cluster, "t", 0), (4, 4), "aborted at its timeout: its marker written");
    let aborted = cluster.topic("t").unwrap().partition(0).unwrap().with_log(|log| log.aborted_between(0, 4)).unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (slow_id, 2));
    assert_eq!(end(&cluster, "slow", slow, true).await, ResponseError::ProducerFenced.code(), "the timed-out producer is fenced");
    // The committed producer's id survived the reopen: its next InitProducerId bumps the epoch.
    assert_eq!(init(&cluster, "app", 60_000).await, (0, producer_id, 1));
}

async fn add_offsets(cluster: &Arc<Cluster>, id: &str, (producer_id, epoch): (i64, i16), group: &str) -> i16 {
    let request = kafka_protocol::messages::AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text(id)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_group_id(kafka_protocol::messages::GroupId(text(group)));
    match handle(cluster, 3, RequestKind::AddOffsetsToTxn(request)).await {
        Some(ResponseKind::AddOffsetsToTxn(response)) => response.error_code,
        _ => panic!("not an AddOffsetsToTxn response"),
    }
}

async fn txn_offset_commit(cluster: &Arc<Cluster>, id: &str, (producer_id, epoch): (i64, i16), group: &str, offset: i64) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic};
    let request = kafka_protocol::messages::TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(text(id)))
        .with_group_id(kafka_protocol::messages::GroupId(text(group)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(text("t")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset)])]);
    match handle(cluster, 3, RequestKind::TxnOffsetCommit(request)).await {
        Some(ResponseKind::TxnOffsetCommit(response)) => response.topics[0].partitions[0].error_code,
        _ => panic!("not a TxnOffsetCommit response"),
    }
}

fn committed(cluster: &Arc<Cluster>, group: &str) -> Option<i64> {
    cluster.groups().coordinator().groups().find(|found| found.group_id == group).and_then(|found| found.offset("t", 0).map(|offset| offset.offset))
}

/// Offsets committed with a transaction become the group's only when it commits, survive a
/// reopen while pending, and are dropped when it aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_offsets_commit_with_their_transaction_across_a_reopen() {
    let device = device();
    let cluster = open(&device).await;
    cluster.create_topic("t", 1, &BTreeMap::new(), false).await.unwrap();
    let (_, producer_id, epoch) = init(&cluster, "pipe", 60_000).await;
    let pipe = (producer_id, epoch);
    assert_eq!(txn_offset_commit(&cluster, "pipe", pipe, "g", 5).await, ResponseError::InvalidTxnState.code(), "the group is not in a transaction");
    assert_eq!(add_offsets(&cluster, "pipe", pipe, "g").await, 0);
    assert_eq!(txn_offset_commit(&cluster, "pipe", pipe, "g", 5).await, 0);
    assert_eq!(committed(&cluster, "g"), None, "pending until the transaction commits");
    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(end(&cluster, "pipe", pipe, true).await, 0);
    assert_eq!(committed(&cluster, "g"), Some(5));
    assert_eq!(add_offsets(&cluster, "pipe", pipe, "g").await, 0);
    assert_eq!(txn_offset_commit(&cluster, "pipe", pipe, "g", 9).await, 0);
    assert_eq!(end(&cluster, "pipe", pipe, false).await, 0);
    assert_eq!(committed(&cluster, "g"), Some(5), "an aborted transaction's offsets are dropped");
    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(committed(&cluster, "g"), Some(5), "and stay dropped after a reopen");
}
