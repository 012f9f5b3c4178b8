//! A minimal async Kafka client for the load generators (`bench produce`, `bench consume`) and
//! the command-line tools (`topic`, `produce`, `consume`): one TCP connection, request/response
//! for the control APIs (ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs,
//! ListOffsets) and a split writer/reader pair for pipelined Produce and Fetch. Broker errors
//! are reported with Kafka's error names (`KafkaError`).
//!
//! Messages are encoded and decoded with kafka-protocol (header versions from
//! `ApiKey::request_header_version` / `response_header_version`). A Produce frame is encoded
//! once per (partition, batch) and resent with only its correlation id patched, so encoding
//! never limits the load generator.

use std::io::IoSlice;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const CLIENT_ID: &str = "yottastore-bench";
/// Largest response frame accepted (a fetch answer is bounded by its max_bytes).
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Kafka error TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long connecting to the broker may take (an unreachable address otherwise hangs for the
/// kernel's SYN retries, minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// DescribeConfigs' resource type for topics.
const RESOURCE_TYPE_TOPIC: i8 = 2;

/// An error code a broker answered with, shown with Kafka's name for it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {} ({code}){}", broker::protocol::error_name(*code), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct KafkaError {
    pub what: String,
    pub code: i16,
    pub message: Option<String>,
}

/// `Ok` for error code 0, else a `KafkaError` about `what`.
pub fn check_code(what: impl FnOnce() -> String, code: i16, message: Option<&str>) -> Result<(), KafkaError> {
    if code == 0 {
        return Ok(());
    }
    Err(KafkaError { what: what(), code, message: message.map(str::to_string) })
}

/// The versions this client speaks (the newest the broker serves, within what is coded here).
#[derive(Clone, Copy, Debug)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub create_topics: i16,
    pub list_offsets: i16,
    pub delete_topics: i16,
    pub describe_configs: i16,
}

/// One connection. `call` for request/response; `split` for pipelining.
pub struct Connection {
    writer: RequestWriter,
    reader: ResponseReader,
    pub versions: Versions,
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(addr: &str) -> anyhow::Result<Connection> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
            .with_context(|| format!("connecting to {addr} (is `yottastore serve` running there?)"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut connection = Connection {
            writer: RequestWriter {
                write,
                next_correlation_id: 1,
            },
            reader: ResponseReader {
                read,
                buf: BytesMut::new(),
            },
            // Placeholders until ApiVersions answers.
            versions: Versions {
                produce: 9,
                fetch: 12,
                metadata: 12,
                create_topics: 7,
                list_offsets: 7,
                delete_topics: 6,
                describe_configs: 4,
            },
        };
        let response: ApiVersionsResponse = connection
            .call(
                ApiKey::ApiVersions,
                3,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
                    .with_client_software_version(StrBytes::from_static_str("0")),
            )
            .await?;
        anyhow::ensure!(
            response.error_code == 0,
            "ApiVersions failed with error {}",
            response.error_code
        );
        let pick = |key: ApiKey, lowest: i16, highest: i16| -> anyhow::Result<i16> {
            let served = response
                .api_keys
                .iter()
                .find(|entry| entry.api_key == key as i16)
                .with_context(|| format!("the broker does not serve {key:?}"))?;
            let version = highest.min(served.max_version);
            anyhow::ensure!(
                version >= lowest.max(served.min_version),
                "no common version of {key:?}: broker {}..{}, client {lowest}..{highest}",
                served.min_version,
                served.max_version
            );
            Ok(version)
        };
        // Name-addressed versions (Produce < 13, Fetch < 13); flexible where the broker allows.
        connection.versions = Versions {
            produce: pick(ApiKey::Produce, 3, 11)?,
            fetch: pick(ApiKey::Fetch, 4, 12)?,
            metadata: pick(ApiKey::Metadata, 1, 12)?,
            create_topics: pick(ApiKey::CreateTopics, 2, 7)?,
            list_offsets: pick(ApiKey::ListOffsets, 1, 7)?,
            delete_topics: pick(ApiKey::DeleteTopics, 1, 5)?,
            describe_configs: pick(ApiKey::DescribeConfigs, 1, 4)?,
        };
        Ok(connection)
    }

    /// One request, one response (nothing else may be in flight).
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        let correlation_id = self.writer.send(api_key, version, request).await?;
        let frame = self.reader.read_frame().await?;
        decode_response(api_key, version, correlation_id, frame)
    }

