//! The backbone tree: joining, choosing and replacing a parent, taking children, and pushing blocks down as they
//! arrive (cut-through: a block goes on as soon as it is verified, never waiting for its segment).

use super::config::Role;
use super::machine::{MAX_COMPLAINTS, MAX_REPORTED, Suspicion};
use super::machine::{PeerId, TreeMesh};
use super::message::{Advert, Message, Refusal, SegmentInfo, WITHHELD_COMPLAINTS};
use super::peers::OptTime;
use crate::score::Offence;

/// Longest path a tree may have: deeper is refused (a bound on adverts, and a backstop against a loop that forms
/// in a race faster than the path checks can see it).
pub const MAX_DEPTH: usize = 32;
/// Latency assumed for a peer not yet measured.
pub(super) const UNMEASURED_LATENCY_S: f64 = 0.1;
/// After a refusal or a timeout, a candidate parent is left alone this long.
pub(super) const RETRY_AFTER_S: f64 = 10.0;
/// Pushed segments rescued from the mesh this many times in a row make a parent one to replace.
const STRIKES_TO_REPLACE: u8 = 2;
/// A parent silent this many segment durations when it is replaced for being late is suspected of withholding the
/// stream (an honest parent that is late still sends what it has).
pub(super) const WITHHELD_SILENCE_SEGMENTS: f64 = 1.0;
/// A peer whose parent has sent nothing for this many segment durations says it is not fed (the stream comes a
/// block every tenth of a segment from a parent that has it).
const STARVING_SEGMENTS: f64 = 1.0;
/// A suspect's answer to a probe is waited for this long.
pub(super) const SUSPICION_S: f64 = 2.0;
/// A complaint of withholding keeps requests from the accused this long (a few segments: the children of one
/// withholder notice it within the same two or three segments).
pub(super) const COMPLAINTS_WINDOW_S: f64 = 30.0;
/// Complaints count towards letting the accused go this long: a suspect gets no newcomers, so the next child to
/// find it out may come only once its first complaint has lapsed — counting only the window's complaints, a
/// withholder that starves each child it is given would keep its place, and starve one newcomer per window.
pub(super) const COMPLAINTS_KEPT_S: f64 = 300.0;
/// A child let go for withholding is refused as a child this long.
const SHUN_S: f64 = 600.0;
/// Peers refused as children at once, at most.
const MAX_SHUNNED: usize = 16;
/// Peers taken from one probe's answer at most (an honest peer names four).
const EXCHANGED_TAKEN: usize = 8;

impl<P: PeerId> TreeMesh<P> {
    pub(super) fn on_join(
        &mut self,
        tail: Vec<SegmentInfo>,
        candidates: Vec<(P, bool)>,
        root: Option<P>,
        live_age_s: Option<f64>,
    ) {
        self.joined = true;
        self.joined_at = self.now;
        let newest = tail.iter().map(|s| s.seq).max();
        for info in &tail {
            // When it was made, as far as known: when it would have been heard of had we been there.
            let behind = newest.map_or(0, |n| n - info.seq) as f64 * self.cfg.segment_s;
            let made = live_age_s.map_or(self.now, |age| self.now - age - behind);
            self.window
                .insert(*info, self.cfg.block_size, self.cfg.window_segments, made);
        }
        // Start one segment behind the live edge: the player holds one segment while the next is made.
        if let Some(newest) = tail.iter().map(|s| s.seq).max() {
            // The first segment, which nearly every peer holds, is pulled, striped over them: it is the fastest way
            // to it, and no attach, however slow, holds it up. The parent pushes from the newest on, cut-through as
            // it arrives, which beats pulling it once neighbours have it whole.
            self.pull_before = newest;
            let start = newest
                .saturating_sub(1)
                .max(tail.iter().map(|s| s.seq).min().unwrap_or(0));
            self.player.start = Some(start);
            self.window.skip_below(start);
            self.plan_start();
        }
        self.root = root;
        self.on_candidates(candidates);
        // The broadcaster places us in its tree while we probe: a place now, the best one later (a jump).
        self.try_attach();
        // The first segment is old enough that nearly every peer holds it: ask for it at once, without waiting for
        // the probes' answers.
        self.pump_pulls();
    }

