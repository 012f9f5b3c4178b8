//! The consumer group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete, and KIP-848's ConsumerGroupHeartbeat and ConsumerGroupDescribe. Requests are translated for `group::Groups` (the coordinator state machine and
//! the durable group log) and its answers back into responses; the rules live there.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup as DescribedConsumerGroup, Member as DescribedConsumerMember,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{str_bytes, RequestContext};
use crate::cluster::metadata::topic_id_to_hex;
use crate::cluster::{now_ms, Cluster, ResponseError, Topic};
use crate::group::coordinator::{self, GroupState, OFFSET_METADATA_BYTES_MAX};
use crate::group::consumer;
use crate::group::{GroupRecord, JoinRequest, OffsetRecord, SyncRequest};

/// FindCoordinator key type of consumer groups (1 is transactions, 2 share groups).
const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// What a client may do to a group with no authorizer (Kafka: every operation a group
/// supports): READ (3), DELETE (6) and DESCRIBE (8), as a bit field.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// Group types (ListGroups v5): classic groups, and KIP-848's consumer groups.
const GROUP_TYPE_CLASSIC: &str = "classic";
const GROUP_TYPE_CONSUMER: &str = "consumer";
/// ConsumerGroupDescribe v1's member type of a member speaking the consumer protocol (0 is a
/// classic member of a consumer group, which this broker never has).
const MEMBER_TYPE_CONSUMER: i8 = 1;

/// A committed offset of `topic`'s `partition` (known to exist), as the group log records it:
/// (offset, leader epoch, metadata) at `now_ms`. OffsetCommit's and TxnOffsetCommit's.
pub(super) fn offset_record(topic: &Topic, partition: i32, (offset, leader_epoch, metadata): (i64, i32, Option<String>), now_ms: i64) -> OffsetRecord {
    OffsetRecord {
        topic: topic.name.clone(),
        topic_id: topic_id_to_hex(&topic.id),
        partition,
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms: now_ms,
    }
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |error| error.code())
}

fn text(bytes: &StrBytes) -> String {
    bytes.to_string()
}

pub fn find_coordinator(cluster: &Arc<Cluster>, api_version: i16, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let broker = cluster.broker();
    let answer = |key: &str| -> (Option<ResponseError>, Option<String>) {
        if request.key_type == KEY_TYPE_TRANSACTION {
            // This broker coordinates every transactional id; the id itself is checked by the
            // transaction APIs.
            return (None, None);
        }
        if request.key_type != KEY_TYPE_GROUP {
            return (Some(ResponseError::InvalidRequest), Some(format!("key type {} is not served: only consumer groups and transactional ids", request.key_type)));
        }
        match coordinator::validate_group_id(key) {
            Ok(()) => (None, None),
            Err(error) => (Some(error), Some("invalid group id".to_string())),
        }
    };
    if api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error, message) = answer(key);
                let ok = error.is_none();
                CoordinatorEntry::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(if ok { broker.node_id } else { -1 }))
                    .with_host(str_bytes(if ok { broker.advertised_host.clone() } else { String::new() }))
                    .with_port(if ok { broker.advertised_port } else { -1 })
                    .with_error_code(code(error))
                    .with_error_message(message.map(str_bytes))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (error, message) = answer(&request.key);
    let ok = error.is_none();
    FindCoordinatorResponse::default()
        .with_error_code(code(error))
        .with_error_message(message.map(str_bytes))
        .with_node_id(BrokerId(if ok { broker.node_id } else { -1 }))
        .with_host(str_bytes(if ok { broker.advertised_host.clone() } else { String::new() }))
        .with_port(if ok { broker.advertised_port } else { -1 })
}

