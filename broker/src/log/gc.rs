//! Garbage collection: when free zones run low, the live frames of the emptiest sealed zone
//! are copied forward and the zone dies, to be reset by the reclaimer.
//!
//! Which frames are live is what the partitions' indexes say (the registry in `Streams`). A
//! pass reads each live run of the victim, appends copies to the internal stream (whose zones
//! are reserved, so GC makes progress on a full device), flushes them, and only then points
//! each index at its copy, if the run is still there (retention or a deletion may have dropped
//! it meanwhile: then the copy is dropped). Copies keep their frames' boot epoch, so recovery
//! treats an original and its copy as the same batch (see `store::resolve`). Reads planned
//! before the switch still read the old zone, which is reset only after the next flush of every
//! stream and once no planned read pins it. Runs on the reclaimer's thread: it waits for its
//! reads and flush there.
//!
//! Reads racing GC: a read planned from an index pins the zones it reads (see
//! `log::allocator`), so a zone GC (or retention) empties is reset only once the reads planned
//! before the switch are done; reads planned after it find the copies.

use super::batch;
use super::format::{self, FrameEntry, FrameKind, ScanStep};
use super::index::{self, IndexedBatch, PartitionIndex, Run, SharedIndex, StartMarker};
use super::partition::LogError;
use super::stream::{Lifetime, Placement, Streams};
use crate::buf::{round_up, BLOCK_SIZE};

/// GC runs when free zones (beyond the reserved ones) are at most this many, or a sixteenth of
/// the device, whichever is more.
const FREE_ZONES_LOW_MIN: usize = 4;
/// A zone is collected only if at most this share of its capacity is live: copying a nearly
/// full zone frees almost nothing.
const LIVE_PERCENT_MAX: u64 = 75;

/// What lives in the victim and is being copied.
enum Live {
    Run {
        index: SharedIndex,
        old: Run,
        copies: Vec<Run>,
    },
    Marker {
        index: SharedIndex,
        old: StartMarker,
        copy: StartMarker,
    },
}

/// One pass: collects the emptiest zone if free zones are low (or `force`). Returns the bytes
/// copied.
pub(crate) fn collect(streams: &Streams, now_ms: i64, force: bool) -> Result<u64, LogError> {
    let allocator = streams.allocator();
    let zone_count = allocator.device().geometry().zone_count as usize;
    let low = FREE_ZONES_LOW_MIN.max(zone_count / 16) + allocator.reserved_zone_count();
    if !force && allocator.free_zone_count() > low {
        return Ok(0);
    }
    let Some((zone, sequence)) = allocator.victim(LIVE_PERCENT_MAX) else {
        return Ok(0);
    };
    // Another pass (`LogStore::collect_garbage`) may empty the same victim meanwhile: the
    // zone is not reset while this pass reads it.
    let _pin = allocator.pin(zone);
    if !allocator.in_use(zone, sequence) {
        return Ok(0);
    }
    let mut live = Vec::new();
    for shared in streams.indexes() {
        let index = index::lock(&shared);
        for run in index
            .runs
            .runs()
            .iter()
            .filter(|run| run.zone == zone && run.sequence == sequence)
        {
            live.push((shared.clone(), Err(*run)));
        }
        if let Some(marker) = index
            .start_marker
            .filter(|marker| marker.zone == zone && marker.sequence == sequence)
        {
            live.push((shared.clone(), Ok(marker)));
        }
    }
    let mut copied = Vec::with_capacity(live.len());
    let mut bytes = 0u64;
    for (shared, what) in live {
        let key = index::lock(&shared).key;
        let (start, end) = match &what {
            Err(run) => (run.start_bytes, run.end_bytes),
            Ok(marker) => (marker.start_bytes, marker.start_bytes + marker.bytes),
        };
        let kind = if what.is_ok() {
            FrameKind::LogStartOffset
        } else {
            FrameKind::RecordBatch
        };
        let placements = copy_frames(streams, zone, (start, end), key, kind, now_ms)?;
        bytes += placements
            .iter()
            .map(|(placement, _)| placement.end_bytes - placement.start_bytes)
            .sum::<u64>();
        copied.push(match what {
            Err(old) => Live::Run {
                index: shared,
                old,
                copies: runs_of(streams, &placements),
            },
            Ok(old) => {
                let (placement, _) =
                    placements
                        .first()
                        .copied()
                        .ok_or(LogError::CorruptOnDevice {
                            zone,
                            position_bytes: start,
                        })?;
                let copy = StartMarker {
                    zone: placement.zone,
                    sequence: placement.sequence,
                    start_bytes: placement.start_bytes,
                    bytes: old.bytes,
                };
                Live::Marker {
                    index: shared,
                    old,
                    copy,
                }
            }
        });
    }
    let internal = streams.for_lifetime(Lifetime::Internal);
    streams.start_flush(&[internal], None).wait()?;
    for live in copied {
        switch(streams, live);
    }
    allocator
        .bytes_copied
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(zone, bytes, "garbage collected a zone");
    Ok(bytes)
}

