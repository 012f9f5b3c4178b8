//! `FaultyZonedDevice`: wraps any `ZonedDevice` and injects write, flush and read errors on
//! demand, for fault tests of the layers above (the partition log, recovery).
//!
//! Everything passes through to the wrapped device until a fault is armed through the
//! `FaultControl` handle (cloneable, so a test keeps one while the log owns the device):
//!
//! - `fail_write_in(n, errno, mode)`: the write after `n` more successful writes fails, once;
//! - `fail_writes_after_bytes(k, errno, mode)`: once `k` more bytes have been written, every
//!   later write fails (a device that died), until `clear`;
//! - `fail_next_flush(errno)`: the next flush fails, once;
//! - `fail_reads(errno)`: every read fails until `clear`.
//!
//! A failed write comes in one of three flavours (`WriteFault`), because a caller cannot tell
//! them apart from the error alone and recovery must cope with each:
//!
//! - `Dropped`: nothing reaches the device and its write pointer does not move (a request
//!   refused before the device accepted it);
//! - `Torn`: the device accepts the write (its write pointer moves over all of it, as the file
//!   backend's does when it accepts a write) but only the leading blocks hold the data, the rest
//!   reads as zeros, like a write cut by power loss. Later writes to the zone land after the torn
//!   region, which is the hard case for recovery: valid frames after garbage must not be served;
//! - `Written`: the data lands whole, but the caller is told it failed (as when an error is
//!   reported for a write that did reach the medium). Recovery may then serve batches that were
//!   never acknowledged, which is allowed; it must not lose acknowledged ones.
//!
//! The error reaches the caller through the write's `Pending`, after the wrapped device has
//! completed whatever part of the write was forwarded, so the on-device state is settled when
//! the caller sees the error. Zone management (`open`, `close`, `finish`, `reset`) always passes
//! through.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ZoneGeometry, ZoneId, ZoneInfo, ZonedDevice};
use crate::buf::{AlignedBuf, BLOCK_SIZE};
use crate::pending::Pending;

/// What a failed write does to the device (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Not forwarded: the device's write pointer does not move.
    Dropped,
    /// Forwarded with only its leading blocks intact (the rest zeroed); reported as failed.
    Torn,
    /// Forwarded whole; reported as failed.
    Written,
}

/// Counts of faults injected so far, for assertions that a test really hit its fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub writes_failed: u64,
    pub flushes_failed: u64,
    pub reads_failed: u64,
}

#[derive(Clone, Copy, Debug)]
struct ArmedWrite {
    errno: i32,
    mode: WriteFault,
}

#[derive(Debug, Default)]
struct FaultPlan {
    /// One-shot: successful writes left before the failing one.
    write_in: Option<(u64, ArmedWrite)>,
    /// Sticky: bytes still allowed; the write that would cross this fails, and so do later ones.
    bytes_left: Option<(u64, ArmedWrite)>,
    /// One-shot flush failure.
    flush_errno: Option<i32>,
    /// Sticky read failure.
    read_errno: Option<i32>,
    /// One-shot: the next write that ends at its zone's capacity (a seal's trailer block:
    /// frames never reach there) fails, so a summary or trailer is left partial.
    seal_write: Option<ArmedWrite>,
    counts: FaultCounts,
    /// Bytes forwarded to the device by successful writes since creation.
    written_bytes: u64,
}

/// The handle a test keeps to arm faults on a `FaultyZonedDevice`.
#[derive(Clone, Debug, Default)]
pub struct FaultControl {
    plan: Arc<Mutex<FaultPlan>>,
}

impl FaultControl {
    fn lock(&self) -> MutexGuard<'_, FaultPlan> {
        // The plan is plain data updated in single statements: a poisoned lock is still valid.
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The write after `writes_ok` more successful writes fails with `errno` (once).
    pub fn fail_write_in(&self, writes_ok: u64, errno: i32, mode: WriteFault) {
        self.lock().write_in = Some((writes_ok, ArmedWrite { errno, mode }));
    }

