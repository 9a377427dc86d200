//! Placement: finding a peer its parent. An attach request goes to one entry peer — the broadcaster for a joiner,
//! the grandparent for an orphan, the peer that took its slot for a displaced leaf — and is passed down the tree
//! until a peer with room takes it (push-down placement, as in SplitStream, Castro et al., SOSP 2003). Every peer
//! knows, from its children's adverts, the nearest free slot in each child's subtree, how many free slots the
//! subtree has, and the nearest place for a backbone peer; it passes a request to the child whose room is
//! shallowest and counts the slot off, so a burst of joiners spreads over the free slots instead of racing for one.
//! The peer that takes the request answers the joiner directly.
//!
//! A backbone peer (or one that will be: it has the capacity and is proving itself) is placed where forwarders
//! belong: at the shallowest peer with a free slot or a leaf child, which moves the leaf under the newcomer
//! (mTreebone's high-degree preemption). Peers move up the same way: a request with a depth limit, which finds a
//! better place or none (mTreebone's low-delay jump).

use std::collections::VecDeque;

use rand::Rng;

use super::config::Role;
use super::machine::{Attempt, Child, Parent, PeerId, TreeMesh};
use super::message::{Advert, AttachRequest, MAX_FREE_ADVERTISED, Message, Refusal};
use super::tree::MAX_DEPTH;
use super::window::MAX_BLOCKS;

/// After a request found no place, the next waits this long (meanwhile the mesh and the origin carry the stream).
const RETRY_ATTACH_S: f64 = 0.5;
/// A request passed down is settled (placed, or refused without changing the subtree) within this long.
const ROUTED_FORGET_S: f64 = 1.0;
/// A backbone peer tries to move up at most this often.
const JUMP_AFTER_S: f64 = 20.0;
/// Levels a move up must gain.
const JUMP_GAIN: usize = 2;

impl<P: PeerId> TreeMesh<P> {
    /// Asks for a place in the tree: through the grandparent after losing the parent (its freed slot, or room near
    /// it), else through the broadcaster; with neither known, through discovery.
    pub(super) fn try_attach(&mut self) {
        if self.cfg.role != Role::Viewer || self.attempt.is_some() || self.parent.is_some() {
            return;
        }
        if self.now < self.retry_attach_at {
            return;
        }
        let orphan = self.entry.is_some();
        let entry = self.entry.take().or(self.root);
        match entry {
            Some(id) => self.ask_place(id, MAX_DEPTH as u8, orphan),
            None if !self.finding && self.now - self.last_find >= self.cfg.find_interval_s => {
                self.finding = true;
                self.last_find = self.now;
                self.out.push_back(super::Output::FindPeers);
            }
            None => {}
        }
    }

    /// Sends an attach request to `id`, accepting a place no deeper than `max_depth`.
    pub(super) fn attach_to(&mut self, id: P, max_depth: u8) {
        self.ask_place(id, max_depth, false);
    }

    /// [`Self::attach_to`], saying whether we are an orphan asking its grandparent.
    fn ask_place(&mut self, id: P, max_depth: u8, orphan: bool) {
        let (from_seq, held) = self.push_from();
        let nonce = self.rng.random::<u64>();
        if let Some(previous) = self.attempt.take() {
            self.guard.given_up = Some((previous.nonce, previous.from_seq));
        }
        self.attempt = Some(Attempt {
            id,
            from_seq,
            deadline: self.now + self.cfg.attach_timeout_s,
            nonce,
        });
        let request = AttachRequest {
            from_seq,
            held,
            reachable: self.cfg.reachable,
            slots: if self.capable() { self.cfg.child_slots() } else { 0 },
            stable: self.backbone,
            max_depth,
            orphan,
            nonce,
        };
        self.send(id, Message::Attach(request));
    }

    /// mTreebone's low-delay jump: a backbone peer asks the broadcaster for a place at least [`JUMP_GAIN`] levels
    /// higher, taking its subtree along; it is answered with such a place or with nothing.
    pub(super) fn consider_jump(&mut self) {
        if self.parent.is_none() || self.attempt.is_some() || !self.backbone || !self.rooted {
            return;
        }
        // Every move re-paths the whole subtree: move seldom, and only for a real gain.
        if self.now - self.last_jump < JUMP_AFTER_S {
            return;
        }
        let depth = self.path.len();
        let Some(root) = self.root.filter(|_| depth > JUMP_GAIN + 1) else {
            return;
        };
        self.last_jump = self.now;
        self.attach_to(root, (depth - JUMP_GAIN) as u8);
    }

