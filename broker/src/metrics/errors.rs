//! The error codes a Kafka response carries, wherever the API puts them: a top-level code, and
//! codes per topic, partition, group, member or config resource.

use kafka_protocol::messages::{FetchResponse, ResponseKind};


/// Where in a response an error code sits.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Level {
    Request,
    Topic,
    Partition,
    Group,
    Member,
    Resource,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::Request => "request",
            Level::Topic => "topic",
            Level::Partition => "partition",
            Level::Group => "group",
            Level::Member => "member",
            Level::Resource => "resource",
        }
    }
}

/// Calls `found` for every non-zero error code in a Fetch response.
pub(super) fn for_each_fetch_error(response: &FetchResponse, found: &mut dyn FnMut(Level, i16)) {
    let mut code = |level: Level, code: i16| {
        if code != 0 {
            found(level, code);
        }
    };
    code(Level::Request, response.error_code);
    response.responses.iter().flat_map(|t| &t.partitions).for_each(|p| code(Level::Partition, p.error_code));
}

/// Calls `found` for every non-zero error code in `response`.
pub(super) fn for_each_error(response: &ResponseKind, found: &mut dyn FnMut(Level, i16)) {
    let mut code = |level: Level, code: i16| {
        if code != 0 {
            found(level, code);
        }
    };
    use Level::*;
    match response {
        ResponseKind::Produce(r) => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| code(Partition, p.error_code)),
        ResponseKind::Fetch(r) => for_each_fetch_error(r, &mut code),
        ResponseKind::Metadata(r) => {
            code(Request, r.error_code);
            for topic in &r.topics {
                code(Topic, topic.error_code);
                topic.partitions.iter().for_each(|p| code(Partition, p.error_code));
            }
        }
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code)),
        ResponseKind::ApiVersions(r) => code(Request, r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| code(Topic, t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| code(Topic, t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| code(Topic, t.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code)),
        ResponseKind::InitProducerId(r) => code(Request, r.error_code),
        ResponseKind::DescribeCluster(r) => code(Request, r.error_code),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|c| code(Resource, c.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|c| code(Resource, c.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|c| code(Resource, c.error_code)),
        ResponseKind::FindCoordinator(r) => {
            code(Request, r.error_code);
            r.coordinators.iter().for_each(|c| code(Group, c.error_code));
        }
        ResponseKind::JoinGroup(r) => code(Request, r.error_code),
        ResponseKind::SyncGroup(r) => code(Request, r.error_code),
        ResponseKind::Heartbeat(r) => code(Request, r.error_code),
        ResponseKind::LeaveGroup(r) => {
            code(Request, r.error_code);
            r.members.iter().for_each(|m| code(Member, m.error_code));
        }
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            code(Request, r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code));
            for group in &r.groups {
                code(Group, group.error_code);
                group.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code));
            }
        }
        ResponseKind::ListGroups(r) => code(Request, r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| code(Group, g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| code(Group, g.error_code)),
        ResponseKind::OffsetDelete(r) => {
            code(Request, r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| code(Partition, p.error_code));
        }
        ResponseKind::ConsumerGroupHeartbeat(r) => code(Request, r.error_code),
        ResponseKind::ConsumerGroupDescribe(r) => r.groups.iter().for_each(|g| code(Group, g.error_code)),
        // APIs this broker does not serve.
        _ => {}
    }
}
