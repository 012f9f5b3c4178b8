//! `PartitionLog`: one Kafka partition, its batches interleaved with other partitions' in the
//! store's zone streams and found through its own index.
//!
//! Every method is synchronous and never blocks on I/O: writes are submitted and the returned
//! handles (`Flush`, `ReadPlan`, `TimestampPlan`) are awaited by the caller. That lets the broker
//! keep a partition behind a plain mutex held only for memory work, while many partitions' I/O
//! is in flight together (a stream gathers many partitions' frames into one write).
//!
//! Visibility: readers see batches below the high watermark, which is the durable end: a batch
//! is readable once a flush covering it has completed. So nothing that could be lost by a crash
//! is ever served.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::watch;

use super::allocator::ZoneAllocator;
use super::batch::{self, BatchError, BatchHeader};
use super::cache::CachedPartition;
use super::flush::Flush;
use super::format::{FrameEntry, FrameKind, PartitionKey, TOPIC_NAME_BYTES_MAX};
use super::index::{self, IndexedBatch, LogIndex, PartitionIndex, Run, SharedIndex, StartMarker};
use super::producer_state::{Check, ProducerError, ProducerStateTable};
use super::read::{DeviceScan, ReadPlan, Readahead, ReadaheadOutcome, TimestampPlan};
use super::reservation::Reservation;
use super::stream::{Lifetime, Placement, Streams};
use super::txn_index::TxnIndex;
use crate::zone::ZoneId;

/// Tunables of partition logs. Every one is a limit with a reason.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Streams write to the device in chunks of this size (1 MiB: large enough to reach the
    /// device's sequential bandwidth, small enough to bound memory per stream).
    pub write_chunk_bytes: usize,
    /// A run of a partition's batches is cut past this many bytes (Kafka's
    /// index.interval.bytes): a lookup scans at most about this much before its batch.
    pub index_interval_bytes: u64,
    /// Bytes of recently appended batches kept in memory to serve consumers near the tail, for
    /// all partitions of the store together (see `log::cache`; 0 disables the cache).
    pub recent_cache_bytes_max: usize,
    /// Device reads for fetches are planned for at least this many bytes.
    pub read_window_bytes: usize,
}

/// The read cache's default size: the recent past of a busy broker (a few seconds of appends
/// at device bandwidth), a small part of a server's memory. O_DIRECT bypasses the page cache
/// that serves such reads in Kafka, so without it every consumer read goes to the device.
pub const RECENT_CACHE_BYTES_DEFAULT: usize = 1 << 30;

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            write_chunk_bytes: 1 << 20,
            index_interval_bytes: 4096,
            recent_cache_bytes_max: RECENT_CACHE_BYTES_DEFAULT,
            read_window_bytes: 256 << 10,
        }
    }
}

/// Which partition a log holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// Empty for a log recovered from the device until its owner names it (`rename`): zones
    /// store topic ids, the metadata log maps them to names.
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
}

impl PartitionId {
    pub fn key(&self) -> PartitionKey {
        PartitionKey {
            topic_id: self.topic_id,
            partition: self.partition,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("corrupt record batch: {0}")]
    CorruptBatch(#[from] BatchError),
    #[error(
        "record batch of {size_bytes} bytes is larger than the {limit_bytes} bytes a zone can hold"
    )]
    BatchTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {high_watermark})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("the partition log failed after a storage error and must be reopened: {0}")]
    Failed(String),
    #[error("corrupt data on the device in zone {zone} at byte {position_bytes}")]
    CorruptOnDevice { zone: ZoneId, position_bytes: u64 },
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Producer(#[from] ProducerError),
}

/// A partition's share of a flush (see `PartitionLog::flush_target`).
pub struct FlushTarget {
    streams: Arc<Streams>,
    /// Bit per stream to flush.
    stream_bits: u8,
    /// The partition's durable end and the offset to raise it to.
    durable: (Arc<AtomicI64>, i64),
}

impl FlushTarget {
    /// The high watermark the flush raises this partition's to.
    pub fn end_offset(&self) -> i64 {
        self.durable.1
    }

