//! Black-box tests of `broker::protocol`: real requests as a client encodes them, refusals, and
//! hostile frames (truncated, mutated, random, huge counts) that must never panic and must not
//! make one decode allocate more than `ALLOC_FACTOR` times the frame plus `ALLOC_SLACK_BYTES`.
//!
//! Memory is measured by the counting global allocator below, per thread (tests run in
//! parallel threads; each measures only its own allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use broker::protocol::frame::{FrameDecoder, FrameError, REQUEST_BYTES_MAX_DEFAULT};
use broker::protocol::{
    api_versions_response, decode_request, encode_response, unsupported_api_versions_response,
    versions, DecodeError,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    alter_configs_request, create_partitions_request, create_topics_request,
    delete_records_request, delete_topics_request, describe_configs_request, fetch_request,
    incremental_alter_configs_request, join_group_request, leave_group_request, list_offsets_request,
    offset_commit_request, offset_delete_request, offset_fetch_request, sync_group_request, metadata_request, produce_request,
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, BrokerId, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, ProducerId, ProduceRequest, RequestHeader, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Counting allocator.

struct CountingAllocator;

thread_local! {
    // Const-initialised Cells without destructors: safe to touch from inside the allocator.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // try_with: during thread teardown the slots may be gone; those allocations don't matter.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + size as isize;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn note_dealloc(size: usize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() - size as isize));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as alloc-then-free: during a realloc both blocks may exist.
        note_alloc(new_size);
        let out = System.realloc(ptr, layout, new_size);
        note_dealloc(layout.size());
        out
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Peak bytes allocated on this thread while `f` ran, above what was live when it started.
fn peak_alloc_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(start));
    let out = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (out, (peak - start).max(0) as usize)
}

/// A decode may allocate at most this many times the frame size, plus `ALLOC_SLACK_BYTES`.
const ALLOC_FACTOR: usize = 64;
const ALLOC_SLACK_BYTES: usize = 1024 * 1024;
/// Memory per frame byte that decoding real elements can take (measured worst: 96, Metadata v0
/// topics decoded from zero padding; Vec growth doubles the 48 bytes an element holds).
const DECODE_AMPLIFICATION_MAX: usize = 128;

