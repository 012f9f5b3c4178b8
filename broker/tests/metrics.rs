//! `MetricsRegistry` over a real cluster on an in-memory zoned device: the scrape-time zone
//! metrics, and a collector registered from outside the broker (how the views plug theirs in).

use std::sync::Arc;

use broker::cluster::{BrokerConfig, Cluster};
use broker::log::{LogConfig, LogStore};
use broker::metrics::prometheus_client::collector::Collector;
use broker::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use broker::metrics::prometheus_client::metrics::gauge::ConstGauge;
use broker::metrics::prometheus_client::metrics::MetricType;
use broker::metrics::MetricsRegistry;
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};

/// Stands in for the views' collector: one gauge per view, computed at scrape time.
#[derive(Debug)]
struct ViewsCollector {
    views: Vec<(&'static str, i64)>,
}

impl Collector for ViewsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor("view_lag_records", "Records behind the log, per view", None, MetricType::Gauge)?;
        for (view, lag) in &self.views {
            ConstGauge::new(*lag).encode(family.encode_family(&[("view", *view)])?)?;
        }
        Ok(())
    }
}

async fn cluster() -> Arc<Cluster> {
    let geometry = ZoneGeometry { zone_size_bytes: 1 << 20, zone_capacity_bytes: 1 << 20, zone_count: 16, max_open_zones: 4, max_active_zones: 16 };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap()
}

fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|line| line.starts_with(series) && line[series.len()..].starts_with(' ')).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len() + 1..].parse().unwrap()
}

#[tokio::test]
async fn zones_and_an_outside_collector_are_encoded() {
    let cluster = cluster().await;
    cluster.create_topic("t", 2, &Default::default(), false).await.unwrap().unwrap();
    let mut registry = MetricsRegistry::new(cluster.clone());
    registry.register_collector(Box::new(ViewsCollector { views: vec![("orders_by_region", 7), ("clicks", 0)] }));
    let text = registry.encode().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let states = ["empty", "open", "closed", "full"];
    let zones: f64 = states.iter().map(|state| sample(&text, &format!("yotta_zones{{state=\"{state}\"}}"))).sum();
    assert_eq!(zones, 16.0);
    assert_eq!(sample(&text, "yotta_zone_capacity_bytes"), 16.0 * (1 << 20) as f64);
    let fill = sample(&text, "yotta_zone_fill_ratio");
    assert_eq!(fill, sample(&text, "yotta_zone_written_bytes") / sample(&text, "yotta_zone_capacity_bytes"));
    assert_eq!(sample(&text, "yotta_view_lag_records{view=\"orders_by_region\"}"), 7.0);
    assert_eq!(sample(&text, "yotta_view_lag_records{view=\"clicks\"}"), 0.0);
    // Every served API has its request counter, even before any request.
    assert!(text.contains("yotta_kafka_requests_total{api=\"ConsumerGroupDescribe\"}"), "{text}");
}
