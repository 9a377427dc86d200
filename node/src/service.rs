//! The node's event loop: one task owns the Swarm and all protocol state, and turns swarm events, commands from
//! [`crate::NodeHandle`], origin downloads and timer ticks into actions. Local work (commands) is served before
//! remote work; every queue into the loop is bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::request_response::{self, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, gossipsub, identify};
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse, MANIFEST_RESPONSE_BUDGET, ManifestResponse};
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::{ManifestEntry, SignedManifestEntry};
use streamrp2p_protocols::segment;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};
use streamrp2p_protocols::{Cid, WireError};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::NodeConfig;
use crate::fetch::{BlockAsk, Completed, StreamFetch};
use crate::metrics::{Failure, Flow};
use crate::network::{Behaviour, BehaviourEvent, KAD_PROTOCOL, wire_error};
use crate::peer_manager::PeerManager;
use crate::playlist::PlayableRange;
use crate::store::Role;
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

    // ---- commands -------------------------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Broadcast { name, origin, reply } => {
                let _ = reply.send(self.start_broadcast(&name, origin));
            }
            Command::Publish {
                stream,
                data,
                duration,
                discontinuity,
                reply,
            } => {
                let _ = reply.send(self.publish(stream, data, duration, discontinuity));
            }
            Command::Watch { stream, reply } => {
                self.watch(stream);
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn start_broadcast(&mut self, name: &str, origin: Option<String>) -> Result<StreamId, NodeError> {
        let id = StreamId::derive(&self.keypair.public(), name);
        if self.broadcasts.contains_key(&id) {
            return Ok(id);
        }
        let origin = origin.unwrap_or_else(|| {
            self.shared
                .http_addr
                .map(|addr| format!("http://{addr}/streams/{id}"))
                .unwrap_or_default()
        });
        let info = SignedStreamInfo::sign(&self.keypair, name, origin.trim_end_matches('/'))?;
        self.shared
            .store
            .write()
            .expect("store lock")
            .add_stream(id, Role::Broadcaster, Some(info.clone()));
        self.subscribe(id);
        self.provide(id);
        self.broadcasts.insert(
            id,
            Broadcast {
                info,
                next_seq: 0,
                discontinuities: 0,
            },
        );
        tracing::info!(stream = %id, name, origin, "broadcasting");
        Ok(id)
    }

    fn publish(
        &mut self,
        stream: StreamId,
        data: Bytes,
        duration: Duration,
        discontinuity: bool,
    ) -> Result<u64, NodeError> {
        let broadcast = self
            .broadcasts
            .get_mut(&stream)
            .ok_or(NodeError::NotBroadcasting(stream))?;
        let blocks = segment::split(data.clone())?;
        let seq = broadcast.next_seq;
        // The first segment of a stream starts its timeline; only later breaks are discontinuities.
        let discontinuity = discontinuity && seq > 0;
        broadcast.discontinuities += u64::from(discontinuity);
        let mut entry = ManifestEntry::new(stream, seq, duration, &blocks, unix_ms());
        entry.discontinuity = discontinuity;
        entry.discontinuity_sequence = broadcast.discontinuities;
        let signed = SignedManifestEntry::sign(&self.keypair, entry)?;
        broadcast.next_seq += 1;
        let announce = ControlMessage::Announce {
            info: broadcast.info.clone(),
            entry: signed.clone(),
        };

        self.shared
            .store
            .write()
            .expect("store lock")
            .insert(signed, data.clone(), Instant::now());
        self.count_segment(stream);
        self.gossip(stream, &announce);
        let _ = self.events.send(NodeEvent::SegmentReady {
            stream,
            seq,
            size: data.len() as u64,
        });
        tracing::debug!(%stream, seq, size = data.len(), "published segment");
        Ok(seq)
    }

    fn watch(&mut self, stream: StreamId) {
        if self.watching.contains_key(&stream) || self.broadcasts.contains_key(&stream) {
            return;
        }
        self.shared
            .store
            .write()
            .expect("store lock")
            .add_stream(stream, Role::Viewer, None);
        self.watching.insert(stream, StreamFetch::new());
        self.subscribe(stream);
        self.find_providers(stream, Instant::now());
        tracing::info!(%stream, "watching");
    }

    fn subscribe(&mut self, stream: StreamId) {
        let topic = gossipsub::IdentTopic::new(stream.topic());
        if let Err(error) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!(%stream, %error, "cannot subscribe to the stream's control topic");
        }
    }

    fn provide(&mut self, stream: StreamId) {
        let key = kad::RecordKey::new(stream.as_bytes());
        if let Err(error) = self.swarm.behaviour_mut().kad.start_providing(key) {
            tracing::warn!(%stream, %error, "cannot announce this node as a provider of the stream");
        }
    }

    fn find_providers(&mut self, stream: StreamId, now: Instant) {
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(stream.as_bytes()));
        self.provider_queries.insert(query, stream);
        self.last_provider_query.insert(stream, now);
    }

    fn gossip(&mut self, stream: StreamId, message: &ControlMessage) {
        let topic = gossipsub::IdentTopic::new(stream.topic());
        match self.swarm.behaviour_mut().gossipsub.publish(topic, message.encode()) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(error) => tracing::debug!(%stream, %error, "control message not published"),
        }
    }

    fn count_segment(&mut self, stream: StreamId) {
        self.shared.metrics.segments.inc();
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            s.counters.segments += 1;
        }
    }

    // ---- swarm events ---------------------------------------------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.loopback_only {
                    // On loopback the listen address is the one peers reach us at; recording it as external puts
                    // it into our provider records.
                    self.swarm.add_external_address(address.clone());
                }
                let full = address.with_p2p(*self.swarm.local_peer_id()).expect("our own peer id");
                self.shared.listen_addrs.write().expect("listen lock").push(full);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with_p2p(*self.swarm.local_peer_id()).expect("our own peer id");
                self.shared
                    .listen_addrs
                    .write()
                    .expect("listen lock")
                    .retain(|a| *a != full);
            }
            SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
                self.shared
                    .metrics
                    .peers
                    .set(self.swarm.connected_peers().count() as i64);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for address in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => {
                if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) = result
                    && let Some(&stream) = self.provider_queries.get(&id)
                {
                    self.on_providers(stream, providers);
                }
                if step.last {
                    self.provider_queries.remove(&id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_control(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Chunk(event)) => self.on_chunk_event(event),
            _ => {}
        }
    }

    fn on_providers(&mut self, stream: StreamId, providers: impl IntoIterator<Item = PeerId>) {
        let local = *self.swarm.local_peer_id();
        for peer in providers {
            if peer == local || self.peers.is_banned(&peer) {
                continue;
            }
            // Dial now: the provider's addresses are known only while the query runs.
            if !self.swarm.is_connected(&peer) {
                let _ = self.swarm.dial(peer);
            }
            self.request_manifest(stream, peer);
        }
    }

    fn request_manifest(&mut self, stream: StreamId, peer: PeerId) {
        let Some(fetch) = self.watching.get_mut(&stream) else {
            return;
        };
        if Some(peer) != fetch.info.as_ref().map(|i| i.info().broadcaster.to_peer_id()) {
            fetch.on_asked(peer);
        }
        let since_seq = fetch.start().unwrap_or(0);
        let id = self
            .swarm
            .behaviour_mut()
            .chunk
            .send_request(&peer, ChunkRequest::Manifest { stream, since_seq });
        self.outbound.insert(id, (peer, Outbound::Manifest { stream }));
    }

    fn on_control(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let acceptance = match self.check_control(source, &message) {
            Ok(acceptance) => acceptance,
            Err(error) => {
                self.penalize(source, Failure::Message, &error);
                gossipsub::MessageAcceptance::Reject
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    fn check_control(
        &mut self,
        source: PeerId,
        message: &gossipsub::Message,
    ) -> Result<gossipsub::MessageAcceptance, String> {
        let control = ControlMessage::decode(&message.data).map_err(|e| e.to_string())?;
        let stream = control.stream();
        if message.topic != gossipsub::IdentTopic::new(stream.topic()).hash() {
            return Err(format!("control message for stream {stream} on another stream's topic"));
        }
        let now = Instant::now();
        let Some(fetch) = self.watching.get_mut(&stream) else {
            return Ok(gossipsub::MessageAcceptance::Accept);
        };
        match control {
            ControlMessage::Announce { info, entry } => {
                let seq = entry.entry().seq;
                let broadcaster = info.info().broadcaster.to_peer_id();
                if fetch.info.is_none() {
                    self.set_info(stream, info);
                }
                self.add_entries(stream, vec![entry], now);
                if let Some(fetch) = self.watching.get_mut(&stream) {
                    fetch.on_have(broadcaster, [seq]);
                }
            }
            ControlMessage::Have { seqs, .. } => {
                // Signed by its author (gossipsub strict mode), so the author holds them.
                let author = message.source.unwrap_or(source);
                if author != *self.swarm.local_peer_id() {
                    fetch.on_have(author, seqs);
                }
            }
        }
        Ok(gossipsub::MessageAcceptance::Accept)
    }

    fn set_info(&mut self, stream: StreamId, info: SignedStreamInfo) {
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            s.info = Some(info.clone());
        }
        if let Some(fetch) = self.watching.get_mut(&stream) {
            fetch.info = Some(info);
        }
    }

    /// Takes verified entries for a watched stream: new ones become pending, filled from local blocks first.
    fn add_entries(&mut self, stream: StreamId, entries: Vec<SignedManifestEntry>, now: Instant) {
        let Some(fetch) = self.watching.get_mut(&stream) else {
            return;
        };
        let store = self.shared.store.read().expect("store lock");
        let added = fetch.on_entries(
            entries,
            self.config.join_backlog,
            self.config.broadcaster_holdoff,
            |seq| store.has_segment(&stream, seq),
            now,
        );
        let mut completed = Vec::new();
        for seq in added {
            if let Some(done) = fetch.fill_local(seq, |cid| store.block(cid).map(|(b, _)| b.clone())) {
                completed.push(done);
            }
        }
        let start = fetch.start();
        drop(store);
        if let Some(start) = start {
            let mut store = self.shared.store.write().expect("store lock");
            if let Some(s) = store.stream_mut(&stream)
                && !s.playable.is_started()
            {
                s.playable = PlayableRange::starting_at(start, self.config.skip_gap_after);
            }
        }
        for done in completed {
            self.complete(stream, done, now);
        }
    }

    fn on_chunk_event(&mut self, event: request_response::Event<ChunkRequest, ChunkResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    self.on_request(request_id, request, channel);
                }
                request_response::Message::Response { request_id, response } => {
                    self.on_response(peer, request_id, response);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let OutboundFailure::Io(io) = &error
                    && let Some(wire) = wire_error(io)
                {
                    let reason = wire.to_string();
                    self.penalize(peer, failure_kind(wire), &reason);
                }
                tracing::debug!(%peer, %error, "chunk request failed");
                if let Some((peer, outbound)) = self.outbound.remove(&request_id) {
                    self.release(peer);
                    if let Outbound::Block { stream, ask } = outbound
                        && let Some(fetch) = self.watching.get_mut(&stream)
                    {
                        fetch.on_ask_failed(&ask, false);
                    }
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.uploads.remove(&request_id);
                if let request_response::InboundFailure::Io(io) = &error
                    && let Some(wire) = wire_error(io)
                {
                    let reason = wire.to_string();
                    self.penalize(peer, failure_kind(wire), &reason);
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                if let Some((stream, bytes)) = self.uploads.remove(&request_id) {
                    self.shared.metrics.add_bytes(Flow::Uploaded, bytes);
                    if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
                        s.counters.uploaded += bytes;
                    }
                }
            }
        }
    }

    fn on_request(&mut self, id: InboundRequestId, request: ChunkRequest, channel: ResponseChannel<ChunkResponse>) {
        let store = self.shared.store.read().expect("store lock");
        let response = match request {
            ChunkRequest::Block(cid) => match store.block(&cid) {
                Some((data, stream)) => {
                    self.uploads.insert(id, (stream, data.len() as u64));
                    ChunkResponse::Block(data.clone())
                }
                None => ChunkResponse::DontHave,
            },
            ChunkRequest::Manifest { stream, since_seq } => match store.stream(&stream) {
                Some(s) if s.info.is_some() => {
                    let mut entries = Vec::new();
                    let mut budget = MANIFEST_RESPONSE_BUDGET;
                    // Newest first, so that a full budget drops the oldest entries.
                    for segment in s.segments.range(since_seq..).rev().map(|(_, seg)| seg) {
                        let len = segment.entry.encoded_len() + 8;
                        if len > budget {
                            break;
                        }
                        budget -= len;
                        entries.push(segment.entry.clone());
                    }
                    entries.reverse();
                    let have = entries.iter().map(|e| e.entry().seq).collect();
                    let info = s.info.clone().expect("checked above");
                    ChunkResponse::Manifest(ManifestResponse { info, entries, have })
                }
                _ => ChunkResponse::DontHave,
            },
        };
        drop(store);
        if self
            .swarm
            .behaviour_mut()
            .chunk
            .send_response(channel, response)
            .is_err()
        {
            self.uploads.remove(&id);
        }
    }

    fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: ChunkResponse) {
        let Some((_, outbound)) = self.outbound.remove(&id) else {
            return;
        };
        self.release(peer);
        let now = Instant::now();
        match (outbound, response) {
            (Outbound::Block { stream, ask }, ChunkResponse::Block(data)) => {
                let Some(fetch) = self.watching.get_mut(&stream) else {
                    return;
                };
                let len = data.len() as u64;
                match fetch.on_block(ask.seq, ask.index, data) {
                    Ok(done) => {
                        self.shared.metrics.add_bytes(Flow::FromPeers, len);
                        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
                            s.counters.from_peers += len;
                        }
                        if let Some(done) = done {
                            self.complete(stream, done, now);
                        }
                    }
                    Err(error) => {
                        fetch.on_ask_failed(&ask, false);
                        self.penalize(peer, Failure::Block, &error);
                    }
                }
            }
            (Outbound::Block { stream, ask }, ChunkResponse::DontHave) => {
                if let Some(fetch) = self.watching.get_mut(&stream) {
                    fetch.on_ask_failed(&ask, true);
                }
            }
            (Outbound::Manifest { stream }, ChunkResponse::Manifest(manifest)) => {
                if manifest.info.id() != stream {
                    self.penalize(peer, Failure::Message, &"answered with the manifest of another stream");
                    return;
                }
                if self.watching.get(&stream).is_some_and(|f| f.info.is_none()) {
                    self.set_info(stream, manifest.info.clone());
                }
                self.add_entries(stream, manifest.entries, now);
                if let Some(fetch) = self.watching.get_mut(&stream) {
                    fetch.on_have(peer, manifest.have);
                }
            }
            (Outbound::Manifest { .. }, ChunkResponse::DontHave) => {}
            (outbound, _) => {
                if let Outbound::Block { stream, ask } = &outbound
                    && let Some(fetch) = self.watching.get_mut(stream)
                {
                    fetch.on_ask_failed(ask, false);
                }
                self.penalize(peer, Failure::Message, &"answered with the wrong kind of response");
            }
        }
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

    // ---- scheduling, timers and the origin -------------------------------------------------------------------

    /// Sends block requests for whatever is missing and has a peer to ask.
    fn schedule(&mut self) {
        let now = Instant::now();
        let streams: Vec<StreamId> = self.watching.keys().copied().collect();
        for stream in streams {
            let Some(fetch) = self.watching.get_mut(&stream) else {
                continue;
            };
            let broadcaster = fetch.info.as_ref().map(|i| i.info().broadcaster.to_peer_id());
            let peers = &self.peers;
            let asks = fetch.next_asks(
                now,
                broadcaster,
                &mut self.load,
                self.config.max_requests_per_peer,
                |p| !peers.is_banned(p),
            );
            for ask in asks {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .chunk
                    .send_request(&ask.peer, ChunkRequest::Block(ask.cid));
                self.outbound.insert(id, (ask.peer, Outbound::Block { stream, ask }));
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        for peer in self.peers.expire(now) {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        {
            let mut store = self.shared.store.write().expect("store lock");
            let ids: Vec<StreamId> = store.streams().map(|(id, _)| *id).collect();
            for id in ids {
                if let Some(s) = store.stream_mut(&id) {
                    s.playable.advance(&s.segments, now);
                }
            }
        }
        let streams: Vec<StreamId> = self.watching.keys().copied().collect();
        for stream in streams {
            self.origin_fallback(stream, now);
            self.poll_manifests(stream, now);
            if self
                .last_provider_query
                .get(&stream)
                .is_none_or(|t| now.duration_since(*t) >= PROVIDER_REFRESH)
            {
                self.find_providers(stream, now);
            }
        }
    }

    /// Asks peers for the manifest when announcements have not been arriving (joining, or gossip not yet meshed).
    fn poll_manifests(&mut self, stream: StreamId, now: Instant) {
        let Some(fetch) = self.watching.get(&stream) else {
            return;
        };
        let quiet = fetch
            .last_entry_at
            .is_none_or(|t| now.duration_since(t) >= MANIFEST_POLL_AFTER);
        let polled = self
            .last_manifest_poll
            .get(&stream)
            .is_some_and(|t| now.duration_since(*t) < MANIFEST_POLL_AFTER);
        if !quiet || polled {
            return;
        }
        let mut peers: Vec<PeerId> = fetch.known_peers().copied().collect();
        if let Some(info) = &fetch.info {
            peers.push(info.info().broadcaster.to_peer_id());
        }
        peers.sort();
        peers.dedup();
        peers.retain(|p| !self.peers.is_banned(p));
        self.last_manifest_poll.insert(stream, now);
        if peers.is_empty() {
            if self
                .last_provider_query
                .get(&stream)
                .is_none_or(|t| now.duration_since(*t) >= MANIFEST_POLL_AFTER)
            {
                self.find_providers(stream, now);
            }
            return;
        }
        use rand::seq::SliceRandom;
        peers.shuffle(&mut rand::rng());
        for peer in peers.into_iter().take(MANIFEST_POLL_PEERS) {
            self.request_manifest(stream, peer);
        }
    }

    fn origin_fallback(&mut self, stream: StreamId, now: Instant) {
        let Some(fetch) = self.watching.get_mut(&stream) else {
            return;
        };
        let Some(origin) = fetch
            .info
            .as_ref()
            .map(|i| i.info().origin_url.clone())
            .filter(|o| !o.is_empty())
        else {
            return;
        };
        let peers = &self.peers;
        let due = fetch.origin_due(now, self.config.origin_fallback_after, |p| !peers.is_banned(p));
        for seq in due {
            let Some(entry) = fetch.pending_entry(seq).map(|e| e.entry().clone()) else {
                continue;
            };
            let url = format!("{origin}/{seq}.ts");
            let (http, tx) = (self.http.clone(), self.origin_tx.clone());
            tracing::debug!(%stream, seq, %url, "fetching segment from the origin");
            tokio::spawn(async move {
                let blocks = fetch_from_origin(&http, &url, &entry).await;
                let _ = tx.send(OriginResult { stream, seq, blocks }).await;
            });
        }
    }

    fn on_origin_result(&mut self, result: OriginResult) {
        let now = Instant::now();
        let Some(fetch) = self.watching.get_mut(&result.stream) else {
            return;
        };
        let blocks = match result.blocks {
            Ok(blocks) => Some(blocks),
            Err(error) => {
                tracing::warn!(stream = %result.stream, seq = result.seq, %error, "origin fallback failed");
                if error.starts_with("mismatch") {
                    self.shared.metrics.failed(Failure::Origin);
                }
                None
            }
        };
        if let Some((done, contributed)) = fetch.on_origin(result.seq, blocks, now) {
            self.shared.metrics.add_bytes(Flow::FromOrigin, contributed);
            if let Some(s) = self
                .shared
                .store
                .write()
                .expect("store lock")
                .stream_mut(&result.stream)
            {
                s.counters.from_origin += contributed;
            }
            self.complete(result.stream, done, now);
        }
    }
}

/// Downloads segment `entry` from the origin and checks it block by block against the entry.
async fn fetch_from_origin(
    http: &reqwest::Client,
    url: &str,
    entry: &ManifestEntry,
) -> Result<Vec<(Cid, Bytes)>, String> {
    let response = http
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    if response.content_length().is_some_and(|len| len != entry.size) {
        return Err(format!(
            "mismatch: origin has {:?} bytes, manifest says {}",
            response.content_length(),
            entry.size
        ));
    }
    let data = response.bytes().await.map_err(|e| e.to_string())?;
    let blocks = segment::split(data).map_err(|e| format!("mismatch: {e}"))?;
    if blocks.root != entry.root {
        return Err(format!(
            "mismatch: origin segment has root {}, manifest says {}",
            blocks.root, entry.root
        ));
    }
    Ok(blocks.blocks)
}

fn failure_kind(error: &WireError) -> Failure {
    match error {
        WireError::TooLarge { .. } => Failure::Block,
        _ => Failure::Message,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
