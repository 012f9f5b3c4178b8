//! `ZoneAllocator`: which zones are free, which are open, and the open-zone budget shared by all
//! partitions of a device.
//!
//! Strategy for more partitions than open zones (e.g. 1,000 partitions, 14 open zones): a zone
//! is open only while it is being written. Before a write, the allocator makes room by closing
//! the least recently written open zone (an explicit close, as on ZNS: the zone keeps its data
//! and write pointer, stays active, and is reopened implicitly by its next write). Partitions
//! buffer their tail in memory and write whole chunks or a padded block at a flush, so the
//! number of zone switches is bounded by flushes, not by records.
//!
//! Active zones (open + closed) are the harder limit: every partition with a partly written
//! zone holds one. The allocator refuses a new zone when the device's active limit is reached
//! (an error reaches the producer; nothing is lost), so `max_active_zones` must be at least the
//! number of partitions being written. The file backend defaults to a generous limit; on a real
//! device with a small active limit, use fewer partitions or smaller zones.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::cache::ReadCache;
use crate::buf::{AlignedBuf, BufferPool, ReadBufferPool, BLOCK_SIZE};
use crate::pending::Pending;
use crate::zone::{ZoneError, ZoneId, ZoneState, ZonedDevice};

pub struct ZoneAllocator {
    device: Arc<dyn ZonedDevice>,
    /// Write-chunk buffers shared by every partition of the device, reused once the device
    /// hands them back, so steady appends neither allocate nor fault in fresh pages.
    buffers: BufferPool,
    /// Read-window buffers shared by every scan of the device, back once the last batch sliced
    /// from a window is dropped (after its response is written), so reads do not fault in and
    /// zero fresh pages per window.
    read_buffers: ReadBufferPool,
    /// Recently appended batches of every partition of the device (see `log::cache`).
    read_cache: OnceLock<Arc<ReadCache>>,
    /// Bytes reserved by the readahead reads of every partition (see `PartitionLog::start_readahead`).
    readahead_reserved: Arc<std::sync::atomic::AtomicUsize>,
    state: Mutex<AllocatorState>,
}

/// Chunk buffers kept for reuse: enough for the chunks a device has in flight at once at its
/// usual queue depth; past that, a fresh allocation costs little beside a chunk of I/O.
const CHUNK_BUFFERS_KEPT_MAX: usize = 32;

/// Read-window buffers kept for reuse, by count and by bytes: enough for a few fetches of
/// several partitions in flight with multi-MiB windows; beyond it, windows are allocated and
/// freed per read.
const READ_BUFFERS_KEPT_MAX: usize = 32;
const READ_BUFFER_BYTES_KEPT_MAX: usize = 128 << 20;

struct AllocatorState {
    /// Empty zones nobody owns, lowest id first.
    free: BTreeSet<ZoneId>,
    /// Zones being reset; they become free when the reset completes.
    resetting: Vec<(ZoneId, Pending<()>)>,
    /// Zones this allocator opened, least recently written first.
    open_lru: VecDeque<ZoneId>,
}

impl ZoneAllocator {
    /// `owned` are the zones that recovered partitions hold; every other empty zone is free.
    /// Zones left open by a previous owner of the device are closed: nobody writes them now, and
    /// the open budget starts whole (a real device after power loss reports them closed too).
    pub fn new(device: Arc<dyn ZonedDevice>, owned: &BTreeSet<ZoneId>, chunk_bytes: usize) -> ZoneAllocator {
        for zone in device
            .report_zones()
            .iter()
            .filter(|zone| zone.state == ZoneState::Open)
        {
            device
                .close(zone.id)
                .expect("an open zone can always be closed");
        }
        let free = device
            .report_zones()
            .iter()
            .filter(|zone| zone.state == ZoneState::Empty && !owned.contains(&zone.id))
            .map(|zone| zone.id)
            .collect();
        ZoneAllocator {
            device,
            // One block more than a chunk: a chunk-sized batch plus its frame header, flushed on
            // its own (acks=all), then leaves in one write instead of a chunk and a block.
            buffers: BufferPool::new(chunk_bytes + BLOCK_SIZE, CHUNK_BUFFERS_KEPT_MAX),
            read_buffers: ReadBufferPool::new(READ_BUFFERS_KEPT_MAX, READ_BUFFER_BYTES_KEPT_MAX),
            read_cache: OnceLock::new(),
            readahead_reserved: Arc::default(),
            state: Mutex::new(AllocatorState {
                free,
                resetting: Vec::new(),
                open_lru: VecDeque::new(),
            }),
        }
    }

