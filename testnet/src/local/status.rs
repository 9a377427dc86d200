//! A node's `GET /api/status` as the testnet reads it. Every field the node's status is still gaining is optional,
//! so that older and newer node binaries both parse; unknown fields are ignored.

use serde::{Deserialize, Serialize};

/// A node's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's peer id.
    #[serde(default)]
    pub peer_id: String,
    /// Addresses others can dial, each ending in `/p2p/<peer id>`.
    #[serde(default)]
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    #[serde(default)]
    pub peers: usize,
    /// The streams the node carries.
    #[serde(default)]
    pub streams: Vec<StreamStatus>,
    /// The peers its peer manager penalised most (at most ten), worst first.
    #[serde(default)]
    pub penalties: Vec<Penalty>,
}

/// One peer a node penalised, as its status lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// The peer.
    pub peer: String,
    /// Its penalty points (a ban at 100).
    #[serde(default)]
    pub points: f64,
    /// Whether it is banned.
    #[serde(default)]
    pub banned: bool,
    /// Its offences by kind.
    #[serde(default)]
    pub offences: std::collections::BTreeMap<String, u32>,
    /// Its first offence, ms since the Unix epoch.
    #[serde(default)]
    pub first_offence_unix_ms: u64,
    /// When its latest ban began, ms since the Unix epoch.
    #[serde(default)]
    pub banned_unix_ms: Option<u64>,
}

impl NodeStatus {
    /// The status of stream `id` (64 hex digits), if the node carries it.
    pub fn stream(&self, id: &str) -> Option<&StreamStatus> {
        self.streams.iter().find(|s| s.id == id)
    }
}

/// One stream's status on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// The stream id.
    pub id: String,
    /// The stream's name.
    #[serde(default)]
    pub name: String,
    /// `broadcaster` or `viewer`.
    #[serde(default)]
    pub role: String,
    /// Segments completed since the node started.
    #[serde(default)]
    pub segments: u64,
    /// Segments in the live window now.
    #[serde(default)]
    pub segments_held: u64,
    /// Verified payload bytes received from peers (the broadcaster included).
    #[serde(default)]
    pub bytes_from_peers: u64,
    /// Verified payload bytes received from the HTTP origin.
    #[serde(default)]
    pub bytes_from_origin: u64,
    /// Payload bytes sent to peers.
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// `backbone` or `mesh`.
    #[serde(default)]
    pub tree_role: Option<String>,
    /// Peer ids of the tree parents.
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    /// Peer ids of the tree children.
    #[serde(default)]
    pub children: Option<Vec<String>>,
    /// Join to first segment playable, seconds (null before).
    #[serde(default)]
    pub ttfb_s: Option<f64>,
    /// The node's own median lag, seconds.
    #[serde(default)]
    pub lag_p50_s: Option<f64>,
    /// The node's own 95th percentile lag, seconds.
    #[serde(default)]
    pub lag_p95_s: Option<f64>,
    /// Time the playback stalled, seconds.
    #[serde(default)]
    pub stalled_s: Option<f64>,
    /// Time watched, seconds.
    #[serde(default)]
    pub watched_s: Option<f64>,
    /// Payload bytes received more than once.
    #[serde(default)]
    pub bytes_duplicate: Option<u64>,
    /// Control bytes sent.
    #[serde(default)]
    pub bytes_control_sent: Option<u64>,
    /// Segments playable by their deadline.
    #[serde(default)]
    pub segments_on_time: Option<u64>,
    /// Segments not playable by their deadline.
    #[serde(default)]
    pub segments_late: Option<u64>,
    /// Lag of each of the last ≤128 completed segments: completion minus the broadcaster's signed timestamp, seconds.
    #[serde(default)]
    pub lags_s: Option<Vec<f64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn todays_status_parses_and_new_fields_are_none() {
        let json = r#"{"peer_id":"12D3","listen_addrs":["/ip4/127.0.0.1/tcp/1/p2p/12D3"],"peers":2,
            "streams":[{"id":"ab","name":"local","role":"viewer","segments":3,"segments_held":3,
            "bytes_from_peers":10,"bytes_from_origin":5,"bytes_uploaded":7}]}"#;
        let status: NodeStatus = serde_json::from_str(json).unwrap();
        let s = status.stream("ab").unwrap();
        assert_eq!(s.bytes_from_peers, 10);
        assert_eq!(s.ttfb_s, None);
        assert_eq!(s.lags_s, None);
    }

    #[test]
    fn new_fields_parse() {
        let json = r#"{"streams":[{"id":"ab","tree_role":"mesh","parents":["p"],"children":[],"ttfb_s":1.5,
            "stalled_s":0.0,"watched_s":10.0,"segments_on_time":5,"segments_late":1,"lags_s":[0.5,0.7],
            "bytes_duplicate":3,"bytes_control_sent":4,"something_newer":true}]}"#;
        let status: NodeStatus = serde_json::from_str(json).unwrap();
        let s = status.stream("ab").unwrap();
        assert_eq!(s.tree_role.as_deref(), Some("mesh"));
        assert_eq!(s.lags_s.as_deref(), Some(&[0.5, 0.7][..]));
        assert_eq!(s.segments_late, Some(1));
    }
}
