//! A view's progress on each partition of its topic: what `system.views` shows and `/metrics`
//! exports. One computation, so the table and the metrics never disagree.

use std::sync::Arc;

use broker::cluster::Cluster;

use super::ViewShared;

#[derive(Clone, Debug, PartialEq)]
pub struct PartitionProgress {
    pub partition: i32,
    /// The last offset applied; -1 before any.
    pub last_applied_offset: i64,
    pub high_watermark: i64,
    /// Records not applied yet; never negative.
    pub lag: i64,
    /// The last offset the last checkpoint reflects; -1 before any.
    pub checkpoint_offset: i64,
    pub freshness_ms_last: Option<f64>,
    pub freshness_ms_p50: Option<f64>,
    pub freshness_ms_p99: Option<f64>,
}

#[derive(Clone)]
pub struct ViewProgress {
    pub view: Arc<ViewShared>,
    pub rows: u64,
    pub dead_letters: u64,
    pub errors: u64,
    /// The topic's partitions now (none if the topic is gone); a partition the view has not
    /// reached yet shows nothing applied.
    pub partitions: Vec<PartitionProgress>,
}

/// `view`'s progress against the topic's high watermarks. Partition locks are taken (briefly,
/// one at a time) before the view's status lock, never while holding it.
pub fn view_progress(cluster: &Cluster, view: &Arc<ViewShared>) -> ViewProgress {
    let rows = view.store.snapshot().live_rows as u64;
    let marks: Vec<(i32, i64)> = match cluster.topic(&view.definition.topic) {
        // A view reads committed data: it is caught up at the last stable offset.
        Some(topic) => topic.partitions().iter().filter_map(|p| p.reader().committed_bounds().ok().map(|bounds| (p.index, bounds.high_watermark))).collect(),
        None => Vec::new(),
    };
    let status = view.lock_status();
    let partitions = marks
        .into_iter()
        .map(|(partition, high_watermark)| {
            let progress = status.partitions.get(&partition);
            let next_offset = progress.map_or(0, |progress| progress.next_offset);
            PartitionProgress {
                partition,
                last_applied_offset: next_offset - 1,
                high_watermark,
                lag: (high_watermark - next_offset).max(0),
                checkpoint_offset: progress.map_or(-1, |progress| progress.checkpoint_offset - 1).max(-1),
                freshness_ms_last: progress.and_then(|progress| progress.freshness.last_ms()),
                freshness_ms_p50: progress.and_then(|progress| progress.freshness.quantile_ms(0.5)),
                freshness_ms_p99: progress.and_then(|progress| progress.freshness.quantile_ms(0.99)),
            }
        })
        .collect();
    ViewProgress {
        view: view.clone(),
        rows,
        dead_letters: status.dead_letters.total,
        errors: status.errors,
        partitions,
    }
}
