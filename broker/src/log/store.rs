//! `LogStore`: opens a zoned device, recovers every partition log on it, and creates new ones.
//!
//! Recovery reads every written zone's header, then its frames' entries: a sealed zone's from
//! its summary (trailer and summary only: the index checkpoint of that zone), any other zone's
//! by scanning its frames up to the first one that does not verify (a torn write: nothing from
//! there on is trusted). So only what was written after the last seal of each stream is
//! scanned. Each partition's log is then rebuilt from its entries (see `resolve`), with its
//! idempotent-producer state (from the batch fields the entries carry: no second pass).
//!
//! Zones recovery does not append to again: zones that were being written are finished (their
//! summary is missing, so a later recovery scans them again until they are reclaimed), and
//! zones with nothing live are reset by the reclaimer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::allocator::{ZoneAllocator, ZoneUse};
use super::batch::{self, BatchHeader};
use super::format::{
    self, FrameEntry, FrameKind, PartitionKey, ScanStep, Trailer, ZoneHeader, SUMMARY_ENTRY_BYTES,
    TRAILER_BYTES, ZONE_HEADER_BYTES,
};
use super::index::StartMarker;
use super::index::{IndexedBatch, PartitionIndex};
use super::partition::{LogConfig, LogError, PartitionId, PartitionLog, RecoveredParts};
use super::producer_state::ProducerStateTable;
use super::reclaim::Reclaimer;
use super::stream::Streams;
use super::txn_index::TxnIndex;
use crate::buf::{round_up, AlignedBuf, BLOCK_SIZE};
use crate::pending::join_all;
use crate::zone::{ZoneId, ZoneInfo, ZoneState, ZonedDevice};

/// Recovery reads zones in windows of this size: large enough to run at the device's
/// sequential read bandwidth, small enough that the buffer costs little to allocate.
const RECOVERY_WINDOW_BYTES: usize = 4 << 20;

/// Zones recovery reads at once: enough reads in flight to approach the device's bandwidth.
const RECOVERY_ZONES_IN_FLIGHT: usize = 4;

pub struct LogStore {
    streams: Arc<Streams>,
    config: LogConfig,
    _reclaimer: Reclaimer,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Zones whose frames were scanned (no valid summary), and the bytes read doing so.
    pub zones_scanned: usize,
    pub bytes_scanned: u64,
    /// Sealed zones recovered from their summaries alone.
    pub zones_from_summary: usize,
    pub batches_recovered: u64,
    /// Zones cut at a frame that did not verify (torn writes).
    pub zones_cut: usize,
    /// Zones reset: an unreadable header.
    pub zones_reset: usize,
    pub duration: Duration,
}

pub struct Recovered {
    pub store: LogStore,
    pub partitions: Vec<PartitionLog>,
    pub report: RecoveryReport,
}

/// A written zone with a valid header, and its frames' entries in position order.
struct ZoneFrames {
    info: ZoneInfo,
    header: ZoneHeader,
    entries: Vec<FrameEntry>,
}

/// One frame as recovery places it: its boot epoch, its zone, its rank in the zone.
#[derive(Clone, Copy)]
struct Located {
    boot: u64,
    zone: ZoneId,
    sequence: u64,
    ordinal: u32,
    created_ms: i64,
    entry: FrameEntry,
}

