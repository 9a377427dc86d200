//! The node's event loop: one task owns the Swarm and all protocol state, and turns swarm events, commands from
//! [`crate::NodeHandle`], origin downloads and timer ticks into actions. Local work (commands) is served before
//! remote work; every queue into the loop is bounded.
//!
//! The loop's handlers live one concern a file: [`commands`] (broadcast, publish, watch), [`events`] (swarm,
//! Kademlia and gossipsub events), [`chunk`] (the chunk protocol), [`timers`] (block scheduling, timers and the
//! origin fallback).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::QueryId;
use libp2p::request_response::{InboundRequestId, OutboundRequestId};
use libp2p::{PeerId, Swarm};
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};
use tokio::sync::{broadcast, mpsc, oneshot};

mod chunk;
mod commands;
mod events;
mod timers;

use crate::config::NodeConfig;
use crate::fetch::{BlockAsk, Completed, StreamFetch};
use crate::metrics::Failure;
use crate::network::Behaviour;
use crate::peer_manager::PeerManager;
use crate::{NodeError, NodeEvent, Shared};

/// How often the loop looks at timers (origin fallback, bans, playlist gaps, manifest polls).
const TICK: Duration = Duration::from_millis(250);
/// A viewer that heard no new entry for this long asks peers for the manifest directly.
const MANIFEST_POLL_AFTER: Duration = Duration::from_secs(3);
/// How often a viewer looks for more of a stream's providers.
const PROVIDER_REFRESH: Duration = Duration::from_secs(20);
/// Most peers asked for a manifest in one poll.
const MANIFEST_POLL_PEERS: usize = 3;
/// Room for origin downloads finishing at once.
const ORIGIN_QUEUE: usize = 64;

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
    Block { stream: StreamId, ask: BlockAsk },
    Manifest { stream: StreamId },
}

/// A finished origin download: the segment's blocks when they match its entry.
struct OriginResult {
    stream: StreamId,
    seq: u64,
    blocks: Result<Vec<(Cid, Bytes)>, String>,
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
    watching: HashMap<StreamId, StreamFetch>,
    outbound: HashMap<OutboundRequestId, (PeerId, Outbound)>,
    uploads: HashMap<InboundRequestId, (StreamId, u64)>,
    load: HashMap<PeerId, usize>,
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
        let peers = PeerManager::new(config.ban_duration);
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
            watching: HashMap::new(),
            outbound: HashMap::new(),
            uploads: HashMap::new(),
            load: HashMap::new(),
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
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(result) = self.origin_rx.recv() => self.on_origin_result(result),
                _ = tick.tick() => self.on_tick(Instant::now()),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
            self.schedule();
        }
        tracing::info!("node stopped");
    }

    /// Stores a whole segment, tells peers, and becomes a provider of the stream.
    fn complete(&mut self, stream: StreamId, done: Completed, now: Instant) {
        let (seq, size) = (done.entry.entry().seq, done.data.len() as u64);
        self.shared
            .store
            .write()
            .expect("store lock")
            .insert(done.entry, done.data, now);
        self.count_segment(stream);
        self.gossip(
            stream,
            &ControlMessage::Have {
                stream,
                seqs: vec![seq],
            },
        );
        if let Some(fetch) = self.watching.get_mut(&stream)
            && !fetch.providing
        {
            fetch.providing = true;
            self.provide(stream);
        }
        let _ = self.events.send(NodeEvent::SegmentReady { stream, seq, size });
        tracing::debug!(%stream, seq, size, "segment complete");
    }

    /// Bans a peer that sent bad data: disconnects it, refuses it, and forgets what it claimed.
    fn penalize(&mut self, peer: PeerId, kind: Failure, reason: &dyn std::fmt::Display) {
        self.shared.metrics.failed(kind);
        if !self.peers.ban(peer, Instant::now()) {
            return;
        }
        tracing::warn!(%peer, %reason, ban_s = self.config.ban_duration.as_secs(), "banned peer for sending bad data");
        self.shared.metrics.bans.inc();
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        for fetch in self.watching.values_mut() {
            fetch.forget_peer(&peer);
        }
    }

    fn release(&mut self, peer: PeerId) {
        if let Some(n) = self.load.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.load.remove(&peer);
            }
        }
    }
}