    /// The startup rule: playback starts one segment behind the live edge — with the first segment, once the next
    /// exists — and not before that next one has [`super::Config::min_slack_s`] between its making and its deadline
    /// (one segment after playback starts). Set once the next segment is known.
    pub(super) fn plan_start(&mut self) {
        if self.player.earliest.is_some() || self.cfg.role != Role::Viewer {
            return;
        }
        let Some(next) = self.player.start.and_then(|s| self.window.get(s + 1)) else {
            return;
        };
        self.player.earliest = Some(next.heard_at + self.cfg.min_slack_s - self.cfg.segment_s);
    }

    /// When playback is expected to start, before it has: the startup plan, and never before the startup rule allows
    /// — for a viewer that came before the stream had two segments, once the next after its first is made, about a
    /// segment after the first was heard of.
    pub(super) fn expected_start(&self) -> f64 {
        let plan = self.joined_at + self.cfg.startup_s;
        match self.player.earliest {
            Some(earliest) => plan.max(earliest),
            None => match self.player.start.and_then(|s| self.window.get(s)) {
                Some(first) => plan.max(first.heard_at + self.cfg.min_slack_s),
                None => f64::INFINITY,
            },
        }
    }

    pub(super) fn on_candidates(&mut self, candidates: Vec<(P, bool)>) {
        self.finding = false;
        self.probe(candidates);
    }

    /// Probes up to `probe_count` of `candidates` not measured lately; attaches at once when there are none.
    fn probe(&mut self, candidates: Vec<(P, bool)>) {
        let now = self.now;
        self.last_probe = now;
        let mut probed = 0;
        for (id, reachable) in candidates {
            if id == self.me || probed >= self.cfg.probe_count || !self.can_link(reachable) {
                continue;
            }
            let pinned = self.pinned_fn();
            let Some(k) = self.peers.entry(id, reachable, now, pinned) else {
                break;
            };
            // Measured lately, or a probe to it is still out: no second probe (discovery may name a peer many times
            // over in a second).
            if (k.latency.is_some() && k.seen > now - 10.0) || k.asked_at.is_some() {
                continue;
            }
            k.asked_at = OptTime::some(now);
            probed += 1;
            self.send(id, Message::Probe);
        }
        if probed > 0 {
            self.probe_until = Some(now + self.cfg.probe_wait_s);
        } else if self.parent.is_none() && self.attempt.is_none() {
            self.try_attach();
        }
    }

    /// Peers the table must not evict: the parent, an attach candidate, children.
    pub(super) fn pinned_fn(&self) -> impl Fn(P) -> bool + use<P> {
        let (parent, attempt) = (self.parent.map(|p| p.id), self.attempt.map(|a| a.id));
        move |id| parent == Some(id) || attempt == Some(id)
    }

    pub(super) fn on_probe_reply(&mut self, from: P, advert: Advert<P>, peers: Vec<(P, bool)>) {
        self.settle_suspicion(from, &advert);
        let now = self.now;
        // An answer is taken from a peer we know (we probed it, or it is a neighbour): a stranger's unasked "answer"
        // would only fill the table with the peers it names.
        let Some(k) = self.peers.get_mut(from) else {
            return;
        };
        if let Some(asked) = k.asked_at.take() {
            k.latency = OptTime::some((now - asked) / 2.0);
        }
        k.apply(&advert, now);
        for (id, reachable) in peers.into_iter().take(EXCHANGED_TAKEN) {
            if id != self.me && self.can_link(reachable) {
                let pinned = self.pinned_fn();
                self.peers.entry(id, reachable, now, pinned);
            }
        }
        self.pump_pulls();
        let waiting = self.peers.list.iter().any(|k| k.asked_at.is_some() && !k.mesh);
        if !waiting && self.probe_until.is_some() {
            self.probe_until = None;
            self.after_probing();
        }
    }

