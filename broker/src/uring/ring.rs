//! The io_uring backend: the storage thread's event loop.
//!
//! Each turn: take what is queued on the channel (bounded), push SQEs for everything that may
//! start (in FIFO order, up to `in_flight_max`), submit them all with one `submit_and_wait`, and
//! reap the completions. The thread blocks on the channel only when nothing is in flight, and on
//! the ring otherwise: requests that arrive while I/O is in flight wait for the next completion
//! and then go out together, which is what makes group commit happen under load.
//!
//! Syncs: a sync with sequence number `s` becomes eligible once no write with a smaller sequence
//! number is in flight. One fsync SQE serves every sync eligible when it is issued (a full fsync
//! if any of them asked for one); a sync that becomes eligible while fsyncs are in flight gets
//! an fsync of its own at once (the running ones may have started before its writes completed),
//! up to `FSYNCS_IN_FLIGHT_MAX` at a time, so a flush waits for one fsync, not for the end of
//! an earlier one first. Fsyncs are reported in the order issued: a later one that completes
//! first waits, and after a failure every later one fails too (the failure may belong to data
//! it covers, and Linux reports a writeback error once).

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

use io_uring::{opcode, squeue, types, IoUring};

use super::{
    blocking, copy_error, Counters, Reply, Request, TRANSFER_CHUNK_BYTES_MAX, TRANSFER_RETRIES_MAX,
};
use crate::buf::AlignedBuf;

/// Fsyncs in flight at once: one can start while another runs, so a sync that becomes eligible
/// during an fsync does not wait for it to end; more would mostly add device flushes.
const FSYNCS_IN_FLIGHT_MAX: usize = 2;

/// The user_data of the setup probe (never a slot index).
const PROBE_USER_DATA: u64 = u64::MAX;

