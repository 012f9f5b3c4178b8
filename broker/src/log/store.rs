//! `LogStore`: opens a zoned device, recovers every partition log on it, and creates new ones.
//!
//! Recovery reads each zone's header to rebuild the partition chains (ordered by zone sequence),
//! then scans every frame up to the write pointer to rebuild the indexes. A chain is cut at the
//! first frame that does not verify (a torn write): that zone is finished so nothing is appended
//! after the garbage, and any later zones of the chain are reset (they can only hold writes that
//! were never acknowledged, since an acknowledgement waits for every earlier write). Zones whose
//! header does not verify are reset. The device's write pointers are the only metadata: there is
//! no side file that could disagree with the data.
//!
//! The same scan rebuilds each partition's idempotent-producer state from the batch headers
//! (producer id, epoch, sequences): each zone's scan collects its producers' last batches, and
//! the chain absorbs them zone by zone, in order. Headers only, no second pass.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::allocator::ZoneAllocator;
use super::batch;
use super::format::{self, FrameKind, ScanStep, ZoneHeader, ZONE_HEADER_BYTES};
use super::index::ZoneIndex;
use super::records;
use super::partition::{LogConfig, LogError, LogZone, PartitionId, PartitionLog};
use super::producer_state::ProducerStateTable;
use crate::buf::{AlignedBuf, BLOCK_SIZE};
use crate::pending::join_all;
use crate::zone::{ZoneId, ZoneInfo, ZoneState, ZonedDevice};

/// Recovery reads zones in windows of this size: large enough to run at the device's
/// sequential read bandwidth, small enough that the buffer costs little to allocate (a zeroed
/// zone-sized buffer per zone cost more than the read itself).
const RECOVERY_WINDOW_BYTES: usize = 4 << 20;

/// Zones recovery scans at once: enough reads in flight to approach the device's bandwidth.
const RECOVERY_ZONES_IN_FLIGHT: usize = 4;

pub struct LogStore {
    allocator: Arc<ZoneAllocator>,
    config: LogConfig,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub zones_scanned: usize,
    pub bytes_scanned: u64,
    pub batches_recovered: u64,
    /// Zones cut at a frame that did not verify (torn writes), then finished.
    pub zones_cut: usize,
    /// Zones reset: an unreadable header, or after a cut in their chain.
    pub zones_reset: usize,
    pub duration: Duration,
}

pub struct Recovered {
    pub store: LogStore,
    pub partitions: Vec<PartitionLog>,
    pub report: RecoveryReport,
}

struct ChainZone {
    info: ZoneInfo,
    header: ZoneHeader,
}

impl LogStore {
    /// Recovers every partition log on `device`.
    pub async fn open(
        device: Arc<dyn ZonedDevice>,
        config: LogConfig,
    ) -> Result<Recovered, LogError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let mut chains: BTreeMap<PartitionId, Vec<ChainZone>> = BTreeMap::new();
        let mut unreadable = Vec::new();
        for info in device.report_zones() {
            if info.write_pointer_bytes == 0 {
                continue;
            }
            let block = device.read(info.id, 0, ZONE_HEADER_BYTES).await?;
            match ZoneHeader::decode(&block) {
                Some(header) => {
                    let id = PartitionId {
                        topic: header.topic.clone(),
                        topic_id: header.topic_id,
                        partition: header.partition,
                    };
                    chains
                        .entry(id)
                        .or_default()
                        .push(ChainZone { info, header });
                }
                None => unreadable.push(info.id),
            }
        }
        let owned: BTreeSet<ZoneId> = chains.values().flatten().map(|zone| zone.info.id).collect();
        let allocator = Arc::new(ZoneAllocator::new(device.clone(), &owned, config.write_chunk_bytes));
        for zone in unreadable {
            tracing::warn!(zone, "zone header does not verify; resetting the zone");
            allocator.release(zone);
            report.zones_reset += 1;
        }
        let mut partitions = Vec::with_capacity(chains.len());
        // Every zone's scan is independent of the others: several run at once so their reads
        // overlap (one zone at a time reads at queue depth 1, well below the device's bandwidth).
        let jobs: Vec<(ZoneInfo, &ZoneHeader)> = chains.values().flatten().map(|zone| (zone.info, &zone.header)).collect();
        let mut scans: BTreeMap<ZoneId, ScannedZone> = BTreeMap::new();
        let mut progress = ScanProgress::new(jobs.len(), jobs.iter().map(|(info, _)| info.write_pointer_bytes).sum());
        for wave in jobs.chunks(RECOVERY_ZONES_IN_FLIGHT) {
            let scanning = wave.iter().map(|(info, header)| scan_zone(device.as_ref(), *info, header, &config)).collect();
            for ((info, _), scanned) in wave.iter().zip(join_all(scanning).await) {
                scans.insert(info.id, scanned?);
                progress.zone_scanned(info.write_pointer_bytes);
            }
        }
        drop(jobs);
        for (id, mut chain) in chains {
            chain.sort_by_key(|zone| zone.header.zone_sequence);
            let log = recover_chain(id, chain, &mut scans, &allocator, &config, &mut report).await?;
            partitions.push(log);
        }
        allocator.settle().await?;
        report.duration = started.elapsed();
        Ok(Recovered {
            store: LogStore { allocator, config },
            partitions,
            report,
        })
    }

    /// A new, empty partition log (it takes a zone at its first append).
    pub fn create_partition(&self, id: PartitionId) -> PartitionLog {
        PartitionLog::create(id, self.allocator.clone(), self.config.clone())
    }

    pub fn allocator(&self) -> &Arc<ZoneAllocator> {
        &self.allocator
    }

    pub fn device(&self) -> &Arc<dyn ZonedDevice> {
        self.allocator.device()
    }
}

