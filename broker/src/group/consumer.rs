//! KIP-848 consumer groups (`group.protocol=consumer`), sans I/O: the coordinator computes the
//! target assignment (a sticky uniform assignor, or the range assignor, whichever most members
//! prefer) and every member reconciles towards it through ConsumerGroupHeartbeat, one heartbeat
//! at a time, the same way whichever assignor computed the target:
//!
//! - a change of membership, subscriptions or partition counts bumps the group epoch, and the
//!   target assignment is recomputed for that epoch;
//! - a member that must give up partitions first gets its assignment without them and keeps
//!   its epoch; they stay "pending revocation" (owned by nobody else) until a heartbeat reports
//!   the member no longer owns them;
//! - then the member moves to the target epoch and gets the target's partitions that no other
//!   member still owns or is revoking; the rest come with later heartbeats, once released.
//!
//! Committed offsets of consumer groups live with the classic groups' (`coordinator::Group`,
//! an Empty group holding offsets), so durability, OffsetFetch and deletion are shared.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;

/// A partition by topic id, as KIP-848 assignments name them.
pub type TopicPartition = ([u8; 16], i32);

/// Kafka's group.consumer.session.timeout.ms and group.consumer.heartbeat.interval.ms are 45 s
/// and 5 s; a shorter interval makes reconciliation (one step per heartbeat) quicker. The
/// session timeout is the default of `serve --group-consumer-session-timeout-ms`.
pub const SESSION_TIMEOUT_MS: i64 = 45_000;
/// The bounds of that setting: a session must outlast a few heartbeat intervals.
pub const SESSION_TIMEOUT_MIN_MS: i64 = 3 * HEARTBEAT_INTERVAL_MS as i64;
pub const SESSION_TIMEOUT_MAX_MS: i64 = 1_800_000;
pub const HEARTBEAT_INTERVAL_MS: i32 = 2_000;
/// Subscribed topics per member.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// The server assignors, in Kafka's default `group.consumer.assignors` order: the first is the
/// default, and a tie between members' preferences goes to the earlier one.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