/// Reads the frames of `kind` in `range` of `zone` and appends copies to the internal stream
/// (a run of batches may span one of its partition's log start frames, which is not its to copy).
fn copy_frames(
    streams: &Streams,
    zone: u32,
    (start, end): (u64, u64),
    key: format::PartitionKey,
    want: FrameKind,
    now_ms: i64,
) -> Result<Vec<(Placement, FrameEntry)>, LogError> {
    let device = streams.allocator().device();
    let window_start = start / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
    let window_end = round_up(end as usize, BLOCK_SIZE) as u64;
    let window = device
        .read(zone, window_start, (window_end - window_start) as usize)
        .wait()?;
    let internal = streams.for_lifetime(Lifetime::Internal);
    let mut placements = Vec::new();
    let mut position = start;
    while position < end {
        let corrupt = LogError::CorruptOnDevice {
            zone,
            position_bytes: position,
        };
        match format::scan_frame(&window, window_start, position, window_end) {
            ScanStep::Frame {
                kind,
                key: frame_key,
                end_bytes,
                ..
            } if frame_key == key && kind != want => position = end_bytes,
            ScanStep::Frame {
                kind,
                key: frame_key,
                boot,
                payload,
                start_bytes: _,
                end_bytes,
            } if frame_key == key => {
                let entry = entry_for_copy(kind, key, boot, payload).ok_or(corrupt)?;
                let placement =
                    streams.append_copy(internal, &key, kind, payload, entry, now_ms)?;
                placements.push((placement, entry));
                position = end_bytes;
            }
            ScanStep::Padding { next_bytes } => position = next_bytes,
            _ => return Err(corrupt),
        }
    }
    Ok(placements)
}

fn entry_for_copy(
    kind: FrameKind,
    key: format::PartitionKey,
    boot: u64,
    payload: &[u8],
) -> Option<FrameEntry> {
    match kind {
        FrameKind::LogStartOffset => Some(FrameEntry::for_log_start(
            key,
            boot,
            i64::from_be_bytes(payload.try_into().ok()?),
        )),
        FrameKind::RecordBatch => {
            let header = batch::parse_header(payload).ok()?;
            Some(FrameEntry::for_batch(key, boot, payload, &header))
        }
    }
}

/// The runs the copies form.
fn runs_of(streams: &Streams, placements: &[(Placement, FrameEntry)]) -> Vec<Run> {
    let mut index = PartitionIndex::new(streams.index_interval_bytes());
    for (placement, entry) in placements
        .iter()
        .filter(|(_, entry)| entry.kind == FrameKind::RecordBatch)
    {
        index.on_batch(IndexedBatch {
            zone: placement.zone,
            sequence: placement.sequence,
            start_bytes: placement.start_bytes,
            end_bytes: placement.end_bytes,
            base_offset: entry.base_offset,
            last_offset: entry.last_offset(),
            max_timestamp_ms: entry.max_timestamp_ms,
            min_timestamp_ms: entry.min_timestamp_ms,
            follows_previous: placement.follows_own_frame,
        });
    }
    index.runs().iter().copied().collect()
}

/// Points an index at its copy if the original is still there; else drops the copy.
fn switch(streams: &Streams, live: Live) {
    let allocator = streams.allocator();
    match live {
        Live::Run { index, old, copies } => {
            let mut guard = index::lock(&index);
            match guard.runs.find(old.zone, old.sequence, old.start_bytes) {
                Some(at) => {
                    guard.runs.replace(at, copies);
                    allocator.remove_live(old.zone, old.sequence, old.bytes);
                }
                None => copies
                    .iter()
                    .for_each(|copy| allocator.remove_live(copy.zone, copy.sequence, copy.bytes)),
            }
        }
        Live::Marker { index, old, copy } => {
            let mut guard = index::lock(&index);
            let (release, keep) = if guard.start_marker == Some(old) {
                (old, Some(copy))
            } else {
                (copy, guard.start_marker)
            };
            guard.start_marker = keep;
            allocator.remove_live(release.zone, release.sequence, release.bytes);
        }
    }
}
