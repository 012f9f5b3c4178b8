//! Request decoding and response encoding on top of kafka-protocol, sans I/O.
//!
//! A frame (size prefix already removed by `frame::FrameDecoder`) is decoded in three steps:
//! 1. peek api key, api version and correlation id (8 fixed bytes), so that every refusal can
//!    name the request it refuses;
//! 2. check the pair against `versions::SUPPORTED` before kafka-protocol sees a byte of it;
//! 3. decode the header (header version from the api key and version) and the body, and insist
//!    that nothing is left over.
//!
//! The bodies are kafka-protocol's `RequestKind`/`ResponseKind` (feature `messages_enums`);
//! `decode_request` only ever produces the variants of the versions table, so a dispatcher
//! needs one arm per row plus a catch-all that cannot be reached.
//!
//! Hostile input: no path here panics on any input (only fixed-size peeks, all length-checked),
//! and kafka-protocol's decoders return errors rather than panic (see the notes in
//! `tests/protocol_codec.rs`). The memory kafka-protocol allocates while decoding is bounded by
//! the frame size times a per-message factor, measured by the tests; frame size itself is
//! bounded by `frame::FrameDecoder`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::frame::{FRAME_BYTES_MIN, SIZE_PREFIX_BYTES};
use super::versions;

/// Kafka error code UNSUPPORTED_VERSION.
pub const ERROR_UNSUPPORTED_VERSION: i16 = 35;

/// The version of an ApiVersions response to a request of a version we do not support
/// (KIP-511): v0, the one every client can read.
pub const API_VERSIONS_FALLBACK_VERSION: i16 = 0;

/// Longest `reason` kept in `DecodeError::Malformed`; errors are logged per request, and a
/// hostile peer must not make us format or log unbounded text.
const REASON_BYTES_MAX: usize = 256;

/// The APIs with a message type here: one line per API, the `RequestKind`/`ResponseKind`
/// variant name (which is also the `ApiKey` name). Generates the per-variant helpers that
/// kafka-protocol does not provide. Keep it in step with `versions::SUPPORTED` (a unit test
/// checks); adding an API is a row there and a line here.
macro_rules! supported_messages {
    ($($variant:ident,)*) => {
        /// Every API key listed (for the consistency test).
        #[cfg(test)]
        const API_KEYS_WITH_MESSAGES: &[ApiKey] = &[$(ApiKey::$variant,)*];

        /// The API of a request body, if it is one this broker serves.
        pub fn request_api_key(body: &RequestKind) -> Option<ApiKey> {
            match body {
                $(RequestKind::$variant(_) => Some(ApiKey::$variant),)*
                _ => None,
            }
        }

        /// The API of a response body, if it is one this broker serves.
        pub fn response_api_key(body: &ResponseKind) -> Option<ApiKey> {
            match body {
                $(ResponseKind::$variant(_) => Some(ApiKey::$variant),)*
                _ => None,
            }
        }

        /// The encoded size of a response body, so the frame is allocated once at its final
        /// size (a fetch response can be many MiB; growing by doubling would copy it again).
        fn response_body_bytes(body: &ResponseKind, api_version: i16) -> Option<Result<usize, String>> {
            match body {
                $(ResponseKind::$variant(body) => Some(body.compute_size(api_version).map_err(|e| format!("{e:#}"))),)*
                _ => None,
            }
        }
    };
}

supported_messages! {
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    ApiVersions,
    CreateTopics,
    DeleteTopics,
    DeleteRecords,
    DescribeConfigs,
    AlterConfigs,
    CreatePartitions,
    IncrementalAlterConfigs,
    DescribeCluster,
    InitProducerId,
    FindCoordinator,
    JoinGroup,
    SyncGroup,
    Heartbeat,
    LeaveGroup,
    OffsetCommit,
    OffsetFetch,
    ListGroups,
    DescribeGroups,
    DeleteGroups,
    OffsetDelete,
    ConsumerGroupHeartbeat,
    ConsumerGroupDescribe,
    AddPartitionsToTxn,
    EndTxn,
    AddOffsetsToTxn,
    TxnOffsetCommit,
}

