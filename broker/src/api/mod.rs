//! The Kafka APIs: one file per API family, each a function from a decoded request body to a
//! response body, over the `Cluster`. No I/O here beyond what the cluster and logs do: framing,
//! decoding and sockets live in `protocol` and `server`.

mod admin;
mod configs;
pub mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod txn;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::Cluster;

/// Who sent a request, as group members report it (DescribeGroups).
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub client_id: String,
    /// Kafka's form: "/" and the peer's IP address.
    pub client_host: String,
}

/// Answers one request. `None`: no response is sent (Produce with acks=0).
/// ApiVersions is answered by the server from the version table, before dispatch.
pub async fn handle(cluster: &Arc<Cluster>, api_version: i16, body: RequestKind) -> Option<ResponseKind> {
    handle_from(cluster, api_version, body, &RequestContext::default()).await
}

/// `handle`, for a request whose sender is known.
pub async fn handle_from(cluster: &Arc<Cluster>, api_version: i16, body: RequestKind, context: &RequestContext) -> Option<ResponseKind> {
    let response = match body {
        RequestKind::Metadata(request) => ResponseKind::Metadata(metadata::handle(cluster, api_version, request).await),
        RequestKind::Produce(request) => return produce::handle(cluster, api_version, request).await.map(ResponseKind::Produce),
        RequestKind::Fetch(request) => ResponseKind::Fetch(fetch::handle(cluster, api_version, request).await),
        RequestKind::ListOffsets(request) => ResponseKind::ListOffsets(list_offsets::handle(cluster, api_version, request).await),
        RequestKind::CreateTopics(request) => ResponseKind::CreateTopics(admin::create_topics(cluster, api_version, request).await),
        RequestKind::DeleteTopics(request) => ResponseKind::DeleteTopics(admin::delete_topics(cluster, api_version, request).await),
        RequestKind::CreatePartitions(request) => ResponseKind::CreatePartitions(admin::create_partitions(cluster, api_version, request).await),
        RequestKind::DeleteRecords(request) => ResponseKind::DeleteRecords(admin::delete_records(cluster, api_version, request).await),
        RequestKind::InitProducerId(request) => ResponseKind::InitProducerId(producer_id::handle(cluster, api_version, request).await),
        RequestKind::DescribeCluster(request) => ResponseKind::DescribeCluster(admin::describe_cluster(cluster, api_version, request)),
        RequestKind::DescribeConfigs(request) => ResponseKind::DescribeConfigs(configs::describe_configs(cluster, api_version, request)),
        RequestKind::AlterConfigs(request) => ResponseKind::AlterConfigs(configs::alter_configs(cluster, api_version, request).await),
        RequestKind::IncrementalAlterConfigs(request) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter_configs(cluster, api_version, request).await)
        }
        RequestKind::FindCoordinator(request) => ResponseKind::FindCoordinator(groups::find_coordinator(cluster, api_version, request)),
        RequestKind::JoinGroup(request) => ResponseKind::JoinGroup(groups::join_group(cluster, api_version, request, context).await),
        RequestKind::SyncGroup(request) => ResponseKind::SyncGroup(groups::sync_group(cluster, api_version, request).await),
        RequestKind::Heartbeat(request) => ResponseKind::Heartbeat(groups::heartbeat(cluster, api_version, request)),
        RequestKind::LeaveGroup(request) => ResponseKind::LeaveGroup(groups::leave_group(cluster, api_version, request).await),
        RequestKind::OffsetCommit(request) => ResponseKind::OffsetCommit(groups::offset_commit(cluster, api_version, request).await),
        RequestKind::OffsetFetch(request) => ResponseKind::OffsetFetch(groups::offset_fetch(cluster, api_version, request)),
        RequestKind::ListGroups(request) => ResponseKind::ListGroups(groups::list_groups(cluster, api_version, request)),
        RequestKind::DescribeGroups(request) => ResponseKind::DescribeGroups(groups::describe_groups(cluster, api_version, request)),
        RequestKind::DeleteGroups(request) => ResponseKind::DeleteGroups(groups::delete_groups(cluster, api_version, request).await),
        RequestKind::ConsumerGroupHeartbeat(request) => {
            ResponseKind::ConsumerGroupHeartbeat(groups::consumer_group_heartbeat(cluster, api_version, request, context))
        }
        RequestKind::ConsumerGroupDescribe(request) => {
            ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe(cluster, api_version, request))
        }
        RequestKind::OffsetDelete(request) => ResponseKind::OffsetDelete(groups::offset_delete(cluster, api_version, request).await),
        RequestKind::AddPartitionsToTxn(request) => ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(cluster, api_version, request).await),
        RequestKind::EndTxn(request) => ResponseKind::EndTxn(txn::end_txn(cluster, api_version, request).await),
        RequestKind::AddOffsetsToTxn(request) => ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(cluster, api_version, request).await),
        RequestKind::TxnOffsetCommit(request) => ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(cluster, api_version, request).await),
        other => {
            // The server only dispatches APIs in the version table; reaching here is a bug in
            // that table, answered by closing the connection rather than a wrong response.
            tracing::error!(request = ?std::mem::discriminant(&other), "request for an API without a handler");
            return None;
        }
    };
    Some(response)
}

/// Starts a Produce request: its batches are appended before this returns; the future waits
/// for durability and yields the response (`None` for acks=0). The flag asks the server to
/// close the connection (a failed acks=0 produce, as in Kafka). `frame`: the request frame it
/// was decoded from, which lets a one-batch request give its batch to the log without a copy.
/// See `produce::start`.
pub fn start_produce(
    cluster: &Arc<Cluster>,
    api_version: i16,
    request: kafka_protocol::messages::ProduceRequest,
    frame: Option<bytes::Bytes>,
) -> (impl std::future::Future<Output = Option<ResponseKind>> + Send + 'static, bool) {
    let produce::Started { completion, close_connection } = produce::start(cluster, api_version, request, frame);
    (async move { completion.await.map(ResponseKind::Produce) }, close_connection)
}

/// Answers a Fetch with each partition's batches apart, for `protocol::encode_fetch_response`
/// to write without copying them (`handle` answers the same with the records concatenated).
pub async fn fetch_segmented(cluster: &Arc<Cluster>, api_version: i16, request: kafka_protocol::messages::FetchRequest) -> fetch::FetchAnswer {
    fetch::handle_segmented(cluster, api_version, request).await
}

/// A `StrBytes` for a response field.
pub(crate) fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// A topic name for a response field.
pub(crate) fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(name))
}