pub async fn join_group(cluster: &Arc<Cluster>, api_version: i16, request: JoinGroupRequest, context: &RequestContext) -> JoinGroupResponse {
    let join = JoinRequest {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        group_instance_id: request.group_instance_id.as_ref().map(text),
        protocol_type: text(&request.protocol_type),
        protocols: request.protocols.iter().map(|p| (text(&p.name), p.metadata.clone())).collect(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if api_version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        client_id: context.client_id.clone(),
        client_host: context.client_host.clone(),
        require_known_member_id: api_version >= 4,
    };
    let answer = cluster.groups().join(join).await;
    let members = answer
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(member.member_id))
                .with_group_instance_id(member.group_instance_id.map(str_bytes))
                .with_metadata(member.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(code(answer.error))
        .with_generation_id(answer.generation_id)
        .with_protocol_type(answer.protocol_type.map(str_bytes))
        // Before v7 the protocol name is not nullable: an error answer carries "".
        .with_protocol_name(Some(str_bytes(answer.protocol_name.unwrap_or_default())).filter(|name| api_version < 7 || !name.is_empty()))
        .with_leader(str_bytes(answer.leader))
        // KIP-814 (v9): older clients get the members and an assignment to compute, which
        // SyncGroup in a Stable group ignores in favour of the current one.
        .with_skip_assignment(answer.skip_assignment && api_version >= 9)
        .with_member_id(str_bytes(answer.member_id))
        .with_members(members)
}

pub async fn sync_group(cluster: &Arc<Cluster>, _api_version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: text(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: text(&request.member_id),
        group_instance_id: request.group_instance_id.as_ref().map(text),
        protocol_type: request.protocol_type.as_ref().map(text),
        protocol_name: request.protocol_name.as_ref().map(text),
        assignments: request.assignments.iter().map(|a| (text(&a.member_id), a.assignment.clone())).collect(),
    };
    let answer = cluster.groups().sync(sync).await;
    SyncGroupResponse::default()
        .with_error_code(code(answer.error))
        .with_protocol_type(answer.protocol_type.map(str_bytes))
        .with_protocol_name(answer.protocol_name.map(str_bytes))
        .with_assignment(answer.assignment)
}

pub fn heartbeat(cluster: &Arc<Cluster>, _api_version: i16, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = cluster.groups().coordinator().heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
        now_ms(),
    );
    HeartbeatResponse::default().with_error_code(code(result.err()))
}

pub async fn leave_group(cluster: &Arc<Cluster>, api_version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if api_version >= 3 {
        request.members.iter().map(|m| (text(&m.member_id), m.group_instance_id.as_ref().map(text))).collect()
    } else {
        vec![(text(&request.member_id), None)]
    };
    match cluster.groups().leave(&request.group_id.0, &leaving).await {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(results) if api_version >= 3 => {
            let members = leaving
                .into_iter()
                .zip(results)
                .map(|((member_id, group_instance_id), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id))
                        .with_group_instance_id(group_instance_id.map(str_bytes))
                        .with_error_code(code(error))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => LeaveGroupResponse::default().with_error_code(code(results.into_iter().next().flatten())),
    }
}

pub async fn offset_commit(cluster: &Arc<Cluster>, _api_version: i16, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = text(&request.group_id.0);
    let validation = cluster.groups().coordinator().validate_commit(
        &group_id,
        request.generation_id_or_member_epoch,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    let now = now_ms();
    // (topic index, partition index, error) for every partition, and the offsets to write.
    let mut results: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::with_capacity(request.topics.len());
    let mut accepted = Vec::new();
    for topic in &request.topics {
        let name = text(&topic.name.0);
        let known = cluster.topic(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let error = if let Err(error) = validation {
                Some(error)
            } else if partition.committed_metadata.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX) {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                match &known {
                    Some(known) if (0..known.partition_count()).contains(&partition.partition_index) => {
                        let metadata = partition.committed_metadata.as_ref().map(text);
                        let committed = (partition.committed_offset, partition.committed_leader_epoch, metadata);
                        accepted.push(offset_record(known, partition.partition_index, committed, now));
                        None
                    }
                    _ => Some(ResponseError::UnknownTopicOrPartition),
                }
            };
            partitions.push((partition.partition_index, error));
        }
        results.push(partitions);
    }
    let mut write_error = None;
    let keys: Vec<(String, i32)> = accepted.iter().map(|o| (o.topic.clone(), o.partition)).collect();
    if !accepted.is_empty() && !cluster.groups().coordinator().has_room_for_offsets(&group_id, &keys) {
        // Kafka has no such limit and so no code for it; this one makes clients retry later.
        tracing::warn!(group = %group_id, "too many committed partitions in one group");
        write_error = Some(ResponseError::CoordinatorNotAvailable);
        accepted.clear();
    }
    if !accepted.is_empty() {
        // Acknowledged only once durable, as produce acks are.
        if let Err(error) = write_offsets_within(cluster, &group_id, accepted).await {
            write_error = Some(error);
        }
    }
    tracing::debug!(
        group = %group_id,
        member = %&*request.member_id,
        generation = request.generation_id_or_member_epoch,
        validation = ?validation.err(),
        write_error = ?write_error,
        committed = ?keys,
        "OffsetCommit"
    );
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, error)| OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code(error.or(write_error))))
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Writes an OffsetCommit's offsets and waits until they are durable, but not longer than the
/// commit timeout (Kafka's offsets.commit.timeout.ms): then the answer is REQUEST_TIMED_OUT,
/// which clients retry, and the write goes on by itself (applied once durable, as any other).
/// A connection's requests run one at a time, so a commit held by a group log slow to flush (a
/// busy device, a compaction) would hold the member's heartbeats behind it, and its session
/// would end while it waits.
async fn write_offsets_within(cluster: &Arc<Cluster>, group_id: &str, offsets: Vec<OffsetRecord>) -> Result<(), ResponseError> {
    let writing = write_offsets(cluster.clone(), group_id.to_string(), offsets);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Handlers driven outside a tokio runtime (tests with a plain executor) have no timer.
        return writing.await;
    };
    let timeout = cluster.groups().commit_timeout();
    match tokio::time::timeout(timeout, runtime.spawn(writing)).await {
        Ok(Ok(written)) => written,
        Ok(Err(error)) => {
            tracing::error!(group = %group_id, %error, "the task writing committed offsets failed");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        Err(_) => {
            tracing::warn!(group = %group_id, timeout_ms = timeout.as_millis(), "committed offsets not durable within the commit timeout");
            Err(ResponseError::RequestTimedOut)
        }
    }
}

