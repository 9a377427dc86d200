//! The node's status as `GET /api/status` reports it.

use serde::Serialize;

use crate::Shared;
pub use crate::peer_manager::PenaltyView;
use crate::store::Role;

/// A node's status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses others can dial, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub peers: usize,
    /// The streams this node broadcasts or watches.
    pub streams: Vec<StreamStatus>,
    /// The peers with the most penalty points (at most ten), worst first: each with its points now (a ban at 100,
    /// halving every ten minutes), whether it is banned, its offences by kind (`bad_block`, `forged_entry`,
    /// `malformed`, `lie`, `quota_overrun`, `withholding`, `unsolicited`), and when it first offended and was
    /// banned (ms since the Unix epoch).
    pub penalties: Vec<PenaltyView>,
}

/// One stream's status on this node.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    /// The stream id.
    pub id: String,
    /// The stream's name (empty until a viewer has its signed info).
    pub name: String,
    /// What this node does for the stream.
    pub role: Role,
    /// Segments completed (published, or fetched whole and verified) since the node started.
    pub segments: u64,
    /// Segments held in the live window now.
    pub segments_held: usize,
    /// Verified payload bytes received from peers.
    pub bytes_from_peers: u64,
    /// Verified payload bytes received from the stream's HTTP origin.
    pub bytes_from_origin: u64,
    /// Payload bytes sent to peers.
    pub bytes_uploaded: u64,
    /// New manifest entries heard as announcements on the stream's gossipsub topic. Nearly every entry comes this
    /// way while the topic works; a viewer whose entries come mostly from manifests has a topic that does not reach it.
    pub entries_from_topic: u64,
    /// New manifest entries learnt from manifests asked of peers: the newest ones when joining, and any whose
    /// announcement a block overtook.
    pub entries_from_manifests: u64,
    /// Where this node sits in the stream's hybrid tree-mesh: `backbone` (a stable forwarder of the push tree, or
    /// the broadcaster) or `mesh` (a leaf that also pulls from mesh neighbours); `null` before it joins.
    pub tree_role: Option<&'static str>,
    /// Its parent in the push tree (none or one), as peer ids.
    pub parents: Vec<String>,
    /// Its children in the push tree.
    pub children: Vec<String>,
    /// The virtual player's time from starting to watch to the first segment playable; `null` until it plays.
    pub ttfb_s: Option<f64>,
    /// Lag (segment made at the broadcaster → whole here) of the newest 128 segments, median.
    pub lag_p50_s: Option<f64>,
    /// The same, 95th percentile.
    pub lag_p95_s: Option<f64>,
    /// Time the virtual player spent stalled.
    pub stalled_s: f64,
    /// Time the virtual player has been playing or stalled since it started.
    pub watched_s: f64,
    /// Segments whole by their playback deadline.
    pub segments_on_time: u64,
    /// Segments late or missing at their deadline.
    pub segments_late: u64,
    /// Payload bytes received for blocks already held.
    pub bytes_duplicate: u64,
    /// Control bytes sent (tree-mesh messages, as the simulator counts them).
    pub bytes_control_sent: u64,
    /// The lags of the newest segments (at most 128), oldest first.
    pub lags_s: Vec<f64>,
}

/// One stream's tree-mesh figures, as the event loop last published them.
#[derive(Clone, Debug, Default)]
pub(crate) struct MeshView {
    pub(crate) tree_role: &'static str,
    pub(crate) parents: Vec<String>,
    pub(crate) children: Vec<String>,
    pub(crate) ttfb_s: Option<f64>,
    pub(crate) lag_p50_s: Option<f64>,
    pub(crate) lag_p95_s: Option<f64>,
    pub(crate) stalled_s: f64,
    pub(crate) watched_s: f64,
    pub(crate) segments_on_time: u64,
    pub(crate) segments_late: u64,
    pub(crate) bytes_duplicate: u64,
    pub(crate) bytes_control_sent: u64,
    pub(crate) lags_s: Vec<f64>,
}

pub(crate) fn status(shared: &Shared) -> Status {
    let store = shared.store.read().expect("store lock");
    let mut streams: Vec<StreamStatus> = store
        .streams()
        .map(|(id, s)| {
            let mesh = s.mesh.clone().unwrap_or_default();
            StreamStatus {
                id: id.to_string(),
                name: s.info.as_ref().map(|i| i.info().name.clone()).unwrap_or_default(),
                role: s.role,
                segments: s.counters.segments,
                segments_held: s.segments.len(),
                bytes_from_peers: s.counters.from_peers,
                bytes_from_origin: s.counters.from_origin,
                bytes_uploaded: s.counters.uploaded,
                entries_from_topic: s.counters.entries_from_topic,
                entries_from_manifests: s.counters.entries_from_manifests,
                tree_role: s.mesh.as_ref().map(|m| m.tree_role),
                parents: mesh.parents,
                children: mesh.children,
                ttfb_s: mesh.ttfb_s,
                lag_p50_s: mesh.lag_p50_s,
                lag_p95_s: mesh.lag_p95_s,
                stalled_s: mesh.stalled_s,
                watched_s: mesh.watched_s,
                segments_on_time: mesh.segments_on_time,
                segments_late: mesh.segments_late,
                bytes_duplicate: mesh.bytes_duplicate,
                bytes_control_sent: mesh.bytes_control_sent,
                lags_s: mesh.lags_s,
            }
        })
        .collect();
    streams.sort_by(|a, b| a.id.cmp(&b.id));
    Status {
        peer_id: shared.peer_id.to_string(),
        listen_addrs: shared
            .listen_addrs
            .read()
            .expect("listen lock")
            .iter()
            .map(ToString::to_string)
            .collect(),
        peers: shared.metrics.peers.get().max(0) as usize,
        streams,
        penalties: shared.penalties.read().expect("penalties lock").clone(),
    }
}
