//! Opening a data directory: the zoned device file inside it and the partition logs on it.
//! One place that knows the layout, used by `serve`, the benchmarks and the crash tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log::{LogConfig, LogError, LogStore, Recovered};
use crate::uring::IoBackendChoice;
use crate::zone::file::FileZonedDevice;
use crate::zone::{ZoneGeometry, ZonedDevice};

/// The device file's name inside the data directory.
pub const DEVICE_FILE_NAME: &str = "zones.img";

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Used when the device file is created; an existing file keeps the geometry it was made with.
    pub geometry: ZoneGeometry,
    pub io: IoBackendChoice,
    pub log: LogConfig,
}

impl StorageConfig {
    /// Defaults: 64 MiB zones, 128 of them (8 GiB preallocated), 14 open zones as on common ZNS
    /// drives, and every zone allowed to be active because the emulated device has no such
    /// hardware limit (see `log::allocator` for why active zones bound the partition count).
    pub fn new(data_dir: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            data_dir: data_dir.into(),
            geometry: ZoneGeometry {
                zone_size_bytes: 64 << 20,
                zone_capacity_bytes: 64 << 20,
                zone_count: 128,
                max_open_zones: 14,
                max_active_zones: 128,
            },
            io: IoBackendChoice::Auto,
            log: LogConfig::default(),
        }
    }

    pub fn device_path(&self) -> PathBuf {
        self.data_dir.join(DEVICE_FILE_NAME)
    }
}

/// Opens (creating if needed) the data directory's device and recovers its logs.
pub async fn open(config: &StorageConfig) -> Result<(Arc<FileZonedDevice>, Recovered), LogError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let device = Arc::new(open_device(&config.device_path(), config)?);
    let dyn_device: Arc<dyn ZonedDevice> = device.clone();
    let recovered = LogStore::open(dyn_device, config.log.clone()).await?;
    Ok((device, recovered))
}

fn open_device(path: &Path, config: &StorageConfig) -> std::io::Result<FileZonedDevice> {
    if path.exists() {
        FileZonedDevice::open(path, config.io)
    } else {
        FileZonedDevice::create(path, config.geometry, config.io)
    }
}
