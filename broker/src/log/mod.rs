//! Partition logs on zones: the on-zone format, indexes, the zone allocator, the partition log
//! and recovery.

mod allocator;
pub mod batch;
mod cache;
mod format;
mod index;
mod partition;
pub mod producer_state;
pub mod records;
mod store;

pub use allocator::ZoneAllocator;
pub use cache::{CachedPartition, ReadCache};
pub use partition::{
    AppendInfo, Flush, LogConfig, LogError, RECENT_CACHE_BYTES_DEFAULT, PartitionId, PartitionLog, ReadPlan, TimestampMatch,
    TimestampPlan,
};
pub use store::{LogStore, Recovered, RecoveryReport};
