//! The zoned storage seam: `ZonedDevice` and its backends.
//!
//! The model is NVMe ZNS: the device is an array of zones; each zone is written strictly
//! sequentially at its write pointer and reclaimed whole by a reset. Limits are part of the model:
//! zone size and capacity, at most `max_open_zones` open and `max_active_zones` active (open or
//! closed) zones, 4 KiB logical blocks.
//!
//! Architecture invariant: nothing above this module writes anywhere but at a write pointer,
//! and nothing below it knows about Kafka. Backends share one state machine (`ZoneTable`), so the
//! `mem` backend used by tests enforces exactly the rules the `file` backend does.

pub mod fault;
pub mod file;
pub mod mem;
mod table;

pub use table::ZoneTable;

use std::fmt;
use std::io;

use crate::buf::{AlignedBuf, BLOCK_SIZE};
use crate::pending::Pending;

/// Index of a zone on its device.
pub type ZoneId = u32;

/// The shape and limits of a zoned device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneGeometry {
    /// Distance between the starts of two zones.
    pub zone_size_bytes: u64,
    /// Writable bytes of each zone (<= size), as on ZNS devices whose capacity is below size.
    pub zone_capacity_bytes: u64,
    pub zone_count: u32,
    /// At most this many zones may be open (being written) at once.
    pub max_open_zones: u32,
    /// At most this many zones may be active (open, or closed with data but not full) at once.
    pub max_active_zones: u32,
}

impl ZoneGeometry {
    pub const BLOCK_SIZE_BYTES: u64 = BLOCK_SIZE as u64;

    /// Checks that the geometry is usable; the message says which limit is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let block = Self::BLOCK_SIZE_BYTES;
        if self.zone_size_bytes == 0 || self.zone_size_bytes % block != 0 {
            return Err(format!(
                "zone size {} is not a positive multiple of {block}",
                self.zone_size_bytes
            ));
        }
        if self.zone_capacity_bytes == 0
            || self.zone_capacity_bytes % block != 0
            || self.zone_capacity_bytes > self.zone_size_bytes
        {
            return Err(format!(
                "zone capacity {} must be a positive multiple of {block} and at most the zone size {}",
                self.zone_capacity_bytes, self.zone_size_bytes
            ));
        }
        if self.zone_count == 0 {
            return Err("zone count must be positive".into());
        }
        if self.max_open_zones == 0 || self.max_active_zones < self.max_open_zones {
            return Err(format!(
                "need 0 < max open zones ({}) <= max active zones ({})",
                self.max_open_zones, self.max_active_zones
            ));
        }
        Ok(())
    }

    /// Total addressable bytes (zone count times zone size).
    pub fn device_bytes(&self) -> u64 {
        self.zone_size_bytes * u64::from(self.zone_count)
    }
}

/// The state of a zone, as a ZNS device reports it (implicit and explicit open are merged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Empty,
    Open,
    Closed,
    Full,
}

impl fmt::Display for ZoneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ZoneState::Empty => "empty",
            ZoneState::Open => "open",
            ZoneState::Closed => "closed",
            ZoneState::Full => "full",
        };
        f.write_str(name)
    }
}

/// One zone as reported by the device. Offsets are relative to the zone start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    pub id: ZoneId,
    pub state: ZoneState,
    /// Bytes written so far: the next write must start here.
    pub write_pointer_bytes: u64,
    pub capacity_bytes: u64,
}

impl ZoneInfo {
    pub fn remaining_bytes(&self) -> u64 {
        match self.state {
            ZoneState::Full => 0,
            _ => self.capacity_bytes - self.write_pointer_bytes,
        }
    }
}

