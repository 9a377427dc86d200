//! The mesh: a few neighbours per peer that tell each other which segments they hold (HAVE) and pull missing
//! blocks from each other, urgent first, then rarest first; and the answers to pulls, within the upload budget.

use super::config::Role;
use super::machine::{BlockSource, EXPIRED_PULLS, HELD_MESSAGES, OriginFetch, PeerId, Pull, SeqClass, TreeMesh};
use super::message::{Advert, Message, Refusal, SegmentInfo};
use super::peers::{OptSeq, OptTime};
use super::tree::UNMEASURED_LATENCY_S;
use super::window::MAX_BLOCKS;
use crate::score::Offence;

/// Segments due later than this many segment durations from now are not urgent: among them, rarest first.
const URGENT_SEGMENTS: f64 = 2.0;
/// A peer that refused to be a mesh neighbour is not asked again for this long.
const MESH_RETRY_S: f64 = 30.0;
/// The estimate of one origin fetch never exceeds this.
const MAX_ORIGIN_TOOK_S: f64 = 1.0;
/// A segment heard of reaches the first level of the tree about this long later (a segment's time on a link at
/// the promised rate), for guessing who holds it.
const LIKELY_BASE_S: f64 = 1.5;
/// …and each level below about this much later.
const LIKELY_PER_HOP_S: f64 = 0.2;
/// Segments a parent remembers a child's skips for (skips are for the segments in flight).
const SKIPS_KEPT: usize = 4;
/// A peer that refused a pull is not asked again for this long.
const BUSY_BACKOFF_S: f64 = 1.0;
/// Answers to one peer's pulls queued at most: twice the pulls an honest peer has in flight to one neighbour
/// ([`super::Config::max_pulls_per_peer`]'s default); beyond, its pulls are answered "busy".
const MAX_SERVES_PER_PEER: usize = 4;
/// Answers queued for one peer beyond which its pulls are a flood, and penalised.
const FLOOD_SERVES_PER_PEER: usize = 2 * MAX_SERVES_PER_PEER;

impl<P: PeerId> TreeMesh<P> {
    /// Asks the nearest known peers to be mesh neighbours until there are `mesh_degree` of them. Forwarders too: when
    /// a parent high in the tree leaves, its whole subtree is cut off, and the forwarders in it rescue their
    /// subtrees from neighbours elsewhere in the tree (measured at 10,000 viewers: availability 0.995 against
    /// 0.990 with a mesh of leaves only).
    pub(super) fn fill_mesh(&mut self) {
        let have = self.peers.mesh().count();
        let asking = self
            .peers
            .list
            .iter()
            .filter(|k| !k.mesh && k.asked_at.is_some())
            .count();
        let wanted = self.cfg.mesh_degree.saturating_sub(have + asking);
        if wanted == 0 {
            return;
        }
        let mut candidates: Vec<(f64, P)> = self
            .peers
            .list
            .iter()
            .filter(|k| {
                !k.mesh
                    && k.asked_at.is_none()
                    && k.busy_until <= self.now
                    && k.depth != Some(0)
                    && self.can_link(k.reachable)
            })
            .map(|k| {
                (
                    k.latency.get().unwrap_or(UNMEASURED_LATENCY_S) + f64::from(k.strikes) * 0.05,
                    k.id,
                )
            })
            .collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let advert = self.advert();
        let now = self.now;
        for (_, id) in candidates.into_iter().take(wanted) {
            if let Some(k) = self.peers.get_mut(id) {
                k.asked_at = OptTime::some(now);
            }
            self.send(
                id,
                Message::MeshJoin {
                    advert: Box::new(advert.clone()),
                },
            );
        }
    }

