//! `PartitionLog`: one Kafka partition stored as a chain of zones.
//!
//! Every method is synchronous and never blocks on I/O: writes are submitted and the returned
//! handles (`Flush`, `ReadPlan`, `TimestampPlan`) are awaited by the caller. That lets the broker
//! keep a partition behind a plain mutex held only for memory work, while many partitions' I/O
//! is in flight together (the storage thread gathers them into one submission).
//!
//! Visibility: readers see batches below the high watermark, which is the durable end: a batch
//! is readable once a flush covering it has completed. So nothing that could be lost by a crash
//! is ever served.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::allocator::ZoneAllocator;
use super::batch::{self, BatchError, BatchHeader};
use super::cache::CachedPartition;
use super::format::{self, FrameKind, ScanStep, ZoneHeader, FRAME_HEADER_BYTES, ZONE_HEADER_BYTES};
use super::index::ZoneIndex;
use super::producer_state::{Check, ProducerError, ProducerStateTable};
use super::records;
use crate::buf::{round_up, AlignedBuf, BufferPool, ReadBufferPool, BLOCK_SIZE};
use crate::pending::Pending;
use crate::zone::{ZoneId, ZonedDevice};

/// Tunables of partition logs. Every one is a limit with a reason.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The tail is written to the device in chunks of this size (1 MiB: large enough to reach
    /// the device's sequential bandwidth, small enough to bound memory per partition).
    pub write_chunk_bytes: usize,
    /// One sparse index entry per this many bytes of frames (Kafka's index.interval.bytes).
    pub index_interval_bytes: u64,
    /// Bytes of recently appended batches kept in memory to serve consumers near the tail, for
    /// all partitions of the store together (see `log::cache`; 0 disables the cache).
    pub recent_cache_bytes_max: usize,
    /// Device reads for fetches and scans are at least this large.
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
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
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

/// A zone of the chain and what the log knows of it.
#[derive(Debug)]
pub(crate) struct LogZone {
    pub zone: ZoneId,
    pub sequence: u64,
    pub base_offset: i64,
    /// The offset after the last batch in this zone.
    pub end_offset: i64,
    /// Position after the last frame.
    pub data_end_bytes: u64,
    /// The write pointer as this log has moved it (block aligned).
    pub submitted_bytes: u64,
    pub index: ZoneIndex,
    /// No more appends go here (finished, or cut at recovery after a torn write).
    pub sealed: bool,
}

impl LogZone {
    /// The first frame position and the offset of the first batch there.
    fn data_start(&self) -> (u64, i64) {
        (ZONE_HEADER_BYTES as u64, self.base_offset)
    }
}

/// Bytes of the active zone not yet handed to the device. `buf[0]` sits at `zone_position_bytes`
/// (block aligned).
struct Tail {
    buf: AlignedBuf,
    zone_position_bytes: u64,
}

/// What `tail_write` copies.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Zeros(usize),
    Bytes(&'a [u8]),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Piece::Zeros(count) => *count,
            Piece::Bytes(bytes) => bytes.len(),
        }
    }
}

/// Shared between the log and its flush handles, which complete after the log moved on.
#[derive(Debug)]
struct Progress {
    /// Every batch below this offset is durable.
    durable_end_offset: AtomicI64,
    failure: Mutex<Option<String>>,
}

