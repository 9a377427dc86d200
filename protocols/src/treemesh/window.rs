//! The segments a peer is working on, block by block, and the virtual player that gives each its deadline.

use std::collections::VecDeque;

use super::message::SegmentInfo;

/// Most blocks a segment may have (the bitmaps are 128 bits): 8 MiB at 64 KiB blocks, 32 MiB at 256 KiB.
pub const MAX_BLOCKS: u16 = 128;

/// One segment's progress.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    pub(super) info: SegmentInfo,
    pub(super) blocks: u16,
    /// Every block, as a bitmap (kept: it is asked for on nearly every event).
    all: u128,
    /// Blocks held.
    pub(super) have: u128,
    /// Blocks asked of peers, not yet here.
    pub(super) pulling: u128,
    /// Blocks asked of the origin, not yet here.
    pub(super) from_origin: u128,
    /// Of those, the ones the origin is slow to send: peers may be asked for them too.
    pub(super) hedged: u128,
    /// When this peer first heard of it (its announcement, normally).
    pub(super) heard_at: f64,
    /// When it became whole.
    pub(super) complete_at: Option<f64>,
    /// Blocks the parent was told not to push (it would bring them too late): fetched elsewhere.
    pub(super) skipped: u128,
}

impl Segment {
    fn new(info: SegmentInfo, block_size: u32, now: f64) -> Self {
        let blocks = info.blocks(block_size).min(MAX_BLOCKS);
        Self {
            info,
            heard_at: now,
            blocks,
            all: if blocks >= 128 {
                u128::MAX
            } else {
                (1u128 << blocks) - 1
            },
            have: 0,
            pulling: 0,
            from_origin: 0,
            hedged: 0,
            complete_at: None,
            skipped: 0,
        }
    }

    pub(super) fn all(&self) -> u128 {
        self.all
    }

    pub(super) fn is_complete(&self) -> bool {
        self.have == self.all()
    }

    /// Blocks neither held nor asked for anywhere.
    pub(super) fn unrequested(&self) -> u128 {
        self.all() & !self.have & !self.pulling & !self.from_origin
    }

    /// Blocks a peer may be asked for: those no one is sending, and those the origin is slow to send.
    pub(super) fn pullable(&self) -> u128 {
        self.unrequested() | (self.hedged & !self.have & !self.pulling)
    }
}

/// The segments from the oldest kept to the newest known, by sequence number.
#[derive(Clone, Debug, Default)]
pub(super) struct Window {
    base: u64,
    slots: VecDeque<Option<Segment>>,
    /// Every segment below it is whole or not played: where the search for work starts (most of the window is
    /// whole segments kept for others, and walking them on every event was the simulator's hottest loop).
    done_below: u64,
}

impl Window {
    pub(super) fn get(&self, seq: u64) -> Option<&Segment> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Segment> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Adds a segment unless known or older than the window; returns whether it is (now) in the window.
    pub(super) fn insert(&mut self, info: SegmentInfo, block_size: u32, keep: u64, now: f64) -> bool {
        if self.slots.is_empty() {
            self.base = info.seq;
        }
        if info.seq < self.base {
            return false;
        }
        // A jump past the whole window (a stream that restarted its numbering far ahead) starts the window afresh
        // rather than filling the gap: the window never holds more than `keep` slots.
        if info.seq - self.base >= 2 * keep.max(1) {
            self.slots.clear();
            self.base = info.seq;
        }
        let i = (info.seq - self.base) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].is_none() {
            self.slots[i] = Some(Segment::new(info, block_size, now));
        }
        // Keep the window bounded: drop what is more than `keep` behind the newest.
        let newest = self.base + self.slots.len() as u64 - 1;
        while newest - self.base >= keep && !self.slots.is_empty() {
            self.slots.pop_front();
            self.base += 1;
        }
        self.advance();
        true
    }

    /// Segments below `seq` are not played: no deadline, no pulls.
    pub(super) fn skip_below(&mut self, seq: u64) {
        self.done_below = self.done_below.max(seq);
        self.advance();
    }

    /// Moves the start of the work past segments that became whole; call it when one does.
    pub(super) fn advance(&mut self) {
        self.done_below = self.done_below.max(self.base);
        while self.get(self.done_below).is_some_and(Segment::is_complete) {
            self.done_below += 1;
        }
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &Segment> {
        self.slots.iter().flatten()
    }

    /// Segments from the oldest one not yet whole (the ones deadlines matter for), newest last.
    pub(super) fn iter_incomplete(&self) -> impl Iterator<Item = &Segment> {
        let skip = (self.done_below.saturating_sub(self.base) as usize).min(self.slots.len());
        // `range` starts at the first slot at once (a `skip` would step over the whole segments one by one).
        self.slots.range(skip..).flatten().filter(|s| !s.is_complete())
    }

    /// The segments being worked on: from the oldest one not yet whole to the newest, in one or two runs of memory.
    pub(super) fn working_slices(&self) -> (&[Option<Segment>], &[Option<Segment>]) {
        let skip = (self.done_below.saturating_sub(self.base) as usize).min(self.slots.len());
        let (a, b) = self.slots.as_slices();
        if skip <= a.len() {
            (&a[skip..], b)
        } else {
            (&[], &b[skip - a.len()..])
        }
    }

    /// Slots held (known segments and the gaps between them).
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The newest and the oldest segment held whole.
    pub(super) fn complete_range(&self) -> (Option<u64>, Option<u64>) {
        let newest = self.iter().rev().find(|s| s.is_complete()).map(|s| s.info.seq);
        let oldest = self.iter().find(|s| s.is_complete()).map(|s| s.info.seq);
        (newest, oldest)
    }
}

/// The virtual player: playback starts with the first segment whole, each next segment is due one segment duration
/// later, and a late segment shifts every later deadline by its stall (as [`crate::playback::evaluate`] counts).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Player {
    /// The first segment played.
    pub(super) start: Option<u64>,
    /// When playback started.
    pub(super) started_at: Option<f64>,
    /// Playback starts no sooner (the startup rule).
    pub(super) earliest: Option<f64>,
    /// Stalls so far.
    pub(super) stalled: f64,
}

impl Player {
    /// When segment `seq` must be whole; before playback starts, `expected_start` stands in for its start.
    pub(super) fn due(&self, seq: u64, segment_s: f64, expected_start: f64) -> f64 {
        let Some(start) = self.start else {
            return f64::INFINITY;
        };
        let Some(offset) = seq.checked_sub(start) else {
            return f64::NEG_INFINITY;
        };
        let start = self.started_at.unwrap_or(expected_start);
        start + self.stalled + offset as f64 * segment_s
    }

    /// A segment became whole at `now`.
    pub(super) fn completed(&mut self, seq: u64, now: f64, segment_s: f64) {
        let Some(start) = self.start else { return };
        if seq == start && self.started_at.is_none() {
            self.started_at = Some(now.max(self.earliest.unwrap_or(now)));
            return;
        }
        if let Some(started) = self.started_at {
            let due = started + self.stalled + seq.saturating_sub(start) as f64 * segment_s;
            if now > due {
                self.stalled += now - due;
            }
        }
    }
}
