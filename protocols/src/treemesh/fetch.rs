//! Deadlines: when a pushed segment is overdue the mesh is asked, and what peers would still deliver too late comes
//! from the HTTP origin just in time, block by block (p2p-media-loader's high-demand window, driven by each block's
//! own deadline instead of a fixed window).

use super::config::Role;
use super::machine::{OriginFetch, PeerId, TreeMesh};
use super::message::Message;
use super::window::Segment;

/// Origin fetches run in parallel this many at a time when estimating how long the missing blocks take: HTTP/2
/// multiplexes a segment's range requests on one connection. (Counting 8 made every joiner ask the origin for its
/// first segment 0.3 s after joining, before the probed peers could answer: 92 % of first segments came from the
/// origin at 3,000 viewers, against 69 % with 16.)
const ORIGIN_PARALLEL: u64 = 16;
/// Time a mesh pull needs (request, transfer, answer): the parent's blocks that would come later than this before
/// the deadline are pulled from the mesh instead.
const RESCUE_S: f64 = 0.6;
/// A parent whose next block is this late has stopped sending: the rest is pulled at once (twice the default
/// [`super::Config::silence_s`]; a parent that is merely slow sends a block every few tenths of a second).
const STOPPED_AFTER_S: f64 = 1.0;
/// When a segment's first pushed block is expected before any has been measured.
const DEFAULT_FIRST_PUSH_S: f64 = 1.0;
/// The most an origin fetch is planned to take (a round trip to a CDN and a block at a fair share).
const ORIGIN_PLAN_CAP_S: f64 = 0.4;
/// After an origin failure, leave it alone this long.
const ORIGIN_BACKOFF_S: f64 = 2.0;
/// Attach timeouts a cut-off parent is given to repair before its children look elsewhere.
const CUT_OFF_PATIENCE: f64 = 1.0;
/// An origin fetch is slow, and peers may race it, after twice the usual time, and never before this.
const MIN_HEDGE_S: f64 = 0.5;

/// What a segment's deadlines call for at one moment (see `TreeMesh::deadlines`).
struct Deadlines {
    /// Pushed blocks the parent would bring too late, to be pulled now from neighbours that hold the segment.
    mesh: u128,
    /// The origin's turn has come, with the pushed blocks to take from the parent for it (maybe none).
    origin: Option<u128>,
    /// When the mesh must be asked next if nothing arrives meanwhile (past or infinite when there is no such time).
    mesh_at: f64,
    /// When the origin must be asked next for what nobody would bring in time, likewise.
    origin_at: f64,
}

/// What a parent is expected to bring of a segment, and when (see `TreeMesh::forecast`).
struct Forecast {
    expected: u128,
    n: u32,
    /// When the next block comes, as far as the parent's pace says (never before now).
    next: f64,
    /// When the next block was due by that pace, however long ago.
    due_at: f64,
    gap: f64,
}

impl<P: PeerId> TreeMesh<P> {
    /// When segment `seg` must be whole here; `None` when it is not one this peer still needs.
    fn due(&self, seg: &Segment) -> Option<f64> {
        let start = self.player.start?;
        if seg.info.seq < start || seg.is_complete() {
            return None;
        }
        Some(self.player.due(seg.info.seq, self.cfg.segment_s, self.expected_start()))
    }

    /// How long fetching `blocks` from the origin is planned to take: as measured, but never more than
    /// [`ORIGIN_PLAN_CAP_S`] a batch — a busy origin must not make every peer ask it ever earlier (more load, slower
    /// still); its blocks then come late, and peers get the longer chance.
    fn origin_s(&self, blocks: u128) -> f64 {
        let batches = u64::from(blocks.count_ones()).div_ceil(ORIGIN_PARALLEL).max(1) as f64;
        self.origin_took_s.min(ORIGIN_PLAN_CAP_S) * batches
    }

    /// For a segment the parent pushes: the blocks still expected from it, and when they will come — the parent
    /// sends a segment's blocks in order, one every `gap_s` or so, the next after its last one or, for a segment not
    /// begun, when a segment's first block usually comes.
    fn forecast(&self, seg: &Segment) -> Option<Forecast> {
        let parent = self.parent.filter(|p| seg.info.seq >= p.from_seq)?;
        let expected = seg.all() & !seg.have & !seg.skipped & !seg.from_origin & !seg.pulling;
        if expected == 0 {
            return None;
        }
        let gap = parent.gap_s;
        let due_at = if seg.have & !seg.skipped == 0 {
            (seg.heard_at + self.first_push_s.unwrap_or(DEFAULT_FIRST_PUSH_S)).max(parent.last_block_at + gap)
        } else {
            parent.last_block_at + gap
        };
        Some(Forecast {
            expected,
            n: expected.count_ones(),
            next: due_at.max(self.now),
            due_at,
            gap,
        })
    }