impl Progress {
    fn fail(&self, error: &io::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(%error, "partition log failed");
            *failure = Some(error.to_string());
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

enum InFlight {
    /// A chunk write; its buffer goes back to the pool when the device returns it.
    Write(Pending<AlignedBuf>, BufferPool),
    Op(Pending<()>),
}

impl InFlight {
    /// Waits for completion in place, so a flush cancelled mid-wait can resume it elsewhere.
    /// Must not be called again after it returned.
    async fn wait(&mut self) -> io::Result<()> {
        match self {
            InFlight::Write(write, buffers) => (&mut *write).await.map(|buf| buffers.give(buf)),
            InFlight::Op(op) => (&mut *op).await,
        }
    }

    fn try_complete(&mut self) -> Option<io::Result<()>> {
        match self {
            InFlight::Write(write, buffers) => write.try_take().map(|result| result.map(|buf| buffers.give(buf))),
            InFlight::Op(op) => op.try_take(),
        }
    }
}

type FlushOutcome = watch::Receiver<Option<Result<(), String>>>;

pub struct PartitionLog {
    id: PartitionId,
    allocator: Arc<ZoneAllocator>,
    config: LogConfig,
    zones: VecDeque<LogZone>,
    next_zone_sequence: u64,
    log_start_offset: i64,
    next_offset: i64,
    tail: Option<Tail>,
    in_flight: VecDeque<InFlight>,
    progress: Arc<Progress>,
    /// The outcome of the most recent flush: each flush reports success only after its
    /// predecessor did, so a later flush can never hide an earlier failed write.
    last_flush: Option<FlushOutcome>,
    /// This partition's share of the store's read cache: its most recently appended batches.
    cache: CachedPartition,
    /// A device read started ahead of a sequential consumer, for the offset it will ask next.
    readahead: Option<ReadaheadSlot>,
    /// Idempotent producers' last batches: checked and updated with each append.
    producers: ProducerStateTable,
}

/// The most bytes that readahead reads of all partitions of a device hold at once: each is one
/// fetch's worth of one partition (a window), kept until the consumer asks for it or it expires.
pub const READAHEAD_BYTES_MAX: usize = 256 << 20;

/// A readahead read: its outcome (`None` while running) for the consumer who asks for `offset`.
struct ReadaheadSlot {
    offset: i64,
    outcome: watch::Receiver<Option<Result<Vec<Bytes>, String>>>,
    _reservation: Reservation,
}

/// Bytes counted in a shared total while alive.
struct Reservation {
    total: Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
}

impl Reservation {
    fn take(total: &Arc<std::sync::atomic::AtomicUsize>, bytes: usize, max: usize) -> Option<Reservation> {
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| reserved.checked_add(bytes).filter(|&after| after <= max))
            .ok()
            .map(|_| Reservation { total: total.clone(), bytes })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A readahead read to run off the lock (see `PartitionLog::start_readahead`).
pub struct Readahead {
    plan: ReadPlan,
    outcome: watch::Sender<Option<Result<Vec<Bytes>, String>>>,
}

impl Readahead {
    /// Reads, and leaves the batches for the consumer's next read.
    pub async fn run(self) {
        let result = self.plan.execute().await.map_err(|error| error.to_string());
        let _ = self.outcome.send(Some(result));
    }
}

impl PartitionLog {
    /// An empty log; it takes its first zone at the first append.
    pub fn create(
        id: PartitionId,
        allocator: Arc<ZoneAllocator>,
        config: LogConfig,
    ) -> PartitionLog {
        assert!(id.topic.len() <= format::TOPIC_NAME_BYTES_MAX && id.partition >= 0);
        PartitionLog::from_parts(id, allocator, config, VecDeque::new(), (0, 0), 0, ProducerStateTable::default())
    }

    /// A log from zones recovered by a scan (see `store`).
    pub(crate) fn from_parts(
        id: PartitionId,
        allocator: Arc<ZoneAllocator>,
        config: LogConfig,
        zones: VecDeque<LogZone>,
        (log_start_offset, next_offset): (i64, i64),
        next_zone_sequence: u64,
        producers: ProducerStateTable,
    ) -> PartitionLog {
        assert!(
            config.write_chunk_bytes >= BLOCK_SIZE && config.write_chunk_bytes % BLOCK_SIZE == 0
        );
        assert!(0 <= log_start_offset && log_start_offset <= next_offset);
        assert!(zones
            .back()
            .is_none_or(|zone| zone.sequence < next_zone_sequence));
        let cache = allocator.read_cache(config.recent_cache_bytes_max).partition();
        PartitionLog {
            id,
            allocator,
            config,
            zones,
            next_zone_sequence,
            log_start_offset,
            next_offset,
            tail: None,
            in_flight: VecDeque::new(),
            progress: Arc::new(Progress {
                durable_end_offset: AtomicI64::new(next_offset),
                failure: Mutex::new(None),
            }),
            last_flush: None,
            cache,
            readahead: None,
            producers,
        }
    }

    pub fn id(&self) -> &PartitionId {
        &self.id
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
        self.progress.durable_end_offset.load(Ordering::Acquire)
    }

    /// Bytes of data the log holds on its zones (headers and frames, excluding padding after
    /// the last frame of each zone).
    pub fn size_bytes(&self) -> u64 {
        self.zones.iter().map(|zone| zone.data_end_bytes).sum()
    }

    /// The zones of the chain, oldest first.
    pub fn zone_ids(&self) -> Vec<ZoneId> {
        self.zones.iter().map(|zone| zone.zone).collect()
    }

    /// Set when a storage error made the log unusable until it is reopened.
    pub fn failure(&self) -> Option<String> {
        self.progress.failure()
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        match self.progress.failure() {
            Some(message) => Err(LogError::Failed(message)),
            None => Ok(()),
        }
    }

    fn zone_capacity_bytes(&self) -> u64 {
        self.allocator.device().geometry().zone_capacity_bytes
    }

    /// The largest record batch a zone can hold.
    pub fn batch_bytes_max(&self) -> usize {
        (self.zone_capacity_bytes() as usize) - ZONE_HEADER_BYTES - FRAME_HEADER_BYTES
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
    pub fn append_log_append_time(&mut self, batch: BytesMut, now_ms: i64, append_time_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_with(batch, now_ms, Some(append_time_ms))
    }

    fn append_with(&mut self, mut batch: BytesMut, now_ms: i64, append_time_ms: Option<i64>) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        self.reap();
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
        if batch.len() > self.batch_bytes_max() {
            return Err(LogError::BatchTooLarge {
                size_bytes: batch.len(),
                limit_bytes: self.batch_bytes_max(),
            });
        }
        self.make_room(batch.len(), now_ms)?;
        let base_offset = self.next_offset;
        batch::set_base_offset(&mut batch, base_offset)?;
        let last_offset = base_offset + i64::from(header.last_offset_delta);
        let header = BatchHeader {
            base_offset,
            ..header
        };
        let position_bytes = self.write_frame(FrameKind::RecordBatch, &batch);
        let zone = self
            .zones
            .back_mut()
            .expect("make_room leaves an active zone");
        zone.index.on_batch(
            base_offset,
            last_offset,
            position_bytes,
            header.max_timestamp_ms,
            records::timestamp_lower_bound_ms(&batch, &header),
        );
        zone.end_offset = last_offset + 1;
        self.next_offset = last_offset + 1;
        self.producers.on_append(&header, now_ms);
        self.cache.insert(base_offset, last_offset, batch.freeze());
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp_ms: header.max_timestamp_ms,
            duplicate: false,
        })
    }

    /// Ensures the active zone can take a frame of `payload_bytes`, rolling to a new zone if not.
    fn make_room(&mut self, payload_bytes: usize, now_ms: i64) -> Result<(), LogError> {
        let capacity = self.zone_capacity_bytes();
        if let Some(position) = self.append_position() {
            let start = format::next_frame_start(position);
            if start + format::frame_bytes(payload_bytes) as u64 <= capacity {
                return Ok(());
            }
            self.seal_active_zone();
        }
        self.start_zone(now_ms)
    }

    /// Where the next frame goes in the active zone; `None` without an active zone.
    fn append_position(&self) -> Option<u64> {
        let zone = self.zones.back().filter(|zone| !zone.sealed)?;
        Some(match &self.tail {
            Some(tail) => tail.zone_position_bytes + tail.buf.len() as u64,
            None => zone.submitted_bytes,
        })
    }

    fn seal_active_zone(&mut self) {
        self.submit_tail(true);
        let zone = self.zones.back_mut().expect("active zone");
        assert!(!zone.sealed);
        zone.sealed = true;
        let finish = self.allocator.finish(zone.zone);
        self.in_flight.push_back(InFlight::Op(finish));
    }

    fn start_zone(&mut self, now_ms: i64) -> Result<(), LogError> {
        assert!(self.tail.is_none());
        let zone = self.allocator.allocate()?;
        let header = ZoneHeader {
            topic: self.id.topic.clone(),
            topic_id: self.id.topic_id,
            partition: self.id.partition,
            zone_sequence: self.next_zone_sequence,
            base_offset: self.next_offset,
            created_ms: now_ms,
        };
        self.next_zone_sequence += 1;
        self.zones.push_back(LogZone {
            zone,
            sequence: header.zone_sequence,
            base_offset: self.next_offset,
            end_offset: self.next_offset,
            data_end_bytes: ZONE_HEADER_BYTES as u64,
            submitted_bytes: 0,
            index: ZoneIndex::new(self.config.index_interval_bytes),
            sealed: false,
        });
        self.tail_write(Piece::Bytes(&header.encode()));
        Ok(())
    }

    /// Copies a frame into the tail; returns its position. Room was made by `make_room`.
    fn write_frame(&mut self, kind: FrameKind, payload: &[u8]) -> u64 {
        let position = self.append_position().expect("active zone");
        let start = format::next_frame_start(position);
        // The gap is at most a frame header's length: written as zeros (padding).
        self.tail_write(Piece::Zeros((start - position) as usize));
        self.tail_write(Piece::Bytes(&format::frame_header(kind, payload)));
        self.tail_write(Piece::Bytes(payload));
        let end = start + format::frame_bytes(payload.len()) as u64;
        assert_eq!(self.append_position(), Some(end));
        self.zones.back_mut().expect("active zone").data_end_bytes = end;
        start
    }

    /// Copies into the tail, a pool buffer at a time: a full buffer (whole blocks) goes to the
    /// device at once, so appends never allocate or grow a buffer whatever the frame size.
    fn tail_write(&mut self, piece: Piece<'_>) {
        let mut left = piece.len();
        while left > 0 {
            if self.tail.is_none() {
                let zone_position_bytes = self.append_position().expect("active zone");
                assert_eq!(zone_position_bytes % BLOCK_SIZE as u64, 0, "a new tail starts on a block");
                self.tail = Some(Tail { buf: self.allocator.buffers().take(), zone_position_bytes });
            }
            let tail = self.tail.as_mut().expect("tail ensured");
            let count = left.min(tail.buf.remaining());
            match piece {
                Piece::Zeros(_) => tail.buf.extend_zeros(count),
                Piece::Bytes(bytes) => {
                    let at = bytes.len() - left;
                    tail.buf.extend_from_slice(&bytes[at..at + count]);
                }
            }
            left -= count;
            if tail.buf.remaining() == 0 {
                self.submit_tail(false);
            }
        }
    }

    /// Hands the tail's whole blocks to the device; with `pad`, pads the last partial block
    /// first so everything is submitted (a flush or a zone switch). A partial block left over
    /// moves to a fresh tail buffer.
    fn submit_tail(&mut self, pad: bool) {
        let Some(mut tail) = self.tail.take() else {
            return;
        };
        if pad {
            tail.buf.pad_to_block();
        }
        let whole_bytes = tail.buf.len() / BLOCK_SIZE * BLOCK_SIZE;
        if whole_bytes == 0 {
            self.tail = Some(tail);
            return;
        }
        let rest_bytes = tail.buf.len() - whole_bytes;
        let submitted_end = tail.zone_position_bytes + whole_bytes as u64;
        if rest_bytes > 0 {
            let mut rest = self.allocator.buffers().take();
            rest.extend_from_slice(&tail.buf[whole_bytes..]);
            tail.buf.set_len(whole_bytes);
            self.tail = Some(Tail { buf: rest, zone_position_bytes: submitted_end });
        }
        let zone = self.zones.back_mut().expect("tail belongs to the active zone");
        assert_eq!(zone.submitted_bytes, tail.zone_position_bytes, "tail starts at the write pointer");
        zone.submitted_bytes = submitted_end;
        let write = self.allocator.write(zone.zone, tail.zone_position_bytes, tail.buf);
        self.in_flight.push_back(InFlight::Write(write, self.allocator.buffers().clone()));
    }

    /// Collects completed writes without waiting; a failed one fails the log.
    fn reap(&mut self) {
        while let Some(front) = self.in_flight.front_mut() {
            match front.try_complete() {
                None => break,
                Some(Ok(())) => {
                    self.in_flight.pop_front();
                }
                Some(Err(error)) => {
                    self.progress.fail(&error);
                    self.in_flight.pop_front();
                }
            }
        }
    }

    /// Writes everything appended so far and makes it durable. The returned handle must be
    /// awaited (or waited on): it reports the new high watermark, or the error that failed the
    /// log.
    #[must_use = "a flush reports durability only when awaited"]
    pub fn start_flush(&mut self) -> Flush {
        self.reap();
        if let Some(message) = self.progress.failure() {
            return Flush::failed(message);
        }
        self.submit_tail(true);
        let writes: Vec<InFlight> = self.in_flight.drain(..).collect();
        let device_flush = self.allocator.device().flush();
        let (outcome_tx, outcome_rx) = watch::channel(None);
        let previous = self.last_flush.replace(outcome_rx);
        Flush {
            state: FlushState::Running(RunningFlush {
                previous,
                writes: writes.into(),
                device_flush: Some(device_flush),
                outcome: Some(outcome_tx),
                progress: self.progress.clone(),
                durable_end_offset: self.next_offset,
            }),
        }
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
        if let Some(slot) = self.readahead.as_ref().filter(|slot| slot.offset == offset) {
            return Ok(ReadPlan::Readahead { outcome: slot.outcome.clone(), fallback: Box::new(device), max_bytes });
        }
        Ok(device)
    }

    /// Starts reading, ahead of a sequential consumer, what it will ask for next: the batches
    /// from `offset` (where its last read ended) up to `max_bytes`, if they are durable, not in
    /// the read cache, and the device's readahead budget has room. The returned read must be
    /// run (off the lock); a `read` at `offset` then waits for it instead of reading again. It
    /// is replaced by the next readahead of this partition, or dropped with `drop_readahead`.
    pub fn start_readahead(&mut self, offset: i64, max_bytes: usize) -> Option<Readahead> {
        let high_watermark = self.high_watermark();
        if self.failure().is_some() || offset < self.log_start_offset || offset >= high_watermark || max_bytes == 0 {
            return None;
        }
        if self.readahead.as_ref().is_some_and(|slot| slot.offset == offset) || self.cache.read(offset, high_watermark, 0).is_some() {
            return None;
        }
        // The slot being replaced gives its bytes back first.
        self.readahead = None;
        let reservation = Reservation::take(self.allocator.readahead_reserved(), max_bytes, READAHEAD_BYTES_MAX)?;
        let plan = self.device_plan(offset, max_bytes);
        let (sender, receiver) = watch::channel(None);
        self.readahead = Some(ReadaheadSlot { offset, outcome: receiver, _reservation: reservation });
        Some(Readahead { plan, outcome: sender })
    }

    /// Drops the readahead for `offset`, if it is still there (it expired unused).
    pub fn drop_readahead(&mut self, offset: i64) {
        if self.readahead.as_ref().is_some_and(|slot| slot.offset == offset) {
            self.readahead = None;
        }
    }

    /// A device scan of the zone holding `offset` (which must be in the log, below the high
    /// watermark).
    fn device_plan(&self, offset: i64, max_bytes: usize) -> ReadPlan {
        let zone = self
            .zone_for_offset(offset)
            .expect("offset within the log has a zone");
        let start = zone.index.position_for_offset(offset, zone.data_start());
        // Room for the frames around `max_bytes` of batches too (headers, and the block padding
        // of flushes), so that one window usually serves the whole budget.
        let window_bytes = self.config.read_window_bytes.max(
            max_bytes
                .saturating_add(max_bytes / WINDOW_SLACK_DIVISOR)
                .saturating_add(FRAME_HEADER_BYTES),
        );
        let scan = self.scan_zone(
            zone,
            start,
            window_bytes.min(self.zone_capacity_bytes() as usize),
        );
        ReadPlan::Device {
            scan,
            offset,
            max_bytes,
        }
    }

    fn scan_zone(&self, zone: &LogZone, start: (u64, i64), window_bytes: usize) -> DeviceScan {
        DeviceScan {
            device: self.allocator.device().clone(),
            buffers: self.allocator.read_buffers().clone(),
            zone: zone.zone,
            start_bytes: start.0,
            start_offset: start.1,
            data_end_bytes: zone.data_end_bytes,
            end_bytes: zone
                .submitted_bytes
                .min(round_up(zone.data_end_bytes as usize, BLOCK_SIZE) as u64),
            stop_offset: self.high_watermark(),
            window_bytes,
        }
    }

    /// Where a reader of records with timestamps <= `timestamp_ms_max` may stop: the base
    /// offset of the first zone from which on every zone's records are all later (by the
    /// zones' timestamp lower bounds), or the high watermark when there is no such zone.
    /// Exclusive; never below the log start offset.
    pub fn end_offset_for_timestamp(&self, timestamp_ms_max: i64) -> i64 {
        let mut end_offset = self.high_watermark();
        for zone in self.zones.iter().rev() {
            if zone.index.min_timestamp_ms() <= timestamp_ms_max {
                break;
            }
            end_offset = end_offset.min(zone.base_offset);
        }
        end_offset.max(self.log_start_offset())
    }

    /// The zone holding `offset`, if the log still has it: lets readers count the zones a
    /// scan touched (the SQL layer reports it).
    pub fn zone_id_for_offset(&self, offset: i64) -> Option<ZoneId> {
        self.zone_for_offset(offset).map(|zone| zone.zone)
    }

    fn zone_for_offset(&self, offset: i64) -> Option<&LogZone> {
        let after = self
            .zones
            .partition_point(|zone| zone.base_offset <= offset);
        let zone = self.zones.get(after.checked_sub(1)?)?;
        (offset < zone.end_offset).then_some(zone)
    }

    /// Plans the lookup of the first batch whose max timestamp is >= `timestamp_ms` (below the
    /// high watermark), as Kafka's ListOffsets by timestamp does at batch granularity.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<TimestampPlan, LogError> {
        self.check_not_failed()?;
        let high_watermark = self.high_watermark();
        // Every zone that may hold a match, in order: a zone's maximum may come from batches
        // below the log start, so the first candidate does not always hold the answer.
        let scans = self
            .zones
            .iter()
            .filter(|zone| {
                zone.end_offset > self.log_start_offset && zone.base_offset < high_watermark
            })
            .filter(|zone| zone.index.max_timestamp_ms() >= timestamp_ms)
            .map(|zone| {
                let start = zone
                    .index
                    .position_for_timestamp(timestamp_ms, zone.data_start());
                self.scan_zone(zone, start, self.config.read_window_bytes)
            })
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
        self.zones
            .iter()
            .filter(|zone| {
                zone.end_offset > self.log_start_offset && zone.index.offset_of_max_timestamp() >= 0
            })
            .filter(|zone| zone.index.offset_of_max_timestamp() < high_watermark)
            .map(|zone| {
                (
                    zone.index.offset_of_max_timestamp(),
                    zone.index.max_timestamp_ms(),
                )
            })
            .max_by_key(|&(offset, timestamp)| (timestamp, std::cmp::Reverse(offset)))
    }

