//! The node's one Swarm: its behaviours, transports and their settings.
//!
//! TCP (noise, yamux) and QUIC; identify and ping; Kademlia for peer and stream discovery; gossipsub for a stream's
//! control messages only; the chunk protocol for blocks and manifests. The block list comes first so that a banned
//! peer is refused before any other behaviour sees it; connection limits come next (in total, inbound, pending,
//! per peer, and per remote address).

mod address_limits;
mod codec;
mod mesh_codec;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, allow_block_list, connection_limits, gossipsub, identify, kad, noise, ping,
    request_response, tcp, yamux,
};
use streamrp2p_protocols::control::MAX_CONTROL_SIZE;
use streamrp2p_protocols::quota::limits;

pub use self::codec::{CHUNK_PROTOCOL, ChunkCodec, Received, wire_error};
pub use self::mesh_codec::{Ack, TREEMESH_PROTOCOL, TreeMeshCodec};
use crate::config::NodeConfig;
use crate::throttle::UploadLimiter;

/// Kademlia protocol name: a DHT of StreamrP2P nodes only, apart from IPFS's.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/streamrp2p/kad/1.0.0");
/// identify's protocol version string.
pub(crate) const PROTOCOL_VERSION: &str = "/streamrp2p/1.0.0";
/// Most connections a node keeps, in and out: enough for a stream's mesh and the DHT, few enough for a home uplink.
const MAX_ESTABLISHED: u32 = 256;
/// Most of them inbound, so that strangers dialling in cannot take every place (an eclipse).
const MAX_ESTABLISHED_INBOUND: u32 = 192;
/// Inbound connections being set up at once: a handshake costs CPU, and a flood of them is refused early.
const MAX_PENDING_INBOUND: u32 = 64;
/// Connections to one peer at once (a TCP and a QUIC one while both are tried).
const MAX_PER_PEER: u32 = 2;
/// Concurrent chunk streams per connection: a block request is one stream, and a viewer pipelines many.
const MAX_CHUNK_STREAMS: usize = 256;

/// Everything the node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Peers banned by the peer manager.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Connection limits.
    pub(crate) limits: connection_limits::Behaviour,
    /// Inbound connections per remote address.
    pub(crate) addresses: address_limits::Behaviour,
    /// Exchange of listen addresses and protocols.
    pub(crate) identify: identify::Behaviour,
    /// Liveness and round-trip times.
    pub(crate) ping: ping::Behaviour,
    /// Peer routing and stream provider records.
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Stream control messages.
    pub(crate) gossipsub: gossipsub::Behaviour,
    /// Blocks by CID and manifests.
    pub(crate) chunk: request_response::Behaviour<ChunkCodec>,
    /// The tree-mesh: its control messages between two peers, and blocks pushed to children or served to pulls.
    pub(crate) mesh: request_response::Behaviour<TreeMeshCodec>,
}

