//! The admin and config APIs at the function level over a real cluster on an in-memory zoned
//! device: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords, DescribeCluster,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, each at its lowest and highest
//! supported version, with their error codes; and what they changed survives a reopen.

use std::sync::Arc;

use broker::api::handle;
use broker::cluster::{BrokerConfig, Cluster, ResponseError};
use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::zone::ZonedDevice;
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use uuid::Uuid;

const NONE: i16 = 0;

fn code(error: ResponseError) -> i16 {
    error.code()
}

mod common;
use common::{device, open};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn tn(text: &str) -> TopicName {
    TopicName(s(text))
}

/// Every response must encode at the version it answers.
fn encodes<T: Encodable>(response: &T, version: i16) {
    let mut buf = BytesMut::new();
    response.encode(&mut buf, version).unwrap_or_else(|error| panic!("encode at v{version}: {error}"));
    assert_eq!(buf.len(), response.compute_size(version).unwrap());
}

async fn call(cluster: &Arc<Cluster>, version: i16, request: RequestKind) -> ResponseKind {
    handle(cluster, version, request).await.expect("a response")
}

// ---- request builders and typed calls ----

fn new_topic(name: &str, partitions: i32, replication: i16, configs: &[(&str, Option<&str>)]) -> create_topics_request::CreatableTopic {
    create_topics_request::CreatableTopic::default()
        .with_name(tn(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(name, value)| create_topics_request::CreatableTopicConfig::default().with_name(s(name)).with_value(value.map(s)))
                .collect(),
        )
}

