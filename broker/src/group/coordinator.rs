//! The classic consumer group protocol as a pure state machine, sans I/O: requests and a clock
//! in, answers out. JoinGroup and SyncGroup are long polls, so their answers are `Output`s
//! addressed to the `Ticket` the caller gave with the request; the async layer (`group::Groups`)
//! parks a oneshot per ticket and delivers. Timers are the caller's `tick(now_ms)`.
//!
//! States follow Kafka's `ClassicGroup`: Empty -> PreparingRebalance (members join) ->
//! CompletingRebalance (the leader computes the assignment) -> Stable (SyncGroup delivered it).
//! A group that is gone is simply absent (Kafka's Dead).
//!
//! Durable state (committed offsets, generation) changes only through `apply`, with a
//! `GroupRecord` the store has made durable first, so memory never runs ahead of the log.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::consumer::{self, ConsumerGroup};
use super::store::{GroupRecord, OffsetRecord};

/// Identifies a parked JoinGroup or SyncGroup request.
pub type Ticket = u64;

/// Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms defaults.
pub const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
pub const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Kafka's group.initial.rebalance.delay.ms default: a new group waits this long for more
/// members before its first generation, so that a fleet starting together gets one rebalance.
pub const INITIAL_REBALANCE_DELAY_MS: i64 = 3_000;
/// Groups this coordinator holds (Kafka has no limit; memory is ours to bound).
pub const GROUPS_MAX: usize = 10_000;
/// Kafka's group.max.size is unlimited by default; a bound keeps a join storm finite.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// Group ids longer than this are INVALID_GROUP_ID (Kafka does not bound them; we must).
pub const GROUP_ID_BYTES_MAX: usize = 1_024;
/// Kafka's offset.metadata.max.bytes default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4_096;
/// Protocols one member may offer, and the bytes of their metadata together.
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 32;
pub const PROTOCOL_METADATA_BYTES_MAX: usize = 256 << 10;
/// Bytes of one member's assignment (the leader sends all of them in one SyncGroup).
pub const ASSIGNMENT_BYTES_MAX: usize = 1 << 20;
/// Committed partitions per group.
pub const OFFSETS_PER_GROUP_MAX: usize = 100_000;
/// Kafka's offsets.commit.timeout.ms default: the longest an OffsetCommit waits for its write to
/// become durable before it is answered REQUEST_TIMED_OUT (the write goes on).
pub const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub groups_max: usize,
    pub members_per_group_max: usize,
    /// KIP-848 groups' session timeout (Kafka's group.consumer.session.timeout.ms).
    pub consumer_session_timeout_ms: i64,
    /// Kafka's offsets.commit.timeout.ms (see OFFSET_COMMIT_TIMEOUT_MS).
    pub offset_commit_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout_min_ms: SESSION_TIMEOUT_MIN_MS,
            session_timeout_max_ms: SESSION_TIMEOUT_MAX_MS,
            initial_rebalance_delay_ms: INITIAL_REBALANCE_DELAY_MS,
            groups_max: GROUPS_MAX,
            members_per_group_max: MEMBERS_PER_GROUP_MAX,
            consumer_session_timeout_ms: consumer::SESSION_TIMEOUT_MS,
            offset_commit_timeout_ms: OFFSET_COMMIT_TIMEOUT_MS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The state's name as Kafka reports it (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    heartbeat_deadline_ms: i64,
    join_ticket: Option<Ticket>,
    sync_ticket: Option<Ticket>,
    /// Whether the member sent SyncGroup for the current generation (Kafka's pending sync
    /// members are those that have not): false from the end of a join phase until then.
    synced: bool,
}

impl Member {
    /// Takes the member's parked SyncGroup, whose answer is about to go out. Its session starts
    /// again from now, as Kafka's `completeAndScheduleNextHeartbeatExpiration` after
    /// propagating an assignment: the member was not expected to heartbeat while it waited, so
    /// a wait longer than its session (a slow leader) must not expire it before its next
    /// heartbeat can arrive.
    fn take_sync_ticket(&mut self, now_ms: i64) -> Option<Ticket> {
        let ticket = self.sync_ticket.take()?;
        self.heartbeat_deadline_ms = self.heartbeat_deadline_ms.max(now_ms + i64::from(self.session_timeout_ms));
        Some(ticket)
    }

    /// The metadata the member gave for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, metadata)| metadata)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic_id: [u8; 16],
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug)]
pub struct Group {
    pub group_id: String,
    state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id of the static members.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or their session ends.
    pending_members: BTreeMap<String, i64>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets committed with a transaction still open, by producer id (TxnOffsetCommit).
    pending_txn_offsets: BTreeMap<i64, Vec<OffsetRecord>>,
    rebalance_deadline_ms: Option<i64>,
    /// While a new group waits for more members (INITIAL_REBALANCE_DELAY_MS).
    initial_delay_deadline_ms: Option<i64>,
    /// When members that have not sent SyncGroup for this generation are removed (Kafka's
    /// pending sync timeout): in CompletingRebalance, and in Stable while a member that got its
    /// JoinGroup answer has not synced (it heartbeats, but has no assignment and fetches nothing).
    sync_deadline_ms: Option<i64>,
}

impl Group {
    fn new(group_id: &str) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            offsets: BTreeMap::new(),
            pending_txn_offsets: BTreeMap::new(),
            rebalance_deadline_ms: None,
            initial_delay_deadline_ms: None,
            sync_deadline_ms: None,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn offsets(&self) -> &BTreeMap<(String, i32), CommittedOffset> {
        &self.offsets
    }

