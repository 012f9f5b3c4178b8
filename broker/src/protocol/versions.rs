//! The one table of Kafka APIs this broker implements, and at which versions.
//!
//! ApiVersions advertises exactly this table (see `codec::api_versions_response`) and
//! `codec::decode_request` refuses every (api key, version) pair outside it, so a client never
//! sends a request we cannot serve. Adding an API is one row here plus one line in the
//! `api_messages!` list in `codec.rs` (a unit test checks that the two agree).
//!
//! Every range is clamped to what kafka-protocol 0.18 can decode (`ApiKey::valid_versions()`,
//! checked by a unit test). Lower bounds follow Kafka 4.0 (KIP-896 removed the old versions and
//! kafka-protocol 0.18 dropped them with it).

use kafka_protocol::messages::ApiKey;

/// (api key, lowest version, highest version), both inclusive.
///
/// Reasons per row:
/// - ApiVersions 0-4: all of them. v3+ is flexible and carries client name/version; v4 only
///   adds the KIP-511 rule that an unsupported version is still answered (with v0).
/// - Metadata 0-12: v10+ carry topic ids, which we have. v13 (Kafka 4.0, KIP-1102) only adds a
///   top-level error code for REBOOTSTRAP_REQUIRED; librdkafka 2.x asks for at most 12 and the
///   Java client falls back to 12, so we stop at 12 until a handler decides to set that code.
/// - Produce 3-11: v12 means "transaction version 2" (KIP-890: partitions are added to the
///   transaction implicitly); Kafka itself advertises at most 11 unless TV2 is finalized, which
///   we never finalize. v13 addresses topics by id instead of name. 11 is what clients use.
/// - Fetch 4-16: v12+ flexible with diverging epochs, v13+ topic ids (we have them), v15 replica
///   state, v16 node endpoints for leader changes. v17 adds `replica_directory_id` (JBOD
///   followers) and v18 the follower high watermark: replica-only fields whose semantics we have
///   not verified, so we stop at 16 (Java 4.x consumers fall back to it).
/// - ListOffsets 1-8: v7 adds MAX_TIMESTAMP (-3), v8 EARLIEST_LOCAL_TIMESTAMP (-4), which is
///   EARLIEST here because the whole log is local. v9 (LATEST_TIERED_TIMESTAMP, -5) and v10
///   (timeout_ms, EARLIEST_PENDING_UPLOAD) are tiered-storage features we do not have.
/// - CreateTopics 2-7, DeleteTopics 1-6, CreatePartitions 0-3, DeleteRecords 0-2: all versions
///   kafka-protocol knows; the newest add flexible encoding and topic ids in answers.
/// - DescribeCluster 0-1: v1 adds the endpoint type (brokers, not controllers, for us); v2
///   (KIP-1073) adds fenced brokers, which a single broker never has, but no client needs it.
/// - DescribeConfigs 1-4, AlterConfigs 0-2, IncrementalAlterConfigs 0-1: all versions
///   kafka-protocol knows.
/// - InitProducerId 0-4: idempotent and transactional producers (see `api::producer_id`).
///   v3 adds the current producer id and epoch (KIP-360), v4 lets the answer say PRODUCER_FENCED
///   (KIP-588). v5 is transaction version 2
///   (KIP-890) and v6 two-phase commit (KIP-939): transaction features we do not have, so, as
///   with Produce v12, we stop before them.
/// - Consumer groups (the classic protocol), lower bounds from Kafka 4.0 (KIP-896):
///   - FindCoordinator 0-6: v3+ flexible, v4 batched keys (KIP-699, librdkafka 2.x and Java
///     3.x+ use it), v5 and v6 only add error codes and key type 2 (share groups), which we
///     answer INVALID_REQUEST, as every key type but 0 (groups).
///   - JoinGroup 2-9: v4 MEMBER_ID_REQUIRED (KIP-394), v5 group.instance.id (KIP-345), v6
///     flexible, v7 protocol type in the answer, v8 reason, v9 skip_assignment (KIP-814).
///   - SyncGroup 0-5, Heartbeat 0-4, LeaveGroup 0-5 (v3 batched members, v5 reason): all
///     versions, all in Kafka 4.0.
///   - OffsetCommit 2-9: v8 flexible, v9 (KIP-848) only renames the generation to "generation
///     or member epoch", which classic groups read as before. v10 addresses topics by id,
///     beyond kafka-protocol 0.18.
///   - OffsetFetch 1-9: v7 require_stable (no pending transactional offsets here: always
///     stable), v8 several groups (KIP-709), v9 member id and epoch, for KIP-848 groups only.
///   - ConsumerGroupHeartbeat 0-1 (KIP-848, `group.protocol=consumer`): v1 (KIP-1082) lets
///     the client name the member; server-side uniform and range assignors, no regex
///     subscriptions.
///   - ConsumerGroupDescribe 0-1 (KIP-848): all versions kafka-protocol knows; v1 (KIP-1099)
///     only adds each member's type, always "consumer" (1) here: classic members never join a
///     consumer group (no KIP-1099 upgrade path).
///   - ListGroups 0-5 (v4 state filter, v5 type filter), DescribeGroups 0-6 (v6 answers
///     GROUP_ID_NOT_FOUND for an unknown group), DeleteGroups 0-2, OffsetDelete 0: all.
/// - Transactions (KIP-98): AddPartitionsToTxn 0-3 (v4-5 are the brokers' batched form, KIP-890)
///   and EndTxn 0-3 (v4 adds TRANSACTION_ABORTABLE, v5 transaction version 2); FindCoordinator
///   answers key type 1 (transactional ids). AddOffsetsToTxn 0-3 and TxnOffsetCommit 0-3 (v4 is
///   transaction version 2; v3 adds the generation and member, checked when given).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// The inclusive version range this broker serves for `api_key`, or `None` if it does not
/// implement the API at all.
pub fn supported(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, version_min, version_max)| (version_min, version_max))
}

/// Whether this broker serves `api_key` at `api_version`.
pub fn is_supported(api_key: ApiKey, api_version: i16) -> bool {
    matches!(supported(api_key), Some((min, max)) if (min..=max).contains(&api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_within_what_kafka_protocol_decodes() {
        for &(api_key, version_min, version_max) in SUPPORTED {
            let valid = api_key.valid_versions();
            assert!(version_min <= version_max, "{api_key:?}: empty range");
            assert!(
                valid.min <= version_min && version_max <= valid.max,
                "{api_key:?} {version_min}-{version_max} is outside kafka-protocol's {valid}"
            );
        }
    }

    #[test]
    fn each_api_key_appears_once() {
        for (i, (a, _, _)) in SUPPORTED.iter().enumerate() {
            for (b, _, _) in &SUPPORTED[i + 1..] {
                assert_ne!(a, b, "{a:?} appears twice");
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(supported(ApiKey::ApiVersions), Some((0, 4)));
        assert_eq!(supported(ApiKey::JoinGroup), Some((2, 9)));
        assert_eq!(supported(ApiKey::ConsumerGroupDescribe), Some((0, 1)));
        assert_eq!(supported(ApiKey::ShareGroupDescribe), None);
        assert!(is_supported(ApiKey::Produce, 3));
        assert!(is_supported(ApiKey::Produce, 11));
        assert!(!is_supported(ApiKey::Produce, 2));
        assert!(!is_supported(ApiKey::Produce, 12));
        assert!(!is_supported(ApiKey::JoinGroup, 1));
        assert!(!is_supported(ApiKey::ConsumerGroupDescribe, 2));
    }
}
