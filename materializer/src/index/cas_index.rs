//! `CasIndex`: for one indexed column, a `CasList` of row positions per distinct value.
//!
//! Values are found through a fixed array of buckets, each an insert-only lock-free list of
//! value entries (push at the head by CAS). Entries are never removed while the index lives: a
//! value whose positions are all deleted keeps an empty list, which costs one entry and lets
//! readers hold `&CasList` without reclamation concerns. The number of distinct values is
//! bounded (`values_max`); past it, inserts of new values fail with `IndexFull`, so a
//! high-cardinality column cannot exhaust memory (the view then answers without the index).
//!
//! Moving a row from one value to another (an upsert that changes the indexed column) inserts
//! the position under the new value before removing it from the old one: a concurrent reader
//! may see the row under both values for a moment, never under neither. Index answers are
//! therefore candidates, and the query re-checks its predicate on the row (it does anyway:
//! the filter stays in the plan).

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use super::cas_list::CasList;

/// The index has reached `values_max` distinct values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the index holds its maximum of {values_max} distinct values")]
pub struct IndexFull {
    pub values_max: usize,
}

struct Entry<V> {
    value: V,
    positions: CasList,
    next: Atomic<Entry<V>>,
}

/// Positions per value of one column. See the module documentation.
pub struct CasIndex<V> {
    buckets: Box<[Atomic<Entry<V>>]>,
    hasher: std::collections::hash_map::RandomState,
    values: AtomicUsize,
    values_max: usize,
}

/// Bounds on bucket counts: at least one, at most 2^24 (16 Mi pointers, 128 MiB).
pub const BUCKETS_LOG2_MAX: u32 = 24;

impl<V: Hash + Eq + Send + Sync> CasIndex<V> {
    /// An empty index with 2^`buckets_log2` buckets and room for `values_max` values.
    pub fn new(buckets_log2: u32, values_max: usize) -> CasIndex<V> {
        assert!(buckets_log2 <= BUCKETS_LOG2_MAX, "buckets_log2 {buckets_log2} > {BUCKETS_LOG2_MAX}");
        CasIndex {
            buckets: (0..1usize << buckets_log2).map(|_| Atomic::null()).collect(),
            hasher: Default::default(),
            values: AtomicUsize::new(0),
            values_max,
        }
    }

    /// Distinct values seen (including values whose lists are now empty).
    pub fn values_len(&self) -> usize {
        self.values.load(Ordering::Relaxed)
    }

    /// Adds `position` under `value`; false if it was already there.
    pub fn insert(&self, value: V, position: u64) -> Result<bool, IndexFull> {
        let guard = &epoch::pin();
        Ok(self.entry_or_insert(value, guard)?.insert(position))
    }

    /// Removes `position` from `value`'s list; false if it was not there.
    pub fn remove(&self, value: &V, position: u64) -> bool {
        let guard = &epoch::pin();
        self.entry(value, guard).is_some_and(|positions| positions.remove(position))
    }

    /// Moves `position` from `old` to `new` (see the module documentation for what readers
    /// see meanwhile). On `IndexFull` the position stays under `old`.
    pub fn move_position(&self, old: &V, new: V, position: u64) -> Result<(), IndexFull> {
        if *old == new {
            return Ok(());
        }
        self.insert(new, position)?;
        self.remove(old, position);
        Ok(())
    }

    /// The list of `value`, if the value was ever indexed. Borrowed for as long as `guard` is
    /// pinned (entries are never freed before the index, so in fact as long as `self`).
    pub fn lookup<'g>(&'g self, value: &V, guard: &'g Guard) -> Option<&'g CasList> {
        self.entry(value, guard)
    }

    /// The positions under `value`, ascending, at most `limit`.
    pub fn positions(&self, value: &V, limit: usize) -> Vec<u64> {
        let guard = &epoch::pin();
        self.entry(value, guard).map_or_else(Vec::new, |positions| positions.positions(limit))
    }

    fn bucket(&self, value: &V) -> &Atomic<Entry<V>> {
        let hash = self.hasher.hash_one(value) as usize;
        &self.buckets[hash & (self.buckets.len() - 1)]
    }

    fn entry<'g>(&'g self, value: &V, guard: &'g Guard) -> Option<&'g CasList> {
        Self::find_from(self.bucket(value).load(Ordering::Acquire, guard), value, guard)
    }

    /// The entry of `value` in the bucket list starting at `curr`.
    fn find_from<'g>(mut curr: Shared<'g, Entry<V>>, value: &V, guard: &'g Guard) -> Option<&'g CasList> {
        // SAFETY: entries are freed only in `drop` (`&mut self`), so any loaded one is live.
        while let Some(entry) = unsafe { curr.as_ref() } {
            if entry.value == *value {
                return Some(&entry.positions);
            }
            curr = entry.next.load(Ordering::Acquire, guard);
        }
        None
    }

    fn entry_or_insert<'g>(&'g self, value: V, guard: &'g Guard) -> Result<&'g CasList, IndexFull> {
        let bucket = self.bucket(&value);
        let mut head = bucket.load(Ordering::Acquire, guard);
        if let Some(found) = Self::find_from(head, &value, guard) {
            return Ok(found);
        }
        // Reserve a slot before linking, so that the bound holds under races.
        if self.values.fetch_add(1, Ordering::Relaxed) >= self.values_max {
            self.values.fetch_sub(1, Ordering::Relaxed);
            return Err(IndexFull { values_max: self.values_max });
        }
        let mut new = Owned::new(Entry { value, positions: CasList::new(), next: Atomic::null() });
        loop {
            new.next.store(head, Ordering::Relaxed);
            match bucket.compare_exchange(head, new, Ordering::Release, Ordering::Acquire, guard) {
                // SAFETY: just linked; entries live as long as the index.
                Ok(linked) => return Ok(unsafe { &linked.deref().positions }),
                Err(failed) => {
                    // Entries were pushed meanwhile; one may be for our value.
                    new = failed.new;
                    head = failed.current;
                    if let Some(found) = Self::find_from(head, &new.value, guard) {
                        self.values.fetch_sub(1, Ordering::Relaxed);
                        return Ok(found);
                    }
                }
            }
        }
    }
}

impl<V> Drop for CasIndex<V> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader or writer remains; each entry is freed once.
        unsafe {
            let guard = epoch::unprotected();
            for bucket in self.buckets.iter() {
                let mut curr = bucket.load(Ordering::Relaxed, guard);
                while !curr.is_null() {
                    let next = curr.deref().next.load(Ordering::Relaxed, guard);
                    drop(curr.into_owned());
                    curr = next;
                }
            }
        }
    }
}