    /// Of a pushed segment's expected blocks, those that would come after `need_by` (the last ones); and the time that
    /// set grows next if nothing more arrives meanwhile.
    fn late_after(&self, seg: &Segment, f: &Forecast, need_by: f64) -> (u128, f64) {
        let in_time = if need_by < f.next {
            0
        } else {
            // Truncation is the floor here (the quotient is not negative), without a call to libm's floor.
            (((need_by - f.next) / f.gap) as u32).saturating_add(1).min(f.n)
        };
        if in_time == f.n {
            // All in time; the last becomes late once waiting has pushed the next block past this.
            return (0, need_by - f64::from(f.n - 1) * f.gap);
        }
        let mut late = 0u128;
        let mut left = f.n - in_time;
        for b in (0..seg.blocks).rev() {
            if left == 0 {
                break;
            }
            if f.expected & (1u128 << b) != 0 {
                late |= 1u128 << b;
                left -= 1;
            }
        }
        (late, self.now)
    }

    /// What the deadlines of `seg` call for now, and when they will next; `None` when the segment needs nothing
    /// more. One reckoning for both [`Self::check_deadlines`] and [`Self::segment_wake`], so that the wake-up always
    /// finds due what it was asked for.
    fn deadlines(&self, seg: &Segment) -> Option<Deadlines> {
        let due = self.due(seg)?;
        let now = self.now;
        let missing = seg.all() & !seg.have;
        let origin_s = self.origin_s(missing);
        let margin = self.cfg.deadline_margin_s;
        let forecast = self.forecast(seg);
        let late = |fetch_s: f64| {
            forecast
                .as_ref()
                .map_or((0, f64::INFINITY), |f| self.late_after(seg, f, due - margin - fetch_s))
        };
        // The mesh is asked only when a neighbour already holds the segment: otherwise it would bring the blocks no
        // sooner than the parent, and the origin's turn comes later.
        let (mut mesh_late, mut mesh_at) = late(RESCUE_S);
        if let Some(f) = &forecast {
            // A parent silent well past when its next block was due has stopped (a withholder, a crash not yet
            // noticed): what it owes is pulled now, while neighbours have time to send it, not at the deadline.
            let stopped_at = f.due_at + STOPPED_AFTER_S;
            if now >= stopped_at {
                mesh_late = f.expected;
            } else {
                mesh_at = mesh_at.min(stopped_at);
            }
        }
        let mesh = if mesh_late != 0 && self.peers.list.iter().any(|k| k.holds(seg.info.seq)) {
            mesh_late
        } else {
            0
        };
        let (origin, origin_at) = if self.cfg.has_origin {
            let (origin_late, origin_late_at) = late(origin_s);
            let last_chance = due - margin - origin_s;
            let turn = now >= self.origin_down_until && (origin_late != 0 || now >= last_chance);
            // Anything missing that the origin is not already sending may need it: blocks no one sends, slow pulls,
            // and pushed blocks the parent would bring too late.
            let at = if missing & !seg.from_origin != 0 {
                last_chance.min(origin_late_at).max(self.origin_down_until)
            } else {
                f64::INFINITY
            };
            (turn.then_some(origin_late), at)
        } else {
            (None, f64::INFINITY)
        };
        Some(Deadlines {
            mesh,
            origin,
            mesh_at,
            origin_at,
        })
    }

    /// When the deadlines of segment `seg` call for [`Self::handle_timeout`] next: now when they call for
    /// something at once (a check time has passed and what it waited for came only later: a neighbour's HAVE for the
    /// segment, a pull's end), else when the mesh or the origin must be asked. Exact, so that a wake-up never finds
    /// nothing to do; `None` when the segment needs nothing more. The flag is false when a check time is the present
    /// instant itself: nothing is due yet, but it will be an instant later, so the answer holds only for now.
    pub(super) fn segment_wake(&self, seg: &Segment) -> Option<(f64, bool)> {
        let d = self.deadlines(seg)?;
        let now = self.now;
        // The origin's turn does something only if it has late pushes to take or blocks to ask for.
        if d.mesh != 0 || d.origin.is_some_and(|late| late != 0 || self.origin_open(seg) != 0) {
            return Some((now, true));
        }
        let future = |t: f64| if t > now { t } else { f64::INFINITY };
        let fixed = d.mesh_at != now && d.origin_at != now;
        Some((future(d.mesh_at).min(future(d.origin_at)), fixed))
    }

    /// Runs whatever is due: probing over, attach timed out, pulls timed out, segments overdue.
    pub(super) fn expire(&mut self) {
        let now = self.now;
        if self.probe_until.is_some_and(|t| t <= now) {
            self.probe_until = None;
            self.after_probing();
        }
        if let Some(attempt) = self.attempt.filter(|a| a.deadline <= now) {
            // Unanswered: its answer may still come (and is taken if nothing better came meanwhile).
            self.attempt = None;
            self.guard.given_up = Some((attempt.nonce, attempt.from_seq));
        }
        self.expire_recruiting();
        self.expire_offers();
        self.expire_suspicion();
        if self.parent.is_none() && self.attempt.is_none() && self.joined {
            self.try_attach();
        }
        self.expire_pulls();
        self.hedge_slow_origin();
        if self.cfg.role == Role::Viewer && self.joined {
            self.check_deadlines();
        }
    }