    /// Probing is over (all answered or time is up): attach and fill the mesh with what is known.
    pub(super) fn after_probing(&mut self) {
        for k in &mut self.peers.list {
            if !k.mesh {
                k.asked_at = OptTime::NONE;
            }
        }
        if self.parent.is_none() && self.attempt.is_none() {
            self.try_attach();
        }
        self.fill_mesh();
    }

    /// Where a new parent should start pushing: the oldest segment not yet whole (at most one behind the newest
    /// known), with the blocks of it already held or coming from elsewhere — so that a move between parents
    /// mid-segment loses nothing and repeats nothing — and never a segment that existed when this peer joined.
    pub(super) fn push_from(&self) -> (u64, u128) {
        let floor = self.player.start.unwrap_or(0).max(self.pull_before);
        let newest = self.window.iter().next_back().map(|s| s.info.seq);
        let incomplete = self
            .window
            .iter()
            .find(|s| s.info.seq >= floor && !s.is_complete())
            .map(|s| s.info.seq);
        let from = match (incomplete, newest) {
            (Some(s), Some(n)) => s.max(n.saturating_sub(1)),
            (None, Some(n)) => n + 1,
            (_, None) => floor,
        }
        .max(floor);
        let held = self.window.get(from).map_or(0, |s| s.have | s.pulling | s.from_origin);
        (from, held)
    }

    /// Leaves `id` alone as a parent candidate for a while.
    pub(super) fn avoid(&mut self, id: P) {
        let until = self.now + RETRY_AFTER_S;
        if let Some(k) = self.peers.get_mut(id) {
            k.spare = 0;
            k.not_before = until;
        }
        // Remembered apart from the table too (it may not hold the peer): a request passed down the tree can land
        // on it again.
        let now = self.now;
        self.guard.avoiding.retain(|(p, t)| *p != id && *t > now);
        if self.guard.avoiding.len() >= MAX_SHUNNED {
            self.guard.avoiding.pop_front();
        }
        self.guard.avoiding.push_back((id, until));
    }

    /// Whether `id` is a parent we left lately for failing us.
    pub(super) fn avoids(&self, id: P) -> bool {
        self.guard
            .avoiding
            .iter()
            .any(|(p, until)| *p == id && *until > self.now)
    }

    pub(super) fn on_detach(&mut self, from: P) {
        let was_child = self.children.iter().any(|c| c.id == from);
        self.children.retain(|c| c.id != from);
        if was_child {
            self.advertise_changes();
        }
        if self.parent.is_some_and(|p| p.id == from) {
            self.avoid(from);
            self.lose_parent();
        }
    }

    pub(super) fn on_update(&mut self, from: P, advert: Advert<P>) {
        let now = self.now;
        if let Some(k) = self.peers.get_mut(from) {
            k.apply(&advert, now);
        }
        if let Some(c) = self.children.iter_mut().find(|c| c.id == from) {
            // The child speaks to us itself: its place is confirmed, and payload may flow.
            let confirmed = !c.confirmed;
            c.confirmed = true;
            c.spare = advert.spare_slots;
            c.backbone = advert.backbone;
            c.capable = advert.forwards;
            c.reachable = advert.reachable;
            c.room = advert.room;
            c.any_room = advert.any_room;
            c.any_free = advert.any_free;
            c.backbone_room = advert.backbone_room;
            c.fringe = advert.fringe;
            c.free = advert.free;
            c.routed = 0;
            self.advertise_changes();
            if confirmed {
                self.pump_uploads();
            }
        }
        if self.parent.is_some_and(|p| p.id == from) {
            if advert.path.contains(&self.me) || advert.path.len() >= MAX_DEPTH {
                self.send(from, Message::Detach);
                self.avoid(from);
                self.lose_parent();
            } else {
                let mut starving = false;
                let now = self.now;
                if let Some(parent) = self.parent.as_mut() {
                    parent.claims_rooted = advert.rooted;
                    parent.cut_off_since = match (advert.rooted, parent.cut_off_since) {
                        (true, _) => None,
                        (false, since) => Some(since.unwrap_or(now)),
                    };
                    starving = parent.strikes > 0;
                }
                let mut path = advert.path;
                path.push(from);
                self.set_path(path, advert.rooted && !starving);
            }
        }
    }