    /// Creates `topic` with `partitions` partitions; an existing topic is not an error.
    /// Returns whether it was created.
    pub async fn create_topic(&mut self, topic: &str, partitions: i32) -> anyhow::Result<bool> {
        match self.create_topic_with_configs(topic, partitions, &[]).await {
            Ok(()) => Ok(true),
            Err(error) if error.downcast_ref::<KafkaError>().is_some_and(|e| e.code == TOPIC_ALREADY_EXISTS) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Creates `topic` with `partitions` partitions and topic configs (name, value).
    pub async fn create_topic_with_configs(&mut self, topic: &str, partitions: i32, configs: &[(String, String)]) -> anyhow::Result<()> {
        let configs = configs
            .iter()
            .map(|(name, value)| CreatableTopicConfig::default().with_name(StrBytes::from_string(name.clone())).with_value(Some(StrBytes::from_string(value.clone()))))
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(configs)])
            .with_timeout_ms(30_000);
        let version = self.versions.create_topics;
        let response: CreateTopicsResponse =
            self.call(ApiKey::CreateTopics, version, &request).await?;
        let result = response
            .topics
            .first()
            .context("CreateTopics answered no topic")?;
        check_code(|| format!("creating topic {topic}"), result.error_code, result.error_message.as_deref())?;
        Ok(())
    }

    /// Deletes `topic`.
    pub async fn delete_topic(&mut self, topic: &str) -> anyhow::Result<()> {
        let request = DeleteTopicsRequest::default().with_topic_names(vec![topic_name(topic)]).with_timeout_ms(30_000);
        let version = self.versions.delete_topics;
        let response: DeleteTopicsResponse = self.call(ApiKey::DeleteTopics, version, &request).await?;
        let result = response.responses.first().context("DeleteTopics answered no topic")?;
        check_code(|| format!("deleting topic {topic}"), result.error_code, result.error_message.as_deref())?;
        Ok(())
    }

    /// Metadata of `topics` (`None`: every topic), never creating one.
    pub async fn metadata(&mut self, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
        let topics = topics.map(|topics| topics.iter().map(|topic| MetadataRequestTopic::default().with_name(Some(topic_name(topic)))).collect());
        let request = MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(false);
        let version = self.versions.metadata;
        self.call(ApiKey::Metadata, version, &request).await
    }