    pub(super) fn on_mesh_join(&mut self, from: P, advert: Advert<P>) {
        let room = self.cfg.role == Role::Viewer && self.peers.mesh().count() < 2 * self.cfg.mesh_degree;
        let now = self.now;
        let pinned = self.pinned_fn();
        let accepted = room
            && match self.peers.entry(from, advert.reachable, now, pinned) {
                Some(k) => {
                    k.apply(&advert, now);
                    k.mesh = true;
                    true
                }
                None => false,
            };
        let advert = self.advert();
        self.send(
            from,
            Message::MeshReply {
                accepted,
                advert: Box::new(advert),
            },
        );
        if accepted {
            self.pump_pulls();
        }
    }

    pub(super) fn on_mesh_reply(&mut self, from: P, accepted: bool, advert: Advert<P>) {
        let now = self.now;
        // Only an answer to our own request counts: nobody joins our mesh by saying it has.
        let Some(k) = self.peers.get_mut(from).filter(|k| k.asked_at.is_some() && !k.mesh) else {
            return;
        };
        if let Some(asked) = k.asked_at.take() {
            k.latency = OptTime::some((now - asked) / 2.0);
        }
        k.apply(&advert, now);
        k.mesh = accepted;
        if !accepted {
            // Full: do not ask again soon (the next tick asks someone else).
            k.busy_until = now + MESH_RETRY_S;
        }
        if accepted {
            self.pump_pulls();
        }
    }