/// A decoded request. `api_key` and `api_version` repeat the header's fields, already checked
/// against the versions table.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a frame is not a request we serve. What Kafka does, and so what the server should do:
/// answer `UnsupportedApiVersionsVersion` with `unsupported_api_versions_response`; close the
/// connection on every other variant (Kafka closes on unknown keys, unsupported versions and
/// parse failures alike, since the client broke the version negotiation or the encoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {frame_bytes} bytes is shorter than a request header")]
    TooShort { frame_bytes: usize },
    #[error("unknown api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{api_version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    /// KIP-511: an ApiVersions request of a version we do not know is still answered, with a v0
    /// response carrying UNSUPPORTED_VERSION and our versions, so the client can retry lower.
    #[error("ApiVersions v{api_version} is not supported (correlation id {correlation_id})")]
    UnsupportedApiVersionsVersion {
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed request (correlation id {correlation_id}): {reason}")]
    Malformed { correlation_id: i32, reason: String },
}

impl DecodeError {
    /// The correlation id of the refused request, if the frame was long enough to carry one.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            DecodeError::TooShort { .. } => None,
            DecodeError::UnknownApiKey { correlation_id, .. }
            | DecodeError::UnsupportedVersion { correlation_id, .. }
            | DecodeError::UnsupportedApiVersionsVersion { correlation_id, .. }
            | DecodeError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `actual` is `None` for a body of an API this broker does not serve.
    #[error("response body is {actual:?}, but the request was {expected:?}")]
    ApiKeyMismatch {
        expected: ApiKey,
        actual: Option<ApiKey>,
    },
    #[error("{api_key:?} v{api_version} is not a version this broker serves")]
    UnsupportedVersion { api_key: ApiKey, api_version: i16 },
    #[error("cannot encode {api_key:?} v{api_version}: {reason}")]
    Encode {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
    #[error("response of {size_bytes} bytes does not fit the i32 size prefix")]
    TooLarge { size_bytes: usize },
}

/// The fixed 8 bytes every request starts with: read before anything else, so that refusals
/// can name the request and nothing is decoded for api keys or versions we do not serve.
fn peek_fixed_header(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let fixed: &[u8; FRAME_BYTES_MIN] = frame.get(..FRAME_BYTES_MIN)?.try_into().ok()?;
    let api_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    Some((api_key, api_version, correlation_id))
}

fn malformed(correlation_id: i32, reason: impl Into<String>) -> DecodeError {
    let mut reason = reason.into();
    if reason.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    DecodeError::Malformed {
        correlation_id,
        reason,
    }
}

/// Decodes one request frame (without its size prefix). See `DecodeError` for what to do with
/// each refusal. Never panics.
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    let Some((api_key_raw, api_version, correlation_id)) = peek_fixed_header(&frame) else {
        return Err(DecodeError::TooShort {
            frame_bytes: frame.len(),
        });
    };
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        return Err(DecodeError::UnknownApiKey {
            api_key: api_key_raw,
            correlation_id,
        });
    };
    if !versions::is_supported(api_key, api_version) {
        return Err(match (api_key, versions::supported(api_key)) {
            (ApiKey::ApiVersions, _) => DecodeError::UnsupportedApiVersionsVersion {
                api_version,
                correlation_id,
            },
            // Kafka treats a key it does not serve like a key it does not know.
            (_, None) => DecodeError::UnknownApiKey {
                api_key: api_key_raw,
                correlation_id,
            },
            (_, Some(_)) => DecodeError::UnsupportedVersion {
                api_key,
                api_version,
                correlation_id,
            },
        });
    }

    let mut buf = frame;
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut buf, header_version).map_err(|e| {
        malformed(
            correlation_id,
            format!("request header v{header_version}: {e:#}"),
        )
    })?;
    // The header re-reads the 8 peeked bytes: they cannot differ.
    debug_assert_eq!(
        (
            header.request_api_key,
            header.request_api_version,
            header.correlation_id
        ),
        (api_key_raw, api_version, correlation_id)
    );

    let body = RequestKind::decode(api_key, &mut buf, api_version)
        .map_err(|e| malformed(correlation_id, format!("{e:#}")))?;
    debug_assert_eq!(request_api_key(&body), Some(api_key));
    // Bytes after the body are ignored, as Kafka's generated parsers do: real clients send
    // them (librdkafka 2.x adds 3 bytes to Metadata v12), and nothing is read from them.
    if buf.has_remaining() {
        tracing::trace!(?api_key, api_version, trailing_bytes = buf.remaining(), "bytes after the request body ignored");
    }
    Ok(Request {
        api_key,
        api_version,
        header,
        body,
    })
}