/// Creates a ring and proves it works with a NOP round trip: some seccomp profiles allow
/// `io_uring_setup` but deny `io_uring_enter`, and we want to fall back at start, not fail the
/// first write.
pub(super) fn setup(queue_depth: u32) -> io::Result<IoUring> {
    let mut ring = IoUring::new(queue_depth)?;
    assert!(ring.params().sq_entries() >= queue_depth);
    let nop = opcode::Nop::new().build().user_data(PROBE_USER_DATA);
    // Safety: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }
        .map_err(|_| io::Error::other("fresh io_uring submission queue is full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("io_uring NOP probe produced no completion"))?;
    assert_eq!(cqe.user_data(), PROBE_USER_DATA);
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    Ok(ring)
}

pub(super) fn run(
    ring: IoUring,
    file: File,
    receiver: mpsc::Receiver<Request>,
    in_flight_max: usize,
    counters: &Counters,
) {
    let mut state = RingLoop::new(ring, file, receiver, in_flight_max, counters);
    state.run();
}

enum Op {
    Write {
        seq: u64,
        offset: u64,
        buf: AlignedBuf,
        done: usize,
        retries: u32,
        reply: Reply<AlignedBuf>,
    },
    Read {
        offset: u64,
        buf: AlignedBuf,
        len: usize,
        done: usize,
        retries: u32,
        reply: Reply<AlignedBuf>,
    },
    Fsync {
        /// Issue number, for reporting in issue order.
        number: u64,
        replies: Vec<Reply<()>>,
        /// When the fsync was pushed to the ring (its latency metric).
        issued: std::time::Instant,
    },
}

struct PendingSync {
    seq: u64,
    all: bool,
    reply: Reply<()>,
}

struct RingLoop<'a> {
    counters: &'a Counters,
    ring: IoUring,
    file: File,
    receiver: mpsc::Receiver<Request>,
    disconnected: bool,
    in_flight_max: usize,
    /// Requests taken from the channel but not started, in arrival order, with their sequence
    /// numbers. At most `intake_max` (the rest waits in the channel).
    waiting: VecDeque<(u64, Request)>,
    intake_max: usize,
    next_seq: u64,
    /// In-flight operations, indexed by user_data. The kernel may use an op's buffer until its
    /// CQE arrives, so the buffer lives here until then.
    slots: Vec<Option<Op>>,
    free_slots: Vec<usize>,
    /// Sequence numbers of in-flight writes: the smallest bounds which syncs are eligible.
    write_seqs: BTreeSet<u64>,
    /// Syncs taken from `waiting`, in sequence order, not yet served by an fsync.
    pending_syncs: VecDeque<PendingSync>,
    fsyncs_in_flight: usize,
    /// Issue number of the next fsync, and of the next to report.
    fsyncs_issued: u64,
    fsyncs_reported: u64,
    /// Fsyncs completed before an earlier one: their outcome waits to be reported in order.
    fsyncs_completed: std::collections::BTreeMap<u64, (io::Result<()>, Vec<Reply<()>>)>,
    /// Slots whose transfer was short (or interrupted) and needs another SQE.
    continuations: Vec<usize>,
    /// CQEs copied out of the ring (reused).
    completions: Vec<(u64, i32)>,
    sync_failure: Option<io::Error>,
    /// Set when the ring itself failed: every request from then on fails with this error.
    broken: Option<io::Error>,
}

impl<'a> RingLoop<'a> {
    fn new(
        ring: IoUring,
        file: File,
        receiver: mpsc::Receiver<Request>,
        in_flight_max: usize,
        counters: &'a Counters,
    ) -> RingLoop<'a> {
        assert!(in_flight_max > 0);
        assert!(ring.params().sq_entries() as usize >= in_flight_max);
        // The CQ is twice the SQ by default, and at most `in_flight_max` ops are in the kernel:
        // the completion queue cannot overflow.
        assert!(ring.params().cq_entries() as usize >= in_flight_max);
        RingLoop {
            counters,
            ring,
            file,
            receiver,
            disconnected: false,
            in_flight_max,
            waiting: VecDeque::with_capacity(in_flight_max * 2),
            intake_max: in_flight_max * 2,
            next_seq: 0,
            slots: (0..in_flight_max).map(|_| None).collect(),
            free_slots: (0..in_flight_max).rev().collect(),
            write_seqs: BTreeSet::new(),
            pending_syncs: VecDeque::new(),
            fsyncs_in_flight: 0,
            fsyncs_issued: 0,
            fsyncs_reported: 0,
            fsyncs_completed: std::collections::BTreeMap::new(),
            continuations: Vec::with_capacity(in_flight_max),
            completions: Vec::with_capacity(in_flight_max * 2),
            sync_failure: None,
            broken: None,
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight_max - self.free_slots.len()
    }

    fn run(&mut self) {
        loop {
            // Syncs left pending when the last fsync completed still need a turn.
            if self.in_flight() == 0 && self.waiting.is_empty() && self.pending_syncs.is_empty() {
                assert!(self.continuations.is_empty());
                if self.disconnected {
                    return;
                }
                // Idle: block until the next request (or until every handle is gone).
                match self.receiver.recv() {
                    Ok(request) => self.admit(request),
                    Err(_) => {
                        self.disconnected = true;
                        continue;
                    }
                }
            }
            while self.waiting.len() < self.intake_max {
                match self.receiver.try_recv() {
                    Ok(request) => self.admit(request),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.disconnected = true;
                        break;
                    }
                }
            }
            if self.broken.is_some() {
                self.fail_waiting();
                continue;
            }
            self.start_ready();
            if self.in_flight() == 0 {
                // Everything started completed synchronously (barriers, failed syncs).
                assert!(self.waiting.is_empty() && self.pending_syncs.is_empty());
                continue;
            }
            self.submit_and_reap();
        }
    }

    fn admit(&mut self, request: Request) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back((seq, request));
    }

    /// Starts, in FIFO order, every waiting request that may start now, then the syncs that
    /// became eligible. Repeats while a barrier or a failed sync made progress without I/O.
    fn start_ready(&mut self) {
        loop {
            while let Some(slot) = self.continuations.pop() {
                self.push_slot(slot);
                if self.broken.is_some() {
                    return;
                }
            }
            let mut progress = false;
            while let Some((_, front)) = self.waiting.front() {
                let may_start = match front {
                    Request::Write { .. } => !self.free_slots.is_empty(),
                    Request::Read { offset, len, .. } => {
                        !self.free_slots.is_empty() && !self.overlaps_write_in_flight(*offset, *len)
                    }
                    Request::Sync { .. } => true,
                    Request::Sequence { .. } => {
                        self.in_flight() == 0 && self.pending_syncs.is_empty()
                    }
                };
                if !may_start {
                    break;
                }
                let (seq, request) = self.waiting.pop_front().expect("front exists");
                self.start(seq, request);
                progress = true;
                if self.broken.is_some() {
                    return;
                }
            }
            progress |= self.start_syncs();
            if !progress || self.broken.is_some() {
                return;
            }
        }
    }

    fn overlaps_write_in_flight(&self, offset: u64, len: usize) -> bool {
        let end = offset + len as u64;
        self.slots.iter().flatten().any(|op| match op {
            Op::Write {
                offset: write_offset,
                buf,
                ..
            } => *write_offset < end && offset < write_offset + buf.len() as u64,
            _ => false,
        })
    }

    fn start(&mut self, seq: u64, request: Request) {
        match request {
            Request::Write { offset, buf, reply } => {
                if buf.is_empty() {
                    reply.complete(Ok(buf));
                    return;
                }
                self.write_seqs.insert(seq);
                self.occupy(Op::Write {
                    seq,
                    offset,
                    buf,
                    done: 0,
                    retries: 0,
                    reply,
                });
            }
            Request::Read {
                offset,
                mut buf,
                len,
                reply,
            } => {
                assert!(len <= buf.capacity());
                buf.set_len(len);
                if len == 0 {
                    reply.complete(Ok(buf));
                    return;
                }
                self.occupy(Op::Read {
                    offset,
                    buf,
                    len,
                    done: 0,
                    retries: 0,
                    reply,
                });
            }
            Request::Sync { all, reply } => {
                if let Some(last) = self.pending_syncs.back() {
                    assert!(last.seq < seq);
                }
                self.pending_syncs
                    .push_back(PendingSync { seq, all, reply });
            }
            Request::Sequence { steps, reply } => {
                // A barrier: nothing is in flight, so plain system calls on this thread are
                // ordered after everything before it and before everything after it.
                assert_eq!(self.in_flight(), 0);
                let fd = self.file.as_raw_fd();
                reply.complete(blocking::run_steps(fd, steps, &mut self.sync_failure));
            }
        }
    }

    /// Serves every eligible sync with one fsync SQE, if fewer than `FSYNCS_IN_FLIGHT_MAX` are
    /// in flight. Returns whether it did anything.
    fn start_syncs(&mut self) -> bool {
        if self.fsyncs_in_flight >= FSYNCS_IN_FLIGHT_MAX || self.pending_syncs.is_empty() || self.free_slots.is_empty() {
            return false;
        }
        let oldest_write = self.write_seqs.first().copied().unwrap_or(u64::MAX);
        let eligible = self
            .pending_syncs
            .iter()
            .take_while(|sync| sync.seq < oldest_write)
            .count();
        if eligible == 0 {
            return false;
        }
        let syncs: Vec<PendingSync> = self.pending_syncs.drain(..eligible).collect();
        if let Some(error) = &self.sync_failure {
            // A failure was reported: every fsync from then on fails, in whatever order.
            for sync in syncs {
                sync.reply.complete(Err(copy_error(error)));
            }
            return true;
        }
        let all = syncs.iter().any(|sync| sync.all);
        let replies = syncs.into_iter().map(|sync| sync.reply).collect();
        self.fsyncs_in_flight += 1;
        let number = self.fsyncs_issued;
        self.fsyncs_issued += 1;
        self.counters.count_fsync();
        let slot = self.occupy_slot(Op::Fsync { number, replies, issued: std::time::Instant::now() });
        let flags = if all {
            types::FsyncFlags::empty()
        } else {
            types::FsyncFlags::DATASYNC
        };
        let entry = opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
            .flags(flags)
            .build();
        self.push_entry(slot, entry);
        true
    }

    fn occupy_slot(&mut self, op: Op) -> usize {
        let slot = self
            .free_slots
            .pop()
            .expect("callers check for a free slot");
        assert!(self.slots[slot].is_none());
        self.slots[slot] = Some(op);
        slot
    }

    fn occupy(&mut self, op: Op) {
        let slot = self.occupy_slot(op);
        self.push_slot(slot);
    }

    /// Pushes the SQE for the next transfer of a read or write.
    fn push_slot(&mut self, slot: usize) {
        let fd = types::Fd(self.file.as_raw_fd());
        let entry = match self.slots[slot].as_mut().expect("occupied slot") {
            Op::Write {
                offset, buf, done, ..
            } => {
                let chunk = (buf.len() - *done).min(TRANSFER_CHUNK_BYTES_MAX);
                // Safety (for the push below): the buffer lives in `slots` until the CQE.
                let pointer = unsafe { buf.as_ptr().add(*done) };
                opcode::Write::new(fd, pointer, chunk as u32)
                    .offset(*offset + *done as u64)
                    .build()
            }
            Op::Read {
                offset,
                buf,
                len,
                done,
                ..
            } => {
                let chunk = (*len - *done).min(TRANSFER_CHUNK_BYTES_MAX);
                // Safety: as for writes; `len <= capacity`.
                let pointer = unsafe { buf.as_mut_ptr().add(*done) };
                opcode::Read::new(fd, pointer, chunk as u32)
                    .offset(*offset + *done as u64)
                    .build()
            }
            Op::Fsync { .. } => unreachable!("fsyncs are pushed once, by start_syncs"),
        };
        self.push_entry(slot, entry);
    }

    fn push_entry(&mut self, slot: usize, entry: squeue::Entry) {
        let entry = entry.user_data(slot as u64);
        loop {
            // Safety: the memory an entry references belongs to the op in `slots[slot]`, which
            // stays there until its completion is reaped (or is leaked if the ring breaks).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The SQ is full: submit this round and push the rest in the next one. (With at
            // most `in_flight_max <= sq_entries` ops this does not happen, but it is cheap.)
            self.counters.count_submit();
            if let Err(error) = self.ring.submit() {
                if !transient(&error) {
                    self.break_ring(error);
                    return;
                }
            }
        }
    }

    fn submit_and_reap(&mut self) {
        assert!(self.in_flight() > 0);
        self.counters.count_submit();
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            // Interrupted, or the kernel is short of resources: reap what completed and retry
            // the submission on the next turn (the SQEs stay queued).
            Err(error) if transient(&error) => {}
            Err(error) => {
                self.break_ring(error);
                return;
            }
        }
        self.completions.clear();
        self.completions.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        for index in 0..self.completions.len() {
            let (user_data, result) = self.completions[index];
            self.complete(user_data as usize, result);
        }
    }

    fn release(&mut self, slot: usize) -> Op {
        let op = self.slots[slot]
            .take()
            .expect("completion for an occupied slot");
        self.free_slots.push(slot);
        op
    }

    fn complete(&mut self, slot: usize, result: i32) {
        assert!(
            slot < self.slots.len(),
            "completion with a foreign user_data {slot}"
        );
        let retry = (result == -libc::EINTR || result == -libc::EAGAIN) && {
            match self.slots[slot].as_mut().expect("occupied slot") {
                Op::Write { retries, .. } | Op::Read { retries, .. } => {
                    *retries += 1;
                    *retries <= TRANSFER_RETRIES_MAX
                }
                Op::Fsync { .. } => false,
            }
        };
        if retry {
            self.continuations.push(slot);
            return;
        }
        match self.slots[slot].as_mut().expect("occupied slot") {
            Op::Write {
                offset, buf, done, ..
            } => {
                if result > 0 {
                    *done += result as usize;
                    assert!(*done <= buf.len());
                    if *done < buf.len() {
                        self.continuations.push(slot);
                        return;
                    }
                }
                let written = *offset + *done as u64;
                let Op::Write {
                    seq, buf, reply, ..
                } = self.release(slot)
                else {
                    unreachable!()
                };
                assert!(self.write_seqs.remove(&seq));
                reply.complete(match result {
                    result if result < 0 => Err(io::Error::from_raw_os_error(-result)),
                    0 => Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("write at {written} made no progress"),
                    )),
                    _ => Ok(buf),
                });
            }
            Op::Read {
                offset, len, done, ..
            } => {
                if result > 0 {
                    *done += result as usize;
                    assert!(*done <= *len);
                    if *done < *len {
                        self.continuations.push(slot);
                        return;
                    }
                }
                let (offset, done, len) = (*offset, *done, *len);
                let Op::Read { buf, reply, .. } = self.release(slot) else {
                    unreachable!()
                };
                reply.complete(match result {
                    result if result < 0 => Err(io::Error::from_raw_os_error(-result)),
                    0 => Err(blocking::unexpected_eof(offset, done, len)),
                    _ => Ok(buf),
                });
            }
            Op::Fsync { .. } => {
                let Op::Fsync { number, replies, issued } = self.release(slot) else {
                    unreachable!()
                };
                crate::metrics::global().fsync_latency_seconds.observe(issued.elapsed().as_secs_f64());
                self.fsyncs_in_flight -= 1;
                let outcome = if result < 0 {
                    Err(io::Error::from_raw_os_error(-result))
                } else {
                    Ok(())
                };
                self.fsyncs_completed.insert(number, (outcome, replies));
                self.report_fsyncs();
            }
        }
    }

    /// Reports completed fsyncs in issue order; once one failed, every later one fails.
    fn report_fsyncs(&mut self) {
        while let Some((outcome, replies)) = self.fsyncs_completed.remove(&self.fsyncs_reported) {
            self.fsyncs_reported += 1;
            if let (Err(error), None) = (&outcome, &self.sync_failure) {
                self.sync_failure = Some(copy_error(error));
            }
            for reply in replies {
                reply.complete(match &self.sync_failure {
                    Some(error) => Err(copy_error(error)),
                    None => Ok(()),
                });
            }
        }
    }

    /// The ring failed in a way we cannot retry. We cannot know which SQEs the kernel took, so
    /// the buffers of every in-flight op are leaked (at most `in_flight_max`, once per driver):
    /// freeing memory the kernel may still DMA into would be far worse. Every request fails.
    fn break_ring(&mut self, error: io::Error) {
        tracing::error!(%error, "io_uring submission failed; failing every storage request of this file");
        for slot in 0..self.slots.len() {
            let Some(op) = self.slots[slot].take() else {
                continue;
            };
            self.free_slots.push(slot);
            match op {
                Op::Write { buf, reply, .. } | Op::Read { buf, reply, .. } => {
                    std::mem::forget(buf);
                    reply.complete(Err(copy_error(&error)));
                }
                Op::Fsync { replies, .. } => {
                    for reply in replies {
                        reply.complete(Err(copy_error(&error)));
                    }
                }
            }
        }
        for (_, (_, replies)) in std::mem::take(&mut self.fsyncs_completed) {
            for reply in replies {
                reply.complete(Err(copy_error(&error)));
            }
        }
        self.write_seqs.clear();
        self.continuations.clear();
        self.fsyncs_in_flight = 0;
        for sync in self.pending_syncs.drain(..) {
            sync.reply.complete(Err(copy_error(&error)));
        }
        self.broken = Some(error);
        self.fail_waiting();
    }

    fn fail_waiting(&mut self) {
        let error = self.broken.as_ref().expect("only after the ring broke");
        for (_, request) in self.waiting.drain(..) {
            request.fail(error);
        }
    }
}

fn transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}
