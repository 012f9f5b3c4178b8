//! Prometheus metrics: the process's counters, gauges and histograms (`global()`), updated
//! where things happen, and `MetricsRegistry`, which encodes them together with what is
//! computed at scrape time (zones, consumer lag) in the Prometheus text format for
//! `GET /metrics`.
//!
//! Hot paths only touch atomics (`prometheus-client`'s counters and gauges), a histogram's
//! short lock (the crate's), and arrays indexed by API: no allocation per request. Label sets
//! are bounded: API keys by the version table, error codes by the protocol's `i16` codes that
//! the handlers answer with, zone states by `ZoneState`, consumer lag by
//! `cluster::LAG_SERIES_MAX`.
//!
//! Other crates add their own scrape-time metrics (the views' freshness and errors) with
//! `MetricsRegistry::register_collector` before the registry is served; `prometheus_client` is
//! re-exported so they implement its `Collector` with the same version.

mod cluster;
mod errors;
mod kafka;

use std::sync::{Arc, LazyLock};

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use kafka::KafkaMetrics;

use crate::cluster::Cluster;

/// Every metric prefixed with this (`yotta_kafka_requests_total`).
pub const PREFIX: &str = "yotta";

/// Latency histogram buckets in seconds: 100 µs doubling up to ~13 s (a long-polling fetch
/// waits up to its max wait, 500 ms by default; an fsync takes 0.1-100 ms on real devices).
pub(crate) fn latency_buckets_seconds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 18)
}

/// The process's metrics. One set per process, like the process itself: a broker serves one
/// data directory, and tests that start several in one process share the counters.
#[derive(Debug)]
pub struct Metrics {
    /// Requests, errors and latency per Kafka API.
    pub kafka: KafkaMetrics,
    /// Record batch bytes and records appended by Produce (after validation, before the flush;
    /// an idempotent producer's resend, which appends nothing, is not counted).
    pub produce_bytes: Counter,
    pub produce_records: Counter,
    /// Record batch bytes and records answered by Fetch.
    pub fetch_bytes: Counter,
    pub fetch_records: Counter,
    /// Kafka connections open now, accepted, and refused by the connection limit.
    pub connections: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    /// Storage requests (writes, reads, syncs) handed to the storage threads and not yet
    /// completed: the io_uring queue depth (or the pwritev backend's queue).
    pub storage_queue_depth: Gauge,
    /// Time from issuing an fsync/fdatasync to its completion, in seconds.
    pub fsync_latency_seconds: Histogram,
    /// Zones scanned and bytes read by start-up recovery.
    pub recovery_zones_scanned: Counter,
    pub recovery_bytes_scanned: Counter,
    /// Reclaimer passes that reset dead zones, and appends refused because no zone was free
    /// (KAFKA_STORAGE_ERROR at once).
    pub zones_reclaimed: Counter,
    pub zones_finished_unsummarized: Counter,
    pub appends_refused_storage_full: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    kafka: KafkaMetrics::new(),
    produce_bytes: Counter::default(),
    produce_records: Counter::default(),
    fetch_bytes: Counter::default(),
    fetch_records: Counter::default(),
    connections: Gauge::default(),
    connections_accepted: Counter::default(),
    connections_refused: Counter::default(),
    storage_queue_depth: Gauge::default(),
    fsync_latency_seconds: Histogram::new(latency_buckets_seconds()),
    recovery_zones_scanned: Counter::default(),
    recovery_bytes_scanned: Counter::default(),
    zones_reclaimed: Counter::default(),
    zones_finished_unsummarized: Counter::default(),
    appends_refused_storage_full: Counter::default(),
});

impl Metrics {
    /// Counts a Produce batch that was appended.
    pub fn count_produced(&self, batch_bytes: usize, records: i32) {
        self.produce_bytes.inc_by(batch_bytes as u64);
        self.produce_records.inc_by(u64::try_from(records).unwrap_or(0));
    }

    /// Counts a Fetch answer's batches (each partition's, as segments of whole batches); the
    /// record counts come from the batch headers.
    pub fn count_fetched(&self, partitions: &[Vec<bytes::Bytes>]) {
        let (mut bytes, mut records) = (0u64, 0u64);
        for segment in partitions.iter().flatten() {
            bytes += segment.len() as u64;
            for (header, _) in crate::log::batch::BatchIter::new(segment).map_while(Result::ok) {
                records += u64::try_from(header.record_count).unwrap_or(0);
            }
        }
        self.fetch_bytes.inc_by(bytes);
        self.fetch_records.inc_by(records);
    }
}

/// The process's metrics, for every layer to update.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// What `GET /metrics` encodes: the process's metrics, the cluster's scrape-time metrics, and
/// every collector registered by other crates.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    pub fn new(cluster: Arc<Cluster>) -> MetricsRegistry {
        let metrics = global();
        let mut registry = Registry::with_prefix(PREFIX);
        // Counters and histograms are handles to the same atomics: registering clones them.
        registry.register("produce_bytes", "Record batch bytes appended by Produce", metrics.produce_bytes.clone());
        registry.register("produce_records", "Records appended by Produce", metrics.produce_records.clone());
        registry.register("fetch_bytes", "Record batch bytes answered by Fetch", metrics.fetch_bytes.clone());
        registry.register("fetch_records", "Records answered by Fetch", metrics.fetch_records.clone());
        registry.register("kafka_connections", "Kafka connections open", metrics.connections.clone());
        registry.register("kafka_connections_accepted", "Kafka connections accepted", metrics.connections_accepted.clone());
        registry.register("kafka_connections_refused", "Kafka connections refused by the connection limit", metrics.connections_refused.clone());
        registry.register(
            "storage_queue_depth",
            "Storage requests (writes, reads, syncs) queued or in flight on the io_uring (or pwritev) storage threads",
            metrics.storage_queue_depth.clone(),
        );
        registry.register(
            "storage_fsync_latency_seconds",
            "Time from issuing an fsync/fdatasync to its completion",
            metrics.fsync_latency_seconds.clone(),
        );
        registry.register("recovery_zones_scanned", "Zones scanned by start-up recovery", metrics.recovery_zones_scanned.clone());
        registry.register("recovery_bytes_scanned", "Bytes read by start-up recovery", metrics.recovery_bytes_scanned.clone());
        registry.register("zones_reclaimed", "Reclaimer passes that reset zones with nothing live", metrics.zones_reclaimed.clone());
        registry.register("zones_finished_unsummarized", "Sealed zones finished without their summary because active zones were used up (recovery scans them)", metrics.zones_finished_unsummarized.clone());
        registry.register("appends_refused_storage_full", "Appends refused at once because no zone was free", metrics.appends_refused_storage_full.clone());
        registry.register_collector(Box::new(kafka::KafkaCollector));
        registry.register_collector(Box::new(cluster::ClusterCollector::new(cluster)));
        MetricsRegistry { registry }
    }

    /// Adds metrics computed at each scrape (by another crate: the views). Encoded after the
    /// broker's, under the same `yotta_` prefix.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Everything, in the Prometheus text exposition format (OpenMetrics flavour, which
    /// Prometheus reads).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The content type of `MetricsRegistry::encode`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
