//! `ReadCache`: recently appended record batches of every partition of a store, kept in memory
//! so that consumers near the tail never touch the device. O_DIRECT bypasses the kernel's page
//! cache, which is what serves such reads in Kafka; this is its bounded replacement.
//!
//! One byte budget for all partitions together; the batches appended first are evicted first
//! (whichever partition they belong to). Each partition's cached batches are a contiguous
//! suffix of its log (appends add at the end; eviction, retention and delete-records remove at
//! the front; a batch that cannot be cached empties its partition's entry), so a read that
//! starts inside the cached range is answered entirely from memory.
//!
//! The cache holds batches as appended, durable or not: readers pass the high watermark and get
//! only batches below it. Locking: a partition log calls in while holding its partition's lock
//! (partition, then cache; never the other way), and the cache lock is held for memory work
//! only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// A cached batch: its offsets and its bytes (shared with whoever appended or reads it).
struct Cached {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
}

pub struct ReadCache {
    bytes_max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    bytes: usize,
    next_key: u64,
    /// Per partition, its cached batches in offset order.
    partitions: HashMap<u64, VecDeque<Cached>>,
    /// (partition, base offset) of every batch in the order cached: the eviction order. Entries
    /// of batches already removed otherwise (retention, a dropped partition) are skipped when
    /// reached, and purged when they outnumber the live ones.
    order: VecDeque<(u64, i64)>,
    batches: usize,
}

impl ReadCache {
    /// A cache of at most `bytes_max` bytes of batches (0: nothing is cached).
    pub fn new(bytes_max: usize) -> Arc<ReadCache> {
        Arc::new(ReadCache { bytes_max, inner: Mutex::new(Inner::default()) })
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes of batches cached now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A partition's handle; its batches leave the cache when it is dropped.
    pub fn partition(self: &Arc<ReadCache>) -> CachedPartition {
        let mut inner = self.lock();
        let key = inner.next_key;
        inner.next_key += 1;
        CachedPartition { cache: self.clone(), key }
    }
}

impl Inner {
    fn pop_front(&mut self, key: u64) -> Option<Cached> {
        let batches = self.partitions.get_mut(&key)?;
        let cached = batches.pop_front()?;
        if batches.is_empty() {
            self.partitions.remove(&key);
        }
        self.bytes -= cached.bytes.len();
        self.batches -= 1;
        Some(cached)
    }

    fn remove_partition(&mut self, key: u64) {
        if let Some(batches) = self.partitions.remove(&key) {
            self.bytes -= batches.iter().map(|cached| cached.bytes.len()).sum::<usize>();
            self.batches -= batches.len();
        }
        self.purge_order_if_stale();
    }

    /// Evicts the oldest batches until the cache is within `bytes_max`.
    fn evict_to(&mut self, bytes_max: usize) {
        while self.bytes > bytes_max {
            let Some((key, base_offset)) = self.order.pop_front() else { break };
            // The entry is live only if it is still its partition's oldest batch (removals are
            // always of a partition's oldest batches, so an entry that is not is stale).
            let live = self.partitions.get(&key).and_then(|batches| batches.front()).is_some_and(|front| front.base_offset == base_offset);
            if live {
                self.pop_front(key);
            }
        }
        self.purge_order_if_stale();
    }

    /// Keeps the eviction order from growing with entries of removed batches.
    fn purge_order_if_stale(&mut self) {
        if self.order.len() <= 2 * self.batches + 1024 {
            return;
        }
        let partitions = &self.partitions;
        self.order.retain(|(key, base_offset)| {
            partitions.get(key).and_then(|batches| batches.front()).is_some_and(|front| front.base_offset <= *base_offset)
        });
    }
}

/// One partition's share of a `ReadCache`.
pub struct CachedPartition {
    cache: Arc<ReadCache>,
    key: u64,
}

impl CachedPartition {
    /// Caches a batch just appended (offsets `base_offset..=last_offset`, after every batch
    /// cached for this partition), evicting the oldest batches of any partition to make room. A
    /// batch larger than the whole cache is not cached, and then neither is anything before it
    /// (the cached batches must stay contiguous).
    pub fn insert(&self, base_offset: i64, last_offset: i64, bytes: Bytes) {
        let bytes_max = self.cache.bytes_max;
        let mut inner = self.cache.lock();
        if bytes.len() > bytes_max {
            inner.remove_partition(self.key);
            return;
        }
        if let Some(last) = inner.partitions.get(&self.key).and_then(|batches| batches.back()) {
            debug_assert!(last.last_offset < base_offset, "batches are cached in offset order");
        }
        inner.bytes += bytes.len();
        inner.batches += 1;
        inner.partitions.entry(self.key).or_default().push_back(Cached { base_offset, last_offset, bytes });
        inner.order.push_back((self.key, base_offset));
        inner.evict_to(bytes_max);
    }

