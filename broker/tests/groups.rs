//! Consumer groups at the handler level, over a real cluster on an in-memory zoned device:
//! committed offsets are durable across a reopen, the group log compacts, offsets of deleted
//! topics are dropped, and a join/sync round trip through `broker::api::handle`.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::api::handle;
use broker::cluster::{BrokerConfig, Cluster, ResponseError};
use broker::log::{LogConfig, LogStore};
use broker::zone::ZonedDevice;
use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup as ConsumerDescribedGroup;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as HeartbeatTopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

mod common;
use common::{device, open};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn commit(cluster: &Arc<Cluster>, version: i16, group: &str, topic: &str, offsets: &[(i32, i64)], metadata: &str) -> Vec<i16> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(text(topic))).with_partitions(
            offsets
                .iter()
                .map(|(p, o)| {
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(*o)
                        .with_committed_metadata(Some(text(metadata)))
                })
                .collect(),
        )]);
    match handle(cluster, version, RequestKind::OffsetCommit(request)).await {
        Some(ResponseKind::OffsetCommit(response)) => response.topics[0].partitions.iter().map(|p| p.error_code).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

/// (partition, offset, metadata) committed for `group` on `topic`, through OffsetFetch v8.
async fn fetch(cluster: &Arc<Cluster>, group: &str, topic: &str) -> BTreeMap<i32, (i64, String)> {
    let request = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(text(group))).with_topics(None)]);
    match handle(cluster, 8, RequestKind::OffsetFetch(request)).await {
        Some(ResponseKind::OffsetFetch(response)) => response.groups[0]
            .topics
            .iter()
            .filter(|t| &*t.name.0 == topic)
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, (p.committed_offset, p.metadata.as_deref().unwrap_or_default().to_string()))))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn offsets_survive_reopen_and_the_log_compacts() {
    broker::pending::block_on(async {
        let device = device();
        let cluster = open(&device).await;
        cluster.create_topic("t", 3, &BTreeMap::new(), false).await.unwrap();
        assert_eq!(commit(&cluster, 8, "g", "t", &[(0, 1), (5, 1)], "m").await, vec![0, ResponseError::UnknownTopicOrPartition.code()]);
        assert_eq!(commit(&cluster, 8, "g", "nope", &[(0, 1)], "m").await, vec![ResponseError::UnknownTopicOrPartition.code()]);
        assert_eq!(commit(&cluster, 8, "g", "t", &[(0, 1)], &"x".repeat(4097)).await, vec![ResponseError::OffsetMetadataTooLarge.code()]);
        assert_eq!(commit(&cluster, 8, "", "t", &[(0, 1)], "m").await, vec![ResponseError::InvalidGroupId.code()]);
        // Each commit is at least one 4 KiB block: 2,000 of them are ~8 zones of 1 MiB, past
        // the compaction threshold (4 zones) more than once.
        let mut peak_bytes = 0;
        for i in 0..2_000i64 {
            assert_eq!(commit(&cluster, 2 + (i % 8) as i16, "g", "t", &[((i % 3) as i32, i)], &format!("m{i}")).await, vec![0]);
            peak_bytes = peak_bytes.max(cluster.groups().log_size_bytes().await);
        }
        assert!(peak_bytes <= 5 << 20, "the group log grew to {peak_bytes} bytes: compaction did not run");
        let expected: BTreeMap<i32, (i64, String)> = (1_997..2_000).map(|i| ((i % 3) as i32, (i, format!("m{i}")))).collect();
        assert_eq!(fetch(&cluster, "g", "t").await, expected);
        drop(cluster);

        let cluster = open(&device).await;
        assert_eq!(fetch(&cluster, "g", "t").await, expected, "after reopen");
        // A deleted topic's offsets are gone, and stay gone when a topic of that name returns.
        cluster.delete_topic("t", None).await.unwrap();
        assert!(fetch(&cluster, "g", "t").await.is_empty());
        cluster.create_topic("t", 3, &BTreeMap::new(), false).await.unwrap();
        drop(cluster);
        let cluster = open(&device).await;
        assert!(fetch(&cluster, "g", "t").await.is_empty(), "offsets of the deleted topic came back");
    });
}

