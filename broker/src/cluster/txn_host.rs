//! The cluster as the transaction coordinator's host (`txn::TxnHost`): producer ids, and the
//! markers that end a transaction in each of its partitions.

use std::sync::Arc;

use super::{complete_flush, now_ms, ApiError, Cluster, Partition};
use crate::group::GroupRecord;
use crate::log::FlushTarget;
use crate::txn::coordinator::{Markers, TxnTarget};
use crate::txn::TxnHost;

/// The coordinator epoch written into markers: one broker, one coordinator, never moved.
const COORDINATOR_EPOCH: i32 = 0;

impl TxnHost for Cluster {
    async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        Cluster::allocate_producer_id(self).await
    }

    async fn write_markers(&self, markers: &Markers) -> Result<(), ApiError> {
        let mut appended: Vec<(Arc<Partition>, FlushTarget)> = Vec::new();
        for target in &markers.targets {
            let (topic, partition) = match target {
                TxnTarget::Partition { topic, partition } => (topic, partition),
                TxnTarget::Group(group) => {
                    // The group's offsets of the transaction become committed, or are dropped.
                    let end = GroupRecord::TxnOffsetEnd { group: group.clone(), producer_id: markers.producer_id, commit: markers.commit };
                    self.groups().write(end).await?;
                    continue;
                }
            };
            let Some(partition) = self.topic(topic).and_then(|topic| topic.partition(*partition)) else {
                continue;
            };
            let flush_target = partition.with_log(|log| {
                log.append_marker(markers.producer_id, markers.producer_epoch, markers.commit, COORDINATOR_EPOCH, now_ms())?;
                log.flush_target().map_err(crate::log::LogError::Failed)
            });
            match flush_target {
                Ok(result) => appended.push((partition, result?)),
                // Deleted meanwhile: nothing is left to end there.
                Err(_) => continue,
            }
        }
        if appended.is_empty() {
            return Ok(());
        }
        let ends: Vec<(Arc<Partition>, i64)> = appended.iter().map(|(partition, target)| (partition.clone(), target.end_offset())).collect();
        let flush = FlushTarget::start(appended.into_iter().map(|(_, target)| target).collect());
        for result in complete_flush(Some(flush), ends).await {
            result?;
        }
        Ok(())
    }
}