    /// Whole batches from the one containing `offset`, below `high_watermark`, up to `max_bytes`
    /// (the first whatever its size), if the cache holds `offset`; `None` if the read must go to
    /// the device.
    pub fn read(&self, offset: i64, high_watermark: i64, max_bytes: usize) -> Option<Vec<Bytes>> {
        let inner = self.cache.lock();
        let batches = inner.partitions.get(&self.key)?;
        if batches.front()?.base_offset > offset {
            return None;
        }
        let start = batches.partition_point(|cached| cached.last_offset < offset);
        if start == batches.len() {
            return None;
        }
        let mut read = Vec::new();
        let mut total_bytes = 0usize;
        for cached in batches.range(start..) {
            if cached.base_offset >= high_watermark || (!read.is_empty() && total_bytes + cached.bytes.len() > max_bytes) {
                break;
            }
            total_bytes += cached.bytes.len();
            read.push(cached.bytes.clone());
        }
        Some(read)
    }

    /// Drops the batches that end below `offset` (retention, delete-records).
    pub fn remove_below(&self, offset: i64) {
        let mut inner = self.cache.lock();
        while inner.partitions.get(&self.key).and_then(|batches| batches.front()).is_some_and(|front| front.last_offset < offset) {
            inner.pop_front(self.key);
        }
        inner.purge_order_if_stale();
    }

    /// Drops every batch of this partition.
    pub fn clear(&self) {
        self.cache.lock().remove_partition(self.key);
    }

    /// Bytes cached for this partition.
    pub fn bytes(&self) -> usize {
        let inner = self.cache.lock();
        inner.partitions.get(&self.key).map_or(0, |batches| batches.iter().map(|cached| cached.bytes.len()).sum())
    }

    /// The offsets range cached for this partition, if any.
    pub fn range(&self) -> Option<(i64, i64)> {
        let inner = self.cache.lock();
        let batches = inner.partitions.get(&self.key)?;
        Some((batches.front()?.base_offset, batches.back()?.last_offset))
    }
}

impl Drop for CachedPartition {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn evicts_oldest_first_across_partitions_by_bytes() {
        let cache = ReadCache::new(1000);
        let a = cache.partition();
        let b = cache.partition();
        a.insert(0, 9, batch(300));
        b.insert(0, 0, batch(300));
        a.insert(10, 19, batch(300));
        assert_eq!(cache.bytes(), 900);
        // 1200 > 1000: a's first batch (the oldest overall) goes.
        b.insert(1, 1, batch(300));
        assert_eq!(cache.bytes(), 900);
        assert_eq!(a.range(), Some((10, 19)));
        assert_eq!(b.range(), Some((0, 1)));
        assert_eq!(a.read(5, 100, 10_000), None, "evicted: the device serves it");
        assert_eq!(a.read(12, 100, 10_000).map(|read| read.len()), Some(1));
        // Evicting several to fit a large one.
        a.insert(20, 20, batch(900));
        assert_eq!(cache.bytes(), 900);
        assert_eq!(b.range(), None);
        assert_eq!(a.range(), Some((20, 20)));
        // Larger than the whole cache: not cached, and the partition's entry is emptied so
        // that what stays cached is contiguous.
        a.insert(21, 21, batch(1001));
        assert_eq!(cache.bytes(), 0);
        assert_eq!(a.range(), None);
        a.insert(22, 22, batch(10));
        assert_eq!(a.read(21, 100, 10_000), None);
        assert_eq!(a.read(22, 100, 10_000).map(|read| read.len()), Some(1));
    }

    #[test]
    fn reads_respect_high_watermark_and_budget() {
        let cache = ReadCache::new(1 << 20);
        let p = cache.partition();
        for i in 0..10i64 {
            p.insert(i * 10, i * 10 + 9, batch(100));
        }
        // Beyond the high watermark nothing is served, and reads from the middle of a batch
        // start with that batch.
        assert_eq!(p.read(15, 30, 10_000).unwrap().len(), 2);
        assert_eq!(p.read(15, 10, 10_000).unwrap().len(), 0);
        // The first batch is served whatever the budget; then only what fits.
        assert_eq!(p.read(0, 100, 1).unwrap().len(), 1);
        assert_eq!(p.read(0, 100, 250).unwrap().len(), 2);
        assert_eq!(p.read(0, 100, 300).unwrap().len(), 3);
        assert_eq!(p.read(100, 200, 300), None, "past the cached batches");
    }

    #[test]
    fn retention_and_drop_free_the_bytes_and_stale_entries_are_purged() {
        let cache = ReadCache::new(1 << 30);
        let p = cache.partition();
        for i in 0..5000i64 {
            p.insert(i, i, batch(10));
            if i % 10 == 9 {
                p.remove_below(i - 5);
            }
        }
        assert_eq!(p.range(), Some((4994, 4999)));
        assert_eq!(cache.bytes(), 60);
        assert!(cache.lock().order.len() <= 2 * 6 + 1024 + 1);
        let q = cache.partition();
        q.insert(0, 0, batch(5));
        drop(p);
        assert_eq!(cache.bytes(), 5);
        assert_eq!(q.bytes(), 5);
        q.clear();
        assert_eq!(cache.bytes(), 0);
        assert!(cache.lock().partitions.is_empty());
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = ReadCache::new(0);
        let p = cache.partition();
        p.insert(0, 0, batch(1));
        assert_eq!(cache.bytes(), 0);
        assert_eq!(p.read(0, 10, 100), None);
    }
}
