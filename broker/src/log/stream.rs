//! Zone streams: the few zones being appended, shared by every partition of the store.
//!
//! A store has a small fixed set of streams, whatever its partition count (at most one per
//! lifetime class and never more than the device's open or active zone limits): each stream
//! appends to one zone at a time, and the frames of every partition placed on it interleave
//! there. Placement by lifetime (`Lifetime`): internal logs, long-lived topics and
//! short-retention topics go to different streams, so a zone's data tends to expire together.
//!
//! A stream copies frames into a pooled chunk buffer (its tail); a full buffer goes to the
//! device at once, a flush pads and submits the rest. When the next frame would not fit, the
//! stream takes a new zone first (so a full device refuses the append and changes nothing),
//! then seals the old one: no more appends; its summary (one entry per frame, see `format`),
//! zeros up to the last block and the trailer are written by the reclaimer's thread once a
//! flush made its frames durable, so sealing never waits and never stalls other I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::watch;

use super::allocator::ZoneAllocator;
use super::flush::{Flush, FlushOutcome, Health, InFlight, StreamFlush};
use super::format::{
    self, FrameEntry, FrameKind, PartitionKey, Trailer, ZoneHeader, SUMMARY_ENTRY_BYTES,
    TRAILER_BYTES, ZONE_HEADER_BYTES,
};
use super::index::{LogIndex, SharedIndex};
use super::partition::LogError;
use super::seals::{Claim, PendingSeal, SealQueue};
use crate::buf::{round_up, AlignedBuf, BLOCK_SIZE};
use crate::zone::{ZoneError, ZoneId};

/// How long a partition's data is expected to live: decides its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifetime {
    /// The broker's own logs (metadata, consumer groups): small, kept, written on a full device.
    Internal = 0,
    /// Topics kept a week or more (or forever).
    Long = 1,
    /// Topics with a shorter retention.
    Short = 2,
}

/// Retention at or above this counts as long-lived: Kafka's default retention.ms.
const LONG_RETENTION_MS_MIN: i64 = 7 * 24 * 3_600_000;

impl Lifetime {
    /// The lifetime of a topic with `retention_ms` (None: kept forever).
    pub fn for_retention(retention_ms: Option<i64>) -> Lifetime {
        match retention_ms {
            Some(ms) if ms < LONG_RETENTION_MS_MIN => Lifetime::Short,
            _ => Lifetime::Long,
        }
    }

    /// Internal topics' names start with this.
    pub fn for_topic(name: &str) -> Lifetime {
        if name.starts_with("__yotta") {
            Lifetime::Internal
        } else {
            Lifetime::Long
        }
    }
}

/// Where an appended frame went.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub zone: ZoneId,
    pub sequence: u64,
    pub start_bytes: u64,
    pub end_bytes: u64,
    /// The frame before it in the zone is the same partition's: one run for reads.
    pub follows_own_frame: bool,
}

/// The zone a stream appends to.
struct ActiveZone {
    zone: ZoneId,
    sequence: u64,
    /// Where the next frame goes (tail included).
    position_bytes: u64,
    /// The write pointer as this stream has moved it (block aligned).
    submitted_bytes: u64,
    /// The summary so far: one entry per frame.
    summary: Vec<u8>,
    last_key: Option<PartitionKey>,
}

/// Bytes of the active zone not yet handed to the device. `buf[0]` sits at `zone_position_bytes`.
struct Tail {
    buf: AlignedBuf,
    zone_position_bytes: u64,
}

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

pub struct Stream {
    id: u8,
    zone: Option<ActiveZone>,
    tail: Option<Tail>,
    in_flight: VecDeque<InFlight>,
    last_flush: Option<FlushOutcome>,
    health: Arc<Health>,
}

