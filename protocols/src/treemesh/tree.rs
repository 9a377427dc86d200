//! The backbone tree: joining, choosing and replacing a parent, taking children, and pushing blocks down as they
//! arrive (cut-through: a block goes on as soon as it is verified, never waiting for its segment).

use std::collections::VecDeque;

use super::config::Role;
use super::machine::{Attempt, Child, Parent, PeerId, TreeMesh};
use super::message::{Advert, Message, Refusal, SegmentInfo};
use super::window::MAX_BLOCKS;

/// What one hop down the tree is taken to cost when choosing a parent, in seconds (a block's time on a link plus
/// its latency): a parent one level higher is worth that much more latency.
const HOP_COST_S: f64 = 0.15;
/// A parent is kept at least this long before a jump to a better place.
const JUMP_AFTER_S: f64 = 20.0;
/// Levels a jump must gain.
const JUMP_GAIN: usize = 2;
/// Longest path a tree may have: deeper is refused (a bound on adverts, and a backstop against a loop that forms
/// in a race faster than the path checks can see it).
pub const MAX_DEPTH: usize = 32;
/// A full peer of the broadcaster's tree (asked for the way down) ranks after every free slot in it.
const FULL_COST_S: f64 = 2.0;
/// A parent cut off from the broadcaster ranks after both.
const UNROOTED_COST_S: f64 = 6.0;
/// Probe rounds start at most this often.
const PROBE_INTERVAL_S: f64 = 1.0;
/// Latency assumed for a peer not yet measured.
pub(super) const UNMEASURED_LATENCY_S: f64 = 0.1;
/// After a refusal or a timeout, a candidate parent is left alone this long.
const RETRY_AFTER_S: f64 = 10.0;
/// Pushed segments rescued from the mesh this many times in a row make a parent one to replace.
const STRIKES_TO_REPLACE: u8 = 2;

impl<P: PeerId> TreeMesh<P> {
    pub(super) fn on_join(&mut self, tail: Vec<crate::treemesh::SegmentInfo>, candidates: Vec<(P, bool)>) {
        self.joined = true;
        self.joined_at = self.now;
        for info in &tail {
            self.window
                .insert(*info, self.cfg.block_size, self.cfg.window_segments, self.now);
        }
        // Start one segment behind the live edge: the player holds one segment while the next is made.
        if let Some(newest) = tail.iter().map(|s| s.seq).max() {
            // What exists already is pulled, striped over the peers that hold it, while a parent is found: it is
            // the fastest way to it, and no attach, however slow, holds it up. The parent pushes what comes next.
            self.pull_before = newest + 1;
            let start = newest
                .saturating_sub(1)
                .max(tail.iter().map(|s| s.seq).min().unwrap_or(0));
            self.player.start = Some(start);
            self.window.skip_below(start);
        }
        self.on_candidates(candidates);
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
            if k.latency.is_some() && k.seen > now - 10.0 {
                continue;
            }
            k.asked_at = Some(now);
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
        let mut pinned: Vec<P> = self.parent.iter().map(|p| p.id).collect();
        pinned.extend(self.attempt.map(|a| a.id));
        move |id| pinned.contains(&id)
    }

