//! Swarm events: listen addresses, connections, identify, Kademlia providers, gossipsub control messages.

use super::{Outbound, Service};
use std::time::Instant;

use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, gossipsub, identify};
use streamrp2p_protocols::chunk::ChunkRequest;
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::SignedManifestEntry;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};

use crate::metrics::Failure;
use crate::network::{BehaviourEvent, KAD_PROTOCOL};
use crate::playlist::PlayableRange;

impl Service {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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

    pub(super) fn on_providers(&mut self, stream: StreamId, providers: impl IntoIterator<Item = PeerId>) {
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

    pub(super) fn request_manifest(&mut self, stream: StreamId, peer: PeerId) {
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

    pub(super) fn on_control(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
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

    pub(super) fn check_control(
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

    pub(super) fn set_info(&mut self, stream: StreamId, info: SignedStreamInfo) {
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            s.info = Some(info.clone());
        }
        if let Some(fetch) = self.watching.get_mut(&stream) {
            fetch.info = Some(info);
        }
    }

    /// Takes verified entries for a watched stream: new ones become pending, filled from local blocks first.
    pub(super) fn add_entries(&mut self, stream: StreamId, entries: Vec<SignedManifestEntry>, now: Instant) {
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
}