/// Encodes a whole response frame: size prefix, response header, body. The header version
/// follows the api key and version, except that ApiVersions responses always use header v0
/// (KIP-511: the client must be able to read it before it knows our versions).
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let actual = response_api_key(body);
    if actual != Some(api_key) {
        return Err(EncodeError::ApiKeyMismatch {
            expected: api_key,
            actual,
        });
    }
    if !versions::is_supported(api_key, api_version) {
        return Err(EncodeError::UnsupportedVersion {
            api_key,
            api_version,
        });
    }
    encode_response_unchecked(api_key, api_version, correlation_id, body)
}

fn encode_response_unchecked(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let encode_error = |reason: String| EncodeError::Encode {
        api_key,
        api_version,
        reason,
    };
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_bytes = header
        .compute_size(header_version)
        .map_err(|e| encode_error(format!("header: {e:#}")))?;
    let body_bytes = response_body_bytes(body, api_version)
        .ok_or_else(|| encode_error("not an API this broker serves".to_string()))?
        .map_err(encode_error)?;
    let size_bytes = header_bytes + body_bytes;
    let Ok(size_prefix) = i32::try_from(size_bytes) else {
        return Err(EncodeError::TooLarge { size_bytes });
    };

    // Exact capacity: one allocation, and the (possibly large) fetch payload copied once.
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + size_bytes);
    out.put_i32(size_prefix);
    header
        .encode(&mut out, header_version)
        .map_err(|e| encode_error(format!("header: {e:#}")))?;
    body.encode(&mut out, api_version)
        .map_err(|e| encode_error(format!("{e:#}")))?;
    // compute_size and encode are generated from the same schema; a mismatch would send the
    // client a frame whose prefix lies, desynchronising the connection.
    assert_eq!(
        out.len(),
        SIZE_PREFIX_BYTES + size_bytes,
        "{api_key:?} v{api_version}: size mismatch"
    );
    Ok(out.freeze())
}

