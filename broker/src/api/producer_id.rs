//! InitProducerId for idempotent producers: a new producer id, epoch 0.
//!
//! As Kafka's transaction coordinator does for a request without a transactional id, every
//! request gets a fresh producer id, whatever producer id and epoch it carries (v3+, KIP-360):
//! without a transactional id there is no durable identity whose epoch could be bumped or
//! fenced. A producer that must reset its sequences either bumps its epoch itself (the Java
//! client) or asks for a new id (librdkafka); both are handled by the partitions' producer
//! state (`log::producer_state`).
//!
//! Transactions are not supported: a request with a transactional id gets UNSUPPORTED_VERSION,
//! Kafka's answer for a feature the broker does not implement. Clients treat it as fatal for
//! the transactional producer (the Java client raises "Unexpected error in
//! InitProducerIdResponse", librdkafka fails init_transactions), rather than retrying forever
//! as they would on COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::cluster::{Cluster, ResponseError};

pub async fn handle(cluster: &Arc<Cluster>, _api_version: i16, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        InitProducerIdResponse::default().with_error_code(error.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(ResponseError::UnsupportedVersion);
    }
    match cluster.allocate_producer_id().await {
        Ok(producer_id) => InitProducerIdResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(code = error.code(), message = %error.message, "InitProducerId failed");
            failed(error.error)
        }
    }
}
