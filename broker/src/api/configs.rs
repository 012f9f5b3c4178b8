//! DescribeConfigs (v1-4), AlterConfigs (v0-2) and IncrementalAlterConfigs (v0-1).
//!
//! Topic configs are the cluster's `TopicConfig`: explicit overrides (source
//! DYNAMIC_TOPIC_CONFIG) over Kafka's defaults (DEFAULT_CONFIG). Broker configs are static (set
//! on the command line), reported with Kafka's names, defaults and sources and never altered:
//! an attempt to change one gets INVALID_REQUEST, which is what Kafka answers for a config that
//! cannot be updated dynamically (POLICY_VIOLATION would suggest a policy the operator could
//! relax, and there is none).

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::protocol::REQUEST_BYTES_MAX_DEFAULT;
use crate::cluster::{validate_topic_name, ApiError, Cluster, ResponseError, TopicConfig};

/// Kafka's ConfigResource.Type codes.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Kafka's DescribeConfigsResponse.ConfigSource codes.
pub(crate) const SOURCE_TOPIC_CONFIG: i8 = 1;
pub(crate) const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub(crate) const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Kafka's DescribeConfigsResponse.ConfigType codes.
const TYPE_UNKNOWN: i8 = 0;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// socket.request.max.bytes's default (Kafka's and ours), as DescribeConfigs reports it.
const REQUEST_BYTES_MAX_DEFAULT_TEXT: &str = "104857600";
const _: () = assert!(REQUEST_BYTES_MAX_DEFAULT == 104_857_600);

/// Kafka's AlterConfigOp.OpType codes.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Per topic config: its Kafka type, and the broker config that supplies its default (Kafka's
/// ServerTopicConfigSynonyms) with that config's default value, reported as the DEFAULT_CONFIG
/// synonym just as Kafka does (retention.ms's default comes from log.retention.hours=168).
const TOPIC_CONFIGS: &[(&str, i8, &str, &str)] = &[
    ("cleanup.policy", TYPE_LIST, "log.cleanup.policy", "delete"),
    ("compression.type", TYPE_STRING, "compression.type", "producer"),
    ("delete.retention.ms", TYPE_LONG, "log.cleaner.delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", TYPE_LONG, "log.segment.delete.delay.ms", "60000"),
    ("flush.messages", TYPE_LONG, "log.flush.interval.messages", "9223372036854775807"),
    ("flush.ms", TYPE_LONG, "log.flush.scheduler.interval.ms", "9223372036854775807"),
    ("max.message.bytes", TYPE_INT, "message.max.bytes", "1048588"),
    ("message.timestamp.after.max.ms", TYPE_LONG, "log.message.timestamp.after.max.ms", "9223372036854775807"),
    ("message.timestamp.before.max.ms", TYPE_LONG, "log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.type", TYPE_STRING, "log.message.timestamp.type", "CreateTime"),
    ("min.compaction.lag.ms", TYPE_LONG, "log.cleaner.min.compaction.lag.ms", "0"),
    ("min.insync.replicas", TYPE_INT, "min.insync.replicas", "1"),
    ("retention.bytes", TYPE_LONG, "log.retention.bytes", "-1"),
    ("retention.ms", TYPE_LONG, "log.retention.hours", "168"),
    ("segment.bytes", TYPE_INT, "log.segment.bytes", "1073741824"),
    ("segment.ms", TYPE_LONG, "log.roll.hours", "168"),
    ("unclean.leader.election.enable", TYPE_BOOLEAN, "unclean.leader.election.enable", "false"),
];

/// Topic configs whose value is a comma-separated list (APPEND and SUBTRACT apply to these only).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

fn topic_config_info(name: &str) -> Option<&'static (&'static str, i8, &'static str, &'static str)> {
    TOPIC_CONFIGS.iter().find(|(key, _, _, _)| *key == name)
}

/// One described config, independent of the message it goes into.
#[derive(Clone, Debug)]
pub(crate) struct Described {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    /// (name, value, source), the effective one first.
    pub synonyms: Vec<(String, Option<String>, i8)>,
}