    /// The parent is gone: cut off until a new one accepts; children hear that we are cut off.
    pub(super) fn lose_parent(&mut self) {
        if let Some(old) = self.parent.take() {
            self.remember_former_parent(old.id);
        }
        // The grandparent just lost a child, so it has a free slot (or, full again, will point down its tree):
        // the orphan asks it first.
        let grandparent = self.path.len().checked_sub(2).map(|i| (self.path[i], i, self.rooted));
        self.set_path(Vec::new(), false);
        // Whoever was below us is now cut off too, and we cannot tell them from the rest: trust no one's place in
        // the broadcaster's tree until they advertise it again (the broadcaster's is certain).
        for k in &mut self.peers.list {
            if !k.is_root() {
                k.rooted = false;
            }
        }
        // A forwarder asks the grandparent first: its freed slot is a forwarder's, and the subtree stays where it
        // was. A leaf goes through the broadcaster, to the fringe, like any joiner.
        self.entry = grandparent
            .filter(|(_, _, rooted)| *rooted && self.takes_children())
            .map(|(id, ..)| id);
        self.try_attach();
        self.pump_pulls();
    }

    /// A new path from the root: tell the children (and through them their subtrees).
    pub(super) fn set_path(&mut self, path: Vec<P>, rooted: bool) {
        if path == self.path && rooted == self.rooted {
            return;
        }
        self.path = path;
        self.rooted = rooted;
        if !self.takes_children() && !self.children.is_empty() {
            // Pushed too deep: let the children find places nearer the top.
            for child in std::mem::take(&mut self.children) {
                self.send(child.id, Message::Detach);
            }
        }
        let advert = self.advert();
        let children: Vec<P> = self.children.iter().map(|c| c.id).collect();
        for child in children {
            self.send(
                child,
                Message::Update {
                    advert: Box::new(advert.clone()),
                },
            );
        }
        self.advertise_changes();
    }

    /// Whether this peer may have children where it is now: its capacity and policy allow, and it is not too deep.
    /// A peer need not have proven stable to forward: the tree needs the slots of a burst of joiners at once. Age
    /// decides precedence instead (mTreebone's treebone): a stable peer takes the place of one that is not, and only
    /// stable peers move up.
    pub(super) fn takes_children(&self) -> bool {
        self.capable() && self.not_too_deep()
    }

    fn not_too_deep(&self) -> bool {
        self.cfg.role == Role::Broadcaster || self.path.len() < self.cfg.max_backbone_depth
    }

    /// Whether capacity and policy would make this peer a backbone peer, age aside.
    pub(super) fn capable(&self) -> bool {
        let p = &self.cfg.policy;
        self.cfg.child_slots() >= self.cfg.backbone_min_slots && !p.metered && !p.background && self.ratio_allows()
    }

    /// Free child slots (a slot kept for a recruited forwarder is not free).
    pub(super) fn spare_slots(&self) -> u32 {
        if !self.takes_children() {
            return 0;
        }
        let reserved = u32::from(self.recruiting.is_some());
        self.cfg
            .child_slots()
            .saturating_sub(self.children.len() as u32 + reserved)
    }

