//! InitProducerId: for an idempotent producer (no transactional id) a new producer id at epoch
//! 0; for a transactional producer, the transaction coordinator's answer (`txn::Transactions`):
//! the id's producer id with its epoch bumped, which fences the previous producer.
//!
//! Without a transactional id, as Kafka's coordinator does, every request gets a fresh producer
//! id whatever producer id and epoch it carries (v3+, KIP-360): without a transactional id there
//! is no durable identity whose epoch could be bumped or fenced. A producer that must reset its
//! sequences either bumps its epoch itself (the Java client) or asks for a new id (librdkafka);
//! both are handled by the partitions' producer state (`log::producer_state`).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::cluster::{ApiError, Cluster, ResponseError};
use crate::txn::coordinator::InitProducerId;

pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let answer = match request.transactional_id.as_ref().filter(|id| !id.0.is_empty()) {
        None => cluster.allocate_producer_id().await.map(|producer_id| (producer_id, 0)),
        Some(id) => {
            let init = InitProducerId {
                transactional_id: id.0.to_string(),
                timeout_ms: request.transaction_timeout_ms,
                expected: (api_version >= 3).then_some((request.producer_id.0, request.producer_epoch)),
            };
            cluster.transactions().init_producer_id(&**cluster, init).await
        }
    };
    match answer {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(producer_epoch),
        Err(error) => {
            tracing::debug!(code = error.code(), message = %error.message, "InitProducerId refused");
            failed(api_version, error)
        }
    }
}

/// A refusal. Before v4 (KIP-588) clients do not know PRODUCER_FENCED: Kafka answers them
/// INVALID_PRODUCER_EPOCH instead.
fn failed(api_version: i16, error: ApiError) -> InitProducerIdResponse {
    let code = match error.error {
        ResponseError::ProducerFenced if api_version < 4 => ResponseError::InvalidProducerEpoch.code(),
        _ => error.code(),
    };
    InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
}