    /// Resets whole zones that retention no longer needs: by time (a zone whose newest batch is
    /// older than `retention_ms`) and by size (while the log without its oldest zone is still at
    /// least `retention_bytes`). The active zone is always kept. Returns the zones released.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
    ) -> usize {
        let mut released = 0;
        while self.can_release_oldest_zone() {
            let oldest = &self.zones[0];
            let expired_by_time = retention_ms
                .is_some_and(|ms| oldest.index.max_timestamp_ms() < now_ms.saturating_sub(ms));
            let oldest_bytes = oldest.data_end_bytes;
            let over_size =
                retention_bytes.is_some_and(|limit| self.size_bytes() - oldest_bytes >= limit);
            if !(expired_by_time || over_size) {
                break;
            }
            self.release_oldest_zone();
            released += 1;
        }
        released
    }

    /// The oldest zone may go only if recovery would still find where the log ends without it:
    /// that needs the next zone's header on the device durably. A durable batch at or after the
    /// next zone's base offset proves it, since a flush covers every write submitted before it.
    fn can_release_oldest_zone(&self) -> bool {
        self.zones.len() > 1 && self.high_watermark() > self.zones[1].base_offset
    }

    fn release_oldest_zone(&mut self) {
        assert!(self.can_release_oldest_zone(), "the active zone is never released, nor one recovery needs");
        let zone = self.zones.pop_front().expect("non-empty");
        self.allocator.release(zone.zone);
        let new_start = self.zones[0].base_offset;
        self.log_start_offset = self.log_start_offset.max(new_start);
        self.cache.remove_below(self.log_start_offset);
        if self.readahead.as_ref().is_some_and(|slot| slot.offset < self.log_start_offset) {
            self.readahead = None;
        }
    }

    /// Deletes records below `offset` (-1: the high watermark), as Kafka's DeleteRecords: the
    /// log start offset moves exactly there, durably (it is written into the log itself), and
    /// zones wholly below it are reset. Await the returned flush for durability.
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
            self.make_room(8, now_ms)?;
            self.write_frame(FrameKind::LogStartOffset, &offset.to_be_bytes());
            self.log_start_offset = offset;
            while self.can_release_oldest_zone() && self.zones[0].end_offset <= offset {
                self.release_oldest_zone();
            }
            self.cache.remove_below(offset);
            if self.readahead.as_ref().is_some_and(|slot| slot.offset < offset) {
                self.readahead = None;
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

    /// Releases every zone of the log (topic deletion).
    pub fn delete(mut self) {
        // Unwritten data of a deleted partition is discarded, not written.
        self.tail = None;
        self.cache.clear();
        self.readahead = None;
        for zone in self.zones.drain(..) {
            self.allocator.release(zone.zone);
        }
    }
}