    /// Offsets committed with transactions still open, by producer id.
    pub fn pending_txn_offsets(&self) -> &BTreeMap<i64, Vec<OffsetRecord>> {
        &self.pending_txn_offsets
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    /// Whether a member with the consumer protocol subscribes to `topic` (OffsetDelete refuses
    /// then). Metadata that does not parse counts as subscribed: refusing is the safe answer.
    pub fn subscribed_to(&self, topic: &str) -> bool {
        let Some(protocol) = self.protocol_name.as_deref() else {
            return false;
        };
        self.members.values().any(|member| match member.metadata(protocol) {
            Some(metadata) => consumer_subscription_topics(metadata).map_or(true, |topics| topics.iter().any(|t| t == topic)),
            None => true,
        })
    }

    fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Result<(), ResponseError> {
        match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(ResponseError::UnknownMemberId),
                Some(known) if known != member_id => Err(ResponseError::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// Whether every member offers `protocol_type` and one protocol all others offer too.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| self.members.values().all(|member| member.metadata(name).is_some()))
    }

    /// Kafka's vote: among the protocols every member offers, each member votes for the first
    /// in its own order of preference; most votes wins (ties: the first voted).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.values().all(|member| member.metadata(name).is_some()))
            .collect();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|name| (*name, 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| candidates.contains(&name.as_str())) {
                if let Some(vote) = votes.iter_mut().find(|(candidate, _)| candidate == name) {
                    vote.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, count)| *count).max()?;
        votes.iter().find(|(_, count)| *count == best).map(|(name, _)| name.to_string())
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|member| i64::from(member.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.pending_txn_offsets.is_empty()
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// v4+: a dynamic member must first get its id with MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// An answer with only an error (generation -1, no members).
    pub(crate) fn error(error: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ResponseError) -> SyncResponse {
        SyncResponse { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// What the state machine asks of the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Join(Ticket, JoinResponse),
    Sync(Ticket, SyncResponse),
    /// A record to make durable (a new generation); not awaited by any request.
    Persist(GroupRecord),
}

pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// KIP-848 groups with members; their offsets are kept in `groups` (an Empty group).
    consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// Member ids are `<client id or instance id>-<nonce><sequence>`: unique for this broker's
    /// life (the nonce differs per start) without randomness inside the state machine.
    member_id_nonce: u64,
    member_id_sequence: u64,
}

impl Coordinator {
    pub fn new(config: GroupConfig, member_id_nonce: u64) -> Coordinator {
        assert!(config.session_timeout_min_ms <= config.session_timeout_max_ms);
        assert!(config.members_per_group_max > 0 && config.groups_max > 0);
        assert!((consumer::SESSION_TIMEOUT_MIN_MS..=consumer::SESSION_TIMEOUT_MAX_MS).contains(&config.consumer_session_timeout_ms));
        Coordinator { config, groups: BTreeMap::new(), consumer_groups: BTreeMap::new(), member_id_nonce, member_id_sequence: 0 }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn consumer_group(&self, group_id: &str) -> Option<&ConsumerGroup> {
        self.consumer_groups.get(group_id)
    }

    pub fn consumer_groups(&self) -> impl Iterator<Item = &ConsumerGroup> {
        self.consumer_groups.values()
    }

    /// ConsumerGroupHeartbeat (KIP-848). `topics`: every topic by name, with id and partitions.
    pub fn consumer_heartbeat(
        &mut self,
        request: consumer::HeartbeatRequest,
        topics: &BTreeMap<String, ([u8; 16], i32)>,
        now_ms: i64,
    ) -> consumer::HeartbeatResponse {
        let refuse = |error| consumer::HeartbeatResponse {
            error: Some(error),
            error_message: None,
            member_id: request.member_id.clone(),
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: consumer::HEARTBEAT_INTERVAL_MS,
            assignment: None,
        };
        if let Err(error) = validate_group_id(&request.group_id) {
            return refuse(error);
        }
        if self.groups.get(&request.group_id).is_some_and(|group| !group.members.is_empty() || !group.pending_members.is_empty()) {
            // A classic group with members: not a consumer group (Kafka's answer).
            return refuse(ResponseError::GroupIdNotFound);
        }
        if !self.consumer_groups.contains_key(&request.group_id) {
            if request.member_epoch != 0 {
                return refuse(ResponseError::UnknownMemberId);
            }
            if self.groups.len() + self.consumer_groups.len() >= self.config.groups_max {
                return refuse(ResponseError::CoordinatorNotAvailable);
            }
            self.consumer_groups.insert(request.group_id.clone(), ConsumerGroup::with_session_timeout(&request.group_id, self.config.consumer_session_timeout_ms));
        }
        // Only a v0 join needs a name from us (v1 clients bring their own).
        let new_member_id =
            if request.member_epoch == 0 && request.member_id.is_empty() { self.new_member_id(&request.client_id) } else { String::new() };
        let group_id = request.group_id.clone();
        let members_max = self.config.members_per_group_max;
        let group = self.consumer_groups.get_mut(&group_id).expect("inserted above");
        let response = group.heartbeat(request, || new_member_id, topics, members_max, now_ms);
        if group.members.is_empty() {
            self.consumer_groups.remove(&group_id);
        }
        response
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.member_id_sequence += 1;
        // Client ids come from clients: keep the prefix short and printable.
        let prefix: String = prefix.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        format!("{prefix}-{:016x}{:08x}", self.member_id_nonce, self.member_id_sequence)
    }

    pub fn join(&mut self, request: JoinRequest, ticket: Ticket, now_ms: i64, outputs: &mut Vec<Output>) {
        let result = self.join_inner(request.clone(), ticket, now_ms, outputs);
        self.trace(&request.group_id, &request.member_id, ticket, "JoinGroup", None, result);
        if let Err(error) = result {
            outputs.push(Output::Join(ticket, JoinResponse::error(error, &request.member_id)));
        }
    }

    /// A debug line per group request and what it found (`RUST_LOG=broker::group=debug`): what
    /// a stalled rebalance is diagnosed from.
    fn trace(&self, group_id: &str, member_id: &str, ticket: Ticket, request: &str, generation: Option<i32>, result: Result<(), ResponseError>) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let group = self.groups.get(group_id);
        tracing::debug!(
            group = %group_id,
            member = %member_id,
            ticket,
            request,
            request_generation = generation,
            generation = group.map(|g| g.generation_id),
            state = group.map(|g| g.state.name()),
            members = group.map(|g| g.members.len()),
            error = ?result.err(),
            "group request"
        );
    }

    fn join_inner(&mut self, request: JoinRequest, ticket: Ticket, now_ms: i64, outputs: &mut Vec<Output>) -> Result<(), ResponseError> {
        validate_group_id(&request.group_id)?;
        if !(self.config.session_timeout_min_ms..=self.config.session_timeout_max_ms).contains(&request.session_timeout_ms) {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        let metadata_bytes: usize = request.protocols.iter().map(|(name, metadata)| name.len() + metadata.len()).sum();
        if request.protocols.len() > PROTOCOLS_PER_MEMBER_MAX || metadata_bytes > PROTOCOL_METADATA_BYTES_MAX {
            return Err(ResponseError::InvalidRequest);
        }
        if self.consumer_groups.contains_key(&request.group_id) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(ResponseError::UnknownMemberId);
            }
            if self.groups.len() >= self.config.groups_max {
                tracing::warn!(groups = self.groups.len(), "group limit reached; refusing a new group");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            self.groups.insert(request.group_id.clone(), Group::new(&request.group_id));
        }
        let members_max = self.config.members_per_group_max;
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get(&request.group_id).expect("inserted above");
        if !group.supports(&request.protocol_type, &request.protocols) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }

        if request.member_id.is_empty() {
            let prefix = request.group_instance_id.clone().unwrap_or_else(|| request.client_id.clone());
            let existing_static = request.group_instance_id.as_ref().and_then(|instance| group.static_members.get(instance).cloned());
            if let Some(old_member_id) = existing_static {
                let new_member_id = self.new_member_id(&prefix);
                let group = self.groups.get_mut(&request.group_id).expect("exists");
                replace_static_member(group, &old_member_id, &new_member_id, &request, ticket, now_ms, outputs);
                return Ok(());
            }
            if group.members.len() + group.pending_members.len() >= members_max {
                return Err(ResponseError::GroupMaxSizeReached);
            }
            let member_id = self.new_member_id(&prefix);
            let group = self.groups.get_mut(&request.group_id).expect("exists");
            if request.group_instance_id.is_none() && request.require_known_member_id {
                // KIP-394: the id is handed out first, so a client that times out and retries
                // does not leave a ghost member behind for a whole session.
                group.pending_members.insert(member_id.clone(), now_ms + i64::from(request.session_timeout_ms));
                outputs.push(Output::Join(ticket, JoinResponse::error(ResponseError::MemberIdRequired, &member_id)));
                return Ok(());
            }
            add_member(group, member_id, &request, ticket, now_ms, initial_delay_ms, outputs);
            return Ok(());
        }

        let group = self.groups.get_mut(&request.group_id).expect("exists");
        if group.pending_members.remove(&request.member_id).is_some() {
            add_member(group, request.member_id.clone(), &request, ticket, now_ms, initial_delay_ms, outputs);
            return Ok(());
        }
        if !group.members.contains_key(&request.member_id) {
            let fenced = request.group_instance_id.as_ref().is_some_and(|instance| group.static_members.contains_key(instance));
            return Err(if fenced { ResponseError::FencedInstanceId } else { ResponseError::UnknownMemberId });
        }
        group.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
        let member = group.members.get_mut(&request.member_id).expect("checked");
        let protocols_changed = member.protocols != request.protocols;
        update_member(member, &request, now_ms);
        if let Some(previous) = member.join_ticket.replace(ticket) {
            // A retried JoinGroup replaces the one still parked (its connection is gone).
            outputs.push(Output::Join(previous, JoinResponse::error(ResponseError::RebalanceInProgress, &request.member_id)));
        }
        match group.state {
            GroupState::PreparingRebalance => maybe_complete_join(group, now_ms, outputs),
            GroupState::CompletingRebalance | GroupState::Stable => {
                let is_leader = group.leader_id.as_deref() == Some(request.member_id.as_str());
                let restart = protocols_changed || (group.state == GroupState::Stable && is_leader);
                if restart {
                    prepare_rebalance(group, now_ms, 0, outputs);
                    maybe_complete_join(group, now_ms, outputs);
                } else {
                    // Nothing changed: answer with the current generation (the leader gets the
                    // members again in CompletingRebalance, as its first answer may be lost).
                    let member = group.members.get_mut(&request.member_id).expect("checked");
                    member.join_ticket = None;
                    let with_members = is_leader && group.state == GroupState::CompletingRebalance;
                    outputs.push(Output::Join(ticket, join_answer(group, &request.member_id, with_members, false)));
                }
            }
            GroupState::Empty => {
                // A group with members is never Empty (every path that adds one rebalances).
                debug_assert!(false, "group {} is Empty with members", group.group_id);
                return Err(ResponseError::UnknownMemberId);
            }
        }
        Ok(())
    }

    pub fn sync(&mut self, request: SyncRequest, ticket: Ticket, now_ms: i64, outputs: &mut Vec<Output>) {
        let (group_id, member_id, generation) = (request.group_id.clone(), request.member_id.clone(), request.generation_id);
        let result = self.sync_inner(request, ticket, now_ms, outputs);
        self.trace(&group_id, &member_id, ticket, "SyncGroup", Some(generation), result);
        if let Err(error) = result {
            outputs.push(Output::Sync(ticket, SyncResponse::error(error)));
        }
    }

    fn sync_inner(&mut self, request: SyncRequest, ticket: Ticket, now_ms: i64, outputs: &mut Vec<Output>) -> Result<(), ResponseError> {
        let group = self.groups.get_mut(&request.group_id).ok_or(ResponseError::UnknownMemberId)?;
        group.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation_id != group.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        if request.protocol_type.as_ref().is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || request.protocol_name.as_ref().is_some_and(|n| Some(n) != group.protocol_name.as_ref())
        {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("validated");
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                member.synced = true;
                if group.members.values().all(|member| member.synced) {
                    group.sync_deadline_ms = None;
                }
                outputs.push(Output::Sync(ticket, sync_answer(group, &request.member_id)));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader_id.as_deref() == Some(request.member_id.as_str());
                if is_leader && request.assignments.iter().any(|(_, assignment)| assignment.len() > ASSIGNMENT_BYTES_MAX) {
                    return Err(ResponseError::InvalidRequest);
                }
                let member = group.members.get_mut(&request.member_id).expect("validated");
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                member.synced = true;
                if let Some(previous) = member.sync_ticket.replace(ticket) {
                    outputs.push(Output::Sync(previous, SyncResponse::error(ResponseError::RebalanceInProgress)));
                }
                if is_leader {
                    for member in group.members.values_mut() {
                        member.assignment = Bytes::new();
                    }
                    for (member_id, assignment) in request.assignments {
                        if let Some(member) = group.members.get_mut(&member_id) {
                            member.assignment = assignment;
                        }
                    }
                    group.state = GroupState::Stable;
                    if group.members.values().all(|member| member.synced) {
                        group.sync_deadline_ms = None;
                    }
                    let waiting: Vec<(String, Ticket)> = group
                        .members
                        .values_mut()
                        .filter_map(|member| member.take_sync_ticket(now_ms).map(|ticket| (member.member_id.clone(), ticket)))
                        .collect();
                    tracing::debug!(
                        group = %group.group_id,
                        generation = group.generation_id,
                        assignment_bytes = ?group.members.values().map(|m| (m.member_id.as_str(), m.assignment.len())).collect::<Vec<_>>(),
                        "the leader's assignment: Stable"
                    );
                    for (member_id, ticket) in waiting {
                        outputs.push(Output::Sync(ticket, sync_answer(group, &member_id)));
                    }
                }
                Ok(())
            }
        }
    }

    pub fn heartbeat(&mut self, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32, now_ms: i64) -> Result<(), ResponseError> {
        let result = self.heartbeat_inner(group_id, member_id, group_instance_id, generation_id, now_ms);
        self.trace(group_id, member_id, 0, "Heartbeat", Some(generation_id), result);
        result
    }

    fn heartbeat_inner(&mut self, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32, now_ms: i64) -> Result<(), ResponseError> {
        let group = self.groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        group.validate_member(member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        let member = group.members.get_mut(member_id).expect("validated");
        member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match group.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup: one result per member, or an error for the whole request.
    pub fn leave(
        &mut self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
        outputs: &mut Vec<Output>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let group = self.groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, group_instance_id) in leaving {
            let target = match group_instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(ResponseError::UnknownMemberId),
                    // An empty member id (admin client's removeMembersFromConsumerGroup) names
                    // the instance whatever its current member id.
                    Some(known) if !member_id.is_empty() && known != member_id => Err(ResponseError::FencedInstanceId),
                    Some(known) => Ok(known.clone()),
                },
                None => {
                    if group.pending_members.remove(member_id).is_some() {
                        results.push(None);
                        maybe_complete_join(group, now_ms, outputs);
                        continue;
                    }
                    if group.members.contains_key(member_id) { Ok(member_id.clone()) } else { Err(ResponseError::UnknownMemberId) }
                }
            };
            match target {
                Ok(member_id) => {
                    remove_member(group, &member_id, now_ms, outputs);
                    results.push(None);
                }
                Err(error) => results.push(Some(error)),
            }
        }
        Ok(results)
    }

    /// Checks an OffsetCommit against the group, as Kafka's `validateOffsetCommit`. A commit
    /// with a negative generation and no member (a consumer that assigns its own partitions,
    /// or an admin client) is allowed while the group has no members.
    pub fn validate_commit(&self, group_id: &str, generation_id: i32, member_id: &str, group_instance_id: Option<&str>) -> Result<(), ResponseError> {
        validate_group_id(group_id)?;
        if let Some(consumer_group) = self.consumer_groups.get(group_id) {
            return consumer_group.validate_commit(member_id, generation_id);
        }
        let Some(group) = self.groups.get(group_id) else {
            if generation_id >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
            if self.groups.len() >= self.config.groups_max {
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            return Ok(());
        };
        if generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            group.validate_member(member_id, group_instance_id)?;
            if generation_id != group.generation_id {
                return Err(ResponseError::IllegalGeneration);
            }
            if group.state == GroupState::CompletingRebalance {
                // The member has the new generation but not its assignment yet.
                return Err(ResponseError::RebalanceInProgress);
            }
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Whether `group_id` can hold `new_keys` more committed partitions (OFFSETS_PER_GROUP_MAX).
    pub fn has_room_for_offsets(&self, group_id: &str, keys: &[(String, i32)]) -> bool {
        let Some(group) = self.groups.get(group_id) else {
            return keys.len() <= OFFSETS_PER_GROUP_MAX;
        };
        let new_keys = keys.iter().filter(|(topic, partition)| !group.offsets.contains_key(&(topic.clone(), *partition))).count();
        group.offsets.len() + new_keys <= OFFSETS_PER_GROUP_MAX
    }

    /// Whether a group may be deleted (DeleteGroups): it exists and has no members.
    pub fn validate_delete(&self, group_id: &str) -> Result<(), ResponseError> {
        validate_group_id(group_id)?;
        if self.consumer_groups.contains_key(group_id) {
            return Err(ResponseError::NonEmptyGroup);
        }
        let group = self.groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if group.state != GroupState::Empty || !group.members.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        Ok(())
    }

    /// Applies a durable record (at start, replaying the log; later, once a write is durable).
    pub fn apply(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::OffsetCommit { group, offsets } => {
                let group = self.groups.entry(group.clone()).or_insert_with(|| Group::new(group));
                for OffsetRecord { topic, topic_id, partition, offset, leader_epoch, metadata, commit_timestamp_ms } in offsets {
                    let Some(topic_id) = crate::cluster::metadata::topic_id_from_hex(topic_id) else { continue };
                    let key = (topic.clone(), *partition);
                    if group.offsets.len() >= OFFSETS_PER_GROUP_MAX && !group.offsets.contains_key(&key) {
                        // OffsetCommit checks the room first; only a log written with a larger
                        // limit gets here.
                        tracing::warn!(group = %group.group_id, "committed offsets beyond the per-group limit dropped");
                        continue;
                    }
                    group.offsets.insert(
                        key,
                        CommittedOffset {
                            topic_id,
                            offset: *offset,
                            leader_epoch: *leader_epoch,
                            metadata: metadata.clone(),
                            commit_timestamp_ms: *commit_timestamp_ms,
                        },
                    );
                }
            }
            GroupRecord::TxnOffsetCommit { group, producer_id, offsets } => {
                let group = self.groups.entry(group.clone()).or_insert_with(|| Group::new(group));
                group.pending_txn_offsets.entry(*producer_id).or_default().extend(offsets.iter().cloned());
            }
            GroupRecord::TxnOffsetEnd { group, producer_id, commit } => {
                let pending = self.groups.get_mut(group).and_then(|found| found.pending_txn_offsets.remove(producer_id));
                if let (Some(offsets), true) = (pending, *commit) {
                    self.apply(&GroupRecord::OffsetCommit { group: group.clone(), offsets });
                }
            }
            GroupRecord::OffsetDelete { group, partitions } => {
                if let Some(group) = self.groups.get_mut(group) {
                    for (topic, partition) in partitions {
                        group.offsets.remove(&(topic.clone(), *partition));
                    }
                }
            }
            GroupRecord::GroupMetadata { group, protocol_type, generation_id } => {
                let group = self.groups.entry(group.clone()).or_insert_with(|| Group::new(group));
                if *generation_id > group.generation_id {
                    group.generation_id = *generation_id;
                }
                if group.members.is_empty() && protocol_type.is_some() {
                    group.protocol_type = protocol_type.clone();
                }
            }
            GroupRecord::GroupDelete { group } => {
                if let Some(existing) = self.groups.get_mut(group) {
                    existing.offsets.clear();
                    if existing.is_idle() {
                        self.groups.remove(group);
                    }
                }
            }
        }
    }

    /// Drops committed offsets of a topic that no longer exists (or was recreated: a different
    /// id). `keep(topic, topic_id)` says whether an offset's topic is still the same.
    pub fn retain_offsets(&mut self, mut keep: impl FnMut(&str, &[u8; 16]) -> bool) {
        for group in self.groups.values_mut() {
            group.offsets.retain(|(topic, _), committed| keep(topic, &committed.topic_id));
        }
        self.groups.retain(|_, group| !group.is_idle());
    }

    /// `retain_offsets` for one group.
    pub fn retain_group_offsets(&mut self, group_id: &str, mut keep: impl FnMut(&str, &[u8; 16]) -> bool) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.offsets.retain(|(topic, _), committed| keep(topic, &committed.topic_id));
        }
    }