    pub(super) fn on_probe_reply(&mut self, from: P, advert: Advert<P>, peers: Vec<(P, bool)>) {
        let now = self.now;
        let pinned = self.pinned_fn();
        if let Some(k) = self.peers.entry(from, advert.reachable, now, pinned) {
            if let Some(asked) = k.asked_at.take() {
                k.latency = Some((now - asked) / 2.0);
            }
            k.apply(&advert, now);
        }
        for (id, reachable) in peers {
            if id != self.me && self.can_link(reachable) {
                let pinned = self.pinned_fn();
                self.peers.entry(id, reachable, now, pinned);
            }
        }
        // A backbone peer may take a leaf's place: its room is the nearest of either kind.
        let room = if self.backbone {
            advert.backbone_room
        } else {
            advert.room
        };
        if let Some((id, below)) = room.filter(|(id, below)| *below > 0 && *id != self.me) {
            self.learn_room(id, advert.depth() + usize::from(below), advert.rooted);
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
                k.asked_at = None;
            }
        }
        if self.parent.is_none() && self.attempt.is_none() {
            self.try_attach();
        }
        self.fill_mesh();
    }

    /// The first segment a new parent should push: the one after everything already held or asked for, and never
    /// one that existed when this peer joined.
    fn push_from(&self) -> u64 {
        let touched = self
            .window
            .iter()
            .filter(|s| s.have | s.pulling | s.from_origin != 0)
            .map(|s| s.info.seq + 1)
            .max();
        let start = self.player.start.unwrap_or(0);
        touched.unwrap_or(start).max(start).max(self.pull_before)
    }

    /// Asks the best known candidate to be our parent: in the broadcaster's tree with a free slot (the fewest hops,
    /// then the lowest latency); failing that, the shallowest full peer of that tree, which makes room for a
    /// backbone peer or names children to try (a descent of one round trip per level); failing that, a fragment
    /// cut off from the broadcaster that has room.
    pub(super) fn try_attach(&mut self) {
        if self.cfg.role != Role::Viewer || self.attempt.is_some() {
            return;
        }
        let current = self.parent.map(|p| p.id);
        let best = self
            .peers
            .list
            .iter()
            .filter(|k| {
                k.backbone
                    && k.depth.is_some()
                    && (self.has_room(k) || k.rooted)
                    && k.not_before <= self.now
                    && Some(k.id) != current
                    && !self.children.iter().any(|c| c.id == k.id)
                    && self.can_link(k.reachable)
            })
            .map(|k| {
                let class = match (k.rooted, self.has_room(k)) {
                    (true, true) => 0.0,
                    (true, false) => FULL_COST_S,
                    (false, _) => UNROOTED_COST_S,
                };
                let score = class
                    + f64::from(k.depth.unwrap_or(u8::MAX)) * HOP_COST_S
                    + k.latency.unwrap_or(UNMEASURED_LATENCY_S)
                    + f64::from(k.strikes) * HOP_COST_S;
                (score, k.id)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let unprobed: Vec<(P, bool)> = self
            .peers
            .list
            .iter()
            .filter(|k| k.depth.is_none() && k.asked_at.is_none() && self.can_link(k.reachable))
            .map(|k| (k.id, k.reachable))
            .collect();
        match best {
            Some((_, id)) => self.attach_to(id),
            // Peers heard of through peer exchange but not yet asked: probe them before going to discovery.
            None if !unprobed.is_empty()
                && self.probe_until.is_none()
                && self.now - self.last_probe >= PROBE_INTERVAL_S =>
            {
                self.probe(unprobed)
            }
            None if !self.finding
                && self.probe_until.is_none()
                && self.now - self.last_find >= self.cfg.find_interval_s =>
            {
                self.finding = true;
                self.last_find = self.now;
                self.out.push_back(super::Output::FindPeers);
            }
            None => {}
        }
    }

    /// Whether a known peer has a place for this peer: a free slot, or — for a backbone peer — a leaf child it
    /// would move under us.
    fn has_room(&self, k: &super::peers::Known<P>) -> bool {
        k.spare > 0 || (self.backbone && k.leaves > 0)
    }

    fn attach_to(&mut self, id: P) {
        let from_seq = self.push_from();
        self.attempt = Some(Attempt {
            id,
            from_seq,
            deadline: self.now + self.cfg.attach_timeout_s,
        });
        let reachable = self.cfg.reachable;
        let slots = if self.backbone { self.cfg.child_slots() } else { 0 };
        self.send(
            id,
            Message::Attach {
                from_seq,
                reachable,
                slots,
            },
        );
    }

    /// mTreebone's low-delay jump: move to a free slot nearer the broadcaster when one is known (or into the
    /// broadcaster's tree at all, from a fragment cut off from it). A backbone peer may also take a leaf's place.
    pub(super) fn consider_jump(&mut self) {
        let Some(parent) = self.parent else {
            return;
        };
        // Every move re-paths the whole subtree: move seldom, and only for a real gain. A backbone peer with no
        // children yet (just promoted) has nothing to disturb: it moves up at once.
        let settled = self.now - parent.since >= JUMP_AFTER_S || (self.backbone && self.children.is_empty());
        if self.attempt.is_some() || !settled {
            return;
        }
        let (rooted, depth) = (self.rooted, self.path.len());
        let better = self
            .peers
            .list
            .iter()
            .filter(|k| {
                k.backbone
                    && k.rooted
                    && k.id != parent.id
                    && k.not_before <= self.now
                    && self.can_link(k.reachable)
                    && (k.spare > 0 || (self.backbone && k.leaves > 0))
                    && k.depth.is_some_and(|d| !rooted || usize::from(d) + JUMP_GAIN < depth)
            })
            .min_by_key(|k| (k.depth, k.id))
            .map(|k| k.id);
        if let Some(id) = better {
            self.attach_to(id);
        }
    }

    pub(super) fn on_attach(&mut self, from: P, from_seq: u64, reachable: bool, slots: u32) {
        if let Some(child) = self.children.iter_mut().find(|c| c.id == from) {
            child.from_seq = from_seq;
            let advert = self.advert();
            self.send(from, Message::Accepted { advert });
            return;
        }
        let refusal = if !self.takes_children() {
            Some(Refusal::NotBackbone)
        } else if self.path.contains(&from) || self.path.len() + 1 >= MAX_DEPTH {
            Some(Refusal::Loop)
        } else if self.spare_slots() == 0 && !self.make_room_for(from, slots) {
            Some(Refusal::Busy)
        } else {
            None
        };
        if let Some(reason) = refusal {
            // Point the asker down the tree: first the free slots nearest below (it attaches there in one step),
            // then backbone children, those with room first, in random order among equals so that joiners spread
            // out.
            use rand::seq::SliceRandom;
            let mut rooms: Vec<(u8, P)> = self
                .children
                .iter()
                .filter_map(|c| if slots > 0 { c.backbone_room } else { c.room })
                .filter(|(id, _)| *id != from)
                .map(|(id, below)| (below, id))
                .collect();
            rooms.sort_unstable();
            rooms.dedup_by_key(|(_, id)| *id);
            let mut children: Vec<(bool, P)> = self
                .children
                .iter()
                .filter(|c| c.backbone && c.id != from && (reachable || c.reachable))
                .map(|c| (c.spare == 0, c.id))
                .collect();
            children.shuffle(&mut self.rng);
            children.sort_by_key(|(full, _)| *full);
            let mut try_instead: Vec<P> = rooms.into_iter().take(2).map(|(_, id)| id).collect();
            for (_, id) in children {
                if try_instead.len() >= 3 {
                    break;
                }
                if !try_instead.contains(&id) {
                    try_instead.push(id);
                }
            }
            self.send(from, Message::Rejected { reason, try_instead });
            return;
        }
        let mut child = Child {
            id: from,
            from_seq,
            queue: VecDeque::new(),
            in_flight: false,
            spare: 0,
            backbone: false,
            reachable,
            room: None,
            backbone_room: None,
            skips: VecDeque::new(),
        };
        for seg in self.window.iter().filter(|s| s.info.seq >= from_seq) {
            for b in 0..seg.blocks.min(MAX_BLOCKS) {
                if seg.have & (1u128 << b) != 0 {
                    child.queue.push_back((seg.info, b));
                }
            }
        }
        self.children.push(child);
        let advert = self.advert();
        self.send(from, Message::Accepted { advert });
        self.pump_uploads();
        self.advertise_changes();
    }

    pub(super) fn on_accepted(&mut self, from: P, advert: Advert<P>) {
        let Some(attempt) = self.attempt.filter(|a| a.id == from) else {
            // A late answer to an attempt given up: release the slot.
            if self.parent.is_none_or(|p| p.id != from) {
                self.send(from, Message::Detach);
            }
            return;
        };
        self.attempt = None;
        let now = self.now;
        if let Some(k) = self.peers.get_mut(from) {
            k.apply(&advert, now);
        }
        if advert.path.contains(&self.me) || advert.path.len() >= MAX_DEPTH {
            // Our own descendant (a loop), or too deep. Leave and look elsewhere.
            self.send(from, Message::Detach);
            self.avoid(from);
            return;
        }
        if let Some(old) = self.parent.take() {
            self.send(old.id, Message::Detach);
        }
        self.parent = Some(Parent {
            id: from,
            from_seq: attempt.from_seq,
            strikes: 0,
            since: self.now,
            last_block_at: self.now,
            last_block_seq: attempt.from_seq,
            gap_s: f64::from(self.cfg.block_size) / (self.cfg.child_rate_x * self.cfg.bitrate),
        });
        self.counters.parent_changes += 1;
        let mut path = advert.path;
        path.push(from);
        self.set_path(path, advert.rooted);
        // The new parent learns our free slots (and those below us) at once.
        self.advertised_room = (self.room(), self.backbone_room());
        let advert = self.advert();
        self.send(from, Message::Update { advert });
    }

    /// mTreebone's high-degree preemption: a full parent asked by a backbone peer moves one of its leaf children
    /// under that peer, which then has room for it. Returns whether a slot was freed.
    fn make_room_for(&mut self, asker: P, slots: u32) -> bool {
        if slots < self.cfg.backbone_min_slots {
            return false;
        }
        let Some(i) = self.children.iter().rposition(|c| !c.backbone && c.id != asker) else {
            return false;
        };
        let leaf = self.children.remove(i);
        self.send(leaf.id, Message::Displaced { try_instead: asker });
        true
    }

    pub(super) fn on_displaced(&mut self, from: P, try_instead: P) {
        if self.parent.is_none_or(|p| p.id != from) {
            return;
        }
        let depth = Some(self.path.len().min(255) as u8);
        let rooted = self.rooted;
        let now = self.now;
        let pinned = self.pinned_fn();
        if let Some(k) = self.peers.entry(try_instead, true, now, pinned) {
            k.backbone = true;
            k.spare = k.spare.max(1);
            k.depth = depth;
            k.rooted = rooted;
            k.not_before = 0.0;
        }
        self.parent = None;
        self.set_path(Vec::new(), false);
        if self.attempt.is_none() {
            self.attach_to(try_instead);
        }
    }

    pub(super) fn on_rejected(&mut self, from: P, try_instead: Vec<P>) {
        let parent_depth = self.peers.get(from).and_then(|k| k.depth);
        let parent_rooted = self.peers.get(from).is_some_and(|k| k.rooted);
        if self.attempt.is_some_and(|a| a.id == from) {
            self.attempt = None;
        }
        self.avoid(from);
        let now = self.now;
        for id in try_instead {
            if id == self.me {
                continue;
            }
            let pinned = self.pinned_fn();
            if let Some(k) = self.peers.entry(id, true, now, pinned) {
                // A backbone child of the rejecting peer, one level below it: worth asking.
                k.backbone = true;
                k.spare = k.spare.max(1);
                k.depth = parent_depth.map(|d| d.saturating_add(1));
                k.rooted = parent_rooted;
                k.not_before = 0.0;
            }
        }
        if self.parent.is_none() {
            self.try_attach();
        }
    }

    /// A peer said to have a free slot at `depth` of a tree (rooted or not): a parent candidate.
    fn learn_room(&mut self, id: P, depth: usize, rooted: bool) {
        let now = self.now;
        let pinned = self.pinned_fn();
        if let Some(k) = self.peers.entry(id, true, now, pinned)
            && k.not_before <= now
        {
            k.backbone = true;
            k.spare = k.spare.max(1);
            k.depth = Some(depth.min(255) as u8);
            k.rooted = rooted;
        }
    }

    /// Leaves `id` alone as a parent candidate for a while.
    pub(super) fn avoid(&mut self, id: P) {
        let until = self.now + RETRY_AFTER_S;
        if let Some(k) = self.peers.get_mut(id) {
            k.spare = 0;
            k.not_before = until;
        }
    }

    pub(super) fn on_detach(&mut self, from: P) {
        self.children.retain(|c| c.id != from);
        self.advertise_changes();
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
            c.spare = advert.spare_slots;
            c.backbone = advert.backbone;
            c.reachable = advert.reachable;
            c.room = advert.room;
            c.backbone_room = advert.backbone_room;
            self.advertise_changes();
        }
        if self.parent.is_some_and(|p| p.id == from) {
            if advert.path.contains(&self.me) || advert.path.len() >= MAX_DEPTH {
                self.send(from, Message::Detach);
                self.avoid(from);
                self.lose_parent();
            } else {
                let mut path = advert.path;
                path.push(from);
                self.set_path(path, advert.rooted);
            }
        }
    }

    /// The parent is gone: cut off until a new one accepts; children hear that we are cut off.
    pub(super) fn lose_parent(&mut self) {
        self.parent = None;
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
        if let Some((id, depth, rooted)) = grandparent {
            let now = self.now;
            let pinned = self.pinned_fn();
            if let Some(k) = self.peers.entry(id, true, now, pinned) {
                k.backbone = true;
                k.spare = k.spare.max(1);
                k.depth = Some(depth.min(255) as u8);
                k.rooted = rooted;
                k.not_before = 0.0;
            }
        }
        self.try_attach();
        self.pump_pulls();
    }

    /// A new path from the root: tell the children (and through them their subtrees).
    fn set_path(&mut self, path: Vec<P>, rooted: bool) {
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
            self.send(child, Message::Update { advert: advert.clone() });
        }
        self.advertise_changes();
    }

    /// Whether this peer may have children where it is now: in the backbone and not too deep.
    pub(super) fn takes_children(&self) -> bool {
        self.backbone && (self.cfg.role == Role::Broadcaster || self.path.len() < self.cfg.max_backbone_depth)
    }

    /// Free child slots.
    pub(super) fn spare_slots(&self) -> u32 {
        if !self.takes_children() {
            return 0;
        }
        self.cfg.child_slots().saturating_sub(self.children.len() as u32)
    }

    /// Backbone membership follows age, capacity and policy; children beyond what the budget pays for are let go.
    pub(super) fn check_role(&mut self) {
        if self.cfg.role == Role::Viewer {
            let p = &self.cfg.policy;
            let eligible = self.now - self.joined_at >= self.cfg.stable_after_s
                && self.cfg.child_slots() >= self.cfg.backbone_min_slots
                && !p.metered
                && !p.background
                && self.ratio_allows();
            self.backbone = eligible;
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
        let room = (self.room(), self.backbone_room());
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
            self.send(id, Message::Update { advert: advert.clone() });
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

    /// A pushed segment had to be rescued: a strike against the parent; enough of them replace it.
    pub(super) fn strike_parent(&mut self) {
        let Some(parent) = self.parent.as_mut() else { return };
        parent.strikes += 1;
        if parent.strikes >= STRIKES_TO_REPLACE {
            let id = parent.id;
            self.send(id, Message::Detach);
            self.avoid(id);
            self.lose_parent();
        }
    }
}
