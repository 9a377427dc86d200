//! The virtual player: what a person watching would have seen, computed from when each segment became whole.
//!
//! Playback starts one segment behind the live edge: with the first segment the viewer fetches, as soon as it is whole
//! — or, if the viewer's startup rule says so, a little later (see [`crate::treemesh::Config::min_slack_s`]). From then
//! on segment `k + 1` is due when segment `k` has played for one segment duration; a segment that is not whole when due
//! stalls playback until it is, and every later deadline moves by the stall (a player does not skip ahead). Times are
//! seconds on any clock (virtual in the simulator, the node's monotonic clock in the node).

/// What a viewer saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlaybackReport {
    /// Join to first segment playable; `None` when nothing played before the end.
    pub ttfb_s: Option<f64>,
    /// Time spent stalled.
    pub stalled_s: f64,
    /// Time from playback start to the end, stalls included.
    pub watched_s: f64,
    /// Segments that were whole by their deadline (the first counts: it started playback).
    pub on_time: u64,
    /// Segments that were late or never arrived while the viewer watched.
    pub late: u64,
}

impl PlaybackReport {
    /// Stalled time over watch time; 0 when nothing was watched.
    pub fn rebuffer_ratio(&self) -> f64 {
        if self.watched_s > 0.0 {
            self.stalled_s / self.watched_s
        } else {
            0.0
        }
    }
}

/// Plays a viewer's segments: `ready_s[k]` is when the `k`-th segment from its join point became whole (`None`:
/// never), `join_s` when it joined, `earliest_start_s` the earliest its player starts (its startup rule; `join_s`
/// for none), `end_s` when it left or the stream ended.
pub fn evaluate(
    join_s: f64,
    earliest_start_s: f64,
    end_s: f64,
    segment_s: f64,
    ready_s: &[Option<f64>],
) -> PlaybackReport {
    evaluate_with(join_s, earliest_start_s, end_s, segment_s, ready_s, |_| {})
}

/// [`evaluate`], calling `on_late` with the deadline of each segment that missed it (for reports of when the
/// misses happened).
pub fn evaluate_with(
    join_s: f64,
    earliest_start_s: f64,
    end_s: f64,
    segment_s: f64,
    ready_s: &[Option<f64>],
    mut on_late: impl FnMut(f64),
) -> PlaybackReport {
    let mut report = PlaybackReport::default();
    let Some(Some(first)) = ready_s.first() else {
        return report;
    };
    let start = first.max(join_s).max(earliest_start_s);
    if start >= end_s {
        return report;
    }
    report.ttfb_s = Some(start - join_s);
    report.watched_s = end_s - start;
    report.on_time = 1;
    let mut playing_since = start;
    for k in 1.. {
        let due = playing_since + segment_s;
        if due >= end_s {
            break;
        }
        match ready_s.get(k).copied().flatten() {
            Some(ready) if ready <= due => {
                report.on_time += 1;
                playing_since = due;
            }
            ready => {
                report.late += 1;
                on_late(due);
                let resumed = ready.unwrap_or(f64::INFINITY).min(end_s);
                report.stalled_s += resumed - due;
                if resumed >= end_s {
                    break;
                }
                playing_since = resumed;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_playback_never_stalls() {
        // Joins at 10, segments whole at 10.5, 12, 14, ... well before each is due.
        let ready: Vec<Option<f64>> = (0..10).map(|k| Some(10.5 + 2.0 * k as f64)).collect();
        let r = evaluate(10.0, 10.0, 20.5, 2.0, &ready);
        assert_eq!(r.ttfb_s, Some(0.5));
        assert_eq!(r.stalled_s, 0.0);
        assert_eq!(r.watched_s, 10.0);
        assert_eq!((r.on_time, r.late), (5, 0));
        assert_eq!(r.rebuffer_ratio(), 0.0);
    }

    #[test]
    fn a_late_segment_stalls_and_shifts_later_deadlines() {
        // Playback starts at 1; segment 1 is due at 3 but whole at 4: one second of stall, then segment 2 is due
        // at 6 and whole at 5.
        let ready = [Some(1.0), Some(4.0), Some(5.0), Some(5.5)];
        let mut missed = Vec::new();
        let r = evaluate_with(0.0, 0.0, 9.0, 2.0, &ready, |due| missed.push(due));
        assert_eq!(r.stalled_s, 1.0);
        assert_eq!((r.on_time, r.late), (3, 1));
        assert_eq!(missed, vec![3.0], "the deadline segment 1 missed");
        assert_eq!(r.rebuffer_ratio(), 1.0 / 8.0);
    }

    #[test]
    fn a_startup_rule_holds_the_start_back_and_moves_every_deadline() {
        // The first segment is whole at 0.5 but the player starts at 1.2: segment 1, whole at 3.1, is due at 3.2.
        let ready = [Some(0.5), Some(3.1), Some(4.9)];
        let r = evaluate(0.0, 1.2, 6.0, 2.0, &ready);
        assert_eq!(r.ttfb_s, Some(1.2));
        assert_eq!((r.on_time, r.late), (3, 0));
        // Started at once, segment 1 would have been late.
        assert_eq!(evaluate(0.0, 0.0, 6.0, 2.0, &ready).late, 1);
    }

    #[test]
    fn a_missing_segment_stalls_until_the_end() {
        let r = evaluate(0.0, 0.0, 10.0, 2.0, &[Some(0.0), None]);
        assert_eq!(r.stalled_s, 8.0);
        assert_eq!(r.late, 1);
        assert_eq!(evaluate(0.0, 0.0, 10.0, 2.0, &[None]).ttfb_s, None);
    }
}