    /// After `bytes_ok` more bytes are written, writes fail with `errno` until `clear`. The write
    /// that crosses the limit fails too; with `WriteFault::Torn` it keeps exactly the whole
    /// blocks that fit under the limit.
    pub fn fail_writes_after_bytes(&self, bytes_ok: u64, errno: i32, mode: WriteFault) {
        self.lock().bytes_left = Some((bytes_ok, ArmedWrite { errno, mode }));
    }

    /// The next flush fails with `errno` (once); it is not forwarded, so whether earlier writes
    /// are durable is unknown, as after a real flush error.
    pub fn fail_next_flush(&self, errno: i32) {
        self.lock().flush_errno = Some(errno);
    }

    /// The next write ending at its zone's capacity (a zone seal's last write: its summary's
    /// tail, zeros and trailer) fails with `errno` (once); a torn one keeps half its blocks.
    pub fn fail_next_seal_write(&self, errno: i32, mode: WriteFault) {
        self.lock().seal_write = Some(ArmedWrite { errno, mode });
    }

    /// Every read fails with `errno` until `clear`.
    pub fn fail_reads(&self, errno: i32) {
        self.lock().read_errno = Some(errno);
    }

    /// Disarms every fault (counts are kept).
    pub fn clear(&self) {
        let mut plan = self.lock();
        plan.write_in = None;
        plan.bytes_left = None;
        plan.flush_errno = None;
        plan.read_errno = None;
        plan.seal_write = None;
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Bytes successful writes have forwarded so far (to place byte-budget faults in tests).
    pub fn written_bytes(&self) -> u64 {
        self.lock().written_bytes
    }

    /// Decides the fate of a write of `len_bytes`: `None` to pass it through, or the fault and
    /// how many leading bytes a torn write keeps.
    fn on_write(&self, len_bytes: u64, ends_zone: bool) -> Option<(ArmedWrite, u64)> {
        let mut plan = self.lock();
        let half_bytes = (len_bytes / BLOCK_SIZE as u64 / 2) * BLOCK_SIZE as u64;
        if ends_zone {
            if let Some(armed) = plan.seal_write.take() {
                plan.counts.writes_failed += 1;
                return Some((armed, half_bytes));
            }
        }
        if let Some((writes_ok, armed)) = plan.write_in {
            if writes_ok == 0 {
                plan.write_in = None;
                plan.counts.writes_failed += 1;
                return Some((armed, half_bytes));
            }
            plan.write_in = Some((writes_ok - 1, armed));
        }
        if let Some((bytes_left, armed)) = plan.bytes_left {
            if len_bytes > bytes_left {
                let kept_bytes = bytes_left / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
                // Sticky: everything after the limit fails, with nothing more kept.
                plan.bytes_left = Some((0, armed));
                plan.counts.writes_failed += 1;
                return Some((armed, kept_bytes));
            }
            plan.bytes_left = Some((bytes_left - len_bytes, armed));
        }
        plan.written_bytes += len_bytes;
        None
    }
}

/// A zoned device that passes everything to `inner` except the faults armed on its control.
pub struct FaultyZonedDevice {
    inner: Arc<dyn ZonedDevice>,
    control: FaultControl,
}

impl FaultyZonedDevice {
    /// Wraps `inner`; returns the device and the handle that arms its faults.
    pub fn new(inner: Arc<dyn ZonedDevice>) -> (FaultyZonedDevice, FaultControl) {
        let control = FaultControl::default();
        (
            FaultyZonedDevice {
                inner,
                control: control.clone(),
            },
            control,
        )
    }

    pub fn inner(&self) -> &Arc<dyn ZonedDevice> {
        &self.inner
    }

    pub fn control(&self) -> &FaultControl {
        &self.control
    }
}

fn injected(errno: i32, what: &str) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    io::Error::new(os.kind(), format!("injected {what} fault: {os}"))
}