/// Every config of a topic as DescribeConfigs reports it (CreateTopics v5+ reports the same).
pub(crate) fn describe_topic_config(config: &TopicConfig) -> Vec<Described> {
    config
        .describe()
        .into_iter()
        .map(|entry| {
            let info = topic_config_info(entry.name);
            let mut synonyms = Vec::new();
            let source = if entry.is_default {
                SOURCE_DEFAULT_CONFIG
            } else {
                synonyms.push((entry.name.to_string(), Some(entry.value.clone()), SOURCE_TOPIC_CONFIG));
                SOURCE_TOPIC_CONFIG
            };
            match info {
                Some((_, _, broker_name, broker_default)) => {
                    synonyms.push((broker_name.to_string(), Some(broker_default.to_string()), SOURCE_DEFAULT_CONFIG))
                }
                None if entry.is_default => synonyms.push((entry.name.to_string(), Some(entry.value.clone()), SOURCE_DEFAULT_CONFIG)),
                None => {}
            }
            Described {
                name: entry.name.to_string(),
                value: Some(entry.value),
                source,
                read_only: false,
                config_type: info.map_or(TYPE_UNKNOWN, |(_, config_type, _, _)| *config_type),
                synonyms,
            }
        })
        .collect()
}

/// (name, type, value, Kafka's default value, set explicitly) of one broker config.
type BrokerEntry = (&'static str, i8, Option<String>, Option<&'static str>, bool);

/// This broker's configs with Kafka's names: what it was started with (STATIC_BROKER_CONFIG
/// where that differs from Kafka's default) and Kafka's defaults for the rest. All read-only:
/// nothing can be changed without a restart.
fn describe_broker_config(cluster: &Cluster) -> Vec<Described> {
    let broker = cluster.broker();
    let node_id = broker.node_id.to_string();
    let listeners = format!("PLAINTEXT://{}:{}", broker.advertised_host, broker.advertised_port);
    let mut entries: Vec<BrokerEntry> = vec![
        ("broker.id", TYPE_INT, Some(node_id.clone()), Some("-1"), true),
        ("node.id", TYPE_INT, Some(node_id), Some("-1"), true),
        ("advertised.listeners", TYPE_STRING, Some(listeners), None, true),
        ("num.partitions", TYPE_INT, Some(broker.default_partitions.to_string()), Some("1"), broker.default_partitions != 1),
        ("auto.create.topics.enable", TYPE_BOOLEAN, Some(broker.auto_create_topics.to_string()), Some("true"), !broker.auto_create_topics),
        ("default.replication.factor", TYPE_INT, Some("1".into()), Some("1"), false),
        ("delete.topic.enable", TYPE_BOOLEAN, Some("true".into()), Some("true"), false),
        ("listeners", TYPE_STRING, Some(format!("PLAINTEXT://{}", broker.listener_addr)), Some("PLAINTEXT://:9092"), true),
        (
            "socket.request.max.bytes",
            TYPE_INT,
            Some(broker.request_bytes_max.to_string()),
            Some(REQUEST_BYTES_MAX_DEFAULT_TEXT),
            broker.request_bytes_max != REQUEST_BYTES_MAX_DEFAULT,
        ),
        ("log.retention.ms", TYPE_LONG, None, None, false),
        ("log.retention.minutes", TYPE_INT, None, None, false),
        ("log.roll.ms", TYPE_LONG, None, None, false),
        ("log.flush.interval.ms", TYPE_LONG, None, None, false),
    ];
    for (_, config_type, broker_name, default) in TOPIC_CONFIGS {
        if !entries.iter().any(|(name, _, _, _, _)| name == broker_name) {
            // Broker synonyms have the topic config's type, except the *.hours ones (INT).
            let config_type = if broker_name.ends_with(".hours") { TYPE_INT } else { *config_type };
            entries.push((broker_name, config_type, Some(default.to_string()), Some(default), false));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(name, config_type, value, default, explicit)| {
            let mut synonyms = Vec::new();
            if explicit {
                synonyms.push((name.to_string(), value.clone(), SOURCE_STATIC_BROKER_CONFIG));
            }
            if let Some(default) = default {
                synonyms.push((name.to_string(), Some(default.to_string()), SOURCE_DEFAULT_CONFIG));
            }
            Described {
                name: name.to_string(),
                value,
                source: if explicit { SOURCE_STATIC_BROKER_CONFIG } else { SOURCE_DEFAULT_CONFIG },
                read_only: true,
                config_type,
                synonyms,
            }
        })
        .collect()
}

/// Checks a BROKER resource name: this broker's id, or "" (Kafka's cluster-wide default
/// resource). Kafka's messages for anything else.
fn check_broker_name(cluster: &Cluster, name: &str) -> Result<bool, ApiError> {
    if name.is_empty() {
        return Ok(false);
    }
    match name.parse::<i32>() {
        Ok(id) if id == cluster.broker().node_id => Ok(true),
        Ok(_) => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Unexpected broker id, expected {} or empty string, but received {name}", cluster.broker().node_id),
        )),
        Err(_) => Err(ApiError::new(ResponseError::InvalidRequest, format!("Broker id must be an integer, but it is: {name}"))),
    }
}

