//! The hybrid tree-mesh of one stream and its block scheduler, as a sans-io state machine.
//!
//! One [`TreeMesh`] runs per peer and stream. The driver (the node's event loop, or the simulator) hands it
//! [`Input`]s with the time they happened, calls [`TreeMesh::handle_timeout`] when [`TreeMesh::poll_timeout`] says,
//! and carries out the [`Output`]s it polls: control messages, block pushes and serves, origin fetches. It has no
//! clock, no sockets and no tasks; its randomness comes from a seed. The node and the simulator run this same code.
//!
//! # The algorithm
//!
//! **Backbone tree (after mTreebone, Wang, Xiong and Liu, ICDCS 2007).** Peers that have proven stable — in the
//! stream for [`Config::stable_after_s`] — and whose upload budget pays for at least
//! [`Config::backbone_min_slots`] children at [`Config::child_rate_x`] times the bitrate form a tree rooted at the
//! broadcaster. Every peer, backbone or not, has one parent in that tree, which pushes it every block as soon as
//! the block is verified (cut-through: never waiting for the segment). Peers outside the backbone are the tree's
//! leaves ("outskirts" in mTreebone). The root's children get their own rate ([`Config::root_child_rate_x`]), and
//! a peer that learns of a free slot nearer the root moves there (mTreebone's low-delay jump). Each peer knows its
//! path from the root; a peer never accepts a child that is on its own path, and a peer that finds itself on its
//! parent's path leaves it, so no loop survives.
//!
//! **Join.** A joiner gets a few of the stream's peers from discovery (the DHT), probes them — which measures the
//! latency and returns their place in the tree, free slots, held segments and a few more peers (peer exchange, as
//! in HyParView's shuffle) — then asks the candidate with the best mix of few hops and low latency to be its parent;
//! a full parent answers with the free slots nearest below it, which every backbone peer keeps track of from its
//! children's adverts (a directory of free slots, kept current up the tree), so a joiner attaches in one step
//! instead of descending a level per round trip. The joiner starts one segment behind the live
//! edge. It plans to play [`Config::startup_s`] after joining: that first segment is pulled, striped block by block,
//! from the probed peers that hold it, and the origin is asked just in time for the blocks they would not deliver
//! by then — so a burst of joiners does not land on the origin, and every later deadline gains the same slack. The
//! next segments are pulled too, and the parent pushes from the one after.
//!
//! **Mesh (after CoolStreaming/DONet, Zhang et al., INFOCOM 2005, and PlumTree's lazy links).** Every viewer also
//! keeps [`Config::mesh_degree`] neighbours, the nearest it knows, and tells them with a HAVE each time a segment is
//! whole. Blocks no parent is pushing — a joiner's first segments, everything while the parent is being replaced,
//! and pushed segments that are overdue — are pulled from neighbours that have them: the most urgent segment first
//! and, among segments not yet urgent, the rarest first, a few pulls per neighbour at a time.
//!
//! **Repair.** When the parent leaves, detaches or lets segments fall overdue twice in a row, the peer tells its
//! own subtree that it is cut off, keeps its children, pulls from the mesh meanwhile, and re-attaches to the best
//! candidate it knows (or finds more through discovery) within [`Config::attach_timeout_s`] per try.
//!
//! **Capacity.** A peer advertises free slots out of its budget ([`Config::budget`], after the owner's
//! [`Policy`]) and never accepts a child beyond them; pulls are served one at a time plus one per bitrate of budget
//! the children leave free, and refused beyond that. A child's push queue holds at most
//! [`Config::child_queue_segments`]; beyond it the oldest block is dropped, never queued without bound.
//!
//! **Deadlines.** The built-in virtual player gives every segment a playback deadline. Before it, a pushed segment
//! still incomplete is rescued from the mesh, and what still would be late is fetched from the HTTP origin block by
//! block, just in time: the origin is asked for no more than peers cannot deliver. A block the origin is slow to
//! send (twice its usual time: a busy origin) may also be pulled from a peer that holds it — a hedged request, after
//! Dean and Barroso's "The Tail at Scale" (CACM 2013) — so a saturated origin does not hold up what a neighbour has.
//!
//! **Policy.** Metered peers upload nothing; background peers keep a quarter of their budget and stay out of the
//! backbone; a target upload/download ratio stops serving once reached.

mod config;
mod fetch;
mod machine;
mod mesh;
mod message;
mod peers;
mod place;
mod tree;
mod upload;
mod window;

pub use config::{BACKGROUND_SHARE, Config, Policy, Role};
pub use machine::{BlockSource, Counters, Input, Output, PeerId, TreeMesh, UploadKind};
pub use message::{
    Advert, AttachRequest, MAX_FREE_ADVERTISED, MESSAGE_OVERHEAD_BYTES, Message, PEER_ID_BYTES, Refusal, SegmentInfo,
};
pub use peers::MAX_KNOWN;
pub use tree::MAX_DEPTH;
pub use window::MAX_BLOCKS;