/// Writes committed offsets to the group log and waits until they are durable and applied.
async fn write_offsets(cluster: Arc<Cluster>, group_id: String, offsets: Vec<OffsetRecord>) -> Result<(), ResponseError> {
    let topics: std::collections::BTreeSet<String> = offsets.iter().map(|offset| offset.topic.clone()).collect();
    let written = cluster.groups().write(GroupRecord::OffsetCommit { group: group_id.clone(), offsets }).await;
    if let Err(error) = &written {
        tracing::error!(group = %group_id, error = %error.message, "cannot write committed offsets");
    }
    // A topic deleted while the commit was written: its offsets must not outlive it (the
    // replay drops them by topic id; memory drops them here).
    for topic in &topics {
        let current = cluster.topic(topic).map(|t| t.id);
        cluster.groups().coordinator().retain_group_offsets(&group_id, |name, id| name != topic || current.as_ref() == Some(id));
    }
    written.map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// One partition's committed offset, as OffsetFetch reports it (-1: none).
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// The committed offsets of `group_id`: of the `requested` (topic, partitions), or all.
fn fetch_offsets(cluster: &Arc<Cluster>, group_id: &str, requested: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, Vec<Fetched>)> {
    let coordinator = cluster.groups().coordinator();
    let fetched = fetch_group_offsets(coordinator.group(group_id), requested);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let offsets: Vec<(&str, i32, i64)> =
            fetched.iter().flat_map(|(topic, partitions)| partitions.iter().map(move |f| (topic.as_str(), f.partition, f.offset))).collect();
        tracing::debug!(group = %group_id, ?offsets, "OffsetFetch");
    }
    fetched
}

