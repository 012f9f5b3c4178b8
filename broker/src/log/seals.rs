//! Sealed zones waiting for their summaries.
//!
//! A sealed zone's summary and trailer are written by the reclaimer once a flush made the
//! zone's frames durable (see `Streams::seal`). Until then the zone is still active on the
//! device. A burst of seals can therefore use up the device's active-zone budget while a
//! stream needs a new zone; that stream then finishes the oldest waiting zone without its
//! summary (recovery scans such a zone instead of trusting a summary), or waits for the
//! seals the reclaimer is writing. So a roll never fails for lack of active zones while
//! sealed zones hold them.
//!
//! Architecture Invariant: a seal is in exactly one place: queued (anyone may take it), or
//! claimed by the reclaimer after its flush (counted in `writing` until written). The
//! reclaimer claims only seals that were queued before its flush, so a summary never lists a
//! frame the flush did not cover.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::zone::ZoneId;

/// A sealed zone whose summary and trailer are still to be written.
pub(crate) struct PendingSeal {
    pub zone: ZoneId,
    pub sequence: u64,
    /// Where the summary goes: the zone's write pointer after its frames (block aligned).
    pub start_bytes: u64,
    pub summary: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct SealQueue {
    state: Mutex<State>,
    written: Condvar,
}

#[derive(Default)]
struct State {
    queued: VecDeque<PendingSeal>,
    /// Seals claimed by the reclaimer and not yet written.
    writing: usize,
}

/// Seals claimed for writing; dropping it (written, or a panic) ends the claim.
pub(crate) struct Claim<'a> {
    queue: &'a SealQueue,
    pub seals: Vec<PendingSeal>,
    count: usize,
}

impl SealQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, seal: PendingSeal) {
        self.lock().queued.push_back(seal);
    }

    /// The seals queued now (zone and incarnation), taken before a flush.
    pub fn queued(&self) -> Vec<(ZoneId, u64)> {
        self.lock()
            .queued
            .iter()
            .map(|seal| (seal.zone, seal.sequence))
            .collect()
    }

    /// Claims those of `before_flush` still queued (a stream may have finished some meanwhile).
    pub fn claim(&self, before_flush: &[(ZoneId, u64)]) -> Claim<'_> {
        let mut state = self.lock();
        let (seals, kept): (Vec<PendingSeal>, Vec<PendingSeal>) =
            std::mem::take(&mut state.queued)
                .into_iter()
                .partition(|seal| before_flush.contains(&(seal.zone, seal.sequence)));
        state.queued = kept.into();
        state.writing += seals.len();
        Claim {
            queue: self,
            count: seals.len(),
            seals,
        }
    }

    /// The oldest queued seal, for a stream that needs its active zone now.
    pub fn take_oldest(&self) -> Option<PendingSeal> {
        self.lock().queued.pop_front()
    }

    /// Waits until no claimed seal is left to write, at most `timeout`. Returns whether there
    /// was one to wait for and it was written in time.
    pub fn wait_written(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        if state.writing == 0 {
            return false;
        }
        while state.writing > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        assert!(state.writing >= self.count, "claims are counted once");
        state.writing -= self.count;
        drop(state);
        self.queue.written.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(zone: ZoneId) -> PendingSeal {
        PendingSeal {
            zone,
            sequence: u64::from(zone) + 100,
            start_bytes: 0,
            summary: Vec::new(),
        }
    }

    #[test]
    fn a_claim_takes_only_seals_queued_before_the_flush() {
        let queue = SealQueue::default();
        queue.push(seal(1));
        queue.push(seal(2));
        let before = queue.queued();
        queue.push(seal(3));
        assert_eq!(queue.take_oldest().map(|s| s.zone), Some(1));
        let claim = queue.claim(&before);
        assert_eq!(claim.seals.iter().map(|s| s.zone).collect::<Vec<_>>(), vec![2]);
        assert_eq!(queue.queued(), vec![(3, 103)]);
    }

    #[test]
    fn waiting_ends_when_the_claim_is_dropped_and_not_before() {
        let queue = SealQueue::default();
        assert!(!queue.wait_written(Duration::from_millis(1)), "nothing claimed");
        queue.push(seal(1));
        let claim = queue.claim(&queue.queued());
        assert!(!queue.wait_written(Duration::from_millis(20)), "still claimed");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                drop(claim);
            });
            assert!(queue.wait_written(Duration::from_secs(10)));
        });
    }
}