/// A flush in progress. Await `complete` (async) or call `wait` (threads outside a runtime).
#[must_use = "a flush reports durability only when awaited"]
pub struct Flush {
    state: FlushState,
}

enum FlushState {
    /// Completed, or handed to a thread after being dropped.
    Done,
    Failed(String),
    Running(RunningFlush),
}

struct RunningFlush {
    /// The outcome of the flush before this one, which must succeed first.
    previous: Option<FlushOutcome>,
    /// Writes still to wait for, oldest first.
    writes: VecDeque<InFlight>,
    device_flush: Option<Pending<()>>,
    /// Where this flush reports its own outcome, for the next one; `None` once reported.
    outcome: Option<watch::Sender<Option<Result<(), String>>>>,
    progress: Arc<Progress>,
    durable_end_offset: i64,
}

impl RunningFlush {
    /// Waits for the previous flush, this flush's writes and the device flush, in that order,
    /// then reports the outcome. Every step is resumable: the state lives in `self`, not in the
    /// future, so a cancelled run can be finished by another (see `FlushGuard`).
    async fn run(&mut self) -> Result<i64, LogError> {
        let result = self.steps().await;
        if let Err(message) = &result {
            if self.progress.failure().is_none() {
                self.progress.fail(&io::Error::other(message.clone()));
            }
        }
        if let Some(outcome) = self.outcome.take() {
            let _ = outcome.send(Some(result.clone()));
        }
        result.map_err(LogError::Failed)?;
        self.progress.durable_end_offset.fetch_max(self.durable_end_offset, Ordering::AcqRel);
        Ok(self.durable_end_offset)
    }

