//! Baseline: every viewer fetches every segment from the HTTP origin, as an HLS player on a CDN does: one segment
//! at a time, in order, the next as soon as the last has arrived and the next exists.

use crate::network::Finished;
use crate::sim::{Core, Source, Strategy};

/// Bytes of one HLS segment request (a GET with the usual headers), counted as control traffic.
const HTTP_REQUEST_BYTES: f64 = 300.0;

/// The CDN-only baseline.
#[derive(Debug, Default)]
pub struct CdnOnly {
    /// Per viewer, the segment it fetches next, and whether it is waiting for the broadcaster to make it.
    next: Vec<(u64, bool)>,
}

fn tag(viewer: usize, seq: u64) -> u64 {
    ((viewer as u64) << 32) | seq
}

fn untag(tag: u64) -> (usize, u64) {
    ((tag >> 32) as usize, tag & 0xFFFF_FFFF)
}

impl CdnOnly {
    /// Fetches the viewer's next segment if the broadcaster has made it; otherwise waits for it.
    fn fetch_next(&mut self, core: &mut Core, viewer: usize) {
        let (seq, waiting) = &mut self.next[viewer];
        if core.newest_segment().is_none_or(|newest| *seq > newest) {
            *waiting = true;
            return;
        }
        *waiting = false;
        core.bytes.control += HTTP_REQUEST_BYTES;
        let (origin, node, bytes) = (core.origin, core.viewers[viewer].node, core.segment_bytes());
        core.request(origin, node, bytes, tag(viewer, *seq));
    }
}

impl Strategy for CdnOnly {
    fn on_join(&mut self, core: &mut Core, viewer: usize) {
        // Start where the simulator put the viewer's join point, one behind the live edge.
        self.next.resize(viewer + 1, (0, false));
        self.next[viewer] = (core.viewers[viewer].first_seq.unwrap_or(0), false);
        self.fetch_next(core, viewer);
    }

    fn on_leave(&mut self, _: &mut Core, _: usize, _: Vec<u64>) {}

    fn on_segment(&mut self, core: &mut Core, seq: u64) {
        for viewer in 0..self.next.len() {
            if core.viewers[viewer].present() && self.next[viewer] == (seq, true) {
                self.fetch_next(core, viewer);
            }
        }
    }

    fn on_flow_finished(&mut self, core: &mut Core, finished: Finished) {
        let (viewer, seq) = untag(finished.tag);
        let all = core.all_blocks();
        core.deliver(finished.src, viewer, seq, all, Source::Origin, 0);
        // The response reaches the player one latency later; its next request leaves then and takes as long again
        // to reach the origin, which `request` adds.
        self.next[viewer].0 = seq + 1;
        self.fetch_next(core, viewer);
    }
}