/// Why the Swarm could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The TCP transport could not be set up.
    #[error("cannot set up TCP: {0}")]
    Tcp(#[from] noise::Error),
    /// The DNS resolver could not be set up.
    #[error("cannot set up DNS: {0}")]
    Dns(#[from] std::io::Error),
    /// A behaviour could not be built.
    #[error("cannot build network behaviour: {0}")]
    Behaviour(String),
}

/// Builds the node's Swarm.
pub(crate) fn build_swarm(
    keypair: Keypair,
    config: &NodeConfig,
    limiter: Arc<UploadLimiter>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, BuildError> {
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_dns()?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| behaviour(key, config, limiter).map_err(Into::into))
        .map_err(|e| BuildError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Gossipsub's peer-score parameters: its defaults, except that peers on this host's loopback are exempt from the
/// IP colocation penalty. That penalty (a Sybil defence: many peers behind one address) grows with the square of
/// the peers over ten on one IP, so with it a testnet of a few dozen nodes on one machine graylists every peer
/// and announcements crawl through manifest polls instead of the topic.
fn score_params() -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    params
        .ip_colocation_factor_whitelist
        .extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    params
}

fn behaviour(key: &Keypair, config: &NodeConfig, limiter: Arc<UploadLimiter>) -> Result<Behaviour, String> {
    let peer_id = key.public().to_peer_id();
    let kad = kad::Behaviour::with_config(
        peer_id,
        kad::store::MemoryStore::new(peer_id),
        kad::Config::new(KAD_PROTOCOL),
    );

    let gossipsub_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        // The node checks every control message before gossipsub forwards it.
        .validate_messages()
        .max_transmit_size(MAX_CONTROL_SIZE)
        // Content-addressed ids: the same announcement arriving on two paths is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(streamrp2p_protocols::segment::block_cid(&m.data).to_bytes())
        })
        .build()
        .map_err(|e| e.to_string())?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossipsub_config)?;
    // Peer scoring on: a peer whose messages fail validation loses score, and below the thresholds gossipsub stops
    // taking its gossip and then its messages. Each stream's topic gets its weights when the node joins it.
    gossipsub.with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())?;

    let chunk = request_response::Behaviour::with_codec(
        ChunkCodec::limited(limiter.clone()),
        [(CHUNK_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(MAX_CHUNK_STREAMS),
    );

    let mesh = request_response::Behaviour::with_codec(
        TreeMeshCodec::limited(limiter),
        [(TREEMESH_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(MAX_CHUNK_STREAMS),
    );

    Ok(Behaviour {
        blocked: Default::default(),
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(MAX_ESTABLISHED))
                .with_max_established_incoming(Some(MAX_ESTABLISHED_INBOUND))
                .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
                .with_max_established_per_peer(Some(MAX_PER_PEER)),
        ),
        addresses: address_limits::Behaviour::new(limits::CONNECTIONS_PER_ADDRESS),
        identify: identify::Behaviour::new(identify::Config::new(PROTOCOL_VERSION.into(), key.public())),
        ping: ping::Behaviour::default(),
        kad,
        gossipsub,
        chunk,
        mesh,
    })
}

/// The chunk protocol for a client built on the library (a tool, a test, a peer that speaks only the wire format):
/// the node's codec without its upload limiter, libp2p's request-response defaults otherwise.
pub fn chunk_client() -> request_response::Behaviour<ChunkCodec> {
    request_response::Behaviour::with_codec(
        ChunkCodec::default(),
        [(CHUNK_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default(),
    )
}

/// The tree-mesh protocol for a client built on the library (see [`chunk_client`]).
pub fn treemesh_client() -> request_response::Behaviour<TreeMeshCodec> {
    request_response::Behaviour::with_codec(
        TreeMeshCodec::default(),
        [(TREEMESH_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;

    /// Peers on one address past gossipsub's colocation threshold (ten): the default scoring would put each at
    /// -5 × (20 − 10)² = −500, below the publish threshold, so a node would stop sending them its announcements.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_peers_on_loopback_keep_a_good_gossipsub_score() {
        const SPOKES: usize = 20;
        let config = NodeConfig::loopback();
        let limiter = Arc::new(UploadLimiter::new(None));
        let topic = gossipsub::IdentTopic::new("crowd");
        let mut hub = build_swarm(
            Keypair::generate_ed25519(),
            &config,
            limiter.clone(),
            &mut Default::default(),
        )
        .unwrap();
        hub.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        hub.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let hub_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = hub.select_next_some().await {
                break address;
            }
        };
        let mut spokes = Vec::new();
        for _ in 0..SPOKES {
            let mut spoke = build_swarm(
                Keypair::generate_ed25519(),
                &config,
                limiter.clone(),
                &mut Default::default(),
            )
            .unwrap();
            spoke.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
            spoke.dial(hub_addr.clone()).unwrap();
            let peer = *spoke.local_peer_id();
            let task = tokio::spawn(async move {
                loop {
                    spoke.select_next_some().await;
                }
            });
            spokes.push((peer, task));
        }
        let subscribed = |hub: &Swarm<Behaviour>| {
            hub.behaviour()
                .gossipsub
                .all_peers()
                .filter(|(_, topics)| topics.contains(&&topic.hash()))
                .count()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while subscribed(&hub) < SPOKES {
            tokio::select! {
                _ = hub.select_next_some() => {}
                _ = tokio::time::sleep_until(deadline) => panic!("only {} spokes subscribed", subscribed(&hub)),
            }
        }
        for (peer, task) in &spokes {
            let score = hub.behaviour().gossipsub.peer_score(peer).expect("scoring is on");
            assert!(score >= 0.0, "a loopback peer scores {score}");
            task.abort();
        }
    }
}