fn join(member_id: &str) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(text(member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("range")).with_metadata(Bytes::from_static(b"m"))]),
    )
}

/// Shutdown answers parked joins at once (they would hold it for the rebalance timeout).
#[test]
fn close_answers_parked_joins() {
    broker::pending::block_on(async {
        let cluster = open(&device()).await;
        let Some(ResponseKind::JoinGroup(first)) = handle(&cluster, 9, join("")).await else { panic!() };
        let member_id = first.member_id.to_string();
        let closing = async { cluster.groups().close() };
        // join! polls the join first: it parks (the new group waits 3 s for more members).
        let (joined, ()) = tokio::join!(handle(&cluster, 9, join(&member_id)), closing);
        let Some(ResponseKind::JoinGroup(joined)) = joined else { panic!() };
        assert_eq!(joined.error_code, ResponseError::CoordinatorNotAvailable.code());
        let Some(ResponseKind::JoinGroup(late)) = handle(&cluster, 9, join(&member_id)).await else { panic!() };
        assert_eq!(late.error_code, ResponseError::CoordinatorNotAvailable.code());
    });
}

#[test]
fn join_and_sync_through_the_handlers() {
    broker::pending::block_on(async {
        let device = device();
        let cluster = open(&device).await;
        let Some(ResponseKind::JoinGroup(first)) = handle(&cluster, 9, join("")).await else { panic!() };
        assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        let member_id = first.member_id.to_string();
        // A new group waits group.initial.rebalance.delay.ms (3 s) for more members; the timer
        // is the server's, so tick here until the join completes.
        let joining = handle(&cluster, 9, join(&member_id));
        let ticking = async {
            loop {
                cluster.groups().tick();
                std::thread::sleep(std::time::Duration::from_millis(50));
                if cluster.groups().coordinator().group("g").is_some_and(|g| g.state() != broker::group::GroupState::PreparingRebalance) {
                    return;
                }
            }
        };
        let (joined, ()) = tokio::join!(joining, ticking);
        let Some(ResponseKind::JoinGroup(joined)) = joined else { panic!() };
        assert_eq!((joined.error_code, joined.generation_id, joined.leader.to_string()), (0, 1, member_id.clone()));
        assert_eq!(joined.members.len(), 1);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_generation_id(1)
            .with_member_id(text(&member_id))
            .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(text(&member_id)).with_assignment(Bytes::from_static(b"all"))]);
        let Some(ResponseKind::SyncGroup(synced)) = handle(&cluster, 5, RequestKind::SyncGroup(sync)).await else { panic!() };
        assert_eq!((synced.error_code, synced.assignment), (0, Bytes::from_static(b"all")));
    });
}

/// One ConsumerGroupHeartbeat v1 of member `member_id` (KIP-1082: the client names it).
async fn consumer_heartbeat(cluster: &Arc<Cluster>, member_id: &str, epoch: i32, owned: &[(uuid::Uuid, Vec<i32>)]) -> ConsumerGroupHeartbeatResponse {
    let joining = epoch == 0;
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text("kip848")))
        .with_member_id(text(member_id))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(joining.then(|| vec![TopicName(text("t"))]))
        .with_server_assignor(joining.then(|| text("range")))
        .with_topic_partitions(Some(
            owned.iter().map(|(id, partitions)| HeartbeatTopicPartitions::default().with_topic_id(*id).with_partitions(partitions.clone())).collect(),
        ));
    match handle(cluster, 1, RequestKind::ConsumerGroupHeartbeat(request)).await {
        Some(ResponseKind::ConsumerGroupHeartbeat(response)) => response,
        other => panic!("unexpected {other:?}"),
    }
}

async fn consumer_describe(cluster: &Arc<Cluster>, version: i16, groups: &[&str], operations: bool) -> Vec<ConsumerDescribedGroup> {
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(groups.iter().map(|g| GroupId(text(g))).collect())
        .with_include_authorized_operations(operations);
    match handle(cluster, version, RequestKind::ConsumerGroupDescribe(request)).await {
        Some(ResponseKind::ConsumerGroupDescribe(response)) => response.groups,
        other => panic!("unexpected {other:?}"),
    }
}

