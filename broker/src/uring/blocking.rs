//! The fallback backend (`pwritev`/`preadv`/`fdatasync`/`fallocate`), and the plain system
//! calls that the io_uring backend shares with it for barriers (`sequence` steps).
//!
//! Same thread model as the ring: one storage thread drains the channel in batches. Writes and
//! reads run one after another in arrival order; every sync of a batch is deferred to its end and
//! served by one fdatasync (group commit). A deferred sync still covers every write sent before
//! it, because those all ran synchronously before the batch ends.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;

use super::{
    copy_error, Counters, Reply, Request, Step, TRANSFER_CHUNK_BYTES_MAX, TRANSFER_RETRIES_MAX,
};

pub(super) fn run(
    file: File,
    receiver: mpsc::Receiver<Request>,
    batch_max: usize,
    counters: &Counters,
) {
    assert!(batch_max > 0);
    let fd = file.as_raw_fd();
    let mut sync_failure: Option<io::Error> = None;
    let mut batch: Vec<Request> = Vec::with_capacity(batch_max);
    let mut syncs: Vec<(bool, Reply<()>)> = Vec::with_capacity(batch_max);
    // Exits when every handle is gone and the channel is drained.
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        for request in batch.drain(..) {
            match request {
                Request::Write { offset, buf, reply } => {
                    reply.complete(write_all_at(fd, offset, &buf).map(|()| buf));
                }
                Request::Read {
                    offset,
                    mut buf,
                    len,
                    reply,
                } => {
                    assert!(len <= buf.capacity());
                    buf.set_len(len);
                    reply.complete(read_exact_at(fd, offset, &mut buf).map(|()| buf));
                }
                Request::Sync { all, reply } => syncs.push((all, reply)),
                Request::Sequence { steps, reply } => {
                    reply.complete(run_steps(fd, steps, &mut sync_failure))
                }
            }
        }
        if !syncs.is_empty() {
            let all = syncs.iter().any(|(all, _)| *all);
            counters.count_fsync();
            let result = sync(fd, all, &mut sync_failure);
            for (_, reply) in syncs.drain(..) {
                reply.complete(result.as_ref().map(|_| ()).map_err(copy_error));
            }
        }
    }
    drop(file);
}

/// Runs a barrier's steps in order, stopping at the first error.
pub(super) fn run_steps(
    fd: RawFd,
    steps: Vec<Step>,
    sync_failure: &mut Option<io::Error>,
) -> io::Result<()> {
    for step in steps {
        match step {
            Step::Write { offset, buf } => write_all_at(fd, offset, &buf)?,
            Step::Allocate { offset, len, mode } => allocate(fd, mode, offset, len)?,
            Step::SyncData => sync(fd, false, sync_failure)?,
            Step::SyncAll => sync(fd, true, sync_failure)?,
        }
    }
    Ok(())
}

fn retryable(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN))
}

fn file_offset(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file offset {offset} out of range"),
        )
    })
}

/// Repeats one positioned transfer until `len` bytes have moved, continuing after short
/// transfers and retrying EINTR/EAGAIN a bounded number of times. `step(done, chunk, at)` makes
/// one system call for `chunk` bytes at file offset `at` and returns its result; a transfer of 0
/// bytes ends with `no_progress(done)`.
fn transfer_all_at(
    offset: u64,
    len: usize,
    no_progress: impl Fn(usize) -> io::Error,
    mut step: impl FnMut(usize, usize, libc::off_t) -> isize,
) -> io::Result<()> {
    let mut done = 0usize;
    let mut retries = 0u32;
    while done < len {
        let chunk = (len - done).min(TRANSFER_CHUNK_BYTES_MAX);
        let result = step(done, chunk, file_offset(offset + done as u64)?);
        if result < 0 {
            let error = io::Error::last_os_error();
            if retryable(&error) && retries < TRANSFER_RETRIES_MAX {
                retries += 1;
                continue;
            }
            return Err(error);
        }
        if result == 0 {
            return Err(no_progress(done));
        }
        done += result as usize;
    }
    Ok(())
}

/// pwritev until every byte is written.
pub(crate) fn write_all_at(fd: RawFd, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let no_progress = |done: usize| {
        io::Error::new(io::ErrorKind::WriteZero, format!("write at {} made no progress", offset + done as u64))
    };
    transfer_all_at(offset, bytes.len(), no_progress, |done, chunk, at| {
        let iov = libc::iovec { iov_base: bytes[done..].as_ptr() as *mut libc::c_void, iov_len: chunk };
        // Safety: the iovec points into `bytes`, alive for the call.
        unsafe { libc::pwritev(fd, &iov, 1, at) }
    })
}

/// preadv until `bytes` is full; end of file first is UnexpectedEof.
pub(crate) fn read_exact_at(fd: RawFd, offset: u64, bytes: &mut [u8]) -> io::Result<()> {
    let len = bytes.len();
    transfer_all_at(offset, len, |done| unexpected_eof(offset, done, len), |done, chunk, at| {
        let iov = libc::iovec { iov_base: bytes[done..].as_mut_ptr() as *mut libc::c_void, iov_len: chunk };
        // Safety: the iovec points into `bytes`, alive and exclusively borrowed for the call.
        unsafe { libc::preadv(fd, &iov, 1, at) }
    })
}

pub(super) fn unexpected_eof(offset: u64, done: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} hit the end of the file after {done} bytes"),
    )
}

/// fdatasync (or fsync when `all`), failing forever after the first failure.
pub(super) fn sync(fd: RawFd, all: bool, sync_failure: &mut Option<io::Error>) -> io::Result<()> {
    if let Some(error) = sync_failure {
        return Err(copy_error(error));
    }
    let issued = std::time::Instant::now();
    let result = loop {
        // Safety: plain system calls on a descriptor we own.
        let result = unsafe {
            if all {
                libc::fsync(fd)
            } else {
                libc::fdatasync(fd)
            }
        };
        if result == 0 {
            break Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            break Err(error);
        }
    };
    crate::metrics::global().fsync_latency_seconds.observe(issued.elapsed().as_secs_f64());
    if let Err(error) = &result {
        *sync_failure = Some(copy_error(error));
    }
    result
}

pub(crate) fn allocate(fd: RawFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let at = file_offset(offset)?;
    let len = file_offset(len)?;
    loop {
        // Safety: a plain system call on a descriptor we own.
        if unsafe { libc::fallocate(fd, mode, at, len) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}
