//! Repair of a lost forwarder without pushing its subtrees down: the peer that lost it recruits a forwarder from the
//! fringe of its own subtree into the freed place, and hands it the orphans.
//!
//! When a forwarder leaves, its children — forwarders too, near the top, each with a large subtree — ask their
//! grandparent for a place. The grandparent has one free slot: the first orphan would take it, and the others, with
//! the top of the tree full of forwarders, would be placed where a leaf could make way for them, at the fringe,
//! several levels deeper, their whole subtrees with them (measured at 10,000 viewers: one of the broadcaster's
//! children leaving put three subtrees of ~500 viewers four to six levels deeper, and the tree up to 14 levels deep
//! for 15 s). Instead, the grandparent keeps the freed slot for a stable forwarder from the fringe of its subtree —
//! one whose children are all leaves, which its adverts name as [`super::Advert::fringe`] — and tells it to move up
//! ([`super::Message::Recruit`]). The orphans' requests are held meanwhile and then passed to it; it takes them in
//! place of its leaves (high-degree preemption), so every orphaned subtree stays at its depth and only a handful
//! of leaves move, down to the fringe where the slots are. This is the successor repair of tree overlays (a node's
//! place refilled from below, as in Overcast's and NICE's maintenance) with push-down placement doing the rest.
//!
//! A recruit that does not come within [`super::Config::recruit_timeout_s`] is given up: the slot is freed and the
//! held orphans are placed as any other request.

use super::config::Role;
use super::machine::{PeerId, TreeMesh};
use super::message::{AttachRequest, Message};

/// Orphans' requests held at most while a recruit is on its way (the rest are placed at once).
const MAX_HELD: usize = 16;

/// A recruit on its way and the orphans waiting for it.
#[derive(Clone, Debug)]
pub(super) struct Recruiting<P> {
    /// The forwarder recruited.
    pub(super) id: P,
    /// Given up then.
    pub(super) until: f64,
    /// Orphans' requests held for it.
    pub(super) held: Vec<(P, AttachRequest)>,
}

impl<P: PeerId> TreeMesh<P> {
    /// A forwarding child is gone: keep its slot for the nearest stable fringe forwarder below, unless one of our
    /// own children is one (its orphans then fit below that child, as deep as they were).
    pub(super) fn recruit_for_orphans(&mut self) {
        let rooted = self.rooted || self.cfg.role == Role::Broadcaster;
        let off = self.cfg.recruit_timeout_s <= 0.0;
        if off || self.recruiting.is_some() || !rooted || !self.takes_children() {
            return;
        }
        let nearest = self
            .listed_children()
            .filter_map(|c| c.fringe)
            .filter(|(id, _)| !self.barred(*id))
            .min_by_key(|(id, below)| (*below, *id));
        let Some((id, below)) = nearest else { return };
        if below == 0 {
            return;
        }
        self.recruiting = Some(Recruiting {
            id,
            until: self.now + self.cfg.recruit_timeout_s,
            held: Vec::new(),
        });
        self.send(id, Message::Recruit);
        self.advertise_changes();
    }

    /// An ancestor recruits us into the place of a child it lost: move up, subtree and all, if we still can.
    pub(super) fn on_recruit(&mut self, from: P) {
        let in_place = self.rooted && self.parent.is_some() && self.attempt.is_none();
        if self.cfg.role != Role::Viewer || !in_place || !self.backbone || !self.takes_children() {
            return;
        }
        // Only an ancestor may move us (up, within its subtree: no loop can form).
        let Some(depth) = self.path.iter().position(|p| *p == from) else {
            return;
        };
        self.attach_to(from, (depth + 1) as u8);
    }

    /// Takes the recruit's own attach request into the kept slot and hands it the held orphans. Returns whether
    /// `joiner` was the recruit and was taken (if it can no longer be, the orphans are placed as any request).
    pub(super) fn recruit_arrived(&mut self, joiner: P, request: AttachRequest, direct: bool) -> bool {
        if self.recruiting.as_ref().is_none_or(|r| r.id != joiner) {
            return false;
        }
        let recruit = self.recruiting.take().expect("checked above");
        let rooted = self.rooted || self.cfg.role == Role::Broadcaster;
        if !rooted || !self.takes_children() || !self.can_link(request.reachable) {
            self.release_held(recruit.held);
            return false;
        }
        self.accept(joiner, request, direct);
        // Sent after the acceptance, over the same link: the recruit knows its new place when they come.
        for (orphan, request) in recruit.held {
            self.send(
                joiner,
                Message::Place {
                    joiner: orphan,
                    request,
                    hops: 1,
                },
            );
        }
        true
    }

    /// Holds an orphan's request (asked of us directly) while a recruit is on its way. Returns whether it did.
    pub(super) fn hold_orphan(&mut self, joiner: P, request: AttachRequest, direct: bool) -> bool {
        match self.recruiting.as_mut() {
            Some(r) if request.orphan && direct && r.held.len() < MAX_HELD => {
                r.held.push((joiner, request));
                true
            }
            _ => false,
        }
    }

    /// Gives up a recruit that did not come in time: the slot is free again and the held orphans are placed.
    pub(super) fn expire_recruiting(&mut self) {
        if self.recruiting.as_ref().is_some_and(|r| self.now >= r.until) {
            let recruit = self.recruiting.take().expect("checked above");
            self.advertise_changes();
            self.release_held(recruit.held);
        }
    }

    fn release_held(&mut self, held: Vec<(P, AttachRequest)>) {
        for (orphan, request) in held {
            self.on_place(orphan, request, 0, true);
        }
    }

    /// The nearest recruitable forwarder of this subtree (see [`super::Advert::fringe`]).
    pub(super) fn fringe_of(&self) -> Option<(P, u8)> {
        let recruitable = self.cfg.role == Role::Viewer && self.backbone && self.cfg.reachable;
        if recruitable && self.takes_children() && self.fringe() {
            return Some((self.me, 0));
        }
        self.listed_children()
            .filter_map(|c| c.fringe)
            .filter(|(_, below)| *below < u8::MAX)
            .min_by_key(|(id, below)| (*below, *id))
            .map(|(id, below)| (id, below + 1))
    }
}
