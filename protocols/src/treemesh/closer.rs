//! Moving to a closer parent: a peer that knows a peer at least as near the root as its parent, with room for it,
//! and a shorter round trip, moves there.
//!
//! Push-down placement puts a joiner where the tree has room, without regard to latency (the peers that pass its
//! request down cannot know its distance to anyone). Every hop of the tree costs its link's latency on the way to
//! every peer below, so the peer improves its own link afterwards, as mesh-first overlays do (mTreebone's
//! latency-aware parent selection; Narada's and NICE's refinement of an overlay by measured delays): every
//! [`super::Config::closer_after_s`] it looks among the peers it has measured — its mesh neighbours, which it chose
//! for being near, and the peers it probed — for one whose level, plus its latency, beats the parent's by
//! [`super::Config::closer_gain_s`], and asks it for a place no deeper than its own (so a move never pushes a
//! subtree down). The new parent pushes from where the old one was, and the old one is let go only once the new one
//! has accepted, so nothing is lost or sent twice.

use super::config::Role;
use super::machine::{PeerId, TreeMesh};
use super::message::Message;
use super::peers::OptTime;

/// What a level nearer the root is worth against latency, seconds: about what a hop costs a block (a forwarder's
/// share of one block's time on its uplink, plus the queueing behind its other children).
const LEVEL_S: f64 = 0.1;

impl<P: PeerId> TreeMesh<P> {
    /// Moves to a closer parent when one is known (see the module docs).
    pub(super) fn consider_closer_parent(&mut self) {
        let gain = self.cfg.closer_gain_s;
        let settled = self.parent.is_some() && self.attempt.is_none() && self.rooted;
        if gain <= 0.0 || !settled || self.cfg.role != Role::Viewer {
            return;
        }
        if self.now - self.last_move < self.cfg.closer_after_s {
            return;
        }
        let Some(parent) = self.parent.map(|p| p.id) else {
            return;
        };
        let depth = self.path.len();
        let Some(parent_latency) = self
            .peers
            .list
            .iter()
            .find(|k| k.id == parent)
            .and_then(|k| k.latency.get())
        else {
            // Not measured yet: measure it (the answer makes the next round's comparison).
            self.measure(parent);
            return;
        };
        let parent_cost = parent_latency + depth.saturating_sub(1) as f64 * LEVEL_S;
        let forwarder = self.capable() && self.backbone;
        let best = self
            .peers
            .list
            .iter()
            .filter(|k| k.id != parent && k.rooted && k.not_before <= self.now && self.can_link(k.reachable))
            .filter(|k| k.spare > 0 || (forwarder && k.leaves > 0))
            .filter_map(|k| {
                let d = usize::from(k.depth?);
                let latency = k.latency.get()?;
                (d < depth).then_some((latency + d as f64 * LEVEL_S, k.id))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        self.last_move = self.now;
        if let Some((cost, id)) = best
            && cost + gain < parent_cost
        {
            self.attach_to(id, depth as u8);
            return;
        }
        // Widen the choice for the next round: measure a few known peers never measured.
        let unmeasured: Vec<P> = self
            .peers
            .list
            .iter()
            .filter(|k| k.latency.is_none() && k.asked_at.is_none() && k.id != parent && self.can_link(k.reachable))
            .take(self.cfg.closer_probes)
            .map(|k| k.id)
            .collect();
        for id in unmeasured {
            self.measure(id);
        }
    }

    /// Sends a probe to `id` to measure the round trip to it.
    pub(super) fn measure(&mut self, id: P) {
        let now = self.now;
        let pinned = self.pinned_fn();
        if let Some(k) = self.peers.entry(id, true, now, pinned)
            && k.asked_at.is_none()
        {
            k.asked_at = OptTime::some(now);
            self.send(id, Message::Probe);
        }
    }
}
