//! Deadlines: when a pushed segment is overdue the mesh is asked, and what peers would still deliver too late comes
//! from the HTTP origin just in time, block by block (p2p-media-loader's high-demand window, driven by each block's
//! own deadline instead of a fixed window).

use super::config::Role;
use super::machine::{OriginFetch, PeerId, TreeMesh};
use super::window::Segment;

/// Origin fetches run in parallel this many at a time when estimating how long the missing blocks take: HTTP/2
/// multiplexes a segment's range requests on one connection. (Counting 8 made every joiner ask the origin for its
/// first segment 0.3 s after joining, before the probed peers could answer: 92 % of first segments came from the
/// origin at 3,000 viewers, against 69 % with 16.)
const ORIGIN_PARALLEL: u64 = 16;
/// Time allowed for a mesh rescue (a HAVE-informed pull: request, transfer, response), on top of the origin's.
const RESCUE_S: f64 = 0.6;
/// After an origin failure, leave it alone this long.
const ORIGIN_BACKOFF_S: f64 = 2.0;
/// An origin fetch is slow, and peers may race it, after twice the usual time, and never before this.
const MIN_HEDGE_S: f64 = 0.5;

impl<P: PeerId> TreeMesh<P> {
    /// For a segment this peer still needs: when to rescue it from the mesh, and when to take it from the origin.
    pub(super) fn check_times(&self, seg: &Segment) -> Option<(f64, f64)> {
        let start = self.player.start?;
        if seg.info.seq < start || seg.is_complete() {
            return None;
        }
        let expected_start = self.joined_at + self.cfg.startup_s;
        let due = self.player.due(seg.info.seq, self.cfg.segment_s, expected_start);
        let missing = u64::from((seg.all() & !seg.have).count_ones());
        let origin_s = self.origin_took_s * missing.div_ceil(ORIGIN_PARALLEL) as f64;
        let origin_at = if self.cfg.has_origin {
            due - self.cfg.deadline_margin_s - origin_s
        } else {
            f64::INFINITY
        };
        let rescue_at = due - self.cfg.deadline_margin_s - origin_s.min(1.0) - RESCUE_S;
        Some((rescue_at, origin_at.max(self.origin_down_until)))
    }

    /// Runs whatever is due: probing over, attach timed out, pulls timed out, segments overdue.
    pub(super) fn expire(&mut self) {
        let now = self.now;
        if self.probe_until.is_some_and(|t| t <= now) {
            self.probe_until = None;
            self.after_probing();
        }
        if let Some(a) = self.attempt.filter(|a| a.deadline <= now) {
            self.attempt = None;
            self.avoid(a.id);
            if self.parent.is_none() {
                self.try_attach();
            }
        }
        self.expire_pulls();
        self.hedge_slow_origin();
        if self.cfg.role == Role::Viewer && self.joined {
            self.check_deadlines();
        }
    }

    /// How long an origin fetch runs before peers may race it.
    pub(super) fn hedge_after(&self) -> f64 {
        (2.0 * self.origin_took_s).max(MIN_HEDGE_S)
    }

    /// Lets peers that hold a block race the origin for it when the origin is slow to send it — a hedged request
    /// (Dean and Barroso, "The Tail at Scale", CACM 2013): a saturated origin must not hold up a block a neighbour
    /// could send in a fraction of the time.
    fn hedge_slow_origin(&mut self) {
        // The same sum as in `poll_timeout`, so that the wake-up it asks for always finds this due.
        let after = self.hedge_after();
        let mut any = false;
        for i in 0..self.origin.len() {
            let f = self.origin[i];
            if f.hedged || f.sent_at + after > self.now {
                continue;
            }
            self.origin[i].hedged = true;
            if let Some(seg) = self.window.get_mut(f.seq) {
                seg.hedged |= 1u128 << f.block;
                any = true;
            }
        }
        if any {
            self.pump_pulls();
        }
    }

    fn check_deadlines(&mut self) {
        let now = self.now;
        let mut rescue = Vec::new();
        let mut origin = Vec::new();
        for seg in self.window.iter_incomplete() {
            let Some((rescue_at, origin_at)) = self.check_times(seg) else {
                continue;
            };
            if !seg.rescue && rescue_at <= now {
                rescue.push(seg.info.seq);
            }
            if origin_at <= now && self.origin_open(seg) != 0 {
                origin.push(seg.info.seq);
            }
        }
        for seq in rescue {
            let pushed = self.expects_push(seq);
            if let Some(seg) = self.window.get_mut(seq) {
                seg.rescue = true;
            }
            // Strike the parent only when the segment is already around us (a neighbour announced it whole): when
            // the whole tree above is late, or the parent is cut off and repairing, replacing it only adds churn.
            let around = self.peers.list.iter().any(|k| k.holds(seq));
            if pushed && around && self.rooted && self.parent.is_some_and(|p| seq >= p.from_seq) {
                self.strike_parent();
            }
        }
        self.pump_pulls();
        for seq in origin {
            self.fetch_from_origin(seq);
        }
    }

    /// Fetches every block of `seq` that is neither held nor asked for from the origin.
    pub(super) fn fetch_from_origin(&mut self, seq: u64) {
        if !self.cfg.has_origin || self.now < self.origin_down_until {
            return;
        }
        let Some(open) = self.window.get(seq).map(|s| self.origin_open(s)) else {
            return;
        };
        let Some(seg) = self.window.get_mut(seq) else { return };
        seg.from_origin |= open;
        let (info, blocks) = (seg.info, seg.blocks);
        for block in (0..blocks).filter(|b| open & (1u128 << b) != 0) {
            self.origin.push(OriginFetch {
                seq,
                block,
                sent_at: self.now,
                hedged: false,
            });
            self.out.push_back(super::Output::FetchOrigin { segment: info, block });
        }
    }

    /// Blocks of `seg` the origin should send when its time comes: those no one is sending — and, for the first
    /// segment, also those still being pulled (a slow peer must not hold up the start: peers' answers to a joiner
    /// are the least certain).
    pub(super) fn origin_open(&self, seg: &Segment) -> u128 {
        let starting = self.player.started_at.is_none() && self.player.start == Some(seg.info.seq);
        if starting {
            seg.all() & !seg.have & !seg.from_origin
        } else {
            seg.unrequested()
        }
    }

    pub(super) fn on_origin_failed(&mut self, segment: super::SegmentInfo, block: u16) {
        self.origin.retain(|f| !(f.seq == segment.seq && f.block == block));
        if let Some(seg) = self.window.get_mut(segment.seq) {
            seg.from_origin &= !(1u128 << block);
            seg.hedged &= !(1u128 << block);
        }
        self.origin_down_until = self.now + ORIGIN_BACKOFF_S;
        // Peers may still have it: ask the mesh right away.
        if let Some(seg) = self.window.get_mut(segment.seq) {
            seg.rescue = true;
        }
        self.pump_pulls();
    }
}
