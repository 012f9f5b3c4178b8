//! The zone state machine shared by all backends: states, write pointers and the open/active
//! limits. Backends call it under their own lock before they start any I/O.

use super::{ZoneError, ZoneGeometry, ZoneId, ZoneInfo, ZoneState};

#[derive(Debug, Clone)]
pub struct ZoneTable {
    geometry: ZoneGeometry,
    zones: Vec<ZoneInfo>,
}

impl ZoneTable {
    /// A table with every zone empty.
    pub fn new(geometry: ZoneGeometry) -> ZoneTable {
        let write_pointers = vec![0; geometry.zone_count as usize];
        ZoneTable::recovered(geometry, &write_pointers)
    }

    /// A table from write pointers recovered after a restart. As on a ZNS device after power
    /// loss, a partially written zone comes back closed.
    pub fn recovered(geometry: ZoneGeometry, write_pointers_bytes: &[u64]) -> ZoneTable {
        assert_eq!(write_pointers_bytes.len(), geometry.zone_count as usize);
        let zones = write_pointers_bytes
            .iter()
            .enumerate()
            .map(|(index, &write_pointer_bytes)| {
                assert!(write_pointer_bytes <= geometry.zone_capacity_bytes);
                assert_eq!(write_pointer_bytes % ZoneGeometry::BLOCK_SIZE_BYTES, 0);
                let state = if write_pointer_bytes == 0 {
                    ZoneState::Empty
                } else if write_pointer_bytes == geometry.zone_capacity_bytes {
                    ZoneState::Full
                } else {
                    ZoneState::Closed
                };
                ZoneInfo {
                    id: index as ZoneId,
                    state,
                    write_pointer_bytes,
                    capacity_bytes: geometry.zone_capacity_bytes,
                }
            })
            .collect();
        ZoneTable { geometry, zones }
    }

    pub fn geometry(&self) -> ZoneGeometry {
        self.geometry
    }

    pub fn zones(&self) -> &[ZoneInfo] {
        &self.zones
    }

    pub fn zone(&self, zone: ZoneId) -> Result<ZoneInfo, ZoneError> {
        self.zones
            .get(zone as usize)
            .copied()
            .ok_or(ZoneError::NoSuchZone {
                zone,
                zone_count: self.geometry.zone_count,
            })
    }

    pub fn open_count(&self) -> u32 {
        self.zones
            .iter()
            .filter(|z| z.state == ZoneState::Open)
            .count() as u32
    }

    pub fn active_count(&self) -> u32 {
        self.zones
            .iter()
            .filter(|z| matches!(z.state, ZoneState::Open | ZoneState::Closed))
            .count() as u32
    }

    fn zone_mut(&mut self, zone: ZoneId) -> Result<&mut ZoneInfo, ZoneError> {
        let zone_count = self.geometry.zone_count;
        self.zones
            .get_mut(zone as usize)
            .ok_or(ZoneError::NoSuchZone { zone, zone_count })
    }

    /// Moves an empty or closed zone to open, within the limits.
    fn make_open(&mut self, zone: ZoneId, operation: &'static str) -> Result<(), ZoneError> {
        let state = self.zone(zone)?.state;
        match state {
            ZoneState::Open => return Ok(()),
            ZoneState::Full => {
                return Err(ZoneError::InvalidTransition {
                    zone,
                    state,
                    operation,
                })
            }
            ZoneState::Empty | ZoneState::Closed => {}
        }
        if self.open_count() >= self.geometry.max_open_zones {
            return Err(ZoneError::TooManyOpenZones {
                zone,
                max_open_zones: self.geometry.max_open_zones,
            });
        }
        if state == ZoneState::Empty && self.active_count() >= self.geometry.max_active_zones {
            return Err(ZoneError::TooManyActiveZones {
                zone,
                max_active_zones: self.geometry.max_active_zones,
            });
        }
        self.zone_mut(zone)?.state = ZoneState::Open;
        Ok(())
    }