#[derive(Clone, Debug)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// The member's preferred server assignor (`None`: unchanged since the last heartbeat).
    pub server_assignor: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub owned: Option<BTreeSet<TopicPartition>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatResponse {
    pub error: Option<ResponseError>,
    pub error_message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged since the last one sent to this member.
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

impl HeartbeatResponse {
    fn error(error: ResponseError, member_id: &str, member_epoch: i32) -> HeartbeatResponse {
        HeartbeatResponse {
            error: Some(error),
            error_message: None,
            member_id: member_id.to_string(),
            member_epoch,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last bump: a heartbeat still at it is accepted (see `accepts_epoch`).
    previous_epoch: i32,
    pub subscribed: Vec<String>,
    /// The server assignor this member prefers, if it named one.
    pub server_assignor: Option<String>,
    pub assigned: BTreeSet<TopicPartition>,
    pub pending_revocation: BTreeSet<TopicPartition>,
    session_deadline_ms: i64,
    rebalance_timeout_ms: i32,
    /// While partitions are pending revocation: when the member is fenced if they still are.
    revocation_deadline_ms: Option<i64>,
    last_sent: Option<BTreeSet<TopicPartition>>,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// The assignor that computed the target (one of ASSIGNORS).
    assignor: &'static str,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The subscribed topics' (id, partition count) the target was computed from.
    metadata: BTreeMap<String, ([u8; 16], i32)>,
    /// A member that sends no heartbeat this long is removed.
    session_timeout_ms: i64,
}

impl ConsumerGroup {
    pub fn new(group_id: &str) -> ConsumerGroup {
        ConsumerGroup::with_session_timeout(group_id, SESSION_TIMEOUT_MS)
    }

    pub fn with_session_timeout(group_id: &str, session_timeout_ms: i64) -> ConsumerGroup {
        assert!((SESSION_TIMEOUT_MIN_MS..=SESSION_TIMEOUT_MAX_MS).contains(&session_timeout_ms));
        ConsumerGroup { group_id: group_id.to_string(), assignor: ASSIGNORS[0], session_timeout_ms, ..ConsumerGroup::default() }
    }

    /// The name of the assignor that computed the current target assignment.
    pub fn assignor_name(&self) -> &'static str {
        self.assignor
    }

    /// A member's target assignment (what it reconciles towards).
    pub fn target_of(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// Kafka's consumer group states: "Assigning" while the target lags the group epoch (a
    /// member expired; the next heartbeat recomputes it), "Stable" once every member is at the
    /// assignment epoch and owns exactly its target (nothing to revoke, nothing still awaited
    /// from another member), "Reconciling" in between.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch != self.assignment_epoch {
            "Assigning"
        } else if self.members.values().all(|m| {
            let owns_target = self.target.get(&m.member_id).map_or(m.assigned.is_empty(), |t| *t == m.assigned);
            m.epoch == self.assignment_epoch && m.pending_revocation.is_empty() && owns_target
        }) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Validates an OffsetCommit's member and epoch (KIP-848: the epoch must be current).
    pub fn validate_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), ResponseError> {
        if member_epoch < 0 && member_id.is_empty() {
            // An admin client or a consumer without group management: only while empty.
            return if self.members.is_empty() { Ok(()) } else { Err(ResponseError::UnknownMemberId) };
        }
        let member = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if member_epoch != member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// One heartbeat. `topics`: every topic, by name, with its id and partition count.
    pub fn heartbeat(
        &mut self,
        request: HeartbeatRequest,
        new_member_id: impl FnOnce() -> String,
        topics: &BTreeMap<String, ([u8; 16], i32)>,
        members_max: usize,
        now_ms: i64,
    ) -> HeartbeatResponse {
        if request.subscribed_topic_names.as_ref().is_some_and(|names| names.len() > SUBSCRIBED_TOPICS_MAX) {
            return HeartbeatResponse::error(ResponseError::InvalidRequest, &request.member_id, request.member_epoch);
        }
        if let Some(name) = request.server_assignor.as_deref().filter(|name| !ASSIGNORS.contains(name)) {
            // Kafka's answer and message for an assignor it does not have.
            let mut response = HeartbeatResponse::error(ResponseError::UnsupportedAssignor, &request.member_id, request.member_epoch);
            // The name is the client's: echo a bounded prefix of it.
            let name: String = name.chars().take(256).collect();
            response.error_message = Some(format!("ServerAssignor {name} is not supported. Supported assignors: {}.", ASSIGNORS.join(", ")));
            return response;
        }
        let member_id = match request.member_epoch {
            0 => {
                // Joining (v0: the coordinator names the member; v1, KIP-1082: the client does).
                let Some(subscribed) = request.subscribed_topic_names.clone() else {
                    return HeartbeatResponse::error(ResponseError::InvalidRequest, &request.member_id, 0);
                };
                let member_id = if request.member_id.is_empty() { new_member_id() } else { request.member_id.clone() };
                if !self.members.contains_key(&member_id) && self.members.len() >= members_max {
                    return HeartbeatResponse::error(ResponseError::GroupMaxSizeReached, &member_id, 0);
                }
                if let Some(instance) = &request.instance_id {
                    if let Some(other) = self.members.values().find(|m| m.instance_id.as_ref() == Some(instance) && m.member_id != member_id) {
                        let other = other.member_id.clone();
                        // A static member rejoining after a restart replaces its old incarnation.
                        self.members.remove(&other);
                    }
                }
                self.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        member_id: member_id.clone(),
                        instance_id: request.instance_id.clone(),
                        client_id: request.client_id.clone(),
                        client_host: request.client_host.clone(),
                        epoch: 0,
                        previous_epoch: 0,
                        subscribed,
                        server_assignor: request.server_assignor.clone(),
                        assigned: BTreeSet::new(),
                        pending_revocation: BTreeSet::new(),
                        session_deadline_ms: 0,
                        rebalance_timeout_ms: request.rebalance_timeout_ms.max(0),
                        revocation_deadline_ms: None,
                        last_sent: None,
                    },
                );
                self.group_epoch += 1;
                member_id
            }
            -1 | -2 => {
                // Leaving (-2: a static member leaving for a while; its place is not kept here).
                if self.members.remove(&request.member_id).is_none() {
                    return HeartbeatResponse::error(ResponseError::UnknownMemberId, &request.member_id, request.member_epoch);
                }
                self.group_epoch += 1;
                return HeartbeatResponse {
                    error: None,
                    error_message: None,
                    member_id: request.member_id,
                    member_epoch: request.member_epoch,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                };
            }
            epoch => {
                let Some(member) = self.members.get_mut(&request.member_id) else {
                    return HeartbeatResponse::error(ResponseError::UnknownMemberId, &request.member_id, epoch);
                };
                if !member.accepts_epoch(epoch, request.owned.as_ref()) {
                    return HeartbeatResponse::error(ResponseError::FencedMemberEpoch, &request.member_id, epoch);
                }
                if epoch != member.epoch {
                    // The answer that moved it to its epoch was lost: send the assignment again.
                    member.last_sent = None;
                }
                if let Some(subscribed) = &request.subscribed_topic_names {
                    if *subscribed != member.subscribed {
                        member.subscribed = subscribed.clone();
                        self.group_epoch += 1;
                    }
                }
                if request.server_assignor.is_some() && request.server_assignor != member.server_assignor {
                    // It may change the group's assignor, and so the target.
                    member.server_assignor = request.server_assignor.clone();
                    self.group_epoch += 1;
                }
                request.member_id.clone()
            }
        };
        let full_request = request.subscribed_topic_names.is_some();
        {
            let member = self.members.get_mut(&member_id).expect("present");
            member.session_deadline_ms = now_ms + self.session_timeout_ms;
            if let Some(owned) = &request.owned {
                if member.pending_revocation.iter().all(|tp| !owned.contains(tp)) {
                    member.pending_revocation.clear();
                    member.revocation_deadline_ms = None;
                }
            }
        }
        self.refresh_target(topics);
        self.reconcile(&member_id, now_ms);
        let member = self.members.get_mut(&member_id).expect("present");
        let changed = member.last_sent.as_ref() != Some(&member.assigned);
        let assignment = (changed || full_request || request.owned.is_none()).then(|| member.assigned.clone());
        if assignment.is_some() {
            member.last_sent = Some(member.assigned.clone());
        }
        HeartbeatResponse {
            error: None,
            error_message: None,
            member_id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment,
        }
    }

    /// Removes members whose session ended, or that kept partitions to revoke past their
    /// rebalance timeout (they would hold others' assignments forever); true if any was.
    pub fn expire(&mut self, now_ms: i64) -> bool {
        let before = self.members.len();
        self.members.retain(|_, member| {
            member.session_deadline_ms > now_ms && member.revocation_deadline_ms.is_none_or(|deadline| deadline > now_ms)
        });
        let expired = self.members.len() != before;
        if expired {
            self.group_epoch += 1;
        }
        expired
    }

    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.members.values().flat_map(|m| [Some(m.session_deadline_ms), m.revocation_deadline_ms]).flatten().min()
    }

    /// Recomputes the target assignment when the group epoch moved or partition counts changed.
    fn refresh_target(&mut self, topics: &BTreeMap<String, ([u8; 16], i32)>) {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| m.subscribed.iter()).collect();
        let metadata: BTreeMap<String, ([u8; 16], i32)> =
            subscribed.iter().filter_map(|name| topics.get(*name).map(|entry| ((*name).clone(), *entry))).collect();
        if metadata != self.metadata {
            self.metadata = metadata;
            self.group_epoch += 1;
        }
        if self.assignment_epoch == self.group_epoch {
            return;
        }
        self.assignor = preferred_assignor(&self.members);
        self.target = match self.assignor {
            "range" => range_assignment(&self.members, &self.metadata),
            _ => uniform_assignment(&self.members, &self.metadata),
        };
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves one member towards the target (see the module comment).
    fn reconcile(&mut self, member_id: &str, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let taken_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.pending_revocation.iter()).copied())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let member = self.members.get_mut(member_id).expect("present");
        let revoke: BTreeSet<TopicPartition> = member.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            member.assigned.retain(|tp| !revoke.contains(tp));
            member.pending_revocation.extend(revoke);
            member.revocation_deadline_ms.get_or_insert(now_ms + i64::from(member.rebalance_timeout_ms));
        }
        if !member.pending_revocation.is_empty() {
            return;
        }
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
        for tp in target {
            if !taken_by_others.contains(&tp) {
                member.assigned.insert(tp);
            }
        }
    }
}

