//! CreateTopics (v2-7), DeleteTopics (v1-6), CreatePartitions (v0-3), DeleteRecords (v0-2) and
//! DescribeCluster (v0-1), with Kafka's error codes and messages.
//!
//! This is a single-broker cluster: a replication factor is -1 (the default) or 1, and a manual
//! replica assignment may name only this broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
};
use uuid::Uuid;

use super::configs::describe_topic_config;
use super::{str_bytes, topic_name};
use crate::cluster::{now_ms, validate_topic_name, ApiError, Cluster, ResponseError, TopicConfig};
use crate::log::Flush;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// With no authorizer every operation is allowed: Kafka then reports every operation the
/// CLUSTER resource supports (AclOperation codes as bits): CREATE (5), ALTER (7), DESCRIBE (8),
/// CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10), ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12).
const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// DescribeCluster endpoint types (KIP-919).
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;


/// Names that occur more than once in one request.
fn repeated<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts.into_iter().filter(|&(_, count)| count > 1).map(|(name, _)| name).collect()
}

/// Checks that every replica list is exactly this broker (the only one registered).
fn check_replicas(broker_ids: &[BrokerId], node_id: i32) -> Result<(), ApiError> {
    if broker_ids.is_empty() {
        return Err(ApiError::new(ResponseError::InvalidReplicaAssignment, "The manual partition assignment includes an empty replica list."));
    }
    let mut seen = BTreeSet::new();
    for &BrokerId(id) in broker_ids {
        if id != node_id {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes broker {id}, but no such broker is registered."),
            ));
        }
        if !seen.insert(id) {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes the broker {id} more than once."),
            ));
        }
    }
    Ok(())
}

/// What a CreateTopics entry resolved to.
struct Created {
    topic_id: Uuid,
    partitions: i32,
    config: TopicConfig,
}

async fn create_topic(cluster: &Cluster, topic: &CreatableTopic, validate_only: bool) -> Result<Created, ApiError> {
    let name = topic.name.as_str();
    validate_topic_name(name)?;
    if cluster.topic(name).is_some() {
        return Err(ApiError::new(ResponseError::TopicAlreadyExists, format!("Topic '{name}' already exists.")));
    }
    let node_id = cluster.broker().node_id;
    let partitions = if topic.assignments.is_empty() {
        let partitions = match topic.num_partitions {
            -1 => cluster.broker().default_partitions,
            n if n <= 0 => {
                return Err(ApiError::new(ResponseError::InvalidPartitions, "Number of partitions was set to an invalid non-positive value."))
            }
            n => n,
        };
        match topic.replication_factor {
            -1 | 1 => {}
            rf if rf <= 0 => {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                ))
            }
            rf => {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."),
                ))
            }
        }
        partitions
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let indexes: BTreeSet<i32> = topic.assignments.iter().map(|assignment| assignment.partition_index).collect();
        let count = topic.assignments.len();
        if indexes.len() != count || indexes.iter().copied().ne(0..count as i32) {
            return Err(ApiError::new(ResponseError::InvalidReplicaAssignment, "Partitions should be a consecutive 0-based integer sequence"));
        }
        for assignment in &topic.assignments {
            check_replicas(&assignment.broker_ids, node_id)?;
        }
        i32::try_from(count).unwrap_or(i32::MAX)
    };
    let mut configs = BTreeMap::new();
    let mut null_configs = Vec::new();
    for config in &topic.configs {
        match &config.value {
            // Later entries win, as in Kafka.
            Some(value) => {
                configs.insert(config.name.to_string(), value.to_string());
            }
            None => null_configs.push(config.name.to_string()),
        }
    }
    if !null_configs.is_empty() {
        return Err(ApiError::new(ResponseError::InvalidConfig, format!("Null value not supported for topic configs: {}", null_configs.join(","))));
    }
    let config = TopicConfig::from_entries(&configs).map_err(|message| ApiError::new(ResponseError::InvalidConfig, message))?;
    let created = cluster.create_topic(name, partitions, &configs, validate_only).await?;
    Ok(Created { topic_id: created.map_or(Uuid::nil(), |topic| Uuid::from_bytes(topic.id)), partitions, config })
}

