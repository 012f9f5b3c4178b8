//! The transaction APIs a transactional producer calls (KIP-98, KIP-447): AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn (v0-3 each), translated for `txn::Transactions`
//! and `group::Groups`; InitProducerId with a transactional id is in `producer_id`.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use crate::cluster::{now_ms, Cluster, ResponseError};
use crate::group::coordinator::{self, OFFSET_METADATA_BYTES_MAX};
use crate::group::GroupRecord;
use super::groups::offset_record;
use crate::txn::coordinator::TxnTarget;

/// AddPartitionsToTxn (v0-3, one transaction per request). Kafka's rule: if any partition is
/// unknown, it gets UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED; otherwise
/// every partition gets the one outcome of adding them all.
pub async fn add_partitions_to_txn(cluster: &Arc<Cluster>, _api_version: i16, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let wanted: Vec<(String, Vec<i32>)> = request.v3_and_below_topics.iter().map(|topic| (topic.name.0.to_string(), topic.partitions.clone())).collect();
    let known = |topic: &str, partition: i32| cluster.topic(topic).and_then(|topic| topic.partition(partition)).is_some();
    let any_unknown = wanted.iter().any(|(topic, partitions)| partitions.iter().any(|&partition| !known(topic, partition)));
    let outcome = if any_unknown {
        None
    } else {
        let targets: Vec<TxnTarget> = wanted
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|&partition| TxnTarget::Partition { topic: topic.clone(), partition }))
            .collect();
        let added = cluster
            .transactions()
            .add_targets(&request.v3_and_below_transactional_id.0, request.v3_and_below_producer_id.0, request.v3_and_below_producer_epoch, &targets)
            .await;
        Some(added.err().map_or(0, |error| error.code()))
    };
    let results = wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let results = partitions
                .iter()
                .map(|&partition| {
                    let code = match outcome {
                        Some(code) => code,
                        None if known(&topic, partition) => ResponseError::OperationNotAttempted.code(),
                        None => ResponseError::UnknownTopicOrPartition.code(),
                    };
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(partition).with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(crate::api::topic_name(&topic)).with_results_by_partition(results)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// EndTxn (v0-3): commits or aborts the transaction; answered once its markers are written.
pub async fn end_txn(cluster: &Arc<Cluster>, _api_version: i16, request: EndTxnRequest) -> EndTxnResponse {
    let ended = cluster
        .transactions()
        .end_txn(&**cluster, &request.transactional_id.0, request.producer_id.0, request.producer_epoch, request.committed)
        .await;
    if let Err(error) = &ended {
        tracing::debug!(transactional_id = %request.transactional_id.0.as_str(), code = error.code(), message = %error.message, "EndTxn refused");
    }
    EndTxnResponse::default().with_error_code(ended.err().map_or(0, |error| error.code()))
}

/// AddOffsetsToTxn (v0-3): the group joins the transaction, so that TxnOffsetCommit may commit
/// its offsets with it.
pub async fn add_offsets_to_txn(cluster: &Arc<Cluster>, _api_version: i16, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let group = request.group_id.0.to_string();
    let added = match coordinator::validate_group_id(&group) {
        Err(error) => Err(error),
        Ok(()) => cluster
            .transactions()
            .add_targets(&request.transactional_id.0, request.producer_id.0, request.producer_epoch, &[TxnTarget::Group(group)])
            .await
            .map_err(|error| error.error),
    };
    AddOffsetsToTxnResponse::default().with_error_code(added.err().map_or(0, |error| error.code()))
}

/// TxnOffsetCommit (v0-3): offsets committed with the producer's ongoing transaction, which
/// must hold the group (AddOffsetsToTxn). Written durably to the group log as pending; the
/// transaction's end commits or drops them (`cluster::txn_host`). v3's generation and member,
/// when given, are checked as OffsetCommit checks them.
pub async fn txn_offset_commit(cluster: &Arc<Cluster>, _api_version: i16, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let target = TxnTarget::Group(group.clone());
    let mut refused = cluster.transactions().coordinator().verify(request.producer_id.0, request.producer_epoch, &target).err();
    if refused.is_none() && request.generation_id >= 0 {
        refused = cluster
            .groups()
            .coordinator()
            .validate_commit(&group, request.generation_id, &request.member_id, request.group_instance_id.as_deref())
            .err();
    }
    let now = now_ms();
    let mut offsets = Vec::new();
    let mut results: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let known = cluster.topic(&topic.name.0);
        let partitions = topic
            .partitions
            .iter()
            .map(|partition| {
                let error = match &known {
                    _ if refused.is_some() => refused,
                    _ if partition.committed_metadata.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX) => Some(ResponseError::OffsetMetadataTooLarge),
                    Some(known) if (0..known.partition_count()).contains(&partition.partition_index) => {
                        let metadata = partition.committed_metadata.as_ref().map(|m| m.to_string());
                        let committed = (partition.committed_offset, partition.committed_leader_epoch, metadata);
                        offsets.push(offset_record(known, partition.partition_index, committed, now));
                        None
                    }
                    _ => Some(ResponseError::UnknownTopicOrPartition),
                };
                (partition.partition_index, error)
            })
            .collect();
        results.push(partitions);
    }
    let mut write_error = None;
    if !offsets.is_empty() {
        let record = GroupRecord::TxnOffsetCommit { group: group.clone(), producer_id: request.producer_id.0, offsets };
        if let Err(error) = cluster.groups().write(record).await {
            tracing::error!(group = %group, error = %error.message, "cannot write transactional offsets");
            write_error = Some(ResponseError::CoordinatorNotAvailable);
        }
    }
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, error)| {
                    let code = error.or(write_error).map_or(0, |error| error.code());
                    TxnOffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
