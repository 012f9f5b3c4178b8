//! `FileZonedDevice`: the default backend, a zoned device emulated over one preallocated file
//! written with O_DIRECT through the storage I/O driver (`crate::uring`).
//!
//! Layout: a superblock in the first block (magic, format version, geometry, crc32), then zone
//! `i` at `DATA_OFFSET_BYTES + i * zone_size_bytes`. The superblock is padded to 1 MiB so zone
//! data is aligned for any device or RAID stripe below the file system.
//!
//! Write pointers are recovered without a side file. The whole file is preallocated with
//! `fallocate(mode 0)`, which leaves unwritten extents that `lseek(SEEK_DATA)` reports as holes.
//! An O_DIRECT write converts the extents it covers to written extents, and fdatasync makes that
//! conversion durable. So after a restart, a zone's write pointer is the end of its last data
//! extent within its capacity (rounded up to a block). Writes in flight at a crash may leave a
//! gap below that point that reads as zeros; the log above stops at the first frame whose
//! checksum fails, so a gap costs only unacknowledged data (acknowledged data was flushed).
//!
//! Emulation choices, documented because a real ZNS device does them in firmware:
//! - `finish` persists "full" by writing one zeroed block at the last block of the capacity;
//! - `reset` punches a hole over the zone and re-reserves it, so the zone reads as unwritten;
//! - open/closed states are not persisted: after a restart a partially written zone is Closed,
//!   as on a real device after power loss.
//!
//! Failure model: the write pointer advances when a write is accepted, before its I/O runs. If
//! the I/O fails, the table keeps the advanced pointer and the zone's content is unknown; the
//! layer above treats any device error as fatal for the partition until it reopens the device
//! (recovery then finds the true write pointer), or it resets or finishes the zone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ZoneGeometry, ZoneId, ZoneInfo, ZoneTable, ZonedDevice};
use crate::buf::{round_up, AlignedBuf, BLOCK_SIZE};
use crate::pending::Pending;
use crate::uring::{blocking, IoBackendChoice, IoBackendKind, IoDriver, Step, QUEUE_DEPTH_DEFAULT};

/// Where zone 0 starts: the superblock block, padded to 1 MiB.
pub const DATA_OFFSET_BYTES: u64 = 1 << 20;
/// Identifies a file as a YottaStore emulated zoned device.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"YOTTAZNS";
/// Bumped on any incompatible change of the layout.
pub const FORMAT_VERSION: u32 = 1;
/// The most zones a device may have: bounds the zone table (and the recovery scan) whatever a
/// superblock says. Large ZNS drives have a few tens of thousands of zones.
pub const ZONE_COUNT_MAX: u32 = 1 << 20;

/// Byte offsets inside the superblock (little endian), with the checksum over everything
/// before it. The rest of the block is zero.
mod superblock {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const BLOCK_SIZE: usize = 12;
    pub const ZONE_SIZE: usize = 16;
    pub const ZONE_CAPACITY: usize = 24;
    pub const ZONE_COUNT: usize = 32;
    pub const MAX_OPEN: usize = 36;
    pub const MAX_ACTIVE: usize = 40;
    pub const DATA_OFFSET: usize = 48;
    pub const CHECKSUM: usize = 56;
}

pub struct FileZonedDevice {
    path: PathBuf,
    geometry: ZoneGeometry,
    table: Mutex<ZoneTable>,
    driver: IoDriver,
}

impl FileZonedDevice {
    /// Creates a device file at `path` (which must not exist), preallocated over its whole size.
    pub fn create(
        path: &Path,
        geometry: ZoneGeometry,
        io: IoBackendChoice,
    ) -> io::Result<FileZonedDevice> {
        let file_bytes = file_bytes(&geometry)?;
        let file = open_direct(path, true)?;
        // From here on the file is ours: remove it if creation fails, so a retry can start over.
        match FileZonedDevice::initialise(path, file, geometry, file_bytes, io) {
            Ok(device) => Ok(device),
            Err(error) => {
                let _ = std::fs::remove_file(path);
                Err(error)
            }
        }
    }