    /// Accepts a write of `len_bytes` at `offset_bytes`: checks alignment, the write pointer
    /// and capacity, opens the zone implicitly and advances the write pointer. A zone written
    /// to its capacity becomes full.
    pub fn accept_write(
        &mut self,
        zone: ZoneId,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> Result<(), ZoneError> {
        let info = self.zone(zone)?;
        let block = ZoneGeometry::BLOCK_SIZE_BYTES;
        if offset_bytes % block != 0 || len_bytes % block != 0 || len_bytes == 0 {
            return Err(ZoneError::Unaligned {
                zone,
                offset_bytes,
                len_bytes,
            });
        }
        if info.state == ZoneState::Full {
            return Err(ZoneError::InvalidTransition {
                zone,
                state: info.state,
                operation: "write",
            });
        }
        if offset_bytes != info.write_pointer_bytes {
            return Err(ZoneError::NotAtWritePointer {
                zone,
                offset_bytes,
                write_pointer_bytes: info.write_pointer_bytes,
            });
        }
        if offset_bytes + len_bytes > info.capacity_bytes {
            return Err(ZoneError::BeyondCapacity {
                zone,
                offset_bytes,
                len_bytes,
                capacity_bytes: info.capacity_bytes,
            });
        }
        self.make_open(zone, "write")?;
        let entry = self.zone_mut(zone)?;
        entry.write_pointer_bytes += len_bytes;
        if entry.write_pointer_bytes == entry.capacity_bytes {
            entry.state = ZoneState::Full;
        }
        Ok(())
    }

    /// Checks that a read lies below the write pointer and is block aligned.
    pub fn check_read(
        &self,
        zone: ZoneId,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> Result<(), ZoneError> {
        let info = self.zone(zone)?;
        let block = ZoneGeometry::BLOCK_SIZE_BYTES;
        if offset_bytes % block != 0 || len_bytes % block != 0 {
            return Err(ZoneError::Unaligned {
                zone,
                offset_bytes,
                len_bytes,
            });
        }
        if offset_bytes + len_bytes > info.write_pointer_bytes {
            return Err(ZoneError::ReadBeyondWritePointer {
                zone,
                offset_bytes,
                len_bytes,
                write_pointer_bytes: info.write_pointer_bytes,
            });
        }
        Ok(())
    }

    /// Explicit open (reserves an open slot before writing).
    pub fn open(&mut self, zone: ZoneId) -> Result<(), ZoneError> {
        self.make_open(zone, "open")
    }

    /// Releases the open slot; a zone with data stays active (closed), an unwritten one is empty.
    pub fn close(&mut self, zone: ZoneId) -> Result<(), ZoneError> {
        let entry = self.zone_mut(zone)?;
        match entry.state {
            ZoneState::Open => {
                entry.state = if entry.write_pointer_bytes == 0 {
                    ZoneState::Empty
                } else {
                    ZoneState::Closed
                };
                Ok(())
            }
            ZoneState::Closed => Ok(()),
            state => Err(ZoneError::InvalidTransition {
                zone,
                state,
                operation: "close",
            }),
        }
    }

    /// Makes the zone full. Returns the write pointer it had (backends persist the change).
    pub fn finish(&mut self, zone: ZoneId) -> Result<u64, ZoneError> {
        let entry = self.zone_mut(zone)?;
        let previous = entry.write_pointer_bytes;
        entry.state = ZoneState::Full;
        entry.write_pointer_bytes = entry.capacity_bytes;
        Ok(previous)
    }

    /// Makes the zone empty.
    pub fn reset(&mut self, zone: ZoneId) -> Result<(), ZoneError> {
        let entry = self.zone_mut(zone)?;
        entry.state = ZoneState::Empty;
        entry.write_pointer_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> ZoneGeometry {
        ZoneGeometry {
            zone_size_bytes: 16384,
            zone_capacity_bytes: 12288,
            zone_count: 4,
            max_open_zones: 1,
            max_active_zones: 2,
        }
    }

    #[test]
    fn writes_only_at_write_pointer() {
        let mut table = ZoneTable::new(geometry());
        table.accept_write(0, 0, 4096).unwrap();
        assert!(matches!(
            table.accept_write(0, 0, 4096),
            Err(ZoneError::NotAtWritePointer { .. })
        ));
        assert!(matches!(
            table.accept_write(0, 8192, 4096),
            Err(ZoneError::NotAtWritePointer { .. })
        ));
        assert!(matches!(
            table.accept_write(0, 4096, 100),
            Err(ZoneError::Unaligned { .. })
        ));
        assert!(matches!(
            table.accept_write(0, 4096, 12288),
            Err(ZoneError::BeyondCapacity { .. })
        ));
        table.accept_write(0, 4096, 8192).unwrap();
        assert_eq!(table.zone(0).unwrap().state, ZoneState::Full);
        assert!(matches!(
            table.accept_write(0, 12288, 4096),
            Err(ZoneError::InvalidTransition { .. })
        ));
    }

    #[test]
    fn open_and_active_limits() {
        let mut table = ZoneTable::new(geometry());
        table.accept_write(0, 0, 4096).unwrap();
        assert!(matches!(
            table.accept_write(1, 0, 4096),
            Err(ZoneError::TooManyOpenZones { .. })
        ));
        table.close(0).unwrap();
        assert_eq!(table.zone(0).unwrap().state, ZoneState::Closed);
        table.accept_write(1, 0, 4096).unwrap();
        table.close(1).unwrap();
        // Two closed zones use both active slots: a third zone cannot start.
        assert!(matches!(
            table.accept_write(2, 0, 4096),
            Err(ZoneError::TooManyActiveZones { .. })
        ));
        // But a closed one can be reopened and written.
        table.accept_write(0, 4096, 4096).unwrap();
        table.finish(0).unwrap();
        // Zone 0 full frees its slots: zone 1 closed is the only active zone, so zone 2 may start.
        table.accept_write(2, 0, 4096).unwrap();
        assert_eq!((table.open_count(), table.active_count()), (1, 2));
    }

    #[test]
    fn reset_and_recovery_states() {
        let table = ZoneTable::recovered(geometry(), &[0, 4096, 12288, 0]);
        let states: Vec<_> = table.zones().iter().map(|z| z.state).collect();
        assert_eq!(
            states,
            vec![
                ZoneState::Empty,
                ZoneState::Closed,
                ZoneState::Full,
                ZoneState::Empty
            ]
        );
        let mut table = table;
        table.reset(1).unwrap();
        assert_eq!(
            table.zone(1).unwrap(),
            ZoneInfo {
                id: 1,
                state: ZoneState::Empty,
                write_pointer_bytes: 0,
                capacity_bytes: 12288
            }
        );
        assert!(table.check_read(2, 8192, 4096).is_ok());
        assert!(table.check_read(3, 0, 4096).is_err());
    }
}
