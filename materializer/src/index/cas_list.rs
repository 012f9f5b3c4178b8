//! `CasList`: a lock-free sorted set of row positions, after Harris ("A pragmatic
//! implementation of non-blocking linked lists", DISC 2001).
//!
//! - Insert links a new node with one compare-and-swap on its predecessor's `next`.
//! - Delete is two steps: first *mark* the node by setting the low tag bit of its own `next`
//!   (the logical delete: from then on no CAS can link anything after it, because such a CAS
//!   expects an unmarked pointer), then *unlink* it with a CAS on the predecessor. Any traversal
//!   that meets a marked node helps by unlinking it, so a delete that loses the unlink race
//!   still completes.
//! - Memory: unlinked nodes are retired through `crossbeam-epoch` and freed only once no reader
//!   pinned before the unlink can still hold a pointer to them.
//!
//! Readers never block writers and never take a lock: `contains` and `scan` only load
//! pointers. A scan is *weakly consistent*, as every traversal of a Harris list is: a position
//! present for the whole scan is seen, one absent for the whole scan is not, one inserted or
//! deleted during the scan may or may not be. Positions come out in ascending order, each once.
//!
//! Architecture invariant: a node's `position` never changes after it is linked, and a marked
//! `next` pointer is never unmarked; together they are what makes a failed CAS mean "retry".

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

/// The tag on a node's `next` pointer that marks the node deleted.
const MARKED: usize = 1;

struct Node {
    position: u64,
    next: Atomic<Node>,
}

/// A lock-free sorted set of `u64` row positions. See the module documentation.
pub struct CasList {
    head: Atomic<Node>,
    /// Positions present: incremented after a successful insert, decremented after a successful
    /// mark. Exact when the list is quiescent; a hint while writers run.
    len: AtomicUsize,
}

impl Default for CasList {
    fn default() -> Self {
        Self::new()
    }
}

impl CasList {
    pub fn new() -> CasList {
        CasList { head: Atomic::null(), len: AtomicUsize::new(0) }
    }

    /// Number of positions present (exact only while no writer runs).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `position`; false if it was already present.
    pub fn insert(&self, position: u64) -> bool {
        let guard = &epoch::pin();
        let mut node = Owned::new(Node { position, next: Atomic::null() });
        loop {
            let (prev, curr) = self.find(position, guard);
            // SAFETY: `curr` was loaded under `guard`, so it is not freed while we look.
            if let Some(found) = unsafe { curr.as_ref() } {
                if found.position == position {
                    return false;
                }
            }
            node.next.store(curr, Ordering::Relaxed);
            // Release: the node's fields are visible to whoever loads the new pointer.
            match prev.compare_exchange(curr, node, Ordering::Release, Ordering::Relaxed, guard) {
                Ok(_) => {
                    self.len.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                // The predecessor changed (an insert beside us, or it was marked): search again.
                Err(failed) => node = failed.new,
            }
        }
    }

    /// Removes `position`; false if it was not present. The position is gone for every reader
    /// once this returns (it is marked), even if another thread finishes the unlink.
    pub fn remove(&self, position: u64) -> bool {
        let guard = &epoch::pin();
        loop {
            let (prev, curr) = self.find(position, guard);
            // SAFETY: loaded under `guard`.
            let Some(found) = (unsafe { curr.as_ref() }) else { return false };
            if found.position != position {
                return false;
            }
            let next = found.next.load(Ordering::Acquire, guard);
            if next.tag() == MARKED {
                // Another remove marked it first; `find` will unlink it and not find it again.
                continue;
            }
            // Step 1, the logical delete: mark our own `next`. Fails if a node was linked
            // after us meanwhile (then retry with the new `next`) or someone marked it.
            if found
                .next
                .compare_exchange(next, next.with_tag(MARKED), Ordering::AcqRel, Ordering::Relaxed, guard)
                .is_err()
            {
                continue;
            }
            self.len.fetch_sub(1, Ordering::Relaxed);
            // Step 2, the physical delete. If it fails, the predecessor changed; a `find` from
            // the head unlinks every marked node it passes, ours included.
            match prev.compare_exchange(curr, next, Ordering::AcqRel, Ordering::Relaxed, guard) {
                // SAFETY: unlinked by us: no new reader can reach it, and epoch reclamation
                // waits for the readers pinned before now.
                Ok(_) => unsafe { guard.defer_destroy(curr) },
                Err(_) => {
                    self.find(position, guard);
                }
            }
            return true;
        }
    }

    /// Whether `position` is present. Wait-free for a bounded list: only loads, no helping.
    pub fn contains(&self, position: u64) -> bool {
        let guard = &epoch::pin();
        let mut curr = self.head.load(Ordering::Acquire, guard);
        // SAFETY (every `as_ref` below): loaded under `guard`.
        while let Some(node) = unsafe { curr.as_ref() } {
            let next = node.next.load(Ordering::Acquire, guard);
            if node.position >= position {
                return node.position == position && next.tag() != MARKED;
            }
            curr = next.with_tag(0);
        }
        false
    }

    /// Visits the present positions in ascending order until `visit` breaks. Weakly consistent
    /// (see the module documentation). Holds `guard` for the whole walk: a long scan delays
    /// reclamation, never a writer.
    pub fn scan(&self, guard: &Guard, mut visit: impl FnMut(u64) -> ControlFlow<()>) {
        let mut curr = self.head.load(Ordering::Acquire, guard);
        // SAFETY: loaded under `guard`.
        while let Some(node) = unsafe { curr.as_ref() } {
            let next = node.next.load(Ordering::Acquire, guard);
            if next.tag() != MARKED && visit(node.position).is_break() {
                return;
            }
            curr = next.with_tag(0);
        }
    }

    /// The present positions, ascending, up to `limit` of them.
    pub fn positions(&self, limit: usize) -> Vec<u64> {
        let guard = &epoch::pin();
        let mut positions = Vec::new();
        self.scan(guard, |position| {
            if positions.len() >= limit {
                return ControlFlow::Break(());
            }
            positions.push(position);
            ControlFlow::Continue(())
        });
        positions
    }

    /// The link that points at the first node with a position >= `position`, and that node
    /// (null at the end), both unmarked when seen. Unlinks every marked node on the way
    /// (Harris's helping), restarting from the head when an unlink CAS fails, since the
    /// predecessor itself may have been marked.
    fn find<'g>(&'g self, position: u64, guard: &'g Guard) -> (&'g Atomic<Node>, Shared<'g, Node>) {
        'from_head: loop {
            let mut prev = &self.head;
            let mut curr = prev.load(Ordering::Acquire, guard);
            loop {
                // SAFETY: loaded under `guard`.
                let Some(node) = (unsafe { curr.as_ref() }) else { return (prev, curr) };
                let next = node.next.load(Ordering::Acquire, guard);
                if next.tag() == MARKED {
                    let unmarked = next.with_tag(0);
                    match prev.compare_exchange(curr, unmarked, Ordering::AcqRel, Ordering::Relaxed, guard) {
                        Ok(_) => {
                            // SAFETY: we unlinked it; see `remove`.
                            unsafe { guard.defer_destroy(curr) };
                            curr = unmarked;
                            continue;
                        }
                        Err(_) => continue 'from_head,
                    }
                }
                if node.position >= position {
                    return (prev, curr);
                }
                prev = &node.next;
                curr = next;
            }
        }
    }
}