impl ConsumerMember {
    /// Kafka's rule: the member's epoch, or its previous one while it owns only partitions it
    /// is still assigned. A heartbeat answer can be lost (a client that timed out its request
    /// sends the next one with the epoch it knows); fencing it would revoke everything it owns
    /// and rebalance the group again, while it holds nothing another member may have.
    fn accepts_epoch(&self, epoch: i32, owned: Option<&BTreeSet<TopicPartition>>) -> bool {
        epoch == self.epoch || (epoch == self.previous_epoch && epoch < self.epoch && owned.is_some_and(|owned| owned.is_subset(&self.assigned)))
    }
}

/// The assignor most members prefer (Kafka's rule); ties and members that name none go to the
/// earlier of ASSIGNORS, so a group where nobody names one uses the default.
fn preferred_assignor(members: &BTreeMap<String, ConsumerMember>) -> &'static str {
    let votes = |name: &str| members.values().filter(|m| m.server_assignor.as_deref() == Some(name)).count();
    let mut best = ASSIGNORS[0];
    let mut best_votes = votes(best);
    for name in &ASSIGNORS[1..] {
        let name_votes = votes(name);
        if name_votes > best_votes {
            (best, best_votes) = (name, name_votes);
        }
    }
    best
}

/// Kafka's range assignor: per topic, the members subscribed to it, sorted by member id, each
/// get a contiguous range of its partitions, the first `partitions % members` one more. Topics
/// with the same partition count and subscribers are thus co-partitioned: a member gets the
/// same partition numbers of each. Not sticky: reconciliation moves members to it.
fn range_assignment(
    members: &BTreeMap<String, ConsumerMember>,
    metadata: &BTreeMap<String, ([u8; 16], i32)>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = members.keys().map(|id| (id.clone(), BTreeSet::new())).collect();
    for (name, (topic_id, count)) in metadata {
        // A BTreeMap iterates in member id order.
        let subscribers: Vec<&String> = members.values().filter(|m| m.subscribed.contains(name)).map(|m| &m.member_id).collect();
        if subscribers.is_empty() || *count <= 0 {
            continue;
        }
        let count = *count as usize;
        let (quota, extra) = (count / subscribers.len(), count % subscribers.len());
        let mut start = 0usize;
        for (index, member_id) in subscribers.into_iter().enumerate() {
            let length = quota + usize::from(index < extra);
            let assigned = target.get_mut(member_id).expect("every member");
            // Partition numbers are below `count`, itself an i32.
            assigned.extend((start..start + length).map(|p| (*topic_id, p as i32)));
            start += length;
        }
        assert_eq!(start, count, "every partition of {name} is assigned once");
    }
    target
}