    /// An attach request from `joiner`, received from it (`direct`) or passed down by the parent (`hops` levels so
    /// far). A child taken on a request passed down gets no payload until it confirms (see [`Message::Accepted`]).
    pub(super) fn on_place(&mut self, joiner: P, request: AttachRequest, hops: u8, direct: bool) {
        let nonce = request.nonce;
        if let Some(child) = self.children.iter_mut().find(|c| c.id == joiner) {
            child.from_seq = request.from_seq;
            child.confirmed |= direct;
            let advert = self.advert();
            self.send(
                joiner,
                Message::Accepted {
                    advert: Box::new(advert),
                    nonce,
                },
            );
            if direct {
                self.pump_uploads();
            }
            return;
        }
        if joiner == self.me || self.path.contains(&joiner) {
            // The joiner is above us: taking it would close a loop.
            self.send(
                joiner,
                Message::Rejected {
                    reason: Refusal::Loop,
                    nonce,
                },
            );
            return;
        }
        if self.barred(joiner) {
            self.send(
                joiner,
                Message::Rejected {
                    reason: Refusal::Busy,
                    nonce,
                },
            );
            return;
        }
        if self.recruit_arrived(joiner, request, direct) || self.hold_orphan(joiner, request, direct) {
            return;
        }
        // A peer cut off from the broadcaster takes no newcomers until it is back: a place below it would be cut off
        // too.
        let rooted = self.rooted || self.cfg.role == Role::Broadcaster;
        let depth_ok = rooted && self.path.len() < usize::from(request.max_depth);
        let backbone = request.slots >= self.cfg.backbone_min_slots;
        if self.takes_children()
            && depth_ok
            && self.can_link(request.reachable)
            && (self.spare_slots() > 0 || (backbone && self.make_room_for(joiner, request.stable)))
        {
            self.accept(joiner, request, direct);
            return;
        }
        if usize::from(hops) < MAX_DEPTH
            && let Some(child) = self.route(joiner, &request, backbone)
        {
            self.send(
                child,
                Message::Place {
                    joiner,
                    request,
                    hops: hops + 1,
                },
            );
            return;
        }
        self.send(
            joiner,
            Message::Rejected {
                reason: Refusal::Busy,
                nonce,
            },
        );
    }

