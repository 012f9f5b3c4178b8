//! The storage I/O driver: one dedicated thread per file that owns an io_uring ring (or, where
//! io_uring is not permitted, does the same work with `pwritev`/`preadv`).
//!
//! Callers (async tasks or plain threads) hand the thread owned, block-aligned buffers over a
//! channel and get each buffer back through a `Pending`. The thread drains everything queued,
//! pushes all of it into the ring and submits it with one system call (group commit): appends
//! of many partitions share a submission, and every `sync_data` queued while earlier writes
//! were in flight is served by one fdatasync.
//!
//! Ordering guarantees (the contract the zone layer builds on):
//! - requests start in the order they were sent (FIFO), but writes and reads to different places
//!   may complete in any order, as on any NVMe queue;
//! - a read waits for every earlier in-flight write that overlaps it, so it sees them;
//! - a sync (`sync_data`/`sync_all`) completes only after an fdatasync/fsync that was issued
//!   after every write sent before the sync had completed: it covers all of them. Writes sent
//!   after a sync may be issued while it waits (they do not delay it, and it may cover them);
//! - `allocate` and `sequence` are barriers: they run once everything sent before them has
//!   completed, and nothing sent after them starts before they complete.
//!
//! After one sync fails, every later sync fails with the same error: Linux may drop the dirty
//! state that failed to persist, so a later fsync that "succeeds" would lie (the PostgreSQL
//! fsync lesson). The layer above treats a device error as fatal until the device is reopened.

/// Plain system calls (the fallback backend; also used by `zone::file` at open and create).
pub(crate) mod blocking;
mod ring;

use std::fmt;
use std::fs::File;
use std::io;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread::JoinHandle;

use crate::buf::AlignedBuf;
use crate::pending::{Completer, Pending};

/// The smallest accepted queue depth: below it group commit has nothing to group.
pub const QUEUE_DEPTH_MIN: u32 = 32;
/// The largest accepted queue depth: bounds the ring memory and the per-thread in-flight state
/// (4096 x 64 B SQEs + 8192 x 16 B CQEs is 384 KiB of ring).
pub const QUEUE_DEPTH_MAX: u32 = 4096;
/// The default queue depth. NVMe devices reach full bandwidth at a few dozen outstanding large
/// transfers per queue; 256 leaves room for one append from each of a few hundred partitions in
/// one group commit while the ring stays small (about 24 KiB).
pub const QUEUE_DEPTH_DEFAULT: u32 = 256;
/// The most steps one `sequence` may hold: sequences are for zone management, never bulk I/O.
pub const SEQUENCE_STEPS_MAX: usize = 16;
/// The most bytes one SQE or system call transfers (the io_uring length field is 32 bits);
/// a longer request continues in further transfers, like a short one.
const TRANSFER_CHUNK_BYTES_MAX: usize = 1 << 30;
/// How often a transfer interrupted by EINTR/EAGAIN is retried before the error is returned.
const TRANSFER_RETRIES_MAX: u32 = 16;

/// Which I/O backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackendChoice {
    /// io_uring if the kernel and the seccomp profile allow it, else `pwritev` (logged once).
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// `pwritev`/`preadv`/`fdatasync` on the storage thread.
    Sync,
}

impl FromStr for IoBackendChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<IoBackendChoice, String> {
        match text {
            "auto" => Ok(IoBackendChoice::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(IoBackendChoice::IoUring),
            "sync" | "pwritev" => Ok(IoBackendChoice::Sync),
            other => Err(format!(
                "unknown I/O backend {other:?} (expected auto, io_uring or sync)"
            )),
        }
    }
}

/// The backend a driver actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackendKind {
    IoUring,
    Sync,
}

impl fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoBackendKind::IoUring => "io_uring",
            IoBackendKind::Sync => "pwritev",
        })
    }
}

/// One step of a `sequence`: run in order on the storage thread with plain system calls.
#[derive(Debug)]
pub enum Step {
    /// Writes the whole buffer at `offset` (the buffer is dropped afterwards).
    Write { offset: u64, buf: AlignedBuf },
    /// `fallocate(fd, mode, offset, len)`.
    Allocate { offset: u64, len: u64, mode: i32 },
    /// fdatasync.
    SyncData,
    /// fsync (file metadata too, e.g. after punching holes).
    SyncAll,
}

/// A cheap, cloneable handle to a storage thread. The thread exits when the last handle is
/// dropped, after completing everything queued; dropping the last handle waits for that (so a
/// file can be reopened right after its device is dropped).
#[derive(Clone)]
pub struct IoDriver {
    inner: Arc<DriverInner>,
}