/// Every subscribed partition to one subscribed member, as evenly as subscriptions allow,
/// keeping partitions where they are while the owner is under its share (sticky).
fn uniform_assignment(
    members: &BTreeMap<String, ConsumerMember>,
    metadata: &BTreeMap<String, ([u8; 16], i32)>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = members.keys().map(|id| (id.clone(), BTreeSet::new())).collect();
    let partitions: Vec<(&String, TopicPartition)> =
        metadata.iter().flat_map(|(name, (id, count))| (0..*count).map(move |p| (name, (*id, p)))).collect();
    let eligible = |name: &str| -> Vec<&String> { members.values().filter(|m| m.subscribed.iter().any(|s| s == name)).map(|m| &m.member_id).collect() };
    // Each member's share of all partitions (subscriptions that differ make it approximate).
    let share = partitions.len().div_ceil(members.len().max(1)).max(1);
    let mut unplaced = Vec::new();
    for (name, tp) in &partitions {
        let owner = members.values().find(|m| m.subscribed.contains(name) && (m.assigned.contains(tp) || m.pending_revocation.contains(tp)));
        match owner {
            Some(owner) if target[&owner.member_id].len() < share => {
                target.get_mut(&owner.member_id).expect("every member").insert(*tp);
            }
            _ => unplaced.push((*name, *tp)),
        }
    }
    for (name, tp) in unplaced {
        if let Some(least) = eligible(name).into_iter().min_by_key(|id| (target[*id].len(), (*id).clone())) {
            target.get_mut(least).expect("every member").insert(tp);
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, ([u8; 16], i32)> {
        BTreeMap::from([("t".to_string(), ([1; 16], 6))])
    }

    fn request(member_id: &str, epoch: i32, owned: Option<&BTreeSet<TopicPartition>>) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            member_epoch: epoch,
            instance_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            server_assignor: None,
            owned: owned.cloned(),
            client_id: "c".into(),
            client_host: "/h".into(),
        }
    }

    #[test]
    fn two_members_reconcile_without_sharing_a_partition() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let a = group.heartbeat(request("a", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        assert_eq!((a.error, a.member_epoch), (None, 2), "join bumps the epoch, and so does the first metadata");
        let a_owned = a.assignment.clone().unwrap();
        assert_eq!(a_owned.len(), 6);
        let b = group.heartbeat(request("b", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        assert_eq!(b.assignment.as_ref().map(BTreeSet::len), Some(0), "b waits until a releases");
        let b_epoch = b.member_epoch;
        // a learns it must give up three partitions; its epoch stays until it has.
        let a2 = group.heartbeat(request("a", 2, Some(&a_owned)), || unreachable!(), &topics, 10, 1);
        let kept = a2.assignment.clone().unwrap();
        assert_eq!((kept.len(), a2.member_epoch), (3, 2));
        assert_eq!(group.state_name(), "Reconciling");
        // a reports the revocation done: it moves to the new epoch.
        let a3 = group.heartbeat(request("a", 2, Some(&kept)), || unreachable!(), &topics, 10, 2);
        assert_eq!(a3.member_epoch, group.assignment_epoch);
        let b2 = group.heartbeat(request("b", b_epoch, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 3);
        let b_owned = b2.assignment.unwrap();
        assert_eq!(b_owned.len(), 3);
        assert!(b_owned.is_disjoint(&kept));
        assert_eq!(group.state_name(), "Stable");
        assert_eq!(group.validate_commit("b", b2.member_epoch), Ok(()));
        assert_eq!(group.validate_commit("b", b2.member_epoch - 1), Err(ResponseError::StaleMemberEpoch));
        assert_eq!(group.heartbeat(request("b", 99, None), || unreachable!(), &topics, 10, 4).error, Some(ResponseError::FencedMemberEpoch));
        // b leaves; a gets everything back.
        group.heartbeat(request("b", -1, None), || unreachable!(), &topics, 10, 5);
        let a4 = group.heartbeat(request("a", a3.member_epoch, Some(&kept)), || unreachable!(), &topics, 10, 6);
        assert_eq!(a4.assignment.map(|a| a.len()), Some(6));
        // Sessions end.
        assert!(group.expire(SESSION_TIMEOUT_MS + 10));
        assert!(group.members.is_empty());
    }

    #[test]
    fn a_heartbeat_at_the_previous_epoch_is_accepted_while_the_member_owns_only_its_assignment() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let a = group.heartbeat(request("a", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        let a_owned = a.assignment.unwrap();
        group.heartbeat(request("b", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        let kept = group.heartbeat(request("a", a.member_epoch, Some(&a_owned)), || unreachable!(), &topics, 10, 1).assignment.unwrap();
        // a reports the revocation done and moves to the new epoch, but that answer is lost
        // (its client timed out the request under load): it asks again at the epoch it knows.
        let bumped = group.heartbeat(request("a", a.member_epoch, Some(&kept)), || unreachable!(), &topics, 10, 2);
        assert!(bumped.member_epoch > a.member_epoch);
        let again = group.heartbeat(request("a", a.member_epoch, Some(&kept)), || unreachable!(), &topics, 10, 3);
        assert_eq!(again.error, None, "not fenced for a lost answer");
        assert_eq!((again.member_epoch, again.assignment), (bumped.member_epoch, Some(kept.clone())), "the answer is sent again");
        // Still at the previous epoch but owning a partition it gave up: fenced, as in Kafka.
        let stale = group.heartbeat(request("a", a.member_epoch, Some(&a_owned)), || unreachable!(), &topics, 10, 4);
        assert_eq!(stale.error, Some(ResponseError::FencedMemberEpoch));
        let unknown_owned = group.heartbeat(request("a", a.member_epoch, None), || unreachable!(), &topics, 10, 4);
        assert_eq!(unknown_owned.error, Some(ResponseError::FencedMemberEpoch));
        let ahead = group.heartbeat(request("a", bumped.member_epoch + 1, Some(&kept)), || unreachable!(), &topics, 10, 4);
        assert_eq!(ahead.error, Some(ResponseError::FencedMemberEpoch));
        assert_eq!(group.heartbeat(request("a", bumped.member_epoch, Some(&kept)), || unreachable!(), &topics, 10, 5).error, None);
    }

    #[test]
    fn sessions_last_the_configured_timeout() {
        let mut group = ConsumerGroup::with_session_timeout("g", 6_000);
        group.heartbeat(request("a", 0, Some(&BTreeSet::new())), || unreachable!(), &topics(), 10, 1_000);
        assert!(!group.expire(6_999));
        assert!(group.expire(7_000), "a member silent for the session timeout is removed");
        assert!(group.members.is_empty());
    }

    #[test]
    fn a_member_that_does_not_revoke_is_fenced_at_its_rebalance_timeout() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let a = group.heartbeat(request("a", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        let a_owned = a.assignment.unwrap();
        group.heartbeat(request("b", 0, Some(&BTreeSet::new())), || unreachable!(), &topics, 10, 0);
        // a is told to revoke, but keeps reporting all six partitions.
        for now in [1_000, 10_000, 29_000] {
            let answer = group.heartbeat(request("a", a.member_epoch, Some(&a_owned)), || unreachable!(), &topics, 10, now);
            assert_eq!(answer.error, None);
            assert!(!group.expire(now));
        }
        assert!(group.expire(31_000), "fenced 30 s (its rebalance timeout) after the revocation began");
        assert!(!group.members.contains_key("a"));
    }

    fn member(id: &str, subscribed: &[&str], server_assignor: Option<&str>) -> ConsumerMember {
        ConsumerMember {
            member_id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            epoch: 0,
            previous_epoch: 0,
            subscribed: subscribed.iter().map(|s| s.to_string()).collect(),
            server_assignor: server_assignor.map(str::to_string),
            assigned: BTreeSet::new(),
            pending_revocation: BTreeSet::new(),
            session_deadline_ms: 0,
            rebalance_timeout_ms: 0,
            revocation_deadline_ms: None,
            last_sent: None,
        }
    }

    fn members(list: &[ConsumerMember]) -> BTreeMap<String, ConsumerMember> {
        list.iter().map(|m| (m.member_id.clone(), m.clone())).collect()
    }

    /// A member's partitions of one topic, in order.
    fn of_topic(assigned: &BTreeSet<TopicPartition>, topic_id: [u8; 16]) -> Vec<i32> {
        assigned.iter().filter(|(id, _)| *id == topic_id).map(|(_, p)| *p).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_the_first_members_one_more() {
        let metadata = BTreeMap::from([("t".to_string(), ([1; 16], 7)), ("u".to_string(), ([2; 16], 7))]);
        // Inserted out of order: ranges follow member id order, not arrival.
        let group = members(&[member("c", &["t", "u"], None), member("a", &["t", "u"], None), member("b", &["t", "u"], None)]);
        let target = range_assignment(&group, &metadata);
        assert_eq!(of_topic(&target["a"], [1; 16]), vec![0, 1, 2]);
        assert_eq!(of_topic(&target["b"], [1; 16]), vec![3, 4]);
        assert_eq!(of_topic(&target["c"], [1; 16]), vec![5, 6]);
        // Co-partitioned: the same partition numbers of the other topic.
        for id in ["a", "b", "c"] {
            assert_eq!(of_topic(&target[id], [1; 16]), of_topic(&target[id], [2; 16]), "member {id}");
        }
        assert_eq!(target.values().map(BTreeSet::len).sum::<usize>(), 14);
    }

    #[test]
    fn range_assigns_each_topic_among_its_subscribers_only() {
        let metadata = BTreeMap::from([("t".to_string(), ([1; 16], 4)), ("u".to_string(), ([2; 16], 3)), ("v".to_string(), ([3; 16], 0))]);
        let group = members(&[member("a", &["t"], None), member("b", &["t", "u", "v"], None), member("c", &["u"], None)]);
        let target = range_assignment(&group, &metadata);
        assert_eq!(of_topic(&target["a"], [1; 16]), vec![0, 1]);
        assert_eq!(of_topic(&target["b"], [1; 16]), vec![2, 3]);
        assert_eq!(of_topic(&target["b"], [2; 16]), vec![0, 1]);
        assert_eq!(of_topic(&target["c"], [2; 16]), vec![2]);
        assert!(of_topic(&target["a"], [2; 16]).is_empty() && of_topic(&target["c"], [1; 16]).is_empty());
        // More subscribers than partitions: the last ones get nothing.
        let many = members(&[member("a", &["u"], None), member("b", &["u"], None), member("c", &["u"], None), member("d", &["u"], None)]);
        let target = range_assignment(&many, &metadata);
        assert_eq!(["a", "b", "c", "d"].map(|id| of_topic(&target[id], [2; 16])), [vec![0], vec![1], vec![2], vec![]]);
    }

    #[test]
    fn assignor_is_the_one_most_members_prefer() {
        assert_eq!(preferred_assignor(&BTreeMap::new()), "uniform");
        assert_eq!(preferred_assignor(&members(&[member("a", &[], None)])), "uniform", "nobody names one: the default");
        assert_eq!(preferred_assignor(&members(&[member("a", &[], Some("range")), member("b", &[], None)])), "range");
        assert_eq!(
            preferred_assignor(&members(&[member("a", &[], Some("range")), member("b", &[], Some("uniform"))])),
            "uniform",
            "a tie goes to the earlier in Kafka's default order"
        );
        assert_eq!(
            preferred_assignor(&members(&[member("a", &[], Some("range")), member("b", &[], Some("uniform")), member("c", &[], Some("range"))])),
            "range"
        );
    }

    fn range_request(member_id: &str, epoch: i32, owned: &BTreeSet<TopicPartition>) -> HeartbeatRequest {
        HeartbeatRequest { server_assignor: (epoch == 0).then(|| "range".to_string()), ..request(member_id, epoch, Some(owned)) }
    }

    /// Heartbeats every member, each reporting what it was last given, until the group is
    /// Stable; the members' assignments then.
    fn settle(group: &mut ConsumerGroup, topics: &BTreeMap<String, ([u8; 16], i32)>, now_ms: i64) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        for _ in 0..10 {
            let ids: Vec<String> = group.members.keys().cloned().collect();
            for id in ids {
                let member = &group.members[&id];
                let (epoch, owned) = (member.epoch, member.assigned.clone());
                let answer = group.heartbeat(range_request(&id, epoch, &owned), || unreachable!(), topics, 10, now_ms);
                assert_eq!(answer.error, None);
            }
            if group.state_name() == "Stable" {
                return group.members.iter().map(|(id, m)| (id.clone(), m.assigned.clone())).collect();
            }
        }
        panic!("not stable after 10 rounds: {}", group.state_name());
    }

    #[test]
    fn range_members_joining_and_leaving_reconcile_to_ranges() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let empty = BTreeSet::new();
        let b = group.heartbeat(range_request("b", 0, &empty), || unreachable!(), &topics, 10, 0);
        assert_eq!((b.error, b.assignment.map(|a| a.len())), (None, Some(6)));
        assert_eq!(group.assignor_name(), "range");
        group.heartbeat(range_request("a", 0, &empty), || unreachable!(), &topics, 10, 0);
        let settled = settle(&mut group, &topics, 1);
        // "a" sorts first: it gets the first range, though "b" owned everything before.
        assert_eq!(of_topic(&settled["a"], [1; 16]), vec![0, 1, 2]);
        assert_eq!(of_topic(&settled["b"], [1; 16]), vec![3, 4, 5]);
        assert_eq!(group.target_of("a"), settled["a"]);
        group.heartbeat(range_request("c", 0, &empty), || unreachable!(), &topics, 10, 2);
        let settled = settle(&mut group, &topics, 3);
        assert_eq!(["a", "b", "c"].map(|id| of_topic(&settled[id], [1; 16])), [vec![0, 1], vec![2, 3], vec![4, 5]]);
        group.heartbeat(request("a", -1, None), || unreachable!(), &topics, 10, 4);
        let settled = settle(&mut group, &topics, 5);
        assert_eq!(["b", "c"].map(|id| of_topic(&settled[id], [1; 16])), [vec![0, 1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn an_unknown_assignor_is_refused_and_a_change_of_preference_moves_the_group() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let empty = BTreeSet::new();
        let refused = group.heartbeat(
            HeartbeatRequest { server_assignor: Some("sticky".into()), ..request("a", 0, Some(&empty)) },
            || unreachable!(),
            &topics,
            10,
            0,
        );
        assert_eq!(refused.error, Some(ResponseError::UnsupportedAssignor));
        assert_eq!(ResponseError::UnsupportedAssignor.code(), 112);
        assert_eq!(refused.error_message.as_deref(), Some("ServerAssignor sticky is not supported. Supported assignors: uniform, range."));
        assert!(group.members.is_empty(), "a refused join adds nobody");
        let a = group.heartbeat(request("a", 0, Some(&empty)), || unreachable!(), &topics, 10, 0);
        assert_eq!((a.error, group.assignor_name()), (None, "uniform"));
        let epoch_before = group.group_epoch;
        let a2 = group.heartbeat(
            HeartbeatRequest { server_assignor: Some("range".into()), ..request("a", a.member_epoch, a.assignment.as_ref()) },
            || unreachable!(),
            &topics,
            10,
            1,
        );
        assert_eq!(a2.error, None);
        assert_eq!((group.group_epoch, group.assignor_name()), (epoch_before + 1, "range"));
        let refused = group.heartbeat(
            HeartbeatRequest { server_assignor: Some(String::new()), ..request("a", a2.member_epoch, a.assignment.as_ref()) },
            || unreachable!(),
            &topics,
            10,
            2,
        );
        assert_eq!(refused.error, Some(ResponseError::UnsupportedAssignor), "an empty name is no assignor either");
    }

    #[test]
    fn the_group_is_assigning_between_an_expiry_and_the_next_heartbeat() {
        let mut group = ConsumerGroup::new("g");
        let topics = topics();
        let empty = BTreeSet::new();
        group.heartbeat(request("a", 0, Some(&empty)), || unreachable!(), &topics, 10, 0);
        let b = group.heartbeat(request("b", 0, Some(&empty)), || unreachable!(), &topics, 10, 10_000);
        assert_eq!(group.state_name(), "Reconciling", "a still owns b's share");
        // a's session ends first; the target for the group without a is not computed yet.
        assert!(group.expire(SESSION_TIMEOUT_MS + 1));
        assert_eq!((group.members.len(), group.state_name()), (1, "Assigning"));
        let b2 = group.heartbeat(request("b", b.member_epoch, Some(&empty)), || unreachable!(), &topics, 10, SESSION_TIMEOUT_MS + 2);
        assert_eq!(b2.assignment.map(|a| a.len()), Some(6));
        assert_eq!(group.state_name(), "Stable");
    }
}