    async fn steps(&mut self) -> Result<(), String> {
        if let Some(previous) = self.previous.as_mut() {
            match previous.wait_for(|outcome| outcome.is_some()).await {
                Ok(outcome) => outcome.clone().expect("waited for Some")?,
                Err(_) => return Err("an earlier flush ended without reporting its outcome".to_string()),
            }
            self.previous = None;
        }
        while let Some(write) = self.writes.front_mut() {
            let result = write.wait().await;
            self.writes.pop_front();
            result.map_err(|error| {
                self.progress.fail(&error);
                error.to_string()
            })?;
        }
        if let Some(device_flush) = self.device_flush.as_mut() {
            let result = device_flush.await;
            self.device_flush = None;
            result.map_err(|error| {
                self.progress.fail(&error);
                error.to_string()
            })?;
        }
        Ok(())
    }
}

/// Owns a running flush while it is awaited. Dropped before the flush reported its outcome (a
/// `Flush` never awaited, or a `complete()` future cancelled mid-wait, say with its request),
/// it finishes the flush on a short-lived thread: otherwise the next flush could never confirm
/// its predecessors. Rare, and it needs no async runtime.
struct FlushGuard(Option<RunningFlush>);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let Some(mut running) = self.0.take().filter(|running| running.outcome.is_some()) else { return };
        let progress = running.progress.clone();
        let spawned = std::thread::Builder::new()
            .name("orphan-flush".into())
            .spawn(move || drop(crate::pending::block_on(running.run())));
        if let Err(error) = spawned {
            // Without the thread the outcome is unknown: fail safe.
            progress.fail(&error);
        }
    }
}

impl Flush {
    fn failed(message: String) -> Flush {
        Flush {
            state: FlushState::Failed(message),
        }
    }

    /// Completes the flush: the high watermark it reached, or the error that failed the log.
    pub async fn complete(mut self) -> Result<i64, LogError> {
        match std::mem::replace(&mut self.state, FlushState::Done) {
            FlushState::Done => unreachable!("complete() consumes the Flush: it runs once"),
            FlushState::Failed(message) => Err(LogError::Failed(message)),
            FlushState::Running(running) => {
                let mut guard = FlushGuard(Some(running));
                let result = guard.0.as_mut().expect("just set").run().await;
                drop(guard);
                result
            }
        }
    }

    /// Blocks the calling thread until the flush completes (not from inside an async task).
    pub fn wait(self) -> Result<i64, LogError> {
        crate::pending::block_on(self.complete())
    }
}

impl Drop for Flush {
    /// A flush dropped before `complete()` still has to report its writes' outcome.
    fn drop(&mut self) {
        if let FlushState::Running(running) = std::mem::replace(&mut self.state, FlushState::Done) {
            drop(FlushGuard(Some(running)));
        }
    }
}

/// A planned read: either already answered from memory, or a scan of one zone on the device,
/// or the outcome of a readahead that started at the same offset (the device scan if it failed).
pub enum ReadPlan {
    Ready(Vec<Bytes>),
    Device {
        scan: DeviceScan,
        offset: i64,
        max_bytes: usize,
    },
    Readahead {
        outcome: watch::Receiver<Option<Result<Vec<Bytes>, String>>>,
        fallback: Box<ReadPlan>,
        max_bytes: usize,
    },
}

impl ReadPlan {
    /// Whether the read is answered from memory (the read cache) without waiting for the device.
    pub fn is_ready(&self) -> bool {
        matches!(self, ReadPlan::Ready(_))
    }