/// Completes with `error` once `forwarded` (the part of a write that did reach the device) has
/// completed, so the caller sees the error only when the device state is settled. A ready
/// `Pending` (the mem backend) is settled at once; otherwise a short-lived thread waits, since
/// the caller may be inside an async runtime where blocking is not allowed.
fn fail_after<T: Send + 'static>(
    forwarded: Option<Pending<T>>,
    error: io::Error,
) -> Pending<AlignedBuf> {
    let Some(mut forwarded) = forwarded else {
        return Pending::ready(Err(error));
    };
    if let Some(result) = forwarded.try_take() {
        return Pending::ready(Err(result.err().unwrap_or(error)));
    }
    let (completer, pending) = Pending::channel();
    let spawned = std::thread::Builder::new()
        .name("fault-write".into())
        .spawn(move || {
            let result = forwarded.wait();
            completer.complete(Err(result.err().unwrap_or(error)));
        });
    match spawned {
        Ok(_) => pending,
        Err(spawn_error) => Pending::ready(Err(spawn_error)),
    }
}

impl ZonedDevice for FaultyZonedDevice {
    fn geometry(&self) -> ZoneGeometry {
        self.inner.geometry()
    }

    fn report_zones(&self) -> Vec<ZoneInfo> {
        self.inner.report_zones()
    }

    fn zone(&self, zone: ZoneId) -> io::Result<ZoneInfo> {
        self.inner.zone(zone)
    }

    fn write(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf) -> Pending<AlignedBuf> {
        let len_bytes = buf.len() as u64;
        let ends_zone = offset_bytes + len_bytes == self.inner.geometry().zone_capacity_bytes;
        let Some((armed, kept_bytes)) = self.control.on_write(len_bytes, ends_zone) else {
            return self.inner.write(zone, offset_bytes, buf);
        };
        assert!(kept_bytes <= len_bytes && kept_bytes % BLOCK_SIZE as u64 == 0);
        let error = injected(armed.errno, "write");
        let forwarded = match armed.mode {
            WriteFault::Dropped => None,
            WriteFault::Written => Some(self.inner.write(zone, offset_bytes, buf)),
            WriteFault::Torn => {
                // Same length, so the device's write pointer moves over the whole write.
                let mut torn = AlignedBuf::zeroed(buf.len());
                torn[..kept_bytes as usize].copy_from_slice(&buf[..kept_bytes as usize]);
                Some(self.inner.write(zone, offset_bytes, torn))
            }
        };
        fail_after(forwarded, error)
    }

    fn read_into(
        &self,
        zone: ZoneId,
        offset_bytes: u64,
        buf: AlignedBuf,
        len_bytes: usize,
    ) -> Pending<AlignedBuf> {
        let read_errno = {
            let mut plan = self.control.lock();
            let errno = plan.read_errno;
            if errno.is_some() {
                plan.counts.reads_failed += 1;
            }
            errno
        };
        match read_errno {
            Some(errno) => Pending::ready(Err(injected(errno, "read"))),
            None => self.inner.read_into(zone, offset_bytes, buf, len_bytes),
        }
    }

    fn flush(&self) -> Pending<()> {
        let flush_errno = {
            let mut plan = self.control.lock();
            let errno = plan.flush_errno.take();
            if errno.is_some() {
                plan.counts.flushes_failed += 1;
            }
            errno
        };
        match flush_errno {
            Some(errno) => Pending::ready(Err(injected(errno, "flush"))),
            None => self.inner.flush(),
        }
    }

    fn open(&self, zone: ZoneId) -> io::Result<()> {
        self.inner.open(zone)
    }

    fn close(&self, zone: ZoneId) -> io::Result<()> {
        self.inner.close(zone)
    }

    fn finish(&self, zone: ZoneId) -> Pending<()> {
        self.inner.finish(zone)
    }

