//! The views' Prometheus metrics, computed at each scrape from `progress::view_progress` (the
//! numbers `system.views` shows). `serve` registers `ViewMetrics` with the broker's
//! `MetricsRegistry::register_collector`, so they come out under the same `yotta_` prefix.
//!
//! Series are bounded: at most `VIEWS_MAX` views, each with its topic's partitions.

use std::sync::Arc;

use broker::metrics::prometheus_client::collector::Collector;
use broker::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use broker::metrics::prometheus_client::metrics::counter::ConstCounter;
use broker::metrics::prometheus_client::metrics::gauge::ConstGauge;
use broker::metrics::prometheus_client::metrics::MetricType;

use super::progress::{PartitionProgress, ViewProgress};
use super::Materializer;

pub struct ViewMetrics {
    materializer: Arc<Materializer>,
}

impl ViewMetrics {
    pub fn new(materializer: Arc<Materializer>) -> ViewMetrics {
        ViewMetrics { materializer }
    }
}

impl std::fmt::Debug for ViewMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewMetrics")
    }
}

type ViewValue = fn(&ViewProgress) -> u64;
type PartitionValue = fn(&PartitionProgress) -> Option<f64>;

const PER_VIEW_GAUGES: [(&str, &str, ViewValue); 1] = [("view_rows", "Rows a view holds", |view| view.rows)];
const PER_VIEW_COUNTERS: [(&str, &str, ViewValue); 2] = [
    ("view_dead_letters", "Records a view could not decode or evaluate (kept in system.dead_letters)", |view| view.dead_letters),
    ("view_errors", "A view's errors: values skipped, failed reads and checkpoints, limits reached", |view| view.errors),
];
const PER_PARTITION_GAUGES: [(&str, &str, PartitionValue); 4] = [
    ("view_last_applied_offset", "The last offset a view applied, per partition of its topic (-1: none)", |p| Some(p.last_applied_offset as f64)),
    ("view_lag_records", "Records of the topic a view has not applied yet", |p| Some(p.lag as f64)),
    ("view_checkpoint_offset", "The last offset a view's last checkpoint reflects (-1: none)", |p| Some(p.checkpoint_offset as f64)),
    ("view_freshness_last_ms", "Produce acknowledged to visible in the view, the last measured", |p| p.freshness_ms_last),
];

impl Collector for ViewMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let progress = self.materializer.progress();
        for (name, help, value) in PER_VIEW_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for view in &progress {
                let labels = [("view", view.view.definition.name.as_str())];
                ConstGauge::new(value(view) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in PER_VIEW_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for view in &progress {
                let labels = [("view", view.view.definition.name.as_str())];
                ConstCounter::new(value(view)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in PER_PARTITION_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for view in &progress {
                for partition in &view.partitions {
                    let Some(value) = value(partition) else { continue };
                    let index = partition.partition.to_string();
                    let labels = [("view", view.view.definition.name.as_str()), ("partition", index.as_str())];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        // Quantiles over the view's recent window, as `system.views` reports them.
        let mut family = encoder.encode_descriptor("view_freshness_ms", "Produce acknowledged to visible in the view, quantiles of the recent window", None, MetricType::Gauge)?;
        for view in &progress {
            for partition in &view.partitions {
                let index = partition.partition.to_string();
                for (quantile, value) in [("0.5", partition.freshness_ms_p50), ("0.99", partition.freshness_ms_p99)] {
                    let Some(value) = value else { continue };
                    let labels = [("view", view.view.definition.name.as_str()), ("partition", index.as_str()), ("quantile", quantile)];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
