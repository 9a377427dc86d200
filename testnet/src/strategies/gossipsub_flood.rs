//! Baseline: blocks pushed over a random mesh, as libp2p gossipsub does when video blocks are published on a topic
//! (`max_transmit_size` raised).
//!
//! Each viewer keeps [`MESH_DEGREE`] random mesh peers (gossipsub's D; it accepts up to [`MESH_HIGH`], D_hi), and the
//! broadcaster publishes every block to its own D mesh peers. A peer forwards each block it receives for the first
//! time to every mesh peer except the one it came from (eager push). Gossipsub v1.2's IDONTWANT is modelled
//! generously: a send still queued is skipped when its receiver already holds the block. Each peer sends through one
//! bounded queue (gossipsub's send queue) with [`PARALLEL_SENDS`] transfers at a time, dropping what overflows it.
//! Gossipsub does not replay history, so a joiner asks one mesh peer for the two segments before the live edge (the
//! origin when none has them). Lazy gossip (IHAVE/IWANT) is not modelled: its repairs come a heartbeat (1 s) late,
//! after the eager copies, so it adds duplicates rather than removing them.

use std::collections::VecDeque;

use rand::seq::IndexedRandom;

use super::slab::Slab;
use crate::network::{Finished, NodeId};
use crate::sim::{Core, Source, Strategy};

/// Gossipsub's mesh degree D (the "random mesh of degree 8").
pub const MESH_DEGREE: usize = 8;
/// D_hi: a peer accepts inbound grafts up to this many mesh peers.
pub const MESH_HIGH: usize = 12;
/// Transfers a peer runs at once from its send queue.
pub const PARALLEL_SENDS: usize = 8;
/// Blocks a peer's send queue holds; beyond it, new sends are dropped.
pub const SEND_QUEUE: usize = 256;
/// Gossipsub framing per forwarded message (topic, message id, signature, protobuf), counted as control bytes.
const MESSAGE_HEADER_BYTES: f64 = 180.0;

const BROADCASTER: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Send {
    from: usize,
    to: usize,
    seq: u64,
    block: Option<u16>,
}

/// The gossipsub-flood baseline.
#[derive(Default)]
pub struct GossipsubFlood {
    mesh: Vec<Vec<usize>>,
    broadcaster_mesh: Vec<usize>,
    queues: Vec<VecDeque<Send>>,
    in_flight: Vec<usize>,
    present: Vec<usize>,
    transfers: Slab<Send>,
}

impl GossipsubFlood {
    fn slot(peer: usize) -> usize {
        if peer == BROADCASTER { 0 } else { peer + 1 }
    }

    fn node(core: &Core, peer: usize) -> NodeId {
        if peer == BROADCASTER {
            core.broadcaster
        } else {
            core.viewers[peer].node
        }
    }

    fn reachable(core: &Core, a: usize, b: usize) -> bool {
        let nat = |p: usize| p != BROADCASTER && core.viewers[p].nat;
        !(nat(a) && nat(b))
    }

    fn enqueue(&mut self, core: &mut Core, send: Send) {
        let q = &mut self.queues[Self::slot(send.from)];
        if q.len() < SEND_QUEUE {
            q.push_back(send);
        }
        self.pump(core, send.from);
    }

    /// Starts queued sends up to the parallel limit, skipping those the receiver no longer wants.
    fn pump(&mut self, core: &mut Core, from: usize) {
        let slot = Self::slot(from);
        while self.in_flight[slot] < PARALLEL_SENDS {
            let Some(send) = self.queues[slot].pop_front() else {
                return;
            };
            if !core.viewers[send.to].present() {
                continue;
            }
            let bytes = match send.block {
                Some(block) => {
                    if core.holds(send.to, send.seq, block) {
                        continue; // IDONTWANT
                    }
                    core.bytes.control += MESSAGE_HEADER_BYTES;
                    u64::from(
                        core.segment_info(send.seq)
                            .block_bytes(block, core.scenario.block_size()),
                    )
                }
                None => core.segment_bytes(),
            };
            self.in_flight[slot] += 1;
            let tag = self.transfers.insert(send);
            let (src, dst) = (Self::node(core, from), Self::node(core, send.to));
            core.push(src, dst, bytes, tag);
        }
    }

    fn graft(&mut self, core: &mut Core, viewer: usize) {
        let candidates: Vec<usize> = self
            .present
            .choose_multiple(&mut core.rng, 3 * MESH_DEGREE)
            .copied()
            .collect();
        for peer in candidates {
            if self.mesh[viewer].len() >= MESH_DEGREE {
                break;
            }
            if peer == viewer
                || self.mesh[viewer].contains(&peer)
                || self.mesh[peer].len() >= MESH_HIGH
                || !Self::reachable(core, viewer, peer)
            {
                continue;
            }
            self.mesh[viewer].push(peer);
            self.mesh[peer].push(viewer);
            core.bytes.control += 2.0 * 60.0; // GRAFT and its acknowledgement in the heartbeat
        }
    }