/// The ApiVersions answer built from `versions::SUPPORTED`: every API we serve with its range,
/// throttle time 0, and (v3+) no supported or finalized features: we finalize none, so clients
/// treat e.g. transaction version 2 as off, consistent with Produce stopping at v11.
pub fn api_versions_response(api_version: i16, error_code: i16) -> ApiVersionsResponse {
    debug_assert!((0..=4).contains(&api_version), "ApiVersions v{api_version}");
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    let api_keys = versions::SUPPORTED
        .iter()
        .map(|&(api_key, version_min, version_max)| {
            ApiVersion::default()
                .with_api_key(api_key as i16)
                .with_min_version(version_min)
                .with_max_version(version_max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
        .with_throttle_time_ms(0)
        .with_supported_features(Vec::new())
        .with_finalized_features_epoch(-1)
        .with_finalized_features(Vec::new())
        .with_zk_migration_ready(false)
}

/// The whole frame answering an ApiVersions request of a version we do not support (KIP-511):
/// a v0 response, header v0, error UNSUPPORTED_VERSION, and our supported versions, from which
/// the client picks the highest ApiVersions version it also knows and retries.
pub fn unsupported_api_versions_response(correlation_id: i32) -> Result<Bytes, EncodeError> {
    let body = api_versions_response(API_VERSIONS_FALLBACK_VERSION, ERROR_UNSUPPORTED_VERSION);
    encode_response_unchecked(
        ApiKey::ApiVersions,
        API_VERSIONS_FALLBACK_VERSION,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        AlterConfigsRequest, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
        DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
        FetchRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest,
        MetadataResponse, ProduceRequest,
    };
    use kafka_protocol::protocol::{Message, Request as _};

    #[test]
    fn versions_table_and_message_types_agree() {
        for &(api_key, _, _) in versions::SUPPORTED {
            assert!(
                API_KEYS_WITH_MESSAGES.contains(&api_key),
                "{api_key:?} has no RequestKind variant"
            );
        }
        for api_key in API_KEYS_WITH_MESSAGES {
            assert!(
                versions::supported(*api_key).is_some(),
                "{api_key:?} is not in the versions table"
            );
        }
        // And the generated pairs are the right types (the macro could pair them wrongly).
        assert_eq!(ProduceRequest::KEY, ApiKey::Produce as i16);
        assert_eq!(DescribeClusterRequest::KEY, ApiKey::DescribeCluster as i16);
        assert_eq!(ApiVersionsResponse::VERSIONS.max, 4);
    }

    fn request_frame(api_key: ApiKey, api_version: i16, body: &RequestKind) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(7)
            .encode(&mut buf, api_key.request_header_version(api_version))
            .unwrap();
        body.encode(&mut buf, api_version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_what_a_client_encodes() {
        for &(api_key, version_min, version_max) in versions::SUPPORTED {
            for api_version in version_min..=version_max {
                let body = default_request(api_key);
                let frame = request_frame(api_key, api_version, &body);
                let request = decode_request(frame)
                    .unwrap_or_else(|e| panic!("{api_key:?} v{api_version}: {e}"));
                assert_eq!(request.api_key, api_key);
                assert_eq!(request.api_version, api_version);
                assert_eq!(request.correlation_id(), 7);
                assert_eq!(request.body, body);
            }
        }
    }

    fn default_request(api_key: ApiKey) -> RequestKind {
        match api_key {
            ApiKey::Produce => ProduceRequest::default().into(),
            ApiKey::Fetch => FetchRequest::default().into(),
            ApiKey::ListOffsets => ListOffsetsRequest::default().into(),
            ApiKey::Metadata => MetadataRequest::default().into(),
            ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
            ApiKey::CreateTopics => CreateTopicsRequest::default().into(),
            ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
            ApiKey::DeleteRecords => DeleteRecordsRequest::default().into(),
            ApiKey::DescribeConfigs => DescribeConfigsRequest::default().into(),
            ApiKey::AlterConfigs => AlterConfigsRequest::default().into(),
            ApiKey::CreatePartitions => CreatePartitionsRequest::default().into(),
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default().into(),
            ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
            ApiKey::InitProducerId => kafka_protocol::messages::InitProducerIdRequest::default().into(),
            ApiKey::FindCoordinator => kafka_protocol::messages::FindCoordinatorRequest::default().into(),
            ApiKey::JoinGroup => kafka_protocol::messages::JoinGroupRequest::default().into(),
            ApiKey::SyncGroup => kafka_protocol::messages::SyncGroupRequest::default().into(),
            ApiKey::Heartbeat => kafka_protocol::messages::HeartbeatRequest::default().into(),
            ApiKey::LeaveGroup => kafka_protocol::messages::LeaveGroupRequest::default().into(),
            ApiKey::OffsetCommit => kafka_protocol::messages::OffsetCommitRequest::default().into(),
            ApiKey::OffsetFetch => kafka_protocol::messages::OffsetFetchRequest::default().into(),
            ApiKey::ListGroups => kafka_protocol::messages::ListGroupsRequest::default().into(),
            ApiKey::DescribeGroups => kafka_protocol::messages::DescribeGroupsRequest::default().into(),
            ApiKey::DeleteGroups => kafka_protocol::messages::DeleteGroupsRequest::default().into(),
            ApiKey::OffsetDelete => kafka_protocol::messages::OffsetDeleteRequest::default().into(),
            ApiKey::ConsumerGroupHeartbeat => kafka_protocol::messages::ConsumerGroupHeartbeatRequest::default().into(),
            ApiKey::ConsumerGroupDescribe => kafka_protocol::messages::ConsumerGroupDescribeRequest::default().into(),
            ApiKey::AddPartitionsToTxn => kafka_protocol::messages::AddPartitionsToTxnRequest::default().into(),
            ApiKey::EndTxn => kafka_protocol::messages::EndTxnRequest::default().into(),
            ApiKey::AddOffsetsToTxn => kafka_protocol::messages::AddOffsetsToTxnRequest::default().into(),
            ApiKey::TxnOffsetCommit => kafka_protocol::messages::TxnOffsetCommitRequest::default().into(),
            other => panic!("no default request for {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_are_ignored_as_kafka_does() {
        let frame = request_frame(ApiKey::Metadata, 12, &MetadataRequest::default().into());
        let mut longer = BytesMut::from(&frame[..]);
        longer.put_slice(&[0, 0, 0]);
        let request = decode_request(longer.freeze()).expect("trailing bytes are not an error");
        assert_eq!((request.api_key, request.correlation_id()), (ApiKey::Metadata, 7));
    }

    #[test]
    fn refusals_name_the_request() {
        let frame = |key: i16, version: i16| {
            let mut buf = BytesMut::new();
            buf.put_i16(key);
            buf.put_i16(version);
            buf.put_i32(42);
            buf.put_i16(-1); // null client id
            buf.freeze()
        };
        assert_eq!(
            decode_request(frame(999, 0)),
            Err(DecodeError::UnknownApiKey {
                api_key: 999,
                correlation_id: 42
            })
        );
        assert_eq!(
            decode_request(frame(-1, 0)),
            Err(DecodeError::UnknownApiKey {
                api_key: -1,
                correlation_id: 42
            })
        );
        // Known to Kafka but not served here.
        assert_eq!(
            decode_request(frame(ApiKey::ShareGroupHeartbeat as i16, 0)),
            Err(DecodeError::UnknownApiKey {
                api_key: ApiKey::ShareGroupHeartbeat as i16,
                correlation_id: 42
            })
        );
        assert_eq!(
            decode_request(frame(ApiKey::Produce as i16, 2)),
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::Produce,
                api_version: 2,
                correlation_id: 42
            })
        );
        assert_eq!(
            decode_request(frame(ApiKey::ApiVersions as i16, 5)),
            Err(DecodeError::UnsupportedApiVersionsVersion {
                api_version: 5,
                correlation_id: 42
            })
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 18, 0, 3, 0, 0, 0])),
            Err(DecodeError::TooShort { frame_bytes: 7 })
        );
    }

    #[test]
    fn api_versions_response_advertises_the_table_only() {
        for api_version in 0..=4 {
            let frame = encode_response(
                ApiKey::ApiVersions,
                api_version,
                9,
                &api_versions_response(api_version, 0).into(),
            )
            .unwrap();
            let mut buf = frame.slice(SIZE_PREFIX_BYTES..);
            // Header v0 always: just the correlation id.
            assert_eq!(buf.get_i32(), 9);
            let ResponseKind::ApiVersions(response) =
                ResponseKind::decode(ApiKey::ApiVersions, &mut buf, api_version).unwrap()
            else {
                unreachable!()
            };
            assert!(!buf.has_remaining());
            assert_eq!(response.error_code, 0);
            let advertised: Vec<_> = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            let table: Vec<_> = versions::SUPPORTED
                .iter()
                .map(|&(k, min, max)| (k as i16, min, max))
                .collect();
            assert_eq!(advertised, table);
        }
    }

    #[test]
    fn encode_refuses_mismatches() {
        let body: ResponseKind = MetadataResponse::default().into();
        assert_eq!(
            encode_response(ApiKey::Produce, 9, 1, &body),
            Err(EncodeError::ApiKeyMismatch {
                expected: ApiKey::Produce,
                actual: Some(ApiKey::Metadata)
            })
        );
        assert_eq!(
            encode_response(ApiKey::Metadata, 13, 1, &body),
            Err(EncodeError::UnsupportedVersion {
                api_key: ApiKey::Metadata,
                api_version: 13
            })
        );
    }
}