    /// Backbone membership follows age, capacity and policy; children beyond what the budget pays for are let go.
    pub(super) fn check_role(&mut self) {
        if self.cfg.role == Role::Viewer {
            let was = self.backbone;
            self.backbone = self.now - self.joined_at >= self.cfg.stable_after_s && self.capable();
            if self.backbone && !was {
                // Promoted: move up to where a backbone peer belongs, leaves and all.
                self.last_jump = f64::NEG_INFINITY;
                self.consider_jump();
            }
        }
        let keep = if self.takes_children() {
            self.cfg.child_slots() as usize
        } else {
            0
        };
        while self.children.len() > keep {
            let child = self.children.pop().expect("longer than keep");
            self.send(child.id, Message::Detach);
        }
        self.advertise_changes();
    }

    /// Tells the neighbours and the parent when what they choose by has changed.
    /// The parent also hears when the nearest free slot below changes, so that the directory of free slots stays
    /// current all the way up.
    pub(super) fn advertise_changes(&mut self) {
        let state = (self.backbone, self.spare_slots() > 0, self.rooted);
        let room = self.rooms();
        let (changed, room_changed) = (state != self.advertised, room != self.advertised_room);
        if !changed && !room_changed {
            return;
        }
        self.advertised = state;
        self.advertised_room = room;
        let advert = self.advert();
        let mut to: Vec<P> = if changed {
            self.peers.mesh().map(|k| k.id).collect()
        } else {
            Vec::new()
        };
        to.extend(self.parent.map(|p| p.id));
        for id in to {
            self.send(
                id,
                Message::Update {
                    advert: Box::new(advert.clone()),
                },
            );
        }
    }

    /// The broadcaster made a segment: it holds every block; push them all.
    pub(super) fn on_published(&mut self, segment: SegmentInfo) {
        if !self
            .window
            .insert(segment, self.cfg.block_size, self.cfg.window_segments, self.now)
        {
            return;
        }
        let Some(seg) = self.window.get_mut(segment.seq) else {
            return;
        };
        seg.have = seg.all();
        seg.complete_at = Some(self.now);
        let blocks = seg.blocks;
        self.window.advance();
        for b in 0..blocks {
            self.push_to_children(segment, b);
        }
    }

    /// Queues a block held for every child that wants it.
    pub(super) fn push_to_children(&mut self, segment: SegmentInfo, block: u16) {
        let mut i = 0;
        while i < self.children.len() {
            let child = &mut self.children[i];
            let skipped = child
                .skips
                .iter()
                .any(|(seq, blocks)| *seq == segment.seq && blocks & (1u128 << block) != 0);
            if segment.seq < child.from_seq || skipped {
                i += 1;
                continue;
            }
            let limit = (self.cfg.child_queue_segments * f64::from(segment.blocks(self.cfg.block_size))).ceil();
            if child.queue.len() as f64 >= limit {
                // Behind by more than the bound (a burst after our own late segment, or a slow link): drop the oldest
                // queued block rather than queue without bound. The child's deadline check rescues it from the mesh
                // or the origin; cutting the child loose would orphan its whole subtree over a passing burst.
                child.queue.pop_front();
            }
            child.queue.push_back((segment, block));
            i += 1;
        }
        self.pump_uploads();
    }