impl LogStore {
    /// Recovers every partition log on `device`.
    pub async fn open(
        device: Arc<dyn ZonedDevice>,
        config: LogConfig,
    ) -> Result<Recovered, LogError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let allocator = Arc::new(ZoneAllocator::new(device.clone(), config.write_chunk_bytes));
        let mut headed = Vec::new();
        for info in device
            .report_zones()
            .into_iter()
            .filter(|info| info.write_pointer_bytes > 0)
        {
            let block = device.read(info.id, 0, ZONE_HEADER_BYTES).await?;
            match ZoneHeader::decode(&block) {
                Some(header) => headed.push((info, header)),
                None => {
                    tracing::warn!(
                        zone = info.id,
                        "zone header does not verify; resetting the zone"
                    );
                    allocator.release(info.id);
                    report.zones_reset += 1;
                }
            }
        }
        let zones = read_zones(device.as_ref(), headed, &mut report).await?;
        let boot = zones
            .iter()
            .map(|zone| zone.header.boot + 1)
            .max()
            .unwrap_or(0);
        let next_zone_sequence = zones
            .iter()
            .map(|zone| zone.header.zone_sequence + 1)
            .max()
            .unwrap_or(0);
        let mut by_partition: HashMap<PartitionKey, Vec<Located>> = HashMap::new();
        for zone in &zones {
            for (ordinal, entry) in zone.entries.iter().enumerate() {
                let located = Located {
                    boot: entry.boot,
                    zone: zone.info.id,
                    sequence: zone.header.zone_sequence,
                    ordinal: ordinal as u32,
                    created_ms: zone.header.created_ms,
                    entry: *entry,
                };
                by_partition.entry(entry.key).or_default().push(located);
            }
        }
        let mut live: HashMap<ZoneId, u64> = HashMap::new();
        let mut resolved = Vec::with_capacity(by_partition.len());
        for (key, frames) in by_partition {
            let (parts, batches) = resolve(frames, &config, &mut live);
            report.batches_recovered += batches;
            resolved.push((key, parts));
        }
        for zone in &zones {
            let live_bytes = live.get(&zone.info.id).copied().unwrap_or(0);
            let usage = ZoneUse {
                sequence: zone.header.zone_sequence,
                live_bytes,
                sealed: true,
                stream: zone.header.stream,
            };
            allocator.adopt(zone.info.id, usage);
            if live_bytes > 0 && zone.info.state != ZoneState::Full {
                allocator.finish(zone.info.id).await?;
            }
        }
        // What recovery read may sit in a volatile cache: durable before anything depends on it.
        device.flush().await?;
        allocator.settle().await?;
        let streams = Arc::new(Streams::new(
            allocator,
            boot,
            next_zone_sequence,
            config.index_interval_bytes,
        ));
        let partitions = resolved
            .into_iter()
            .map(|(key, parts)| {
                let id = PartitionId {
                    topic: String::new(),
                    topic_id: key.topic_id,
                    partition: key.partition,
                };
                PartitionLog::from_parts(id, streams.clone(), config.clone(), parts)
            })
            .collect();
        report.duration = started.elapsed();
        let reclaimer = Reclaimer::spawn(&streams);
        Ok(Recovered {
            store: LogStore {
                streams,
                config,
                _reclaimer: reclaimer,
            },
            partitions,
            report,
        })
    }

    /// A new, empty partition log.
    pub fn create_partition(&self, id: PartitionId) -> PartitionLog {
        PartitionLog::create(id, self.streams.clone(), self.config.clone())
    }

    pub fn allocator(&self) -> &Arc<ZoneAllocator> {
        self.streams.allocator()
    }

    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    pub fn device(&self) -> &Arc<dyn ZonedDevice> {
        self.allocator().device()
    }

    /// Runs one garbage collection pass now, whether or not free zones are low (tests, bench):
    /// the emptiest sealed zone's live frames are copied forward. Returns the bytes copied.
    pub fn collect_garbage(&self, now_ms: i64) -> Result<u64, LogError> {
        super::gc::collect(&self.streams, now_ms, true)
    }

    /// Makes everything appended durable and resets every dead zone now (the reclaimer does it
    /// in the background; tests and shutdown want it done).
    pub async fn settle(&self) -> Result<(), LogError> {
        let dead = self.allocator().dead_zones().take(Duration::ZERO);
        self.streams.flush_all().complete().await?;
        // `reclaim::pass` blocks on device writes (it is the reclaimer thread's work): run it
        // on a thread of its own, never on the async caller's (a runtime thread cannot block).
        let streams = Arc::clone(&self.streams);
        let (done, passed) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("settle-reclaim".into()).spawn(move || {
            super::reclaim::pass(&streams, dead);
            let _ = done.send(());
        })?;
        passed.await.map_err(|_| LogError::Failed("the reclaim pass of settle() panicked".into()))?;
        self.allocator().settle().await?;
        Ok(())
    }
}