    /// The configs of `topic`, as DescribeConfigs answers them.
    pub async fn topic_configs(&mut self, topic: &str) -> anyhow::Result<Vec<DescribeConfigsResourceResult>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
        let version = self.versions.describe_configs;
        let response: DescribeConfigsResponse = self.call(ApiKey::DescribeConfigs, version, &request).await?;
        let result = response.results.into_iter().next().context("DescribeConfigs answered no resource")?;
        check_code(|| format!("describing the configs of {topic}"), result.error_code, result.error_message.as_deref())?;
        Ok(result.configs)
    }

    /// The partition count of `topic` (every partition must have a leader).
    pub async fn partition_count(&mut self, topic: &str) -> anyhow::Result<i32> {
        let response = self.metadata(Some(&[topic])).await?;
        let topic_metadata = response
            .topics
            .first()
            .context("Metadata answered no topic")?;
        check_code(|| format!("topic {topic}"), topic_metadata.error_code, None)?;
        for partition in &topic_metadata.partitions {
            anyhow::ensure!(
                partition.error_code == 0 && partition.leader_id.0 >= 0,
                "partition {} of {topic} has no leader (error {})",
                partition.partition_index,
                partition.error_code
            );
        }
        Ok(topic_metadata.partitions.len() as i32)
    }

    /// The offsets at `timestamp` (-1 latest, -2 earliest) of partitions 0..partitions.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: i32,
        timestamp: i64,
    ) -> anyhow::Result<Vec<i64>> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    (0..partitions)
                        .map(|index| {
                            ListOffsetsPartition::default()
                                .with_partition_index(index)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let version = self.versions.list_offsets;
        let response: ListOffsetsResponse =
            self.call(ApiKey::ListOffsets, version, &request).await?;
        let mut offsets = vec![-1; partitions as usize];
        for topic_response in &response.topics {
            for partition in &topic_response.partitions {
                check_code(|| format!("ListOffsets {topic} partition {}", partition.partition_index), partition.error_code, None)?;
                if let Some(slot) = offsets.get_mut(partition.partition_index as usize) {
                    *slot = partition.offset;
                }
            }
        }
        anyhow::ensure!(
            offsets.iter().all(|&offset| offset >= 0),
            "ListOffsets left partitions out"
        );
        Ok(offsets)
    }

    /// Both halves, borrowed: to send one request and read its answer by hand.
    pub fn halves(&mut self) -> (&mut RequestWriter, &mut ResponseReader) {
        (&mut self.writer, &mut self.reader)
    }

    pub fn split(self) -> (RequestWriter, ResponseReader) {
        (self.writer, self.reader)
    }

    pub fn join(writer: RequestWriter, reader: ResponseReader, versions: Versions) -> Connection {
        Connection {
            writer,
            reader,
            versions,
        }
    }
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// A whole request frame (size prefix included) for `request`.
pub fn encode_request<Req: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &Req,
) -> anyhow::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = api_key.request_header_version(version);
    let size = header.compute_size(header_version)? + request.compute_size(version)?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(i32::try_from(size).context("request too large")?);
    header.encode(&mut frame, header_version)?;
    request.encode(&mut frame, version)?;
    debug_assert_eq!(frame.len(), 4 + size);
    Ok(frame)
}

/// Checks the response header of `frame` (size prefix removed) and decodes the body.
pub fn decode_response<Resp: Decodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> anyhow::Result<Resp> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .with_context(|| format!("decoding a {api_key:?} response header"))?;
    anyhow::ensure!(
        header.correlation_id == correlation_id,
        "{api_key:?}: response correlation id {} where {correlation_id} was due",
        header.correlation_id
    );
    let body = Resp::decode(&mut frame, version)
        .with_context(|| format!("decoding a {api_key:?} v{version} response"))?;
    anyhow::ensure!(
        !frame.has_remaining(),
        "{api_key:?}: {} bytes left after the response",
        frame.remaining()
    );
    Ok(body)
}

/// A Produce request encoded once (one batch for each of one or more partitions of a topic, as
/// a Kafka producer packs the batches ready for a broker up to max.request.size), resent with a
/// new correlation id each time.
pub struct PreparedProduce {
    /// Size prefix, api key and version.
    head: [u8; 8],
    /// The frame after the correlation id: request fields, then each batch (shared by every
    /// request that sends the same one) followed by the fields up to the next, in order.
    parts: Vec<Bytes>,
    /// The partitions, in request order.
    pub partitions: Vec<i32>,
    pub batch_bytes: u64,
}

impl PreparedProduce {
    pub fn new(
        version: i16,
        topic: &str,
        partition: i32,
        acks: i16,
        batch: Bytes,
    ) -> anyhow::Result<PreparedProduce> {
        PreparedProduce::packed(version, topic, vec![(partition, batch)], acks)
    }

    /// One request carrying a batch for each of `batches`' partitions.
    pub fn packed(
        version: i16,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: i16,
    ) -> anyhow::Result<PreparedProduce> {
        let batch_bytes = batches.iter().map(|(_, batch)| batch.len() as u64).sum();
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(
                    batches
                        .iter()
                        .map(|(partition, batch)| {
                            PartitionProduceData::default()
                                .with_index(*partition)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                )]);
        let frame = encode_request(ApiKey::Produce, version, 0, &request)?.freeze();
        let mut head = [0u8; 8];
        head.copy_from_slice(&frame[..8]);
        // The batches are the frame's only large fields, in order: each is found by its bytes
        // just after the few bytes of fields before it.
        let mut parts = Vec::with_capacity(2 * batches.len() + 1);
        let mut from = 12;
        for (_, batch) in &batches {
            let probe = &batch[..batch.len().min(64)];
            let at = (from..=frame.len() - batch.len())
                .find(|&at| frame[at..at + probe.len()] == *probe && frame[at..at + batch.len()] == batch[..])
                .context("the encoded Produce request does not hold its batch")?;
            // Copies, so that the frame (a copy of the batches) is freed.
            parts.push(Bytes::copy_from_slice(&frame[from..at]));
            parts.push(batch.clone());
            from = at + batch.len();
        }
        parts.push(Bytes::copy_from_slice(&frame[from..]));
        Ok(PreparedProduce {
            head,
            parts,
            partitions: batches.iter().map(|(partition, _)| *partition).collect(),
            batch_bytes,
        })
    }
}

