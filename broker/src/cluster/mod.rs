//! The cluster model the protocol handlers work on: topics, their partitions (each a
//! `PartitionLog` behind a mutex held only for memory work) and their configs, rebuilt at start
//! from the metadata log and kept durable through it.

pub mod acks;
pub mod metadata;
pub mod reader;
pub mod topic_config;
mod txn_host;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

pub use kafka_protocol::error::ResponseError;
use tokio::sync::Notify;

use crate::group::store::{groups_partition_id, GROUPS_TOPIC};
use crate::group::{GroupConfig, Groups};
use crate::log::{Flush, LogError, LogStore, PartitionId, PartitionLog};
use crate::txn::coordinator::TxnConfig;
use crate::txn::service::txns_partition_id;
use crate::txn::{Transactions, TXNS_TOPIC};
use metadata::{metadata_partition_id, topic_id_from_hex, topic_id_to_hex, MetadataLog, MetadataRecord, METADATA_TOPIC};
pub use reader::{Bounds, CommittedRead, PartitionReader, PartitionStatus};
pub use topic_config::{ConfigEntry, TopicConfig};

/// Kafka's limit on partitions per topic is the broker's memory; this broker's is explicit.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions of all user topics together (`serve --partitions-max`): KIP-578's
/// max.broker.partitions, which Kafka leaves unbounded. Every partition costs memory (its log's
/// state, its producer table) and a share of the device, so the broker says no at create time
/// rather than failing writes later.
pub const PARTITIONS_MAX_DEFAULT: usize = 10_000;
/// User topics (`serve --topics-max`). A topic costs a metadata record and memory beyond its
/// partitions'.
pub const TOPICS_MAX_DEFAULT: usize = 10_000;

/// Broker-wide settings the protocol handlers report or apply.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
    /// auto.create.topics.enable (Kafka's default: true).
    pub auto_create_topics: bool,
    /// num.partitions for auto-created topics (Kafka's default: 1).
    pub default_partitions: i32,
    /// Where the Kafka listener binds (HOST:PORT), reported as `listeners`.
    pub listener_addr: String,
    /// The request size limit the server applies, reported as socket.request.max.bytes.
    pub request_bytes_max: usize,
    /// producer.id.expiration.ms: an idempotent producer idle this long is forgotten by each
    /// partition (Kafka's default: 1 day). Checked with retention.
    pub producer_id_expiration_ms: i64,
    /// Partitions of all user topics together; CreateTopics, CreatePartitions and
    /// auto-creation beyond it answer POLICY_VIOLATION. The internal logs do not count.
    pub partitions_max: usize,
    /// User topics; creating more answers POLICY_VIOLATION.
    pub topics_max: usize,
    /// The metadata log compacts itself once it holds this many bytes (and twice what its
    /// last snapshot left): see `metadata::MetadataLog`.
    pub metadata_compact_bytes_min: u64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            node_id: 1,
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            cluster_id: "yottastore".to_string(),
            auto_create_topics: true,
            default_partitions: 1,
            listener_addr: "127.0.0.1:9092".to_string(),
            request_bytes_max: crate::protocol::REQUEST_BYTES_MAX_DEFAULT,
            producer_id_expiration_ms: crate::log::producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            partitions_max: PARTITIONS_MAX_DEFAULT,
            topics_max: TOPICS_MAX_DEFAULT,
            metadata_compact_bytes_min: METADATA_COMPACT_BYTES_MIN_DEFAULT,
        }
    }
}

/// An error for a protocol response: the Kafka error code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub error: ResponseError,
    pub message: String,
}

impl ApiError {
    pub fn new(error: ResponseError, message: impl Into<String>) -> ApiError {
        ApiError { error, message: message.into() }
    }

    pub fn code(&self) -> i16 {
        self.error.code()
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        let kind = match &error {
            LogError::CorruptBatch(batch_error) => ResponseError::try_from_code(batch_error.kafka_error_code())
                .unwrap_or(ResponseError::CorruptMessage),
            LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::Failed(_) | LogError::CorruptOnDevice { .. } => ResponseError::KafkaStorageError,
            LogError::Io(_) => ResponseError::KafkaStorageError,
            LogError::Producer(producer_error) => ResponseError::try_from_code(producer_error.kafka_error_code())
                .unwrap_or(ResponseError::UnknownServerError),
        };
        ApiError::new(kind, error.to_string())
    }
}