/// The streams of a store and what they share.
pub struct Streams {
    streams: Vec<Mutex<Stream>>,
    /// Each stream's health, readable without its lock.
    healths: Vec<Arc<Health>>,
    allocator: Arc<ZoneAllocator>,
    /// This boot's epoch, written into every zone header.
    boot: u64,
    next_zone_sequence: AtomicU64,
    /// Every partition log's index, for the garbage collector (weak: a dropped log leaves).
    registry: Mutex<HashMap<u64, Weak<Mutex<LogIndex>>>>,
    next_registration: AtomicU64,
    index_interval_bytes: u64,
    /// Sealed zones waiting for their summaries.
    seals: SealQueue,
    /// Serialises reclaim passes (the reclaimer's and `LogStore::settle`'s).
    reclaim: Mutex<()>,
}

/// Streams never exceed this, whatever the device allows: one per lifetime.
const STREAMS_MAX: usize = 3;

/// How long a roll waits for the reclaimer's seal writes when active zones are used up: they
/// are a few writes and a flush, so this is only reached when the device is failing.
const SEAL_WAIT_MS: u64 = 5_000;

impl Streams {
    pub fn new(
        allocator: Arc<ZoneAllocator>,
        boot: u64,
        next_zone_sequence: u64,
        index_interval_bytes: u64,
    ) -> Streams {
        let geometry = allocator.device().geometry();
        let count = STREAMS_MAX
            .min(geometry.max_open_zones as usize)
            .min(geometry.max_active_zones as usize)
            .max(1);
        let healths: Vec<Arc<Health>> = (0..count).map(|_| Arc::default()).collect();
        let streams = (0..count)
            .map(|id| {
                Mutex::new(Stream {
                    id: id as u8,
                    zone: None,
                    tail: None,
                    in_flight: VecDeque::new(),
                    last_flush: None,
                    health: healths[id].clone(),
                })
            })
            .collect();
        Streams {
            streams,
            healths,
            allocator,
            boot,
            next_zone_sequence: AtomicU64::new(next_zone_sequence),
            registry: Mutex::default(),
            next_registration: AtomicU64::new(0),
            index_interval_bytes,
            seals: SealQueue::default(),
            reclaim: Mutex::default(),
        }
    }

