//! Partition logs on shared zones: the on-zone format, zone streams, per-partition indexes,
//! the zone allocator and reclaimer, reads, flushes, the partition log and recovery.

mod allocator;
pub mod batch;
mod cache;
pub mod control;
mod flush;
mod format;
mod gc;
mod index;
mod partition;
pub mod producer_state;
mod read;
mod reclaim;
pub mod records;
mod reservation;
mod seals;
mod store;
mod stream;
pub mod txn_index;

pub use allocator::{ZoneAllocator, ZoneUse};
pub use cache::{CachedPartition, ReadCache};
pub use flush::Flush;
pub use format::FRAME_HEADER_BYTES;
pub use partition::{
    AppendInfo, FlushTarget, LogConfig, LogError, PartitionId, PartitionLog, READAHEAD_BYTES_MAX,
    RECENT_CACHE_BYTES_DEFAULT,
};
pub use read::{ReadPlan, Readahead, TimestampMatch, TimestampPlan};
pub use store::{LogStore, Recovered, RecoveryReport};
pub use stream::{Lifetime, Streams};