    fn reset(&self, zone: ZoneId) -> Pending<()> {
        self.inner.reset(zone)
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::mem::MemZonedDevice;

    fn device() -> (Arc<dyn ZonedDevice>, FaultyZonedDevice, FaultControl) {
        let inner: Arc<dyn ZonedDevice> = Arc::new(
            MemZonedDevice::new(ZoneGeometry {
                zone_size_bytes: 64 << 10,
                zone_capacity_bytes: 64 << 10,
                zone_count: 4,
                max_open_zones: 2,
                max_active_zones: 4,
            })
            .unwrap(),
        );
        let (faulty, control) = FaultyZonedDevice::new(inner.clone());
        (inner, faulty, control)
    }

    fn blocks(count: usize, fill: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::with_capacity(count * BLOCK_SIZE);
        buf.extend_from_slice(&vec![fill; count * BLOCK_SIZE]);
        buf
    }

    #[test]
    fn each_write_flavour_leaves_the_device_as_documented() {
        let block = BLOCK_SIZE as u64;
        let (inner, faulty, control) = device();
        control.fail_write_in(1, libc::EIO, WriteFault::Dropped);
        faulty.write(0, 0, blocks(1, 1)).wait().unwrap();
        let error = faulty.write(0, block, blocks(2, 2)).wait().unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("injected write fault") && message.contains("os error 5"),
            "{message}"
        );
        assert_eq!(inner.zone(0).unwrap().write_pointer_bytes, block);

        control.fail_write_in(0, libc::EIO, WriteFault::Torn);
        faulty.write(0, block, blocks(4, 3)).wait().unwrap_err();
        assert_eq!(inner.zone(0).unwrap().write_pointer_bytes, 5 * block);
        let data = inner.read(0, block, 4 * BLOCK_SIZE).wait().unwrap();
        assert!(data[..2 * BLOCK_SIZE].iter().all(|&b| b == 3));
        assert!(data[2 * BLOCK_SIZE..].iter().all(|&b| b == 0));

        control.fail_write_in(0, libc::ENOSPC, WriteFault::Written);
        faulty.write(0, 5 * block, blocks(1, 4)).wait().unwrap_err();
        assert_eq!(inner.zone(0).unwrap().write_pointer_bytes, 6 * block);
        // One-shot: the next write passes.
        faulty.write(0, 6 * block, blocks(1, 5)).wait().unwrap();
        assert_eq!(control.counts().writes_failed, 3);
    }

    #[test]
    fn byte_budget_is_sticky_and_torn_keeps_what_fits() {
        let block = BLOCK_SIZE as u64;
        let (inner, faulty, control) = device();
        control.fail_writes_after_bytes(3 * block, libc::EIO, WriteFault::Torn);
        faulty.write(1, 0, blocks(2, 1)).wait().unwrap();
        faulty.write(1, 2 * block, blocks(3, 2)).wait().unwrap_err();
        let data = inner.read(1, 2 * block, 3 * BLOCK_SIZE).wait().unwrap();
        assert!(data[..BLOCK_SIZE].iter().all(|&b| b == 2));
        assert!(data[BLOCK_SIZE..].iter().all(|&b| b == 0));
        faulty.write(1, 5 * block, blocks(1, 3)).wait().unwrap_err();
        control.clear();
        faulty.write(1, 6 * block, blocks(1, 4)).wait().unwrap();
        assert_eq!(control.counts().writes_failed, 2);
    }

    #[test]
    fn flush_and_read_faults() {
        let (_inner, faulty, control) = device();
        faulty.write(2, 0, blocks(1, 1)).wait().unwrap();
        control.fail_next_flush(libc::EIO);
        assert!(faulty.flush().wait().is_err());
        faulty.flush().wait().unwrap();
        control.fail_reads(libc::EIO);
        assert!(faulty.read(2, 0, BLOCK_SIZE).wait().is_err());
        assert!(faulty.read(2, 0, BLOCK_SIZE).wait().is_err());
        control.clear();
        faulty.read(2, 0, BLOCK_SIZE).wait().unwrap();
        assert_eq!(
            control.counts(),
            FaultCounts {
                writes_failed: 0,
                flushes_failed: 1,
                reads_failed: 2
            }
        );
    }
}
