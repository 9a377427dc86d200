//! The node's status as `GET /api/status` reports it.

use serde::Serialize;

use crate::Shared;
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
}

pub(crate) fn status(shared: &Shared) -> Status {
    let store = shared.store.read().expect("store lock");
    let mut streams: Vec<StreamStatus> = store
        .streams()
        .map(|(id, s)| StreamStatus {
            id: id.to_string(),
            name: s.info.as_ref().map(|i| i.info().name.clone()).unwrap_or_default(),
            role: s.role,
            segments: s.counters.segments,
            segments_held: s.segments.len(),
            bytes_from_peers: s.counters.from_peers,
            bytes_from_origin: s.counters.from_origin,
            bytes_uploaded: s.counters.uploaded,
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
    }
}