/// Two members join a KIP-848 group with the range assignor and reconcile; ConsumerGroupDescribe
/// then shows the group Stable with both members' contiguous ranges, current and target.
#[test]
fn consumer_group_describe_through_the_handlers() {
    broker::pending::block_on(async {
        let cluster = open(&device()).await;
        cluster.create_topic("t", 4, &BTreeMap::new(), false).await.unwrap();
        let topic_id = uuid::Uuid::from_bytes(cluster.topic("t").unwrap().id);
        let mut state: BTreeMap<&str, (i32, Vec<(uuid::Uuid, Vec<i32>)>)> = BTreeMap::from([("a", (0, vec![])), ("b", (0, vec![]))]);
        for _ in 0..5 {
            for (member_id, (epoch, owned)) in state.iter_mut() {
                let answer = consumer_heartbeat(&cluster, member_id, *epoch, owned).await;
                assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
                *epoch = answer.member_epoch;
                if let Some(assignment) = answer.assignment {
                    *owned = assignment.topic_partitions.iter().map(|t| (t.topic_id, t.partitions.clone())).collect();
                }
            }
        }
        assert_eq!(state["a"].1, vec![(topic_id, vec![0, 1])]);
        assert_eq!(state["b"].1, vec![(topic_id, vec![2, 3])]);

        assert_eq!(commit(&cluster, 8, "classic", "t", &[(0, 1)], "m").await, vec![0]);
        let described = consumer_describe(&cluster, 1, &["kip848", "nope", "classic"], true).await;
        assert_eq!(described.len(), 3);
        let group = &described[0];
        assert_eq!((group.error_code, &*group.group_id.0, &*group.group_state), (0, "kip848", "Stable"));
        assert_eq!((&*group.assignor_name, group.assignment_epoch), ("range", group.group_epoch));
        assert_eq!(group.authorized_operations, (1 << 3) | (1 << 6) | (1 << 8), "as DescribeGroups answers");
        assert_eq!(group.members.len(), 2);
        for (member, expected) in group.members.iter().zip([vec![0, 1], vec![2, 3]]) {
            assert_eq!(member.member_epoch, state[&*member.member_id].0);
            assert_eq!(member.subscribed_topic_names, vec![TopicName(text("t"))]);
            assert_eq!(member.member_type, 1);
            for assignment in [&member.assignment, &member.target_assignment] {
                assert_eq!(assignment.topic_partitions.len(), 1);
                let partitions = &assignment.topic_partitions[0];
                assert_eq!((partitions.topic_id, &*partitions.topic_name.0, &partitions.partitions), (topic_id, "t", &expected));
            }
        }
        assert_eq!(described[1].error_code, ResponseError::GroupIdNotFound.code());
        assert_eq!(described[1].error_message.as_deref(), Some("Group nope not found."));
        assert_eq!(described[2].error_code, ResponseError::GroupIdNotFound.code());
        assert_eq!(described[2].error_message.as_deref(), Some("Group classic is not a consumer group."));

        // v0: no member type; operations omitted unless asked for.
        let described = consumer_describe(&cluster, 0, &["kip848"], false).await;
        assert_eq!((described[0].authorized_operations, described[0].members[0].member_type), (i32::MIN, -1));

        // A third member: the target moves at once, the current assignments follow by heartbeats.
        let joined = consumer_heartbeat(&cluster, "c", 0, &[]).await;
        assert_eq!(joined.error_code, 0);
        let described = consumer_describe(&cluster, 1, &["kip848"], false).await;
        let group = &described[0];
        assert_eq!(&*group.group_state, "Reconciling");
        let targets: Vec<Vec<i32>> = group
            .members
            .iter()
            .map(|m| m.target_assignment.topic_partitions.iter().flat_map(|t| t.partitions.clone()).collect())
            .collect();
        assert_eq!(targets, vec![vec![0, 1], vec![2], vec![3]]);
    });
}

