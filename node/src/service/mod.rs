//! The node's event loop: one task owns the Swarm and all protocol state, and turns swarm events, commands from
//! [`crate::NodeHandle`], origin downloads and timer ticks into actions. Local work (commands) is served before
//! remote work; every queue into the loop is bounded.
//!
//! Each stream's hybrid tree-mesh is a sans-io machine (`streamrp2p_protocols::treemesh`, the code the simulator
//! runs): this loop hands it what happens — announcements, control messages, blocks, the ends of uploads, origin
//! answers, peers leaving, policy changes — with the time, wakes it when it asks, and carries out its outputs over
//! the Swarm and HTTP. No topology decision is made here.
//!
//! The loop's handlers live one concern a file: [`commands`] (broadcast, publish, watch, policy), [`events`] (swarm,
//! Kademlia and gossipsub events), [`chunk`] (the chunk protocol: blocks by CID and manifests), [`mesh`] (driving
//! the tree-mesh machines), [`origin`] (the HTTP origin fallback), [`timers`] (manifest polls, provider refresh,
//! bans, status).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::QueryId;
use libp2p::request_response::{InboundRequestId, OutboundRequestId};
use libp2p::{PeerId, Swarm};
use streamrp2p_protocols::manifest::SignedManifestEntry;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};
use tokio::sync::{broadcast, mpsc, oneshot};

mod chunk;
mod commands;
mod events;
mod mesh;
mod origin;
mod timers;

use crate::config::NodeConfig;
use crate::mesh::StreamMesh;
use crate::metrics::Failure;
use crate::network::Behaviour;
use crate::peer_manager::{PeerManager, Request};
use crate::policy::Policy;
use crate::{NodeError, NodeEvent, Shared};
use streamrp2p_protocols::score::{Offence, Verdict};

/// How often the loop looks at its own timers (bans, playlist gaps, manifest polls, status).
const TICK: Duration = Duration::from_millis(250);
/// A viewer that heard no new entry for this long asks peers for the manifest directly.
const MANIFEST_POLL_AFTER: Duration = Duration::from_secs(3);
/// How often a viewer looks for more of a stream's providers.
const PROVIDER_REFRESH: Duration = Duration::from_secs(20);
/// Most peers asked for a manifest in one poll.
const MANIFEST_POLL_PEERS: usize = 3;
/// Room for origin downloads finishing at once.
const ORIGIN_QUEUE: usize = 64;
/// Control frames kept per peer while its address is being looked up in the DHT.
const MAX_ROUTING_FRAMES: usize = 32;
/// Peers whose address is being looked up at once.
const MAX_ROUTING_PEERS: usize = 64;

