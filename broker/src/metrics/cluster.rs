//! Metrics computed from the cluster at scrape time: zone states and fill, and consumer lag per
//! group, topic and partition (committed offset against the high watermark, as
//! `system.consumer_groups` reports it).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::cluster::Cluster;
use crate::zone::ZoneState;

/// The most consumer lag series one scrape reports. Groups, topics and partitions are created
/// by clients, so their product is input-controlled; Prometheus copes with tens of thousands
/// of series per target, and past this the rest is counted in `consumer_lag_series_dropped`
/// instead (the SQL table `system.consumer_groups` still has them all).
pub const LAG_SERIES_MAX: usize = 10_000;

const ZONE_STATES: [ZoneState; 4] = [ZoneState::Empty, ZoneState::Open, ZoneState::Closed, ZoneState::Full];

pub(super) struct ClusterCollector {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCollector")
    }
}

impl ClusterCollector {
    pub(super) fn new(cluster: Arc<Cluster>) -> ClusterCollector {
        ClusterCollector { cluster }
    }

    fn encode_zones(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let zones = self.cluster.store().device().report_zones();
        let mut counts = [0u64; ZONE_STATES.len()];
        let (mut written_bytes, mut capacity_bytes) = (0u64, 0u64);
        for zone in &zones {
            let state = ZONE_STATES.iter().position(|state| *state == zone.state).expect("every state is listed");
            counts[state] += 1;
            written_bytes = written_bytes.saturating_add(zone.write_pointer_bytes);
            capacity_bytes = capacity_bytes.saturating_add(zone.capacity_bytes);
        }
        {
            let mut family = encoder.encode_descriptor("zones", "Zones of the device per state", None, MetricType::Gauge)?;
            for (state, count) in ZONE_STATES.iter().zip(counts) {
                let state = state.to_string();
                ConstGauge::new(count as i64).encode(family.encode_family(&[("state", state.as_str())])?)?;
            }
        }
        let bytes = [
            ("zone_written_bytes", "Bytes written in all zones (sum of write pointers)", written_bytes),
            ("zone_capacity_bytes", "Writable bytes of all zones", capacity_bytes),
        ];
        for (name, help, value) in bytes {
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let fill_ratio = if capacity_bytes == 0 { 0.0 } else { written_bytes as f64 / capacity_bytes as f64 };
        ConstGauge::new(fill_ratio).encode(encoder.encode_descriptor("zone_fill_ratio", "Bytes written over zone capacity, all zones (0 to 1)", None, MetricType::Gauge)?)?;
        self.encode_storage(encoder)
    }

    /// Storage v2: live bytes, free zones, whether data appends are refused, write amplification.
    fn encode_storage(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let allocator = self.cluster.store().allocator();
        let live_bytes: u64 = allocator.zone_uses().iter().flatten().map(|usage| usage.live_bytes).sum();
        let free = allocator.free_zone_count();
        let full = i64::from(allocator.storage_full());
        let gauges = [
            ("zone_live_bytes", "Bytes of frames some partition still holds, all zones", i64::try_from(live_bytes).unwrap_or(i64::MAX)),
            ("zones_free", "Empty zones ready for a stream", i64::try_from(free).unwrap_or(i64::MAX)),
            ("storage_full", "1 while no zone is free for data appends (produce answers KAFKA_STORAGE_ERROR until zones are reclaimed)", full),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let amplification = allocator.write_amplification();
        ConstGauge::new(amplification).encode(encoder.encode_descriptor("write_amplification", "Bytes written to zones per byte appended (zone seals and garbage collection copies included)", None, MetricType::Gauge)?)?;
        Ok(())
    }

    fn encode_lag(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copied out under the coordinator's lock, released before any partition lock is taken
        // (never both at once, as in system.consumer_groups).
        let mut committed = Vec::new();
        let mut dropped = 0usize;
        {
            let coordinator = self.cluster.groups().coordinator();
            for group in coordinator.groups() {
                for ((topic, partition), offset) in group.offsets() {
                    if committed.len() < LAG_SERIES_MAX {
                        committed.push((group.group_id.clone(), topic.clone(), *partition, offset.offset));
                    } else {
                        dropped += 1;
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "consumer_lag",
                "Records between a group's committed offset and the partition's high watermark",
                None,
                MetricType::Gauge,
            )?;
            for (group, topic, partition, offset) in &committed {
                let high_watermark = self.cluster.topic(topic).and_then(|topic| topic.partition(*partition)).and_then(|partition| partition.with_log(|log| log.high_watermark()).ok());
                // A committed offset of a deleted topic or partition has no lag to report.
                let Some(high_watermark) = high_watermark else { continue };
                let partition = partition.to_string();
                let labels = [("group", group.as_str()), ("topic", topic.as_str()), ("partition", partition.as_str())];
                // Kafka's lag: never negative.
                ConstGauge::new((high_watermark - offset).max(0)).encode(family.encode_family(&labels)?)?;
            }
        }
        ConstGauge::new(dropped as i64).encode(encoder.encode_descriptor(
            "consumer_lag_series_dropped",
            "Committed offsets left out of consumer_lag at the last scrape (beyond its series limit)",
            None,
            MetricType::Gauge,
        )?)
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_zones(&mut encoder)?;
        self.encode_lag(&mut encoder)
    }
}
