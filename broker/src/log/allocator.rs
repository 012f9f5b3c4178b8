//! `ZoneAllocator`: the zones of a device as the log store uses them — free, written by a zone
//! stream, sealed, dead, being reset — with the bytes still live in each, and the open-zone
//! budget. It also owns the buffer pools and the read cache shared by the device's partitions.
//!
//! Zones are shared by partitions (see `log::stream`), so a zone is reclaimed when nothing live
//! remains in it: every partition that had batches there dropped them (retention,
//! DeleteRecords, topic deletion). Live bytes are counted per zone incarnation (its zone
//! sequence): appends add, drops subtract; a sealed zone reaching zero is dead, and the
//! reclaimer (`log::reclaim`) resets it once the log start offsets that made it dead are
//! durable.
//!
//! Reservation: the last `reserved_zones` free zones go only to the internal stream (metadata
//! and consumer-group logs), so a full device still takes offset commits, topic deletions and
//! the log start offsets that retention writes; a data append that finds no zone fails at once
//! with `StorageFull` (KAFKA_STORAGE_ERROR to the producer) and succeeds again once zones are
//! reclaimed.
//!
//! Readers: a device read planned from a partition's index pins the zones it will read
//! (`ZonePin`, taken under the index lock, where the runs are live). A zone that dies while a
//! read of it is outstanding (GC moved its runs, retention dropped them) is held, not reset,
//! until the last pin is dropped: a read never finds its zone reset or rewritten under it.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::cache::ReadCache;
use crate::buf::{AlignedBuf, BufferPool, ReadBufferPool, BLOCK_SIZE};
use crate::pending::Pending;
use crate::zone::{ZoneError, ZoneId, ZoneState, ZonedDevice};

pub struct ZoneAllocator {
    device: Arc<dyn ZonedDevice>,
    /// Write-chunk buffers shared by every stream of the device, reused once the device hands
    /// them back, so steady appends neither allocate nor fault in fresh pages.
    buffers: BufferPool,
    /// Read-window buffers shared by every scan of the device, back once the last batch sliced
    /// from a window is dropped (after its response is written).
    read_buffers: ReadBufferPool,
    /// Recently appended batches of every partition of the device (see `log::cache`).
    read_cache: OnceLock<Arc<ReadCache>>,
    /// Bytes reserved by the readahead reads of every partition (see `PartitionLog::start_readahead`).
    readahead_reserved: Arc<std::sync::atomic::AtomicUsize>,
    /// Free zones kept for the internal stream.
    reserved_zones: usize,
    /// Frame bytes appended by clients and internal logs, and bytes written by zone seals
    /// (summaries, trailers and the zeros before them): write amplification is their ratio.
    pub(crate) bytes_appended: AtomicU64,
    pub(crate) bytes_overhead: AtomicU64,
    /// Bytes the garbage collector copied forward.
    pub(crate) bytes_copied: AtomicU64,
    state: Mutex<AllocatorState>,
    /// Sealed zones with nothing live, for the reclaimer.
    dead: Arc<DeadZones>,
    /// Outstanding planned reads per zone (see `ZonePin`).
    readers: Box<[AtomicU32]>,
    /// Dead zones whose reset waits for their readers (`AllocatorState::held`), counted
    /// outside the lock so that dropping a pin costs one atomic when none waits.
    held_count: AtomicUsize,
}

/// A planned read's hold on a zone: while any pin of it lives, the zone is not reset (see the
/// module's "Readers").
pub struct ZonePin {
    allocator: Arc<ZoneAllocator>,
    zone: ZoneId,
}

impl Drop for ZonePin {
    fn drop(&mut self) {
        let allocator = &self.allocator;
        let was = allocator.readers[self.zone as usize].fetch_sub(1, Ordering::SeqCst);
        if was == 1 && allocator.held_count.load(Ordering::SeqCst) > 0 {
            // A held zone may be free to reset now: the reclaimer looks.
            allocator.dead.wake();
        }
    }
}

/// Dead zones waiting for the reclaimer, shared with its thread without holding the device.
#[derive(Default)]
pub(crate) struct DeadZones {
    zones: Mutex<Vec<ZoneId>>,
    signal: Condvar,
    closed: std::sync::atomic::AtomicBool,
}

impl DeadZones {
    fn push(&self, zone: ZoneId) {
        self.zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(zone);
        self.signal.notify_all();
    }