/// A request from a [`crate::NodeHandle`].
pub(crate) enum Command {
    Broadcast {
        name: String,
        origin: Option<String>,
        reply: oneshot::Sender<Result<StreamId, NodeError>>,
    },
    Publish {
        stream: StreamId,
        data: Bytes,
        duration: Duration,
        discontinuity: bool,
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    Watch {
        stream: StreamId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// A stream this node publishes.
struct Broadcast {
    info: SignedStreamInfo,
    next_seq: u64,
    discontinuities: u64,
}

/// What an outbound chunk request was for.
enum Outbound {
    Manifest { stream: StreamId },
}

/// A finished origin download of one block, unverified.
struct OriginResult {
    stream: StreamId,
    segment: streamrp2p_protocols::treemesh::SegmentInfo,
    index: u16,
    data: Result<Bytes, String>,
}

/// What an outbound tree-mesh frame carries, for when it is acknowledged or fails.
struct MeshOut {
    stream: StreamId,
    /// A block upload: its kind and payload bytes.
    upload: Option<(streamrp2p_protocols::treemesh::UploadKind, u64)>,
    /// A control frame, kept to send again once the peer's address is found.
    control: Option<streamrp2p_protocols::treemesh::wire::Frame>,
}

pub(crate) struct Service {
    swarm: Swarm<Behaviour>,
    keypair: Keypair,
    config: NodeConfig,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NodeEvent>,
    origin_tx: mpsc::Sender<OriginResult>,
    origin_rx: mpsc::Receiver<OriginResult>,
    http: reqwest::Client,
    /// Whether every listen address is loopback: then those are the addresses others reach us at.
    loopback_only: bool,
    broadcasts: HashMap<StreamId, Broadcast>,
    /// Every stream this node broadcasts or watches, with its tree-mesh machine.
    streams: HashMap<StreamId, StreamMesh>,
    outbound: HashMap<OutboundRequestId, (PeerId, Outbound)>,
    uploads: HashMap<InboundRequestId, (StreamId, u64)>,
    mesh_out: HashMap<OutboundRequestId, MeshOut>,
    /// Inputs that carrying out an output produced (an upload that could not start), handed to the same machine
    /// next.
    followups: Vec<streamrp2p_protocols::treemesh::Input<PeerId>>,
    /// Origin fetches in flight, to call off when a peer brings the block first.
    origin_tasks: HashMap<(StreamId, u64, u16), tokio::task::AbortHandle>,
    /// Control frames for peers whose address is being looked up, by the lookup.
    routing: HashMap<PeerId, Vec<(StreamId, streamrp2p_protocols::treemesh::wire::Frame)>>,
    route_queries: HashMap<QueryId, PeerId>,
    /// The node's clock for the machines: seconds since this instant.
    epoch: Instant,
    policy: tokio::sync::watch::Receiver<Policy>,
    provider_queries: HashMap<QueryId, StreamId>,
    last_provider_query: HashMap<StreamId, Instant>,
    last_manifest_poll: HashMap<StreamId, Instant>,
    peers: PeerManager,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        keypair: Keypair,
        config: NodeConfig,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<NodeEvent>,
        http: reqwest::Client,
        loopback_only: bool,
    ) -> Self {
        let (origin_tx, origin_rx) = mpsc::channel(ORIGIN_QUEUE);
        let epoch = Instant::now();
        let peers = PeerManager::new(config.ban_duration.as_secs_f64(), epoch, unix_ms());
        let policy = shared.policy.subscribe();
        Self {
            swarm,
            keypair,
            config,
            shared,
            commands,
            events,
            origin_tx,
            origin_rx,
            http,
            loopback_only,
            broadcasts: HashMap::new(),
            streams: HashMap::new(),
            outbound: HashMap::new(),
            uploads: HashMap::new(),
            mesh_out: HashMap::new(),
            followups: Vec::new(),
            origin_tasks: HashMap::new(),
            routing: HashMap::new(),
            route_queries: HashMap::new(),
            epoch,
            policy,
            provider_queries: HashMap::new(),
            last_provider_query: HashMap::new(),
            last_manifest_poll: HashMap::new(),
            peers,
        }
    }

    /// Runs until every [`crate::NodeHandle`] is dropped or shut down.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Ok(()) = self.policy.changed() => self.on_policy(),
                Some(result) = self.origin_rx.recv() => self.on_origin_result(result),
                () = sleep_until(wake) => self.on_wake(),
                _ = tick.tick() => self.on_tick(Instant::now()),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        tracing::info!("node stopped");
    }

    /// Stores a whole, verified segment and becomes a provider of the stream.
    fn complete(&mut self, stream: StreamId, entry: SignedManifestEntry, data: Bytes, now: Instant) {
        let (seq, size) = (entry.entry().seq, data.len() as u64);
        let made_ms = entry.entry().timestamp_ms;
        self.shared.store.write().expect("store lock").insert(entry, data, now);
        self.count_segment(stream);
        let now_s = self.clock(now);
        if let Some(mesh) = self.streams.get_mut(&stream) {
            // The broadcaster's signed timestamp, on this node's clock (both clocks are the same machine's on a
            // testnet; across machines the difference includes their clock offset, as any lag measure does).
            let age_s = unix_ms().saturating_sub(made_ms) as f64 / 1000.0;
            mesh.player.completed(seq, now_s, now_s - age_s);
        }
        if let Some(mesh) = self.streams.get_mut(&stream)
            && !mesh.providing
        {
            mesh.providing = true;
            self.provide(stream);
        }
        let _ = self.events.send(NodeEvent::SegmentReady { stream, seq, size });
        tracing::debug!(%stream, seq, size, "segment complete");
    }

    /// Penalises a peer whose answer failed to decode (too large, malformed, forged), when that is what `error`
    /// was: a stream that merely broke is nobody's fault.
    fn penalize_wire(&mut self, peer: PeerId, error: &std::io::Error) {
        if let Some(wire) = crate::network::wire_error(error) {
            self.penalize_invalid(peer, wire);
        }
    }

    /// Penalises a peer that sent bytes that broke a limit or did not decode (a request or an answer).
    fn penalize_invalid(&mut self, peer: PeerId, wire: &streamrp2p_protocols::WireError) {
        let kind = match wire {
            streamrp2p_protocols::WireError::TooLarge { .. } => Failure::Block,
            _ => Failure::Message,
        };
        self.shared.metrics.failed(kind);
        self.penalize(peer, wire.offence(), wire);
    }

    /// Scores a peer's offence through the peer manager (and gossipsub's score with it); a ban disconnects it,
    /// refuses it through the block list and makes every machine forget it.
    fn penalize(&mut self, peer: PeerId, offence: Offence, reason: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.shared.metrics.penalised(offence);
        let verdict = self.peers.penalise(peer, offence, now);
        let score = self.peers.gossipsub_score(&peer, now);
        self.swarm.behaviour_mut().gossipsub.set_application_score(&peer, score);
        match verdict {
            Verdict::Penalised => {
                tracing::debug!(%peer, offence = offence.name(), %reason, "penalised peer");
            }
            Verdict::AlreadyBanned => {}
            Verdict::Banned => {
                tracing::warn!(
                    %peer, offence = offence.name(), %reason, ban_s = self.config.ban_duration.as_secs(),
                    "banned peer"
                );
                self.shared.metrics.bans.inc();
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                self.peer_gone(peer);
            }
        }
    }

    /// Takes `request` from `peer`'s quota; over it, the peer is penalised a little and the caller answers "busy".
    fn admit(&mut self, peer: PeerId, request: Request) -> bool {
        if self.peers.admit(peer, request, Instant::now()).is_ok() {
            return true;
        }
        self.penalize(
            peer,
            Offence::QuotaOverrun,
            &format_args!("over its quota of {request:?}"),
        );
        false
    }
}

/// Now, in milliseconds since the Unix epoch (the time manifest entries are signed with).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
