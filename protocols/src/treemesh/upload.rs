//! The upload scheduler: everything a peer sends goes out one block at a time, in priority order — pushes to
//! children in the backbone, then pushes to leaf children, then answers to pulls.
//!
//! Sending blocks one after another at the full uplink, rather than to every child at once at a share of it, is
//! what makes cut-through pay: a block reaches the first child after one block's time at the whole uplink, not
//! after one block's time at a quarter of it, so every hop of the tree costs a quarter as much while the last child
//! still gets the segment as soon as sharing would have delivered it (the uplink sends the same bytes either way).
//! Backbone children go first because everything below them waits on them; leaf children have nobody waiting.
//! Answers to pulls use what the children leave: the children were promised their rate, pullers were not.

use super::machine::{PeerId, TreeMesh, UploadKind};
use super::message::SegmentInfo;

impl<P: PeerId> TreeMesh<P> {
    /// Starts uploads until [`super::Config::uploads_in_flight`] are running or nothing is waiting.
    pub(super) fn pump_uploads(&mut self) {
        while self.uploading < self.cfg.uploads_in_flight {
            if let Some(i) = self.next_child() {
                let child = &mut self.children[i];
                let (segment, block) = child.queue.pop_front().expect("chosen for a queued block");
                child.in_flight = true;
                let to = child.id;
                self.start_upload(segment, block);
                self.out.push_back(super::Output::Push { to, segment, block });
            } else if let Some((to, segment, block)) = self.serves.pop_front() {
                self.start_upload(segment, block);
                self.out.push_back(super::Output::Serve { to, segment, block });
            } else {
                break;
            }
        }
    }

    fn start_upload(&mut self, segment: SegmentInfo, block: u16) {
        self.uploading += 1;
        self.counters.uploaded += f64::from(segment.block_bytes(block, self.cfg.block_size));
    }

    /// How long an upload queued now would wait for the uplink: every block queued for children and pullers, at the
    /// budget's rate.
    fn upload_wait_s(&self) -> f64 {
        let queued = self.children.iter().map(|c| c.queue.len()).sum::<usize>() + self.serves.len() + self.uploading;
        let budget = self.cfg.budget();
        if budget <= 0.0 {
            return f64::INFINITY;
        }
        queued as f64 * f64::from(self.cfg.block_size) / budget
    }

    /// The child whose turn it is: children that forward before leaves, round robin within each.
    fn next_child(&mut self) -> Option<usize> {
        let n = self.children.len();
        for backbone in [true, false] {
            for k in 0..n {
                let i = (self.next_turn + k) % n;
                let c = &self.children[i];
                if c.capable == backbone && c.confirmed && !c.in_flight && !c.queue.is_empty() {
                    self.next_turn = i + 1;
                    return Some(i);
                }
            }
        }
        None
    }

    /// An upload ended (sent, or failed with its connection).
    pub(super) fn on_uploaded(&mut self, to: P, kind: UploadKind) {
        self.uploading = self.uploading.saturating_sub(1);
        if kind == UploadKind::Push
            && let Some(child) = self.children.iter_mut().find(|c| c.id == to)
        {
            child.in_flight = false;
        }
        self.pump_uploads();
    }

    /// Queues an answer to a pull; returns false when the queue is full or the answer would wait too long behind
    /// the uploads queued before it (the puller asks elsewhere).
    pub(super) fn queue_serve(&mut self, to: P, segment: SegmentInfo, block: u16) -> bool {
        let extra = (self.spare_budget() / self.cfg.bitrate).floor() as usize;
        if self.serves.len() >= self.cfg.serve_queue + extra || self.upload_wait_s() > self.cfg.max_serve_wait_s {
            return false;
        }
        self.serves.push_back((to, segment, block));
        self.pump_uploads();
        true
    }
}