    /// The earliest deadline of any group, for the timer (None: nothing is timed).
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let classic = self.groups.values().flat_map(group_deadlines).min();
        let consumer = self.consumer_groups.values().filter_map(ConsumerGroup::next_deadline_ms).min();
        classic.into_iter().chain(consumer).min()
    }

    /// Expires sessions, pending member ids, join and sync phases.
    pub fn tick(&mut self, now_ms: i64, outputs: &mut Vec<Output>) {
        for group in self.groups.values_mut() {
            let expired_pending: Vec<String> =
                group.pending_members.iter().filter(|(_, deadline)| **deadline <= now_ms).map(|(id, _)| id.clone()).collect();
            for member_id in expired_pending {
                group.pending_members.remove(&member_id);
            }
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|member| member.join_ticket.is_none() && member.sync_ticket.is_none() && member.heartbeat_deadline_ms <= now_ms)
                .map(|member| member.member_id.clone())
                .collect();
            for member_id in expired {
                tracing::info!(group = %group.group_id, member = %member_id, "session timed out; removing the member");
                remove_member(group, &member_id, now_ms, outputs);
            }
            let syncing = matches!(group.state, GroupState::CompletingRebalance | GroupState::Stable);
            if syncing && group.sync_deadline_ms.is_some_and(|deadline| deadline <= now_ms) {
                // Kafka's pending sync expiry: whoever has not sent SyncGroup for this
                // generation within the rebalance timeout is removed, whether or not the leader
                // has synced meanwhile, and the others rebalance without it.
                let unsynced: Vec<String> =
                    group.members.values().filter(|member| !member.synced).map(|member| member.member_id.clone()).collect();
                for member_id in &unsynced {
                    tracing::info!(group = %group.group_id, member = %member_id, generation = group.generation_id, state = group.state.name(), "no SyncGroup within the rebalance timeout; removing the member");
                    group.members.remove(member_id);
                    group.static_members.retain(|_, id| id != member_id);
                }
                group.sync_deadline_ms = None;
                if !unsynced.is_empty() {
                    prepare_rebalance(group, now_ms, 0, outputs);
                }
            }
            maybe_complete_join(group, now_ms, outputs);
        }
        self.groups.retain(|_, group| !group.is_idle());
        for group in self.consumer_groups.values_mut() {
            if group.expire(now_ms) {
                tracing::info!(group = %group.group_id, "consumer group member session timed out");
            }
        }
        self.consumer_groups.retain(|_, group| !group.members.is_empty());
    }
}

