//! What must hold of a machine after every input, whatever its peers sent: checked by the property tests (and by
//! the simulator's checking mode) after each step.

use super::machine::{PeerId, TreeMesh};
use super::message::MAX_CHILD_SLOTS;
use super::peers::MAX_KNOWN;
use super::window::MAX_BLOCKS;

/// Bounds on what a machine holds, whatever its inputs: each is the structure's own limit, so a machine's memory is
/// bounded by their sum.
const MAX_HELD: usize = 16;
const MAX_LISTS: usize = 32;

impl<P: PeerId> TreeMesh<P> {
    /// Checks the machine's invariants: every queue, table and window within its bound, no loop in the tree as far as
    /// this peer can see it, and payload queued only for children that asked for it themselves (the rest is checked
    /// on the outputs by the tests). For tests and checking runs; says what is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |what: String| Err(what);
        let keep = self.cfg.window_segments.max(1) as usize;
        if self.window.len() > 2 * keep {
            return fail(format!(
                "window holds {} slots, more than 2 × {keep}",
                self.window.len()
            ));
        }
        if self.children.len() > MAX_CHILD_SLOTS as usize {
            return fail(format!("{} children, more than {MAX_CHILD_SLOTS}", self.children.len()));
        }
        // The bound a child's queue keeps to, whatever the child asked for.
        let queue_limit = self.child_queue_limit();
        for child in &self.children {
            if child.queue.len() > queue_limit {
                return fail(format!("{} blocks queued for one child", child.queue.len()));
            }
            if child.id == self.me {
                return fail("this peer is its own child".into());
            }
            if child.in_flight && !child.confirmed {
                return fail("a push in flight to a child that never confirmed".into());
            }
            if self.parent.is_some_and(|p| p.id == child.id) {
                return fail("a peer is both parent and child".into());
            }
        }
        if self.parent.is_some_and(|p| p.id == self.me) || self.path.contains(&self.me) {
            return fail("this peer is on its own path".into());
        }
        if self.path.len() > super::MAX_DEPTH {
            return fail(format!("a path of {} peers", self.path.len()));
        }
        if self.peers.list.len() > MAX_KNOWN {
            return fail(format!("{} known peers, more than {MAX_KNOWN}", self.peers.list.len()));
        }
        if self.pulls.len() > self.cfg.max_pulls {
            return fail(format!("{} pulls in flight", self.pulls.len()));
        }
        let serve_limit = self.cfg.serve_queue + (self.cfg.budget() / self.cfg.bitrate.max(1.0)).ceil() as usize;
        if self.serves.len() > serve_limit.max(self.cfg.serve_queue) {
            return fail(format!("{} answers queued, more than {serve_limit}", self.serves.len()));
        }
        if self.origin.len() > 2 * keep * usize::from(MAX_BLOCKS) {
            return fail(format!("{} origin fetches", self.origin.len()));
        }
        let held = [self.guard.held_haves.len(), self.guard.held_places.len()];
        if held.iter().any(|n| *n > MAX_HELD) {
            return fail(format!("held messages {held:?}, more than {MAX_HELD}"));
        }
        let lists = [
            self.guard.complaints.len(),
            self.guard.shunned.len(),
            self.guard.avoiding.len(),
            self.guard.expired_pulls.len(),
        ];
        if self.guard.reported.len() > super::machine::MAX_REPORTED {
            return fail(format!("{} withholders reported", self.guard.reported.len()));
        }
        if lists.iter().any(|n| *n > MAX_LISTS) {
            return fail(format!("bounded lists hold {lists:?}"));
        }
        Ok(())
    }
}
