//! Commands from node handles: broadcasting, publishing, watching.

use super::{Broadcast, Command, Service, unix_ms};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::gossipsub;
use libp2p::kad::{self};
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::{ManifestEntry, SignedManifestEntry};
use streamrp2p_protocols::segment;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};

use streamrp2p_protocols::treemesh::{Input, Role, TreeMesh};

use crate::mesh::StreamMesh;
use crate::store::Role as StoreRole;
use crate::{NodeError, NodeEvent};

impl Service {
    pub(super) fn on_command(&mut self, command: Command) {
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

    pub(super) fn start_broadcast(&mut self, name: &str, origin: Option<String>) -> Result<StreamId, NodeError> {
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
            .add_stream(id, StoreRole::Broadcaster, Some(info.clone()));
        self.subscribe(id);
        self.provide(id);
        let now_s = self.clock(Instant::now());
        self.streams.insert(id, StreamMesh::new(Some(info.clone()), now_s));
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

    pub(super) fn publish(
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

        let now = Instant::now();
        self.shared
            .store
            .write()
            .expect("store lock")
            .insert(signed.clone(), data.clone(), now);
        self.count_segment(stream);
        self.gossip(stream, &announce);
        self.feed_published(stream, signed, now);
        let _ = self.events.send(NodeEvent::SegmentReady {
            stream,
            seq,
            size: data.len() as u64,
        });
        tracing::debug!(%stream, seq, size = data.len(), "published segment");
        Ok(seq)
    }

    pub(super) fn watch(&mut self, stream: StreamId) {
        if self.streams.contains_key(&stream) {
            return;
        }
        self.shared
            .store
            .write()
            .expect("store lock")
            .add_stream(stream, StoreRole::Viewer, None);
        let now_s = self.clock(Instant::now());
        self.streams.insert(stream, StreamMesh::new(None, now_s));
        self.subscribe(stream);
        self.find_providers(stream, Instant::now());
        tracing::info!(%stream, "watching");
    }

    /// The broadcaster's machine hears of a segment it made. The machine starts with the second segment (the
    /// first of an encode runs large, and the bitrate sizes every child slot), and hears of the first then.
    fn feed_published(&mut self, stream: StreamId, entry: SignedManifestEntry, now: Instant) {
        let local = *self.swarm.local_peer_id();
        let now_s = self.clock(now);
        let Some(mesh) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(segment) = mesh.add_entry(entry, now) else {
            return;
        };
        if mesh.machine.is_some() {
            self.feed(stream, Input::Published(segment));
            return;
        }
        let (Some((bitrate, segment_s)), Some(info)) = (mesh.rates(), mesh.info.clone()) else {
            return;
        };
        let made = mesh.tail(2);
        if made.len() < 2 {
            return;
        }
        let cfg = self.mesh_config(Role::Broadcaster, bitrate, segment_s, &info);
        let machine = TreeMesh::new(local, cfg, rand::random(), now_s);
        if let Some(mesh) = self.streams.get_mut(&stream) {
            mesh.machine = Some(machine);
        }
        for segment in made {
            self.feed(stream, Input::Published(segment));
        }
    }

    pub(super) fn subscribe(&mut self, stream: StreamId) {
        let topic = gossipsub::IdentTopic::new(stream.topic());
        // Peer scoring for the stream's topic: messages that fail validation (a forged announcement) cost the
        // sender dearly; delivery-rate penalties are off, since only the broadcaster publishes and most peers
        // forward nothing new.
        let params = gossipsub::TopicScoreParams {
            invalid_message_deliveries_weight: -100.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            ..Default::default()
        };
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .set_topic_params(topic.clone(), params)
        {
            tracing::warn!(%stream, %error, "cannot score the stream's topic");
        }
        if let Err(error) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!(%stream, %error, "cannot subscribe to the stream's control topic");
        }
    }

    pub(super) fn provide(&mut self, stream: StreamId) {
        let key = kad::RecordKey::new(stream.as_bytes());
        if let Err(error) = self.swarm.behaviour_mut().kad.start_providing(key) {
            tracing::warn!(%stream, %error, "cannot announce this node as a provider of the stream");
        }
    }

    pub(super) fn find_providers(&mut self, stream: StreamId, now: Instant) {
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(stream.as_bytes()));
        self.provider_queries.insert(query, stream);
        self.last_provider_query.insert(stream, now);
    }

    pub(super) fn gossip(&mut self, stream: StreamId, message: &ControlMessage) {
        let topic = gossipsub::IdentTopic::new(stream.topic());
        match self.swarm.behaviour_mut().gossipsub.publish(topic, message.encode()) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(error) => tracing::debug!(%stream, %error, "control message not published"),
        }
    }

    pub(super) fn count_segment(&mut self, stream: StreamId) {
        self.shared.metrics.segments.inc();
        if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
            s.counters.segments += 1;
        }
    }
}
