//! Flushes: making appended frames durable, in order, across the zone streams they were
//! written to.
//!
//! A zone stream's flushes form a chain: each reports success only after its predecessor did,
//! so a later flush can never hide an earlier failed write. A flush drains the writes its
//! streams have in flight, waits for them and for one device flush issued after them, then
//! raises the durable end of the partition that asked (its high watermark). Flushes of other
//! partitions on the same stream that come meanwhile share the device flush (the storage thread
//! merges syncs): many partitions' appends, one fsync.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::partition::LogError;
use crate::buf::{AlignedBuf, BufferPool};
use crate::pending::Pending;

/// A stream's health: set by the first storage error; the stream (and every partition written
/// to it) refuses further work until the store is reopened.
#[derive(Debug, Default)]
pub struct Health {
    failure: Mutex<Option<String>>,
}

impl Health {
    pub fn fail(&self, error: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(%error, "zone stream failed");
            *failure = Some(error.to_string());
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub enum InFlight {
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

    pub fn try_complete(&mut self) -> Option<io::Result<()>> {
        match self {
            InFlight::Write(write, buffers) => write
                .try_take()
                .map(|result| result.map(|buf| buffers.give(buf))),
            InFlight::Op(op) => op.try_take(),
        }
    }
}

pub type FlushOutcome = watch::Receiver<Option<Result<(), String>>>;
pub type FlushReport = watch::Sender<Option<Result<(), String>>>;

/// The part of a flush one stream contributes: the stream's previous flush to wait for, its
/// writes in flight, where to report the outcome for the stream's next flush, its health.
pub struct StreamFlush {
    pub previous: Option<FlushOutcome>,
    pub writes: Vec<InFlight>,
    pub report: FlushReport,
    pub health: Arc<Health>,
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
    /// The outcomes of the flushes before this one on each stream, which must succeed first.
    previous: Vec<FlushOutcome>,
    /// Writes still to wait for, oldest first.
    writes: VecDeque<InFlight>,
    device_flush: Option<Pending<()>>,
    /// Where this flush reports its own outcome, per stream; empty once reported.
    reports: Vec<FlushReport>,
    healths: Vec<Arc<Health>>,
    /// The durable ends to raise once done (partitions' high watermarks): the first is what
    /// `complete` reports.
    durable: Vec<(Arc<AtomicI64>, i64)>,
}

impl RunningFlush {
    /// Waits for the previous flushes, this flush's writes and the device flush, in that
    /// order, then reports the outcome. Every step is resumable: the state lives in `self`, not
    /// in the future, so a cancelled run can be finished by another (see `FlushGuard`).
    async fn run(&mut self) -> Result<i64, LogError> {
        let result = self.steps().await;
        if let Err(message) = &result {
            for health in &self.healths {
                health.fail(message);
            }
        }
        for report in self.reports.drain(..) {
            let _ = report.send(Some(result.clone()));
        }
        result.map_err(LogError::Failed)?;
        for (durable_end, end) in &self.durable {
            durable_end.fetch_max(*end, Ordering::AcqRel);
        }
        Ok(self.durable.first().map_or(0, |(_, end)| *end))
    }

    async fn steps(&mut self) -> Result<(), String> {
        while let Some(previous) = self.previous.last_mut() {
            match previous.wait_for(|outcome| outcome.is_some()).await {
                Ok(outcome) => outcome.clone().expect("waited for Some")?,
                Err(_) => {
                    return Err("an earlier flush ended without reporting its outcome".to_string())
                }
            }
            self.previous.pop();
        }
        while let Some(write) = self.writes.front_mut() {
            let result = write.wait().await;
            self.writes.pop_front();
            result.map_err(|error| error.to_string())?;
        }
        if let Some(device_flush) = self.device_flush.as_mut() {
            let result = device_flush.await;
            self.device_flush = None;
            result.map_err(|error| error.to_string())?;
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
        let Some(mut running) = self.0.take().filter(|running| !running.reports.is_empty()) else {
            return;
        };
        let healths = running.healths.clone();
        let spawned = std::thread::Builder::new()
            .name("orphan-flush".into())
            .spawn(move || drop(crate::pending::block_on(running.run())));
        if let Err(error) = spawned {
            // Without the thread the outcome is unknown: fail safe.
            for health in healths {
                health.fail(&error.to_string());
            }
        }
    }
}

impl Flush {
    pub fn failed(message: String) -> Flush {
        Flush {
            state: FlushState::Failed(message),
        }
    }

    /// A flush of the streams' parts, followed by `device_flush` (issued after their writes
    /// were submitted); raises each of `durable` when done.
    pub fn new(
        parts: Vec<StreamFlush>,
        device_flush: Pending<()>,
        durable: Vec<(Arc<AtomicI64>, i64)>,
    ) -> Flush {
        let mut running = RunningFlush {
            previous: Vec::new(),
            writes: VecDeque::new(),
            device_flush: Some(device_flush),
            reports: Vec::new(),
            healths: Vec::new(),
            durable,
        };
        for part in parts {
            running.previous.extend(part.previous);
            running.writes.extend(part.writes);
            running.reports.push(part.report);
            running.healths.push(part.health);
        }
        Flush {
            state: FlushState::Running(running),
        }
    }

    /// Completes the flush: the (first) high watermark it reached, or the error that failed
    /// the log.
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