/// One partition: its log and a signal for fetches waiting for new data.
pub struct Partition {
    pub index: i32,
    /// `None` once the topic is deleted: late requests get UNKNOWN_TOPIC_OR_PARTITION.
    log: Mutex<Option<PartitionLog>>,
    /// Notified whenever the high watermark advances (long-polling fetches wait on it).
    pub data_ready: Notify,
    /// When produces to this partition were acknowledged (views measure freshness from it).
    pub acks: acks::AckTimes,
}

impl Partition {
    fn new(index: i32, log: PartitionLog) -> Arc<Partition> {
        Arc::new(Partition { index, log: Mutex::new(Some(log)), data_ready: Notify::new(), acks: Default::default() })
    }

    /// Runs `work` on the log under its lock. Keep `work` to memory: the log's methods only
    /// submit I/O and return handles to await after the lock is released. For the broker's
    /// handlers (and tests that append directly); readers use [`Partition::reader`], which keeps
    /// the storage layout behind it.
    pub fn with_log<R>(&self, work: impl FnOnce(&mut PartitionLog) -> R) -> Result<R, ApiError> {
        let mut guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_mut() {
            Some(log) => Ok(work(log)),
            None => Err(ApiError::new(ResponseError::UnknownTopicOrPartition, "the topic was deleted")),
        }
    }

    fn take_log(&self) -> Option<PartitionLog> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// Awaits a flush of appended partitions (a produce request's, a transaction's markers), then, per appended partition (with the end its flush raises the
/// high watermark to), records the ack and wakes the fetches waiting for data: the flush
/// advanced the high watermark readers see. One result per partition, in order.
pub async fn complete_flush(flush: Option<Flush>, partitions: Vec<(Arc<Partition>, i64)>) -> Vec<Result<i64, LogError>> {
    let result = match flush {
        Some(flush) => flush.complete().await.map_err(|error| error.to_string()),
        None => Ok(0),
    };
    let now = std::time::Instant::now();
    partitions
        .into_iter()
        .map(|(partition, high_watermark)| {
            if result.is_ok() {
                partition.acks.record(high_watermark, now);
            }
            partition.data_ready.notify_waiters();
            result.clone().map(|_| high_watermark).map_err(LogError::Failed)
        })
        .collect()
}

pub struct Topic {
    pub name: String,
    pub id: [u8; 16],
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// Shared so that a produce reads it without copying its overrides.
    config: RwLock<Arc<TopicConfig>>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic").field("name", &self.name).field("partitions", &self.partition_count()).finish()
    }
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(index).ok().and_then(|i| partitions.get(i).cloned())
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).len() as i32
    }

    pub fn config(&self) -> TopicConfig {
        TopicConfig::clone(&self.shared_config())
    }

    /// The topic's configs without a copy (the produce path reads them per request).
    pub fn shared_config(&self) -> Arc<TopicConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn partition_id(&self, index: i32) -> PartitionId {
        PartitionId { topic: self.name.clone(), topic_id: self.id, partition: index }
    }
}

/// 256 KiB of metadata records: about a thousand changes between compactions of a small state.
pub const METADATA_COMPACT_BYTES_MIN_DEFAULT: u64 = 256 << 10;

pub struct Cluster {
    store: LogStore,
    broker: BrokerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The metadata log; its async lock also serialises metadata changes.
    metadata: tokio::sync::Mutex<MetadataLog>,
    /// Consumer groups and their committed offsets (this broker coordinates every group).
    groups: Groups,
    /// Producer ids handed out by InitProducerId. Lock order: this, then `metadata`.
    producer_ids: tokio::sync::Mutex<ProducerIdBlock>,
    /// The transaction coordinator (this broker coordinates every transactional id).
    transactions: Transactions,
}