    /// Children taken on someone's behalf that never confirmed their place (they did not ask, or went) are let go.
    fn expire_offers(&mut self) {
        // The same sum as in `poll_timeout`, so that the wake-up it asks for always finds this due.
        let timeout = self.cfg.attach_timeout_s;
        let now = self.now;
        let stale = |c: &super::machine::Child<P>| !c.confirmed && c.taken_at + timeout <= now;
        if !self.children.iter().any(stale) {
            return;
        }
        let (stale, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.children).into_iter().partition(stale);
        self.children = keep;
        for child in stale {
            self.send(child.id, Message::Detach);
        }
        self.advertise_changes();
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
        let mut to_mesh = Vec::new();
        let mut origin = Vec::new();
        for seg in self.window.iter_incomplete() {
            let Some(d) = self.deadlines(seg) else { continue };
            if d.mesh != 0 {
                to_mesh.push((seg.info.seq, d.mesh));
            }
            if let Some(late) = d.origin {
                origin.push((seg.info.seq, late));
            }
        }
        for (seq, late) in to_mesh {
            self.take_from_parent(seq, late);
        }
        self.pump_pulls();
        for (seq, late) in origin {
            self.take_from_parent(seq, late);
            self.fetch_from_origin(seq);
        }
    }

    /// The parent would bring `blocks` of `seq` too late: it is told to skip them, and they are fetched elsewhere.
    fn take_from_parent(&mut self, seq: u64, blocks: u128) {
        if blocks == 0 {
            return;
        }
        let Some(seg) = self.window.get_mut(seq) else { return };
        // Nothing of it was ever declined to the parent: whatever it did not send of it, it owed.
        let owed_whole = seg.skipped == 0;
        seg.skipped |= blocks;
        let Some(parent) = self.parent.filter(|p| seq >= p.from_seq) else {
            return;
        };
        self.send(parent.id, Message::Skip { seq, blocks });
        // A silent parent, while the segment is around us (a neighbour holds it whole), is failing: when the whole
        // tree above is late, or the parent is cut off and repairing (it says so), replacing it only adds churn. One
        // that has sent nothing at all for longer than any late parent goes quiet is failing whatever the mesh holds.
        // A parent cut off for longer than a repair takes is failing too (it may never be back).
        let silent_s = self.now - parent.last_block_at;
        let around = self.peers.list.iter().any(|k| k.holds(seq));
        let mute = silent_s >= super::tree::WITHHELD_SILENCE_SEGMENTS * self.cfg.segment_s;
        let stranded = parent
            .cut_off_since
            .is_some_and(|since| self.now - since >= CUT_OFF_PATIENCE * self.cfg.attach_timeout_s);
        // A parent that says it is connected and has gone quiet is asked where it stands at once (see
        // `ask_silent_parent`), rather than once it has been silent a whole segment.
        if silent_s > self.cfg.silence_s {
            let nothing_of_it = parent.last_block_seq.is_none_or(|last| last < seq) && owed_whole;
            self.ask_silent_parent(seq, nothing_of_it);
        }
        if silent_s > self.cfg.silence_s && (around || mute) && (parent.claims_rooted || stranded) {
            self.strike_parent(seq);
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

    /// Blocks of `seg` the origin should send when its time comes: those no one is sending, and those pulled from
    /// a peer that is slow to answer — and, for the first segment, every block still being pulled (a slow peer must
    /// not hold up the start: peers' answers to a joiner are the least certain).
    pub(super) fn origin_open(&self, seg: &Segment) -> u128 {
        let starting = self.player.started_at.is_none() && self.player.start == Some(seg.info.seq);
        if starting {
            return seg.all() & !seg.have & !seg.from_origin;
        }
        // A pull is given up on when it is slow to answer, or when the origin's last chance for the segment has come
        // (a rescue pull sent just before would otherwise keep the origin waiting past the deadline).
        let last_chance = self
            .due(seg)
            .is_some_and(|due| self.now >= due - self.cfg.deadline_margin_s - self.origin_s(seg.all() & !seg.have));
        let slow_since = if last_chance {
            f64::INFINITY
        } else {
            self.now - self.cfg.slow_pull_s
        };
        let slow = self
            .pulls
            .iter()
            .filter(|p| p.seq == seg.info.seq && p.sent_at <= slow_since)
            .fold(0u128, |bits, p| bits | 1u128 << p.block);
        // What the parent still brings in time is left to it.
        let open = if self.expects_push(seg.info.seq) {
            seg.unrequested() & seg.skipped
        } else {
            seg.unrequested()
        };
        open | (slow & !seg.have & !seg.from_origin)
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
            seg.skipped |= 1u128 << block;
        }
        self.pump_pulls();
    }
}