pub struct RequestWriter {
    write: OwnedWriteHalf,
    next_correlation_id: i32,
}

impl RequestWriter {
    fn next_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Encodes and sends one request; returns its correlation id.
    pub async fn send<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<i32> {
        let correlation_id = self.next_id();
        let frame = encode_request(api_key, version, correlation_id, request)?;
        self.write.write_all(&frame).await?;
        Ok(correlation_id)
    }

    /// Sends a prepared Produce (no copy of its batches); returns its correlation id.
    pub async fn send_produce(&mut self, prepared: &PreparedProduce) -> anyhow::Result<i32> {
        let correlation_id = self.next_id();
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&prepared.head);
        head[8..].copy_from_slice(&correlation_id.to_be_bytes());
        let mut parts: Vec<&[u8]> = std::iter::once(&head[..]).chain(prepared.parts.iter().map(|part| &part[..])).collect();
        let mut first = 0;
        while first < parts.len() {
            let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|part| IoSlice::new(part)).collect();
            let mut written = self.write.write_vectored(&slices).await?;
            if written == 0 {
                bail!("connection closed while sending");
            }
            while first < parts.len() && written >= parts[first].len() {
                written -= parts[first].len();
                first += 1;
            }
            if written > 0 {
                parts[first] = &parts[first][written..];
            }
        }
        Ok(correlation_id)
    }
}

pub struct ResponseReader {
    read: OwnedReadHalf,
    /// Reused across frames: once the previous frame's `Bytes` are dropped, `reserve` reclaims
    /// the allocation instead of faulting in fresh pages for every large fetch answer.
    buf: BytesMut,
}

impl ResponseReader {
    /// The next response frame, size prefix removed.
    pub async fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        self.fill(4).await?;
        let size = i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let size = usize::try_from(size).ok().filter(|&size| size <= RESPONSE_BYTES_MAX);
        let size = size.context("response frame with a bad size")?;
        self.fill(4 + size).await?;
        self.buf.advance(4);
        Ok(self.buf.split_to(size).freeze())
    }

    async fn fill(&mut self, want: usize) -> anyhow::Result<()> {
        if self.buf.len() >= want {
            return Ok(());
        }
        // At least 256 KiB per read, so a stream of small answers is not read byte by byte.
        self.buf.reserve((want - self.buf.len()).max(256 << 10));
        while self.buf.len() < want {
            let read = self.read.read_buf(&mut self.buf).await?;
            if read == 0 {
                bail!("the broker closed the connection");
            }
        }
        Ok(())
    }
}

/// A Fetch request of `partitions` (index, fetch offset) of `topic`.
pub fn fetch_request(
    topic: &str,
    partitions: &[(i32, i64)],
    max_bytes: i32,
    partition_max_bytes: i32,
    max_wait: Duration,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(index, offset)| {
                        FetchPartition::default()
                            .with_partition(index)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(offset)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(partition_max_bytes)
                    })
                    .collect(),
            )])
}

pub fn decode_produce(version: i16, correlation_id: i32, frame: Bytes) -> anyhow::Result<ProduceResponse> {
    decode_response(ApiKey::Produce, version, correlation_id, frame)
}

pub fn decode_fetch(version: i16, correlation_id: i32, frame: Bytes) -> anyhow::Result<FetchResponse> {
    decode_response(ApiKey::Fetch, version, correlation_id, frame)
}