/// Producer ids are recorded in the metadata log this many at a time (Kafka's block size): one
/// durable write per thousand InitProducerId requests, at most a thousand ids skipped at a
/// restart.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The current block of producer ids: `next..end` may be handed out without a metadata write.
#[derive(Debug)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl Cluster {
    /// Rebuilds the topics from the metadata log and attaches the recovered partition logs.
    /// Logs of topics that no longer exist (a deletion whose zone resets did not finish before
    /// a crash) are released.
    pub async fn open(store: LogStore, recovered: Vec<PartitionLog>, broker: BrokerConfig) -> Result<Arc<Cluster>, String> {
        Cluster::open_with_groups(store, recovered, broker, GroupConfig::default()).await
    }

    pub async fn open_with_groups(
        store: LogStore,
        recovered: Vec<PartitionLog>,
        broker: BrokerConfig,
        group_config: GroupConfig,
    ) -> Result<Arc<Cluster>, String> {
        // Recovered logs are known by topic id (zones store no names): named here.
        let mut logs: BTreeMap<([u8; 16], i32), PartitionLog> = BTreeMap::new();
        let mut metadata_log = None;
        let mut groups_log = None;
        let mut txns_log = None;
        for mut log in recovered {
            let key = (log.id().topic_id, log.id().partition);
            if key == (metadata_partition_id().topic_id, metadata_partition_id().partition) {
                log.rename(&metadata_partition_id().topic);
                metadata_log = Some(log);
            } else if key == (groups_partition_id().topic_id, groups_partition_id().partition) {
                log.rename(&groups_partition_id().topic);
                groups_log = Some(log);
            } else if key == (txns_partition_id().topic_id, txns_partition_id().partition) {
                log.rename(&txns_partition_id().topic);
                txns_log = Some(log);
            } else {
                logs.insert(key, log);
            }
        }
        let metadata_log = metadata_log.unwrap_or_else(|| store.create_partition(metadata_partition_id()));
        let Replayed { topics: definitions, producer_id_end } = replay(&metadata_log).await?;
        let mut topics = BTreeMap::new();
        for (name, TopicDefinition { id, partitions: partition_count, configs }) in definitions {
            let config = TopicConfig::from_entries(&configs).map_err(|error| format!("topic {name}: {error}"))?;
            let partitions = (0..partition_count)
                .map(|index| {
                    let log = match logs.remove(&(id, index)) {
                        Some(mut log) => {
                            log.rename(&name);
                            log
                        }
                        None => store.create_partition(PartitionId { topic: name.clone(), topic_id: id, partition: index }),
                    };
                    Partition::new(index, log)
                })
                .collect();
            let topic = Topic { name: name.clone(), id, partitions: RwLock::new(partitions), config: RwLock::new(Arc::new(config)) };
            topics.insert(name, Arc::new(topic));
        }
        for ((topic_id, partition), log) in logs {
            let topic = topic_id_to_hex(&topic_id);
            tracing::warn!(%topic, partition, "partition log of a topic that no longer exists; releasing its zones");
            log.delete();
        }
        let groups_log = groups_log.unwrap_or_else(|| store.create_partition(groups_partition_id()));
        let groups = Groups::open(groups_log, group_config, |name, id| topics.get(name).is_some_and(|topic: &Arc<Topic>| topic.id == *id)).await?;
        let txns_log = txns_log.unwrap_or_else(|| store.create_partition(txns_partition_id()));
        let transactions = Transactions::open(txns_log, TxnConfig::default()).await?;
        let mut metadata = MetadataLog::new(metadata_log, producer_id_end, broker.metadata_compact_bytes_min);
        // What a snapshot of the state replayed would take: the log compacts once its garbage
        // outgrows that, whatever the records replayed were.
        metadata.set_snapshot_bytes(&snapshot_of(topics.values()));
        Ok(Arc::new(Cluster {
            store,
            broker,
            topics: RwLock::new(topics),
            metadata: tokio::sync::Mutex::new(metadata),
            groups,
            // Ids of the last recorded block may have been handed out before a restart: start
            // after it, with an empty block, so the first allocation records a new one.
            producer_ids: tokio::sync::Mutex::new(ProducerIdBlock { next: producer_id_end, end: producer_id_end }),
            transactions,
        }))
    }

    pub fn broker(&self) -> &BrokerConfig {
        &self.broker
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn transactions(&self) -> &Transactions {
        &self.transactions
    }

    pub fn store(&self) -> &LogStore {
        &self.store
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().find(|topic| topic.id == *id).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Appends a metadata change and waits until it is durable; first compacts the log if due.
    async fn record(&self, metadata: &mut MetadataLog, record: &MetadataRecord) -> Result<(), ApiError> {
        if metadata.compact_due() {
            // Under the metadata lock every earlier change is applied to `topics` (each is
            // applied under the lock it was recorded under): the snapshot is the state now.
            if let Err(error) = metadata.compact(self.metadata_snapshot(), now_ms()).await {
                tracing::warn!(error = %error.message, "metadata log compaction failed; retried with the next change");
            }
        }
        metadata.record(record, now_ms()).await
    }

    /// The topics as metadata records that rebuild them.
    fn metadata_snapshot(&self) -> Vec<MetadataRecord> {
        snapshot_of(self.topics().iter())
    }

    /// The metadata log's bytes, what its last compaction left, and compactions since start
    /// (tests, diagnostics).
    pub async fn metadata_log_stats(&self) -> (u64, u64, u64) {
        self.metadata.lock().await.stats()
    }

    /// Creates a topic (CreateTopics, or auto-creation). With `validate_only`, checks everything
    /// and changes nothing.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Option<Arc<Topic>>, ApiError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}, not {partitions}"),
            ));
        }
        let config = TopicConfig::from_entries(configs).map_err(|message| ApiError::new(ResponseError::InvalidConfig, message))?;
        let mut metadata = self.metadata.lock().await;
        if self.topic(name).is_some() {
            return Err(ApiError::new(ResponseError::TopicAlreadyExists, format!("Topic '{name}' already exists.")));
        }
        // Under the metadata lock: no other creation can pass the same check meanwhile.
        self.check_limits(1, partitions)?;
        if validate_only {
            return Ok(None);
        }
        let id = new_topic_id();
        let record = MetadataRecord::CreateTopic {
            name: name.to_string(),
            topic_id: topic_id_to_hex(&id),
            partitions,
            configs: config.overrides().clone(),
        };
        self.record(&mut metadata, &record).await?;
        let partitions = (0..partitions)
            .map(|index| Partition::new(index, self.store.create_partition(PartitionId { topic: name.to_string(), topic_id: id, partition: index })))
            .collect();
        let topic = Arc::new(Topic { name: name.to_string(), id, partitions: RwLock::new(partitions), config: RwLock::new(Arc::new(config)) });
        self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, "topic created");
        Ok(Some(topic))
    }

    /// Deletes a topic: durably, then its zones are released. With `expected_id` (DeleteTopics
    /// by id), the topic must still be that one: a topic deleted and recreated under the same
    /// name meanwhile is not touched (UNKNOWN_TOPIC_ID).
    pub async fn delete_topic(&self, name: &str, expected_id: Option<&[u8; 16]>) -> Result<[u8; 16], ApiError> {
        let mut metadata = self.metadata.lock().await;
        let topic = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        if expected_id.is_some_and(|id| *id != topic.id) {
            return Err(ApiError::new(ResponseError::UnknownTopicId, format!("Topic '{name}' no longer has the topic id given.")));
        }
        let record = MetadataRecord::DeleteTopic { name: name.to_string(), topic_id: topic_id_to_hex(&topic.id) };
        self.record(&mut metadata, &record).await?;
        self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        // Offsets are dropped in memory now; at replay, by the topic id they were committed for.
        self.groups.topic_deleted(name);
        for partition in topic.partitions() {
            if let Some(log) = partition.take_log() {
                log.delete();
            }
            partition.data_ready.notify_waiters();
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    /// Raises a topic's partition count (CreatePartitions).
    pub async fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), ApiError> {
        let mut metadata = self.metadata.lock().await;
        let topic = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        let current = topic.partition_count();
        if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Topic currently has {current} partitions, {count} is not a valid partition count (more than now, at most {PARTITIONS_PER_TOPIC_MAX})."),
            ));
        }
        self.check_limits(0, count - current)?;
        if validate_only {
            return Ok(());
        }
        let record = MetadataRecord::SetPartitionCount { name: name.to_string(), topic_id: topic_id_to_hex(&topic.id), partitions: count };
        self.record(&mut metadata, &record).await?;
        let mut partitions = topic.partitions.write().unwrap_or_else(|p| p.into_inner());
        for index in current..count {
            partitions.push(Partition::new(index, self.store.create_partition(topic.partition_id(index))));
        }
        Ok(())
    }

    /// Refuses a change that would take the user topics beyond `topics_max` or their partitions
    /// beyond `partitions_max`, with POLICY_VIOLATION: what Kafka answers for its own partition
    /// limits (the 10,000 partitions of one CreateTopics or CreatePartitions request, and
    /// KIP-578's max.broker.partitions). Callers hold the metadata lock.
    fn check_limits(&self, new_topics: usize, new_partitions: i32) -> Result<(), ApiError> {
        assert!(new_partitions >= 0, "a partition count never shrinks");
        let (topic_count, partition_count) = {
            let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
            let partitions: usize = topics.values().map(|topic| topic.partition_count() as usize).sum();
            (topics.len(), partitions)
        };
        let topics_max = self.broker.topics_max;
        if topic_count + new_topics > topics_max {
            return Err(ApiError::new(
                ResponseError::PolicyViolation,
                format!("The broker holds {topic_count} topics, its limit is {topics_max} (serve --topics-max): delete topics or raise the limit."),
            ));
        }
        let partitions_max = self.broker.partitions_max;
        let wanted = partition_count + new_partitions as usize;
        if wanted > partitions_max {
            return Err(ApiError::new(
                ResponseError::PolicyViolation,
                format!(
                    "{new_partitions} more partitions would make {wanted} on this broker, above its limit of {partitions_max} (serve --partitions-max): delete topics or raise the limit."
                ),
            ));
        }
        Ok(())
    }

    /// Changes a topic's configs with `change` (AlterConfigs replaces, IncrementalAlterConfigs
    /// edits); an invalid result changes nothing.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        change: impl FnOnce(&mut TopicConfig) -> Result<(), String>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let mut metadata = self.metadata.lock().await;
        let topic = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        let mut config = topic.config();
        change(&mut config).map_err(|message| ApiError::new(ResponseError::InvalidConfig, message))?;
        if validate_only {
            return Ok(());
        }
        let record = MetadataRecord::SetConfigs { name: name.to_string(), topic_id: topic_id_to_hex(&topic.id), configs: config.overrides().clone() };
        self.record(&mut metadata, &record).await?;
        *topic.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// A new producer id for InitProducerId, never handed out before, even across restarts.
    pub async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        let mut block = self.producer_ids.lock().await;
        if block.next >= block.end {
            let end = block.end.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or_else(|| {
                ApiError::new(ResponseError::UnknownServerError, "producer ids are exhausted")
            })?;
            let mut metadata = self.metadata.lock().await;
            self.record(&mut metadata, &MetadataRecord::ProducerIdBlock { end }).await?;
            block.end = end;
        }
        assert!(0 <= block.next && block.next < block.end);
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Applies every topic's retention.ms and retention.bytes (reclaiming whole zones), and
    /// forgets idempotent producers idle for producer.id.expiration.ms.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let mut released = 0;
        let expiration_ms = self.broker.producer_id_expiration_ms;
        for topic in self.topics() {
            let config = topic.config();
            for partition in topic.partitions() {
                released += partition
                    .with_log(|log| {
                        log.expire_producers(now_ms, expiration_ms);
                        log.set_lifetime(crate::log::Lifetime::for_retention(config.retention_ms()));
                        log.apply_retention(now_ms, config.retention_ms(), config.retention_bytes())
                    })
                    .unwrap_or(0);
            }
        }
        released
    }
}

