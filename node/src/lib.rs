//! The StreamrP2P node: live video over libp2p, as a library and as the `streamrp2p` daemon.
//!
//! A [`Node`] owns one libp2p Swarm (TCP+noise+yamux and QUIC; identify, ping, Kademlia, gossipsub for control
//! messages, and the chunk protocol for blocks), a bounded store of each stream's live window, and optionally an HTTP
//! gateway that serves every stream as HLS. A broadcaster publishes segments (from an HLS playlist that ffmpeg or
//! OBS writes, or from code); viewers find the stream through the DHT, fetch and verify its blocks from peers, fall
//! back to the stream's HTTP origin when peers are too slow, and serve what they hold to others.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use streamrp2p_node::{Node, NodeConfig};
//! let viewer = Node::start(NodeConfig::loopback()).await?;
//! let stream = "…64 hex digits…".parse()?;
//! viewer.watch(stream).await?;
//! let mut events = viewer.subscribe();
//! while let Ok(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod gateway;
pub mod identity;
pub mod ingest;
mod mesh;
mod metrics;
mod network;
mod node;
mod peer_manager;
mod playlist;
mod policy;
#[cfg(feature = "demo")]
pub mod sample;
mod service;
mod status;
mod store;
mod throttle;

pub use config::{DEFAULT_UPLOAD_CAPACITY_KBPS, DhtMode, NodeConfig};
pub use libp2p::{Multiaddr, PeerId};
pub use network::{
    Ack, BuildError, CHUNK_PROTOCOL, ChunkCodec, KAD_PROTOCOL, Received, TREEMESH_PROTOCOL, TreeMeshCodec,
    chunk_client, treemesh_client, wire_error,
};
pub(crate) use node::Shared;
pub use node::{Node, NodeError, NodeEvent, NodeHandle};
pub use policy::{Policy, PolicyError, PolicyUpdate};
pub use status::{PenaltyView, Status, StreamStatus};
pub use store::Role;
pub use streamrp2p_protocols::stream::StreamId;