/// A device whose flushes wait while its gate is closed: a device that fsyncs very slowly.
struct GatedDevice {
    inner: Arc<dyn ZonedDevice>,
    /// `Some` while closed: the flushes held back.
    held: std::sync::Mutex<Option<Vec<broker::pending::Completer<()>>>>,
}

impl GatedDevice {
    fn close(&self) {
        self.held.lock().unwrap().get_or_insert_with(Vec::new);
    }

    fn open(&self) {
        for held in self.held.lock().unwrap().take().unwrap_or_default() {
            held.complete(self.inner.flush().wait());
        }
    }
}

impl ZonedDevice for GatedDevice {
    fn geometry(&self) -> broker::zone::ZoneGeometry {
        self.inner.geometry()
    }
    fn report_zones(&self) -> Vec<broker::zone::ZoneInfo> {
        self.inner.report_zones()
    }
    fn zone(&self, zone: broker::zone::ZoneId) -> std::io::Result<broker::zone::ZoneInfo> {
        self.inner.zone(zone)
    }
    fn write(&self, zone: broker::zone::ZoneId, offset_bytes: u64, buf: broker::buf::AlignedBuf) -> broker::pending::Pending<broker::buf::AlignedBuf> {
        self.inner.write(zone, offset_bytes, buf)
    }
    fn read_into(&self, zone: broker::zone::ZoneId, offset_bytes: u64, buf: broker::buf::AlignedBuf, len_bytes: usize) -> broker::pending::Pending<broker::buf::AlignedBuf> {
        self.inner.read_into(zone, offset_bytes, buf, len_bytes)
    }
    fn flush(&self) -> broker::pending::Pending<()> {
        let mut held = self.held.lock().unwrap();
        match held.as_mut() {
            Some(held) => {
                let (completer, pending) = broker::pending::Pending::channel();
                held.push(completer);
                pending
            }
            None => self.inner.flush(),
        }
    }
    fn open(&self, zone: broker::zone::ZoneId) -> std::io::Result<()> {
        self.inner.open(zone)
    }
    fn close(&self, zone: broker::zone::ZoneId) -> std::io::Result<()> {
        self.inner.close(zone)
    }
    fn finish(&self, zone: broker::zone::ZoneId) -> broker::pending::Pending<()> {
        self.inner.finish(zone)
    }
    fn reset(&self, zone: broker::zone::ZoneId) -> broker::pending::Pending<()> {
        self.inner.reset(zone)
    }
    fn describe(&self) -> String {
        format!("gated {}", self.inner.describe())
    }
}