    /// The two segments before the live edge, from one mesh peer that has them, or the origin.
    fn catch_up(&mut self, core: &mut Core, viewer: usize) {
        let (Some(first), Some(newest)) = (core.viewers[viewer].first_seq, core.newest_segment()) else {
            return;
        };
        for seq in first..=newest {
            let all = core.all_blocks();
            let holder = self.mesh[viewer].iter().copied().find(|p| {
                let v = &core.viewers[*p];
                v.first_seq
                    .and_then(|f| seq.checked_sub(f))
                    .and_then(|k| v.blocks.get(k as usize))
                    .is_some_and(|b| b & all == all)
            });
            match holder {
                Some(peer) => self.enqueue(
                    core,
                    Send {
                        from: peer,
                        to: viewer,
                        seq,
                        block: None,
                    },
                ),
                None => {
                    core.bytes.control += 300.0;
                    let tag = self.transfers.insert(Send {
                        from: BROADCASTER,
                        to: viewer,
                        seq,
                        block: None,
                    });
                    let (origin, node, bytes) = (core.origin, core.viewers[viewer].node, core.segment_bytes());
                    // Tagged with the top bit: an origin fetch, not a broadcaster send.
                    core.request(origin, node, bytes, tag | 1 << 63);
                }
            }
        }
    }
}

impl Strategy for GossipsubFlood {
    fn on_join(&mut self, core: &mut Core, viewer: usize) {
        if self.queues.is_empty() {
            self.queues.push(VecDeque::new());
            self.in_flight.push(0);
        }
        self.mesh.resize_with(viewer + 1, Vec::new);
        self.queues.resize_with(viewer + 2, VecDeque::new);
        self.in_flight.resize(viewer + 2, 0);
        self.graft(core, viewer);
        self.present.push(viewer);
        if self.broadcaster_mesh.len() < MESH_DEGREE {
            self.broadcaster_mesh.push(viewer);
        }
        self.catch_up(core, viewer);
    }

    fn on_leave(&mut self, core: &mut Core, viewer: usize, cancelled: Vec<u64>) {
        for tag in cancelled {
            if let Some(send) = self.transfers.take(tag & !(1 << 63))
                && send.from != viewer
                && tag & (1 << 63) == 0
            {
                self.in_flight[Self::slot(send.from)] -= 1;
                self.pump(core, send.from);
            }
        }
        self.present.retain(|v| *v != viewer);
        self.broadcaster_mesh.retain(|v| *v != viewer);
        self.queues[Self::slot(viewer)].clear();
        // The heartbeat notices and grafts replacements for peers that fall below D_lo (modelled as D).
        let peers = std::mem::take(&mut self.mesh[viewer]);
        for peer in peers {
            self.mesh[peer].retain(|v| *v != viewer);
            self.graft(core, peer);
        }
        if self.broadcaster_mesh.len() < MESH_DEGREE
            && let Some(v) = self.present.choose(&mut core.rng).copied()
            && !self.broadcaster_mesh.contains(&v)
        {
            self.broadcaster_mesh.push(v);
        }
    }

    fn on_segment(&mut self, core: &mut Core, seq: u64) {
        let blocks = core.segment_info(seq).blocks(core.scenario.block_size());
        for block in 0..blocks {
            for to in self.broadcaster_mesh.clone() {
                let send = Send {
                    from: BROADCASTER,
                    to,
                    seq,
                    block: Some(block),
                };
                self.enqueue(core, send);
            }
        }
    }

    fn on_flow_finished(&mut self, core: &mut Core, finished: Finished) {
        let origin = finished.tag & (1 << 63) != 0;
        let Some(send) = self.transfers.take(finished.tag & !(1 << 63)) else {
            return;
        };
        let blocks = send.block.map_or(core.all_blocks(), |b| 1u128 << b);
        let source = if origin {
            Source::Origin
        } else if send.from == BROADCASTER {
            Source::Broadcaster
        } else {
            Source::Peer
        };
        if send.from != BROADCASTER {
            core.viewers[send.from].uploaded += finished.bytes as f64;
        }
        let tag = if origin { u64::MAX } else { send.from as u64 };
        core.deliver(finished.src, send.to, send.seq, blocks, source, tag);
        if !origin {
            self.in_flight[Self::slot(send.from)] -= 1;
            self.pump(core, send.from);
        }
    }

    fn on_delivered(&mut self, core: &mut Core, viewer: usize, _from: NodeId, seq: u64, fresh: u128, tag: u64) {
        // Forward every block seen for the first time to the mesh, except back to where it came from.
        let came_from = if tag == u64::MAX { None } else { Some(tag as usize) };
        let blocks = core.segment_info(seq).blocks(core.scenario.block_size());
        for block in (0..blocks).filter(|b| fresh & (1u128 << b) != 0) {
            for to in self.mesh[viewer].clone() {
                if Some(to) != came_from {
                    let send = Send {
                        from: viewer,
                        to,
                        seq,
                        block: Some(block),
                    };
                    self.enqueue(core, send);
                }
            }
        }
    }
}