/// `topics` as metadata records that rebuild them (the metadata log's snapshot).
fn snapshot_of<'a>(topics: impl Iterator<Item = &'a Arc<Topic>>) -> Vec<MetadataRecord> {
    topics
        .map(|topic| MetadataRecord::CreateTopic {
            name: topic.name.clone(),
            topic_id: topic_id_to_hex(&topic.id),
            partitions: topic.partition_count(),
            configs: topic.config().overrides().clone(),
        })
        .collect()
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::new(ResponseError::UnknownTopicOrPartition, format!("This server does not host topic '{name}'."))
}

/// Kafka's topic name rules: 1 to 249 characters of [a-zA-Z0-9._-], not "." or "..", and not
/// this broker's internal topic.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::new(ResponseError::InvalidTopicException, message));
    if name.is_empty() || name == "." || name == ".." {
        return invalid(format!("Topic name {name:?} is illegal"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid(format!("Topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid(format!("Topic name {name:?} contains characters other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    if name == METADATA_TOPIC || name == GROUPS_TOPIC || name == TXNS_TOPIC {
        return invalid(format!("Topic name {name:?} is reserved for the broker's metadata"));
    }
    Ok(())
}

/// A topic as the metadata log defines it.
struct TopicDefinition {
    id: [u8; 16],
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// What the metadata log holds.
struct Replayed {
    /// The topics that exist, by name.
    topics: BTreeMap<String, TopicDefinition>,
    /// Producer ids below this may have been handed out.
    producer_id_end: i64,
}

/// Replays the metadata log.
async fn replay(log: &PartitionLog) -> Result<Replayed, String> {
    let mut topics: BTreeMap<String, TopicDefinition> = BTreeMap::new();
    let mut producer_id_end = 0i64;
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    while offset < high_watermark {
        let batches = log.read(offset, 1 << 20).map_err(|e| e.to_string())?.execute().await.map_err(|e| e.to_string())?;
        if batches.is_empty() {
            return Err(format!("metadata log: no batch at offset {offset} below {high_watermark}"));
        }
        for bytes in &batches {
            let header = crate::log::batch::parse_header(bytes).map_err(|e| e.to_string())?;
            offset = header.last_offset() + 1;
            for record in MetadataRecord::from_batch(bytes).map_err(|e| format!("metadata log at {}: {e}", header.base_offset))? {
                match record {
                    MetadataRecord::ProducerIdBlock { end } => producer_id_end = producer_id_end.max(end),
                    record => apply(&mut topics, record),
                }
            }
        }
    }
    Ok(Replayed { topics, producer_id_end })
}

fn apply(topics: &mut BTreeMap<String, TopicDefinition>, record: MetadataRecord) {
    let same_topic = |topics: &BTreeMap<String, TopicDefinition>, name: &str, id: &str| {
        topics.get(name).is_some_and(|topic| Some(topic.id) == topic_id_from_hex(id))
    };
    match record {
        MetadataRecord::CreateTopic { name, topic_id, partitions, configs } => {
            if let Some(id) = topic_id_from_hex(&topic_id) {
                topics.insert(name, TopicDefinition { id, partitions, configs });
            }
        }
        MetadataRecord::DeleteTopic { name, topic_id } => {
            if same_topic(topics, &name, &topic_id) {
                topics.remove(&name);
            }
        }
        MetadataRecord::SetPartitionCount { name, topic_id, partitions } => {
            if same_topic(topics, &name, &topic_id) {
                topics.get_mut(&name).expect("checked").partitions = partitions;
            }
        }
        MetadataRecord::SetConfigs { name, topic_id, configs } => {
            if same_topic(topics, &name, &topic_id) {
                topics.get_mut(&name).expect("checked").configs = configs;
            }
        }
        MetadataRecord::ProducerIdBlock { .. } => {}
    }
}

/// A random, non-zero topic id (Kafka's all-zero UUID means "no id").
fn new_topic_id() -> [u8; 16] {
    use std::io::Read;
    let mut id = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut id));
    if read.is_err() || id == [0; 16] {
        // Without /dev/urandom: time and a counter are unique enough for one broker.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        id[..8].copy_from_slice(&(now_ms() as u64).to_be_bytes());
        id[8..].copy_from_slice(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    }
    id
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
