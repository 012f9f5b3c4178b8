//! Reads of one partition's batches from shared zones: plans made under the partition lock
//! from its index, executed off the lock.
//!
//! A device read covers runs (see `log::index`): only this partition's frames. Runs close
//! together in one zone are coalesced into one window read (another partition's frames between
//! them are read but never parsed), and every window of a read is submitted at once, so a
//! fetch costs a few device reads whatever the interleaving.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::allocator::{ZoneAllocator, ZonePin};
use super::batch::{self, BatchHeader};
use super::format::{self, FrameKind, PartitionKey, ScanStep};
use super::index::Run;
use super::partition::LogError;
use crate::buf::{round_up, ReadBufferPool, BLOCK_SIZE};
use crate::zone::{ZoneId, ZonedDevice};

/// Runs closer than this in one zone are read in one window.
const COALESCE_GAP_BYTES_MAX: u64 = 64 << 10;
/// Windows are at most this large, unless one run is larger.
const WINDOW_BYTES_MAX: u64 = 8 << 20;
/// A read plans at most this many runs (a fetch's worth even at one batch per run).
const RUNS_PER_READ_MAX: usize = 4096;

/// One device read and the runs in it.
#[derive(Debug)]
struct Window {
    zone: ZoneId,
    start_bytes: u64,
    end_bytes: u64,
    /// (start, end, base offset) of each run, in order.
    runs: Vec<(u64, u64, i64)>,
}

/// A read of a partition's runs, below an offset.
pub struct DeviceScan {
    device: Arc<dyn ZonedDevice>,
    /// Where windows come from and go back to once their last batch is dropped.
    buffers: ReadBufferPool,
    key: PartitionKey,
    windows: Vec<Window>,
    /// Batches from this offset on are not durable yet: the scan stops before them.
    stop_offset: i64,
    /// The offset after the last batch planned (at most `stop_offset`; `i64::MIN` if none).
    end_offset: i64,
    /// The zones of `windows`, held from reset until the scan is done (see `pin_zones`).
    _pins: Vec<ZonePin>,
}

