//! Metadata: brokers (this one), the cluster id, and topics with their partitions, leaders
//! and topic ids. Auto-creates requested topics when the broker and the request allow it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::str_bytes;
use crate::cluster::{validate_topic_name, Cluster, ResponseError, Topic};

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, request: MetadataRequest) -> MetadataResponse {
    let broker = cluster.broker();
    let mut topics = Vec::new();
    match request.topics {
        // null (v1+) or empty (v0) means every topic.
        None => topics.extend(cluster.topics().iter().map(|topic| describe(topic, broker.node_id))),
        Some(requested) if requested.is_empty() && api_version == 0 => {
            topics.extend(cluster.topics().iter().map(|topic| describe(topic, broker.node_id)))
        }
        Some(requested) => {
            // v4+ carries allow_auto_topic_creation; before that auto-creation is implied.
            let allow_auto_create = broker.auto_create_topics && (api_version < 4 || request.allow_auto_topic_creation);
            for wanted in requested {
                let name = match (&wanted.name, wanted.topic_id.is_nil()) {
                    (Some(name), _) => name.0.to_string(),
                    (None, false) => match cluster.topic_by_id(wanted.topic_id.as_bytes()) {
                        Some(topic) => {
                            topics.push(describe(&topic, broker.node_id));
                            continue;
                        }
                        None => {
                            topics.push(error_topic(None, wanted.topic_id, ResponseError::UnknownTopicId));
                            continue;
                        }
                    },
                    (None, true) => {
                        topics.push(error_topic(None, Uuid::nil(), ResponseError::InvalidRequest));
                        continue;
                    }
                };
                if let Some(topic) = cluster.topic(&name) {
                    topics.push(describe(&topic, broker.node_id));
                    continue;
                }
                if let Err(error) = validate_topic_name(&name) {
                    topics.push(error_topic(Some(&name), Uuid::nil(), error.error));
                    continue;
                }
                if !allow_auto_create {
                    topics.push(error_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition));
                    continue;
                }
                let created = cluster
                    .create_topic(&name, broker.default_partitions, &Default::default(), false)
                    .await;
                match created {
                    Ok(Some(topic)) => topics.push(describe(&topic, broker.node_id)),
                    // Created concurrently by another request: describe what exists.
                    Err(error) if error.error == ResponseError::TopicAlreadyExists => match cluster.topic(&name) {
                        Some(topic) => topics.push(describe(&topic, broker.node_id)),
                        None => topics.push(error_topic(Some(&name), Uuid::nil(), ResponseError::LeaderNotAvailable)),
                    },
                    Ok(None) => unreachable!("validate_only is false"),
                    Err(error) => topics.push(error_topic(Some(&name), Uuid::nil(), error.error)),
                }
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.node_id))
            .with_host(str_bytes(broker.advertised_host.clone()))
            .with_port(broker.advertised_port)])
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.node_id))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_topics(topics)
}

fn describe(topic: &Topic, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partition_count())
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(Uuid::from_bytes(topic.id))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn error_topic(name: Option<&str>, topic_id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|name| TopicName(str_bytes(name))))
        .with_topic_id(topic_id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