/// Start-up recovery's progress, logged about once a second while a scan runs longer than that
/// (a device of many full zones takes minutes), and counted in the recovery metrics.
struct ScanProgress {
    zones_total: usize,
    bytes_total: u64,
    zones_scanned: usize,
    bytes_scanned: u64,
    started: Instant,
    last_logged: Instant,
}

impl ScanProgress {
    const LOG_INTERVAL: Duration = Duration::from_secs(1);

    fn new(zones_total: usize, bytes_total: u64) -> ScanProgress {
        let now = Instant::now();
        ScanProgress { zones_total, bytes_total, zones_scanned: 0, bytes_scanned: 0, started: now, last_logged: now }
    }

    fn zone_scanned(&mut self, bytes: u64) {
        self.zones_scanned += 1;
        self.bytes_scanned += bytes;
        let metrics = crate::metrics::global();
        metrics.recovery_zones_scanned.inc();
        metrics.recovery_bytes_scanned.inc_by(bytes);
        if self.last_logged.elapsed() >= Self::LOG_INTERVAL {
            self.last_logged = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(
                zones_scanned = self.zones_scanned,
                zones_total = self.zones_total,
                mib_scanned = self.bytes_scanned >> 20,
                mib_total = self.bytes_total >> 20,
                mib_per_s = format!("{:.1}", self.bytes_scanned as f64 / (1 << 20) as f64 / seconds),
                "recovering: {}/{} zones scanned",
                self.zones_scanned,
                self.zones_total
            );
        }
    }
}