pub async fn create_topics(cluster: &Arc<Cluster>, api_version: i16, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let duplicated = repeated(request.topics.iter().map(|topic| topic.name.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome = if duplicated.contains(topic.name.as_str()) {
            Err(ApiError::new(ResponseError::InvalidRequest, "Found multiple entries for this topic."))
        } else {
            create_topic(cluster, topic, request.validate_only).await
        };
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(created) => {
                let mut result = result.with_error_code(0).with_error_message(None);
                if api_version >= 5 {
                    let configs = describe_topic_config(&created.config)
                        .into_iter()
                        .map(|entry| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(entry.name))
                                .with_value(entry.value.map(str_bytes))
                                .with_read_only(entry.read_only)
                                .with_config_source(entry.source)
                                .with_is_sensitive(false)
                        })
                        .collect();
                    result = result.with_num_partitions(created.partitions).with_replication_factor(1).with_configs(Some(configs));
                }
                if api_version >= 7 {
                    result = result.with_topic_id(created.topic_id);
                }
                result
            }
            Err(error) => result
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(error.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(cluster: &Arc<Cluster>, api_version: i16, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // (name, id) per entry: v1-5 name only, v6 either.
    let wanted: Vec<(Option<String>, Uuid)> = if api_version >= 6 {
        request.topics.iter().map(|topic| (topic.name.as_ref().map(|name| name.to_string()), topic.topic_id)).collect()
    } else {
        request.topic_names.iter().map(|name| (Some(name.to_string()), Uuid::nil())).collect()
    };
    let repeated_names: BTreeSet<String> =
        repeated(wanted.iter().filter_map(|(name, _)| name.as_deref())).into_iter().map(str::to_string).collect();
    let mut id_counts: HashMap<Uuid, usize> = HashMap::new();
    for (_, id) in wanted.iter().filter(|(_, id)| !id.is_nil()) {
        *id_counts.entry(*id).or_default() += 1;
    }
    let mut answered_names = BTreeSet::new();
    let mut answered_ids = BTreeSet::new();
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let outcome: Result<(String, Uuid), (Option<String>, Uuid, ApiError)> = match (name, id.is_nil()) {
            (Some(name), true) => {
                if !answered_names.insert(name.clone()) {
                    continue;
                }
                if repeated_names.contains(&name) {
                    Err((Some(name), Uuid::nil(), ApiError::new(ResponseError::InvalidRequest, "Duplicate topic name.")))
                } else {
                    match cluster.delete_topic(&name, None).await {
                        Ok(deleted) => Ok((name, Uuid::from_bytes(deleted))),
                        Err(error) => Err((Some(name), Uuid::nil(), error)),
                    }
                }
            }
            (None, false) => {
                if !answered_ids.insert(id) {
                    continue;
                }
                if id_counts.get(&id).copied().unwrap_or(0) > 1 {
                    Err((None, id, ApiError::new(ResponseError::InvalidRequest, "Duplicate topic id.")))
                } else {
                    match cluster.topic_by_id(id.as_bytes()) {
                        None => Err((None, id, ApiError::new(ResponseError::UnknownTopicId, format!("This server does not host topic id {id}.")))),
                        Some(topic) => match cluster.delete_topic(&topic.name, Some(&topic.id)).await {
                            Ok(_) => Ok((topic.name.clone(), id)),
                            Err(error) => Err((Some(topic.name.clone()), id, error)),
                        },
                    }
                }
            }
            (Some(name), false) => {
                Err((Some(name), id, ApiError::new(ResponseError::InvalidRequest, "You may not specify both topic name and topic id.")))
            }
            (None, true) => Err((None, id, ApiError::new(ResponseError::InvalidRequest, "Neither topic name nor id were specified."))),
        };
        let result = match outcome {
            Ok((name, id)) => DeletableTopicResult::default().with_name(Some(topic_name(&name))).with_topic_id(id).with_error_code(0),
            Err((name, id, error)) => {
                let result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name)).with_topic_id(id).with_error_code(error.code());
                if api_version >= 5 {
                    result.with_error_message(Some(str_bytes(error.message)))
                } else {
                    result
                }
            }
        };
        responses.push(if api_version >= 6 { result } else { result.with_topic_id(Uuid::nil()) });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(cluster: &Arc<Cluster>, _api_version: i16, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let duplicated = repeated(request.topics.iter().map(|topic| topic.name.as_str()));
    let node_id = cluster.broker().node_id;
    let mut answered = BTreeSet::new();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.as_str();
        if !answered.insert(name) {
            continue;
        }
        let outcome = async {
            if duplicated.contains(name) {
                return Err(ApiError::new(ResponseError::InvalidRequest, "Duplicate topic in request."));
            }
            let existing = cluster
                .topic(name)
                .ok_or_else(|| ApiError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")))?;
            let current = existing.partition_count();
            if topic.count <= current {
                let message = if topic.count == current {
                    format!("Topic already has {current} partitions.")
                } else {
                    format!("The topic {name} currently has {current} partition(s); {} would not be an increase.", topic.count)
                };
                return Err(ApiError::new(ResponseError::InvalidPartitions, message));
            }
            if let Some(assignments) = &topic.assignments {
                let added = topic.count - current;
                if assignments.len() != added as usize {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.", assignments.len()),
                    ));
                }
                for assignment in assignments {
                    check_replicas(&assignment.broker_ids, node_id)?;
                }
            }
            cluster.create_partitions(name, topic.count, request.validate_only).await
        }
        .await;
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result.with_error_code(0).with_error_message(None),
            Err(error) => result.with_error_code(error.code()).with_error_message(Some(str_bytes(error.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// One partition of a DeleteRecords request: the flush to await and the new log start offset,
/// or the error.
enum Deletion {
    Pending(Flush, i64),
    Failed(ApiError),
}

pub async fn delete_records(cluster: &Arc<Cluster>, _api_version: i16, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let now = now_ms();
    // Submit every deletion first, then wait for all the flushes (one group commit).
    let mut submitted = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.as_str();
        let existing = cluster.topic(name);
        let partitions: Vec<(i32, Deletion)> = topic
            .partitions
            .iter()
            .map(|wanted| {
                let index = wanted.partition_index;
                let partition = existing.as_ref().and_then(|topic| topic.partition(index));
                let deletion = match partition {
                    None => Deletion::Failed(ApiError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("This server does not host partition {index} of topic '{name}'."),
                    )),
                    Some(partition) => {
                        let submitted = partition.with_log(|log| {
                            log.delete_records(wanted.offset, now).map(|flush| (flush, log.log_start_offset()))
                        });
                        match submitted {
                            Ok(Ok((flush, low_watermark))) => Deletion::Pending(flush, low_watermark),
                            Ok(Err(error)) => Deletion::Failed(error.into()),
                            Err(error) => Deletion::Failed(error),
                        }
                    }
                };
                (index, deletion)
            })
            .collect();
        submitted.push((topic.name.clone(), partitions));
    }
    let mut topics = Vec::with_capacity(submitted.len());
    for (name, partitions) in submitted {
        let mut results = Vec::with_capacity(partitions.len());
        for (index, deletion) in partitions {
            let outcome = match deletion {
                Deletion::Pending(flush, low_watermark) => flush.complete().await.map(|_| low_watermark).map_err(ApiError::from),
                Deletion::Failed(error) => Err(error),
            };
            let result = DeleteRecordsPartitionResult::default().with_partition_index(index);
            results.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark).with_error_code(0),
                Err(error) => {
                    tracing::debug!(topic = %name.as_str(), partition = index, error = %error.message, "delete records failed");
                    result.with_low_watermark(-1).with_error_code(error.code())
                }
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(name).with_partitions(results));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub fn describe_cluster(cluster: &Arc<Cluster>, api_version: i16, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = cluster.broker();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id))
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS_ALL
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        });
    if api_version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        let (error, message) = if request.endpoint_type == ENDPOINT_CONTROLLERS {
            (ResponseError::MismatchedEndpointType, "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_string())
        } else {
            (ResponseError::UnsupportedEndpointType, format!("Unsupported endpoint type {}", request.endpoint_type))
        };
        return response.with_error_code(error.code()).with_error_message(Some(str_bytes(message)));
    }
    response.with_error_code(0).with_error_message(None).with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id))
        .with_host(str_bytes(broker.advertised_host.clone()))
        .with_port(broker.advertised_port)
        .with_rack(None)])
}
