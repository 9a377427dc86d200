//! Swarm events: listen addresses, connections, identify, Kademlia providers, gossipsub control messages.

use super::{Outbound, Service, unix_ms};
use std::time::Instant;

use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, gossipsub, identify};
use streamrp2p_protocols::chunk::ChunkRequest;
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::SignedManifestEntry;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};

use streamrp2p_protocols::treemesh::Input;

use crate::metrics::{EntryVia, Failure};
use crate::network::{BehaviourEvent, KAD_PROTOCOL};
use streamrp2p_protocols::score::Offence;

impl Service {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.shared.metrics.record(&event);
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
            SwarmEvent::ConnectionEstablished { .. } => {
                self.shared
                    .metrics
                    .peers
                    .set(self.swarm.connected_peers().count() as i64);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.shared
                    .metrics
                    .peers
                    .set(self.swarm.connected_peers().count() as i64);
                if num_established == 0 {
                    self.peers.disconnected(&peer_id);
                    self.peer_gone(peer_id);
                }
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
                match result {
                    QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                        if let Some(&stream) = self.provider_queries.get(&id) {
                            self.on_providers(stream, providers);
                        }
                    }
                    QueryResult::GetClosestPeers(result) => {
                        if let Some(peer) = self.route_queries.remove(&id) {
                            let peers = match result {
                                Ok(ok) => ok.peers,
                                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                            };
                            let addrs = peers
                                .into_iter()
                                .find(|p| p.peer_id == peer)
                                .map(|p| p.addrs)
                                .unwrap_or_default();
                            self.routed(peer, addrs);
                        }
                    }
                    _ => {}
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
            SwarmEvent::Behaviour(BehaviourEvent::Mesh(event)) => self.on_mesh_event(event),
            _ => {}
        }
    }

    pub(super) fn on_providers(&mut self, stream: StreamId, providers: impl IntoIterator<Item = PeerId>) {
        let local = *self.swarm.local_peer_id();
        let mut found = Vec::new();
        for peer in providers {
            if peer == local || self.peers.is_banned(&peer) {
                continue;
            }
            // Dial now: the provider's addresses are known only while the query runs.
            if !self.swarm.is_connected(&peer) {
                let _ = self.swarm.dial(peer);
            }
            let Some(mesh) = self.streams.get_mut(&stream) else {
                return;
            };
            // A provider found again (each DHT answer names it) is news to no one: it is asked nothing twice.
            if !mesh.add_candidate(peer) {
                continue;
            }
            if mesh.machine.is_none() {
                // Not joined yet: the manifest tells the newest segments and the stream's info.
                self.request_manifest(stream, peer);
            }
            found.push((peer, true));
        }
        if !found.is_empty() {
            self.feed(stream, Input::Candidates(found));
        }
    }

    pub(super) fn request_manifest(&mut self, stream: StreamId, peer: PeerId) {
        let Some(mesh) = self.streams.get(&stream) else {
            return;
        };
        // Entries from the first segment played on; before joining, the newest (the responder drops the oldest
        // when its budget is full).
        let since_seq = mesh.player.first_seq().unwrap_or(0);
        let id = self
            .swarm
            .behaviour_mut()
            .chunk
            .send_request(&peer, ChunkRequest::Manifest { stream, since_seq }.into());
        self.outbound.insert(id, (peer, Outbound::Manifest { stream }));
    }

    pub(super) fn on_control(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let acceptance = match self.check_control(&message) {
            Ok(acceptance) => acceptance,
            Err((offence, error)) => {
                self.shared.metrics.failed(Failure::Message);
                self.penalize(source, offence, &error);
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
        message: &gossipsub::Message,
    ) -> Result<gossipsub::MessageAcceptance, (Offence, String)> {
        let control = ControlMessage::decode(&message.data).map_err(|e| (e.offence(), e.to_string()))?;
        let stream = control.stream();
        if message.topic != gossipsub::IdentTopic::new(stream.topic()).hash() {
            return Err((
                Offence::Lie,
                format!("control message for stream {stream} on another stream's topic"),
            ));
        }
        let now = Instant::now();
        if !self.streams.contains_key(&stream) || self.broadcasts.contains_key(&stream) {
            return Ok(gossipsub::MessageAcceptance::Accept);
        }
        match control {
            ControlMessage::Announce { info, entry } => {
                if self.streams.get(&stream).is_some_and(|m| m.info.is_none()) {
                    self.set_info(stream, info);
                }
                self.add_entries(stream, vec![entry], now, EntryVia::Topic);
            }
            // HAVEs of the first-generation scheduler: the tree-mesh tells its neighbours directly.
            ControlMessage::Have { .. } => {}
        }
        Ok(gossipsub::MessageAcceptance::Accept)
    }

    pub(super) fn set_info(&mut self, stream: StreamId, info: SignedStreamInfo) {
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            s.info = Some(info.clone());
        }
        if let Some(mesh) = self.streams.get_mut(&stream) {
            mesh.info = Some(info);
        }
    }

    /// Takes verified entries for a watched stream: the machine hears of each new segment (or joins, with the
    /// newest), and blocks that waited for an entry are taken.
    pub(super) fn add_entries(
        &mut self,
        stream: StreamId,
        entries: Vec<SignedManifestEntry>,
        now: Instant,
        via: EntryVia,
    ) {
        let mut added = Vec::new();
        for entry in entries {
            let Some(mesh) = self.streams.get_mut(&stream) else {
                return;
            };
            let signed_ms = entry.entry().timestamp_ms;
            if let Some(segment) = mesh.add_entry(entry, now) {
                tracing::trace!(%stream, seq = segment.seq, age_ms = unix_ms().saturating_sub(signed_ms), "entry");
                added.push(segment);
            }
        }
        if added.is_empty() {
            return;
        }
        let count = added.len() as u64;
        self.shared.metrics.learnt_entries(via, count);
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            match via {
                EntryVia::Topic => s.counters.entries_from_topic += count,
                EntryVia::Manifest => s.counters.entries_from_manifests += count,
            }
        }
        if self.streams.get(&stream).is_some_and(|m| m.machine.is_none()) {
            self.try_join(stream);
        } else {
            for segment in &added {
                self.feed(stream, Input::Announced(*segment));
            }
        }
        for segment in added {
            self.replay_early(stream, segment.seq);
        }
    }
}