    /// One flush covering every target (all of one store): every stream any of them wrote,
    /// raising each one's high watermark once durable. `complete` reports the first target's.
    pub fn start(targets: Vec<FlushTarget>) -> Flush {
        let Some(first) = targets.first() else {
            return Flush::failed("a flush of no partition".to_string());
        };
        let streams = first.streams.clone();
        let mut bits = 0u8;
        let mut durable = Vec::with_capacity(targets.len());
        for target in targets {
            debug_assert!(Arc::ptr_eq(&target.streams, &streams), "targets of one store");
            bits |= target.stream_bits;
            durable.push(target.durable);
        }
        let ids: Vec<usize> = (0..streams.count()).filter(|stream| bits & (1 << stream) != 0).collect();
        streams.start_flush_many(&ids, durable)
    }
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp_ms: i64,
    /// The batch was a producer's resend of a batch already in the log: nothing was appended,
    /// and the offsets and timestamp are the original's.
    pub duplicate: bool,
}

pub struct PartitionLog {
    id: PartitionId,
    streams: Arc<Streams>,
    config: LogConfig,
    /// The stream this partition appends to (by its lifetime).
    stream: usize,
    /// Streams written since the last flush (bit per stream): the next flush covers them.
    dirty_streams: u8,
    /// The runs and start marker (shared with the garbage collector).
    index: SharedIndex,
    /// This log's entry in the store's registry of indexes.
    registration: u64,
    log_start_offset: i64,
    next_offset: i64,
    /// Every batch below this offset is durable (raised by flushes, which outlive `&mut self`).
    durable_end_offset: Arc<AtomicI64>,
    /// This partition's share of the store's read cache: its most recently appended batches.
    cache: CachedPartition,
    /// Device reads started ahead of a sequential consumer, for the offsets it will ask next:
    /// consecutive (each starts where the one before ends), oldest first.
    readahead: VecDeque<ReadaheadSlot>,
    /// Readahead reads started so far: the next one's id.
    readahead_started: u64,
    /// Idempotent producers' last batches: checked and updated with each append.
    producers: ProducerStateTable,
    /// Open and aborted transactions: the last stable offset (see `partition_txn`).
    txns: TxnIndex,
}

/// The most bytes that readahead reads of all partitions of a device hold at once: each is one
/// fetch's worth of one partition, kept until the consumer asks for it or it expires.
pub const READAHEAD_BYTES_MAX: usize = 256 << 20;

/// The most readahead reads one partition has at once: several, so the device always has
/// reads queued for a sequential consumer while the bytes of its last fetch go out on the
/// socket (one read in flight leaves the device idle between fetches).
pub const READAHEAD_DEPTH_MAX: usize = 4;

/// The most bytes of one partition's readahead reads (a share of `READAHEAD_BYTES_MAX`, so a
/// few consumers far behind cannot take it all): `READAHEAD_DEPTH_MAX` reads of a Kafka
/// consumer's 8 MiB partition fetches, each planned a run beyond its budget. The first read
/// is taken whatever its size.
pub const READAHEAD_PARTITION_BYTES_MAX: usize = 48 << 20;

/// A readahead read: its outcome (`None` while running), every batch of `start_offset..
/// end_offset`, for the consumer who asks for an offset in between.
struct ReadaheadSlot {
    /// Names it for `drop_readahead` (a later read from the same offset is another one).
    id: u64,
    start_offset: i64,
    end_offset: i64,
    outcome: ReadaheadOutcome,
    reservation: Reservation,
}

/// What recovery rebuilt of a partition.
pub(crate) struct RecoveredParts {
    pub index: PartitionIndex,
    pub log_start_offset: i64,
    pub start_marker: Option<StartMarker>,
    pub next_offset: i64,
    pub producers: ProducerStateTable,
    pub txns: TxnIndex,
}

impl PartitionLog {
    /// An empty log.
    pub(crate) fn create(
        id: PartitionId,
        streams: Arc<Streams>,
        config: LogConfig,
    ) -> PartitionLog {
        assert!(id.topic.len() <= TOPIC_NAME_BYTES_MAX && id.partition >= 0);
        let parts = RecoveredParts {
            index: PartitionIndex::new(config.index_interval_bytes),
            log_start_offset: 0,
            start_marker: None,
            next_offset: 0,
            producers: ProducerStateTable::default(),
            txns: TxnIndex::default(),
        };
        PartitionLog::from_parts(id, streams, config, parts)
    }

