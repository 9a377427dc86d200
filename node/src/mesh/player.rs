//! The virtual player's record: when each segment from the join point on became whole here and when the
//! broadcaster made it. From it [`streamrp2p_protocols::playback`] tells what a person watching would have seen —
//! time to the first playable segment, stalls, segments on time — the same way the simulator scores its viewers,
//! and the lags say how far behind the broadcaster this node was.

use std::collections::VecDeque;

use streamrp2p_protocols::playback::{self, PlaybackReport};

/// Segments tracked at most: a day of 2-second segments (16 bytes each). A longer watch keeps its figures for
/// the first day.
const MAX_TRACKED: usize = 43_200;
/// Lags kept for the status's percentiles and sample list.
const MAX_LAGS: usize = 128;

/// One viewer's playback record, times in seconds on the node's clock.
#[derive(Debug)]
pub(crate) struct PlayerLog {
    joined_s: f64,
    first_seq: Option<u64>,
    earliest_s: Option<f64>,
    /// When segment `first_seq + k` became whole.
    ready: Vec<Option<f64>>,
    /// When the broadcaster made segment `first_seq + k` (from its signed timestamp).
    made: Vec<Option<f64>>,
    lags: VecDeque<f64>,
}

impl PlayerLog {
    /// A player of a viewer that started watching at `joined_s`.
    pub(crate) fn new(joined_s: f64) -> Self {
        Self {
            joined_s,
            first_seq: None,
            earliest_s: None,
            ready: Vec::new(),
            made: Vec::new(),
            lags: VecDeque::new(),
        }
    }

    /// Playback starts with segment `seq`, not before `earliest_s` (the tree-mesh's startup rule).
    pub(crate) fn start(&mut self, seq: u64, earliest_s: Option<f64>) {
        self.first_seq.get_or_insert(seq);
        if earliest_s.is_some() {
            self.earliest_s = earliest_s;
        }
    }

    /// The first segment played, once known.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// Segment `seq`, made by the broadcaster at `made_s`, became whole here at `ready_s`.
    pub(crate) fn completed(&mut self, seq: u64, ready_s: f64, made_s: f64) {
        let Some(k) = self.first_seq.and_then(|first| seq.checked_sub(first)) else {
            return;
        };
        let Ok(k) = usize::try_from(k) else { return };
        if k >= MAX_TRACKED {
            return;
        }
        if self.ready.len() <= k {
            self.ready.resize(k + 1, None);
            self.made.resize(k + 1, None);
        }
        self.ready[k] = Some(ready_s);
        self.made[k] = Some(made_s);
        // Lag is the delivery of live segments: those made before the viewer came are not counted.
        if made_s >= self.joined_s {
            if self.lags.len() == MAX_LAGS {
                self.lags.pop_front();
            }
            self.lags.push_back((ready_s - made_s).max(0.0));
        }
    }

    /// What a person watching from the join until `now_s` saw.
    pub(crate) fn report(&self, now_s: f64, segment_s: f64) -> PlaybackReport {
        // Playback runs one segment behind the live edge, so it cannot start before the segment after the first
        // exists: a viewer that came before it waited for the stream, and that wait is not the network's time.
        let join = self
            .made
            .get(1)
            .copied()
            .flatten()
            .map_or(self.joined_s, |made| self.joined_s.max(made));
        playback::evaluate(join, self.earliest_s.unwrap_or(join), now_s, segment_s, &self.ready)
    }

    /// The lags of the newest segments, oldest first.
    pub(crate) fn lags(&self) -> Vec<f64> {
        self.lags.iter().copied().collect()
    }

    /// The `q` quantile of the newest lags.
    pub(crate) fn lag_quantile(&self, q: f64) -> Option<f64> {
        let mut sorted = self.lags();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        Some(sorted[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_segment_stalls_the_player_and_old_segments_add_no_lag() {
        let mut log = PlayerLog::new(10.0);
        log.start(5, None);
        // Segment 5 was made before the join (no lag counted); 6 on time; 7 one second late (due 14.5).
        log.completed(5, 10.5, 8.0);
        log.completed(6, 11.0, 10.2);
        log.completed(7, 15.5, 12.2);
        let report = log.report(17.0, 2.0);
        assert!((report.ttfb_s.unwrap() - 0.3).abs() < 1e-9, "{report:?}");
        assert!((report.stalled_s - 1.0).abs() < 1e-9, "{report:?}");
        assert_eq!(log.lags().len(), 2);
        assert!((log.lag_quantile(1.0).unwrap() - 3.3).abs() < 1e-9);
    }
}