async fn recover_chain(
    id: PartitionId,
    chain: Vec<ChainZone>,
    scans: &mut BTreeMap<ZoneId, ScannedZone>,
    allocator: &Arc<ZoneAllocator>,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<PartitionLog, LogError> {
    let mut zones: VecDeque<LogZone> = VecDeque::new();
    let mut producers = ProducerStateTable::default();
    let mut log_start_offset = 0i64;
    // New zones get a sequence above every zone seen, even dropped ones whose reset may not
    // complete before another crash.
    let next_zone_sequence = chain
        .iter()
        .map(|zone| zone.header.zone_sequence + 1)
        .max()
        .unwrap_or(0);
    for ChainZone { info, header } in chain {
        // A zone continues the log only if it starts exactly where the verified log ends. That
        // keeps a zone written after an earlier cut (its base is the cut point) and drops one
        // written before a crash after a torn write (its base lies beyond the cut).
        let continues = zones.back().is_none_or(|last| {
            last.end_offset == header.base_offset && last.sequence < header.zone_sequence
        });
        if !continues {
            tracing::warn!(topic = %id.topic, partition = id.partition, zone = info.id, "zone does not continue the verified log; resetting it");
            allocator.release(info.id);
            report.zones_reset += 1;
            continue;
        }
        let scanned = scans.remove(&info.id).expect("every chain zone was scanned");
        report.zones_scanned += 1;
        report.bytes_scanned += info.write_pointer_bytes;
        report.batches_recovered += scanned.batches;
        log_start_offset = log_start_offset.max(scanned.log_start_offset);
        producers.absorb(scanned.producers);
        let mut zone = scanned.zone;
        if !scanned.clean {
            tracing::warn!(
                topic = %id.topic, partition = id.partition, zone = info.id, position_bytes = zone.data_end_bytes,
                "frame does not verify (torn write); cutting the log here"
            );
            report.zones_cut += 1;
        }
        if !scanned.clean || info.state == ZoneState::Full {
            zone.sealed = true;
            if info.state != ZoneState::Full {
                allocator.finish(info.id).await?;
            }
        }
        zones.push_back(zone);
    }
    // Every zone but the last is sealed: appends only ever go to the newest zone.
    let count = zones.len();
    for zone in zones.iter_mut().take(count.saturating_sub(1)) {
        if !zone.sealed {
            zone.sealed = true;
            allocator.finish(zone.zone).await?;
        }
    }
    let first_base = zones.front().map_or(0, |zone| zone.base_offset);
    let next_offset = zones.back().map_or(0, |zone| zone.end_offset);
    let log_start_offset = log_start_offset.max(first_base).min(next_offset);
    Ok(PartitionLog::from_parts(
        id,
        allocator.clone(),
        config.clone(),
        zones,
        (log_start_offset, next_offset),
        next_zone_sequence,
        producers,
    ))
}

struct ScannedZone {
    zone: LogZone,
    batches: u64,
    log_start_offset: i64,
    /// The idempotent producers' last batches in this zone.
    producers: ProducerStateTable,
    /// The scan reached the write pointer with every frame verified.
    clean: bool,
}

async fn scan_zone(
    device: &dyn ZonedDevice,
    info: ZoneInfo,
    header: &ZoneHeader,
    config: &LogConfig,
) -> Result<ScannedZone, LogError> {
    let write_pointer = info.write_pointer_bytes;
    let mut index = ZoneIndex::new(config.index_interval_bytes);
    let mut position = ZONE_HEADER_BYTES as u64;
    let mut data_end = position;
    let mut next_offset = header.base_offset;
    let mut batches = 0;
    let mut log_start_offset = 0;
    let mut producers = ProducerStateTable::default();
    // The zone is read in windows into one buffer; a frame that does not fit the window makes
    // the next read start at that frame, large enough to hold it.
    let mut window = AlignedBuf::with_capacity(RECOVERY_WINDOW_BYTES.min(write_pointer as usize));
    let mut window_start = 0u64;
    let mut read_bytes_min = Some(RECOVERY_WINDOW_BYTES as u64);
    let clean = loop {
        if let Some(bytes_min) = read_bytes_min.take() {
            if position >= write_pointer {
                break true;
            }
            window_start = position / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
            let len = (bytes_min.max(RECOVERY_WINDOW_BYTES as u64)).min(write_pointer - window_start) as usize;
            if window.capacity() < len {
                window = AlignedBuf::with_capacity(len);
            }
            window = device.read_into(info.id, window_start, window, len).await?;
        }
        match format::scan_frame(&window, window_start, position, write_pointer) {
            ScanStep::Frame { kind: FrameKind::RecordBatch, payload, end_bytes } => {
                // The frame CRC covers only the batch's prefix: the batch CRC covers the rest.
                let Ok(batch) = batch::validate_integrity(payload) else { break false };
                if batch.base_offset != next_offset {
                    break false;
                }
                index.on_batch(batch.base_offset, batch.last_offset(), position, batch.max_timestamp_ms, records::timestamp_lower_bound_ms(payload, &batch));
                // When the batch was appended is not stored: it was no earlier than the zone's
                // creation, and (but for client clocks) no earlier than its timestamps. The
                // estimate only matters for expiry.
                producers.load(&batch, batch.max_timestamp_ms.max(header.created_ms));
                next_offset = batch.last_offset() + 1;
                batches += 1;
                position = end_bytes;
                data_end = end_bytes;
            }
            ScanStep::Frame { kind: FrameKind::LogStartOffset, payload, end_bytes } => {
                let Ok(bytes) = <[u8; 8]>::try_from(payload) else { break false };
                log_start_offset = log_start_offset.max(i64::from_be_bytes(bytes));
                position = end_bytes;
                data_end = end_bytes;
            }
            ScanStep::Padding { next_bytes } => position = next_bytes,
            // Clean if the frames reach the write pointer, or if the zone is full: a zone
            // finished at a roll holds zeros after its last frame. (Anything a full zone could
            // hold after zeros was never acknowledged: an acknowledgement waits for every earlier
            // write.) Not for a zone still open to appends: appending after a gap of zeros would
            // leave data that a later recovery stops before.
            ScanStep::End => break position >= write_pointer || info.state == ZoneState::Full,
            ScanStep::NeedMore { frame_end_bytes } => {
                read_bytes_min = Some(frame_end_bytes - position / BLOCK_SIZE as u64 * BLOCK_SIZE as u64);
            }
            ScanStep::Invalid => break false,
        }
    };
    let zone = LogZone {
        zone: info.id,
        sequence: header.zone_sequence,
        base_offset: header.base_offset,
        end_offset: next_offset,
        data_end_bytes: data_end,
        submitted_bytes: write_pointer,
        index,
        sealed: false,
    };
    Ok(ScannedZone {
        zone,
        batches,
        log_start_offset,
        producers,
        clean,
    })
}