    /// A log from what recovery found (see `store`).
    pub(crate) fn from_parts(
        id: PartitionId,
        streams: Arc<Streams>,
        config: LogConfig,
        parts: RecoveredParts,
    ) -> PartitionLog {
        assert!(0 <= parts.log_start_offset && parts.log_start_offset <= parts.next_offset);
        let cache = streams
            .allocator()
            .read_cache(config.recent_cache_bytes_max)
            .partition();
        let stream = streams.for_lifetime(Lifetime::for_topic(&id.topic));
        let index = Arc::new(std::sync::Mutex::new(LogIndex {
            key: id.key(),
            runs: parts.index,
            start_marker: parts.start_marker,
        }));
        let registration = streams.register(&index);
        PartitionLog {
            id,
            stream,
            dirty_streams: 0,
            config,
            index,
            registration,
            log_start_offset: parts.log_start_offset,
            next_offset: parts.next_offset,
            durable_end_offset: Arc::new(AtomicI64::new(parts.next_offset)),
            cache,
            readahead: VecDeque::new(),
            readahead_started: 0,
            producers: parts.producers,
            txns: parts.txns,
            streams,
        }
    }

    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    fn index(&self) -> std::sync::MutexGuard<'_, LogIndex> {
        index::lock(&self.index)
    }

    /// Names a recovered log's topic (zones store only topic ids), which also places an
    /// internal log on the internal stream.
    pub fn rename(&mut self, topic: &str) {
        assert!(topic.len() <= TOPIC_NAME_BYTES_MAX);
        self.id.topic = topic.to_string();
        if Lifetime::for_topic(topic) == Lifetime::Internal {
            self.set_lifetime(Lifetime::Internal);
        }
    }

    /// Places the partition's future appends on the stream for `lifetime` (placement by
    /// lifetime: a topic's retention decides). Its next flush covers both streams.
    pub fn set_lifetime(&mut self, lifetime: Lifetime) {
        let lifetime = if Lifetime::for_topic(&self.id.topic) == Lifetime::Internal {
            Lifetime::Internal
        } else {
            lifetime
        };
        let stream = self.streams.for_lifetime(lifetime);
        if stream != self.stream {
            self.dirty_streams |= 1 << self.stream;
            self.stream = stream;
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended batch gets.
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }

    /// Batches below this offset are durable and readable.
    pub fn high_watermark(&self) -> i64 {
        self.durable_end_offset.load(Ordering::Acquire)
    }

    /// Bytes of frames the log holds on the device.
    pub fn size_bytes(&self) -> u64 {
        self.index().runs.bytes()
    }

    /// The zones holding this partition's batches, oldest first.
    pub fn zone_ids(&self) -> Vec<ZoneId> {
        self.index().runs.zone_ids()
    }

    /// The bytes of this partition's batches in each zone holding some (system.zones).
    pub fn zone_bytes(&self) -> Vec<(ZoneId, u64)> {
        self.index().runs.zone_bytes()
    }

    /// Set when a storage error made the log's stream unusable until the store is reopened.
    pub fn failure(&self) -> Option<String> {
        self.streams.health(self.stream).failure()
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        match self.failure() {
            Some(message) => Err(LogError::Failed(message)),
            None => Ok(()),
        }
    }

    fn allocator(&self) -> &Arc<ZoneAllocator> {
        self.streams.allocator()
    }

    /// The largest record batch a zone can hold.
    pub fn batch_bytes_max(&self) -> usize {
        self.streams.payload_bytes_max()
    }

    /// Validates a record batch, assigns its offsets (rewrites baseOffset; every other byte is
    /// kept as received) and appends it. The batch becomes durable and readable when a flush
    /// started after this call completes.
    ///
    /// A batch from an idempotent producer is checked against the producer's state first: a
    /// resend of one of its last batches appends nothing and returns the original's offsets
    /// (`AppendInfo::duplicate`; a flush started after this call covers the original too), and
    /// a sequence gap or a stale epoch is refused (`LogError::Producer`).
    pub fn append(&mut self, batch: BytesMut, now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_with(batch, now_ms, None)
    }

    /// `append` for a topic with message.timestamp.type=LogAppendTime: the batch is validated as
    /// the client sent it, then stamped with `append_time_ms` (as Kafka does, the batch's
    /// timestamp type and max timestamp are rewritten and its CRC recomputed).
    pub fn append_log_append_time(
        &mut self,
        batch: BytesMut,
        now_ms: i64,
        append_time_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_with(batch, now_ms, Some(append_time_ms))
    }

    fn append_with(
        &mut self,
        mut batch: BytesMut,
        now_ms: i64,
        append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        let mut header = batch::validate(&batch)?;
        // Checked and recorded under the same `&mut self` as the append: no other append to
        // this partition can come between (the broker holds the partition lock throughout).
        if let Check::Duplicate(original) = self.producers.check(&header)? {
            return Ok(AppendInfo {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                max_timestamp_ms: original.max_timestamp_ms,
                duplicate: true,
            });
        }
        if let Some(append_time_ms) = append_time_ms {
            batch::set_log_append_time(&mut batch, append_time_ms)?;
            header = batch::parse_header(&batch)?;
        }
        let info = self.place(batch, header, now_ms)?;
        self.producers.on_append(&BatchHeader { base_offset: info.base_offset, ..header }, now_ms);
        Ok(info)
    }

    /// Appends a validated batch at the log end: offsets, the device, the index, the read
    /// cache and the partition's transactions. A full device refuses it with nothing changed.
    fn place(&mut self, mut batch: BytesMut, header: BatchHeader, now_ms: i64) -> Result<AppendInfo, LogError> {
        if batch.len() > self.batch_bytes_max() {
            return Err(LogError::BatchTooLarge {
                size_bytes: batch.len(),
                limit_bytes: self.batch_bytes_max(),
            });
        }
        let base_offset = self.next_offset;
        batch::set_base_offset(&mut batch, base_offset)?;
        let header = BatchHeader {
            base_offset,
            ..header
        };
        let entry = FrameEntry::for_batch(self.id.key(), self.streams.boot(), &batch, &header);
        let placement = self.streams.append(
            self.stream,
            &self.id.key(),
            FrameKind::RecordBatch,
            &batch,
            entry,
            now_ms,
        )?;
        self.dirty_streams |= 1 << self.stream;
        let last_offset = header.last_offset();
        self.index().runs.on_batch(indexed(
            &placement,
            base_offset,
            last_offset,
            header.max_timestamp_ms,
            entry.min_timestamp_ms,
        ));
        self.next_offset = last_offset + 1;
        self.txns.on_batch(header.producer_id, base_offset, last_offset, entry.txn_role);
        self.cache.insert(base_offset, last_offset, batch.freeze());
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp_ms: header.max_timestamp_ms,
            duplicate: false,
        })
    }

    /// Writes everything appended so far and makes it durable. The returned handle must be
    /// awaited (or waited on): it reports the new high watermark, or the error that failed the
    /// log.
    #[must_use = "a flush reports durability only when awaited"]
    pub fn start_flush(&mut self) -> Flush {
        match self.flush_target() {
            Ok(target) => FlushTarget::start(vec![target]),
            Err(message) => Flush::failed(message),
        }
    }

    /// What a flush must cover for everything appended so far to become durable: the streams
    /// written since the last flush and the end to raise the high watermark to. Handed to
    /// `FlushTarget::start` with other partitions' targets, one flush makes the appends of a
    /// whole request durable (one padded tail and one device flush per stream, not one per
    /// partition). The error is the log's failure.
    pub fn flush_target(&mut self) -> Result<FlushTarget, String> {
        if let Some(message) = self.failure() {
            return Err(message);
        }
        let stream_bits = self.dirty_streams | (1 << self.stream);
        self.dirty_streams = 0;
        Ok(FlushTarget {
            streams: self.streams.clone(),
            stream_bits,
            durable: (self.durable_end_offset.clone(), self.next_offset),
        })
    }

    /// Plans a read of whole batches starting with the one that contains `offset`, up to
    /// `max_bytes` (at least one batch, however large, as Kafka does), below the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadPlan, LogError> {
        self.check_not_failed()?;
        let high_watermark = self.high_watermark();
        if offset < self.log_start_offset || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark,
            });
        }
        if offset == high_watermark {
            return Ok(ReadPlan::Ready(Vec::new()));
        }
        if let Some(batches) = self.cache.read(offset, high_watermark, max_bytes) {
            return Ok(ReadPlan::Ready(batches));
        }
        let device = self.device_plan(offset, max_bytes);
        let holding = self
            .readahead
            .iter()
            .find(|slot| slot.start_offset <= offset && offset < slot.end_offset);
        if let Some(slot) = holding {
            return Ok(ReadPlan::Readahead {
                outcome: slot.outcome.clone(),
                fallback: Box::new(device),
                offset,
                max_bytes,
            });
        }
        Ok(device)
    }

    /// Starts reading, ahead of a sequential consumer, what it will ask for next: from `offset`
    /// (where its last read ended) on, up to `READAHEAD_DEPTH_MAX` reads of a fetch's worth
    /// (`max_bytes`) each, consecutive, while they are durable, not in the read cache, and
    /// within the partition's and the device's readahead budgets. Reads already started that
    /// continue from `offset` are kept, so a consumer keeps the device that many reads ahead.
    /// The returned reads must be run (off the lock); a `read` at an offset one of them holds
    /// then waits for it instead of reading again. Each is dropped once the consumer has
    /// passed it, or by `drop_readahead`.
    pub fn start_readahead(&mut self, offset: i64, max_bytes: usize) -> Vec<Readahead> {
        let high_watermark = self.high_watermark();
        if self.failure().is_some()
            || offset < self.log_start_offset
            || offset >= high_watermark
            || max_bytes == 0
        {
            self.readahead.clear();
            return Vec::new();
        }
        self.keep_readahead_from(offset);
        let mut started = Vec::new();
        while self.readahead.len() < READAHEAD_DEPTH_MAX {
            let next_offset = self.readahead.back().map_or(offset, |slot| slot.end_offset);
            if next_offset >= high_watermark
                || self.cache.read(next_offset, high_watermark, 0).is_some()
            {
                break;
            }
            let Some(readahead) = self.start_readahead_at(next_offset, max_bytes) else {
                break;
            };
            started.push(readahead);
        }
        started
    }

    /// Keeps the readahead reads a consumer at `offset` still needs: the one holding it and
    /// those continuing it; the rest (passed, or read for a consumer gone elsewhere) are
    /// dropped, their bytes given back.
    fn keep_readahead_from(&mut self, offset: i64) {
        while self
            .readahead
            .front()
            .is_some_and(|slot| slot.end_offset <= offset)
        {
            self.readahead.pop_front();
        }
        if !self
            .readahead
            .front()
            .is_some_and(|slot| slot.start_offset <= offset)
        {
            self.readahead.clear();
            return;
        }
        let continued = (1..self.readahead.len())
            .find(|&at| self.readahead[at].start_offset != self.readahead[at - 1].end_offset)
            .unwrap_or(self.readahead.len());
        self.readahead.truncate(continued);
    }

    /// One more readahead read, from `offset` for `max_bytes` of batches, if the budgets allow.
    fn start_readahead_at(&mut self, offset: i64, max_bytes: usize) -> Option<Readahead> {
        let ReadPlan::Device { scan, .. } = self.device_plan(offset, max_bytes) else {
            unreachable!("device_plan plans a device read");
        };
        let end_offset = scan.end_offset();
        let bytes = scan.window_bytes();
        let held_bytes: usize = self
            .readahead
            .iter()
            .map(|slot| slot.reservation.bytes())
            .sum();
        if end_offset <= offset
            || (!self.readahead.is_empty() && held_bytes + bytes > READAHEAD_PARTITION_BYTES_MAX)
        {
            return None;
        }
        let reservation = Reservation::take(
            self.allocator().readahead_reserved(),
            bytes,
            READAHEAD_BYTES_MAX,
        )?;
        let (sender, receiver) = watch::channel(None);
        let id = self.readahead_started;
        self.readahead_started += 1;
        self.readahead.push_back(ReadaheadSlot {
            id,
            start_offset: offset,
            end_offset,
            outcome: receiver,
            reservation,
        });
        // The whole scan: the slot holds every batch up to its end offset.
        let plan = ReadPlan::Device {
            scan,
            offset,
            max_bytes: usize::MAX,
        };
        Some(Readahead {
            plan,
            outcome: sender,
            id,
            offset,
        })
    }

    /// Drops the readahead read `id` (`Readahead::id`), if it is still there (it expired
    /// unused).
    pub fn drop_readahead(&mut self, id: u64) {
        self.readahead.retain(|slot| slot.id != id);
    }

    /// A device read of the runs from the one holding `offset` (which must be in the log, below
    /// the high watermark), for `max_bytes` of batches.
    fn device_plan(&self, offset: i64, max_bytes: usize) -> ReadPlan {
        let index = self.index();
        let at = index
            .runs
            .run_for_offset(offset)
            .expect("offset within the log has a run");
        let budget = (max_bytes.max(self.config.read_window_bytes) as u64)
            .saturating_add(index.runs.runs()[at].bytes);
        let scan = self.scan(index.runs.runs().range(at..), budget);
        ReadPlan::Device {
            scan,
            offset,
            max_bytes,
        }
    }

    fn scan<'a>(&self, runs: impl Iterator<Item = &'a Run>, budget_bytes: u64) -> DeviceScan {
        DeviceScan::plan(
            self.allocator().device(),
            self.allocator().read_buffers(),
            self.id.key(),
            runs,
            budget_bytes,
            self.high_watermark(),
        )
        .pin_zones(self.allocator())
    }

    /// Where a reader of records with timestamps <= `timestamp_ms_max` may stop: the base
    /// offset of the first run from which on every run's records are all later (by the runs'
    /// timestamp lower bounds), or the high watermark when there is no such run. Exclusive;
    /// never below the log start offset.
    pub fn end_offset_for_timestamp(&self, timestamp_ms_max: i64) -> i64 {
        let mut end_offset = self.high_watermark();
        for run in self.index().runs.runs().iter().rev() {
            if run.min_timestamp_ms <= timestamp_ms_max {
                break;
            }
            end_offset = end_offset.min(run.base_offset);
        }
        end_offset.max(self.log_start_offset())
    }

    /// The zone holding `offset`, if the log still has it: lets readers count the zones a
    /// scan touched (the SQL layer reports it).
    pub fn zone_id_for_offset(&self, offset: i64) -> Option<ZoneId> {
        let index = self.index();
        index
            .runs
            .run_for_offset(offset)
            .map(|at| index.runs.runs()[at].zone)
    }

    /// Plans the lookup of the first batch whose max timestamp is >= `timestamp_ms` (below the
    /// high watermark), as Kafka's ListOffsets by timestamp does at batch granularity.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampPlan, LogError> {
        self.check_not_failed()?;
        let high_watermark = self.high_watermark();
        // The first two runs that may hold a match: the first may hold it only below the log
        // start, and then the second surely holds one (its maximum is a batch's).
        let index = self.index();
        let scans = index
            .runs
            .runs()
            .iter()
            .filter(|run| {
                run.end_offset > self.log_start_offset && run.base_offset < high_watermark
            })
            .filter(|run| run.max_timestamp_ms >= timestamp_ms)
            .take(2)
            .map(|run| self.scan(std::iter::once(run), run.bytes))
            .collect();
        Ok(TimestampPlan {
            scans,
            timestamp_ms,
            log_start_offset: self.log_start_offset,
        })
    }

    /// The batch with the largest timestamp below the high watermark: (its last offset, that
    /// timestamp), as Kafka's ListOffsets MAX_TIMESTAMP reports it at batch granularity.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let high_watermark = self.high_watermark();
        self.index()
            .runs
            .runs()
            .iter()
            .filter(|run| {
                run.end_offset > self.log_start_offset
                    && run.offset_of_max_timestamp < high_watermark
            })
            .map(|run| (run.offset_of_max_timestamp, run.max_timestamp_ms))
            .max_by_key(|&(offset, timestamp)| (timestamp, std::cmp::Reverse(offset)))
    }

    /// Drops runs that retention no longer needs: by time (a run whose newest batch is older
    /// than `retention_ms`) and by size (while the log without its oldest run is still at least
    /// `retention_bytes`); only durable runs go. The new log start is recorded in the log.
    /// Returns the runs dropped.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
    ) -> usize {
        let high_watermark = self.high_watermark();
        let (count, start) = {
            let index = self.index();
            let mut size_bytes = index.runs.bytes();
            let mut count = 0;
            for run in index.runs.runs() {
                let expired_by_time =
                    retention_ms.is_some_and(|ms| run.max_timestamp_ms < now_ms.saturating_sub(ms));
                let over_size =
                    retention_bytes.is_some_and(|limit| size_bytes - run.bytes >= limit);
                if run.end_offset > high_watermark || !(expired_by_time || over_size) {
                    break;
                }
                size_bytes -= run.bytes;
                count += 1;
            }
            let start = index
                .runs
                .runs()
                .get(count)
                .map_or(high_watermark, |run| run.base_offset);
            (count, start.max(self.log_start_offset))
        };
        if count == 0 {
            return 0;
        }
        // The new start is recorded before any run is dropped: a dropped run can kill its zone,
        // and the reclaimer resets a dead zone after a flush of every stream, which then covers
        // the record (else a crash could recover a start below batches that are gone).
        if let Err(error) = self.move_log_start(start, now_ms) {
            tracing::warn!(topic = %self.id.topic, partition = self.id.partition, %error, "retention could not record the log start; nothing dropped");
            return 0;
        }
        for _ in 0..count {
            self.drop_oldest_run();
        }
        count
    }

    fn drop_oldest_run(&mut self) {
        let run = self.index().runs.pop_front().expect("a run to drop");
        self.allocator()
            .remove_live(run.zone, run.sequence, run.bytes);
    }

    /// Records `offset` as the log start: a frame on the internal stream (reserved zones, so
    /// this works on a full device), the previous marker released.
    fn move_log_start(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let internal = self.streams.for_lifetime(Lifetime::Internal);
        let entry = FrameEntry::for_log_start(self.id.key(), self.streams.boot(), offset);
        let placement = self.streams.append(
            internal,
            &self.id.key(),
            FrameKind::LogStartOffset,
            &offset.to_be_bytes(),
            entry,
            now_ms,
        )?;
        self.dirty_streams |= 1 << internal;
        let marker = StartMarker {
            zone: placement.zone,
            sequence: placement.sequence,
            start_bytes: placement.start_bytes,
            bytes: placement.end_bytes - placement.start_bytes,
        };
        let old = self.index().start_marker.replace(marker);
        if let Some(old) = old {
            self.allocator()
                .remove_live(old.zone, old.sequence, old.bytes);
        }
        self.log_start_offset = self.log_start_offset.max(offset);
        self.cache.remove_below(self.log_start_offset);
        self.txns.on_log_start(self.log_start_offset);
        let log_start_offset = self.log_start_offset;
        self.readahead
            .retain(|slot| slot.start_offset >= log_start_offset);
        Ok(())
    }

    /// Deletes records below `offset` (-1: the high watermark), as Kafka's DeleteRecords: the
    /// log start offset moves exactly there, durably (it is written into the log itself), and
    /// runs wholly below it are dropped. Await the returned flush for durability.
    pub fn delete_records(&mut self, offset: i64, now_ms: i64) -> Result<Flush, LogError> {
        self.check_not_failed()?;
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark,
            });
        }
        if offset > self.log_start_offset {
            self.move_log_start(offset, now_ms)?;
            loop {
                let below = self
                    .index()
                    .runs
                    .first()
                    .is_some_and(|run| run.end_offset <= offset);
                if !below {
                    break;
                }
                self.drop_oldest_run();
            }
        }
        Ok(self.start_flush())
    }

    /// Forgets idempotent producers with no append for `expiration_ms` (Kafka's
    /// producer.id.expiration.ms). Returns how many.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// The producer state (for tests and diagnostics).
    pub fn producer_state(&self) -> &ProducerStateTable {
        &self.producers
    }

    /// Drops every batch of the log (topic deletion): zones left with nothing live are reset.
    pub fn delete(mut self) {
        self.cache.clear();
        self.readahead.clear();
        let (runs, marker) = {
            let mut index = self.index();
            let runs: Vec<Run> = index.runs.drain().collect();
            (runs, index.start_marker.take())
        };
        for run in runs {
            self.allocator()
                .remove_live(run.zone, run.sequence, run.bytes);
        }
        if let Some(marker) = marker {
            self.allocator()
                .remove_live(marker.zone, marker.sequence, marker.bytes);
        }
    }

    #[cfg(test)]
    pub(crate) fn cache(&self) -> &CachedPartition {
        &self.cache
    }

    #[cfg(test)]
    pub(crate) fn readahead_count(&self) -> usize {
        self.readahead.len()
    }

    #[cfg(test)]
    pub(crate) fn device_read(&self, offset: i64, max_bytes: usize) -> ReadPlan {
        self.device_plan(offset, max_bytes)
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        self.streams.unregister(self.registration);
    }
}

fn indexed(
    placement: &Placement,
    base_offset: i64,
    last_offset: i64,
    max_timestamp_ms: i64,
    min_timestamp_ms: i64,
) -> IndexedBatch {
    IndexedBatch {
        zone: placement.zone,
        sequence: placement.sequence,
        start_bytes: placement.start_bytes,
        end_bytes: placement.end_bytes,
        base_offset,
        last_offset,
        max_timestamp_ms,
        min_timestamp_ms,
        follows_previous: placement.follows_own_frame,
    }
}

#[path = "partition_txn.rs"]
mod txn;

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