    pub fn device(&self) -> &Arc<dyn ZonedDevice> {
        &self.device
    }

    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    pub fn read_buffers(&self) -> &ReadBufferPool {
        &self.read_buffers
    }

    /// The bytes reserved by readahead reads of every partition of the device.
    pub fn readahead_reserved(&self) -> &Arc<std::sync::atomic::AtomicUsize> {
        &self.readahead_reserved
    }

    /// The read cache shared by every partition of the device, of `bytes_max` bytes when this
    /// call creates it (the logs of a store share one `LogConfig`, so the first to ask sizes it).
    pub fn read_cache(&self, bytes_max: usize) -> &Arc<ReadCache> {
        self.read_cache.get_or_init(|| ReadCache::new(bytes_max))
    }

    fn lock(&self) -> MutexGuard<'_, AllocatorState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a free zone for a partition, within the device's active-zone limit.
    pub fn allocate(&self) -> io::Result<ZoneId> {
        let mut state = self.lock();
        state.collect_resets();
        let geometry = self.device.geometry();
        let active = self
            .device
            .report_zones()
            .iter()
            .filter(|zone| matches!(zone.state, ZoneState::Open | ZoneState::Closed))
            .count() as u32;
        let Some(&zone) = state.free.iter().next() else {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no free zone left on the device ({} zones, {} being reset)",
                    geometry.zone_count,
                    state.resetting.len()
                ),
            ));
        };
        if active >= geometry.max_active_zones {
            return Err(ZoneError::TooManyActiveZones {
                zone,
                max_active_zones: geometry.max_active_zones,
            }
            .into());
        }
        state.free.remove(&zone);
        Ok(zone)
    }

    /// Writes at the zone's write pointer, first closing the least recently written zone if the
    /// open budget is used up.
    pub fn write(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf) -> Pending<AlignedBuf> {
        let mut state = self.lock();
        let max_open = self.device.geometry().max_open_zones as usize;
        if let Some(at) = state.open_lru.iter().position(|&open| open == zone) {
            state.open_lru.remove(at);
        } else {
            while state.open_lru.len() >= max_open {
                let victim = state.open_lru.pop_front().expect("non-empty");
                // A zone that filled up meanwhile is no longer open: closing it fails harmlessly.
                let _ = self.device.close(victim);
            }
        }
        let pending = self.device.write(zone, offset_bytes, buf);
        match self.device.zone(zone) {
            Ok(info) if info.state == ZoneState::Open => state.open_lru.push_back(zone),
            _ => {}
        }
        pending
    }

    /// Finishes a zone its partition will not write again.
    pub fn finish(&self, zone: ZoneId) -> Pending<()> {
        let mut state = self.lock();
        state.open_lru.retain(|&open| open != zone);
        self.device.finish(zone)
    }

    /// Gives a zone back: it is reset and becomes free once the reset completes.
    pub fn release(&self, zone: ZoneId) {
        let mut state = self.lock();
        state.open_lru.retain(|&open| open != zone);
        let reset = self.device.reset(zone);
        state.resetting.push((zone, reset));
    }

    /// Free zones now (resets completed), for reports and tests.
    pub fn free_zone_count(&self) -> usize {
        let mut state = self.lock();
        state.collect_resets();
        state.free.len()
    }

    /// Waits for every reset in progress (used before reopening a device in tests and at
    /// shutdown, so released zones are really empty on the device).
    pub async fn settle(&self) -> io::Result<()> {
        let resetting = std::mem::take(&mut self.lock().resetting);
        let mut first_error = None;
        for (zone, reset) in resetting {
            match reset.await {
                Ok(()) => {
                    self.lock().free.insert(zone);
                }
                Err(error) => {
                    tracing::error!(zone, %error, "zone reset failed; the zone stays out of use");
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl AllocatorState {
    fn collect_resets(&mut self) {
        let mut still = Vec::new();
        for (zone, mut reset) in self.resetting.drain(..) {
            match reset.try_take() {
                None => still.push((zone, reset)),
                Some(Ok(())) => {
                    self.free.insert(zone);
                }
                Some(Err(error)) => {
                    tracing::error!(zone, %error, "zone reset failed; the zone stays out of use")
                }
            }
        }
        self.resetting = still;
    }
}