    /// A pushed segment had to be rescued: a strike against the parent; enough of them replace it. A parent that
    /// said it was connected to the broadcaster while the segments it failed to push were around us withheld them:
    /// it is reported, and its own parent is told (see [`Message::Withheld`]).
    pub(super) fn strike_parent(&mut self, seq: u64) {
        let now = self.now;
        let Some(parent) = self.parent.as_mut() else { return };
        parent.strikes += 1;
        let (id, strikes, claims_rooted) = (parent.id, parent.strikes, parent.claims_rooted);
        // A parent that says it is connected and has sent nothing at all for longer than a slow or overloaded parent
        // goes quiet (it sends what it has, late) is asked where it stands: if it says it is fed and holds the
        // segment it did not push us, it withheld it (see `settle_suspicion`).
        let silent_s = now - parent.last_block_at;
        let mute = silent_s >= WITHHELD_SILENCE_SEGMENTS * self.cfg.segment_s;
        if claims_rooted && mute {
            match self.suspicion.as_mut() {
                // Asked early already: its answer (or its silence) now settles a whole segment withheld.
                Some(s) if s.parent == id => s.early = false,
                Some(_) => {}
                None => {
                    let grandparent = self.path.len().checked_sub(2).map(|i| self.path[i]);
                    self.suspicion = Some(Suspicion {
                        parent: id,
                        grandparent,
                        since: now,
                        seq,
                        early: false,
                        owed: false,
                        pulled: false,
                    });
                    self.send(id, Message::Probe);
                }
            }
            if self.suspicion.is_some_and(|s| s.parent == id) {
                // A parent that says it is connected and has sent nothing at all for a whole segment is not slow but
                // stopped — or starving itself, when the break is further up: every peer below a break goes quiet
                // at once, and if each left its parent the whole subtree would scatter into orphans. Its answer,
                // due within a round trip, tells: one starving says so, and is kept while its own repair runs; one
                // fed is left and blamed. Meanwhile our subtree hears that we are cut off.
                self.set_path(self.path.clone(), false);
                return;
            }
        }
        if strikes < STRIKES_TO_REPLACE && !(claims_rooted && mute) {
            if strikes == 1 {
                // Starving: our subtree hears that we are cut off for now, so that it neither takes newcomers nor
                // blames us for what our parent does not send.
                self.set_path(self.path.clone(), false);
            }
            return;
        }
        self.leave_parent(id);
    }

    /// Lets a failing parent go, and looks for another.
    fn leave_parent(&mut self, id: P) {
        self.send(id, Message::Detach);
        self.avoid(id);
        self.lose_parent();
    }

    /// The answer of a parent we suspect of withholding. One silent a whole segment is suspected if it says it is
    /// connected and fed and holds whole the segment it did not push us (one that does not answer at all is only
    /// left and reported, see [`Self::expire_suspicion`]). A parent that is itself behind or cut off says so, and is
    /// not blamed. A parent asked early, after a short silence (see
    /// [`Self::ask_silent_parent`]), that says it is connected and fed is of no use to us now, whatever the reason,
    /// and is left; it is suspected only if it sent nothing at all of a segment it holds whole and we never declined —
    /// an honest parent deep in the tree may be slow, but sends what it has.
    ///
    /// A suspect's word is not proof: an honest parent that was fed late says it holds the segment as soon as it
    /// does, before its pushes reach us. So it is asked for a block of that segment (see [`Self::demand_evidence`]).
    pub(super) fn settle_suspicion(&mut self, from: P, advert: &Advert<P>) {
        let Some(suspicion) = self.suspicion.filter(|s| s.parent == from && !s.pulled) else {
            return;
        };
        self.suspicion = None;
        let withheld =
            advert.rooted && advert.newest.is_some_and(|n| n >= suspicion.seq) && (!suspicion.early || suspicion.owed);
        if advert.rooted && self.parent.is_some_and(|p| p.id == from) {
            // Connected and fed, and of no use to us: left, whatever the reason.
            self.leave_parent(from);
        }
        if withheld {
            self.demand_evidence(suspicion);
        }
    }

    /// Pulls a block of the segment a suspect says it holds whole and did not push us: one that sends it is slow, not
    /// withholding, and is forgiven; one that does not within [`SUSPICION_S`], or says it lacks it, withheld it (see
    /// [`Self::expire_suspicion`], [`Self::on_evidence`]). Its parent hears at once: a complaint only stops it being
    /// offered newcomers, and only a second one, from another child, has it let go (not banned) — its subtree cannot
    /// wait for the evidence. Without the segment's entry (gone from the window) there is nothing to ask for, and no
    /// penalty.
    fn demand_evidence(&mut self, suspicion: Suspicion<P>) {
        self.report_withholder(suspicion.parent, suspicion.grandparent);
        let Some(segment) = self.window.get(suspicion.seq).map(|s| s.info) else {
            return;
        };
        self.suspicion = Some(Suspicion {
            since: self.now,
            pulled: true,
            grandparent: None,
            ..suspicion
        });
        // Not a pull: the block is fetched elsewhere meanwhile, as if the suspect had never been asked.
        self.send(suspicion.parent, Message::Want { segment, block: 0 });
    }