fn group_deadlines(group: &Group) -> Vec<i64> {
    let mut deadlines: Vec<i64> = group.pending_members.values().copied().collect();
    deadlines.extend(group.members.values().filter(|m| m.join_ticket.is_none() && m.sync_ticket.is_none()).map(|m| m.heartbeat_deadline_ms));
    deadlines.extend(group.rebalance_deadline_ms);
    deadlines.extend(group.initial_delay_deadline_ms);
    deadlines.extend(group.sync_deadline_ms);
    deadlines
}

pub fn validate_group_id(group_id: &str) -> Result<(), ResponseError> {
    if group_id.is_empty() || group_id.len() > GROUP_ID_BYTES_MAX {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

fn update_member(member: &mut Member, request: &JoinRequest, now_ms: i64) {
    member.protocols = request.protocols.clone();
    member.session_timeout_ms = request.session_timeout_ms;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    member.heartbeat_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
}

fn add_member(group: &mut Group, member_id: String, request: &JoinRequest, ticket: Ticket, now_ms: i64, initial_delay_ms: i64, outputs: &mut Vec<Output>) {
    let mut member = Member {
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.clone(),
        client_id: String::new(),
        client_host: String::new(),
        session_timeout_ms: 0,
        rebalance_timeout_ms: 0,
        protocols: Vec::new(),
        assignment: Bytes::new(),
        heartbeat_deadline_ms: 0,
        join_ticket: Some(ticket),
        sync_ticket: None,
        synced: false,
    };
    update_member(&mut member, request, now_ms);
    if group.members.is_empty() {
        group.protocol_type = Some(request.protocol_type.clone());
    }
    if let Some(instance) = &request.group_instance_id {
        group.static_members.insert(instance.clone(), member_id.clone());
    }
    group.members.insert(member_id, member);
    match group.state {
        GroupState::PreparingRebalance => {
            // A new group keeps waiting while members keep arriving (bounded by the rebalance
            // timeout), as Kafka's InitialDelayedJoin does.
            if let (Some(_), Some(rebalance_deadline)) = (group.initial_delay_deadline_ms, group.rebalance_deadline_ms) {
                group.initial_delay_deadline_ms = Some((now_ms + initial_delay_ms).min(rebalance_deadline));
            }
        }
        _ => prepare_rebalance(group, now_ms, initial_delay_ms, outputs),
    }
    maybe_complete_join(group, now_ms, outputs);
}

/// A static member restarted (same group.instance.id, no member id): the new incarnation takes
/// the old one's place and assignment; the old one is fenced. In a Stable group with the same
/// protocols this is no rebalance at all (KIP-345's point).
fn replace_static_member(group: &mut Group, old_member_id: &str, new_member_id: &str, request: &JoinRequest, ticket: Ticket, now_ms: i64, outputs: &mut Vec<Output>) {
    let mut member = group.members.remove(old_member_id).expect("static members are members");
    if let Some(previous) = member.join_ticket.take() {
        outputs.push(Output::Join(previous, JoinResponse::error(ResponseError::FencedInstanceId, old_member_id)));
    }
    if let Some(previous) = member.sync_ticket.take() {
        outputs.push(Output::Sync(previous, SyncResponse::error(ResponseError::FencedInstanceId)));
    }
    let protocols_changed = member.protocols != request.protocols;
    member.member_id = new_member_id.to_string();
    update_member(&mut member, request, now_ms);
    group.members.insert(new_member_id.to_string(), member);
    let instance = request.group_instance_id.clone().expect("static");
    group.static_members.insert(instance, new_member_id.to_string());
    let was_leader = group.leader_id.as_deref() == Some(old_member_id);
    if was_leader {
        group.leader_id = Some(new_member_id.to_string());
    }
    match group.state {
        GroupState::Stable if !protocols_changed => {
            // KIP-814 (JoinGroup v9): a returning leader is told to skip the assignment, and
            // gets the members so that it could check them.
            outputs.push(Output::Join(ticket, join_answer(group, new_member_id, was_leader, was_leader)));
        }
        GroupState::PreparingRebalance => {
            group.members.get_mut(new_member_id).expect("inserted").join_ticket = Some(ticket);
            maybe_complete_join(group, now_ms, outputs);
        }
        _ => {
            group.members.get_mut(new_member_id).expect("inserted").join_ticket = Some(ticket);
            prepare_rebalance(group, now_ms, 0, outputs);
            maybe_complete_join(group, now_ms, outputs);
        }
    }
}

fn remove_member(group: &mut Group, member_id: &str, now_ms: i64, outputs: &mut Vec<Output>) {
    let Some(member) = group.members.remove(member_id) else { return };
    if let Some(ticket) = member.join_ticket {
        outputs.push(Output::Join(ticket, JoinResponse::error(ResponseError::UnknownMemberId, member_id)));
    }
    if let Some(ticket) = member.sync_ticket {
        outputs.push(Output::Sync(ticket, SyncResponse::error(ResponseError::UnknownMemberId)));
    }
    if let Some(instance) = &member.group_instance_id {
        if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance);
        }
    }
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => prepare_rebalance(group, now_ms, 0, outputs),
        GroupState::PreparingRebalance | GroupState::Empty => {}
    }
    maybe_complete_join(group, now_ms, outputs);
}

/// Starts a rebalance: members must rejoin within the rebalance timeout. `initial_delay_ms`
/// applies to a group leaving Empty.
fn prepare_rebalance(group: &mut Group, now_ms: i64, initial_delay_ms: i64, outputs: &mut Vec<Output>) {
    if group.state == GroupState::CompletingRebalance {
        // The assignment being computed is for a generation that will not be: parked syncs
        // learn to rejoin.
        for member in group.members.values_mut() {
            if let Some(ticket) = member.take_sync_ticket(now_ms) {
                outputs.push(Output::Sync(ticket, SyncResponse::error(ResponseError::RebalanceInProgress)));
            }
        }
    }
    let from_empty = group.state == GroupState::Empty;
    group.state = GroupState::PreparingRebalance;
    let rebalance_timeout_ms = group.rebalance_timeout_ms();
    group.rebalance_deadline_ms = Some(now_ms + rebalance_timeout_ms);
    group.initial_delay_deadline_ms = (from_empty && initial_delay_ms > 0).then(|| now_ms + initial_delay_ms.min(rebalance_timeout_ms));
    group.sync_deadline_ms = None;
}

fn maybe_complete_join(group: &mut Group, now_ms: i64, outputs: &mut Vec<Output>) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = group.pending_members.is_empty() && group.members.values().all(|member| member.join_ticket.is_some());
    let delay_over = group.initial_delay_deadline_ms.map_or(true, |deadline| deadline <= now_ms);
    let timed_out = group.rebalance_deadline_ms.map_or(true, |deadline| deadline <= now_ms);
    if !((all_joined && delay_over) || timed_out) {
        return;
    }
    let not_joined: Vec<String> = group.members.values().filter(|m| m.join_ticket.is_none()).map(|m| m.member_id.clone()).collect();
    for member_id in &not_joined {
        tracing::info!(group = %group.group_id, member = %member_id, "did not rejoin within the rebalance timeout; removing the member");
        group.members.remove(member_id);
        group.static_members.retain(|_, id| id != member_id);
    }
    group.pending_members.clear();
    group.rebalance_deadline_ms = None;
    group.initial_delay_deadline_ms = None;
    group.generation_id = group.generation_id.wrapping_add(1).max(1);
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol_name = None;
        group.leader_id = None;
    } else {
        group.protocol_name = group.select_protocol();
        if group.protocol_name.is_none() {
            // Members are admitted only with a protocol all others offer, so this is a bug; a
            // wrong protocol is better than a panic under the coordinator lock.
            debug_assert!(false, "group {} has no common protocol", group.group_id);
            tracing::error!(group = %group.group_id, "no protocol common to all members");
            group.protocol_name = group.members.values().next().and_then(|m| m.protocols.first()).map(|(name, _)| name.clone());
        }
        if !group.leader_id.as_ref().is_some_and(|leader| group.members.contains_key(leader)) {
            group.leader_id = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        group.sync_deadline_ms = Some(now_ms + group.rebalance_timeout_ms());
        let leader = group.leader_id.clone().expect("chosen above");
        let waiting: Vec<(String, Ticket)> = group
            .members
            .values_mut()
            .map(|member| {
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                member.assignment = Bytes::new();
                member.synced = false;
                (member.member_id.clone(), member.join_ticket.take().expect("all joined"))
            })
            .collect();
        for (member_id, ticket) in waiting {
            outputs.push(Output::Join(ticket, join_answer(group, &member_id, member_id == leader, false)));
        }
    }
    tracing::info!(group = %group.group_id, generation = group.generation_id, members = group.members.len(), state = group.state.name(), leader = ?group.leader_id, "rebalance completed its join phase");
    outputs.push(Output::Persist(GroupRecord::GroupMetadata {
        group: group.group_id.clone(),
        protocol_type: group.protocol_type.clone(),
        generation_id: group.generation_id,
    }));
}