    /// A child gets these blocks elsewhere: take them off its push queue.
    pub(super) fn on_skip(&mut self, from: P, seq: u64, blocks: u128) {
        if self.classify(seq) == SeqClass::Impossible {
            self.misbehaved(from, Offence::Lie);
            return;
        }
        if let Some(child) = self.children.iter_mut().find(|c| c.id == from) {
            child.queue.retain(|(s, b)| s.seq != seq || blocks & (1u128 << b) == 0);
            // Blocks not here yet must not be pushed when they come either.
            match child.skips.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, bits)) => *bits |= blocks,
                None => {
                    if child.skips.len() >= SKIPS_KEPT {
                        child.skips.pop_front();
                    }
                    child.skips.push_back((seq, blocks));
                }
            }
        }
    }

    /// A peer says it holds blocks of a segment. Only a signed entry makes a segment known: a HAVE for one a little
    /// ahead of the newest signed is held until its entry comes, one for a segment that cannot exist yet is a lie.
    pub(super) fn on_have(&mut self, from: P, segment: SegmentInfo, blocks: u128) {
        match self.classify(segment.seq) {
            SeqClass::Impossible => {
                self.misbehaved(from, Offence::Lie);
                return;
            }
            SeqClass::Ahead => {
                if self.guard.held_haves.len() >= HELD_MESSAGES {
                    self.guard.held_haves.pop_front();
                }
                self.guard.held_haves.push_back((from, segment, blocks));
                return;
            }
            SeqClass::Known => {}
        }
        if self.children.iter().any(|c| c.id == from) {
            self.on_skip(from, segment.seq, blocks);
            return;
        }
        // The block layout is the signed entry's, whatever size the HAVE says.
        let whole = self.window.get(segment.seq).is_none_or(|s| blocks & s.all() == s.all());
        if let Some(k) = self.peers.get_mut(from) {
            if whole {
                k.newest = OptSeq::some(k.newest.get().map_or(segment.seq, |n| n.max(segment.seq)));
                k.oldest = OptSeq::some(k.oldest.get().map_or(segment.seq, |o| o.min(segment.seq)));
            }
        }
        self.pump_pulls();
    }

    /// A segment heard of: put it in the window when it is one this peer plays.
    pub(super) fn learn(&mut self, segment: SegmentInfo) {
        if self.cfg.role != Role::Viewer || !self.joined {
            return;
        }
        let start = *self.player.start.get_or_insert(segment.seq);
        self.window.skip_below(start);
        if segment.seq >= start {
            self.window
                .insert(segment, self.cfg.block_size, self.cfg.window_segments, self.now);
            self.plan_start();
        }
    }

    /// A pull arrived: serve it if the block is here and the budget allows, else say why not. What is served is
    /// described by the signed entry, never by the request.
    pub(super) fn on_want(&mut self, from: P, segment: SegmentInfo, block: u16) {
        let seq = segment.seq;
        if block >= MAX_BLOCKS || self.classify(seq) == SeqClass::Impossible {
            self.misbehaved(from, Offence::Lie);
            self.send(
                from,
                Message::Refused {
                    seq,
                    block: block.min(MAX_BLOCKS - 1),
                    reason: Refusal::Missing,
                },
            );
            return;
        }
        let held = self
            .window
            .get(seq)
            .filter(|s| s.have & (1u128 << block) != 0)
            .map(|s| s.info);
        let queued = self.serves.iter().filter(|(to, ..)| *to == from).count();
        let reason = match held {
            None => Some(Refusal::Missing),
            Some(_) if queued >= MAX_SERVES_PER_PEER => {
                // An honest puller has a few pulls in flight to one peer, and a few more it gave up on while they
                // waited behind our children's pushes: more than that is a flood. Either way the answer is "busy".
                if queued >= FLOOD_SERVES_PER_PEER {
                    self.misbehaved(from, Offence::QuotaOverrun);
                }
                Some(Refusal::Busy)
            }
            Some(info) if !self.may_serve() || !self.queue_serve(from, info, block) => Some(Refusal::Busy),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            self.send(from, Message::Refused { seq, block, reason });
        }
    }

    /// Whether the policy lets this peer answer pulls at all.
    fn may_serve(&self) -> bool {
        self.cfg.budget() > 0.0 && self.ratio_allows()
    }

    pub(super) fn on_refused(&mut self, from: P, seq: u64, block: u16, reason: Refusal) {
        self.end_pull(from, seq, block);
        self.on_evidence(from, seq, Some(reason));
        let now = self.now;
        if let Some(k) = self.peers.get_mut(from) {
            k.strikes = k.strikes.saturating_add(1);
            k.busy_until = now + BUSY_BACKOFF_S;
            if reason == Refusal::Missing && k.newest.get().is_some_and(|n| n >= seq) {
                // It does not hold what it announced (it dropped it, or we guessed from a range): stop assuming.
                k.oldest = OptSeq::some(seq + 1);
            }
        }
        self.pump_pulls();
    }

    /// Forgets a pull in flight.
    fn end_pull(&mut self, from: P, seq: u64, block: u16) -> bool {
        let Some(i) = self
            .pulls
            .iter()
            .position(|p| p.from == from && p.seq == seq && p.block == block)
        else {
            return false;
        };
        self.pulls.swap_remove(i);
        if let Some(seg) = self.window.get_mut(seq) {
            seg.pulling &= !(1u128 << block);
        }
        if let Some(k) = self.peers.get_mut(from) {
            k.pulls = k.pulls.saturating_sub(1);
        }
        true
    }

    pub(super) fn drop_pulls_from(&mut self, peer: P) {
        let dropped: Vec<Pull<P>> = self.pulls.iter().filter(|p| p.from == peer).copied().collect();
        for p in dropped {
            self.end_pull(p.from, p.seq, p.block);
        }
    }

    /// Pulls that timed out go elsewhere; the peer that let them time out gets a strike.
    pub(super) fn expire_pulls(&mut self) {
        let now = self.now;
        let expired: Vec<Pull<P>> = self.pulls.iter().filter(|p| p.deadline <= now).copied().collect();
        for p in &expired {
            self.end_pull(p.from, p.seq, p.block);
            if self.guard.expired_pulls.len() >= EXPIRED_PULLS {
                self.guard.expired_pulls.pop_front();
            }
            self.guard.expired_pulls.push_back((p.from, p.seq, p.block));
            if let Some(k) = self.peers.get_mut(p.from) {
                k.strikes = k.strikes.saturating_add(2);
            }
        }
        if !expired.is_empty() {
            self.pump_pulls();
        }
    }

    /// Whether segment `seq` comes by push: a parent pushes from before it. (While a parent is being found, what
    /// peers already hold is pulled; the new parent is told to skip what came that way.)
    pub(super) fn expects_push(&self, seq: u64) -> bool {
        self.parent.is_some_and(|p| seq >= p.from_seq)
    }

    /// Asks neighbours for blocks nobody is sending: segments no parent pushes, and pushed segments that are
    /// overdue. Urgent segments in playback order first; among the rest, the rarest first.
    pub(super) fn pump_pulls(&mut self) {
        if self.cfg.role != Role::Viewer || !self.joined || self.pulls.len() >= self.cfg.max_pulls {
            return;
        }
        let Some(start) = self.player.start else { return };
        // Most calls find nothing to pull (pushes are on time): look before sorting anything.
        if !self
            .window
            .iter_incomplete()
            .any(|s| s.info.seq >= start && self.pull_open(s) != 0)
        {
            return;
        }
        let expected_start = self.expected_start();
        let horizon = self.now + URGENT_SEGMENTS * self.cfg.segment_s;
        let mut wanted: Vec<(bool, usize, u64)> = self
            .window
            .iter_incomplete()
            .filter(|s| s.info.seq >= start && self.pull_open(s) != 0)
            .map(|s| {
                let due = self.player.due(s.info.seq, self.cfg.segment_s, expected_start);
                let holders = self.peers.list.iter().filter(|k| k.holds(s.info.seq)).count();
                let urgent = due <= horizon;
                (!urgent, if urgent { 0 } else { holders }, s.info.seq)
            })
            .collect();
        wanted.sort_unstable();
        for (_, _, seq) in wanted {
            let Some(seg) = self.window.get(seq) else { continue };
            let (info, blocks, mut open, heard_at) = (seg.info, seg.blocks, self.pull_open(seg), seg.heard_at);
            for block in 0..blocks {
                if self.pulls.len() >= self.cfg.max_pulls {
                    return;
                }
                if open & (1u128 << block) == 0 {
                    continue;
                }
                let Some(from) = self.pull_source(seq, heard_at) else {
                    break;
                };
                open &= !(1u128 << block);
                self.start_pull(from, info, block);
            }
        }
    }

    /// When `pump_pulls` could next send a pull: blocks are waiting for a source, and one is free now (an input made
    /// it so without pumping), or a neighbour's busy back-off ends or it becomes likely to hold the segment. `None`
    /// when nothing waits for that.
    pub(super) fn next_pull_at(&self) -> Option<f64> {
        if self.cfg.role != Role::Viewer || !self.joined || self.pulls.len() >= self.cfg.max_pulls {
            return None;
        }
        let start = self.player.start?;
        let now = self.now;
        self.window
            .iter_incomplete()
            .filter(|s| s.info.seq >= start && self.pull_open(s) != 0)
            .flat_map(|s| {
                let (seq, heard_at) = (s.info.seq, s.heard_at);
                let old = seq + 1 < self.pull_before;
                self.peers
                    .list
                    .iter()
                    .filter(|k| usize::from(k.pulls) < self.cfg.max_pulls_per_peer && self.can_link(k.reachable))
                    .filter_map(move |k| {
                        let eligible = if k.holds(seq) || (old && k.newest.get().is_none_or(|n| n < seq)) {
                            now
                        } else if k.newest.get().is_none_or(|n| n < seq) && k.rooted {
                            heard_at + LIKELY_BASE_S + f64::from(k.depth?) * LIKELY_PER_HOP_S
                        } else {
                            return None;
                        };
                        Some(eligible.max(k.busy_until))
                    })
            })
            .map(|t| t.max(now))
            .min_by(f64::total_cmp)
    }

    /// Blocks of `seg` to pull: all that nobody sends, but of a segment the parent pushes only those it was told
    /// to skip.
    fn pull_open(&self, seg: &super::window::Segment) -> u128 {
        if self.expects_push(seg.info.seq) {
            seg.pullable() & seg.skipped
        } else {
            seg.pullable()
        }
    }

    /// The best neighbour (or probed peer) to pull a block of `seq` from: one known to hold it, or one deep enough
    /// in the broadcaster's tree that it should by now (a segment heard of at `heard_at` reaches depth `d` about
    /// [`LIKELY_BASE_S`] + `d` × [`LIKELY_PER_HOP_S`] later; a wrong guess costs one refusal).
    fn pull_source(&self, seq: u64, heard_at: f64) -> Option<P> {
        let now = self.now;
        // A segment older than the newest at joining time is one nearly every peer holds by now: any peer is worth a
        // try, probed or not (a joiner's first pulls then wait for no probe answer).
        let old = seq + 1 < self.pull_before;
        let likely = |k: &super::peers::Known<P>| {
            k.newest.get().is_none_or(|n| n < seq)
                && (old
                    || (k.rooted
                        && k.depth
                            .is_some_and(|d| now >= heard_at + LIKELY_BASE_S + f64::from(d) * LIKELY_PER_HOP_S)))
        };
        self.peers
            .list
            .iter()
            .filter(|k| {
                (k.holds(seq) || likely(k))
                    && usize::from(k.pulls) < self.cfg.max_pulls_per_peer
                    && k.busy_until <= self.now
                    && self.can_link(k.reachable)
            })
            .map(|k| {
                let cost = k.latency.get().unwrap_or(UNMEASURED_LATENCY_S)
                    + if k.holds(seq) { 0.0 } else { 0.15 }
                    + 0.1 * f64::from(k.pulls)
                    + 0.2 * f64::from(k.strikes)
                    + if k.depth == Some(0) { 1.0 } else { 0.0 };
                (cost, k.id)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, id)| id)
    }

    fn start_pull(&mut self, from: P, segment: SegmentInfo, block: u16) {
        let deadline = self.now + self.cfg.pull_timeout_s;
        self.pulls.push(Pull {
            from,
            seq: segment.seq,
            block,
            sent_at: self.now,
            deadline,
        });
        if let Some(seg) = self.window.get_mut(segment.seq) {
            seg.pulling |= 1u128 << block;
        }
        if let Some(k) = self.peers.get_mut(from) {
            k.pulls += 1;
        }
        self.send(from, Message::Want { segment, block });
    }

    /// A verified block arrived: keep it, count it, pass it down the tree, and tell the mesh when its segment is
    /// whole.
    pub(super) fn on_block(&mut self, from: BlockSource<P>, segment: SegmentInfo, block: u16) {
        self.learn(segment);
        let bytes = f64::from(segment.block_bytes(block, self.cfg.block_size));
        match from {
            BlockSource::Peer(peer) => {
                let evidence = self.on_evidence(peer, segment.seq, None);
                if self.end_pull(peer, segment.seq, block) {
                    if let Some(k) = self.peers.get_mut(peer) {
                        k.strikes = k.strikes.saturating_sub(1);
                        k.served = true;
                    }
                } else if !evidence
                    && !self.pushes_to_us(peer)
                    && !self.guard.expired_pulls.contains(&(peer, segment.seq, block))
                {
                    // Nobody asked for it: payload from a peer that is neither our parent nor one we pulled from
                    // (verified, so it is kept, but it cost our downlink). One that takes us for its child is told
                    // we are not.
                    self.misbehaved(peer, Offence::Unsolicited);
                    self.send(peer, Message::Detach);
                }
                // The origin need not send it any more: its capacity is everyone's last resort.
                if let Some(i) = self
                    .origin
                    .iter()
                    .position(|f| f.seq == segment.seq && f.block == block)
                {
                    self.origin.swap_remove(i);
                    if let Some(seg) = self.window.get_mut(segment.seq) {
                        seg.from_origin &= !(1u128 << block);
                        seg.hedged &= !(1u128 << block);
                    }
                    self.out.push_back(super::Output::CancelOrigin { segment, block });
                }
            }
            BlockSource::Origin => self.end_origin_fetch(segment, block),
        }
        let Some(seg) = self.window.get_mut(segment.seq) else {
            return;
        };
        let bit = 1u128 << block;
        if seg.have & bit != 0 || block >= seg.blocks {
            self.counters.duplicate += bytes;
            self.pump_pulls();
            return;
        }
        seg.have |= bit;
        match from {
            BlockSource::Peer(_) => self.counters.from_peers += bytes,
            BlockSource::Origin => self.counters.from_origin += bytes,
        }
        let complete = seg.is_complete();
        let rescued = seg.skipped != 0;
        let first_of_segment = seg.have == bit;
        let since_heard = self.now - seg.heard_at;
        if complete {
            seg.complete_at = Some(self.now);
        }
        if let Some(parent) = self.parent.as_mut().filter(|p| from == BlockSource::Peer(p.id)) {
            if parent.last_block_seq == Some(segment.seq) {
                let gap = self.now - parent.last_block_at;
                parent.gap_s = 0.8 * parent.gap_s + 0.2 * gap;
            }
            parent.last_block_at = self.now;
            parent.last_block_seq = Some(segment.seq);
            if first_of_segment && !rescued {
                self.first_push_s = Some(self.first_push_s.map_or(since_heard, |l| 0.8 * l + 0.2 * since_heard));
            }
        }
        self.push_to_children(segment, block);
        if complete {
            self.window.advance();
            self.player.completed(segment.seq, self.now, self.cfg.segment_s);
            if !rescued && let Some(parent) = self.parent.as_mut() {
                let recovered = parent.strikes > 0;
                parent.strikes = 0;
                if recovered {
                    // The parent delivers again: so do we, as far as our subtree is concerned.
                    let rooted = parent.claims_rooted;
                    self.set_path(self.path.clone(), rooted);
                }
            }
            self.out.push_back(super::Output::SegmentComplete(segment));
            let blocks = self.window.get(segment.seq).map_or(0, |s| s.all());
            // Neighbours that said they hold it already are not told: they will not pull it (a buffer map's
            // deltas, as in CoolStreaming). Peers of a mesh finish a segment at about the same time, so this
            // leaves out two HAVEs in five.
            let seq = segment.seq;
            let mesh: Vec<P> = self.peers.mesh().filter(|k| !k.holds(seq)).map(|k| k.id).collect();
            for id in mesh {
                self.send(id, Message::Have { segment, blocks });
            }
        }
        self.pump_pulls();
    }

    /// Whether `peer` may push to us: our parent, or the one we just left (its pushes already on the way).
    fn pushes_to_us(&self, peer: P) -> bool {
        self.parent.is_some_and(|p| p.id == peer) || self.was_parent_lately(peer)
    }

    fn end_origin_fetch(&mut self, segment: SegmentInfo, block: u16) {
        let Some(i) = self
            .origin
            .iter()
            .position(|f| f.seq == segment.seq && f.block == block)
        else {
            return;
        };
        let OriginFetch { sent_at, .. } = self.origin.swap_remove(i);
        if let Some(seg) = self.window.get_mut(segment.seq) {
            seg.from_origin &= !(1u128 << block);
            seg.hedged &= !(1u128 << block);
        }
        let took = (self.now - sent_at).clamp(1e-3, 10.0);
        // Capped: a busy origin must not make every peer fetch ever earlier (more load, slower still).
        self.origin_took_s = (0.7 * self.origin_took_s + 0.3 * took).min(MAX_ORIGIN_TOOK_S);
    }
}
