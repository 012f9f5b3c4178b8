//! The transaction APIs a transactional producer calls (KIP-98): AddPartitionsToTxn v0-3 and
//! EndTxn v0-3, translated for `txn::Transactions`; InitProducerId with a transactional id is in
//! `producer_id`. AddOffsetsToTxn and TxnOffsetCommit (offsets committed with a transaction)
//! are not served yet.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse};

use crate::cluster::{Cluster, ResponseError};
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