fn join_answer(group: &Group, member_id: &str, with_members: bool, skip_assignment: bool) -> JoinResponse {
    let protocol = group.protocol_name.clone();
    let members = if with_members {
        let protocol = protocol.as_deref().unwrap_or_default();
        group
            .members
            .values()
            .map(|member| JoinedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                metadata: member.metadata(protocol).cloned().unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResponse {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: protocol,
        leader: group.leader_id.clone().unwrap_or_default(),
        skip_assignment,
        member_id: member_id.to_string(),
        members,
    }
}

fn sync_answer(group: &Group, member_id: &str) -> SyncResponse {
    SyncResponse {
        error: None,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        assignment: group.members.get(member_id).map(|member| member.assignment.clone()).unwrap_or_default(),
    }
}

/// The topics of a ConsumerProtocolSubscription (any version: all start with the version and
/// the topic array, non-flexible). `None` if it does not parse.
pub fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let _version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    // Each topic takes at least 2 bytes: the count is bounded by the bytes that remain.
    let count = usize::try_from(count).ok().filter(|count| *count <= metadata.len() / 2)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::try_from(i16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
        topics.push(String::from_utf8(take(len)?.to_vec()).ok()?);
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;

    fn coordinator() -> Coordinator {
        // No initial delay unless a test wants it: joins complete as soon as all are in.
        Coordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, 7)
    }

    fn join_request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|name| (name.to_string(), Bytes::from(format!("meta-{name}")))).collect(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    fn sync_request(member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncRequest {
        SyncRequest {
            group_id: "g".into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        }
    }

    fn joins(outputs: &[Output]) -> Vec<(Ticket, JoinResponse)> {
        outputs.iter().filter_map(|o| if let Output::Join(t, r) = o { Some((*t, r.clone())) } else { None }).collect()
    }

    fn syncs(outputs: &[Output]) -> Vec<(Ticket, SyncResponse)> {
        outputs.iter().filter_map(|o| if let Output::Sync(t, r) = o { Some((*t, r.clone())) } else { None }).collect()
    }

    /// The KIP-394 round trip: an unknown member gets its id with MEMBER_ID_REQUIRED.
    fn member_id(c: &mut Coordinator, ticket: Ticket, now: i64) -> String {
        let mut out = Vec::new();
        c.join(join_request("", None, &["range"]), ticket, now, &mut out);
        let answers = joins(&out);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1.error, Some(ResponseError::MemberIdRequired));
        answers[0].1.member_id.clone()
    }

    /// One member joined and synced: generation 1, Stable.
    fn stable_single(c: &mut Coordinator) -> String {
        let id = member_id(c, 1, 0);
        let mut out = Vec::new();
        c.join(join_request(&id, None, &["range"]), 2, 0, &mut out);
        let answers = joins(&out);
        assert_eq!(answers.len(), 1);
        let answer = &answers[0].1;
        assert_eq!((answer.error, answer.generation_id, answer.leader.as_str()), (None, 1, id.as_str()));
        assert_eq!(answer.members.len(), 1, "the leader gets the members");
        out.clear();
        c.sync(sync_request(&id, 1, &[(&id, "a1")]), 3, 0, &mut out);
        assert_eq!(syncs(&out)[0].1.assignment, Bytes::from("a1"));
        assert_eq!(c.group("g").unwrap().state(), GroupState::Stable);
        id
    }

    #[test]
    fn join_sync_heartbeat_leave() {
        let mut c = coordinator();
        let id = stable_single(&mut c);
        assert_eq!(c.heartbeat("g", &id, None, 1, 100), Ok(()));
        assert_eq!(c.heartbeat("g", &id, None, 0, 100), Err(ResponseError::IllegalGeneration));
        assert_eq!(c.heartbeat("g", "nobody", None, 1, 100), Err(ResponseError::UnknownMemberId));
        assert_eq!(c.heartbeat("other", &id, None, 1, 100), Err(ResponseError::UnknownMemberId));
        let mut out = Vec::new();
        assert_eq!(c.leave("g", &[(id.clone(), None)], 200, &mut out), Ok(vec![None]));
        let group = c.group("g").expect("a group that had a generation stays until it is idle");
        assert_eq!((group.state(), group.generation_id), (GroupState::Empty, 2));
        assert!(out.iter().any(|o| matches!(o, Output::Persist(GroupRecord::GroupMetadata { generation_id: 2, .. }))));
        // Idle (no members, no offsets): the next tick forgets it.
        c.tick(300, &mut out);
        assert!(c.group("g").is_none());
    }

    #[test]
    fn second_member_triggers_rebalance_and_both_get_assignments() {
        let mut c = coordinator();
        let a = stable_single(&mut c);
        let b = member_id(&mut c, 10, 0);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 11, 0, &mut out);
        assert!(joins(&out).is_empty(), "b waits for a to rejoin");
        assert_eq!(c.group("g").unwrap().state(), GroupState::PreparingRebalance);
        assert_eq!(c.heartbeat("g", &a, None, 1, 10), Err(ResponseError::RebalanceInProgress));
        // A commit of the old generation is still accepted while the group prepares.
        assert_eq!(c.validate_commit("g", 1, &a, None), Ok(()));
        c.join(join_request(&a, None, &["range"]), 12, 20, &mut out);
        let answers = joins(&out);
        assert_eq!(answers.len(), 2);
        for (ticket, answer) in &answers {
            assert_eq!(answer.generation_id, 2);
            assert_eq!(answer.leader, a, "the leader stays the leader");
            assert_eq!(answer.members.len(), if *ticket == 12 { 2 } else { 0 });
        }
        assert_eq!(c.validate_commit("g", 2, &a, None), Err(ResponseError::RebalanceInProgress));
        out.clear();
        c.sync(sync_request(&b, 2, &[]), 13, 30, &mut out);
        assert!(syncs(&out).is_empty(), "b waits for the leader's assignment");
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, 40, &mut out);
        let answers: BTreeMap<Ticket, Bytes> = syncs(&out).into_iter().map(|(t, r)| (t, r.assignment)).collect();
        assert_eq!(answers, BTreeMap::from([(13, Bytes::from("pb")), (14, Bytes::from("pa"))]));
        assert_eq!(c.validate_commit("g", 1, &a, None), Err(ResponseError::IllegalGeneration));
        assert_eq!(c.validate_commit("g", 2, &a, None), Ok(()));
    }

    /// a (the leader) and b have joined generation 2, which waits for the leader's SyncGroup.
    fn completing_pair(c: &mut Coordinator, now: i64) -> (String, String) {
        let a = stable_single(c);
        let b = member_id(c, 10, now);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 11, now, &mut out);
        c.join(join_request(&a, None, &["range"]), 12, now, &mut out);
        assert_eq!(joins(&out).len(), 2);
        assert_eq!(c.group("g").unwrap().state(), GroupState::CompletingRebalance);
        (a, b)
    }

    #[test]
    fn a_member_that_never_syncs_is_removed_even_once_the_leader_synced() {
        // Kafka's pending sync expiry: the leader's SyncGroup makes the group Stable, but a
        // follower that got its JoinGroup answer and heartbeats without ever sending SyncGroup
        // has no assignment; its partitions would be nobody's until it left.
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 13, 100, &mut out);
        assert_eq!(c.group("g").unwrap().state(), GroupState::Stable);
        let mut now = 100;
        while now < i64::from(REBALANCE_MS) + 1_000 && c.group("g").unwrap().member_count() == 2 {
            now += 500;
            assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            let _ = c.heartbeat("g", &b, None, 2, now);
            c.tick(now, &mut out);
        }
        let group = c.group("g").unwrap();
        assert_eq!(group.member_count(), 1, "b never synced generation 2");
        assert!(now >= i64::from(REBALANCE_MS), "not before the rebalance timeout ({now} ms)");
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(c.heartbeat("g", &b, None, 2, now), Err(ResponseError::UnknownMemberId));
        assert_eq!(c.heartbeat("g", &a, None, 2, now), Err(ResponseError::RebalanceInProgress));
    }

    #[test]
    fn members_that_synced_are_not_removed_at_the_sync_deadline() {
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 100, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, 100, &mut out);
        for now in (500..=i64::from(REBALANCE_MS) + 1_000).step_by(500) {
            assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            assert_eq!(c.heartbeat("g", &b, None, 2, now), Ok(()));
            c.tick(now, &mut out);
        }
        let group = c.group("g").unwrap();
        assert_eq!((group.state(), group.generation_id, group.member_count()), (GroupState::Stable, 2, 2));
        assert_eq!(c.next_deadline_ms(), Some(i64::from(REBALANCE_MS) + 1_000 + i64::from(SESSION_MS)), "no sync deadline left");
    }

    #[test]
    fn a_follower_answered_after_a_long_sync_wait_keeps_its_session() {
        // b parks its SyncGroup at once; the leader takes longer than b's session to send its
        // own (a busy machine). b did nothing wrong: answering it must not leave it expired
        // before its next heartbeat (Kafka reschedules the session when it answers).
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        let mut now = 0;
        while now < i64::from(SESSION_MS) + 2_000 {
            now += 500;
            assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            c.tick(now, &mut out);
        }
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, now, &mut out);
        assert_eq!(syncs(&out).into_iter().find(|(t, _)| *t == 13).map(|(_, r)| r.assignment), Some(Bytes::from("pb")));
        c.tick(now + 100, &mut out);
        let group = c.group("g").unwrap();
        assert_eq!((group.state(), group.member_count()), (GroupState::Stable, 2), "b answered, then expired at once");
        assert_eq!(c.heartbeat("g", &b, None, 2, now + 500), Ok(()));
    }

    #[test]
    fn a_parked_sync_answered_by_a_new_rebalance_keeps_its_session() {
        // The same for the REBALANCE_IN_PROGRESS answer of a parked SyncGroup: b must have a
        // session's time to rejoin.
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        let now = i64::from(SESSION_MS) * 2;
        // a leaves instead of syncing: b's parked SyncGroup learns to rejoin.
        assert_eq!(c.leave("g", &[(a.clone(), None)], now, &mut out), Ok(vec![None]));
        assert_eq!(syncs(&out).into_iter().find(|(t, _)| *t == 13).and_then(|(_, r)| r.error), Some(ResponseError::RebalanceInProgress));
        c.tick(now + 100, &mut out);
        assert_eq!(c.group("g").unwrap().member_count(), 1, "b expired before it could rejoin");
        out.clear();
        c.join(join_request(&b, None, &["range"]), 14, now + 1_000, &mut out);
        assert_eq!(joins(&out).into_iter().map(|(_, r)| (r.generation_id, r.leader)).collect::<Vec<_>>(), vec![(3, b.clone())]);
    }

    #[test]
    fn a_join_resent_during_completing_rebalance_gets_the_same_generation() {
        // The JoinGroup answer was lost (a client-side timeout, a new connection): the member
        // asks again with its id. Kafka answers with the current generation (the leader with
        // the members again) and does not rebalance.
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 20, 100, &mut out);
        c.join(join_request(&a, None, &["range"]), 21, 100, &mut out);
        let answers: BTreeMap<Ticket, JoinResponse> = joins(&out).into_iter().collect();
        assert_eq!((answers[&20].generation_id, answers[&20].members.len()), (2, 0));
        assert_eq!((answers[&21].generation_id, answers[&21].members.len(), answers[&21].leader.clone()), (2, 2, a.clone()));
        out.clear();
        c.sync(sync_request(&b, 2, &[]), 22, 200, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 23, 200, &mut out);
        let assigned: BTreeMap<Ticket, Bytes> = syncs(&out).into_iter().map(|(t, r)| (t, r.assignment)).collect();
        assert_eq!(assigned, BTreeMap::from([(22, Bytes::from("pb")), (23, Bytes::from("pa"))]));
    }

    #[test]
    fn a_follower_rejoining_a_stable_group_gets_its_assignment_back() {
        // A follower that lost its SyncGroup answer, or was told ILLEGAL_GENERATION by a commit
        // of the previous generation, rejoins a Stable group with the same metadata: the current
        // generation, then its current assignment, without a rebalance (Kafka's Stable case).
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, 0, &mut out);
        out.clear();
        c.join(join_request(&b, None, &["range"]), 15, 1_000, &mut out);
        assert_eq!(joins(&out).into_iter().map(|(t, r)| (t, r.error, r.generation_id)).collect::<Vec<_>>(), vec![(15, None, 2)]);
        c.sync(sync_request(&b, 2, &[]), 16, 1_000, &mut out);
        assert_eq!(syncs(&out).into_iter().map(|(t, r)| (t, r.assignment)).collect::<Vec<_>>(), vec![(16, Bytes::from("pb"))]);
        // A SyncGroup of the superseded generation is refused, and so is a commit of it.
        c.sync(sync_request(&b, 1, &[]), 17, 1_000, &mut out);
        assert_eq!(syncs(&out).into_iter().find(|(t, _)| *t == 17).and_then(|(_, r)| r.error), Some(ResponseError::IllegalGeneration));
        assert_eq!(c.validate_commit("g", 1, &b, None), Err(ResponseError::IllegalGeneration));
        assert_eq!(c.group("g").unwrap().state(), GroupState::Stable);
    }

    #[test]
    fn a_join_parked_on_a_dead_connection_is_answered_and_then_expires() {
        // c rejoined, then its process died with the JoinGroup parked: it counts as joined (as
        // in Kafka), gets an answer nobody reads, and its session then ends the generation.
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, 0, &mut out);
        let dead = member_id(&mut c, 15, 0);
        c.join(join_request(&dead, None, &["range"]), 16, 0, &mut out);
        c.join(join_request(&a, None, &["range"]), 17, 100, &mut out);
        c.join(join_request(&b, None, &["range"]), 18, 100, &mut out);
        assert_eq!(c.group("g").unwrap().generation_id, 3);
        let mut now = 100;
        c.sync(sync_request(&b, 3, &[]), 19, now, &mut out);
        c.sync(sync_request(&a, 3, &[(&a, "pa"), (&b, "pb"), (&dead, "pd")]), 20, now, &mut out);
        while c.group("g").unwrap().member_count() == 3 {
            now += 500;
            assert!(now <= 100 + i64::from(SESSION_MS), "the dead member outlived its session");
            let _ = c.heartbeat("g", &a, None, 3, now);
            let _ = c.heartbeat("g", &b, None, 3, now);
            c.tick(now, &mut out);
        }
        assert_eq!(c.group("g").unwrap().state(), GroupState::PreparingRebalance);
    }

    /// A completing pair whose follower `b` parked its SyncGroup (ticket 13) while the leader
    /// `a` heartbeats but does not sync, ticked every `step_ms` until the follower is answered
    /// (the leader is removed at the rebalance timeout): (a, b, that time, the outputs).
    fn leader_never_syncs(c: &mut Coordinator, step_ms: i64) -> (String, String, i64, Vec<Output>) {
        let (a, b) = completing_pair(c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        let mut now = 0;
        while syncs(&out).is_empty() {
            now += step_ms;
            assert!(now <= i64::from(REBALANCE_MS), "the parked SyncGroup is answered by the rebalance timeout");
            assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            c.tick(now, &mut out);
        }
        (a, b, now, out)
    }

    #[test]
    fn a_leader_that_never_syncs_frees_the_parked_followers() {
        // The leader heartbeats but its SyncGroup never comes: at the rebalance timeout it is
        // removed and the follower's parked SyncGroup is told to rejoin (never left hanging).
        let mut c = coordinator();
        let (a, b, now, mut out) = leader_never_syncs(&mut c, 1_000);
        assert_eq!(syncs(&out)[0], (13, SyncResponse::error(ResponseError::RebalanceInProgress)));
        assert_eq!(c.heartbeat("g", &a, None, 2, now), Err(ResponseError::UnknownMemberId));
        out.clear();
        c.join(join_request(&b, None, &["range"]), 14, now, &mut out);
        assert_eq!(joins(&out)[0].1.leader, b);
    }

    #[test]
    fn session_timeout_removes_a_silent_member_and_rebalances() {
        let mut c = coordinator();
        let a = stable_single(&mut c);
        let b = member_id(&mut c, 10, 0);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 11, 0, &mut out);
        c.join(join_request(&a, None, &["range"]), 12, 0, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 13, 0, &mut out);
        c.sync(sync_request(&b, 2, &[]), 14, 0, &mut out);
        // a heartbeats, b goes silent (SIGKILL).
        for now in (1_000..i64::from(SESSION_MS)).step_by(1_000) {
            assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            c.tick(now, &mut out);
            assert_eq!(c.group("g").unwrap().member_count(), 2, "b's session has not ended at {now} ms");
        }
        let now = i64::from(SESSION_MS);
        c.tick(now, &mut out);
        let group = c.group("g").unwrap();
        assert_eq!(group.member_count(), 1);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(c.heartbeat("g", &b, None, 2, now), Err(ResponseError::UnknownMemberId));
        assert_eq!(c.heartbeat("g", &a, None, 2, now), Err(ResponseError::RebalanceInProgress));
        out.clear();
        c.join(join_request(&a, None, &["range"]), 20, now, &mut out);
        assert_eq!(joins(&out)[0].1.generation_id, 3);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let mut c = coordinator();
        let a = stable_single(&mut c);
        let b = member_id(&mut c, 10, 0);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 11, 0, &mut out);
        // a keeps heartbeating (REBALANCE_IN_PROGRESS) but never rejoins.
        let mut now = 0;
        while joins(&out).is_empty() {
            now += 1_000;
            assert!(now <= i64::from(REBALANCE_MS) + 1_000, "the join phase must end at the rebalance timeout");
            let _ = c.heartbeat("g", &a, None, 1, now);
            c.tick(now, &mut out);
        }
        let (ticket, answer) = joins(&out).remove(0);
        assert_eq!((ticket, answer.leader.as_str(), answer.generation_id), (11, b.as_str(), 2));
        assert_eq!(c.heartbeat("g", &a, None, 1, now), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn sync_timeout_drops_members_that_do_not_sync() {
        let mut c = coordinator();
        let id = member_id(&mut c, 1, 0);
        let mut out = Vec::new();
        c.join(join_request(&id, None, &["range"]), 2, 0, &mut out);
        assert_eq!(c.group("g").unwrap().state(), GroupState::CompletingRebalance);
        // It heartbeats (so its session lives) but never sends SyncGroup.
        for now in (5_000..i64::from(REBALANCE_MS)).step_by(5_000) {
            assert_eq!(c.heartbeat("g", &id, None, 1, now), Ok(()));
            c.tick(now, &mut out);
        }
        c.tick(i64::from(REBALANCE_MS) - 1, &mut out);
        assert_eq!(c.group("g").unwrap().member_count(), 1);
        c.tick(i64::from(REBALANCE_MS), &mut out);
        // The member is gone, and with it the group (nothing committed: idle).
        assert!(c.group("g").is_none());
    }

    #[test]
    fn pending_member_ids_expire_and_unknown_ids_are_refused() {
        let mut c = coordinator();
        let id = member_id(&mut c, 1, 0);
        let mut out = Vec::new();
        c.tick(i64::from(SESSION_MS), &mut out);
        c.join(join_request(&id, None, &["range"]), 2, i64::from(SESSION_MS), &mut out);
        assert_eq!(joins(&out)[0].1.error, Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn protocol_selection_and_inconsistent_protocols() {
        let mut c = coordinator();
        let a = member_id(&mut c, 1, 0);
        let b = member_id(&mut c, 2, 0);
        let mut out = Vec::new();
        c.join(join_request(&a, None, &["roundrobin", "range"]), 3, 0, &mut out);
        c.join(join_request(&b, None, &["range", "roundrobin"]), 4, 0, &mut out);
        c.join(join_request("", None, &["sticky"]), 5, 0, &mut out);
        let answers = joins(&out);
        let refused = answers.iter().find(|(t, _)| *t == 5).unwrap();
        assert_eq!(refused.1.error, Some(ResponseError::InconsistentGroupProtocol));
        let answer = &answers.iter().find(|(t, _)| *t == 3).unwrap().1;
        // One vote each: the tie goes to the first candidate in the first member's order.
        assert_eq!(answer.protocol_name.as_deref(), Some("roundrobin"));
        assert!(answer.members.iter().all(|m| m.metadata == Bytes::from("meta-roundrobin")));
        let mut other_type = join_request("", None, &["range"]);
        other_type.protocol_type = "connect".into();
        out.clear();
        c.join(other_type, 6, 0, &mut out);
        assert_eq!(joins(&out)[0].1.error, Some(ResponseError::InconsistentGroupProtocol));
        let mut empty = join_request("", None, &[]);
        empty.group_id = "fresh".into();
        out.clear();
        c.join(empty, 7, 0, &mut out);
        assert_eq!(joins(&out)[0].1.error, Some(ResponseError::InconsistentGroupProtocol));
    }

    #[test]
    fn request_checks() {
        let mut c = coordinator();
        let mut out = Vec::new();
        let mut bad = join_request("", None, &["range"]);
        bad.group_id = String::new();
        c.join(bad, 1, 0, &mut out);
        let mut short = join_request("", None, &["range"]);
        short.session_timeout_ms = SESSION_TIMEOUT_MIN_MS - 1;
        c.join(short, 2, 0, &mut out);
        let mut huge = join_request("", None, &["range"]);
        huge.protocols = vec![("range".into(), Bytes::from(vec![0u8; PROTOCOL_METADATA_BYTES_MAX + 1]))];
        c.join(huge, 3, 0, &mut out);
        c.join(join_request("unknown-member", None, &["range"]), 4, 0, &mut out);
        let errors: Vec<_> = joins(&out).into_iter().map(|(_, r)| r.error).collect();
        assert_eq!(
            errors,
            vec![
                Some(ResponseError::InvalidGroupId),
                Some(ResponseError::InvalidSessionTimeout),
                Some(ResponseError::InvalidRequest),
                Some(ResponseError::UnknownMemberId),
            ]
        );
        assert_eq!(c.validate_commit("", -1, "", None), Err(ResponseError::InvalidGroupId));
        assert_eq!(c.validate_delete("nope"), Err(ResponseError::GroupIdNotFound));
    }

    #[test]
    fn group_size_is_bounded() {
        let mut c = Coordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, members_per_group_max: 2, ..GroupConfig::default() }, 1);
        let mut out = Vec::new();
        member_id(&mut c, 1, 0);
        member_id(&mut c, 2, 0);
        c.join(join_request("", None, &["range"]), 3, 0, &mut out);
        assert_eq!(joins(&out)[0].1.error, Some(ResponseError::GroupMaxSizeReached));
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_without_rebalance() {
        let mut c = coordinator();
        let mut out = Vec::new();
        // Static members skip MEMBER_ID_REQUIRED.
        c.join(join_request("", Some("i-1"), &["range"]), 1, 0, &mut out);
        let first = joins(&out)[0].1.clone();
        assert_eq!((first.error, first.generation_id), (None, 1));
        let old_id = first.member_id.clone();
        out.clear();
        c.sync(SyncRequest { group_instance_id: Some("i-1".into()), ..sync_request(&old_id, 1, &[(&old_id, "mine")]) }, 2, 0, &mut out);
        assert_eq!(syncs(&out)[0].1.assignment, Bytes::from("mine"));
        // The process restarts: same instance id, no member id.
        out.clear();
        c.join(join_request("", Some("i-1"), &["range"]), 3, 1_000, &mut out);
        let again = joins(&out)[0].1.clone();
        assert_eq!(again.error, None);
        assert_eq!(again.generation_id, 1, "no rebalance");
        assert!(again.skip_assignment, "the returning leader must not reassign");
        assert_ne!(again.member_id, old_id);
        assert_eq!(c.group("g").unwrap().state(), GroupState::Stable);
        // The old incarnation is fenced; the new one gets the old assignment.
        assert_eq!(c.heartbeat("g", &old_id, Some("i-1"), 1, 1_000), Err(ResponseError::FencedInstanceId));
        out.clear();
        c.sync(SyncRequest { group_instance_id: Some("i-1".into()), ..sync_request(&again.member_id, 1, &[]) }, 4, 1_000, &mut out);
        assert_eq!(syncs(&out)[0].1.assignment, Bytes::from("mine"));
        assert_eq!(c.validate_commit("g", 1, &old_id, Some("i-1")), Err(ResponseError::FencedInstanceId));
        // Leaving by instance id with the wrong member id is fenced; with none, it leaves.
        assert_eq!(c.leave("g", &[(old_id, Some("i-1".into()))], 2_000, &mut out), Ok(vec![Some(ResponseError::FencedInstanceId)]));
        assert_eq!(c.leave("g", &[(String::new(), Some("i-1".into())), ("x".into(), None)], 2_000, &mut out), Ok(vec![None, Some(ResponseError::UnknownMemberId)]));
        assert_eq!(c.group("g").unwrap().state(), GroupState::Empty);
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let mut c = Coordinator::new(GroupConfig { initial_rebalance_delay_ms: 3_000, ..GroupConfig::default() }, 1);
        let mut out = Vec::new();
        let a = member_id(&mut c, 1, 0);
        c.join(join_request(&a, None, &["range"]), 2, 0, &mut out);
        c.tick(2_000, &mut out);
        let b = member_id(&mut c, 3, 2_000);
        c.join(join_request(&b, None, &["range"]), 4, 2_000, &mut out);
        c.tick(3_500, &mut out);
        assert!(joins(&out).iter().all(|(_, r)| r.error.is_some()), "the delay was extended by the second member");
        c.tick(5_000, &mut out);
        let answers: Vec<_> = joins(&out).into_iter().filter(|(_, r)| r.error.is_none()).collect();
        assert_eq!(answers.len(), 2, "one generation for both");
        assert!(answers.iter().all(|(_, r)| r.generation_id == 1));
    }

    #[test]
    fn simple_consumer_commits_and_offsets_apply() {
        let mut c = coordinator();
        assert_eq!(c.validate_commit("simple", -1, "", None), Ok(()));
        assert_eq!(c.validate_commit("simple", 3, "m", None), Err(ResponseError::IllegalGeneration));
        let record = |offset| GroupRecord::OffsetCommit {
            group: "simple".into(),
            offsets: vec![OffsetRecord {
                topic: "t".into(),
                topic_id: "01".repeat(16),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: Some("m".into()),
                commit_timestamp_ms: 0,
            }],
        };
        c.apply(&record(5));
        c.apply(&record(9));
        let group = c.group("simple").unwrap();
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.offset("t", 0).map(|o| (o.offset, o.metadata.clone())), Some((9, Some("m".into()))));
        assert_eq!(c.validate_commit("simple", -1, "", None), Ok(()));
        assert_eq!(c.validate_delete("simple"), Ok(()));
        // A deleted topic's offsets go; the idle group with them.
        c.retain_offsets(|topic, _| topic != "t");
        assert!(c.group("simple").is_none());
        c.apply(&record(1));
        c.apply(&GroupRecord::OffsetDelete { group: "simple".into(), partitions: vec![("t".into(), 0)] });
        assert!(c.group("simple").unwrap().offsets().is_empty());
        c.apply(&GroupRecord::GroupDelete { group: "simple".into() });
        assert!(c.group("simple").is_none());
    }

    #[test]
    fn non_empty_groups_cannot_be_deleted_and_generations_survive_replay() {
        let mut c = coordinator();
        stable_single(&mut c);
        assert_eq!(c.validate_delete("g"), Err(ResponseError::NonEmptyGroup));
        let mut replayed = coordinator();
        replayed.apply(&GroupRecord::GroupMetadata { group: "g".into(), protocol_type: Some("consumer".into()), generation_id: 7 });
        let group = replayed.group("g").unwrap();
        assert_eq!((group.generation_id, group.state(), group.protocol_type.as_deref()), (7, GroupState::Empty, Some("consumer")));
    }

    #[test]
    fn subscription_topics_parse_and_bound() {
        let metadata = [0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0, 0, 0, 0];
        assert_eq!(consumer_subscription_topics(&metadata), Some(vec!["a".to_string(), "bc".to_string()]));
        assert_eq!(consumer_subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(consumer_subscription_topics(&[0]), None);
    }

    /// a (the leader), b and d have synced generation 2 at `now`: Stable.
    fn stable_trio(c: &mut Coordinator, now: i64) -> (String, String, String) {
        let a = stable_single(c);
        let b = member_id(c, 10, now);
        let d = member_id(c, 20, now);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range"]), 11, now, &mut out);
        c.join(join_request(&d, None, &["range"]), 21, now, &mut out);
        c.join(join_request(&a, None, &["range"]), 12, now, &mut out);
        assert_eq!(joins(&out).len(), 3);
        c.sync(sync_request(&b, 2, &[]), 13, now, &mut out);
        c.sync(sync_request(&d, 2, &[]), 23, now, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb"), (&d, "pd")]), 14, now, &mut out);
        assert_eq!(syncs(&out).len(), 3);
        assert_eq!(c.group("g").unwrap().state(), GroupState::Stable);
        (a, b, d)
    }

    #[test]
    fn survivors_parked_in_join_get_the_generation_when_the_dead_leaders_session_ends() {
        // Issue 12's race: the leader a is SIGKILLed, and before its session ends the
        // survivors are already rejoining (b's subscription changed, d learnt it from its
        // heartbeat). Their JoinGroups are parked while a's session runs out: the tick that
        // removes a must complete the join phase with them, a survivor leading, and the
        // generation must then complete through SyncGroup.
        let mut c = coordinator();
        let (a, b, d) = stable_trio(&mut c, 0);
        let mut out = Vec::new();
        c.join(join_request(&b, None, &["range", "roundrobin"]), 30, 1_000, &mut out);
        assert_eq!(c.heartbeat("g", &d, None, 2, 1_500), Err(ResponseError::RebalanceInProgress));
        c.join(join_request(&d, None, &["range"]), 31, 1_500, &mut out);
        let mut now = 1_500;
        while joins(&out).is_empty() {
            now += 100;
            assert!(now <= i64::from(SESSION_MS), "the join phase outlived the dead leader's session");
            c.tick(now, &mut out);
        }
        assert_eq!(now, i64::from(SESSION_MS), "answered only once a's session ended");
        let answers: BTreeMap<Ticket, JoinResponse> = joins(&out).into_iter().collect();
        let leader = answers[&30].leader.clone();
        assert!(leader == b || leader == d, "a survivor leads, not {leader}");
        for (ticket, member) in [(30, &b), (31, &d)] {
            let answer = &answers[&ticket];
            assert_eq!((answer.error, answer.generation_id, answer.leader.as_str()), (None, 3, leader.as_str()));
            assert_eq!(answer.members.len(), if *member == leader { 2 } else { 0 });
        }
        let follower = if leader == b { d.clone() } else { b.clone() };
        out.clear();
        c.sync(sync_request(&follower, 3, &[]), 40, now, &mut out);
        assert!(syncs(&out).is_empty(), "the follower waits for the leader");
        c.sync(sync_request(&leader, 3, &[(&leader, "pl"), (&follower, "pf")]), 41, now + 200, &mut out);
        let assigned: BTreeMap<Ticket, Bytes> = syncs(&out).into_iter().map(|(t, r)| (t, r.assignment)).collect();
        assert_eq!(assigned, BTreeMap::from([(40, Bytes::from("pf")), (41, Bytes::from("pl"))]));
        for member in [&b, &d] {
            assert_eq!(c.heartbeat("g", member, None, 3, now + 500), Ok(()));
            assert_eq!(c.validate_commit("g", 3, member, None), Ok(()));
        }
        assert_eq!(c.heartbeat("g", &a, None, 2, now + 500), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_follower_that_dies_with_its_sync_parked_is_removed_a_session_after_the_answer() {
        // b sent SyncGroup, then its process died; the leader syncs 2 s later. b's answer goes
        // nowhere and its session (restarted by the answer) ends: the leader is told to rejoin
        // then, not later, and gets a generation of its own at once.
        let mut c = coordinator();
        let (a, b) = completing_pair(&mut c, 0);
        let mut out = Vec::new();
        c.sync(sync_request(&b, 2, &[]), 13, 0, &mut out);
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, 2_000, &mut out);
        assert_eq!(syncs(&out).len(), 2);
        let mut now = 2_000;
        while c.group("g").unwrap().member_count() == 2 {
            now += 100;
            assert!(now <= 2_000 + i64::from(SESSION_MS), "the dead follower outlived its session");
            if now % 500 == 0 {
                assert_eq!(c.heartbeat("g", &a, None, 2, now), Ok(()));
            }
            c.tick(now, &mut out);
        }
        assert_eq!(now, 2_000 + i64::from(SESSION_MS), "its session restarted when it was answered");
        assert_eq!(c.heartbeat("g", &a, None, 2, now), Err(ResponseError::RebalanceInProgress));
        out.clear();
        c.join(join_request(&a, None, &["range"]), 15, now, &mut out);
        let answers = joins(&out);
        assert_eq!(answers.iter().map(|(t, r)| (*t, r.generation_id, r.leader.clone())).collect::<Vec<_>>(), vec![(15, 3, a.clone())]);
    }

    #[test]
    fn a_leaders_sync_after_the_pending_sync_timeout_is_refused_and_the_followers_go_on() {
        // The leader heartbeats but its SyncGroup comes only after the rebalance timeout (a
        // starved client): by then it has been removed and the follower's parked SyncGroup was
        // told to rejoin. The late SyncGroup must be refused at once (never parked: nobody would
        // answer it), and the follower's rejoin must complete without waiting for the leader.
        let mut c = coordinator();
        let (a, b, now, mut out) = leader_never_syncs(&mut c, 500);
        out.clear();
        c.sync(sync_request(&a, 2, &[(&a, "pa"), (&b, "pb")]), 14, now + 100, &mut out);
        assert_eq!(syncs(&out), vec![(14, SyncResponse::error(ResponseError::UnknownMemberId))]);
        out.clear();
        c.join(join_request(&b, None, &["range"]), 15, now + 200, &mut out);
        assert_eq!(joins(&out).into_iter().map(|(t, r)| (t, r.generation_id, r.leader)).collect::<Vec<_>>(), vec![(15, 3, b.clone())]);
        out.clear();
        c.sync(sync_request(&b, 3, &[(&b, "pb")]), 16, now + 300, &mut out);
        assert_eq!(syncs(&out).into_iter().map(|(t, r)| (t, r.assignment)).collect::<Vec<_>>(), vec![(16, Bytes::from("pb"))]);
        // The old leader comes back as a new member: one more rebalance, which b joins.
        let again = member_id(&mut c, 17, now + 400);
        c.join(join_request(&again, None, &["range"]), 18, now + 400, &mut out);
        assert_eq!(c.heartbeat("g", &b, None, 3, now + 500), Err(ResponseError::RebalanceInProgress));
        c.join(join_request(&b, None, &["range"]), 19, now + 500, &mut out);
        let generations: BTreeMap<Ticket, i32> = joins(&out).into_iter().map(|(t, r)| (t, r.generation_id)).collect();
        assert_eq!(generations, BTreeMap::from([(18, 4), (19, 4)]));
    }

    #[test]
    fn every_deadline_is_reported_for_the_timer() {
        let mut c = coordinator();
        assert_eq!(c.next_deadline_ms(), None);
        stable_single(&mut c);
        assert_eq!(c.next_deadline_ms(), Some(i64::from(SESSION_MS)));
    }
}