    /// The batches read, in offset order.
    pub async fn execute(self) -> Result<Vec<Bytes>, LogError> {
        match self {
            ReadPlan::Ready(batches) => Ok(batches),
            ReadPlan::Readahead { mut outcome, fallback, max_bytes } => {
                let read = match outcome.wait_for(|outcome| outcome.is_some()).await {
                    Ok(outcome) => outcome.clone().and_then(Result::ok),
                    Err(_) => None,
                };
                let Some(read) = read.filter(|read| !read.is_empty()) else {
                    return Box::pin(fallback.execute()).await;
                };
                // The readahead read with its own budget: keep what this one allows (the first
                // batch whatever its size), as the device read would have.
                let mut batches = Vec::new();
                let mut total_bytes = 0usize;
                for batch in read {
                    if !batches.is_empty() && total_bytes + batch.len() > max_bytes {
                        break;
                    }
                    total_bytes += batch.len();
                    batches.push(batch);
                }
                Ok(batches)
            }
            ReadPlan::Device {
                scan,
                offset,
                max_bytes,
            } => {
                let mut batches = Vec::new();
                // Bytes taken, NOTHING_TAKEN before the first batch (which is taken whatever
                // its size): shared with `room`, which tells the scan how much more it may
                // usefully read. Atomic only because the read future must be Send.
                const NOTHING_TAKEN: usize = usize::MAX;
                let taken = AtomicUsize::new(NOTHING_TAKEN);
                let room = || match taken.load(Ordering::Relaxed) {
                    NOTHING_TAKEN => usize::MAX,
                    total_bytes => max_bytes.saturating_sub(total_bytes),
                };
                scan.run(room, |header, bytes| {
                    if header.last_offset() < offset {
                        return ControlFlow::Continue(());
                    }
                    let total_bytes = match taken.load(Ordering::Relaxed) {
                        NOTHING_TAKEN => 0,
                        total_bytes if total_bytes + bytes.len() > max_bytes => return ControlFlow::Break(()),
                        total_bytes => total_bytes,
                    };
                    taken.store(total_bytes + bytes.len(), Ordering::Relaxed);
                    batches.push(bytes);
                    ControlFlow::Continue(())
                })
                .await?;
                Ok(batches)
            }
        }
    }

    pub fn wait(self) -> Result<Vec<Bytes>, LogError> {
        crate::pending::block_on(self.execute())
    }
}

/// A planned lookup by timestamp.
pub struct TimestampPlan {
    scans: Vec<DeviceScan>,
    timestamp_ms: i64,
    log_start_offset: i64,
}

/// The answer of a lookup by timestamp: the first batch at or after the timestamp. Its offset
/// is the batch's base offset, or the log start offset when that lies inside the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimestampMatch {
    pub offset: i64,
    pub max_timestamp_ms: i64,
    /// The batch itself, so the protocol layer can refine to the exact record.
    pub batch: Bytes,
}