    fn initialise(
        path: &Path,
        file: File,
        geometry: ZoneGeometry,
        file_bytes: u64,
        io: IoBackendChoice,
    ) -> io::Result<FileZonedDevice> {
        let fd = file.as_raw_fd();
        blocking::allocate(fd, 0, 0, file_bytes).map_err(|error| {
            let why = if error.raw_os_error() == Some(libc::ENOSPC) {
                "not enough free space"
            } else {
                "fallocate failed"
            };
            context(
                error,
                format!(
                    "cannot preallocate {file_bytes} bytes for zoned device {}: {why}",
                    path.display()
                ),
            )
        })?;
        // Recovery depends on unwritten extents reading as holes: check it on this very file
        // system before any data exists, rather than lose write pointers at the first restart.
        if let Some(data_offset) = seek(fd, 0, libc::SEEK_DATA)? {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the file system of {} reports preallocated (unwritten) space as data (SEEK_DATA found data at \
                     {data_offset} in a fresh file); the file zoned device recovers write pointers from unwritten \
                     extents and needs a file system that reports them as holes, such as ext4 or xfs",
                    path.display()
                ),
            ));
        }
        let mut block = AlignedBuf::zeroed(BLOCK_SIZE);
        encode_superblock(&geometry, &mut block);
        blocking::write_all_at(fd, 0, &block)?;
        // fsync: the superblock, the file size and the preallocation; then the directory entry.
        file.sync_all()?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            File::open(parent)?.sync_all()?;
        }
        FileZonedDevice::start(path, file, ZoneTable::new(geometry), io)
    }

    /// Opens an existing device file; the geometry comes from its superblock and the write
    /// pointers from its extents.
    pub fn open(path: &Path, io: IoBackendChoice) -> io::Result<FileZonedDevice> {
        let file = open_direct(path, false)?;
        let fd = file.as_raw_fd();
        let file_len = file.metadata()?.len();
        if file_len < DATA_OFFSET_BYTES {
            return Err(invalid_data(format!(
                "{} is too short ({file_len} bytes) to be a zoned device",
                path.display()
            )));
        }
        let mut block = AlignedBuf::zeroed(BLOCK_SIZE);
        blocking::read_exact_at(fd, 0, &mut block)?;
        let geometry = decode_superblock(&block)
            .map_err(|message| invalid_data(format!("{}: {message}", path.display())))?;
        let expected_bytes = file_bytes(&geometry)?;
        if file_len < expected_bytes {
            return Err(invalid_data(format!(
                "{} is {file_len} bytes but its geometry needs {expected_bytes}: the file was truncated",
                path.display()
            )));
        }
        let write_pointers = recover_write_pointers(fd, &geometry, file_len)?;
        FileZonedDevice::start(
            path,
            file,
            ZoneTable::recovered(geometry, &write_pointers),
            io,
        )
    }

    /// Opens the device at `path`, creating it if it does not exist. An existing device must have
    /// exactly `geometry`: silently using another shape would break the caller's assumptions.
    pub fn open_or_create(
        path: &Path,
        geometry: ZoneGeometry,
        io: IoBackendChoice,
    ) -> io::Result<FileZonedDevice> {
        match FileZonedDevice::create(path, geometry, io) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let device = FileZonedDevice::open(path, io)?;
                if device.geometry != geometry {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} holds a device with geometry {:?}, not the requested {geometry:?}",
                            path.display(),
                            device.geometry
                        ),
                    ));
                }
                Ok(device)
            }
            other => other,
        }
    }

    fn start(
        path: &Path,
        file: File,
        table: ZoneTable,
        io: IoBackendChoice,
    ) -> io::Result<FileZonedDevice> {
        let geometry = table.geometry();
        let driver = IoDriver::start(file, io, QUEUE_DEPTH_DEFAULT)?;
        Ok(FileZonedDevice {
            path: path.to_path_buf(),
            geometry,
            table: Mutex::new(table),
            driver,
        })
    }

    pub fn io_kind(&self) -> IoBackendKind {
        self.driver.kind()
    }

    pub fn driver(&self) -> &IoDriver {
        &self.driver
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ZoneTable> {
        // Every table update validates before it mutates, so a poisoned table is consistent.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file offset of byte 0 of `zone` (which the caller validated).
    fn zone_start_bytes(&self, zone: ZoneId) -> u64 {
        assert!(zone < self.geometry.zone_count);
        DATA_OFFSET_BYTES + u64::from(zone) * self.geometry.zone_size_bytes
    }
}

impl ZonedDevice for FileZonedDevice {
    fn geometry(&self) -> ZoneGeometry {
        self.geometry
    }

    fn report_zones(&self) -> Vec<ZoneInfo> {
        self.lock().zones().to_vec()
    }

    fn zone(&self, zone: ZoneId) -> io::Result<ZoneInfo> {
        Ok(self.lock().zone(zone)?)
    }

    fn write(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf) -> Pending<AlignedBuf> {
        let mut table = self.lock();
        if let Err(error) = table.accept_write(zone, offset_bytes, buf.len() as u64) {
            return Pending::ready(Err(error.into()));
        }
        // Sent under the lock, so the driver sees writes in write-pointer order and a flush
        // that follows an accepted write (from any thread) is queued after it.
        self.driver
            .write_at(self.zone_start_bytes(zone) + offset_bytes, buf)
    }

    fn read_into(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf, len_bytes: usize) -> Pending<AlignedBuf> {
        if let Err(error) = self.lock().check_read(zone, offset_bytes, len_bytes as u64) {
            return Pending::ready(Err(error.into()));
        }
        self.driver
            .read_at(self.zone_start_bytes(zone) + offset_bytes, buf, len_bytes)
    }

    fn flush(&self) -> Pending<()> {
        self.driver.sync_data()
    }

    fn open(&self, zone: ZoneId) -> io::Result<()> {
        Ok(self.lock().open(zone)?)
    }

    fn close(&self, zone: ZoneId) -> io::Result<()> {
        Ok(self.lock().close(zone)?)
    }

    fn finish(&self, zone: ZoneId) -> Pending<()> {
        let mut table = self.lock();
        let previous_bytes = match table.finish(zone) {
            Ok(previous_bytes) => previous_bytes,
            Err(error) => return Pending::ready(Err(error.into())),
        };
        let capacity_bytes = self.geometry.zone_capacity_bytes;
        assert!(previous_bytes <= capacity_bytes);
        if previous_bytes == capacity_bytes {
            // Written to capacity: the data itself marks the zone full once it is durable.
            return self.driver.sync_data();
        }
        // Data in the last block of the capacity is what recovery reads as "full".
        let last_block =
            self.zone_start_bytes(zone) + capacity_bytes - ZoneGeometry::BLOCK_SIZE_BYTES;
        self.driver.sequence(vec![
            Step::Write {
                offset: last_block,
                buf: AlignedBuf::zeroed(BLOCK_SIZE),
            },
            Step::SyncData,
        ])
    }

    fn reset(&self, zone: ZoneId) -> Pending<()> {
        let mut table = self.lock();
        if let Err(error) = table.reset(zone) {
            return Pending::ready(Err(error.into()));
        }
        let start = self.zone_start_bytes(zone);
        let len = self.geometry.zone_size_bytes;
        // Punch (the zone reads as a hole, so recovery sees it empty), re-reserve the space (so
        // later writes cannot hit ENOSPC), then fsync: both are metadata changes.
        self.driver.sequence(vec![
            Step::Allocate {
                offset: start,
                len,
                mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            },
            Step::Allocate {
                offset: start,
                len,
                mode: 0,
            },
            Step::SyncAll,
        ])
    }

    fn describe(&self) -> String {
        format!("file+{}", self.driver.kind())
    }
}

fn context(error: io::Error, message: String) -> io::Error {
    io::Error::new(error.kind(), format!("{message}: {error}"))
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Validates the geometry against the model and this backend's limits; returns the file size.
fn file_bytes(geometry: &ZoneGeometry) -> io::Result<u64> {
    let invalid = |message: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid zone geometry: {message}"),
        )
    };
    geometry.validate().map_err(invalid)?;
    if geometry.zone_count > ZONE_COUNT_MAX {
        return Err(invalid(format!(
            "{} zones is more than the limit {ZONE_COUNT_MAX}",
            geometry.zone_count
        )));
    }
    geometry
        .zone_size_bytes
        .checked_mul(u64::from(geometry.zone_count))
        .and_then(|device_bytes| device_bytes.checked_add(DATA_OFFSET_BYTES))
        .filter(|&bytes| bytes <= i64::MAX as u64)
        .ok_or_else(|| invalid(format!("{geometry:?} is larger than a file can be")))
}