    /// A block of segment `seq` from `from`, or its refusal to send one (`refused`): the evidence a suspect owed.
    /// A block clears it; so does "busy" (it is loaded, not lying); "missing" contradicts its own answer. Returns
    /// whether it was the evidence asked for.
    pub(super) fn on_evidence(&mut self, from: P, seq: u64, refused: Option<Refusal>) -> bool {
        let Some(suspicion) = self.suspicion.filter(|s| s.parent == from && s.pulled && s.seq == seq) else {
            return false;
        };
        self.suspicion = None;
        if refused == Some(Refusal::Missing) {
            self.blame_withholder(suspicion.parent, suspicion.grandparent);
        }
        true
    }

    /// A parent that says it is connected has sent nothing for longer than [`super::Config::silence_s`] while we
    /// needed it: it is asked where it stands at once (see [`Self::settle_suspicion`]), rather than once it has been
    /// silent for a whole segment — a withholder's subtree starves meanwhile. `owed`: it sent nothing of segment
    /// `seq`, and we never told it to skip any of it.
    pub(super) fn ask_silent_parent(&mut self, seq: u64, owed: bool) {
        let Some(parent) = self.parent else { return };
        if self.suspicion.is_some() || !parent.claims_rooted {
            return;
        }
        let grandparent = self.path.len().checked_sub(2).map(|i| self.path[i]);
        self.suspicion = Some(Suspicion {
            parent: parent.id,
            grandparent,
            since: self.now,
            seq,
            early: true,
            owed,
            pulled: false,
        });
        self.send(parent.id, Message::Probe);
    }

    /// A suspect that said it holds a segment and did not send the block of it we asked for withheld it. One that
    /// did not answer the probe at all after a whole segment of silence is as good as gone — a process that died
    /// behind a QUIC connection is silent until the connection times out — so it is left and its parent told, but
    /// not penalised: silence is no evidence. One asked early and not answering is only forgotten (its answer may be
    /// on the way).
    pub(super) fn expire_suspicion(&mut self) {
        if let Some(suspicion) = self.suspicion
            && suspicion.since + SUSPICION_S <= self.now
        {
            self.suspicion = None;
            if suspicion.pulled {
                self.blame_withholder(suspicion.parent, suspicion.grandparent);
            } else if !suspicion.early {
                self.report_withholder(suspicion.parent, suspicion.grandparent);
            }
        }
    }

    fn blame_withholder(&mut self, parent: P, grandparent: Option<P>) {
        self.misbehaved(parent, Offence::Withholding);
        self.report_withholder(parent, grandparent);
    }

    /// Tells `parent`'s parent that it withheld the stream from us, and leaves it if it is still our parent.
    fn report_withholder(&mut self, parent: P, grandparent: Option<P>) {
        if let Some(grandparent) = grandparent {
            self.send(grandparent, Message::Withheld { parent });
        }
        if self.parent.is_some_and(|p| p.id == parent) {
            self.leave_parent(parent);
        }
    }

    /// Whether our parent has sent nothing for long enough that we are not being fed (a probe's answer says so: a
    /// child that suspects us of withholding asks).
    pub(super) fn starving(&self) -> bool {
        self.parent
            .is_some_and(|p| self.now - p.last_block_at >= STARVING_SEGMENTS * self.cfg.segment_s)
    }