impl TimestampPlan {
    pub async fn execute(self) -> Result<Option<TimestampMatch>, LogError> {
        let (timestamp_ms, log_start_offset) = (self.timestamp_ms, self.log_start_offset);
        let mut found = None;
        for scan in self.scans {
            scan.run(|| usize::MAX, |header, bytes| {
                if header.last_offset() >= log_start_offset
                    && header.max_timestamp_ms >= timestamp_ms
                {
                    found = Some(TimestampMatch {
                        offset: header.base_offset.max(log_start_offset),
                        max_timestamp_ms: header.max_timestamp_ms,
                        batch: bytes,
                    });
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .await?;
            if found.is_some() {
                break;
            }
        }
        Ok(found)
    }

    pub fn wait(self) -> Result<Option<TimestampMatch>, LogError> {
        crate::pending::block_on(self.execute())
    }
}

/// Extra window bytes per byte of batches wanted, as a divisor: frame headers and the block
/// padding of flushes take a little room beside the batches.
const WINDOW_SLACK_DIVISOR: usize = 32;

/// A sequential scan of the record batches of one zone between two positions, below an offset.
pub struct DeviceScan {
    device: Arc<dyn ZonedDevice>,
    /// Where windows come from and go back to once their last batch is dropped.
    buffers: ReadBufferPool,
    zone: ZoneId,
    start_bytes: u64,
    /// Base offset of the batch at `start_bytes`.
    start_offset: i64,
    /// Where the zone's verified frames end (after a cut at recovery, garbage may follow).
    data_end_bytes: u64,
    /// Where reading ends: the data end rounded up to a block.
    end_bytes: u64,
    /// Batches from this offset on are not durable yet: the scan stops before them, and the
    /// bytes after the last durable batch may be a write still in flight.
    stop_offset: i64,
    window_bytes: usize,
}

impl DeviceScan {
    /// Feeds every batch (header and zero-copy bytes) to `visit` until it breaks, the batches
    /// reach `stop_offset`, or the zone's data ends. `room` says how many more batch bytes
    /// `visit` would take (usize::MAX: any batch): a frame cut by a window's end that is larger
    /// ends the scan instead of being read, and the next window is sized to what fits.
    async fn run(
        self,
        room: impl Fn() -> usize,
        mut visit: impl FnMut(&BatchHeader, Bytes) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        let block = BLOCK_SIZE as u64;
        let mut position = self.start_bytes;
        let mut next_offset = self.start_offset;
        let mut window_bytes = self.window_bytes;
        loop {
            if next_offset >= self.stop_offset || position >= self.data_end_bytes {
                return Ok(());
            }
            let window_start = position / block * block;
            let window_end =
                (window_start + round_up(window_bytes, BLOCK_SIZE) as u64).min(self.end_bytes);
            if window_start >= window_end {
                return Err(LogError::CorruptOnDevice {
                    zone: self.zone,
                    position_bytes: position,
                });
            }
            let len_bytes = (window_end - window_start) as usize;
            let buf = self
                .device
                .read_into(self.zone, window_start, self.buffers.take(len_bytes), len_bytes)
                .await?;
            let window = Bytes::from_owner(self.buffers.owned(buf));
            loop {
                // The zone's verified frames end here; the rest of the log is in later zones.
                if position >= self.data_end_bytes {
                    return Ok(());
                }
                // Scanned against where the zone's data ends, not the window's end: a frame the window
                // cuts is then reported as such (NeedMore, with its end), not as invalid.
                match format::scan_frame(&window, window_start, position, self.end_bytes) {
                    ScanStep::Frame {
                        kind,
                        payload,
                        end_bytes,
                    } => {
                        position = end_bytes;
                        if kind != FrameKind::RecordBatch {
                            continue;
                        }
                        let corrupt = LogError::CorruptOnDevice {
                            zone: self.zone,
                            position_bytes: position,
                        };
                        let header = batch::parse_header(payload).map_err(|_| corrupt)?;
                        if header.base_offset >= self.stop_offset {
                            return Ok(());
                        }
                        next_offset = header.last_offset() + 1;
                        let start = (end_bytes - window_start) as usize - payload.len();
                        if visit(&header, window.slice(start..start + payload.len())).is_break() {
                            return Ok(());
                        }
                        if next_offset >= self.stop_offset {
                            return Ok(());
                        }
                    }
                    ScanStep::Padding { next_bytes } => position = next_bytes,
                    ScanStep::NeedMore { frame_end_bytes } if window_end < self.end_bytes => {
                        // Cut by the window's end. Its payload length is known unless only
                        // the frame header was cut.
                        let frame_start = format::next_frame_start(position);
                        let payload_bytes = frame_end_bytes
                            .saturating_sub(frame_start + FRAME_HEADER_BYTES as u64);
                        let room = room();
                        if payload_bytes > 0 && payload_bytes > room as u64 {
                            // `visit` would refuse it: reading it would be wasted.
                            return Ok(());
                        }
                        // The next window starts at this frame: big enough for it, and for
                        // what `visit` may still take, within the planned window size.
                        let needed = frame_end_bytes - position / block * block;
                        let wanted = room
                            .saturating_add(room / WINDOW_SLACK_DIVISOR)
                            .saturating_add(FRAME_HEADER_BYTES)
                            .min(self.window_bytes);
                        window_bytes = wanted.max(usize::try_from(needed).unwrap_or(usize::MAX));
                        break;
                    }
                    ScanStep::End | ScanStep::Invalid | ScanStep::NeedMore { .. } => {
                        if window_end >= self.end_bytes {
                            // Durable batches remain but the zone's bytes end or do not parse.
                            return Err(LogError::CorruptOnDevice {
                                zone: self.zone,
                                position_bytes: position,
                            });
                        }
                        // The frame may only look cut by the window's end: read on from it,
                        // with a larger window if it started inside this one.
                        if position < window_end {
                            window_bytes = window_bytes.saturating_mul(2);
                        }
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{encode_batch, Compression, SimpleRecord};
    use crate::log::{LogStore, PartitionId};
    use crate::zone::mem::MemZonedDevice;
    use crate::zone::ZoneGeometry;

    /// Reads answered by the read cache are exactly what the device answers, at every offset
    /// and budget, as batches are evicted, and after delete-records and retention move the log
    /// start; deleting the partition frees its cached bytes.
    #[test]
    fn cache_reads_equal_device_reads_across_eviction_retention_and_delete_records() {
        let geometry = ZoneGeometry {
            zone_size_bytes: 64 << 10,
            zone_capacity_bytes: 64 << 10,
            zone_count: 16,
            max_open_zones: 4,
            max_active_zones: 16,
        };
        let open = |cache_bytes: usize| {
            let config = LogConfig {
                write_chunk_bytes: 16 << 10,
                index_interval_bytes: 2048,
                recent_cache_bytes_max: cache_bytes,
                read_window_bytes: 8 << 10,
            };
            let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
            crate::pending::block_on(LogStore::open(device, config)).unwrap().store
        };
        let id = PartitionId { topic: "t".into(), topic_id: [1; 16], partition: 0 };
        let (device_store, cached_store) = (open(0), open(40 << 10));
        let mut device_log = device_store.create_partition(id.clone());
        let mut cached_log = cached_store.create_partition(id);
        let cache = cached_store.allocator().read_cache(0).clone();
        assert_eq!(cache.bytes_max(), 40 << 10);
        // What a fetch gathers: reads (each within one zone) continued until the budget is
        // spent, the first batch whatever its size.
        let read_all = |log: &PartitionLog, offset: i64, max_bytes: usize| -> Result<Vec<Bytes>, LogError> {
            let mut batches: Vec<Bytes> = Vec::new();
            let mut total = 0;
            let mut next = offset;
            loop {
                let plan = match log.read(next, max_bytes.saturating_sub(total)) {
                    Ok(plan) => plan,
                    Err(error) if batches.is_empty() => return Err(error),
                    Err(_) => break,
                };
                let mut progressed = false;
                for batch in plan.wait()? {
                    if total + batch.len() > max_bytes && !batches.is_empty() {
                        break;
                    }
                    next = batch::parse_header(&batch).unwrap().last_offset() + 1;
                    total += batch.len();
                    batches.push(batch);
                    progressed = true;
                }
                if !progressed || total >= max_bytes || next >= log.high_watermark() {
                    return Ok(batches);
                }
            }
            Ok(batches)
        };
        let compare = |device_log: &PartitionLog, cached_log: &PartitionLog, label: &str| {
            assert_eq!(device_log.log_start_offset(), cached_log.log_start_offset());
            assert_eq!(device_log.high_watermark(), cached_log.high_watermark());
            let mut from_cache = 0;
            for offset in 0..=cached_log.high_watermark() + 1 {
                for max_bytes in [0, 3000, 20_000, 1 << 20] {
                    let expected = read_all(device_log, offset, max_bytes);
                    if matches!(cached_log.read(offset, max_bytes), Ok(ReadPlan::Ready(ref batches)) if !batches.is_empty()) {
                        from_cache += 1;
                    }
                    let got = read_all(cached_log, offset, max_bytes);
                    match (&expected, &got) {
                        (Ok(expected), Ok(got)) => {
                            let summary = |batches: &Vec<Bytes>| -> Vec<(i64, usize)> {
                                batches.iter().map(|batch| (batch::parse_header(batch).unwrap().base_offset, batch.len())).collect()
                            };
                            assert_eq!(summary(expected), summary(got), "{label}: offset {offset} max {max_bytes}");
                            assert!(expected == got, "{label}: offset {offset} max {max_bytes}: same batches, different bytes");
                        }
                        (Err(expected), Err(got)) => assert_eq!(expected.to_string(), got.to_string(), "{label}: offset {offset}"),
                        _ => panic!("{label}: offset {offset} max {max_bytes}: {expected:?} vs {got:?}"),
                    }
                }
            }
            assert!(cache.bytes() <= 40 << 10);
            from_cache
        };
        let mut appended = 0;
        let mut append = |device_log: &mut PartitionLog, cached_log: &mut PartitionLog, count: usize| {
            for _ in 0..count {
                let records: Vec<Vec<u8>> = (0..1 + appended % 3).map(|r| vec![(appended + r) as u8; 500 + (appended * 331) % 3000]).collect();
                let simple: Vec<SimpleRecord> = records.iter().map(|value| SimpleRecord::new(None, Some(value), &[], 1)).collect();
                let batch = encode_batch(&simple, Compression::None).unwrap();
                device_log.append(BytesMut::from(&batch[..]), 0).unwrap();
                cached_log.append(BytesMut::from(&batch[..]), 0).unwrap();
                appended += 1;
                if appended % 4 != 0 {
                    device_log.start_flush().wait().unwrap();
                    cached_log.start_flush().wait().unwrap();
                }
            }
        };
        append(&mut device_log, &mut cached_log, 30);
        // Not yet flushed batches are cached but not served.
        assert!(compare(&device_log, &cached_log, "first appends") > 0);
        device_log.start_flush().wait().unwrap();
        cached_log.start_flush().wait().unwrap();
        append(&mut device_log, &mut cached_log, 40);
        device_log.start_flush().wait().unwrap();
        cached_log.start_flush().wait().unwrap();
        assert!(cached_log.zone_ids().len() > 3, "several zones, so that retention releases some");
        assert!(compare(&device_log, &cached_log, "after eviction") > 0);
        let high_watermark = cached_log.high_watermark();
        for log in [&mut device_log, &mut cached_log] {
            log.delete_records(high_watermark - 5, 0).unwrap().wait().unwrap();
        }
        compare(&device_log, &cached_log, "after delete-records");
        assert!(cache.bytes() > 0);
        append(&mut device_log, &mut cached_log, 10);
        for log in [&mut device_log, &mut cached_log] {
            log.start_flush().wait().unwrap();
            log.apply_retention(0, None, Some(0));
        }
        compare(&device_log, &cached_log, "after retention");
        // Nothing wholly below the log start stays cached.
        let (first_cached, _) = cached_log.cache.range().expect("the tail is cached");
        let first = cached_log.cache.read(first_cached, i64::MAX, 0).expect("cached");
        assert!(batch::parse_header(&first[0]).unwrap().last_offset() >= cached_log.log_start_offset());
        cached_log.delete();
        assert_eq!(cache.bytes(), 0, "topic deletion frees the cached batches");
    }

    /// Eight 1 MiB zones, two open at once: small enough for a test to fill several.
    fn small_geometry() -> ZoneGeometry {
        ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 8, max_open_zones: 2, max_active_zones: 8 }
    }

    /// A read at the offset a readahead started from is answered by the readahead, with what a
    /// device read of its own budget would give; readaheads are bounded by the device budget,
    /// and retention or delete-records past them drop them.
    #[test]
    fn readahead_answers_as_the_device_would() {
        let geometry = small_geometry();
        let config = LogConfig { write_chunk_bytes: 16 << 10, index_interval_bytes: 2048, recent_cache_bytes_max: 0, read_window_bytes: 8 << 10 };
        let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
        let store = crate::pending::block_on(LogStore::open(device, config)).unwrap().store;
        let mut log = store.create_partition(PartitionId { topic: "t".into(), topic_id: [1; 16], partition: 0 });
        for i in 0..40usize {
            let value = vec![i as u8; 1000 + (i * 797) % 5000];
            let batch = encode_batch(&[SimpleRecord::new(None, Some(&value), &[], 1)], Compression::None).unwrap();
            log.append(BytesMut::from(&batch[..]), 0).unwrap();
            log.start_flush().wait().unwrap();
        }
        let device_read = |log: &PartitionLog, offset: i64, max_bytes: usize| log.device_plan(offset, max_bytes).wait().unwrap();
        for (offset, ahead_bytes, max_bytes) in [(3i64, 20_000usize, 20_000usize), (7, 20_000, 5_000), (7, 5_000, 60_000), (10, 1, 1)] {
            let readahead = log.start_readahead(offset, ahead_bytes).expect("room for a readahead");
            assert!(log.start_readahead(offset, ahead_bytes).is_none(), "one readahead per offset");
            crate::pending::block_on(readahead.run());
            let plan = log.read(offset, max_bytes).unwrap();
            assert!(matches!(plan, ReadPlan::Readahead { .. }));
            let got = plan.wait().unwrap();
            let expected = device_read(&log, offset, max_bytes.min(ahead_bytes));
            assert_eq!(got, expected, "offset {offset} ahead {ahead_bytes} max {max_bytes}");
            // Another offset reads the device.
            assert!(matches!(log.read(offset + 1, max_bytes).unwrap(), ReadPlan::Device { .. }));
            log.drop_readahead(offset);
        }
        // The budget: a readahead larger than what remains is refused.
        assert!(log.start_readahead(20, READAHEAD_BYTES_MAX + 1).is_none());
        assert!(log.start_readahead(20, 1000).is_some());
        assert_eq!(store.allocator().readahead_reserved().load(Ordering::Relaxed), 1000);
        log.drop_readahead(20);
        assert_eq!(store.allocator().readahead_reserved().load(Ordering::Relaxed), 0);
        // Delete-records past a readahead drops it.
        let _unrun = log.start_readahead(25, 1000).unwrap();
        log.delete_records(30, 0).unwrap().wait().unwrap();
        assert!(log.readahead.is_none());
        assert_eq!(store.allocator().readahead_reserved().load(Ordering::Relaxed), 0);
        // At the high watermark there is nothing to read ahead.
        assert!(log.start_readahead(log.high_watermark(), 1000).is_none());
    }

    /// Device reads serve exactly the greedy prefix of batches that fits the budget (the first
    /// whatever its size), whatever the window size, with small windows that cut frames.
    #[test]
    fn device_reads_fill_the_budget_exactly() {
        let geometry = small_geometry();
        for read_window_bytes in [4 << 10, 8 << 10, 256 << 10] {
            let config = LogConfig {
                write_chunk_bytes: 16 << 10,
                index_interval_bytes: 2048,
                recent_cache_bytes_max: 4 << 10,
                read_window_bytes,
            };
            let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
            let store = crate::pending::block_on(LogStore::open(device, config)).unwrap().store;
            let mut log = store.create_partition(PartitionId { topic: "t".into(), topic_id: [1; 16], partition: 0 });
            let mut sizes = Vec::new();
            for i in 0..24usize {
                let value = vec![i as u8; 1000 + (i * 797) % 5000];
                let batch = encode_batch(&[SimpleRecord::new(None, Some(&value), &[], 1)], Compression::None).unwrap();
                sizes.push(batch.len());
                log.append(BytesMut::from(&batch[..]), 0).unwrap();
                // Flush each batch: frames padded to blocks, as with acks=all.
                log.start_flush().wait().unwrap();
            }
            for max_bytes in [0, 1, 1500, 4096, 9000, 20_000, 33_333, 60_000, 200_000] {
                for start in [0usize, 5] {
                    let batches = log.read(start as i64, max_bytes).unwrap().wait().unwrap();
                    let mut expected = 0;
                    let mut total = 0;
                    for &size in &sizes[start..] {
                        if expected > 0 && total + size > max_bytes {
                            break;
                        }
                        total += size;
                        expected += 1;
                    }
                    let got: Vec<usize> = batches.iter().map(|batch| batch.len()).collect();
                    assert_eq!(got, sizes[start..start + expected].to_vec(), "window {read_window_bytes} max {max_bytes} start {start}");
                }
            }
        }
    }
}