impl Drop for CasList {
    fn drop(&mut self) {
        // `&mut self`: no other thread can reach the list, so nodes can be freed at once.
        // SAFETY: exclusive access; each node is freed once (the walk moves past it first).
        unsafe {
            let guard = epoch::unprotected();
            let mut curr = self.head.load(Ordering::Relaxed, guard);
            while !curr.is_null() {
                let next = curr.deref().next.load(Ordering::Relaxed, guard).with_tag(0);
                drop(curr.into_owned());
                curr = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        Contains(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space so that inserts, removes and lookups hit the same positions.
        prop_oneof![
            (0u64..64).prop_map(Op::Insert),
            (0u64..64).prop_map(Op::Remove),
            (0u64..64).prop_map(Op::Contains),
        ]
    }

    proptest! {
        /// Sequentially, the list is a sorted set: same answers as a BTreeSet.
        #[test]
        fn behaves_as_a_sorted_set(ops in proptest::collection::vec(op(), 0..400)) {
            let list = CasList::new();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(p) => prop_assert_eq!(list.insert(p), model.insert(p)),
                    Op::Remove(p) => prop_assert_eq!(list.remove(p), model.remove(&p)),
                    Op::Contains(p) => prop_assert_eq!(list.contains(p), model.contains(&p)),
                }
                prop_assert_eq!(list.len(), model.len());
            }
            prop_assert_eq!(list.positions(usize::MAX), model.iter().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn scan_stops_when_asked_and_positions_respect_the_limit() {
        let list = CasList::new();
        for p in [5, 1, 9, 3, 7] {
            assert!(list.insert(p));
        }
        assert!(!list.insert(3));
        assert_eq!(list.positions(3), vec![1, 3, 5]);
        let mut seen = Vec::new();
        list.scan(&epoch::pin(), |p| {
            seen.push(p);
            if p >= 5 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        assert_eq!(seen, vec![1, 3, 5]);
        assert!(list.remove(1) && list.remove(9) && !list.remove(9));
        assert_eq!(list.positions(usize::MAX), vec![3, 5, 7]);
        assert_eq!(list.len(), 3);
    }
}
