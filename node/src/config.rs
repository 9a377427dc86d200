//! The node's configuration: plain data, each default with where its number comes from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::policy::Policy;

/// Kademlia mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhtMode {
    /// Server when the node is reachable: it listens only on loopback, or an `external` address is configured;
    /// otherwise libp2p decides from confirmed external addresses.
    #[default]
    Auto,
    /// Always answer DHT queries.
    Server,
    /// Never answer DHT queries (a node behind NAT that cannot be reached).
    Client,
}

/// [`NodeConfig::upload_capacity_kbps`]'s default: 20 Mbit/s, the upload half of the FCC's broadband benchmark.
pub const DEFAULT_UPLOAD_CAPACITY_KBPS: f64 = 20_000.0;

/// Everything a node needs to run. `NodeConfig::default()` is a node on all interfaces with an ephemeral identity.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the identity key lives. `None`: a new identity each run, nothing written to disk.
    pub data_dir: Option<PathBuf>,
    /// Addresses to listen on. Default: TCP and QUIC on all interfaces, port 4100.
    pub listen: Vec<Multiaddr>,
    /// Addresses of known peers (with `/p2p/<peer id>`) to join the network through.
    pub bootstrap: Vec<Multiaddr>,
    /// Publicly reachable addresses of this node, announced to others.
    pub external: Vec<Multiaddr>,
    /// Gateway and API address. `None`: no HTTP server. Port 0 picks a free port ([`crate::NodeHandle::http_addr`]).
    pub http: Option<SocketAddr>,
    /// Kademlia mode.
    pub dht: DhtMode,
    /// How much of each stream is kept and served: 60 s, the design's live window (30 segments of 2 s).
    pub live_window: Duration,
    /// Upper bound on bytes kept per stream, whatever the window: 256 MiB holds 60 s of 32 Mbit/s video.
    pub max_stream_bytes: u64,
    /// Request timeout of the chunk and tree-mesh protocols: 20 s, twice libp2p's default, since a block may queue
    /// behind others on a slow uplink. (Where a viewer starts, when it pulls and when it asks the origin are the
    /// tree-mesh's decisions, tuned in the simulator: see `streamrp2p_protocols::treemesh::Config`.)
    pub request_timeout: Duration,
    /// How long a peer that sent bad data stays banned: 10 minutes.
    pub ban_duration: Duration,
    /// How long a segment may be missing before the playlist skips past it: 3 target durations, so a player's
    /// buffer drains before the gap is given up.
    pub skip_gap_after: Duration,
    /// What the owner allows the node to upload ([`Policy`]). Default: no cap, not metered, not background, no ratio
    /// limit — a desktop or server node; see [`Policy::phone`] for a phone's.
    pub policy: Policy,
    /// The uplink the node assumes, in kbit/s, when planning how many peers it feeds and no lower
    /// `policy.max_upload_kbps` is set. It is not measured yet. 20,000 kbit/s: the upload half of the FCC's fixed
    /// broadband benchmark (100/20 Mbit/s since 2024), 8 times the simulator's 2.5 Mbit/s stream. A node on a slower
    /// uplink should say so (`--upload-capacity-kbps`) or cap its upload (`--max-upload-kbps`).
    pub upload_capacity_kbps: f64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            listen: vec![
                "/ip4/0.0.0.0/tcp/4100".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/4100/quic-v1".parse().expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            external: Vec::new(),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            dht: DhtMode::Auto,
            live_window: Duration::from_secs(60),
            max_stream_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(20),
            ban_duration: Duration::from_secs(600),
            skip_gap_after: Duration::from_secs(6),
            policy: Policy::default(),
            upload_capacity_kbps: DEFAULT_UPLOAD_CAPACITY_KBPS,
        }
    }
}

impl NodeConfig {
    /// A node for tests and demos: loopback only, ephemeral ports, no data dir.
    pub fn loopback() -> Self {
        Self {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid multiaddr"),
            ],
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        }
    }
}