impl DeviceScan {
    /// Plans reads of `runs` (in offset order), stopping once `budget_bytes` of frames are
    /// planned or the runs reach `stop_offset`.
    pub fn plan<'a>(
        device: &Arc<dyn ZonedDevice>,
        buffers: &ReadBufferPool,
        key: PartitionKey,
        runs: impl Iterator<Item = &'a Run>,
        budget_bytes: u64,
        stop_offset: i64,
    ) -> DeviceScan {
        let mut windows: Vec<Window> = Vec::new();
        let mut planned_bytes = 0u64;
        let mut end_offset = None;
        for run in runs.take(RUNS_PER_READ_MAX) {
            if run.base_offset >= stop_offset
                || (planned_bytes >= budget_bytes && !windows.is_empty())
            {
                break;
            }
            planned_bytes += run.bytes;
            end_offset = Some(run.end_offset.min(stop_offset));
            let write_pointer = device
                .zone(run.zone)
                .map_or(0, |info| info.write_pointer_bytes);
            let end = (round_up(run.end_bytes as usize, BLOCK_SIZE) as u64).min(write_pointer);
            let start = run.start_bytes / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
            // The gap to the window's end (other partitions' frames, read for nothing) must be
            // small: one partition's batches among many others' are read run by run.
            let joins = windows.last().is_some_and(|window| {
                window.zone == run.zone
                    && start <= window.end_bytes + COALESCE_GAP_BYTES_MAX
                    && window.end_bytes <= end
                    && end - window.start_bytes <= WINDOW_BYTES_MAX
                    && window
                        .runs
                        .last()
                        .is_some_and(|last| last.1 <= run.start_bytes)
            });
            if joins {
                let window = windows.last_mut().expect("checked");
                window.end_bytes = end;
                window
                    .runs
                    .push((run.start_bytes, run.end_bytes, run.base_offset));
            } else {
                windows.push(Window {
                    zone: run.zone,
                    start_bytes: start,
                    end_bytes: end.max(start),
                    runs: vec![(run.start_bytes, run.end_bytes, run.base_offset)],
                });
            }
        }
        DeviceScan {
            device: device.clone(),
            buffers: buffers.clone(),
            key,
            windows,
            stop_offset,
            end_offset: end_offset.unwrap_or(i64::MIN),
            _pins: Vec::new(),
        }
    }

    /// The offset after the last batch the scan reads (`i64::MIN` if none): it reads every
    /// batch below this one (from its first run's base offset on).
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// The bytes of the windows read: the memory the scan's buffers take.
    pub fn window_bytes(&self) -> usize {
        self.windows
            .iter()
            .map(|window| (window.end_bytes - window.start_bytes) as usize)
            .sum()
    }

    /// Pins the zones the scan reads, so none is reset (GC, retention) before the scan is done
    /// or dropped. Call while the runs planned are in the index (under its lock).
    pub(crate) fn pin_zones(mut self, allocator: &Arc<ZoneAllocator>) -> DeviceScan {
        self._pins = self
            .windows
            .iter()
            .map(|window| allocator.pin(window.zone))
            .collect();
        self
    }

    /// Feeds every batch (header and zero-copy bytes) to `visit` until it breaks or the batches
    /// reach `stop_offset`. Every window's read is submitted before the first is awaited.
    async fn run(
        self,
        mut visit: impl FnMut(&BatchHeader, Bytes) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        let reads: Vec<_> = self
            .windows
            .iter()
            .map(|window| {
                let len_bytes = (window.end_bytes - window.start_bytes) as usize;
                self.device.read_into(
                    window.zone,
                    window.start_bytes,
                    self.buffers.take(len_bytes),
                    len_bytes,
                )
            })
            .collect();
        for (window, read) in self.windows.iter().zip(reads) {
            let bytes = Bytes::from_owner(self.buffers.owned(read.await?));
            for &(start, end, base_offset) in &window.runs {
                if scan_run(
                    &bytes,
                    window,
                    (start, end, base_offset),
                    self.key,
                    self.stop_offset,
                    &mut visit,
                )?
                .is_break()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Scans one run's frames within its window.
fn scan_run(
    bytes: &Bytes,
    window: &Window,
    (start, end, base_offset): (u64, u64, i64),
    key: PartitionKey,
    stop_offset: i64,
    visit: &mut impl FnMut(&BatchHeader, Bytes) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, LogError> {
    let mut position = start;
    let mut next_offset = base_offset;
    while position < end {
        if next_offset >= stop_offset {
            return Ok(ControlFlow::Break(()));
        }
        let corrupt = LogError::CorruptOnDevice {
            zone: window.zone,
            position_bytes: position,
        };
        match format::scan_frame(bytes, window.start_bytes, position, window.end_bytes) {
            ScanStep::Frame {
                kind,
                key: frame_key,
                payload,
                start_bytes,
                end_bytes,
                ..
            } => {
                if frame_key != key {
                    return Err(corrupt);
                }
                position = end_bytes;
                if kind != FrameKind::RecordBatch {
                    continue;
                }
                let header = batch::parse_header(payload).map_err(|_| corrupt)?;
                if header.base_offset >= stop_offset {
                    return Ok(ControlFlow::Break(()));
                }
                next_offset = header.last_offset() + 1;
                let at = (start_bytes - window.start_bytes) as usize + format::FRAME_HEADER_BYTES;
                if visit(&header, bytes.slice(at..at + payload.len())).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            ScanStep::Padding { next_bytes } => position = next_bytes,
            ScanStep::End | ScanStep::Invalid | ScanStep::NeedMore { .. } => return Err(corrupt),
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// What a readahead read yields once done: every batch of its runs from its start offset on.
pub type ReadaheadOutcome = watch::Receiver<Option<Result<Vec<Bytes>, String>>>;

/// A planned read: either already answered from memory, or a device read, or the outcome of
/// a readahead whose batches hold the offset (the device read if it failed).
pub enum ReadPlan {
    Ready(Vec<Bytes>),
    Device {
        scan: DeviceScan,
        offset: i64,
        max_bytes: usize,
    },
    Readahead {
        outcome: ReadaheadOutcome,
        fallback: Box<ReadPlan>,
        offset: i64,
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
            ReadPlan::Readahead {
                mut outcome,
                fallback,
                offset,
                max_bytes,
            } => {
                let read = match outcome.wait_for(|outcome| outcome.is_some()).await {
                    Ok(outcome) => outcome.clone().and_then(Result::ok),
                    Err(_) => None,
                };
                // The readahead started at or before `offset` (an earlier read took its head).
                let read = read.map(|batches| {
                    batches
                        .into_iter()
                        .skip_while(|batch| {
                            batch::parse_header(batch)
                                .is_ok_and(|header| header.last_offset() < offset)
                        })
                        .collect::<Vec<_>>()
                });
                let Some(read) = read.filter(|read| !read.is_empty()) else {
                    return Box::pin(fallback.execute()).await;
                };
                Ok(take_budget(read, max_bytes))
            }
            ReadPlan::Device {
                scan,
                offset,
                max_bytes,
            } => {
                let mut batches = Vec::new();
                let mut total_bytes = 0usize;
                scan.run(|header, bytes| {
                    if header.last_offset() < offset {
                        return ControlFlow::Continue(());
                    }
                    // The first batch is taken whatever its size, as Kafka does.
                    if !batches.is_empty() && total_bytes + bytes.len() > max_bytes {
                        return ControlFlow::Break(());
                    }
                    total_bytes += bytes.len();
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

/// The greedy prefix of `batches` within `max_bytes` (the first whatever its size).
fn take_budget(batches: Vec<Bytes>, max_bytes: usize) -> Vec<Bytes> {
    let mut taken = Vec::new();
    let mut total_bytes = 0usize;
    for batch in batches {
        if !taken.is_empty() && total_bytes + batch.len() > max_bytes {
            break;
        }
        total_bytes += batch.len();
        taken.push(batch);
    }
    taken
}

/// A readahead read to run off the lock (see `PartitionLog::start_readahead`).
pub struct Readahead {
    pub(crate) plan: ReadPlan,
    pub(crate) outcome: watch::Sender<Option<Result<Vec<Bytes>, String>>>,
    /// Names it for `PartitionLog::drop_readahead`.
    pub(crate) id: u64,
    /// The first offset it reads.
    pub(crate) offset: i64,
}

impl Readahead {
    /// The first offset it reads.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// What names it for `PartitionLog::drop_readahead`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reads, and leaves the batches for the consumer's next read.
    pub async fn run(self) {
        let result = self.plan.execute().await.map_err(|error| error.to_string());
        let _ = self.outcome.send(Some(result));
    }
}

/// A planned lookup by timestamp: the runs that may hold the answer, in order.
pub struct TimestampPlan {
    pub(crate) scans: Vec<DeviceScan>,
    pub(crate) timestamp_ms: i64,
    pub(crate) log_start_offset: i64,
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
            scan.run(|header, bytes| {
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
