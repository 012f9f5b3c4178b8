//! Freshness of a view: per partition, the time from a produce's acknowledgement to the view
//! having applied it, over a window of recent measurements (p50, p99, last).

use std::collections::VecDeque;
use std::time::Instant;

/// Measurements kept per partition.
const WINDOW: usize = 1024;
/// Recent applies remembered per partition, to date acks recorded after their records were
/// already applied (the view can see a record before its producer is answered).
const APPLIES_MAX: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Freshness {
    window_ms: VecDeque<f64>,
    last_ms: Option<f64>,
    /// (applied end offset, when), ascending.
    applies: VecDeque<(i64, Instant)>,
    /// Acks up to this end offset are measured.
    measured_end: i64,
}

impl Freshness {
    pub fn starting_at(end_offset: i64) -> Freshness {
        Freshness { measured_end: end_offset, ..Freshness::default() }
    }

    pub fn applied(&mut self, end_offset: i64, at: Instant) {
        if self.applies.len() == APPLIES_MAX {
            self.applies.pop_front();
        }
        self.applies.push_back((end_offset, at));
    }

    pub fn measured_end(&self) -> i64 {
        self.measured_end
    }

    /// Measures acks (end offset, instant) that the view has applied.
    pub fn measure(&mut self, acks: &[(i64, Instant)]) {
        for &(end, acked) in acks {
            // When the view first covered `end`: the earliest remembered apply reaching it.
            let applied = self.applies.iter().find(|(applied_end, _)| *applied_end >= end).map(|(_, at)| *at);
            let Some(applied) = applied else { break };
            let freshness_ms = applied.saturating_duration_since(acked).as_secs_f64() * 1e3;
            if self.window_ms.len() == WINDOW {
                self.window_ms.pop_front();
            }
            self.window_ms.push_back(freshness_ms);
            self.last_ms = Some(freshness_ms);
            self.measured_end = self.measured_end.max(end);
        }
    }

    pub fn last_ms(&self) -> Option<f64> {
        self.last_ms
    }

    /// The `quantile` (0..=1) of the window, nearest rank.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        if self.window_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.window_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// Every measurement in the window (the benchmark reports over them).
    pub fn window_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.window_ms.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn measures_from_ack_to_first_apply() {
        let start = Instant::now();
        let mut freshness = Freshness::starting_at(0);
        freshness.applied(10, start + Duration::from_millis(5));
        freshness.applied(20, start + Duration::from_millis(9));
        freshness.measure(&[(10, start), (20, start + Duration::from_millis(8)), (30, start)]);
        assert_eq!(freshness.measured_end(), 20);
        assert_eq!(freshness.last_ms().map(f64::round), Some(1.0));
        assert_eq!(freshness.quantile_ms(0.5).map(f64::round), Some(1.0));
        assert_eq!(freshness.quantile_ms(0.99).map(f64::round), Some(5.0));
        // An ack recorded after its apply counts as zero.
        freshness.applied(40, start);
        freshness.measure(&[(40, start + Duration::from_millis(50))]);
        assert_eq!(freshness.last_ms(), Some(0.0));
    }
}