/// Every zone's entries, from its summary when it is sealed with a valid one, else by a scan;
/// several zones at once so their reads overlap.
async fn read_zones(
    device: &dyn ZonedDevice,
    headed: Vec<(ZoneInfo, ZoneHeader)>,
    report: &mut RecoveryReport,
) -> Result<Vec<ZoneFrames>, LogError> {
    let mut progress = ScanProgress::new(
        headed.len(),
        headed
            .iter()
            .map(|(info, _)| info.write_pointer_bytes)
            .sum(),
    );
    let mut zones = Vec::with_capacity(headed.len());
    for wave in headed.chunks(RECOVERY_ZONES_IN_FLIGHT) {
        let reading = wave
            .iter()
            .map(|(info, header)| read_zone(device, *info, header))
            .collect();
        for ((info, header), read) in wave.iter().zip(join_all(reading).await) {
            let read = read?;
            match read.source {
                Source::Summary => report.zones_from_summary += 1,
                Source::Scan { clean, bytes } => {
                    report.zones_scanned += 1;
                    report.bytes_scanned += bytes;
                    if !clean {
                        tracing::warn!(
                            zone = info.id,
                            "frame does not verify (torn write); the zone is cut there"
                        );
                        report.zones_cut += 1;
                    }
                }
            }
            progress.zone_read(info.write_pointer_bytes);
            zones.push(ZoneFrames {
                info: *info,
                header: header.clone(),
                entries: read.entries,
            });
        }
    }
    Ok(zones)
}

enum Source {
    Summary,
    /// Scanned: whether every frame up to the write pointer verified, and the bytes read.
    Scan {
        clean: bool,
        bytes: u64,
    },
}

struct ZoneRead {
    entries: Vec<FrameEntry>,
    source: Source,
}

async fn read_zone(
    device: &dyn ZonedDevice,
    info: ZoneInfo,
    header: &ZoneHeader,
) -> Result<ZoneRead, LogError> {
    if info.state == ZoneState::Full {
        if let Some(entries) = read_summary(device, info, header).await? {
            return Ok(ZoneRead {
                entries,
                source: Source::Summary,
            });
        }
    }
    scan_zone(device, info).await
}