fn unsupported_resource(resource_type: i8) -> ApiError {
    let what = if resource_type == RESOURCE_BROKER_LOGGER { "BROKER_LOGGER (8)".to_string() } else { resource_type.to_string() };
    ApiError::new(
        ResponseError::InvalidRequest,
        format!("Unsupported resource type: {what}; this broker has configs for TOPIC (2) and BROKER (4) resources"),
    )
}

fn existing_topic(cluster: &Cluster, name: &str) -> Result<TopicConfig, ApiError> {
    validate_topic_name(name)?;
    cluster
        .topic(name)
        .map(|topic| topic.config())
        .ok_or_else(|| ApiError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")))
}

pub fn describe_configs(cluster: &Arc<Cluster>, api_version: i16, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let described = match resource.resource_type {
                RESOURCE_TOPIC => existing_topic(cluster, name).map(|config| describe_topic_config(&config)),
                // "" is the cluster-wide dynamic default: there are no dynamic broker configs.
                RESOURCE_BROKER => check_broker_name(cluster, name).map(|this| if this { describe_broker_config(cluster) } else { Vec::new() }),
                other => Err(unsupported_resource(other)),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match described {
                Err(error) => result.with_error_code(error.code()).with_error_message(Some(str_bytes(error.message))),
                Ok(described) => {
                    let wanted: Option<BTreeSet<&str>> =
                        resource.configuration_keys.as_ref().map(|keys| keys.iter().map(|key| key.as_str()).collect());
                    let configs = described
                        .into_iter()
                        .filter(|entry| wanted.as_ref().is_none_or(|wanted| wanted.contains(entry.name.as_str())))
                        .map(|entry| describe_entry(api_version, request.include_synonyms, entry))
                        .collect();
                    result.with_error_code(0).with_error_message(None).with_configs(configs)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(api_version: i16, include_synonyms: bool, entry: Described) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        entry
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default().with_name(str_bytes(name)).with_value(value.map(str_bytes)).with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(entry.name))
        .with_value(entry.value.map(str_bytes))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if api_version >= 3 {
        // No documentation strings: null is what Kafka sends when it has none.
        result = result.with_config_type(entry.config_type).with_documentation(None);
    }
    result
}

/// Checks one resource of an AlterConfigs or IncrementalAlterConfigs request before anything
/// is changed: the resource type and name, and config names appear at most once.
fn check_alter_resource<'a>(
    cluster: &Cluster,
    resource_type: i8,
    name: &str,
    config_names: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    match resource_type {
        RESOURCE_TOPIC => validate_topic_name(name)?,
        RESOURCE_BROKER => {
            check_broker_name(cluster, name)?;
        }
        other => return Err(unsupported_resource(other)),
    }
    let mut seen = BTreeSet::new();
    for config in config_names {
        if !seen.insert(config) {
            return Err(ApiError::new(ResponseError::InvalidRequest, format!("Error due to duplicate config keys: {config}")));
        }
    }
    Ok(())
}

fn static_broker_configs() -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, "broker configs are static; set them on the command line")
}

/// Resources named more than once in one request (Kafka answers each with INVALID_REQUEST).
fn duplicates<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> BTreeSet<(i8, &'a str)> {
    let mut seen = BTreeSet::new();
    let mut duplicates = BTreeSet::new();
    for resource in resources {
        if !seen.insert(resource) {
            duplicates.insert(resource);
        }
    }
    duplicates
}

fn duplicate_resource(resource_type: i8, name: &str) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, format!("Error due to duplicate resource {name:?} of type {resource_type} in the request"))
}