    /// A peer says our child `accused` withheld the stream from it. The child gets no more requests passed down
    /// while the complaint stands ([`COMPLAINTS_WINDOW_S`]); once [`WITHHELD_COMPLAINTS`] different peers have said
    /// so, it is let go and refused for a while (one complaint could be a lie; a withholder that keeps its place keeps
    /// drawing the joiners our subtree's room attracts). Its subtree's orphans are then placed as a lost forwarder's
    /// are.
    pub(super) fn on_withheld(&mut self, from: P, accused: P) {
        if from == accused || accused == self.me {
            return;
        }
        if !self.children.iter().any(|c| c.id == accused) {
            if self.children.iter().any(|c| c.id == from) {
                self.on_reported(accused);
            }
            return;
        }
        let now = self.now;
        self.guard
            .complaints
            .retain(|(_, _, at)| now - *at <= COMPLAINTS_KEPT_S);
        if self
            .guard
            .complaints
            .iter()
            .any(|(c, a, _)| *c == from && *a == accused)
        {
            return;
        }
        if self.guard.complaints.len() >= MAX_COMPLAINTS {
            self.guard.complaints.pop_front();
        }
        self.guard.complaints.push_back((from, accused, now));
        let against = self.guard.complaints.iter().filter(|(_, a, _)| *a == accused).count();
        if against < WITHHELD_COMPLAINTS {
            // Its subtree's rooms are no longer ours to offer.
            self.advertise_changes();
            return;
        }
        self.guard.complaints.retain(|(_, a, _)| *a != accused);
        let forwarder = self.children.iter().any(|c| c.id == accused && c.capable);
        self.children.retain(|c| c.id != accused);
        self.send(accused, Message::Detach);
        self.shun(accused);
        // Our ancestors hear of it too: it asks them for a place next (an orphan asks its grandparent, anyone the
        // broadcaster), and a withholder placed again takes new children to starve.
        if let Some(parent) = self.parent {
            self.send(parent.id, Message::Withheld { parent: accused });
        }
        if forwarder {
            self.recruit_for_orphans();
        }
        self.advertise_changes();
    }

    /// A child says it let `accused` go for withholding (a peer below it, not ours): it is refused as a child, and no
    /// request is passed towards it, for [`SHUN_S`]; and our own parent hears of it, up to the broadcaster. A lying
    /// child can keep a peer out of the places below its ancestors for a while, no worse than it can by sending
    /// nothing itself.
    fn on_reported(&mut self, accused: P) {
        let now = self.now;
        let reported = &mut self.guard.reported;
        if reported.get(&accused).is_some_and(|until| *until > now) {
            return;
        }
        if reported.len() >= MAX_REPORTED {
            reported.retain(|_, until| *until > now);
            if reported.len() >= MAX_REPORTED {
                // Full of live entries: the one that expires first goes.
                let first = reported.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(p, _)| *p);
                if let Some(first) = first {
                    reported.remove(&first);
                }
            }
        }
        reported.insert(accused, now + SHUN_S);
        if let Some(parent) = self.parent {
            self.send(parent.id, Message::Withheld { parent: accused });
        }
        self.advertise_changes();
    }

    /// Whether `peer` is kept out of our subtree: let go by us, or below us, for withholding.
    pub(super) fn barred(&self, peer: P) -> bool {
        self.shuns(peer)
            || (!self.guard.reported.is_empty() && self.guard.reported.get(&peer).is_some_and(|t| *t > self.now))
    }

    /// Whether a complaint of withholding against `child` stands: requests are not passed down to it meanwhile.
    pub(super) fn suspect(&self, child: P) -> bool {
        self.guard
            .complaints
            .iter()
            .any(|(_, a, at)| *a == child && self.now - *at <= COMPLAINTS_WINDOW_S)
    }

    /// Refuses `peer` as a child for [`SHUN_S`].
    pub(super) fn shun(&mut self, peer: P) {
        let until = self.now + SHUN_S;
        self.guard.shunned.retain(|(p, t)| *p != peer && *t > until - SHUN_S);
        if self.guard.shunned.len() >= MAX_SHUNNED {
            self.guard.shunned.pop_front();
        }
        self.guard.shunned.push_back((peer, until));
    }

    /// Whether `peer` is refused as a child now.
    pub(super) fn shuns(&self, peer: P) -> bool {
        self.guard
            .shunned
            .iter()
            .any(|(p, until)| *p == peer && *until > self.now)
    }
}
