//! The hybrid tree-mesh of one stream and its block scheduler, as a sans-io state machine.
//!
//! One [`TreeMesh`] runs per peer and stream. The driver (the node's event loop, or the simulator) hands it
//! [`Input`]s with the time they happened, calls [`TreeMesh::handle_timeout`] when [`TreeMesh::poll_timeout`] says,
//! and carries out the [`Output`]s it polls: control messages, block pushes and serves, origin fetches. It has no
//! clock, no sockets and no tasks; its randomness comes from a seed. The node and the simulator run this same code.
//!
//! # The algorithm
//!
//! **Backbone tree (after mTreebone, Wang, Xiong and Liu, ICDCS 2007).** Every viewer has one parent in a tree
//! rooted at the broadcaster, which pushes it every block as soon as the block is verified (cut-through: never
//! waiting for the segment). Peers whose upload budget pays for at least [`Config::backbone_min_slots`] children at
//! [`Config::child_rate_x`] times the bitrate forward (take children); the others are the tree's leaves ("outskirts"
//! in mTreebone). Forwarders sit above leaves: a forwarder takes the slot of a leaf, which moves below it
//! (mTreebone's high-degree preemption), and one that has proven stable — in the stream for
//! [`Config::stable_after_s`], the backbone proper — also takes precedence over forwarders that have not. A stable
//! forwarder asks the root now and then for a place at least two levels higher (mTreebone's low-delay jump), so the
//! top of the tree fills with peers that stay and forward. The root's children get their own rate
//! ([`Config::root_child_rate_x`]). Each peer knows its path from the root; a peer never accepts a child that is on
//! its own path, and a peer that finds itself on its parent's path leaves it, so no loop survives.
//!
//! **Join (push-down placement, after SplitStream's, Castro et al., SOSP 2003).** A joiner asks the broadcaster
//! (named by the stream's signed info) for a place. A full parent does not send the joiner back with a list: it
//! passes the request down to the child whose subtree has the most room of the kind asked for (free slots for
//! leaves, or a leaf to displace for a forwarder), counting off what it has passed on so that a burst of joiners
//! spreads over the tree, and whoever takes the joiner answers it directly. Each peer keeps its subtree's room
//! current from its children's adverts; only forwarders at the tree's fringe offer slots to leaves, so leaves never
//! take the slots forwarders need near the top. Meanwhile the joiner probes the stream's peers it got from discovery
//! (the DHT) — which measures the latency and returns their place, held segments and a few more peers (peer
//! exchange, as in HyParView's shuffle) — for its mesh, and to attach to when the broadcaster cannot be reached.
//! Placement cannot weigh latency (no peer on the way knows the joiner's distances), so a placed peer refines its
//! link: it moves to a peer it has measured that is as near the root, has room for it, and is closer than its
//! parent by [`Config::closer_gain_s`] (see the `closer` module), never deeper than it is.
//!
//! **Start.** The joiner starts one segment behind the live edge: that first segment is pulled at once, striped
//! block by block over the peers that hold it, and the parent pushes from the next. Its player starts with the
//! first segment whole, and not before the next one has [`Config::min_slack_s`] between its making and its
//! deadline, so that the tree has time to deliver it; the origin is asked just in time for the blocks peers would
//! not deliver by then.
//!
//! **Mesh (after CoolStreaming/DONet, Zhang et al., INFOCOM 2005, and PlumTree's lazy links).** Every viewer also
//! keeps [`Config::mesh_degree`] neighbours, the nearest it knows, and tells them with a HAVE each time a segment is
//! whole. Blocks no parent is pushing — a joiner's first segments, everything while the parent is being replaced,
//! and pushed segments that are overdue — are pulled from neighbours that have them: the most urgent segment first
//! and, among segments not yet urgent, the rarest first, a few pulls per neighbour at a time.
//!
//! **Repair.** When the parent leaves, detaches, or falls silent twice while peers around hold what it should
//! have pushed, the peer tells its own subtree that it is cut off (a cut-off subtree takes no newcomers), keeps its
//! children, pulls from the mesh meanwhile, and asks for a new place — a forwarder through its former grandparent,
//! near where its subtree was, a leaf through the broadcaster — within [`Config::attach_timeout_s`] per try. The
//! grandparent keeps the freed slot for a stable forwarder it recruits from the fringe of its subtree, and passes it
//! the orphans, so that the lost forwarder's subtrees stay as deep as they were (the successor repair of tree
//! overlays; see the `repair` module).
//!
//! **Capacity.** A peer advertises free slots out of its budget ([`Config::budget`], after the owner's
//! [`Policy`]) and never accepts a child beyond them. Uploads go one block at a time at the full uplink —
//! forwarding children first, then leaves, then pulls — so a block reaches a forwarder in one block's time on the
//! link rather than a share of it; a pull that would wait longer than [`Config::max_serve_wait_s`] is refused. A
//! child's push queue holds at most [`Config::child_queue_segments`]; beyond it the oldest block is dropped, never
//! queued without bound. A child told by its forecast that the parent's push will be late says `Skip` for those
//! blocks and takes them from the mesh or the origin, so the parent spends nothing on what would not be used.
//!
//! **Deadlines.** The built-in virtual player gives every segment a playback deadline. Before it, a pushed segment
//! still incomplete is rescued from the mesh, and what still would be late is fetched from the HTTP origin block by
//! block, just in time: the origin is asked for no more than peers cannot deliver. A block the origin is slow to
//! send (twice its usual time: a busy origin) may also be pulled from a peer that holds it — a hedged request, after
//! Dean and Barroso's "The Tail at Scale" (CACM 2013) — so a saturated origin does not hold up what a neighbour has.
//!
//! **Policy.** Metered peers upload nothing; background peers keep a quarter of their budget and stay out of the
//! backbone; a target upload/download ratio stops serving once reached.

mod closer;
mod config;
mod fetch;
mod invariants;
mod machine;
mod mesh;
mod message;
mod peers;
mod place;
mod repair;
mod tree;
mod upload;
mod window;
pub mod wire;

pub use config::{BACKGROUND_SHARE, Config, Policy, Role};
pub use machine::{BlockSource, Counters, Input, Output, PeerId, TreeMesh, UploadKind};
pub use message::{
    Advert, AttachRequest, MAX_CHILD_SLOTS, MAX_FREE_ADVERTISED, MESSAGE_OVERHEAD_BYTES, Message, PEER_ID_BYTES,
    QuotaClass, Refusal, SegmentInfo, WITHHELD_COMPLAINTS,
};
pub use peers::MAX_KNOWN;
pub use tree::MAX_DEPTH;
pub use window::MAX_BLOCKS;