async fn create_topics(
    cluster: &Arc<Cluster>,
    version: i16,
    topics: Vec<create_topics_request::CreatableTopic>,
    validate_only: bool,
) -> Vec<create_topics_response::CreatableTopicResult> {
    let request = CreateTopicsRequest::default().with_topics(topics).with_validate_only(validate_only).with_timeout_ms(1000);
    match call(cluster, version, RequestKind::CreateTopics(request)).await {
        ResponseKind::CreateTopics(response) => {
            encodes(&response, version);
            response.topics
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn delete_topics(cluster: &Arc<Cluster>, version: i16, request: DeleteTopicsRequest) -> Vec<delete_topics_response::DeletableTopicResult> {
    match call(cluster, version, RequestKind::DeleteTopics(request)).await {
        ResponseKind::DeleteTopics(response) => {
            encodes(&response, version);
            response.responses
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn partitions_topic(name: &str, count: i32, assignments: Option<Vec<Vec<i32>>>) -> create_partitions_request::CreatePartitionsTopic {
    create_partitions_request::CreatePartitionsTopic::default().with_name(tn(name)).with_count(count).with_assignments(assignments.map(|all| {
        all.into_iter()
            .map(|ids| create_partitions_request::CreatePartitionsAssignment::default().with_broker_ids(ids.into_iter().map(BrokerId).collect()))
            .collect()
    }))
}

async fn create_partitions(
    cluster: &Arc<Cluster>,
    version: i16,
    topics: Vec<create_partitions_request::CreatePartitionsTopic>,
    validate_only: bool,
) -> Vec<create_partitions_response::CreatePartitionsTopicResult> {
    let request = CreatePartitionsRequest::default().with_topics(topics).with_validate_only(validate_only);
    match call(cluster, version, RequestKind::CreatePartitions(request)).await {
        ResponseKind::CreatePartitions(response) => {
            encodes(&response, version);
            response.results
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn delete_records(cluster: &Arc<Cluster>, version: i16, topic: &str, offsets: &[(i32, i64)]) -> Vec<(i32, i64, i16)> {
    let partitions = offsets
        .iter()
        .map(|&(index, offset)| delete_records_request::DeleteRecordsPartition::default().with_partition_index(index).with_offset(offset))
        .collect();
    let request = DeleteRecordsRequest::default()
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default().with_name(tn(topic)).with_partitions(partitions)]);
    match call(cluster, version, RequestKind::DeleteRecords(request)).await {
        ResponseKind::DeleteRecords(response) => {
            encodes(&response, version);
            assert_eq!(response.topics.len(), 1);
            assert_eq!(response.topics[0].name.as_str(), topic);
            response.topics[0].partitions.iter().map(|p| (p.partition_index, p.low_watermark, p.error_code)).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn describe_resource(resource_type: i8, name: &str, keys: Option<&[&str]>) -> describe_configs_request::DescribeConfigsResource {
    describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_configuration_keys(keys.map(|keys| keys.iter().map(|key| s(key)).collect()))
}

async fn describe_configs(
    cluster: &Arc<Cluster>,
    version: i16,
    resources: Vec<describe_configs_request::DescribeConfigsResource>,
    synonyms: bool,
) -> Vec<describe_configs_response::DescribeConfigsResult> {
    let request = DescribeConfigsRequest::default().with_resources(resources).with_include_synonyms(synonyms).with_include_documentation(version >= 3);
    match call(cluster, version, RequestKind::DescribeConfigs(request)).await {
        ResponseKind::DescribeConfigs(response) => {
            encodes(&response, version);
            response.results
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn topic_configs(cluster: &Arc<Cluster>, version: i16, topic: &str) -> Vec<describe_configs_response::DescribeConfigsResourceResult> {
    let mut results = describe_configs(cluster, version, vec![describe_resource(2, topic, None)], true).await;
    assert_eq!(results.len(), 1);
    let result = results.remove(0);
    assert_eq!(result.error_code, NONE, "{:?}", result.error_message);
    result.configs
}

fn entry<'a>(configs: &'a [describe_configs_response::DescribeConfigsResourceResult], name: &str) -> &'a describe_configs_response::DescribeConfigsResourceResult {
    configs.iter().find(|config| config.name.as_str() == name).unwrap_or_else(|| panic!("no config {name}"))
}

fn value(config: &describe_configs_response::DescribeConfigsResourceResult) -> Option<&str> {
    config.value.as_ref().map(|value| value.as_str())
}

fn alter_resource(resource_type: i8, name: &str, configs: &[(&str, Option<&str>)]) -> alter_configs_request::AlterConfigsResource {
    alter_configs_request::AlterConfigsResource::default().with_resource_type(resource_type).with_resource_name(s(name)).with_configs(
        configs.iter().map(|(name, value)| alter_configs_request::AlterableConfig::default().with_name(s(name)).with_value(value.map(s))).collect(),
    )
}

async fn alter_configs(
    cluster: &Arc<Cluster>,
    version: i16,
    resources: Vec<alter_configs_request::AlterConfigsResource>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let request = AlterConfigsRequest::default().with_resources(resources).with_validate_only(validate_only);
    match call(cluster, version, RequestKind::AlterConfigs(request)).await {
        ResponseKind::AlterConfigs(response) => {
            encodes(&response, version);
            response.responses.iter().map(|r| (r.error_code, r.error_message.as_ref().map(|m| m.to_string()))).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn incremental_resource(resource_type: i8, name: &str, ops: &[(&str, i8, Option<&str>)]) -> incremental_alter_configs_request::AlterConfigsResource {
    incremental_alter_configs_request::AlterConfigsResource::default().with_resource_type(resource_type).with_resource_name(s(name)).with_configs(
        ops.iter()
            .map(|(name, op, value)| {
                incremental_alter_configs_request::AlterableConfig::default().with_name(s(name)).with_config_operation(*op).with_value(value.map(s))
            })
            .collect(),
    )
}

async fn incremental(
    cluster: &Arc<Cluster>,
    version: i16,
    resources: Vec<incremental_alter_configs_request::AlterConfigsResource>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let request = IncrementalAlterConfigsRequest::default().with_resources(resources).with_validate_only(validate_only);
    match call(cluster, version, RequestKind::IncrementalAlterConfigs(request)).await {
        ResponseKind::IncrementalAlterConfigs(response) => {
            encodes(&response, version);
            response.responses.iter().map(|r| (r.error_code, r.error_message.as_ref().map(|m| m.to_string()))).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Appends `count` one-record batches to a partition and waits until they are durable.
async fn produce(cluster: &Arc<Cluster>, topic: &str, partition: i32, count: usize) {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    for i in 0..count {
        let batch = encode_batch(&[SimpleRecord::new(Some(b"k"), Some(format!("v{i}").as_bytes()), &[], 5)], Compression::None).unwrap();
        partition.with_log(|log| log.append(BytesMut::from(&batch[..]), 0).unwrap()).unwrap();
    }
    let flush = partition.with_log(|log| log.start_flush()).unwrap();
    flush.complete().await.unwrap();
}

fn offsets(cluster: &Arc<Cluster>, topic: &str, partition: i32) -> (i64, i64) {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    partition.with_log(|log| (log.log_start_offset(), log.high_watermark())).unwrap()
}

// ---- tests ----

#[tokio::test]
async fn create_topics_at_v2_and_v7() {
    let device = device();
    let cluster = open(&device).await;

    // v2: success, with a config; no v5+ fields.
    let results = create_topics(&cluster, 2, vec![new_topic("v2", 3, -1, &[("retention.ms", Some("1000"))])], false).await;
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].name.as_str(), results[0].error_code, results[0].error_message.clone()), ("v2", NONE, None));
    let topic = cluster.topic("v2").unwrap();
    assert_eq!(topic.partition_count(), 3);
    assert_eq!(topic.config().retention_ms(), Some(1000));

    // v7: -1 partitions is the broker default; replication factor 1; configs and topic id.
    let results = create_topics(&cluster, 7, vec![new_topic("v7", -1, 1, &[("cleanup.policy", Some("compact"))])], false).await;
    let result = &results[0];
    assert_eq!(result.error_code, NONE, "{:?}", result.error_message);
    assert_eq!(result.error_message, None);
    assert_eq!((result.num_partitions, result.replication_factor), (1, 1));
    let topic = cluster.topic("v7").unwrap();
    assert_eq!(result.topic_id, Uuid::from_bytes(topic.id));
    let configs = result.configs.as_ref().unwrap();
    let cleanup = configs.iter().find(|c| c.name.as_str() == "cleanup.policy").unwrap();
    assert_eq!((cleanup.value.as_ref().map(|v| v.as_str()), cleanup.config_source, cleanup.read_only, cleanup.is_sensitive), (Some("compact"), 1, false, false));
    let retention = configs.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
    assert_eq!((retention.value.as_ref().map(|v| v.as_str()), retention.config_source), (Some("604800000"), 5));

    // Manual assignment to this broker: partition count from the assignment.
    let assigned = new_topic("assigned", -1, -1, &[]).with_assignments(
        (0..2).map(|i| create_topics_request::CreatableReplicaAssignment::default().with_partition_index(i).with_broker_ids(vec![BrokerId(1)])).collect(),
    );
    let results = create_topics(&cluster, 7, vec![assigned], false).await;
    assert_eq!((results[0].error_code, results[0].num_partitions), (NONE, 2));
    assert_eq!(cluster.topic("assigned").unwrap().partition_count(), 2);

    // validate_only: the answer describes the topic, nothing is created, no topic id.
    for version in [2, 7] {
        let results = create_topics(&cluster, version, vec![new_topic("dry", 4, 1, &[("retention.bytes", Some("4096"))])], true).await;
        assert_eq!(results[0].error_code, NONE);
        if version == 7 {
            assert_eq!((results[0].num_partitions, results[0].topic_id), (4, Uuid::nil()));
            let configs = results[0].configs.as_ref().unwrap();
            assert!(configs.iter().any(|c| c.name.as_str() == "retention.bytes" && c.config_source == 1));
        }
        assert!(cluster.topic("dry").is_none(), "validate_only creates nothing");
    }

    // Errors, at both versions.
    for version in [2, 7] {
        let foreign = new_topic("foreign", -1, -1, &[]).with_assignments(vec![create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(2)])]);
        let gap = new_topic("gap", -1, -1, &[]).with_assignments(vec![create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(1)
            .with_broker_ids(vec![BrokerId(1)])]);
        let both = new_topic("both", 2, -1, &[]).with_assignments(vec![create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)])]);
        let cases = vec![
            (new_topic("rf3", 1, 3, &[]), ResponseError::InvalidReplicationFactor),
            (new_topic("rf0", 1, 0, &[]), ResponseError::InvalidReplicationFactor),
            (foreign, ResponseError::InvalidReplicaAssignment),
            (gap, ResponseError::InvalidReplicaAssignment),
            (both, ResponseError::InvalidRequest),
            (new_topic("badcfg", 1, 1, &[("retention.ms", Some("soon"))]), ResponseError::InvalidConfig),
            (new_topic("unknowncfg", 1, 1, &[("no.such.config", Some("1"))]), ResponseError::InvalidConfig),
            (new_topic("nullcfg", 1, 1, &[("retention.ms", None)]), ResponseError::InvalidConfig),
            (new_topic("zero", 0, 1, &[]), ResponseError::InvalidPartitions),
            (new_topic("v2", 1, 1, &[]), ResponseError::TopicAlreadyExists),
            (new_topic("bad name!", 1, 1, &[]), ResponseError::InvalidTopicException),
        ];
        let (topics, expected): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        let results = create_topics(&cluster, version, topics, false).await;
        assert_eq!(results.len(), expected.len());
        for (result, expected) in results.iter().zip(expected) {
            assert_eq!(result.error_code, code(expected), "v{version} {}: {:?}", result.name.as_str(), result.error_message);
            let message = result.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            assert!(!message.is_empty(), "v{version} {}: error without a message", result.name.as_str());
            if version == 7 {
                assert_eq!((result.num_partitions, result.replication_factor, result.topic_id), (-1, -1, Uuid::nil()));
            }
        }
        let badcfg = results.iter().find(|r| r.name.as_str() == "badcfg").unwrap();
        assert!(badcfg.error_message.as_ref().unwrap().contains("retention.ms"));
    }

    // Duplicate names in one request: both entries answered INVALID_REQUEST, nothing created.
    let results = create_topics(&cluster, 7, vec![new_topic("twice", 1, 1, &[]), new_topic("once", 1, 1, &[]), new_topic("twice", 2, 1, &[])], false).await;
    let codes: Vec<(&str, i16)> = results.iter().map(|r| (r.name.as_str(), r.error_code)).collect();
    assert_eq!(codes, vec![("twice", code(ResponseError::InvalidRequest)), ("once", NONE), ("twice", code(ResponseError::InvalidRequest))]);
    assert!(cluster.topic("twice").is_none());
    for name in ["rf3", "foreign", "badcfg", "zero", "both", "gap"] {
        assert!(cluster.topic(name).is_none(), "{name} must not exist");
    }

    // Everything created survives a reopen.
    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(cluster.topic("v2").unwrap().partition_count(), 3);
    assert_eq!(cluster.topic("v2").unwrap().config().retention_ms(), Some(1000));
    assert_eq!(cluster.topic("assigned").unwrap().partition_count(), 2);
    let cleanup = entry(&topic_configs(&cluster, 4, "v7").await, "cleanup.policy").clone();
    assert_eq!((value(&cleanup), cleanup.config_source), (Some("compact"), 1));
    assert!(cluster.topic("dry").is_none());
}

#[tokio::test]
async fn delete_topics_at_v1_and_v6() {
    let device = device();
    let cluster = open(&device).await;
    for name in ["a", "b", "c", "d"] {
        create_topics(&cluster, 7, vec![new_topic(name, 1, 1, &[])], false).await;
    }
    let c_id = Uuid::from_bytes(cluster.topic("c").unwrap().id);
    let d_id = Uuid::from_bytes(cluster.topic("d").unwrap().id);

    // v1: by name; unknown name -> UNKNOWN_TOPIC_OR_PARTITION; no message (v5+ only).
    let results = delete_topics(&cluster, 1, DeleteTopicsRequest::default().with_topic_names(vec![tn("a"), tn("nope")]).with_timeout_ms(1000)).await;
    let codes: Vec<(Option<&str>, i16)> = results.iter().map(|r| (r.name.as_ref().map(|n| n.as_str()), r.error_code)).collect();
    assert_eq!(codes, vec![(Some("a"), NONE), (Some("nope"), code(ResponseError::UnknownTopicOrPartition))]);
    assert!(results.iter().all(|r| r.topic_id.is_nil()));
    assert!(cluster.topic("a").is_none());

    // v5: the error message is there.
    let results = delete_topics(&cluster, 5, DeleteTopicsRequest::default().with_topic_names(vec![tn("nope")])).await;
    assert_eq!(results[0].error_code, code(ResponseError::UnknownTopicOrPartition));
    assert!(results[0].error_message.as_ref().is_some_and(|m| m.contains("nope")));

    // v6: by name (topic id answered), by id, unknown id, both set, duplicates.
    let state = |name: Option<&str>, id: Uuid| delete_topics_request::DeleteTopicState::default().with_name(name.map(tn)).with_topic_id(id);
    let b_id = Uuid::from_bytes(cluster.topic("b").unwrap().id);
    let unknown_id = Uuid::from_bytes([9; 16]);
    let request = DeleteTopicsRequest::default().with_topics(vec![
        state(Some("b"), Uuid::nil()),
        state(None, c_id),
        state(None, unknown_id),
        state(Some("d"), d_id),
        state(None, Uuid::nil()),
    ]);
    let results = delete_topics(&cluster, 6, request).await;
    let got: Vec<(Option<&str>, Uuid, i16)> = results.iter().map(|r| (r.name.as_ref().map(|n| n.as_str()), r.topic_id, r.error_code)).collect();
    assert_eq!(
        got,
        vec![
            (Some("b"), b_id, NONE),
            (Some("c"), c_id, NONE),
            (None, unknown_id, code(ResponseError::UnknownTopicId)),
            (Some("d"), d_id, code(ResponseError::InvalidRequest)),
            (None, Uuid::nil(), code(ResponseError::InvalidRequest)),
        ]
    );
    assert_eq!(results[0].error_message, None);
    assert!(results[2].error_message.is_some());
    assert!(cluster.topic("b").is_none() && cluster.topic("c").is_none());
    assert!(cluster.topic("d").is_some(), "an entry with both name and id deletes nothing");

    let results = delete_topics(&cluster, 6, DeleteTopicsRequest::default().with_topics(vec![state(Some("d"), Uuid::nil()), state(Some("d"), Uuid::nil())])).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].error_code, code(ResponseError::InvalidRequest));
    assert!(cluster.topic("d").is_some());

    // A deleted topic stays deleted after a reopen, and its name can be created again.
    drop(cluster);
    let cluster = open(&device).await;
    assert!(cluster.topic("a").is_none() && cluster.topic("b").is_none() && cluster.topic("c").is_none());
    assert!(cluster.topic("d").is_some());
    let results = create_topics(&cluster, 7, vec![new_topic("b", 2, 1, &[])], false).await;
    assert_eq!(results[0].error_code, NONE);
    assert_ne!(results[0].topic_id, b_id);
}

#[tokio::test]
async fn create_partitions_at_v0_and_v3() {
    let device = device();
    let cluster = open(&device).await;
    create_topics(&cluster, 7, vec![new_topic("grow", 1, 1, &[]), new_topic("other", 1, 1, &[])], false).await;

    for version in [0, 3] {
        let current = cluster.topic("grow").unwrap().partition_count();
        // validate_only changes nothing.
        let results = create_partitions(&cluster, version, vec![partitions_topic("grow", current + 2, None)], true).await;
        assert_eq!((results[0].error_code, results[0].error_message.clone()), (NONE, None));
        assert_eq!(cluster.topic("grow").unwrap().partition_count(), current);

        let results = create_partitions(
            &cluster,
            version,
            vec![
                partitions_topic("grow", current + 2, Some(vec![vec![1], vec![1]])),
                partitions_topic("nope", 5, None),
                partitions_topic("other", 1, None),
                partitions_topic("other", 0, None),
            ],
            false,
        )
        .await;
        // "other" appears twice: one INVALID_REQUEST answer for it.
        let got: Vec<(&str, i16)> = results.iter().map(|r| (r.name.as_str(), r.error_code)).collect();
        assert_eq!(
            got,
            vec![("grow", NONE), ("nope", code(ResponseError::UnknownTopicOrPartition)), ("other", code(ResponseError::InvalidRequest))]
        );
        assert_eq!(cluster.topic("grow").unwrap().partition_count(), current + 2);

        let current = current + 2;
        let cases = vec![
            (partitions_topic("grow", current, None), ResponseError::InvalidPartitions),
            (partitions_topic("grow", current - 1, None), ResponseError::InvalidPartitions),
            (partitions_topic("other", 3, Some(vec![vec![1], vec![2]])), ResponseError::InvalidReplicaAssignment),
            (partitions_topic("other", 3, Some(vec![vec![1]])), ResponseError::InvalidReplicaAssignment),
            (partitions_topic("other", 2, Some(vec![vec![]])), ResponseError::InvalidReplicaAssignment),
            (partitions_topic("other", 2, Some(vec![vec![1, 1]])), ResponseError::InvalidReplicaAssignment),
        ];
        for (topic, expected) in cases {
            let results = create_partitions(&cluster, version, vec![topic], false).await;
            assert_eq!(results[0].error_code, code(expected), "v{version}: {:?}", results[0].error_message);
            assert!(results[0].error_message.as_ref().is_some_and(|m| !m.is_empty()));
        }
        assert_eq!(cluster.topic("other").unwrap().partition_count(), 1);
    }

    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(cluster.topic("grow").unwrap().partition_count(), 5);
    assert_eq!(cluster.topic("other").unwrap().partition_count(), 1);
}

#[tokio::test]
async fn delete_records_at_v0_and_v2() {
    let device = device();
    let cluster = open(&device).await;
    create_topics(&cluster, 7, vec![new_topic("log", 2, 1, &[])], false).await;
    produce(&cluster, "log", 0, 10).await;
    produce(&cluster, "log", 1, 4).await;
    assert_eq!(offsets(&cluster, "log", 0), (0, 10));

    // v0: move partition 0 to 3; out of range above the high watermark and below zero;
    // an unknown partition.
    let results = delete_records(&cluster, 0, "log", &[(0, 3), (1, 11), (2, 0)]).await;
    assert_eq!(
        results,
        vec![(0, 3, NONE), (1, -1, code(ResponseError::OffsetOutOfRange)), (2, -1, code(ResponseError::UnknownTopicOrPartition))]
    );
    assert_eq!(offsets(&cluster, "log", 0), (3, 10));
    let results = delete_records(&cluster, 0, "log", &[(1, -5)]).await;
    assert_eq!(results, vec![(1, -1, code(ResponseError::OffsetOutOfRange))]);

    // v2: -1 is the high watermark; an offset below the log start offset changes nothing.
    let results = delete_records(&cluster, 2, "log", &[(1, -1), (0, 2)]).await;
    assert_eq!(results, vec![(1, 4, NONE), (0, 3, NONE)]);
    assert_eq!(offsets(&cluster, "log", 1), (4, 4));
    let results = delete_records(&cluster, 2, "log", &[(0, 10)]).await;
    assert_eq!(results, vec![(0, 10, NONE)]);

    // Unknown topic.
    let results = delete_records(&cluster, 2, "missing", &[(0, 0), (1, 0)]).await;
    assert_eq!(results, vec![(0, -1, code(ResponseError::UnknownTopicOrPartition)), (1, -1, code(ResponseError::UnknownTopicOrPartition))]);

    // The new log start offsets were durable before the answer.
    drop(cluster);
    let cluster = open(&device).await;
    assert_eq!(offsets(&cluster, "log", 0), (10, 10));
    assert_eq!(offsets(&cluster, "log", 1), (4, 4));
}

#[tokio::test]
async fn describe_cluster_at_v0_and_v1() {
    let cluster = open(&device()).await;
    for version in [0, 1] {
        let response = match call(&cluster, version, RequestKind::DescribeCluster(DescribeClusterRequest::default())).await {
            ResponseKind::DescribeCluster(response) => response,
            other => panic!("unexpected {other:?}"),
        };
        encodes(&response, version);
        assert_eq!((response.error_code, response.error_message.clone()), (NONE, None));
        assert_eq!(response.cluster_id.as_str(), "yottastore");
        assert_eq!(response.controller_id, BrokerId(1));
        assert_eq!(response.endpoint_type, 1);
        assert_eq!(response.cluster_authorized_operations, i32::MIN);
        assert_eq!(response.brokers.len(), 1);
        let broker = &response.brokers[0];
        assert_eq!((broker.broker_id, broker.host.as_str(), broker.port, broker.rack.clone()), (BrokerId(1), "127.0.0.1", 9092, None));

        let request = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        let response = match call(&cluster, version, RequestKind::DescribeCluster(request)).await {
            ResponseKind::DescribeCluster(response) => response,
            other => panic!("unexpected {other:?}"),
        };
        encodes(&response, version);
        assert_ne!(response.cluster_authorized_operations, i32::MIN);
        assert_ne!(response.cluster_authorized_operations & (1 << 10), 0, "DESCRIBE_CONFIGS is allowed");
    }
    // v1 asking for controllers: this is a broker endpoint.
    let request = DescribeClusterRequest::default().with_endpoint_type(2);
    let response = match call(&cluster, 1, RequestKind::DescribeCluster(request)).await {
        ResponseKind::DescribeCluster(response) => response,
        other => panic!("unexpected {other:?}"),
    };
    encodes(&response, 1);
    assert_eq!(response.error_code, code(ResponseError::MismatchedEndpointType));
    assert!(response.brokers.is_empty());
}

#[tokio::test]
async fn describe_configs_at_v1_and_v4() {
    let cluster = open(&device()).await;
    create_topics(&cluster, 7, vec![new_topic("t", 1, 1, &[("retention.ms", Some("1000"))])], false).await;

    for version in [1, 4] {
        let configs = topic_configs(&cluster, version, "t").await;
        assert_eq!(configs.len(), broker::cluster::TopicConfig::default().describe().len(), "every topic config is described");
        let retention = entry(&configs, "retention.ms");
        assert_eq!((value(retention), retention.config_source, retention.read_only, retention.is_sensitive), (Some("1000"), 1, false, false));
        let synonyms: Vec<(&str, Option<&str>, i8)> =
            retention.synonyms.iter().map(|s| (s.name.as_str(), s.value.as_ref().map(|v| v.as_str()), s.source)).collect();
        assert_eq!(synonyms, vec![("retention.ms", Some("1000"), 1), ("log.retention.hours", Some("168"), 5)]);
        let max = entry(&configs, "max.message.bytes");
        assert_eq!((value(max), max.config_source), (Some("1048588"), 5));
        assert_eq!(max.synonyms.len(), 1);
        assert_eq!(max.synonyms[0].source, 5);
        if version >= 3 {
            assert_eq!(retention.config_type, 5, "LONG");
            assert_eq!(max.config_type, 3, "INT");
            assert_eq!(entry(&configs, "cleanup.policy").config_type, 7, "LIST");
            assert_eq!(entry(&configs, "message.timestamp.type").config_type, 2, "STRING");
            assert_eq!(entry(&configs, "unclean.leader.election.enable").config_type, 1, "BOOLEAN");
            assert!(configs.iter().all(|c| c.config_type != 0), "every topic config has a type");
        }

        // Only the requested keys, no synonyms unless asked; unknown names are skipped.
        let results = describe_configs(&cluster, version, vec![describe_resource(2, "t", Some(&["retention.ms", "segment.bytes", "no.such"]))], false).await;
        let names: Vec<&str> = results[0].configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["retention.ms", "segment.bytes"]);
        assert!(results[0].configs.iter().all(|c| c.synonyms.is_empty()));

        // Errors: unknown topic, other broker, unsupported resource type.
        let results = describe_configs(
            &cluster,
            version,
            vec![describe_resource(2, "missing", None), describe_resource(4, "2", None), describe_resource(4, "x", None), describe_resource(3, "g", None)],
            false,
        )
        .await;
        let codes: Vec<i16> = results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![code(ResponseError::UnknownTopicOrPartition), code(ResponseError::InvalidRequest), code(ResponseError::InvalidRequest), code(ResponseError::InvalidRequest)]
        );
        assert!(results.iter().all(|r| r.error_message.as_ref().is_some_and(|m| !m.is_empty()) && r.configs.is_empty()));
        assert_eq!((results[1].resource_type, results[1].resource_name.as_str()), (4, "2"));

        // The broker: Kafka's names, defaults and sources.
        let results = describe_configs(&cluster, version, vec![describe_resource(4, "1", None), describe_resource(4, "", None)], true).await;
        assert_eq!((results[0].error_code, results[1].error_code), (NONE, NONE));
        let configs = &results[0].configs;
        let expect = |name: &str, want: Option<&str>, source: i8| {
            let config = entry(configs, name);
            assert_eq!((value(config), config.config_source), (want, source), "{name}");
            assert!(config.read_only, "{name}: static broker configs are read-only");
        };
        expect("broker.id", Some("1"), 4);
        expect("num.partitions", Some("1"), 5);
        expect("auto.create.topics.enable", Some("true"), 5);
        expect("log.retention.ms", None, 5);
        expect("log.retention.hours", Some("168"), 5);
        expect("socket.request.max.bytes", Some("104857600"), 5);
        expect("message.max.bytes", Some("1048588"), 5);
        expect("advertised.listeners", Some("PLAINTEXT://127.0.0.1:9092"), 4);
        let broker_id = entry(configs, "broker.id");
        let synonyms: Vec<i8> = broker_id.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(synonyms, vec![4, 5]);
        if version >= 3 {
            assert_eq!(broker_id.config_type, 3);
        }
        // "" is the cluster-wide dynamic default: none exist.
        assert!(results[1].configs.is_empty());
    }
}

#[tokio::test]
async fn alter_configs_at_v0_and_v2() {
    let device = device();
    let cluster = open(&device).await;
    create_topics(&cluster, 7, vec![new_topic("t", 1, 1, &[("retention.ms", Some("1000")), ("cleanup.policy", Some("compact"))])], false).await;

    for version in [0, 2] {
        // validate_only changes nothing.
        let results = alter_configs(&cluster, version, vec![alter_resource(2, "t", &[("retention.bytes", Some("1"))])], true).await;
        assert_eq!(results, vec![(NONE, None)]);
        assert_eq!(cluster.topic("t").unwrap().config().retention_bytes(), None);

        // One invalid entry: INVALID_CONFIG, nothing changes.
        let results = alter_configs(&cluster, version, vec![alter_resource(2, "t", &[("retention.bytes", Some("1")), ("retention.ms", Some("soon"))])], false).await;
        assert_eq!(results[0].0, code(ResponseError::InvalidConfig));
        assert!(results[0].1.as_ref().unwrap().contains("retention.ms"));
        assert_eq!(cluster.topic("t").unwrap().config().retention_ms(), Some(1000));

        // Errors: unknown topic, null value, duplicate key, broker, unknown resource type.
        let results = alter_configs(
            &cluster,
            version,
            vec![
                alter_resource(2, "missing", &[("retention.ms", Some("1"))]),
                alter_resource(2, "t", &[("retention.ms", None)]),
                alter_resource(4, "1", &[("num.partitions", Some("3"))]),
                alter_resource(3, "g", &[]),
            ],
            false,
        )
        .await;
        let codes: Vec<i16> = results.iter().map(|r| r.0).collect();
        assert_eq!(
            codes,
            vec![code(ResponseError::UnknownTopicOrPartition), code(ResponseError::InvalidRequest), code(ResponseError::InvalidRequest), code(ResponseError::InvalidRequest)]
        );
        assert!(results[2].1.as_ref().unwrap().contains("static"));
        let results = alter_configs(&cluster, version, vec![alter_resource(2, "t", &[("retention.ms", Some("1")), ("retention.ms", Some("2"))])], false).await;
        assert_eq!(results[0].0, code(ResponseError::InvalidRequest));
        assert_eq!(cluster.topic("t").unwrap().config().retention_ms(), Some(1000));
    }

    // Replaces the whole set: retention.ms and cleanup.policy go back to their defaults.
    let results = alter_configs(&cluster, 2, vec![alter_resource(2, "t", &[("retention.bytes", Some("4096"))])], false).await;
    assert_eq!(results, vec![(NONE, None)]);
    for version in [1, 4] {
        let configs = topic_configs(&cluster, version, "t").await;
        let bytes = entry(&configs, "retention.bytes");
        assert_eq!((value(bytes), bytes.config_source), (Some("4096"), 1));
        let retention = entry(&configs, "retention.ms");
        assert_eq!((value(retention), retention.config_source), (Some("604800000"), 5));
        assert_eq!(value(entry(&configs, "cleanup.policy")), Some("delete"));
    }

    drop(cluster);
    let cluster = open(&device).await;
    let configs = topic_configs(&cluster, 4, "t").await;
    let bytes = entry(&configs, "retention.bytes");
    assert_eq!((value(bytes), bytes.config_source), (Some("4096"), 1));
    assert_eq!(entry(&configs, "retention.ms").config_source, 5);
}

#[tokio::test]
async fn incremental_alter_configs_at_v0_and_v1() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let device = device();
    let cluster = open(&device).await;
    create_topics(&cluster, 7, vec![new_topic("t", 1, 1, &[("retention.ms", Some("1000"))])], false).await;

    for version in [0, 1] {
        // SET and DELETE in one resource, applied together; the rest stays.
        let results = incremental(
            &cluster,
            version,
            vec![incremental_resource(2, "t", &[("max.message.bytes", SET, Some("2000000")), ("retention.ms", DELETE, None)])],
            false,
        )
        .await;
        assert_eq!(results, vec![(NONE, None)]);
        let configs = topic_configs(&cluster, 4, "t").await;
        let max = entry(&configs, "max.message.bytes");
        assert_eq!((value(max), max.config_source), (Some("2000000"), 1));
        assert_eq!(entry(&configs, "retention.ms").config_source, 5);

        // APPEND and SUBTRACT on the list config.
        let results = incremental(&cluster, version, vec![incremental_resource(2, "t", &[("cleanup.policy", APPEND, Some("compact"))])], false).await;
        assert_eq!(results, vec![(NONE, None)]);
        assert_eq!(value(entry(&topic_configs(&cluster, 4, "t").await, "cleanup.policy")), Some("delete,compact"));
        let results = incremental(&cluster, version, vec![incremental_resource(2, "t", &[("cleanup.policy", SUBTRACT, Some("delete"))])], false).await;
        assert_eq!(results, vec![(NONE, None)]);
        assert_eq!(value(entry(&topic_configs(&cluster, 4, "t").await, "cleanup.policy")), Some("compact"));

        // Atomic: one bad operation and nothing of the resource changes.
        let results = incremental(
            &cluster,
            version,
            vec![incremental_resource(2, "t", &[("retention.ms", SET, Some("5")), ("retention.bytes", SET, Some("lots"))])],
            false,
        )
        .await;
        assert_eq!(results[0].0, code(ResponseError::InvalidConfig));
        assert_eq!(entry(&topic_configs(&cluster, 4, "t").await, "retention.ms").config_source, 5);

        // validate_only changes nothing.
        let results = incremental(&cluster, version, vec![incremental_resource(2, "t", &[("retention.ms", SET, Some("5"))])], true).await;
        assert_eq!(results, vec![(NONE, None)]);
        assert_eq!(entry(&topic_configs(&cluster, 4, "t").await, "retention.ms").config_source, 5);

        // Errors (one resource per request: a resource named twice is itself an error).
        let cases = vec![
            (incremental_resource(2, "missing", &[("retention.ms", SET, Some("5"))]), ResponseError::UnknownTopicOrPartition),
            (incremental_resource(2, "t", &[("retention.ms", APPEND, Some("5"))]), ResponseError::InvalidConfig),
            (incremental_resource(2, "t", &[("retention.ms", 9, Some("5"))]), ResponseError::InvalidRequest),
            (incremental_resource(2, "t", &[("no.such", SET, Some("5"))]), ResponseError::InvalidConfig),
            (incremental_resource(2, "t", &[("no.such", DELETE, None)]), ResponseError::InvalidConfig),
            (incremental_resource(2, "t", &[("retention.ms", SET, None)]), ResponseError::InvalidRequest),
            // cleanup.policy is "compact" now: subtracting it leaves an empty list.
            (incremental_resource(2, "t", &[("cleanup.policy", SUBTRACT, Some("compact"))]), ResponseError::InvalidConfig),
            (incremental_resource(4, "1", &[("num.partitions", SET, Some("3"))]), ResponseError::InvalidRequest),
            (incremental_resource(4, "2", &[("num.partitions", DELETE, None)]), ResponseError::InvalidRequest),
            (incremental_resource(2, "t", &[("retention.ms", SET, Some("5")), ("retention.ms", DELETE, None)]), ResponseError::InvalidRequest),
            (incremental_resource(8, "1", &[("root", SET, Some("DEBUG"))]), ResponseError::InvalidRequest),
        ];
        for (resource, expected) in cases {
            let results = incremental(&cluster, version, vec![resource], false).await;
            assert_eq!(results[0].0, code(expected), "v{version}: {:?}", results[0].1);
            assert!(results[0].1.as_ref().is_some_and(|m| !m.is_empty()));
        }
        // Deleting a dynamic broker config that is not set is a no-op, as in Kafka.
        let results = incremental(&cluster, version, vec![incremental_resource(4, "1", &[("num.partitions", DELETE, None)])], false).await;
        assert_eq!(results, vec![(NONE, None)]);
        let configs = topic_configs(&cluster, 4, "t").await;
        assert_eq!(entry(&configs, "retention.ms").config_source, 5);
        assert_eq!(value(entry(&configs, "cleanup.policy")), Some("compact"), "an empty cleanup.policy is refused");

        // Duplicate resources in one request.
        let results = incremental(
            &cluster,
            version,
            vec![incremental_resource(2, "t", &[("retention.ms", SET, Some("5"))]), incremental_resource(2, "t", &[("retention.ms", SET, Some("6"))])],
            false,
        )
        .await;
        assert_eq!(results.iter().map(|r| r.0).collect::<Vec<_>>(), vec![code(ResponseError::InvalidRequest); 2]);

        // Back to the starting point for the next version.
        let results =
            incremental(&cluster, version, vec![incremental_resource(2, "t", &[("max.message.bytes", DELETE, None), ("cleanup.policy", DELETE, None)])], false)
                .await;
        assert_eq!(results, vec![(NONE, None)]);
    }

    let results = incremental(&cluster, 1, vec![incremental_resource(2, "t", &[("retention.ms", SET, Some("12345"))])], false).await;
    assert_eq!(results, vec![(NONE, None)]);
    drop(cluster);
    let cluster = open(&device).await;
    let configs = topic_configs(&cluster, 1, "t").await;
    let retention = entry(&configs, "retention.ms");
    assert_eq!((value(retention), retention.config_source), (Some("12345"), 1));
    assert_eq!(entry(&configs, "max.message.bytes").config_source, 5);
}

async fn open_with(device: &Arc<dyn ZonedDevice>, broker: BrokerConfig) -> Arc<Cluster> {
    let recovered = LogStore::open(device.clone(), LogConfig::default())
        .await
        .unwrap();
    Cluster::open(recovered.store, recovered.partitions, broker)
        .await
        .unwrap()
}

/// Metadata v12 for `names`, auto-creation allowed: each topic's (name, error code).
async fn metadata_auto_create(cluster: &Arc<Cluster>, names: &[&str]) -> Vec<(String, i16)> {
    let topics = names
        .iter()
        .map(|name| metadata_request::MetadataRequestTopic::default().with_name(Some(tn(name))))
        .collect();
    let request = MetadataRequest::default()
        .with_topics(Some(topics))
        .with_allow_auto_topic_creation(true);
    match call(cluster, 12, RequestKind::Metadata(request)).await {
        ResponseKind::Metadata(response) => {
            encodes(&response, 12);
            response
                .topics
                .iter()
                .map(|topic| (topic.name.as_ref().unwrap().to_string(), topic.error_code))
                .collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The broker's partition and topic limits: CreateTopics (validate_only too), CreatePartitions
/// and auto-creation through Metadata refuse beyond them with POLICY_VIOLATION and change
/// nothing; the internal logs do not count; deleting a topic makes room; after a reopen the
/// same counts apply.
#[tokio::test]
async fn partition_and_topic_limits_answer_policy_violation() {
    let policy = code(ResponseError::PolicyViolation);
    let device = device();
    let limits = BrokerConfig {
        partitions_max: 6,
        topics_max: 3,
        default_partitions: 2,
        ..BrokerConfig::default()
    };
    let cluster = open_with(&device, limits.clone()).await;

    // 4 of 6 partitions: one topic of 3 fits beside, a second one does not (validate_only too).
    let results = create_topics(&cluster, 7, vec![new_topic("a", 4, 1, &[])], false).await;
    assert_eq!(results[0].error_code, NONE);
    for validate_only in [true, false] {
        let results =
            create_topics(&cluster, 7, vec![new_topic("b", 3, 1, &[])], validate_only).await;
        assert_eq!(
            results[0].error_code, policy,
            "validate_only={validate_only}"
        );
        let message = results[0]
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("--partitions-max") && message.contains("7"),
            "{message}"
        );
    }
    assert!(cluster.topic("b").is_none());
    // CreatePartitions: 4 -> 6 fits exactly, 6 -> 7 does not.
    let results = create_partitions(&cluster, 3, vec![partitions_topic("a", 7, None)], false).await;
    assert_eq!(results[0].error_code, policy);
    assert_eq!(cluster.topic("a").unwrap().partition_count(), 4);
    let results = create_partitions(&cluster, 3, vec![partitions_topic("a", 6, None)], false).await;
    assert_eq!(results[0].error_code, NONE);
    // Auto-creation (2 partitions each) through Metadata: no partition left.
    assert_eq!(
        metadata_auto_create(&cluster, &["auto"]).await,
        vec![("auto".to_string(), policy)]
    );
    assert!(cluster.topic("auto").is_none());

    // Deleting "a" frees its 6 partitions; the topic limit (3) then bites first.
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![tn("a")])
        .with_timeout_ms(1000);
    assert_eq!(
        delete_topics(&cluster, 1, request).await[0].error_code,
        NONE
    );
    let results = create_topics(
        &cluster,
        7,
        vec![new_topic("t1", 1, 1, &[]), new_topic("t2", 1, 1, &[])],
        false,
    )
    .await;
    assert!(
        results.iter().all(|result| result.error_code == NONE),
        "{results:?}"
    );
    assert_eq!(
        metadata_auto_create(&cluster, &["t3", "t4"]).await,
        vec![("t3".to_string(), NONE), ("t4".to_string(), policy)]
    );
    let results = create_topics(&cluster, 7, vec![new_topic("t5", 1, 1, &[])], false).await;
    assert_eq!(results[0].error_code, policy);
    let message = results[0]
        .error_message
        .as_deref()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("--topics-max"), "{message}");

    // The internal logs (metadata, groups) were never counted: 3 user topics of 3 fit.
    assert_eq!(cluster.topics().len(), 3);
    drop(cluster);
    let cluster = open_with(&device, limits).await;
    assert_eq!(cluster.topics().len(), 3);
    let results = create_topics(&cluster, 7, vec![new_topic("t6", 1, 1, &[])], false).await;
    assert_eq!(results[0].error_code, policy);
    let results =
        create_partitions(&cluster, 3, vec![partitions_topic("t3", 3, None)], false).await;
    assert_eq!(results[0].error_code, NONE, "4 + 1 of 6 partitions");
    let results =
        create_partitions(&cluster, 3, vec![partitions_topic("t1", 3, None)], false).await;
    assert_eq!(results[0].error_code, policy, "5 + 2 of 6 partitions");
}