struct DriverInner {
    kind: IoBackendKind,
    queue_depth: u32,
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Set by the storage thread as its last action (tests check shutdown with it).
    exited: Arc<AtomicBool>,
}

impl Drop for DriverInner {
    fn drop(&mut self) {
        // Closing the channel tells the thread to finish what is queued and exit.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                // A panic on the storage thread already failed its requests (their completers
                // were dropped); there is nothing more to report here.
                let _ = thread.join();
            }
        }
    }
}

impl IoDriver {
    /// Starts the storage thread for `file` (normally opened with O_DIRECT). `queue_depth` is
    /// the most requests in flight in the kernel at once, within
    /// `QUEUE_DEPTH_MIN..=QUEUE_DEPTH_MAX`.
    pub fn start(file: File, choice: IoBackendChoice, queue_depth: u32) -> io::Result<IoDriver> {
        if !(QUEUE_DEPTH_MIN..=QUEUE_DEPTH_MAX).contains(&queue_depth) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue depth {queue_depth} outside {QUEUE_DEPTH_MIN}..={QUEUE_DEPTH_MAX}"),
            ));
        }
        let ring = match choice {
            IoBackendChoice::Sync => None,
            IoBackendChoice::IoUring => Some(ring::setup(queue_depth)?),
            IoBackendChoice::Auto => match ring::setup(queue_depth) {
                Ok(ring) => Some(ring),
                Err(error) => {
                    warn_fallback_once(&error);
                    None
                }
            },
        };
        let kind = if ring.is_some() {
            IoBackendKind::IoUring
        } else {
            IoBackendKind::Sync
        };
        let (sender, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let exited = Arc::new(AtomicBool::new(false));
        let thread_exited = exited.clone();
        let thread = std::thread::Builder::new()
            .name("yotta-storage".into())
            .spawn(move || {
                match ring {
                    Some(ring) => {
                        ring::run(ring, file, receiver, queue_depth as usize, &thread_counters)
                    }
                    None => blocking::run(file, receiver, queue_depth as usize, &thread_counters),
                }
                thread_exited.store(true, Ordering::Release);
            })?;
        Ok(IoDriver {
            inner: Arc::new(DriverInner {
                kind,
                queue_depth,
                sender: Some(sender),
                thread: Some(thread),
                counters,
                exited,
            }),
        })
    }

    pub fn kind(&self) -> IoBackendKind {
        self.inner.kind
    }

    pub fn queue_depth(&self) -> u32 {
        self.inner.queue_depth
    }

    /// Requests sent but not yet completed (queued on the channel or in flight).
    pub fn queue_depth_now(&self) -> usize {
        self.inner.counters.outstanding.load(Ordering::Relaxed)
    }

    /// Totals since start, for metrics and for tests of group commit.
    pub fn stats(&self) -> IoStats {
        let counters = &self.inner.counters;
        IoStats {
            syncs_requested: counters.syncs_requested.load(Ordering::Relaxed),
            fsyncs_issued: counters.fsyncs_issued.load(Ordering::Relaxed),
            submit_calls: counters.submit_calls.load(Ordering::Relaxed),
        }
    }

    /// Writes `buf[..len]` at `offset`; completes with the buffer for reuse.
    pub fn write_at(&self, offset: u64, buf: AlignedBuf) -> Pending<AlignedBuf> {
        let (reply, pending) = self.reply();
        self.send(Request::Write { offset, buf, reply });
        pending
    }

    /// Reads `len` bytes at `offset` into `buf` (capacity at least `len`) and sets its length.
    pub fn read_at(&self, offset: u64, buf: AlignedBuf, len: usize) -> Pending<AlignedBuf> {
        if len > buf.capacity() {
            return Pending::ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "read of {len} bytes into a buffer of capacity {}",
                    buf.capacity()
                ),
            )));
        }
        let (reply, pending) = self.reply();
        self.send(Request::Read {
            offset,
            buf,
            len,
            reply,
        });
        pending
    }

    /// fdatasync covering every write sent before it.
    pub fn sync_data(&self) -> Pending<()> {
        let (reply, pending) = self.reply();
        self.inner
            .counters
            .syncs_requested
            .fetch_add(1, Ordering::Relaxed);
        self.send(Request::Sync { all: false, reply });
        pending
    }

    /// fsync (data and metadata) covering every write sent before it.
    pub fn sync_all(&self) -> Pending<()> {
        let (reply, pending) = self.reply();
        self.inner
            .counters
            .syncs_requested
            .fetch_add(1, Ordering::Relaxed);
        self.send(Request::Sync { all: true, reply });
        pending
    }

    /// `fallocate(fd, mode, offset, len)` on the storage thread, after every earlier request.
    pub fn allocate(&self, offset: u64, len: u64, mode: i32) -> Pending<()> {
        self.sequence(vec![Step::Allocate { offset, len, mode }])
    }

    /// Runs `steps` in order on the storage thread, as a barrier: after every request sent
    /// before completed, before any request sent after starts. Stops at the first failing step
    /// and completes with its error. For zone management (reset, finish), never bulk I/O.
    pub fn sequence(&self, steps: Vec<Step>) -> Pending<()> {
        if steps.is_empty() || steps.len() > SEQUENCE_STEPS_MAX {
            return Pending::ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a sequence needs 1..={SEQUENCE_STEPS_MAX} steps, got {}",
                    steps.len()
                ),
            )));
        }
        let (reply, pending) = self.reply();
        self.send(Request::Sequence { steps, reply });
        pending
    }

    fn reply<T>(&self) -> (Reply<T>, Pending<T>) {
        let (completer, pending) = Pending::channel();
        self.inner
            .counters
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::global().storage_queue_depth.inc();
        (
            Reply {
                completer: Some(completer),
                counters: self.inner.counters.clone(),
            },
            pending,
        )
    }

    fn send(&self, request: Request) {
        let sender = self
            .inner
            .sender
            .as_ref()
            .expect("sender lives as long as the handle");
        if let Err(mpsc::SendError(request)) = sender.send(request) {
            // Only possible if the storage thread panicked.
            request.fail(&io::Error::new(
                io::ErrorKind::BrokenPipe,
                "storage thread is gone",
            ));
        }
    }

    #[cfg(test)]
    fn exited_flag(&self) -> Arc<AtomicBool> {
        self.inner.exited.clone()
    }
}