    /// Takes the dead zones, waiting up to `timeout` for one; empty once closed.
    pub(crate) fn take(&self, timeout: Duration) -> Vec<ZoneId> {
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        if zones.is_empty() && !self.is_closed() {
            zones = self
                .signal
                .wait_timeout(zones, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::take(&mut *zones)
    }

    /// Wakes the reclaimer (a zone was sealed: its summary is to be written).
    pub(crate) fn wake(&self) {
        let _guard = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        self.signal.notify_all();
    }

    pub(crate) fn len(&self) -> usize {
        self.zones.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _guard = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        self.signal.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Chunk buffers kept for reuse: enough for the chunks a device has in flight at once.
const CHUNK_BUFFERS_KEPT_MAX: usize = 32;

/// Read-window buffers kept for reuse, by count and by bytes: enough for a sequential
/// consumer's readahead (`READAHEAD_DEPTH_MAX` fetches of windows of about 1 MiB) and the
/// fetch going out on its socket, so its windows are not allocated and faulted in again.
const READ_BUFFERS_KEPT_MAX: usize = 64;
const READ_BUFFER_BYTES_KEPT_MAX: usize = 128 << 20;

/// Free zones reserved for the internal stream: room for metadata, offset commits and log
/// start offsets while data streams are refused.
pub const RESERVED_ZONES_MAX: usize = 2;

/// How one zone is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneUse {
    /// The zone sequence of this incarnation (its header's).
    pub sequence: u64,
    /// Bytes of frames that some partition still holds.
    pub live_bytes: u64,
    /// No more appends go here (written to the end, or cut or closed at recovery).
    pub sealed: bool,
    /// The stream that wrote it.
    pub stream: u8,
}

struct AllocatorState {
    /// Empty zones nobody uses, lowest id first.
    free: BTreeSet<ZoneId>,
    /// Zones in use, by zone id.
    used: Vec<Option<ZoneUse>>,
    /// Zones being reset; they become free when the reset completes.
    resetting: Vec<(ZoneId, Pending<()>)>,
    /// Zones written since they were last closed, least recently written first.
    open_lru: VecDeque<ZoneId>,
    /// Dead zones released while pinned by a planned read: reset once unpinned.
    held: Vec<ZoneId>,
}

impl ZoneAllocator {
    /// Every empty zone is free; the others are adopted by recovery (`adopt`) or released.
    /// Zones left open by a previous owner of the device are closed: the open budget starts
    /// whole (a real device after power loss reports them closed too).
    pub fn new(device: Arc<dyn ZonedDevice>, chunk_bytes: usize) -> ZoneAllocator {
        let zones = device.report_zones();
        for zone in zones.iter().filter(|zone| zone.state == ZoneState::Open) {
            device
                .close(zone.id)
                .expect("an open zone can always be closed");
        }
        let free = zones
            .iter()
            .filter(|zone| zone.state == ZoneState::Empty)
            .map(|zone| zone.id)
            .collect();
        let reserved_zones = RESERVED_ZONES_MAX.min(zones.len() / 16);
        ZoneAllocator {
            // One block more than a chunk: a chunk-sized batch plus its frame header, flushed on
            // its own (acks=all), then leaves in one write instead of a chunk and a block.
            buffers: BufferPool::new(chunk_bytes + BLOCK_SIZE, CHUNK_BUFFERS_KEPT_MAX),
            read_buffers: ReadBufferPool::new(READ_BUFFERS_KEPT_MAX, READ_BUFFER_BYTES_KEPT_MAX),
            read_cache: OnceLock::new(),
            readahead_reserved: Arc::default(),
            reserved_zones,
            bytes_appended: AtomicU64::new(0),
            bytes_overhead: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            state: Mutex::new(AllocatorState {
                free,
                used: vec![None; zones.len()],
                resetting: Vec::new(),
                open_lru: VecDeque::new(),
                held: Vec::new(),
            }),
            dead: Arc::default(),
            readers: (0..zones.len()).map(|_| AtomicU32::new(0)).collect(),
            held_count: AtomicUsize::new(0),
            device,
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

    /// Records a zone recovery found in use.
    pub(crate) fn adopt(&self, zone: ZoneId, usage: ZoneUse) {
        let mut state = self.lock();
        assert!(!state.free.contains(&zone), "an adopted zone holds data");
        state.used[zone as usize] = Some(usage);
        if usage.sealed && usage.live_bytes == 0 {
            self.dead.push(zone);
        }
    }

    /// Takes a free zone for a stream, within the device's active-zone limit; only `internal`
    /// streams may take the reserved zones. Fails at once when there is none.
    pub fn allocate(&self, internal: bool) -> io::Result<ZoneId> {
        let mut state = self.lock();
        state.collect_resets();
        let geometry = self.device.geometry();
        let reserved = if internal { 0 } else { self.reserved_zones };
        if state.free.len() <= reserved {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no free zone left on the device ({} zones, {} free, {reserved} of them reserved for internal logs, {} being reclaimed)",
                    geometry.zone_count,
                    state.free.len(),
                    state.resetting.len() + self.dead.len()
                ),
            ));
        }
        let zone = *state.free.iter().next().expect("checked non-empty");
        // Active: open or closed on the device, or taken by a stream whose header write has
        // not reached the device yet (still empty there, neither free nor being reset): two
        // streams rolling at once must not both pass the check, or the later write fails at
        // the device and fails its stream.
        let active = self
            .device
            .report_zones()
            .iter()
            .filter(|zone| match zone.state {
                ZoneState::Open | ZoneState::Closed => true,
                ZoneState::Empty => {
                    !state.free.contains(&zone.id)
                        && !state.resetting.iter().any(|(resetting, _)| *resetting == zone.id)
                }
                _ => false,
            })
            .count() as u32;
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

    /// Records a zone a stream opened (its header is being written).
    pub(crate) fn opened(&self, zone: ZoneId, sequence: u64, stream: u8) {
        let mut state = self.lock();
        assert!(
            state.used[zone as usize].is_none(),
            "zone {zone} opened twice"
        );
        state.used[zone as usize] = Some(ZoneUse {
            sequence,
            live_bytes: 0,
            sealed: false,
            stream,
        });
    }

    /// A stream will not append to `zone` again.
    pub(crate) fn seal(&self, zone: ZoneId, sequence: u64) {
        // It stays in the open LRU: its summary is still to be written (it is open until then,
        // or closed by the LRU when another zone needs the budget).
        let mut state = self.lock();
        let Some(usage) = state.used[zone as usize]
            .as_mut()
            .filter(|usage| usage.sequence == sequence)
        else {
            return;
        };
        usage.sealed = true;
        if usage.live_bytes == 0 {
            self.dead.push(zone);
        }
    }

    /// Whether `zone` is in use in the incarnation `sequence`.
    pub(crate) fn in_use(&self, zone: ZoneId, sequence: u64) -> bool {
        self.lock().used[zone as usize].is_some_and(|usage| usage.sequence == sequence)
    }

    /// A partition holds `bytes` more of `zone`'s frames.
    pub(crate) fn add_live(&self, zone: ZoneId, sequence: u64, bytes: u64) {
        let mut state = self.lock();
        let usage = state.used[zone as usize]
            .as_mut()
            .filter(|usage| usage.sequence == sequence);
        let usage = usage.expect("frames are appended to a zone in use");
        usage.live_bytes += bytes;
    }

    /// A partition dropped `bytes` of `zone`'s frames.
    pub(crate) fn remove_live(&self, zone: ZoneId, sequence: u64, bytes: u64) {
        let mut state = self.lock();
        let Some(usage) = state.used[zone as usize]
            .as_mut()
            .filter(|usage| usage.sequence == sequence)
        else {
            panic!("live bytes dropped from zone {zone} sequence {sequence}, which is not in use");
        };
        assert!(
            usage.live_bytes >= bytes,
            "zone {zone}: dropping {bytes} of {} live bytes",
            usage.live_bytes
        );
        usage.live_bytes -= bytes;
        if usage.live_bytes == 0 && usage.sealed {
            self.dead.push(zone);
        }
    }

    pub(crate) fn dead_zones(&self) -> &Arc<DeadZones> {
        &self.dead
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
        if let Ok(info) = self.device.zone(zone) {
            if info.state == ZoneState::Open {
                state.open_lru.push_back(zone);
            }
        }
        pending
    }

    /// Finishes a zone nobody will write again (recovery's zones cut at a torn write).
    pub fn finish(&self, zone: ZoneId) -> Pending<()> {
        let mut state = self.lock();
        state.open_lru.retain(|&open| open != zone);
        self.device.finish(zone)
    }

    /// Finishes `zone` if it is still in use in the incarnation `sequence`: checked under the
    /// lock `release` resets under, so a zone reset and taken again meanwhile is never finished.
    pub(crate) fn finish_in_use(&self, zone: ZoneId, sequence: u64) -> Option<Pending<()>> {
        let mut state = self.lock();
        if !state.used[zone as usize].is_some_and(|usage| usage.sequence == sequence) {
            return None;
        }
        state.open_lru.retain(|&open| open != zone);
        Some(self.device.finish(zone))
    }

    /// Pins `zone` for a planned read: it is not reset before the pin is dropped. Take it while
    /// the run being read is in its partition's index (under the index lock).
    pub(crate) fn pin(self: &Arc<Self>, zone: ZoneId) -> ZonePin {
        self.readers[zone as usize].fetch_add(1, Ordering::SeqCst);
        ZonePin {
            allocator: self.clone(),
            zone,
        }
    }

    /// Planned reads of `zone` outstanding.
    pub fn readers(&self, zone: ZoneId) -> u32 {
        self.readers[zone as usize].load(Ordering::SeqCst)
    }

    /// Held zones (released while read) that no read pins any more: to release again.
    pub(crate) fn take_unpinned_held(&self) -> Vec<ZoneId> {
        if self.held_count.load(Ordering::SeqCst) == 0 {
            return Vec::new();
        }
        let mut state = self.lock();
        let (free, still): (Vec<ZoneId>, Vec<ZoneId>) = state
            .held
            .iter()
            .partition(|&&zone| self.readers(zone) == 0);
        state.held = still;
        self.held_count.store(state.held.len(), Ordering::SeqCst);
        free
    }

    /// Gives a zone back: it is reset and becomes free once the reset completes. A zone a
    /// planned read still pins is held instead (returns false), and released again (by the
    /// reclaimer) once unpinned.
    pub fn release(&self, zone: ZoneId) -> bool {
        let mut state = self.lock();
        if self.readers(zone) > 0 {
            // No new pin can come: a dead zone is in no index. The last unpin wakes the reclaimer.
            if !state.held.contains(&zone) {
                state.held.push(zone);
                self.held_count.store(state.held.len(), Ordering::SeqCst);
            }
            return false;
        }
        state.open_lru.retain(|&open| open != zone);
        state.used[zone as usize] = None;
        let reset = self.device.reset(zone);
        state.resetting.push((zone, reset));
        true
    }

    /// Free zones now (resets completed), for reports and tests.
    pub fn free_zone_count(&self) -> usize {
        let mut state = self.lock();
        state.collect_resets();
        state.free.len()
    }

    /// Whether data appends that need a new zone are refused now (no free zone beyond the
    /// reserved ones): produce answers KAFKA_STORAGE_ERROR until zones are reclaimed. What
    /// /metrics (`yotta_storage_full`) and system.partitions (`storage_full`) show.
    pub fn storage_full(&self) -> bool {
        self.free_zone_count() <= self.reserved_zones
    }

    /// Zones kept for the internal stream.
    pub fn reserved_zone_count(&self) -> usize {
        self.reserved_zones
    }

    /// How each zone is used (None: free or being reset).
    pub fn zone_uses(&self) -> Vec<Option<ZoneUse>> {
        self.lock().used.clone()
    }

    /// Bytes written per byte appended: appends, zone seals (summaries, trailers and the zeros
    /// before them) and garbage collection copies, over appends (1.0 before any append).
    pub fn write_amplification(&self) -> f64 {
        let appended = self.bytes_appended.load(Ordering::Relaxed);
        let overhead =
            self.bytes_overhead.load(Ordering::Relaxed) + self.bytes_copied.load(Ordering::Relaxed);
        if appended == 0 {
            1.0
        } else {
            (appended + overhead) as f64 / appended as f64
        }
    }

    /// Bytes appended, written by seals, and copied by the garbage collector, since the store opened.
    pub fn written_bytes(&self) -> (u64, u64, u64) {
        (
            self.bytes_appended.load(Ordering::Relaxed),
            self.bytes_overhead.load(Ordering::Relaxed),
            self.bytes_copied.load(Ordering::Relaxed),
        )
    }

    /// The sealed zone with the fewest live bytes, if at most `live_percent_max` of its
    /// capacity is live: (zone, sequence).
    pub(crate) fn victim(&self, live_percent_max: u64) -> Option<(ZoneId, u64)> {
        let capacity = self.device.geometry().zone_capacity_bytes;
        let state = self.lock();
        state
            .used
            .iter()
            .enumerate()
            .filter_map(|(zone, usage)| Some((zone as ZoneId, (*usage)?)))
            .filter(|(_, usage)| {
                usage.sealed
                    && usage.live_bytes > 0
                    && usage.live_bytes * 100 <= capacity * live_percent_max
            })
            .min_by_key(|(_, usage)| usage.live_bytes)
            .map(|(zone, usage)| (zone, usage.sequence))
    }

    /// Waits for every reset in progress (before reopening a device in tests, at shutdown).
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