/// Decodes `frame` (an input that may be anything), checking the memory bound. Returns the
/// result so callers can check it too.
fn decode_bounded(frame: Bytes) -> Result<broker::protocol::Request, DecodeError> {
    let frame_bytes = frame.len();
    let (result, peak_bytes) = peak_alloc_bytes(|| decode_request(frame));
    let limit_bytes = ALLOC_FACTOR * frame_bytes + ALLOC_SLACK_BYTES;
    assert!(
        peak_bytes <= limit_bytes,
        "decoding a {frame_bytes}-byte frame allocated {peak_bytes} bytes (limit {limit_bytes}): {result:?}"
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Real requests, encoded as a client would.

fn name(text: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(text))
}

fn group(text: &'static str) -> kafka_protocol::messages::GroupId {
    kafka_protocol::messages::GroupId(StrBytes::from_static_str(text))
}

fn text(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

/// Header + body as kafka-protocol's client side encodes them (no size prefix).
fn request_frame(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(text("rdkafka")))
        .encode(&mut buf, api_key.request_header_version(api_version))
        .unwrap();
    body.encode(&mut buf, api_version).unwrap();
    buf.freeze()
}

/// A populated request of `api_key`, valid at every version in the versions table (fields a
/// version does not have are left at their defaults, which kafka-protocol requires).
fn sample_request(api_key: ApiKey, api_version: i16) -> RequestKind {
    let uuid = uuid_of(7);
    match api_key {
        ApiKey::Produce => ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("events"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from_static(&[0xAB; 96]))),
                    produce_request::PartitionProduceData::default()
                        .with_index(2)
                        .with_records(None),
                ])])
            .into(),
        ApiKey::Fetch => FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(52_428_800)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(if api_version < 13 {
                    name("events")
                } else {
                    TopicName::default()
                })
                .with_topic_id(if api_version >= 13 {
                    uuid
                } else {
                    Default::default()
                })
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(1234)
                        .with_partition_max_bytes(1 << 20),
                    fetch_request::FetchPartition::default()
                        .with_partition(1)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ])])
            .with_rack_id(if api_version >= 11 {
                text("rack-a")
            } else {
                StrBytes::default()
            })
            .into(),
        ApiKey::ListOffsets => ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(-2),
                ])])
            .into(),
        ApiKey::Metadata => MetadataRequest::default()
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("events"))),
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("other"))),
            ]))
            .with_allow_auto_topic_creation(true)
            .into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default()
            .with_client_software_name(if api_version >= 3 {
                text("librdkafka")
            } else {
                StrBytes::default()
            })
            .with_client_software_version(if api_version >= 3 {
                text("2.6.1")
            } else {
                StrBytes::default()
            })
            .into(),
        ApiKey::CreateTopics => CreateTopicsRequest::default()
            .with_timeout_ms(60_000)
            .with_validate_only(true)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name("events"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![
                    create_topics_request::CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(1)]),
                ])
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text("3600000"))),
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(text("cleanup.policy"))
                        .with_value(None),
                ])])
            .into(),
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
            if api_version >= 6 {
                request
                    .with_topics(vec![
                        delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(name("events"))),
                        delete_topics_request::DeleteTopicState::default().with_topic_id(uuid),
                    ])
                    .into()
            } else {
                request
                    .with_topic_names(vec![name("events"), name("other")])
                    .into()
            }
        }
        ApiKey::DeleteRecords => DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(100),
                ])])
            .into(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
            .with_include_synonyms(api_version >= 1)
            .with_include_documentation(api_version >= 3)
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("events"))
                    .with_configuration_keys(None),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(text("1"))
                    .with_configuration_keys(Some(vec![text("log.retention.ms")])),
            ])
            .into(),
        ApiKey::AlterConfigs => AlterConfigsRequest::default()
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("events"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.bytes"))
                    .with_value(Some(text("1073741824")))])])
            .into(),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name("events"))
                    .with_count(6)
                    .with_assignments(Some(vec![
                        create_partitions_request::CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(1)]),
                    ])),
            ])
            .into(),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("events"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(text("max.message.bytes"))
                            .with_config_operation(0)
                            .with_value(Some(text("2097152"))),
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(text("retention.ms"))
                            .with_config_operation(1)
                            .with_value(None),
                    ]),
            ])
            .into(),
        ApiKey::DescribeCluster => DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true)
            .into(),
        ApiKey::InitProducerId => InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(if api_version >= 3 { 42 } else { -1 }))
            .with_producer_epoch(if api_version >= 3 { 3 } else { -1 })
            .into(),
        ApiKey::FindCoordinator => {
            let request = kafka_protocol::messages::FindCoordinatorRequest::default();
            if api_version >= 4 {
                request.with_coordinator_keys(vec![text("group-a"), text("group-b")]).into()
            } else {
                request.with_key(text("group-a")).into()
            }
        }
        ApiKey::JoinGroup => kafka_protocol::messages::JoinGroupRequest::default()
            .with_group_id(group("group-a"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(300_000)
            .with_member_id(text("member-1"))
            .with_group_instance_id(if api_version >= 5 { Some(text("instance-1")) } else { None })
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 6, b'e', b'v', b'e', b'n', b't', b's'])),
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(text("cooperative-sticky"))
                    .with_metadata(Bytes::from_static(&[0, 1])),
            ])
            .with_reason(if api_version >= 8 { Some(text("rebalance")) } else { None })
            .into(),
        ApiKey::SyncGroup => kafka_protocol::messages::SyncGroupRequest::default()
            .with_group_id(group("group-a"))
            .with_generation_id(3)
            .with_member_id(text("member-1"))
            .with_group_instance_id(if api_version >= 3 { Some(text("instance-1")) } else { None })
            .with_protocol_type(if api_version >= 5 { Some(text("consumer")) } else { None })
            .with_protocol_name(if api_version >= 5 { Some(text("range")) } else { None })
            .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(text("member-1"))
                .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))])
            .into(),
        ApiKey::Heartbeat => kafka_protocol::messages::HeartbeatRequest::default()
            .with_group_id(group("group-a"))
            .with_generation_id(3)
            .with_member_id(text("member-1"))
            .with_group_instance_id(if api_version >= 3 { Some(text("instance-1")) } else { None })
            .into(),
        ApiKey::LeaveGroup => {
            let request = kafka_protocol::messages::LeaveGroupRequest::default().with_group_id(group("group-a"));
            if api_version >= 3 {
                request
                    .with_members(vec![leave_group_request::MemberIdentity::default()
                        .with_member_id(text("member-1"))
                        .with_group_instance_id(Some(text("instance-1")))
                        .with_reason(if api_version >= 5 { Some(text("closing")) } else { None })])
                    .into()
            } else {
                request.with_member_id(text("member-1")).into()
            }
        }
        ApiKey::OffsetCommit => kafka_protocol::messages::OffsetCommitRequest::default()
            .with_group_id(group("group-a"))
            .with_generation_id_or_member_epoch(3)
            .with_member_id(text("member-1"))
            .with_group_instance_id(if api_version >= 7 { Some(text("instance-1")) } else { None })
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(1234)
                    .with_committed_leader_epoch(if api_version >= 6 { 0 } else { -1 })
                    .with_committed_metadata(Some(text("processed")))])])
            .into(),
        ApiKey::OffsetFetch => {
            let request = kafka_protocol::messages::OffsetFetchRequest::default();
            if api_version >= 8 {
                request
                    .with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group("group-a"))
                            .with_member_id(if api_version >= 9 { Some(text("member-1")) } else { None })
                            .with_member_epoch(if api_version >= 9 { 3 } else { -1 })
                            .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(name("events"))
                                .with_partition_indexes(vec![0, 1, 2])])),
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group("group-b"))
                            .with_topics(None),
                    ])
                    .with_require_stable(true)
                    .into()
            } else {
                request
                    .with_group_id(group("group-a"))
                    .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(name("events"))
                        .with_partition_indexes(vec![0, 1, 2])]))
                    .with_require_stable(api_version >= 7)
                    .into()
            }
        }
        ApiKey::ListGroups => kafka_protocol::messages::ListGroupsRequest::default()
            .with_states_filter(if api_version >= 4 { vec![text("Stable")] } else { vec![] })
            .with_types_filter(if api_version >= 5 { vec![text("classic")] } else { vec![] })
            .into(),
        ApiKey::DescribeGroups => kafka_protocol::messages::DescribeGroupsRequest::default()
            .with_groups(vec![group("group-a"), group("group-b")])
            .with_include_authorized_operations(api_version >= 3)
            .into(),
        ApiKey::DeleteGroups => kafka_protocol::messages::DeleteGroupsRequest::default()
            .with_groups_names(vec![group("group-a")])
            .into(),
        ApiKey::OffsetDelete => kafka_protocol::messages::OffsetDeleteRequest::default()
            .with_group_id(group("group-a"))
            .with_topics(vec![offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)])])
            .into(),
        ApiKey::ConsumerGroupHeartbeat => kafka_protocol::messages::ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group("group-a"))
            .with_member_id(text("member-1"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(300_000)
            .with_subscribed_topic_names(Some(vec![name("events")]))
            .with_subscribed_topic_regex(if api_version >= 1 { Some(text("")) } else { None })
            .with_topic_partitions(Some(vec![kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions::default()
                .with_topic_id(uuid_of(3))
                .with_partitions(vec![0, 1])]))
            .into(),
        ApiKey::ConsumerGroupDescribe => kafka_protocol::messages::ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![group("group-a"), group("group-b")])
            .with_include_authorized_operations(api_version >= 1)
            .into(),
        ApiKey::AddPartitionsToTxn => kafka_protocol::messages::AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(kafka_protocol::messages::TransactionalId(text("app-1")))
            .with_v3_and_below_producer_id(kafka_protocol::messages::ProducerId(7))
            .with_v3_and_below_producer_epoch(2)
            .with_v3_and_below_topics(vec![kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![0, 1])])
            .into(),
        ApiKey::EndTxn => kafka_protocol::messages::EndTxnRequest::default()
            .with_transactional_id(kafka_protocol::messages::TransactionalId(text("app-1")))
            .with_producer_id(kafka_protocol::messages::ProducerId(7))
            .with_producer_epoch(2)
            .with_committed(true)
            .into(),
        ApiKey::AddOffsetsToTxn => kafka_protocol::messages::AddOffsetsToTxnRequest::default()
            .with_transactional_id(kafka_protocol::messages::TransactionalId(text("app-1")))
            .with_producer_id(kafka_protocol::messages::ProducerId(7))
            .with_producer_epoch(2)
            .with_group_id(group("group-a"))
            .into(),
        ApiKey::TxnOffsetCommit => kafka_protocol::messages::TxnOffsetCommitRequest::default()
            .with_transactional_id(kafka_protocol::messages::TransactionalId(text("app-1")))
            .with_group_id(group("group-a"))
            .with_producer_id(kafka_protocol::messages::ProducerId(7))
            .with_producer_epoch(2)
            .with_generation_id(if api_version >= 3 { 4 } else { -1 })
            .with_member_id(if api_version >= 3 { text("member-1") } else { text("") })
            .with_topics(vec![kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(name("events"))
                .with_partitions(vec![kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(if api_version >= 2 { 1 } else { -1 })
                    .with_committed_metadata(Some(text("m")))])])
            .into(),
        other => panic!("no sample request for {other:?}"),
    }
}