fn open_direct(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
    if create {
        options.create_new(true);
    }
    options.open(path).map_err(|error| {
        let hint = if error.raw_os_error() == Some(libc::EINVAL) {
            " (the file system may not support O_DIRECT, e.g. tmpfs)"
        } else {
            ""
        };
        context(
            error,
            format!(
                "cannot open zoned device file {} with O_DIRECT{hint}",
                path.display()
            ),
        )
    })
}

fn encode_superblock(geometry: &ZoneGeometry, block: &mut [u8]) {
    use superblock::*;
    assert_eq!(block.len(), crate::buf::BLOCK_SIZE);
    block.fill(0);
    block[MAGIC..MAGIC + 8].copy_from_slice(&SUPERBLOCK_MAGIC);
    block[VERSION..VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    block[BLOCK_SIZE..BLOCK_SIZE + 4]
        .copy_from_slice(&(crate::buf::BLOCK_SIZE as u32).to_le_bytes());
    block[ZONE_SIZE..ZONE_SIZE + 8].copy_from_slice(&geometry.zone_size_bytes.to_le_bytes());
    block[ZONE_CAPACITY..ZONE_CAPACITY + 8]
        .copy_from_slice(&geometry.zone_capacity_bytes.to_le_bytes());
    block[ZONE_COUNT..ZONE_COUNT + 4].copy_from_slice(&geometry.zone_count.to_le_bytes());
    block[MAX_OPEN..MAX_OPEN + 4].copy_from_slice(&geometry.max_open_zones.to_le_bytes());
    block[MAX_ACTIVE..MAX_ACTIVE + 4].copy_from_slice(&geometry.max_active_zones.to_le_bytes());
    block[DATA_OFFSET..DATA_OFFSET + 8].copy_from_slice(&DATA_OFFSET_BYTES.to_le_bytes());
    let checksum = crc32fast::hash(&block[..CHECKSUM]);
    block[CHECKSUM..CHECKSUM + 4].copy_from_slice(&checksum.to_le_bytes());
}

fn decode_superblock(block: &[u8]) -> Result<ZoneGeometry, String> {
    use superblock::*;
    assert_eq!(block.len(), crate::buf::BLOCK_SIZE);
    let u32_at = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"));
    if block[MAGIC..MAGIC + 8] != SUPERBLOCK_MAGIC {
        return Err("not a YottaStore zoned device (bad superblock magic)".into());
    }
    let checksum = crc32fast::hash(&block[..CHECKSUM]);
    if checksum != u32_at(CHECKSUM) {
        return Err(format!(
            "superblock checksum mismatch (stored {:#010x}, computed {checksum:#010x})",
            u32_at(CHECKSUM)
        ));
    }
    let version = u32_at(VERSION);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    if u32_at(BLOCK_SIZE) as usize != crate::buf::BLOCK_SIZE
        || u64_at(DATA_OFFSET) != DATA_OFFSET_BYTES
    {
        return Err(format!(
            "unsupported layout: block size {} and data offset {} (expected {} and {DATA_OFFSET_BYTES})",
            u32_at(BLOCK_SIZE),
            u64_at(DATA_OFFSET),
            crate::buf::BLOCK_SIZE
        ));
    }
    let geometry = ZoneGeometry {
        zone_size_bytes: u64_at(ZONE_SIZE),
        zone_capacity_bytes: u64_at(ZONE_CAPACITY),
        zone_count: u32_at(ZONE_COUNT),
        max_open_zones: u32_at(MAX_OPEN),
        max_active_zones: u32_at(MAX_ACTIVE),
    };
    file_bytes(&geometry).map_err(|error| format!("superblock: {error}"))?;
    Ok(geometry)
}

/// `lseek` for SEEK_DATA/SEEK_HOLE; `None` when there is no such region (ENXIO).
fn seek(fd: RawFd, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    let at = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    // Safety: a plain system call. pread/pwrite ignore the file position this moves.
    let result = unsafe { libc::lseek(fd, at, whence) };
    if result >= 0 {
        return Ok(Some(result as u64));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENXIO) {
        return Ok(None);
    }
    Err(error)
}

/// Each zone's write pointer: the end of its last data extent within its capacity, rounded up
/// to a block and clamped to the capacity.
fn recover_write_pointers(
    fd: RawFd,
    geometry: &ZoneGeometry,
    file_len: u64,
) -> io::Result<Vec<u64>> {
    let block = ZoneGeometry::BLOCK_SIZE_BYTES;
    let capacity = geometry.zone_capacity_bytes;
    // Every extent found moves the scan at least one block forward.
    let extents_per_zone_max = capacity / block + 1;
    let mut write_pointers = Vec::with_capacity(geometry.zone_count as usize);
    for zone in 0..u64::from(geometry.zone_count) {
        let start = DATA_OFFSET_BYTES + zone * geometry.zone_size_bytes;
        let end = start + capacity;
        let mut position = start;
        let mut data_end = start;
        for _ in 0..extents_per_zone_max {
            let Some(data) = seek(fd, position, libc::SEEK_DATA)? else {
                break;
            };
            if data >= end {
                break;
            }
            // A data offset always has a hole after it (at worst the virtual one at EOF).
            let hole = seek(fd, data, libc::SEEK_HOLE)?.unwrap_or(file_len);
            if hole <= data || hole <= position {
                return Err(invalid_data(format!(
                    "inconsistent extents: data at {data} but a hole at {hole}"
                )));
            }
            data_end = hole.min(end);
            position = hole;
            if position >= end {
                break;
            }
        }
        assert!(data_end >= start && data_end <= end);
        let write_pointer = round_up((data_end - start) as usize, BLOCK_SIZE) as u64;
        write_pointers.push(write_pointer.min(capacity));
    }
    Ok(write_pointers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{ZoneError, ZoneState};
    use std::io::{Seek, SeekFrom, Write};

    const BLOCK: u64 = ZoneGeometry::BLOCK_SIZE_BYTES;

    fn geometry() -> ZoneGeometry {
        ZoneGeometry {
            zone_size_bytes: 1 << 20,
            // Below the size, as on ZNS drives, to exercise the clamp and the finish marker.
            zone_capacity_bytes: 768 << 10,
            zone_count: 8,
            max_open_zones: 4,
            max_active_zones: 6,
        }
    }

    fn temp_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("yotta-zone-file")
            .tempdir_in("/tmp")
            .unwrap()
    }

    fn choices() -> Vec<IoBackendChoice> {
        let dir = temp_dir();
        let path = dir.path().join("probe");
        let device = FileZonedDevice::create(&path, geometry(), IoBackendChoice::Auto).unwrap();
        let mut choices = vec![IoBackendChoice::Sync];
        if device.io_kind() == IoBackendKind::IoUring {
            choices.push(IoBackendChoice::IoUring);
        } else {
            eprintln!("io_uring unavailable here: testing pwritev only");
        }
        choices
    }

    fn pattern(seed: u8, blocks: u64) -> AlignedBuf {
        let len = (blocks * BLOCK) as usize;
        let mut buf = AlignedBuf::with_capacity(len);
        let bytes: Vec<u8> = (0..len)
            .map(|i| seed.wrapping_add((i % 253) as u8))
            .collect();
        buf.extend_from_slice(&bytes);
        buf
    }

    fn zone_error(error: io::Error) -> ZoneError {
        ZoneError::of(&error)
            .cloned()
            .unwrap_or_else(|| panic!("not a zone error: {error}"))
    }

    #[test]
    fn write_flush_reopen_recovers_exact_write_pointers() {
        for choice in choices() {
            let dir = temp_dir();
            let path = dir.path().join("device");
            let capacity = geometry().zone_capacity_bytes;
            {
                let device = FileZonedDevice::create(&path, geometry(), choice).unwrap();
                assert_eq!(device.describe(), format!("file+{}", device.io_kind()));
                // Zone 0: 3 blocks in one write. Zone 1: 10 blocks in two pipelined writes.
                device.write(0, 0, pattern(1, 3)).wait().unwrap();
                let first = device.write(1, 0, pattern(2, 4));
                let second = device.write(1, 4 * BLOCK, pattern(3, 6));
                first.wait().unwrap();
                second.wait().unwrap();
                // Zone 2: one block, then finished. Zone 3: written, then reset.
                device.write(2, 0, pattern(4, 1)).wait().unwrap();
                device.finish(2).wait().unwrap();
                device.write(3, 0, pattern(5, 8)).wait().unwrap();
                device.reset(3).wait().unwrap();
                // Zone 4: written to capacity in one go. Zone 5: finished while empty.
                device
                    .write(4, 0, pattern(6, capacity / BLOCK))
                    .wait()
                    .unwrap();
                device.finish(5).wait().unwrap();
                assert_eq!(device.zone(4).unwrap().state, ZoneState::Full);
                device.flush().wait().unwrap();
            }
            let device = FileZonedDevice::open(&path, choice).unwrap();
            assert_eq!(device.geometry(), geometry());
            let found: Vec<(ZoneState, u64)> = device
                .report_zones()
                .iter()
                .map(|zone| (zone.state, zone.write_pointer_bytes))
                .collect();
            let expected = vec![
                (ZoneState::Closed, 3 * BLOCK),
                (ZoneState::Closed, 10 * BLOCK),
                (ZoneState::Full, capacity),
                (ZoneState::Empty, 0),
                (ZoneState::Full, capacity),
                (ZoneState::Full, capacity),
                (ZoneState::Empty, 0),
                (ZoneState::Empty, 0),
            ];
            assert_eq!(found, expected, "{choice:?}");
            // Identical bytes after the restart.
            assert_eq!(
                &device.read(0, 0, 3 * BLOCK as usize).wait().unwrap()[..],
                &pattern(1, 3)[..]
            );
            let zone1 = device.read(1, 0, 10 * BLOCK as usize).wait().unwrap();
            assert_eq!(&zone1[..4 * BLOCK as usize], &pattern(2, 4)[..]);
            assert_eq!(&zone1[4 * BLOCK as usize..], &pattern(3, 6)[..]);
            let zone2 = device.read(2, 0, 2 * BLOCK as usize).wait().unwrap();
            assert_eq!(&zone2[..BLOCK as usize], &pattern(4, 1)[..]);
            assert!(
                zone2[BLOCK as usize..].iter().all(|&b| b == 0),
                "a finished zone reads zeros past its data"
            );
            assert_eq!(
                &device
                    .read(4, capacity - BLOCK, BLOCK as usize)
                    .wait()
                    .unwrap()[..],
                &pattern(6, capacity / BLOCK)[(capacity - BLOCK) as usize..]
            );
            // A recovered closed zone continues at its write pointer; a reset zone starts over.
            device.write(0, 3 * BLOCK, pattern(7, 1)).wait().unwrap();
            device.write(3, 0, pattern(8, 1)).wait().unwrap();
            device.flush().wait().unwrap();
            drop(device);
            let device = FileZonedDevice::open(&path, choice).unwrap();
            assert_eq!(device.zone(0).unwrap().write_pointer_bytes, 4 * BLOCK);
            assert_eq!(device.zone(3).unwrap().write_pointer_bytes, BLOCK);
            assert_eq!(
                &device.read(3, 0, BLOCK as usize).wait().unwrap()[..],
                &pattern(8, 1)[..]
            );
        }
    }

    #[test]
    fn invalid_writes_and_reads_are_rejected() {
        let dir = temp_dir();
        let device = FileZonedDevice::create(
            &dir.path().join("device"),
            geometry(),
            IoBackendChoice::Auto,
        )
        .unwrap();
        let capacity = geometry().zone_capacity_bytes;
        device.write(0, 0, pattern(1, 2)).wait().unwrap();
        let error = zone_error(device.write(0, 0, pattern(1, 1)).wait().unwrap_err());
        assert!(
            matches!(
                error,
                ZoneError::NotAtWritePointer {
                    write_pointer_bytes: 8192,
                    ..
                }
            ),
            "{error}"
        );
        let error = zone_error(
            device
                .write(0, 4 * BLOCK, pattern(1, 1))
                .wait()
                .unwrap_err(),
        );
        assert!(
            matches!(error, ZoneError::NotAtWritePointer { .. }),
            "{error}"
        );
        let mut unaligned = AlignedBuf::with_capacity(BLOCK as usize);
        unaligned.extend_from_slice(b"short");
        let error = zone_error(device.write(0, 2 * BLOCK, unaligned).wait().unwrap_err());
        assert!(matches!(error, ZoneError::Unaligned { .. }), "{error}");
        let error = zone_error(
            device
                .write(0, 2 * BLOCK, pattern(1, capacity / BLOCK))
                .wait()
                .unwrap_err(),
        );
        assert!(matches!(error, ZoneError::BeyondCapacity { .. }), "{error}");
        let error = zone_error(device.write(8, 0, pattern(1, 1)).wait().unwrap_err());
        assert!(
            matches!(
                error,
                ZoneError::NoSuchZone {
                    zone: 8,
                    zone_count: 8
                }
            ),
            "{error}"
        );
        let error = zone_error(device.read(0, 0, 3 * BLOCK as usize).wait().unwrap_err());
        assert!(
            matches!(error, ZoneError::ReadBeyondWritePointer { .. }),
            "{error}"
        );
        let error = zone_error(device.read(0, 100, BLOCK as usize).wait().unwrap_err());
        assert!(matches!(error, ZoneError::Unaligned { .. }), "{error}");
        device.finish(0).wait().unwrap();
        let error = zone_error(device.write(0, capacity, pattern(1, 1)).wait().unwrap_err());
        assert!(
            matches!(
                error,
                ZoneError::InvalidTransition {
                    state: ZoneState::Full,
                    ..
                }
            ),
            "{error}"
        );
        // Rejected writes did not move the write pointer of the other zones.
        assert_eq!(device.zone(1).unwrap().write_pointer_bytes, 0);
    }

    #[test]
    fn open_and_active_limits_are_enforced() {
        let dir = temp_dir();
        let geometry = ZoneGeometry {
            max_open_zones: 2,
            max_active_zones: 3,
            ..geometry()
        };
        let device =
            FileZonedDevice::create(&dir.path().join("device"), geometry, IoBackendChoice::Auto)
                .unwrap();
        device.write(0, 0, pattern(1, 1)).wait().unwrap();
        device.open(1).unwrap();
        let error = zone_error(device.write(2, 0, pattern(1, 1)).wait().unwrap_err());
        assert!(
            matches!(
                error,
                ZoneError::TooManyOpenZones {
                    max_open_zones: 2,
                    ..
                }
            ),
            "{error}"
        );
        device.close(1).unwrap(); // never written: back to empty
        device.close(0).unwrap(); // written: closed, still active
        device.write(1, 0, pattern(1, 1)).wait().unwrap();
        device.close(1).unwrap();
        device.write(2, 0, pattern(1, 1)).wait().unwrap();
        device.close(2).unwrap();
        let error = zone_error(device.write(3, 0, pattern(1, 1)).wait().unwrap_err());
        assert!(
            matches!(
                error,
                ZoneError::TooManyActiveZones {
                    max_active_zones: 3,
                    ..
                }
            ),
            "{error}"
        );
        device.reset(2).wait().unwrap();
        device.write(3, 0, pattern(1, 1)).wait().unwrap();
    }

    #[test]
    fn superblock_errors_are_clear() {
        let dir = temp_dir();
        let path = dir.path().join("device");
        drop(FileZonedDevice::create(&path, geometry(), IoBackendChoice::Auto).unwrap());
        let error = FileZonedDevice::create(&path, geometry(), IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            path.exists(),
            "a failed create must not remove somebody else's file"
        );

        let corrupt = |at: u64, bytes: &[u8]| {
            let mut file = OpenOptions::new().write(true).open(&path).unwrap();
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(bytes).unwrap();
            file.sync_all().unwrap();
        };
        corrupt(superblock::ZONE_COUNT as u64, &9u32.to_le_bytes());
        let error = FileZonedDevice::open(&path, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("checksum"), "{error}");
        corrupt(0, b"NOTAZONE");
        let error = FileZonedDevice::open(&path, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert!(error.to_string().contains("magic"), "{error}");

        // A checksummed superblock with an invalid geometry or a newer version.
        let write_superblock = |geometry: &ZoneGeometry, version: u32| {
            let mut block = vec![0u8; BLOCK_SIZE];
            encode_superblock(geometry, &mut block);
            block[superblock::VERSION..superblock::VERSION + 4]
                .copy_from_slice(&version.to_le_bytes());
            let checksum = crc32fast::hash(&block[..superblock::CHECKSUM]);
            block[superblock::CHECKSUM..superblock::CHECKSUM + 4]
                .copy_from_slice(&checksum.to_le_bytes());
            corrupt(0, &block);
        };
        write_superblock(
            &ZoneGeometry {
                max_open_zones: 0,
                ..geometry()
            },
            FORMAT_VERSION,
        );
        let error = FileZonedDevice::open(&path, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert!(error.to_string().contains("max open zones"), "{error}");
        write_superblock(&geometry(), FORMAT_VERSION + 1);
        let error = FileZonedDevice::open(&path, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert!(error.to_string().contains("version"), "{error}");
        write_superblock(
            &ZoneGeometry {
                zone_count: 1000,
                ..geometry()
            },
            FORMAT_VERSION,
        );
        let error = FileZonedDevice::open(&path, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert!(error.to_string().contains("truncated"), "{error}");
        write_superblock(&geometry(), FORMAT_VERSION);
        FileZonedDevice::open(&path, IoBackendChoice::Auto).unwrap();

        let error = FileZonedDevice::open(&dir.path().join("missing"), IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let bad = ZoneGeometry {
            zone_capacity_bytes: 3 << 20,
            ..geometry()
        };
        let error = FileZonedDevice::create(&dir.path().join("bad"), bad, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(!dir.path().join("bad").exists());
    }

    #[test]
    fn open_or_create_checks_the_geometry() {
        let dir = temp_dir();
        let path = dir.path().join("device");
        let device =
            FileZonedDevice::open_or_create(&path, geometry(), IoBackendChoice::Auto).unwrap();
        device.write(5, 0, pattern(1, 2)).wait().unwrap();
        device.flush().wait().unwrap();
        drop(device);
        let device =
            FileZonedDevice::open_or_create(&path, geometry(), IoBackendChoice::Auto).unwrap();
        assert_eq!(device.zone(5).unwrap().write_pointer_bytes, 2 * BLOCK);
        drop(device);
        let other = ZoneGeometry {
            zone_count: 4,
            ..geometry()
        };
        let error = FileZonedDevice::open_or_create(&path, other, IoBackendChoice::Auto)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn async_callers_await_the_same_device() {
        let dir = temp_dir();
        let device = std::sync::Arc::new(
            FileZonedDevice::create(
                &dir.path().join("device"),
                geometry(),
                IoBackendChoice::Auto,
            )
            .unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for zone in 0..4u32 {
                let device = device.clone();
                tasks.push(tokio::spawn(async move {
                    for block in 0..16u64 {
                        device
                            .write(zone, block * BLOCK, pattern(zone as u8, 1))
                            .await
                            .unwrap();
                    }
                    device.flush().await.unwrap();
                    device.read(zone, 0, 16 * BLOCK as usize).await.unwrap()
                }));
            }
            for (zone, task) in tasks.into_iter().enumerate() {
                let data = task.await.unwrap();
                assert_eq!(&data[..BLOCK as usize], &pattern(zone as u8, 1)[..]);
            }
        });
    }
}
