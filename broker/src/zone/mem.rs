//! `MemZonedDevice`: a zoned device in memory, for tests. It enforces the same zone model as the
//! file backend (through `ZoneTable`), so code tested on it behaves the same on a real device.
//! `flush` is a no-op: memory is as durable as this device gets.

use std::io;
use std::sync::Mutex;

use super::{ZoneGeometry, ZoneId, ZoneInfo, ZoneTable, ZonedDevice};
use crate::buf::AlignedBuf;
use crate::pending::Pending;

pub struct MemZonedDevice {
    state: Mutex<MemState>,
}

struct MemState {
    table: ZoneTable,
    /// Written bytes of each zone (grows to the write pointer; never beyond capacity).
    data: Vec<Vec<u8>>,
}

impl MemZonedDevice {
    pub fn new(geometry: ZoneGeometry) -> io::Result<MemZonedDevice> {
        geometry
            .validate()
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        Ok(MemZonedDevice {
            state: Mutex::new(MemState {
                table: ZoneTable::new(geometry),
                data: vec![Vec::new(); geometry.zone_count as usize],
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A poisoned lock means a panic mid-update in a test; the data is still consistent
        // because every update validates before it mutates.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ZonedDevice for MemZonedDevice {
    fn geometry(&self) -> ZoneGeometry {
        self.lock().table.geometry()
    }

    fn report_zones(&self) -> Vec<ZoneInfo> {
        self.lock().table.zones().to_vec()
    }

    fn zone(&self, zone: ZoneId) -> io::Result<ZoneInfo> {
        Ok(self.lock().table.zone(zone)?)
    }

    fn write(&self, zone: ZoneId, offset_bytes: u64, buf: AlignedBuf) -> Pending<AlignedBuf> {
        let mut state = self.lock();
        if let Err(error) = state
            .table
            .accept_write(zone, offset_bytes, buf.len() as u64)
        {
            return Pending::ready(Err(error.into()));
        }
        state.data[zone as usize].extend_from_slice(&buf);
        Pending::ready(Ok(buf))
    }

    fn read_into(&self, zone: ZoneId, offset_bytes: u64, mut buf: AlignedBuf, len_bytes: usize) -> Pending<AlignedBuf> {
        let state = self.lock();
        if let Err(error) = state.table.check_read(zone, offset_bytes, len_bytes as u64) {
            return Pending::ready(Err(error.into()));
        }
        if buf.capacity() < len_bytes {
            return Pending::ready(Err(io::Error::new(io::ErrorKind::InvalidInput, "read buffer smaller than the read")));
        }
        buf.set_len(len_bytes);
        let data = &state.data[zone as usize];
        // A finished zone reads zeros past the data it had, as the file backend does.
        let start = (offset_bytes as usize).min(data.len());
        let end = (offset_bytes as usize + len_bytes).min(data.len());
        buf[..end - start].copy_from_slice(&data[start..end]);
        buf[end - start..].fill(0);
        Pending::ready(Ok(buf))
    }

    fn flush(&self) -> Pending<()> {
        Pending::ready(Ok(()))
    }

    fn open(&self, zone: ZoneId) -> io::Result<()> {
        Ok(self.lock().table.open(zone)?)
    }

    fn close(&self, zone: ZoneId) -> io::Result<()> {
        Ok(self.lock().table.close(zone)?)
    }

    fn finish(&self, zone: ZoneId) -> Pending<()> {
        Pending::ready(
            self.lock()
                .table
                .finish(zone)
                .map(|_| ())
                .map_err(Into::into),
        )
    }

    fn reset(&self, zone: ZoneId) -> Pending<()> {
        let mut state = self.lock();
        let result = state.table.reset(zone);
        if result.is_ok() {
            state.data[zone as usize] = Vec::new();
        }
        Pending::ready(result.map_err(Into::into))
    }

    fn describe(&self) -> String {
        "mem".to_string()
    }
}