/// A sealed zone's entries from its trailer and summary; `None` if they do not verify (a seal
/// cut by a crash, or a zone finished without one).
async fn read_summary(
    device: &dyn ZonedDevice,
    info: ZoneInfo,
    header: &ZoneHeader,
) -> Result<Option<Vec<FrameEntry>>, LogError> {
    let trailer_at = info.capacity_bytes - TRAILER_BYTES as u64;
    let block = device.read(info.id, trailer_at, TRAILER_BYTES).await?;
    let Some(trailer) =
        Trailer::decode(&block).filter(|trailer| trailer.zone_sequence == header.zone_sequence)
    else {
        return Ok(None);
    };
    let start = trailer.summary_start_bytes;
    let len = trailer.summary_bytes();
    if start % BLOCK_SIZE as u64 != 0
        || start < ZONE_HEADER_BYTES as u64
        || start + len > trailer_at
    {
        return Ok(None);
    }
    let read_len = round_up(len as usize, BLOCK_SIZE).max(BLOCK_SIZE);
    let bytes = device.read(info.id, start, read_len).await?;
    let summary = &bytes[..len as usize];
    if crc32fast::hash(summary) != trailer.summary_crc {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(trailer.entry_count as usize);
    for chunk in summary.chunks_exact(SUMMARY_ENTRY_BYTES) {
        match FrameEntry::decode(chunk).filter(|entry| entry.end_bytes() <= start) {
            Some(entry) => entries.push(entry),
            None => return Ok(None),
        }
    }
    Ok(Some(entries))
}

/// Scans a zone's frames up to its write pointer or the first one that does not verify.
async fn scan_zone(device: &dyn ZonedDevice, info: ZoneInfo) -> Result<ZoneRead, LogError> {
    let write_pointer = info.write_pointer_bytes;
    let mut entries = Vec::new();
    let mut position = ZONE_HEADER_BYTES as u64;
    let mut window = AlignedBuf::with_capacity(RECOVERY_WINDOW_BYTES.min(write_pointer as usize));
    let mut window_start = 0u64;
    let mut read_bytes_min = Some(RECOVERY_WINDOW_BYTES as u64);
    let mut bytes_read = 0u64;
    let clean = loop {
        if let Some(bytes_min) = read_bytes_min.take() {
            if position >= write_pointer {
                break true;
            }
            window_start = position / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
            let len = bytes_min
                .max(RECOVERY_WINDOW_BYTES as u64)
                .min(write_pointer - window_start) as usize;
            if window.capacity() < len {
                window = AlignedBuf::with_capacity(len);
            }
            window = device.read_into(info.id, window_start, window, len).await?;
            bytes_read += len as u64;
        }
        match format::scan_frame(&window, window_start, position, write_pointer) {
            ScanStep::Frame {
                kind,
                key,
                boot,
                payload,
                start_bytes,
                end_bytes,
            } => {
                let Some(entry) = entry_of(kind, key, boot, payload, start_bytes, end_bytes) else {
                    break false;
                };
                entries.push(entry);
                position = end_bytes;
            }
            ScanStep::Padding { next_bytes } => position = next_bytes,
            // Clean if the frames reach the write pointer, or if the zone is full (zeros
            // after the last frame; anything after them was never acknowledged).
            ScanStep::End => break position >= write_pointer || info.state == ZoneState::Full,
            ScanStep::NeedMore { frame_end_bytes } => {
                read_bytes_min =
                    Some(frame_end_bytes - position / BLOCK_SIZE as u64 * BLOCK_SIZE as u64);
            }
            ScanStep::Invalid => break false,
        }
    };
    crate::metrics::global()
        .recovery_bytes_scanned
        .inc_by(bytes_read);
    Ok(ZoneRead {
        entries,
        source: Source::Scan {
            clean,
            bytes: bytes_read,
        },
    })
}

/// The entry of a scanned frame; `None` if its payload does not verify.
fn entry_of(kind: FrameKind, key: PartitionKey, boot: u64, payload: &[u8], start_bytes: u64, end_bytes: u64) -> Option<FrameEntry> {
    let entry = match kind {
        FrameKind::RecordBatch => {
            // The frame CRC covers only the batch's prefix: the batch CRC covers the rest.
            let header = batch::validate_integrity(payload).ok()?;
            FrameEntry::for_batch(key, boot, payload, &header)
        }
        FrameKind::LogStartOffset => {
            let offset = i64::from_be_bytes(<[u8; 8]>::try_from(payload).ok()?);
            if offset < 0 {
                return None;
            }
            FrameEntry::for_log_start(key, boot, offset)
        }
    };
    Some(FrameEntry { position_bytes: start_bytes, frame_bytes: (end_bytes - start_bytes) as u32, ..entry })
}

/// Rebuilds one partition from its frames, wherever they are.
///
/// The log start is the largest recorded. Batches are taken in (boot, offset) order: within a
/// boot they must continue the log exactly (base offset = the end so far); the first one that
/// leaves a gap (its predecessor was torn or lost) ends what that boot contributes, since
/// nothing after a lost write was acknowledged. A later boot's batch below the end replaces
/// what the earlier boot left from there (recovery of that later boot had cut the log at that
/// point and appends continued from it). Adds each kept frame's bytes to `live`; returns the
/// partition and its batch count.
fn resolve(
    mut frames: Vec<Located>,
    config: &LogConfig,
    live: &mut HashMap<ZoneId, u64>,
) -> (RecoveredParts, u64) {
    let marker = frames
        .iter()
        .filter(|frame| frame.entry.kind == FrameKind::LogStartOffset)
        .max_by_key(|frame| {
            (
                frame.entry.base_offset,
                frame.boot,
                frame.sequence,
                frame.ordinal,
            )
        })
        .copied();
    let log_start = marker.map_or(0, |marker| marker.entry.base_offset);
    frames.retain(|frame| {
        frame.entry.kind == FrameKind::RecordBatch && frame.entry.last_offset() >= log_start
    });
    frames.sort_by_key(|frame| {
        (
            frame.boot,
            frame.entry.base_offset,
            frame.sequence,
            frame.ordinal,
        )
    });
    let mut accepted: Vec<Located> = Vec::new();
    let mut gap_boot = None;
    for frame in frames {
        if gap_boot == Some(frame.boot) {
            continue;
        }
        let base = frame.entry.base_offset;
        match accepted.last() {
            None if base <= log_start => accepted.push(frame),
            None => gap_boot = Some(frame.boot),
            Some(last) if base == last.entry.last_offset() + 1 => accepted.push(frame),
            Some(last) if base > last.entry.last_offset() + 1 => gap_boot = Some(frame.boot),
            Some(last) if frame.boot > last.boot => {
                accepted.retain(|kept| kept.entry.base_offset < base);
                let continues = accepted.last().map_or(base <= log_start, |kept| {
                    kept.entry.last_offset() + 1 == base
                });
                if continues {
                    accepted.push(frame);
                } else {
                    gap_boot = Some(frame.boot);
                }
            }
            // The same boot wrote this offset twice: only a copy; the first is kept.
            Some(_) => {}
        }
    }
    let mut index = PartitionIndex::new(config.index_interval_bytes);
    let mut producers = ProducerStateTable::default();
    let mut txns = TxnIndex::default();
    let mut previous: Option<&Located> = None;
    for frame in &accepted {
        let entry = &frame.entry;
        let follows_previous = previous.is_some_and(|previous| {
            previous.zone == frame.zone
                && previous.sequence == frame.sequence
                && previous.ordinal + 1 == frame.ordinal
        });
        index.on_batch(IndexedBatch {
            zone: frame.zone,
            sequence: frame.sequence,
            start_bytes: entry.position_bytes,
            end_bytes: entry.end_bytes(),
            base_offset: entry.base_offset,
            last_offset: entry.last_offset(),
            max_timestamp_ms: entry.max_timestamp_ms,
            min_timestamp_ms: entry.min_timestamp_ms,
            follows_previous,
        });
        // When the batch was appended is not stored: no earlier than the zone's creation, and
        // (but for client clocks) its timestamps. The estimate only matters for expiry.
        // Markers are the broker's, not a producer's sequenced batches (as at append).
        if !entry.txn_role.is_marker() {
            producers.load(&header_of(entry), entry.max_timestamp_ms.max(frame.created_ms));
        }
        txns.on_batch(entry.producer_id, entry.base_offset, entry.last_offset(), entry.txn_role);
        *live.entry(frame.zone).or_default() += u64::from(entry.frame_bytes);
        previous = Some(frame);
    }
    txns.on_log_start(log_start);
    let start_marker = marker.map(|marker| {
        *live.entry(marker.zone).or_default() += u64::from(marker.entry.frame_bytes);
        StartMarker {
            zone: marker.zone,
            sequence: marker.sequence,
            start_bytes: marker.entry.position_bytes,
            bytes: u64::from(marker.entry.frame_bytes),
        }
    });
    let end = accepted
        .last()
        .map_or(0, |last| last.entry.last_offset() + 1);
    let next_offset = end.max(log_start);
    (
        RecoveredParts {
            index,
            log_start_offset: log_start,
            start_marker,
            next_offset,
            producers,
            txns,
        },
        accepted.len() as u64,
    )
}

/// The batch header fields producer state needs, from a summary entry.
fn header_of(entry: &FrameEntry) -> BatchHeader {
    BatchHeader {
        base_offset: entry.base_offset,
        batch_length_bytes: 0,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: entry.last_offset_delta,
        base_timestamp_ms: entry.max_timestamp_ms,
        max_timestamp_ms: entry.max_timestamp_ms,
        producer_id: entry.producer_id,
        producer_epoch: entry.producer_epoch,
        base_sequence: entry.base_sequence,
        record_count: entry.last_offset_delta + 1,
    }
}

/// Start-up recovery's progress, logged about once a second while it lasts longer than that,
/// and counted in the recovery metrics.
struct ScanProgress {
    zones_total: usize,
    bytes_total: u64,
    zones_read: usize,
    started: Instant,
    last_logged: Instant,
}

impl ScanProgress {
    const LOG_INTERVAL: Duration = Duration::from_secs(1);

    fn new(zones_total: usize, bytes_total: u64) -> ScanProgress {
        let now = Instant::now();
        ScanProgress {
            zones_total,
            bytes_total,
            zones_read: 0,
            started: now,
            last_logged: now,
        }
    }

    fn zone_read(&mut self, _written_bytes: u64) {
        self.zones_read += 1;
        crate::metrics::global().recovery_zones_scanned.inc();
        if self.last_logged.elapsed() >= Self::LOG_INTERVAL {
            self.last_logged = Instant::now();
            tracing::info!(
                zones_read = self.zones_read,
                zones_total = self.zones_total,
                mib_total = self.bytes_total >> 20,
                seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()),
                "recovering: {}/{} zones read",
                self.zones_read,
                self.zones_total
            );
        }
    }
}