fn group_join(member_id: &str) -> broker::group::JoinRequest {
    broker::group::JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        session_timeout_ms: 200,
        rebalance_timeout_ms: 60_000,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

/// Issue 12's timer starvation: session expiry, the join phase it completes and the answers
/// to parked requests must not wait for the group log. Here no flush completes (a device
/// behind a long fsync queue, a compaction, a stuck write): a member's session still ends, the
/// survivor still gets generation 2 at once, and the generation record is written once the
/// device flushes again.
#[test]
fn the_group_clock_runs_while_the_group_log_cannot_flush() {
    broker::pending::block_on(async {
        let gated = Arc::new(GatedDevice { inner: device(), held: std::sync::Mutex::new(None) });
        let device: Arc<dyn ZonedDevice> = gated.clone();
        let recovered = LogStore::open(device.clone(), LogConfig::default()).await.unwrap();
        let config = broker::group::GroupConfig { session_timeout_min_ms: 10, initial_rebalance_delay_ms: 0, ..Default::default() };
        let cluster = Cluster::open_with_groups(recovered.store, recovered.partitions, BrokerConfig::default(), config).await.unwrap();
        let groups = cluster.groups();
        let a = groups.join(group_join("")).await.member_id;
        assert_eq!(groups.join(group_join(&a)).await.generation_id, 1);
        let sync = |member: &str, generation| broker::group::SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        };
        assert_eq!(groups.sync(sync(&a, 1)).await.error, None);
        // A committed offset keeps the group across the reopen below (idle groups are dropped).
        cluster.create_topic("t", 1, &BTreeMap::new(), false).await.unwrap();
        assert_eq!(commit(&cluster, 8, "g", "t", &[(0, 5)], "").await, vec![0]);

        gated.close();
        // b arrives and a must rejoin, but a's process is gone: its session (200 ms) ends the
        // join phase. A watchdog opens the gate after 3 s, so a clock that waits for the log
        // makes this test fail rather than hang.
        let forced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let (gated, forced) = (gated.clone(), forced.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(3));
                if gated.held.lock().unwrap().is_some() {
                    forced.store(true, std::sync::atomic::Ordering::SeqCst);
                    gated.open();
                }
            })
        };
        let b = groups.join(group_join("")).await.member_id;
        let started = std::time::Instant::now();
        let clock = async {
            while groups.coordinator().group("g").unwrap().state() == broker::group::GroupState::PreparingRebalance {
                std::thread::sleep(std::time::Duration::from_millis(20));
                // The server's timer: a tick, and the log writes started on a task of their own
                // (here: not started at all, as no flush can complete).
                groups.tick();
            }
        };
        let (answer, ()) = tokio::join!(groups.join(group_join(&b)), clock);
        assert_eq!((answer.error, answer.generation_id, answer.leader.as_str()), (None, 2, b.as_str()));
        assert!(!forced.load(std::sync::atomic::Ordering::SeqCst), "the clock waited {:?} for the group log", started.elapsed());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));

        // The generation records are queued; written once the device flushes again.
        assert!(groups.start_persisting());
        assert!(!groups.start_persisting(), "one writer at a time");
        gated.open();
        groups.persist_queued().await;
        assert!(!groups.start_persisting(), "nothing left to write");
        watchdog.join().unwrap();
        drop(cluster);
        let reopened = open(&device).await;
        assert_eq!(reopened.groups().coordinator().group("g").map(|g| g.generation_id), Some(2));
    });
}

/// Kafka's offsets.commit.timeout.ms: an OffsetCommit whose write cannot become durable (a
/// group log behind a long fsync queue) is answered REQUEST_TIMED_OUT at the commit timeout,
/// rather than holding its connection (and the member's heartbeats behind it) until the device
/// flushes; the write goes on, and its offset applies once durable, never before.
#[test]
fn an_offset_commit_is_answered_at_the_commit_timeout_and_its_write_goes_on() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let gated = Arc::new(GatedDevice { inner: device(), held: std::sync::Mutex::new(None) });
        let device: Arc<dyn ZonedDevice> = gated.clone();
        let recovered = LogStore::open(device.clone(), LogConfig::default()).await.unwrap();
        let config = broker::group::GroupConfig { offset_commit_timeout_ms: 300, ..Default::default() };
        let cluster = Cluster::open_with_groups(recovered.store, recovered.partitions, BrokerConfig::default(), config).await.unwrap();
        cluster.create_topic("t", 1, &BTreeMap::new(), false).await.unwrap();
        assert_eq!(commit(&cluster, 8, "g", "t", &[(0, 5)], "").await, vec![0]);

        gated.close();
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), commit(&cluster, 8, "g", "t", &[(0, 7)], "")).await;
        let waited = started.elapsed();
        assert_eq!(answer.expect("answered while the group log cannot flush"), vec![ResponseError::RequestTimedOut.code()]);
        assert!(waited >= std::time::Duration::from_millis(300), "answered before the commit timeout: {waited:?}");
        assert_eq!(fetch(&cluster, "g", "t").await.get(&0).map(|(offset, _)| *offset), Some(5), "applied before it was durable");

        gated.open();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fetch(&cluster, "g", "t").await.get(&0).map(|(offset, _)| *offset) != Some(7) {
            assert!(std::time::Instant::now() < deadline, "the timed-out commit's write did not go on");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The writing task holds the cluster until it has ended.
        while Arc::strong_count(&cluster) > 1 {
            assert!(std::time::Instant::now() < deadline, "the writing task did not end");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(cluster);
        let reopened = open(&device).await;
        assert_eq!(fetch(&reopened, "g", "t").await.get(&0).map(|(offset, _)| *offset), Some(7));
    });
}
