//! The live HLS media playlist (RFC 8216) a node serves for a stream, and the range of segments it may list.
//!
//! A playlist must list consecutive segments: a player numbers them from `EXT-X-MEDIA-SEQUENCE`. So a viewer lists
//! only the run of whole segments from where it joined up to the first one still missing. When a segment stays
//! missing past the skip delay while later ones are whole, the run restarts after the gap: the media sequence jumps
//! forward, which players treat as having fallen behind the live edge.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::store::StoredSegment;

/// Most segments listed: players start three from the end (RFC 8216 §6.3.3), a few more give seek-back room.
const MAX_LISTED: usize = 10;

/// The run of whole, consecutive segments a playlist lists.
#[derive(Clone, Debug, Default)]
pub(crate) struct PlayableRange {
    /// First sequence number of the run (`None`: not started; the first segment stored starts it).
    start: Option<u64>,
    /// Last whole segment of the run.
    head: Option<u64>,
    /// Since when the segment after `head` has been missing while later ones were whole.
    gap_since: Option<Instant>,
    /// How long a gap is waited for before it is skipped.
    skip_after: Duration,
}

impl PlayableRange {
    /// A range that begins at `start`, skipping gaps after `skip_after`.
    pub(crate) fn starting_at(start: u64, skip_after: Duration) -> Self {
        Self {
            start: Some(start),
            head: None,
            gap_since: None,
            skip_after,
        }
    }

    /// Whether the range has begun.
    pub(crate) fn is_started(&self) -> bool {
        self.start.is_some()
    }

    /// Extends the run over newly whole segments, skipping a gap that has waited too long.
    pub(crate) fn advance(&mut self, segments: &BTreeMap<u64, StoredSegment>, now: Instant) {
        let Some(&first) = segments.keys().next() else { return };
        let start = *self.start.get_or_insert(first);
        loop {
            let next = self.head.map_or(start, |h| h + 1);
            if segments.contains_key(&next) {
                self.head = Some(next);
                self.gap_since = None;
                continue;
            }
            let Some((&later, _)) = segments.range(next..).next() else {
                break;
            };
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < self.skip_after {
                break;
            }
            self.start = Some(later);
            self.head = Some(later);
            self.gap_since = None;
        }
    }

    /// The listed sequence numbers that are still held, oldest first.
    pub(crate) fn listed(&self, segments: &BTreeMap<u64, StoredSegment>) -> Vec<u64> {
        let (Some(start), Some(head)) = (self.start, self.head) else {
            return Vec::new();
        };
        let mut seqs: Vec<u64> = segments.range(start..=head).map(|(s, _)| *s).collect();
        // Eviction can open a hole at the old end; list only the consecutive tail.
        if let Some(pos) = seqs.windows(2).rposition(|w| w[1] != w[0] + 1) {
            seqs.drain(..=pos);
        }
        let skip = seqs.len().saturating_sub(MAX_LISTED);
        seqs.drain(..skip);
        seqs
    }
}

/// Renders the live media playlist of `seqs` (consecutive, all present in `segments`).
pub(crate) fn render(segments: &BTreeMap<u64, StoredSegment>, seqs: &[u64]) -> String {
    let listed: Vec<_> = seqs.iter().filter_map(|s| segments.get(s)).collect();
    let target = listed
        .iter()
        .map(|s| s.entry.entry().duration.as_secs_f64().ceil() as u64)
        .max()
        .unwrap_or(2);
    let first = listed.first().map(|s| s.entry.entry());
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", target.max(1));
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.map_or(0, |e| e.seq));
    // The first listed segment's own discontinuity counts as already begun for EXT-X-DISCONTINUITY-SEQUENCE.
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        first.map_or(0, |e| e.discontinuity_sequence)
    );
    for (i, segment) in listed.iter().enumerate() {
        let entry = segment.entry.entry();
        if entry.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXTINF:{:.3},\n{}.ts", entry.duration.as_secs_f64(), entry.seq);
    }
    out
}