pub async fn alter_configs(cluster: &Arc<Cluster>, _api_version: i16, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let duplicated = duplicates(request.resources.iter().map(|r| (r.resource_type, r.resource_name.as_str())));
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let outcome = async {
            if duplicated.contains(&(resource.resource_type, name)) {
                return Err(duplicate_resource(resource.resource_type, name));
            }
            check_alter_resource(cluster, resource.resource_type, name, resource.configs.iter().map(|c| c.name.as_str()))?;
            let mut entries = Vec::with_capacity(resource.configs.len());
            for config in &resource.configs {
                match &config.value {
                    Some(value) => entries.push((config.name.as_str(), value.as_str())),
                    None => {
                        return Err(ApiError::new(ResponseError::InvalidRequest, format!("Null value not supported for : {}", config.name.as_str())))
                    }
                }
            }
            if resource.resource_type == RESOURCE_BROKER {
                // Replacing the (empty) set of dynamic broker configs with an empty set is a
                // no-op, as in Kafka; anything else would change a static config.
                return if entries.is_empty() { Ok(()) } else { Err(static_broker_configs()) };
            }
            // AlterConfigs replaces the whole override set; every entry is validated first.
            let change = |config: &mut TopicConfig| {
                let mut replaced = TopicConfig::default();
                for (name, value) in &entries {
                    replaced.set(name, value)?;
                }
                *config = replaced;
                Ok(())
            };
            cluster.alter_topic_config(name, change, request.validate_only).await
        }
        .await;
        let response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => response.with_error_code(0).with_error_message(None),
            Err(error) => response.with_error_code(error.code()).with_error_message(Some(str_bytes(error.message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// One operation of an IncrementalAlterConfigs resource, checked.
enum Operation<'a> {
    Set(&'a str, &'a str),
    Delete(&'a str),
    Append(&'a str, &'a str),
    Subtract(&'a str, &'a str),
}

fn parse_operation<'a>(name: &'a StrBytes, operation: i8, value: Option<&'a StrBytes>) -> Result<Operation<'a>, ApiError> {
    let name = name.as_str();
    let value = || {
        value
            .map(|value| value.as_str())
            .ok_or_else(|| ApiError::new(ResponseError::InvalidRequest, format!("Null value not supported for : {name}")))
    };
    match operation {
        OP_SET => Ok(Operation::Set(name, value()?)),
        OP_DELETE => Ok(Operation::Delete(name)),
        OP_APPEND | OP_SUBTRACT => {
            let value = value()?;
            if !LIST_CONFIGS.contains(&name) {
                let verb = if operation == OP_APPEND { "append" } else { "subtract" };
                return Err(ApiError::new(ResponseError::InvalidConfig, format!("Config value {verb} is not allowed for config key: {name}")));
            }
            Ok(if operation == OP_APPEND { Operation::Append(name, value) } else { Operation::Subtract(name, value) })
        }
        other => Err(ApiError::new(ResponseError::InvalidRequest, format!("Unknown config operation {other} for config {name}"))),
    }
}

fn list_items(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect()
}

/// The config's current value: the override, or the default.
fn current_value(config: &TopicConfig, name: &str) -> Result<String, String> {
    config
        .describe()
        .into_iter()
        .find(|entry| entry.name == name)
        .map(|entry| entry.value)
        .ok_or_else(|| format!("Unknown topic config name: {name}"))
}

fn apply_operations(config: &mut TopicConfig, operations: &[Operation<'_>]) -> Result<(), String> {
    for operation in operations {
        match *operation {
            Operation::Set(name, value) => config.set(name, value)?,
            Operation::Delete(name) => config.delete(name)?,
            Operation::Append(name, value) => {
                let mut items = list_items(&current_value(config, name)?);
                for item in list_items(value) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                config.set(name, &items.join(","))?;
            }
            Operation::Subtract(name, value) => {
                let removed = list_items(value);
                let items: Vec<String> = list_items(&current_value(config, name)?).into_iter().filter(|item| !removed.contains(item)).collect();
                config.set(name, &items.join(","))?;
            }
        }
    }
    Ok(())
}

pub async fn incremental_alter_configs(
    cluster: &Arc<Cluster>,
    _api_version: i16,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let duplicated = duplicates(request.resources.iter().map(|r| (r.resource_type, r.resource_name.as_str())));
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let outcome = async {
            if duplicated.contains(&(resource.resource_type, name)) {
                return Err(duplicate_resource(resource.resource_type, name));
            }
            check_alter_resource(cluster, resource.resource_type, name, resource.configs.iter().map(|c| c.name.as_str()))?;
            let operations = resource
                .configs
                .iter()
                .map(|config| parse_operation(&config.name, config.config_operation, config.value.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            if resource.resource_type == RESOURCE_BROKER {
                // Deleting a dynamic broker config that is not set is a no-op, as in Kafka;
                // setting one would change a static config.
                return if operations.iter().all(|op| matches!(op, Operation::Delete(_))) { Ok(()) } else { Err(static_broker_configs()) };
            }
            cluster.alter_topic_config(name, |config| apply_operations(config, &operations), request.validate_only).await
        }
        .await;
        let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => response.with_error_code(0).with_error_message(None),
            Err(error) => response.with_error_code(error.code()).with_error_message(Some(str_bytes(error.message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