/// Errors of the zone model itself; they reach callers inside `io::Error` (kind
/// `InvalidInput` or `StorageFull`) and can be recovered with `ZoneError::of`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {zone} does not exist (device has {zone_count} zones)")]
    NoSuchZone { zone: ZoneId, zone_count: u32 },
    #[error(
        "write to zone {zone} at {offset_bytes} is not at its write pointer {write_pointer_bytes}"
    )]
    NotAtWritePointer {
        zone: ZoneId,
        offset_bytes: u64,
        write_pointer_bytes: u64,
    },
    #[error("write of {len_bytes} bytes to zone {zone} at {offset_bytes} crosses its capacity {capacity_bytes}")]
    BeyondCapacity {
        zone: ZoneId,
        offset_bytes: u64,
        len_bytes: u64,
        capacity_bytes: u64,
    },
    #[error("zone {zone}: offset {offset_bytes} or length {len_bytes} is not a multiple of the block size")]
    Unaligned {
        zone: ZoneId,
        offset_bytes: u64,
        len_bytes: u64,
    },
    #[error("read of zone {zone} at {offset_bytes}+{len_bytes} goes past its write pointer {write_pointer_bytes}")]
    ReadBeyondWritePointer {
        zone: ZoneId,
        offset_bytes: u64,
        len_bytes: u64,
        write_pointer_bytes: u64,
    },
    #[error("zone {zone} is {state}: cannot {operation}")]
    InvalidTransition {
        zone: ZoneId,
        state: ZoneState,
        operation: &'static str,
    },
    #[error("too many open zones (max {max_open_zones}): cannot open zone {zone}")]
    TooManyOpenZones { zone: ZoneId, max_open_zones: u32 },
    #[error("too many active zones (max {max_active_zones}): cannot activate zone {zone}")]
    TooManyActiveZones { zone: ZoneId, max_active_zones: u32 },
}

impl ZoneError {
    /// The zone error inside an `io::Error`, if it is one.
    pub fn of(error: &io::Error) -> Option<&ZoneError> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ZoneError>())
    }
}

impl From<ZoneError> for io::Error {
    fn from(error: ZoneError) -> io::Error {
        let kind = match error {
            ZoneError::TooManyOpenZones { .. } | ZoneError::TooManyActiveZones { .. } => {
                io::ErrorKind::ResourceBusy
            }
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error)
    }
}

/// The one storage seam. Every method validates against the zone model synchronously (the write
/// pointer advances when a write is accepted, so several writes to one zone may be in flight in
/// order) and completes the I/O asynchronously through `Pending`.
///
/// Durability: a completed `write` is on the device but may sit in a volatile cache; `flush`
/// makes every write completed before it durable. Zone management (`reset`, `finish`) is durable
/// when it completes.
pub trait ZonedDevice: Send + Sync + 'static {
    fn geometry(&self) -> ZoneGeometry;

    /// The current state of every zone.
    fn report_zones(&self) -> Vec<ZoneInfo>;

    fn zone(&self, zone: ZoneId) -> io::Result<ZoneInfo>;

    /// Writes `buf` (a whole number of blocks) at `offset_bytes`, which must equal the zone's
    /// write pointer. Implicitly opens the zone. Returns the buffer for reuse.
    fn write(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf) -> Pending<AlignedBuf>;

    /// Reads `len_bytes` (block multiple) at `offset_bytes` (block aligned), below the write
    /// pointer, into `buf` (capacity at least `len_bytes`; its length becomes `len_bytes`), so
    /// scans can reuse their buffers.
    fn read_into(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf, len_bytes: usize) -> Pending<AlignedBuf>;

    /// `read_into` a new buffer.
    fn read(&self, zone: ZoneId, offset_bytes: u64, len_bytes: usize) -> Pending<AlignedBuf> {
        self.read_into(zone, offset_bytes, AlignedBuf::with_capacity(len_bytes), len_bytes)
    }

    /// Makes all completed writes durable.
    fn flush(&self) -> Pending<()>;

    fn open(&self, zone: ZoneId) -> io::Result<()>;
    fn close(&self, zone: ZoneId) -> io::Result<()>;
    /// Moves the write pointer to the end: the zone becomes full and read-only.
    fn finish(&self, zone: ZoneId) -> Pending<()>;
    /// Discards the zone's data: it becomes empty.
    fn reset(&self, zone: ZoneId) -> Pending<()>;

    /// A short name for logs and benchmarks (e.g. "file+io_uring", "mem").
    fn describe(&self) -> String;
}