    /// The child to pass a request down to: the one whose room (for a leaf) or backbone place is shallowest and
    /// within the request's depth, fewest requests sent its way lately first. The leaf slots passed down are
    /// counted off until the child advertises again.
    fn route(&mut self, joiner: P, request: &AttachRequest, backbone: bool) -> Option<P> {
        let base = self.path.len() + 1;
        let max_depth = usize::from(request.max_depth);
        // Requests passed down are counted off a child's free slots until it advertises again — or until they are
        // surely settled: one that found no place changes nothing the child would advertise.
        let now = self.now;
        for c in &mut self.children {
            if now - c.routed_at > ROUTED_FORGET_S {
                c.routed = 0;
            }
        }
        // Rooms that name a peer let go for withholding, here or below, are passed over (the guard is read once).
        let barring = !self.guard.shunned.is_empty() || !self.guard.reported.is_empty();
        let pick = self
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.id != joiner && c.confirmed && !self.suspect(c.id))
            .filter_map(|(i, c)| {
                // Leaf slots passed down since the child last advertised are counted off its count (a count at the
                // cap stands for more than can be counted off).
                let (room, free) = if request.reachable {
                    (c.any_room, c.any_free)
                } else {
                    (c.room, c.free)
                };
                let has_free = free >= MAX_FREE_ADVERTISED || c.routed < free;
                let room = if backbone {
                    c.backbone_room
                } else {
                    room.filter(|_| has_free)
                };
                let (at, below) = room?;
                if barring && self.barred(at) {
                    return None;
                }
                // The joiner hangs one level below the room: depth base + below + 1.
                let depth = base + usize::from(below) + 1;
                (depth <= max_depth).then_some((depth, c.routed, std::cmp::Reverse(free.saturating_sub(c.routed)), i))
            })
            .min();
        let (_, _, _, i) = pick?;
        let child = &mut self.children[i];
        child.routed = child.routed.saturating_add(1);
        child.routed_at = now;
        Some(child.id)
    }

    /// Takes `joiner` as a child: queues what it asked for — at most the child queue's bound, the newest kept — and
    /// starts pushing to it once it is `confirmed` (it asked us itself).
    pub(super) fn accept(&mut self, joiner: P, request: AttachRequest, confirmed: bool) {
        let mut child = Child {
            id: joiner,
            from_seq: request.from_seq,
            queue: VecDeque::new(),
            in_flight: false,
            spare: 0,
            // What the request says until the child's own advert: a forwarder must not be displaced as a leaf.
            backbone: request.stable,
            capable: request.slots >= self.cfg.backbone_min_slots,
            reachable: request.reachable,
            room: None,
            backbone_room: None,
            free: 0,
            any_room: None,
            any_free: 0,
            fringe: None,
            routed: 0,
            routed_at: 0.0,
            skips: VecDeque::new(),
            confirmed,
            taken_at: self.now,
        };
        child.skips.push_back((request.from_seq, request.held));
        for seg in self.window.iter().filter(|s| s.info.seq >= request.from_seq) {
            let skip = if seg.info.seq == request.from_seq {
                request.held
            } else {
                0
            };
            for b in 0..seg.blocks.min(MAX_BLOCKS) {
                if seg.have & !skip & (1u128 << b) != 0 {
                    child.queue.push_back((seg.info, b));
                }
            }
        }
        // Whatever the request asked for, a child's queue holds what it would hold of blocks pushed as they come.
        let limit = self.child_queue_limit();
        while child.queue.len() > limit {
            child.queue.pop_front();
        }
        self.children.push(child);
        let advert = self.advert();
        self.send(
            joiner,
            Message::Accepted {
                advert: Box::new(advert),
                nonce: request.nonce,
            },
        );
        self.pump_uploads();
        self.advertise_changes();
    }

    /// Blocks queued for one child at most: [`super::Config::child_queue_segments`] of the newest segment's.
    pub(super) fn child_queue_limit(&self) -> usize {
        let blocks = self
            .window
            .iter()
            .next_back()
            .map_or(1, |s| s.info.blocks(self.cfg.block_size));
        (self.cfg.child_queue_segments * f64::from(blocks)).ceil() as usize
    }

    /// mTreebone's high-degree preemption: a full parent asked by a forwarder moves one of its leaf children under
    /// it, which then has room for it; a stable asker may also take the place of a forwarder that is not (its leaves
    /// follow it). Returns whether a slot was freed.
    fn make_room_for(&mut self, asker: P, stable: bool) -> bool {
        let leaf = self
            .children
            .iter()
            .rposition(|c| !c.capable && !c.backbone && c.id != asker);
        let young = || {
            self.children
                .iter()
                .rposition(|c| c.capable && !c.backbone && c.id != asker)
        };
        let Some(i) = leaf.or_else(|| if stable { young() } else { None }) else {
            return false;
        };
        let leaf = self.children.remove(i);
        self.send(leaf.id, Message::Displaced { try_instead: asker });
        true
    }

    /// A place was found: `from` is the new parent — if `nonce` is that of our request. An answer to an attempt given
    /// up is taken if no parent came meanwhile, and released otherwise; an answer to no request of ours is released
    /// (a peer that takes a child it was not asked for only offers: no payload flows until the child confirms).
    pub(super) fn on_accepted(&mut self, from: P, advert: Advert<P>, nonce: u64) {
        let from_seq = match (self.attempt, self.guard.given_up) {
            (Some(attempt), _) if attempt.nonce == nonce => {
                self.attempt = None;
                attempt.from_seq
            }
            (_, Some((given_up, _))) if given_up == nonce && self.parent.is_none() => {
                self.guard.given_up = None;
                self.attempt = None;
                self.push_from().0
            }
            (_, Some((given_up, _))) if given_up == nonce => {
                // We have a parent now. It took us on our own request, and may have begun pushing before our
                // Detach reaches it: those blocks were asked for.
                self.guard.given_up = None;
                if self.parent.is_none_or(|p| p.id != from) {
                    self.send(from, Message::Detach);
                    self.remember_former_parent(from);
                }
                return;
            }
            _ => {
                if self.parent.is_none_or(|p| p.id != from) {
                    self.send(from, Message::Detach);
                }
                return;
            }
        };
        let now = self.now;
        if let Some(k) = self.peers.get_mut(from) {
            k.apply(&advert, now);
        }
        let avoided = self.avoids(from);
        if advert.path.contains(&self.me) || advert.path.len() >= MAX_DEPTH || avoided {
            // Our own descendant (a loop), too deep, or a parent we just left for failing us. Leave and look
            // elsewhere. It took us on our own request, so what it pushed before our Detach reached it was asked for.
            self.send(from, Message::Detach);
            self.remember_former_parent(from);
            self.retry_attach_at = now + RETRY_ATTACH_S;
            return;
        }
        if let Some(old) = self.parent.take()
            && old.id != from
        {
            self.send(old.id, Message::Detach);
            self.remember_former_parent(old.id);
        }
        self.parent = Some(Parent {
            id: from,
            from_seq,
            strikes: 0,
            last_block_at: now,
            last_block_seq: None,
            gap_s: f64::from(self.cfg.block_size) / (self.cfg.child_rate_x * self.cfg.bitrate),
            claims_rooted: advert.rooted,
            cut_off_since: (!advert.rooted).then_some(now),
        });
        self.counters.parent_changes += 1;
        let mut path = advert.path;
        path.push(from);
        self.set_path(path, advert.rooted);
        // What arrived (or is coming) by other ways since the request is not to be pushed.
        let covered: Vec<(u64, u128)> = self
            .window
            .iter()
            .filter(|s| s.info.seq >= from_seq)
            .map(|s| (s.info.seq, s.have | s.pulling | s.from_origin))
            .filter(|(_, bits)| *bits != 0)
            .collect();
        for (seq, blocks) in covered {
            self.send(from, Message::Skip { seq, blocks });
        }
        // The new parent learns our free slots (and those below us) at once; this also confirms our place, and only
        // then does it push.
        let rooms = self.rooms();
        self.advertised_room = rooms;
        let advert = self.advert_with(rooms);
        self.send(
            from,
            Message::Update {
                advert: Box::new(advert),
            },
        );
        // Requests it passed us before its answer came.
        let held: Vec<(P, P, AttachRequest, u8)> = std::mem::take(&mut self.guard.held_places).into();
        for (sender, joiner, request, hops) in held {
            if sender == from {
                self.on_place(joiner, request, hops, false);
            }
        }
    }

    /// No place: try again shortly (a move up just stays where it is). Only an answer to our request counts.
    pub(super) fn on_rejected(&mut self, nonce: u64) {
        if self.attempt.is_none_or(|a| a.nonce != nonce) {
            return;
        }
        self.attempt = None;
        self.guard.held_places.clear();
        if self.parent.is_none() {
            self.retry_attach_at = self.now + RETRY_ATTACH_S;
            self.attach_known();
        }
    }

    /// No place through the tree's directory (it was stale: a burst of requests took the room it showed — with
    /// withholders about, whose children keep leaving them, requests come in bursts and most rejections are this):
    /// ask directly a peer we know to be connected, with a free slot, and to upload — it served us blocks we pulled,
    /// which a withholder never does. Without one, the broadcaster is asked again after [`RETRY_ATTACH_S`].
    fn attach_known(&mut self) {
        let now = self.now;
        let best = self
            .peers
            .list
            .iter()
            .filter(|k| {
                k.rooted
                    && k.spare > 0
                    && k.served
                    && k.not_before <= now
                    && !k.is_root()
                    && self.can_link(k.reachable)
                    && !self.avoids(k.id)
            })
            .filter_map(|k| {
                let latency = k.latency.get().unwrap_or(super::tree::UNMEASURED_LATENCY_S);
                Some((usize::from(k.depth?), latency, k.id))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        if let Some((_, _, id)) = best {
            if let Some(k) = self.peers.get_mut(id) {
                // One try: its slot may be gone too.
                k.spare = 0;
            }
            self.attach_to(id, MAX_DEPTH as u8);
        }
    }

    /// The parent gave our slot to a backbone peer, which has room for us.
    pub(super) fn on_displaced(&mut self, from: P, try_instead: P) {
        if self.parent.is_none_or(|p| p.id != from) {
            return;
        }
        if let Some(old) = self.parent.take() {
            self.remember_former_parent(old.id);
        }
        self.set_path(Vec::new(), false);
        if self.attempt.is_none() {
            self.attach_to(try_instead, MAX_DEPTH as u8);
        }
    }
}
