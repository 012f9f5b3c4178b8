//! What the handler-level tests share: a cluster on an in-memory zoned device, reopened on the
//! same device to see what survives.
#![allow(dead_code)]

use std::sync::Arc;

use broker::cluster::{BrokerConfig, Cluster};
use broker::log::{LogConfig, LogStore};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};

/// 64 zones of 1 MiB: batches span zones, and recovery chains them.
pub fn device() -> Arc<dyn ZonedDevice> {
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 64, max_open_zones: 4, max_active_zones: 64 };
    Arc::new(MemZonedDevice::new(geometry).unwrap())
}

/// The cluster recovered from `device`.
pub async fn open(device: &Arc<dyn ZonedDevice>) -> Arc<Cluster> {
    let recovered = LogStore::open(device.clone(), LogConfig::default()).await.unwrap();
    Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap()
}