    /// Registers a partition log's index for the garbage collector; returns its registration.
    pub(crate) fn register(&self, index: &SharedIndex) -> u64 {
        let registration = self.next_registration.fetch_add(1, Ordering::Relaxed);
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registration, Arc::downgrade(index));
        registration
    }

    pub(crate) fn unregister(&self, registration: u64) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&registration);
    }

    /// The indexes of every partition log alive.
    pub(crate) fn indexes(&self) -> Vec<SharedIndex> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Runs are cut past this many bytes (`LogConfig::index_interval_bytes`).
    pub fn index_interval_bytes(&self) -> u64 {
        self.index_interval_bytes
    }

    /// This boot's epoch: new frames carry it.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    pub fn count(&self) -> usize {
        self.streams.len()
    }

    /// The stream for a lifetime: its own if the device allows enough streams, else the
    /// nearest shorter-lived one that exists.
    pub fn for_lifetime(&self, lifetime: Lifetime) -> usize {
        (lifetime as usize).min(self.streams.len() - 1)
    }

    pub fn lock(&self, stream: usize) -> MutexGuard<'_, Stream> {
        self.streams[stream]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self, stream: usize) -> &Arc<Health> {
        &self.healths[stream]
    }

    pub fn allocator(&self) -> &Arc<ZoneAllocator> {
        &self.allocator
    }

    /// The largest frame payload a zone can hold: a zone with only its header, that frame, a
    /// one-entry summary and the trailer.
    pub fn payload_bytes_max(&self) -> usize {
        let capacity = self.allocator.device().geometry().zone_capacity_bytes as usize;
        capacity - ZONE_HEADER_BYTES - 2 * BLOCK_SIZE - TRAILER_BYTES - format::FRAME_HEADER_BYTES
    }

    /// Appends one frame of `key`'s partition to `stream`.
    pub fn append(
        &self,
        stream: usize,
        key: &PartitionKey,
        kind: FrameKind,
        payload: &[u8],
        entry: FrameEntry,
        now_ms: i64,
    ) -> Result<Placement, LogError> {
        let placement = self.append_frame(stream, key, kind, payload, entry, now_ms)?;
        self.allocator.bytes_appended.fetch_add(
            placement.end_bytes - placement.start_bytes,
            Ordering::Relaxed,
        );
        Ok(placement)
    }

    /// Appends a garbage collector's copy of a frame (counted as such, not as an append).
    pub(crate) fn append_copy(
        &self,
        stream: usize,
        key: &PartitionKey,
        kind: FrameKind,
        payload: &[u8],
        entry: FrameEntry,
        now_ms: i64,
    ) -> Result<Placement, LogError> {
        self.append_frame(stream, key, kind, payload, entry, now_ms)
    }

    fn append_frame(
        &self,
        stream: usize,
        key: &PartitionKey,
        kind: FrameKind,
        payload: &[u8],
        mut entry: FrameEntry,
        now_ms: i64,
    ) -> Result<Placement, LogError> {
        let mut stream = self.lock(stream);
        if let Some(message) = stream.health.failure() {
            return Err(LogError::Failed(message));
        }
        stream.reap();
        let frame_bytes = format::frame_bytes(payload.len());
        if !stream.fits(frame_bytes, self.capacity_bytes()) {
            self.roll(&mut stream, now_ms)?;
        }
        let active = stream.zone.as_ref().expect("rolled to a zone with room");
        let start = format::next_frame_start(active.position_bytes);
        let gap = (start - active.position_bytes) as usize;
        stream.tail_write(&self.allocator, Piece::Zeros(gap));
        stream.tail_write(
            &self.allocator,
            Piece::Bytes(&format::frame_header(kind, key, entry.boot, payload)),
        );
        stream.tail_write(&self.allocator, Piece::Bytes(payload));
        let active = stream.zone.as_mut().expect("active zone");
        let end = start + frame_bytes as u64;
        assert_eq!(active.position_bytes, end);
        entry.position_bytes = start;
        entry.frame_bytes = frame_bytes as u32;
        entry.encode_into(&mut active.summary);
        let follows_own_frame = active.last_key == Some(*key);
        active.last_key = Some(*key);
        let placement = Placement {
            zone: active.zone,
            sequence: active.sequence,
            start_bytes: start,
            end_bytes: end,
            follows_own_frame,
        };
        self.allocator
            .add_live(placement.zone, placement.sequence, frame_bytes as u64);
        Ok(placement)
    }

    fn capacity_bytes(&self) -> u64 {
        self.allocator.device().geometry().zone_capacity_bytes
    }

    /// Moves the stream to a new zone: takes it first (a full device changes nothing), then
    /// seals the old zone and writes the new one's header.
    fn roll(&self, stream: &mut Stream, now_ms: i64) -> Result<(), LogError> {
        let zone = self
            .allocate_zone(stream.id == Lifetime::Internal as u8)
            .inspect_err(|_| {
                crate::metrics::global().appends_refused_storage_full.inc();
            })?;
        self.seal(stream);
        let sequence = self.next_zone_sequence.fetch_add(1, Ordering::Relaxed);
        self.allocator.opened(zone, sequence, stream.id);
        stream.zone = Some(ActiveZone {
            zone,
            sequence,
            position_bytes: 0,
            submitted_bytes: 0,
            summary: Vec::new(),
            last_key: None,
        });
        let header = ZoneHeader {
            stream: stream.id,
            zone_sequence: sequence,
            boot: self.boot,
            created_ms: now_ms,
        };
        stream.tail_write(&self.allocator, Piece::Bytes(&header.encode()));
        Ok(())
    }

    /// Takes a free zone for a roll. When the device's active zones are used up by sealed zones
    /// still waiting for their summaries, finishes the oldest of them without one (recovery
    /// scans it instead), or waits for the seals the reclaimer is writing: a burst of seals
    /// must not refuse appends. Blocks only in that case, for a zone finish or at most
    /// `SEAL_WAIT_MS`, with the stream's lock held (the reclaimer's seal writes need no stream
    /// lock). Fails as `ZoneAllocator::allocate` does otherwise.
    fn allocate_zone(&self, internal: bool) -> std::io::Result<ZoneId> {
        let mut turns_left = self.allocator.device().geometry().max_active_zones + 2;
        loop {
            let error = match self.allocator.allocate(internal) {
                Ok(zone) => return Ok(zone),
                Err(error) => error,
            };
            let active_zones_used = matches!(
                ZoneError::of(&error),
                Some(ZoneError::TooManyActiveZones { .. })
            );
            if !active_zones_used || turns_left == 0 {
                return Err(error);
            }
            turns_left -= 1;
            if let Some(seal) = self.seals.take_oldest() {
                self.finish_unsummarized(&seal);
            } else if !self
                .seals
                .wait_written(std::time::Duration::from_millis(SEAL_WAIT_MS))
            {
                return Err(error);
            }
        }
    }

    /// Finishes a sealed zone whose summary will not be written, so it stops counting against
    /// the device's active zones; a zone that died and was reset meanwhile is left alone.
    fn finish_unsummarized(&self, seal: &PendingSeal) {
        let Some(finish) = self.allocator.finish_in_use(seal.zone, seal.sequence) else {
            return;
        };
        match finish.wait() {
            Ok(()) => {
                crate::metrics::global().zones_finished_unsummarized.inc();
                tracing::debug!(zone = seal.zone, "finished a sealed zone without its summary: active zones used up");
            }
            Err(error) => {
                tracing::warn!(zone = seal.zone, %error, "finishing a sealed zone failed")
            }
        }
    }

    /// Ends the active zone: its tail is submitted and the zone marked sealed (no more appends,
    /// so it can die); its summary, zeros and trailer are written later by the reclaimer
    /// (`write_seals`), once a flush made the zone's frames durable: a summary must never
    /// list a frame that a crash could have torn, since recovery trusts it without reading
    /// the frames.
    fn seal(&self, stream: &mut Stream) {
        if stream.zone.is_none() {
            return;
        }
        stream.submit_tail(&self.allocator, true);
        let active = stream.zone.take().expect("checked");
        assert!(stream.tail.is_none(), "a padded tail is submitted whole");
        self.allocator.seal(active.zone, active.sequence);
        let seal = PendingSeal {
            zone: active.zone,
            sequence: active.sequence,
            start_bytes: active.submitted_bytes,
            summary: active.summary,
        };
        self.seals.push(seal);
        self.allocator.dead_zones().wake();
    }

    pub(crate) fn reclaim_lock(&self) -> MutexGuard<'_, ()> {
        self.reclaim.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The seals waiting now, taken before the reclaimer's flush (see `claim_seals`).
    pub(crate) fn queued_seals(&self) -> Vec<(ZoneId, u64)> {
        self.seals.queued()
    }

    /// After a flush: claims the seals of `before_flush` still waiting, to write them.
    pub(crate) fn claim_seals(&self, before_flush: &[(ZoneId, u64)]) -> Claim<'_> {
        self.seals.claim(before_flush)
    }

    /// Writes each pending seal's summary, zeros and trailer (the zone becomes full), after a
    /// flush covered its frames; zones in `dying` are skipped (they are about to be reset).
    pub(crate) fn write_seals(&self, seals: Vec<PendingSeal>, dying: &[ZoneId]) {
        let capacity = self.capacity_bytes();
        for seal in seals {
            if dying.contains(&seal.zone) || !self.allocator.in_use(seal.zone, seal.sequence) {
                continue;
            }
            let trailer = Trailer {
                zone_sequence: seal.sequence,
                summary_start_bytes: seal.start_bytes,
                entry_count: (seal.summary.len() / SUMMARY_ENTRY_BYTES) as u32,
                summary_crc: crc32fast::hash(&seal.summary),
            };
            let trailer_block = trailer.encode();
            let mut writes = Vec::new();
            let mut position = seal.start_bytes;
            let mut pieces: VecDeque<Piece<'_>> = VecDeque::from([Piece::Bytes(&seal.summary)]);
            let summary_end = seal.start_bytes + round_up(seal.summary.len(), BLOCK_SIZE) as u64;
            let trailer_at = capacity - TRAILER_BYTES as u64;
            assert!(
                summary_end <= trailer_at,
                "the summary fits: checked at every append"
            );
            pieces.push_back(Piece::Zeros(
                (trailer_at - seal.start_bytes) as usize - seal.summary.len(),
            ));
            pieces.push_back(Piece::Bytes(&trailer_block));
            while position < capacity {
                let mut buf = self.allocator.buffers().take();
                while buf.remaining() > 0 {
                    let Some(piece) = pieces.pop_front() else {
                        break;
                    };
                    let count = piece.len().min(buf.remaining());
                    match piece {
                        Piece::Zeros(left) => {
                            buf.extend_zeros(count);
                            if left > count {
                                pieces.push_front(Piece::Zeros(left - count));
                            }
                        }
                        Piece::Bytes(bytes) => {
                            buf.extend_from_slice(&bytes[..count]);
                            if bytes.len() > count {
                                pieces.push_front(Piece::Bytes(&bytes[count..]));
                            }
                        }
                    }
                }
                let len = buf.len() as u64;
                assert_eq!(len % BLOCK_SIZE as u64, 0, "seal writes are whole blocks");
                writes.push((
                    self.allocator.write(seal.zone, position, buf),
                    self.allocator.buffers().clone(),
                ));
                position += len;
            }
            self.allocator
                .bytes_overhead
                .fetch_add(capacity - seal.start_bytes, Ordering::Relaxed);
            let mut failed = false;
            for (write, buffers) in writes {
                match write.wait() {
                    Ok(buf) => buffers.give(buf),
                    Err(error) => {
                        failed = true;
                        tracing::warn!(zone = seal.zone, %error, "writing a zone's summary failed; recovery scans the zone instead")
                    }
                }
            }
            // A seal cut short leaves the zone short of full: finished, so that it does not
            // count against the device's active zones until reclaimed.
            if failed {
                if let Err(error) = self.allocator.finish(seal.zone).wait() {
                    tracing::warn!(zone = seal.zone, %error, "finishing a zone whose seal failed failed");
                }
            }
        }
    }

    /// Starts a flush of `streams` (each once), raising `durable` when done.
    ///
    /// Every stream involved is locked (in index order) while their parts are taken: a flush
    /// waits for each stream's previous flush, so two flushes taking the parts of the same
    /// streams interleaved could each wait for the other.
    pub fn start_flush(
        &self,
        streams: &[usize],
        durable: Option<(Arc<std::sync::atomic::AtomicI64>, i64)>,
    ) -> Flush {
        self.start_flush_many(streams, durable.into_iter().collect())
    }

    /// `start_flush`, raising several durable ends (several partitions' appends made durable
    /// by one flush: one padded tail and one device flush for all of them).
    pub fn start_flush_many(
        &self,
        streams: &[usize],
        durable: Vec<(Arc<std::sync::atomic::AtomicI64>, i64)>,
    ) -> Flush {
        let mut ids = streams.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut locked: Vec<MutexGuard<'_, Stream>> = ids.iter().map(|&id| self.lock(id)).collect();
        if let Some(message) = locked.iter().find_map(|stream| stream.health.failure()) {
            return Flush::failed(message);
        }
        let mut parts = Vec::with_capacity(locked.len());
        for stream in locked.iter_mut() {
            match stream.start_flush(&self.allocator) {
                Ok(part) => parts.push(part),
                Err(message) => return Flush::failed(message),
            }
        }
        drop(locked);
        Flush::new(parts, self.allocator.device().flush(), durable)
    }

    /// A flush of every stream: what the reclaimer waits for before resetting zones.
    pub fn flush_all(&self) -> Flush {
        let all: Vec<usize> = (0..self.streams.len()).collect();
        self.start_flush(&all, None)
    }

    /// The zone `stream` appends to, if any (for reports).
    pub fn active_zone(&self, stream: usize) -> Option<ZoneId> {
        self.lock(stream).zone.as_ref().map(|zone| zone.zone)
    }
}