impl fmt::Debug for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoDriver")
            .field("kind", &self.inner.kind)
            .field("queue_depth", &self.inner.queue_depth)
            .field("outstanding", &self.queue_depth_now())
            .field("thread_exited", &self.inner.exited.load(Ordering::Acquire))
            .finish()
    }
}

/// Totals of one driver since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `sync_data` and `sync_all` calls.
    pub syncs_requested: u64,
    /// fdatasync/fsync system calls or SQEs that served them (fewer is group commit at work).
    pub fsyncs_issued: u64,
    /// `io_uring_enter` calls (each submits everything pushed and may wait for completions;
    /// 0 for the pwritev backend).
    pub submit_calls: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Requests sent but not yet completed.
    outstanding: AtomicUsize,
    syncs_requested: AtomicU64,
    fsyncs_issued: AtomicU64,
    submit_calls: AtomicU64,
}

impl Counters {
    pub(crate) fn count_fsync(&self) {
        self.fsyncs_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_submit(&self) {
        self.submit_calls.fetch_add(1, Ordering::Relaxed);
    }
}

fn warn_fallback_once(error: &io::Error) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            %error,
            "io_uring is not available (kernel too old, or denied by a seccomp profile); \
             falling back to pwritev/preadv on the storage thread"
        );
    });
}

/// The completion of one request. Keeps `queue_depth_now` honest: the count drops when the
/// reply is completed, or when it is dropped uncompleted (a panicking storage thread), in which
/// case the waiter sees BrokenPipe.
pub(crate) struct Reply<T> {
    completer: Option<Completer<T>>,
    counters: Arc<Counters>,
}

impl<T> Reply<T> {
    pub(crate) fn complete(mut self, result: io::Result<T>) {
        let completer = self.completer.take().expect("a reply completes once");
        // Count down first, so a waiter that wakes up sees the request as completed.
        self.counters.outstanding.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::global().storage_queue_depth.dec();
        completer.complete(result);
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if self.completer.is_some() {
            self.counters.outstanding.fetch_sub(1, Ordering::Relaxed);
            crate::metrics::global().storage_queue_depth.dec();
        }
    }
}

pub(crate) enum Request {
    Write {
        offset: u64,
        buf: AlignedBuf,
        reply: Reply<AlignedBuf>,
    },
    Read {
        offset: u64,
        buf: AlignedBuf,
        len: usize,
        reply: Reply<AlignedBuf>,
    },
    Sync {
        all: bool,
        reply: Reply<()>,
    },
    Sequence {
        steps: Vec<Step>,
        reply: Reply<()>,
    },
}

impl Request {
    fn fail(self, error: &io::Error) {
        match self {
            Request::Write { reply, .. } | Request::Read { reply, .. } => {
                reply.complete(Err(copy_error(error)))
            }
            Request::Sync { reply, .. } | Request::Sequence { reply, .. } => {
                reply.complete(Err(copy_error(error)))
            }
        }
    }
}

/// `io::Error` is not `Clone`; errors fanned out to several waiters are rebuilt from the errno
/// when there is one (so callers can still match on it).
pub(crate) fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests;