fn uuid_of(byte: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([byte; 16])
}

/// Every (api key, version) of the versions table with its sample frame.
fn sample_frames() -> Vec<(ApiKey, i16, RequestKind, Bytes)> {
    let mut out = Vec::new();
    for &(api_key, version_min, version_max) in versions::SUPPORTED {
        for api_version in version_min..=version_max {
            let body = sample_request(api_key, api_version);
            let frame = request_frame(api_key, api_version, 1000 + api_version as i32, &body);
            out.push((api_key, api_version, body, frame));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Well-formed requests.

#[test]
fn every_supported_version_round_trips() {
    let frames = sample_frames();
    assert!(frames.len() > 60, "{} frames", frames.len());
    for (api_key, api_version, body, frame) in frames {
        let request =
            decode_bounded(frame).unwrap_or_else(|e| panic!("{api_key:?} v{api_version}: {e}"));
        assert_eq!(request.api_key, api_key);
        assert_eq!(request.api_version, api_version);
        assert_eq!(request.header.correlation_id, 1000 + api_version as i32);
        assert_eq!(request.header.client_id.as_deref(), Some("rdkafka"));
        assert_eq!(request.body, body, "{api_key:?} v{api_version}");
    }
}

#[test]
fn pipelined_frames_through_the_frame_decoder() {
    let frames = sample_frames();
    let mut stream = BytesMut::new();
    for (_, _, _, frame) in &frames {
        stream.put_i32(frame.len() as i32);
        stream.put_slice(frame);
    }
    // Feed the stream a few bytes at a time, as a slow socket would.
    let mut decoder = FrameDecoder::default();
    let mut input = BytesMut::new();
    let mut decoded = Vec::new();
    for chunk in stream.chunks(7) {
        input.extend_from_slice(chunk);
        while let Some(frame) = decoder.next_frame(&mut input).unwrap() {
            decoded.push(decode_request(frame).unwrap());
        }
    }
    assert!(input.is_empty());
    assert_eq!(decoded.len(), frames.len());
    for (request, (api_key, api_version, body, _)) in decoded.iter().zip(&frames) {
        assert_eq!(
            (request.api_key, request.api_version),
            (*api_key, *api_version)
        );
        assert_eq!(&request.body, body);
    }
}

#[test]
fn unknown_api_key_and_unsupported_versions_are_refused_by_name() {
    // A key no Kafka knows.
    let mut frame = BytesMut::new();
    frame.put_i16(1234);
    frame.put_i16(0);
    frame.put_i32(77);
    frame.put_i16(-1);
    assert_eq!(
        decode_bounded(frame.freeze()),
        Err(DecodeError::UnknownApiKey {
            api_key: 1234,
            correlation_id: 77
        })
    );

    // Versions either side of every row.
    for &(api_key, version_min, version_max) in versions::SUPPORTED {
        for api_version in [version_min - 1, version_max + 1, i16::MIN, i16::MAX] {
            let mut frame = BytesMut::new();
            frame.put_i16(api_key as i16);
            frame.put_i16(api_version);
            frame.put_i32(78);
            frame.put_i16(-1);
            let expected = if api_key == ApiKey::ApiVersions {
                DecodeError::UnsupportedApiVersionsVersion {
                    api_version,
                    correlation_id: 78,
                }
            } else {
                DecodeError::UnsupportedVersion {
                    api_key,
                    api_version,
                    correlation_id: 78,
                }
            };
            assert_eq!(decode_bounded(frame.freeze()), Err(expected));
        }
    }

    // Produce v12 and v13 exist in kafka-protocol but are not served (see versions.rs).
    let frame = request_frame(ApiKey::Produce, 12, 5, &sample_request(ApiKey::Produce, 12));
    assert!(matches!(
        decode_bounded(frame),
        Err(DecodeError::UnsupportedVersion {
            api_version: 12,
            ..
        })
    ));
}

/// A client newer than us sends ApiVersions v5 (header v2, flexible body with fields we do not
/// know). We answer as KIP-511 says: a v0 response, header v0, UNSUPPORTED_VERSION, our list.
#[test]
fn api_versions_from_a_newer_client_gets_a_v0_answer() {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(5)
        .with_correlation_id(31)
        .with_client_id(Some(text("future-client")))
        .encode(&mut frame, 2)
        .unwrap();
    frame.put_slice(&[
        0x0b, b'f', b'u', b't', b'u', b'r', b'e', b'-', b'c', b'l', b'i', 0x02, b'9', 0x00, 0x42,
    ]);
    let Err(DecodeError::UnsupportedApiVersionsVersion {
        api_version: 5,
        correlation_id: 31,
    }) = decode_bounded(frame.freeze())
    else {
        panic!("ApiVersions v5 must be answered")
    };

    let answer = unsupported_api_versions_response(31).unwrap();
    let mut buf = answer.clone();
    assert_eq!(buf.get_i32() as usize, answer.len() - 4);
    assert_eq!(buf.get_i32(), 31, "header v0: just the correlation id");
    let ResponseKind::ApiVersions(response) =
        ResponseKind::decode(ApiKey::ApiVersions, &mut buf, 0).unwrap()
    else {
        unreachable!()
    };
    assert!(!buf.has_remaining());
    assert_eq!(response.error_code, 35);
    let api_versions = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .unwrap();
    assert_eq!((api_versions.min_version, api_versions.max_version), (0, 4));
    assert_eq!(response.api_keys.len(), versions::SUPPORTED.len());

    // The retry at v4, the newest we serve, is decoded and answered with header v0 and a
    // flexible v4 body.
    let body = sample_request(ApiKey::ApiVersions, 4);
    let request = decode_bounded(request_frame(ApiKey::ApiVersions, 4, 32, &body)).unwrap();
    assert_eq!(request.body, body);
    let answer = encode_response(
        ApiKey::ApiVersions,
        4,
        32,
        &api_versions_response(4, 0).into(),
    )
    .unwrap();
    let mut buf = answer.slice(4..);
    assert_eq!(buf.get_i32(), 32);
    let ResponseKind::ApiVersions(response) =
        ResponseKind::decode(ApiKey::ApiVersions, &mut buf, 4).unwrap()
    else {
        unreachable!()
    };
    assert!(!buf.has_remaining());
    assert_eq!(response.error_code, 0);
    assert_eq!(response.finalized_features_epoch, -1);
}

#[test]
fn responses_use_the_flexible_header_where_due() {
    use kafka_protocol::messages::MetadataResponse;
    let body: ResponseKind = MetadataResponse::default().into();
    // Metadata v9+ responses use header v1 (correlation id + tagged fields), v8 header v0.
    let v12 = encode_response(ApiKey::Metadata, 12, 3, &body).unwrap();
    let v8 = encode_response(ApiKey::Metadata, 8, 3, &body).unwrap();
    for (frame, version, header_bytes) in [(v12, 12, 5), (v8, 8, 4)] {
        let mut buf = frame.slice(4..);
        assert_eq!(
            frame.len() - 4,
            i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
        );
        assert_eq!(buf.get_i32(), 3);
        buf.advance(header_bytes - 4);
        assert_eq!(
            ResponseKind::decode(ApiKey::Metadata, &mut buf, version).unwrap(),
            body
        );
        assert!(!buf.has_remaining());
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile frames.

#[test]
fn truncated_frames_at_every_length_are_refused() {
    for (api_key, api_version, _, frame) in sample_frames() {
        for len in 0..frame.len() {
            let result = decode_bounded(frame.slice(..len));
            assert!(
                result.is_err(),
                "{api_key:?} v{api_version} truncated to {len} decoded: {result:?}"
            );
            if len < 8 {
                assert_eq!(result, Err(DecodeError::TooShort { frame_bytes: len }));
            }
        }
    }
}

#[test]
fn huge_and_negative_frame_sizes_close_the_connection() {
    let mut decoder = FrameDecoder::default();
    for size in [
        i32::MIN,
        -1,
        0,
        1,
        7,
        REQUEST_BYTES_MAX_DEFAULT as i32 + 1,
        i32::MAX,
    ] {
        let mut input = BytesMut::new();
        input.put_i32(size);
        input.put_slice(&[0; 64]);
        let (result, peak_bytes) = peak_alloc_bytes(|| decoder.next_frame(&mut input));
        assert!(
            matches!(
                result,
                Err(FrameError::Negative { .. }
                    | FrameError::TooShort { .. }
                    | FrameError::TooLarge { .. })
            ),
            "size {size}: {result:?}"
        );
        assert!(peak_bytes < 4096, "size {size}: {peak_bytes} bytes");
    }
    // The largest legal size waits for its bytes, reserving no more than the read-ahead.
    let mut input = BytesMut::new();
    input.put_i32(REQUEST_BYTES_MAX_DEFAULT as i32);
    let (result, peak_bytes) = peak_alloc_bytes(|| decoder.next_frame(&mut input));
    assert_eq!(result, Ok(None));
    assert!(
        peak_bytes <= 2 * 1024 * 1024 + 64,
        "{peak_bytes} bytes reserved ahead"
    );
}

/// Overwrites every position of every sample frame with counts that claim 2^31-1 elements (as
/// an i32 array count) and u32::MAX - 1 elements (as a compact varint count), with the frame
/// padded by `padding_bytes` so the decoder sees that many bytes remaining.
fn hostile_count_frames(padding_bytes: usize) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for (api_key, api_version, _, frame) in sample_frames() {
        for at in 8..frame.len() {
            let mut int_count = BytesMut::from(&frame[..]);
            let end = (at + 4).min(frame.len());
            int_count[at..end].copy_from_slice(&i32::MAX.to_be_bytes()[..end - at]);
            int_count.put_bytes(0, padding_bytes);
            out.push((
                format!("{api_key:?} v{api_version} i32::MAX at {at}"),
                int_count.freeze(),
            ));

            let mut varint_count = BytesMut::from(&frame[..at]);
            varint_count.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            varint_count.put_slice(&frame[at + 1..]);
            varint_count.put_bytes(0, padding_bytes);
            out.push((
                format!("{api_key:?} v{api_version} varint u32::MAX at {at}"),
                varint_count.freeze(),
            ));
        }
    }
    out
}

#[test]
fn counts_claiming_two_billion_elements_in_small_frames() {
    let frames = hostile_count_frames(0);
    assert!(frames.len() > 5_000);
    for (what, frame) in frames {
        let frame_bytes = frame.len();
        let (result, peak_bytes) = peak_alloc_bytes(|| decode_request(frame));
        let limit_bytes = ALLOC_FACTOR * frame_bytes + ALLOC_SLACK_BYTES;
        assert!(
            peak_bytes <= limit_bytes,
            "{what}: {peak_bytes} bytes for {frame_bytes} ({result:?})"
        );
    }
}

/// The same hostile counts with 1 MiB of padding behind them: the vendored decoder reserves at
/// most the bytes that remain (not that many *elements*, which cost up to `size_of::<T>()`
/// bytes each: 96 for a Produce `TopicProduceData`, more for nested CreateTopics structs).
/// What remains is real decoding: behind a hostile count, padding bytes decode as elements
/// (an empty Metadata v0 topic is 2 bytes on the wire and ~96 in memory), so memory per request
/// is bounded by `DECODE_AMPLIFICATION_MAX` times its frame, and the server bounds frames
/// (Produce by socket.request.max.bytes, every other API by a smaller limit).
/// Reports the worst case; fails if it breaks the bound.
#[test]
fn counts_claiming_two_billion_elements_in_large_frames() {
    let mut worst = (0.0f64, String::new());
    let mut failures = Vec::new();
    for (what, frame) in hostile_count_frames(1024 * 1024) {
        let frame_bytes = frame.len();
        let (_, peak_bytes) = peak_alloc_bytes(|| decode_request(frame));
        let ratio = peak_bytes as f64 / frame_bytes as f64;
        if ratio > worst.0 {
            worst = (ratio, what.clone());
        }
        if peak_bytes > DECODE_AMPLIFICATION_MAX * frame_bytes + ALLOC_SLACK_BYTES {
            failures.push(what);
        }
    }
    eprintln!(
        "worst: {:.1} bytes allocated per frame byte ({})",
        worst.0, worst.1
    );
    assert!(
        failures.is_empty(),
        "{} frames over the bound, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Count { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Count { at }),
    ]
}

fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    let len = frame.len();
    match mutation {
        Mutation::Flip { at, mask } if len > 0 => frame[at % len] ^= mask,
        Mutation::Set { at, byte } if len > 0 => frame[at % len] = *byte,
        Mutation::Truncate { len: keep } => frame.truncate(keep % (len + 1)),
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len: n } if len > 0 => {
            let at = at % len;
            frame.drain(at..(at + n).min(len));
        }
        Mutation::Count { at } if len > 0 => {
            let at = at % len;
            for (i, byte) in i32::MAX.to_be_bytes().into_iter().enumerate() {
                if let Some(slot) = frame.get_mut(at + i) {
                    *slot = byte;
                }
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn mutated_frames_never_panic_and_stay_bounded(
        which in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let frames = SAMPLES.with(|samples| samples.clone());
        let (_, _, _, frame) = &frames[which.index(frames.len())];
        let mut bytes = frame.to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = decode_bounded(Bytes::from(bytes));
    }

    /// Random bodies behind a valid fixed header of a served (api key, version).
    #[test]
    fn random_bodies_never_panic_and_stay_bounded(
        row in any::<prop::sample::Index>(),
        version_pick in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (api_key, version_min, version_max) = versions::SUPPORTED[row.index(versions::SUPPORTED.len())];
        let api_version = version_min + (version_pick % (version_max - version_min + 1) as u16) as i16;
        let mut frame = BytesMut::new();
        frame.put_i16(api_key as i16);
        frame.put_i16(api_version);
        frame.put_i32(9);
        frame.put_slice(&body);
        let _ = decode_bounded(frame.freeze());
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_bounded(Bytes::from(bytes));
    }
}

thread_local! {
    // Built once per test thread, outside the measured decodes.
    static SAMPLES: Vec<(ApiKey, i16, RequestKind, Bytes)> = sample_frames();
}