impl Stream {
    /// Whether a frame of `frame_bytes` fits the active zone with the summary and trailer.
    fn fits(&self, frame_bytes: usize, capacity_bytes: u64) -> bool {
        let Some(active) = &self.zone else {
            return false;
        };
        let end = format::next_frame_start(active.position_bytes) + frame_bytes as u64;
        let summary = (active.summary.len() + SUMMARY_ENTRY_BYTES) as u64;
        round_up(end as usize, BLOCK_SIZE) as u64
            + round_up(summary as usize, BLOCK_SIZE) as u64
            + TRAILER_BYTES as u64
            <= capacity_bytes
    }

    /// Collects completed writes without waiting; a failed one fails the stream.
    fn reap(&mut self) {
        while let Some(front) = self.in_flight.front_mut() {
            match front.try_complete() {
                None => break,
                Some(result) => {
                    self.in_flight.pop_front();
                    if let Err(error) = result {
                        self.health.fail(&error.to_string());
                    }
                }
            }
        }
    }

    /// Copies into the tail, a pool buffer at a time: a full buffer (whole blocks) goes to the
    /// device at once, so appends never allocate or grow a buffer whatever the frame size.
    fn tail_write(&mut self, allocator: &ZoneAllocator, piece: Piece<'_>) {
        let mut left = piece.len();
        while left > 0 {
            if self.tail.is_none() {
                let active = self
                    .zone
                    .as_ref()
                    .expect("a tail belongs to an active zone");
                assert_eq!(
                    active.position_bytes % BLOCK_SIZE as u64,
                    0,
                    "a new tail starts on a block"
                );
                self.tail = Some(Tail {
                    buf: allocator.buffers().take(),
                    zone_position_bytes: active.position_bytes,
                });
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
            self.zone.as_mut().expect("active zone").position_bytes += count as u64;
            if tail.buf.remaining() == 0 {
                self.submit_tail(allocator, false);
            }
        }
    }

    /// Hands the tail's whole blocks to the device; with `pad`, pads the last partial block
    /// first so everything is submitted (a flush). A partial block left over moves to a fresh
    /// tail buffer.
    fn submit_tail(&mut self, allocator: &ZoneAllocator, pad: bool) {
        let Some(mut tail) = self.tail.take() else {
            return;
        };
        let active = self
            .zone
            .as_mut()
            .expect("a tail belongs to an active zone");
        if pad {
            let before = tail.buf.len();
            tail.buf.pad_to_block();
            active.position_bytes += (tail.buf.len() - before) as u64;
            // The next frame starts on a fresh block: nothing of this partition's run continues.
        }
        let whole_bytes = tail.buf.len() / BLOCK_SIZE * BLOCK_SIZE;
        if whole_bytes == 0 {
            self.tail = Some(tail);
            return;
        }
        let rest_bytes = tail.buf.len() - whole_bytes;
        let submitted_end = tail.zone_position_bytes + whole_bytes as u64;
        if rest_bytes > 0 {
            let mut rest = allocator.buffers().take();
            rest.extend_from_slice(&tail.buf[whole_bytes..]);
            tail.buf.set_len(whole_bytes);
            self.tail = Some(Tail {
                buf: rest,
                zone_position_bytes: submitted_end,
            });
        }
        assert_eq!(
            active.submitted_bytes, tail.zone_position_bytes,
            "tail starts at the write pointer"
        );
        active.submitted_bytes = submitted_end;
        let write = allocator.write(active.zone, tail.zone_position_bytes, tail.buf);
        self.in_flight
            .push_back(InFlight::Write(write, allocator.buffers().clone()));
    }

    /// Submits everything appended so far and hands the writes in flight to a flush, which
    /// becomes the stream's latest.
    fn start_flush(&mut self, allocator: &ZoneAllocator) -> Result<StreamFlush, String> {
        self.reap();
        if let Some(message) = self.health.failure() {
            return Err(message);
        }
        if self.zone.is_some() {
            self.submit_tail(allocator, true);
        }
        let writes: Vec<InFlight> = self.in_flight.drain(..).collect();
        let (report, outcome) = watch::channel(None);
        let previous = self.last_flush.replace(outcome);
        Ok(StreamFlush {
            previous,
            writes,
            report,
            health: self.health.clone(),
        })
    }
}