fn fetch_group_offsets(group: Option<&coordinator::Group>, requested: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, Vec<Fetched>)> {
    match requested {
        Some(requested) => requested
            .into_iter()
            .map(|(topic, partitions)| {
                let fetched = partitions
                    .into_iter()
                    .map(|partition| match group.and_then(|group| group.offset(&topic, partition)) {
                        Some(committed) => Fetched {
                            partition,
                            offset: committed.offset,
                            leader_epoch: committed.leader_epoch,
                            metadata: committed.metadata.clone().unwrap_or_default(),
                        },
                        None => Fetched { partition, offset: -1, leader_epoch: -1, metadata: String::new() },
                    })
                    .collect();
                (topic, fetched)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<Fetched>> = BTreeMap::new();
            for ((topic, partition), committed) in group.map(|group| group.offsets().iter()).into_iter().flatten() {
                by_topic.entry(topic.clone()).or_default().push(Fetched {
                    partition: *partition,
                    offset: committed.offset,
                    leader_epoch: committed.leader_epoch,
                    metadata: committed.metadata.clone().unwrap_or_default(),
                });
            }
            by_topic.into_iter().collect()
        }
    }
}

pub fn offset_fetch(cluster: &Arc<Cluster>, api_version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
    if api_version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|wanted| {
                let group_id = text(&wanted.group_id.0);
                if let Err(error) = coordinator::validate_group_id(&group_id) {
                    return OffsetFetchResponseGroup::default().with_group_id(wanted.group_id.clone()).with_error_code(error.code());
                }
                let requested =
                    wanted.topics.as_ref().map(|topics| topics.iter().map(|t| (text(&t.name.0), t.partition_indexes.clone())).collect());
                let topics = fetch_offsets(cluster, &group_id, requested)
                    .into_iter()
                    .map(|(topic, fetched)| {
                        let partitions = fetched
                            .into_iter()
                            .map(|f| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(f.partition)
                                    .with_committed_offset(f.offset)
                                    .with_committed_leader_epoch(f.leader_epoch)
                                    .with_metadata(Some(str_bytes(f.metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(topic))).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default().with_group_id(wanted.group_id.clone()).with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = text(&request.group_id.0);
    if let Err(error) = coordinator::validate_group_id(&group_id) {
        return OffsetFetchResponse::default().with_error_code(error.code());
    }
    let requested = request.topics.as_ref().map(|topics| topics.iter().map(|t| (text(&t.name.0), t.partition_indexes.clone())).collect());
    let topics = fetch_offsets(cluster, &group_id, requested)
        .into_iter()
        .map(|(topic, fetched)| {
            let partitions = fetched
                .into_iter()
                .map(|f| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(f.partition)
                        .with_committed_offset(f.offset)
                        .with_committed_leader_epoch(f.leader_epoch)
                        .with_metadata(Some(str_bytes(f.metadata)))
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub fn list_groups(cluster: &Arc<Cluster>, _api_version: i16, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|t| t.to_lowercase()).collect();
    let coordinator = cluster.groups().coordinator();
    let wanted = |type_name: &str, state: &str| {
        (types.is_empty() || types.iter().any(|t| t == type_name)) && (states.is_empty() || states.contains(&state.to_lowercase()))
    };
    let listed = |group_id: &str, protocol_type: &str, state: &str, group_type: &str| {
        ListedGroup::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_protocol_type(str_bytes(protocol_type))
            .with_group_state(str_bytes(state))
            .with_group_type(str_bytes(group_type))
    };
    let mut groups: Vec<ListedGroup> = coordinator
        .groups()
        .filter(|group| coordinator.consumer_group(&group.group_id).is_none())
        .filter(|group| wanted(GROUP_TYPE_CLASSIC, group.state().name()))
        .map(|group| listed(&group.group_id, group.protocol_type.as_deref().unwrap_or_default(), group.state().name(), GROUP_TYPE_CLASSIC))
        .collect();
    groups.extend(
        coordinator
            .consumer_groups()
            .filter(|group| wanted(GROUP_TYPE_CONSUMER, group.state_name()))
            .map(|group| listed(&group.group_id, "consumer", group.state_name(), GROUP_TYPE_CONSUMER)),
    );
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(cluster: &Arc<Cluster>, api_version: i16, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let coordinator = cluster.groups().coordinator();
    let operations = if request.include_authorized_operations { GROUP_OPERATIONS_ALL } else { AUTHORIZED_OPERATIONS_OMITTED };
    let groups = request
        .groups
        .iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone()).with_authorized_operations(operations);
            if let Err(error) = coordinator::validate_group_id(&group_id.0) {
                return described.with_error_code(error.code());
            }
            if let Some(consumer_group) = coordinator.consumer_group(&group_id.0) {
                // KIP-848 groups are described by ConsumerGroupDescribe in Kafka; here, members
                // and state (their assignments are not in the classic encoding).
                let members = consumer_group
                    .members
                    .values()
                    .map(|member| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(member.member_id.clone()))
                            .with_group_instance_id(member.instance_id.clone().map(str_bytes))
                            .with_client_id(str_bytes(member.client_id.clone()))
                            .with_client_host(str_bytes(member.client_host.clone()))
                    })
                    .collect();
                return described
                    .with_group_state(str_bytes(consumer_group.state_name()))
                    .with_protocol_type(str_bytes("consumer"))
                    .with_members(members);
            }
            let Some(group) = coordinator.group(&group_id.0) else {
                // Kafka answers an unknown group as Dead, and with GROUP_ID_NOT_FOUND from v6.
                let described = described.with_group_state(str_bytes("Dead"));
                return if api_version >= 6 {
                    described
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(format!("Group {} not found.", &*group_id.0))))
                } else {
                    described
                };
            };
            // As Kafka's group summary: the protocol and member metadata only once Stable.
            let stable = group.state() == GroupState::Stable;
            let protocol = group.protocol_name.clone().filter(|_| stable).unwrap_or_default();
            let members = group
                .members()
                .map(|member| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(member.member_id.clone()))
                        .with_group_instance_id(member.group_instance_id.clone().map(str_bytes))
                        .with_client_id(str_bytes(member.client_id.clone()))
                        .with_client_host(str_bytes(member.client_host.clone()))
                        .with_member_metadata(if stable { member.metadata(&protocol).cloned().unwrap_or_default() } else { Default::default() })
                        .with_member_assignment(if stable { member.assignment.clone() } else { Default::default() })
                })
                .collect();
            described
                .with_group_state(str_bytes(group.state().name()))
                .with_protocol_type(str_bytes(group.protocol_type.clone().unwrap_or_default()))
                .with_protocol_data(str_bytes(protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(cluster: &Arc<Cluster>, _api_version: i16, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let validation = cluster.groups().coordinator().validate_delete(&group_id.0);
        let error = match validation {
            Err(error) => Some(error),
            Ok(()) => match cluster.groups().write(GroupRecord::GroupDelete { group: text(&group_id.0) }).await {
                Ok(()) => None,
                Err(error) => {
                    tracing::error!(group = %&*group_id.0, error = %error.message, "cannot write a group deletion");
                    Some(ResponseError::CoordinatorNotAvailable)
                }
            },
        };
        results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(code(error)));
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(cluster: &Arc<Cluster>, _api_version: i16, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = text(&request.group_id.0);
    // Per partition: its error, given the group's state now.
    let checked: Result<Vec<Vec<(i32, Option<ResponseError>)>>, ResponseError> = (|| {
        coordinator::validate_group_id(&group_id)?;
        let coordinator = cluster.groups().coordinator();
        let group = coordinator.group(&group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let consumer_group = coordinator.consumer_group(&group_id);
        let empty = group.state() == GroupState::Empty && consumer_group.is_none();
        if !empty && consumer_group.is_none() && group.protocol_type.as_deref() != Some("consumer") {
            return Err(ResponseError::NonEmptyGroup);
        }
        Ok(request
            .topics
            .iter()
            .map(|topic| {
                let name = text(&topic.name.0);
                let known = cluster.topic(&name);
                let subscribed = match consumer_group {
                    Some(consumer_group) => consumer_group.members.values().any(|m| m.subscribed.contains(&name)),
                    None => !empty && group.subscribed_to(&name),
                };
                topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let error = match &known {
                            Some(known) if (0..known.partition_count()).contains(&p.partition_index) => {
                                subscribed.then_some(ResponseError::GroupSubscribedToTopic)
                            }
                            _ => Some(ResponseError::UnknownTopicOrPartition),
                        };
                        (p.partition_index, error)
                    })
                    .collect()
            })
            .collect())
    })();
    let checked = match checked {
        Ok(checked) => checked,
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    let deleted: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&checked)
        .flat_map(|(topic, partitions)| {
            partitions.iter().filter(|(_, error)| error.is_none()).map(|(index, _)| (text(&topic.name.0), *index))
        })
        .collect();
    if !deleted.is_empty() {
        if let Err(error) = cluster.groups().write(GroupRecord::OffsetDelete { group: group_id.clone(), partitions: deleted }).await {
            tracing::error!(group = %group_id, error = %error.message, "cannot write an offset deletion");
            return OffsetDeleteResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
    }
    let topics = request
        .topics
        .iter()
        .zip(checked)
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, error)| OffsetDeleteResponsePartition::default().with_partition_index(index).with_error_code(code(error)))
                .collect();
            OffsetDeleteResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

/// KIP-848: one heartbeat of a consumer-protocol member (see `group::consumer`).
pub fn consumer_group_heartbeat(
    cluster: &Arc<Cluster>,
    _api_version: i16,
    request: ConsumerGroupHeartbeatRequest,
    context: &RequestContext,
) -> ConsumerGroupHeartbeatResponse {
    let topics: BTreeMap<String, ([u8; 16], i32)> =
        cluster.topics().iter().map(|topic| (topic.name.clone(), (topic.id, topic.partition_count()))).collect();
    let owned = request.topic_partitions.as_ref().map(|owned| {
        owned
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (*t.topic_id.as_bytes(), *p)))
            .collect()
    });
    let heartbeat = consumer::HeartbeatRequest {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(text),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request.subscribed_topic_names.as_ref().map(|names| names.iter().map(|n| text(&n.0)).collect()),
        server_assignor: request.server_assignor.as_ref().map(text),
        owned,
        client_id: context.client_id.clone(),
        client_host: context.client_host.clone(),
    };
    tracing::debug!(?request, "ConsumerGroupHeartbeat");
    if request.subscribed_topic_regex.as_ref().is_some_and(|regex| !regex.is_empty()) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(str_bytes("subscribed_topic_regex is not supported")));
    }
    let answer = cluster.groups().coordinator().consumer_heartbeat(heartbeat, &topics, now_ms());
    let assignment = answer.assignment.map(|partitions| {
        let mut by_topic: BTreeMap<[u8; 16], Vec<i32>> = BTreeMap::new();
        for (topic_id, partition) in partitions {
            by_topic.entry(topic_id).or_default().push(partition);
        }
        Assignment::default().with_topic_partitions(
            by_topic
                .into_iter()
                .map(|(id, partitions)| TopicPartitions::default().with_topic_id(Uuid::from_bytes(id)).with_partitions(partitions))
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code(answer.error))
        .with_error_message(answer.error_message.map(str_bytes))
        .with_member_id(Some(str_bytes(answer.member_id)))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
        .with_assignment(assignment)
}

/// KIP-848: ConsumerGroupDescribe, the consumer groups' state, epochs, assignor and members
/// with their current and target assignments. As Kafka, a group that is not a consumer group
/// (unknown, or classic) is GROUP_ID_NOT_FOUND, with a message saying which.
pub fn consumer_group_describe(cluster: &Arc<Cluster>, api_version: i16, request: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let topic_names: BTreeMap<[u8; 16], String> = cluster.topics().iter().map(|topic| (topic.id, topic.name.clone())).collect();
    let assignment = |partitions: &std::collections::BTreeSet<consumer::TopicPartition>| {
        let mut by_topic: BTreeMap<[u8; 16], Vec<i32>> = BTreeMap::new();
        for (topic_id, partition) in partitions {
            by_topic.entry(*topic_id).or_default().push(*partition);
        }
        DescribedAssignment::default().with_topic_partitions(
            by_topic
                .into_iter()
                .map(|(id, partitions)| {
                    // A topic deleted since the assignment keeps its id and loses its name.
                    let name = topic_names.get(&id).cloned().unwrap_or_default();
                    DescribedTopicPartitions::default()
                        .with_topic_id(Uuid::from_bytes(id))
                        .with_topic_name(TopicName(str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        )
    };
    let operations = if request.include_authorized_operations { GROUP_OPERATIONS_ALL } else { AUTHORIZED_OPERATIONS_OMITTED };
    let coordinator = cluster.groups().coordinator();
    let groups = request
        .group_ids
        .iter()
        .map(|group_id| {
            let described = DescribedConsumerGroup::default().with_group_id(group_id.clone()).with_authorized_operations(operations);
            if let Err(error) = coordinator::validate_group_id(&group_id.0) {
                return described.with_error_code(error.code());
            }
            let Some(group) = coordinator.consumer_group(&group_id.0) else {
                let message = if coordinator.group(&group_id.0).is_some() {
                    format!("Group {} is not a consumer group.", &*group_id.0)
                } else {
                    format!("Group {} not found.", &*group_id.0)
                };
                return described.with_error_code(ResponseError::GroupIdNotFound.code()).with_error_message(Some(str_bytes(message)));
            };
            let members = group
                .members
                .values()
                .map(|member| {
                    DescribedConsumerMember::default()
                        .with_member_id(str_bytes(member.member_id.clone()))
                        .with_instance_id(member.instance_id.clone().map(str_bytes))
                        // Racks are not part of the assignment here (no rack-aware assignor).
                        .with_rack_id(None)
                        .with_member_epoch(member.epoch)
                        .with_client_id(str_bytes(member.client_id.clone()))
                        .with_client_host(str_bytes(member.client_host.clone()))
                        .with_subscribed_topic_names(member.subscribed.iter().map(|name| TopicName(str_bytes(name.clone()))).collect())
                        .with_subscribed_topic_regex(None)
                        .with_assignment(assignment(&member.assigned))
                        .with_target_assignment(assignment(&group.target_of(&member.member_id)))
                        .with_member_type(if api_version >= 1 { MEMBER_TYPE_CONSUMER } else { -1 })
                })
                .collect();
            described
                .with_group_state(str_bytes(group.state_name()))
                .with_group_epoch(group.group_epoch)
                .with_assignment_epoch(group.assignment_epoch)
                .with_assignor_name(str_bytes(group.assignor_name()))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
