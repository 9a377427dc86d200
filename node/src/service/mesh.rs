//! Driving the tree-mesh machines: handing them inputs with the node's clock, waking them when they ask, and
//! carrying out their outputs — control frames, pushes and serves on the tree-mesh protocol, peer searches in the
//! DHT, origin fetches over HTTP, whole segments into the store.

use super::{MAX_ROUTING_FRAMES, MAX_ROUTING_PEERS, MeshOut, Service, unix_ms};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundFailure};
use streamrp2p_protocols::score::Offence;
use streamrp2p_protocols::segment::BLOCK_SIZE;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};
use streamrp2p_protocols::treemesh::wire::Frame;
use streamrp2p_protocols::treemesh::{
    BlockSource, Config, Input, Message, Output, Refusal, Role, SegmentInfo, TreeMesh, UploadKind,
};

use crate::mesh::Taken;
use crate::metrics::{Failure, Flow};
use crate::network::{Ack, Received};
use crate::peer_manager::Request;
use crate::status::MeshView;

impl Service {
    /// The machines' clock: seconds since the node started.
    pub(super) fn clock(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn machine_mut(&mut self, stream: StreamId) -> Option<&mut TreeMesh<PeerId>> {
        self.streams.get_mut(&stream)?.machine.as_mut()
    }

    /// The tree-mesh settings of this node for a stream of `bitrate` bytes per second.
    pub(super) fn mesh_config(&self, role: Role, bitrate: f64, segment_s: f64, info: &SignedStreamInfo) -> Config {
        let capacity = self.config.upload_capacity_kbps * 1000.0 / 8.0;
        let mut cfg = Config::new(role, bitrate, segment_s, BLOCK_SIZE as u32, capacity);
        cfg.has_origin = !info.info().origin_url.is_empty();
        cfg.policy = self.policy.borrow().to_treemesh();
        cfg
    }

    /// Hands an input to a stream's machine and carries out what it asks.
    pub(super) fn feed(&mut self, stream: StreamId, input: Input<PeerId>) {
        let now = self.clock(Instant::now());
        let Some(machine) = self.machine_mut(stream) else {
            return;
        };
        if !matches!(input, Input::Block { .. }) {
            tracing::trace!(%stream, ?input, "machine hears");
        }
        machine.handle(now, input);
        self.drain(stream);
    }

    /// Carries out what a machine asks, and hands it what that produced, until it asks nothing more.
    pub(super) fn drain(&mut self, stream: StreamId) {
        loop {
            while let Some(output) = self.machine_mut(stream).and_then(TreeMesh::poll_output) {
                self.carry_out(stream, output);
            }
            if self.followups.is_empty() {
                return;
            }
            let now = self.clock(Instant::now());
            for input in std::mem::take(&mut self.followups) {
                if let Some(machine) = self.machine_mut(stream) {
                    machine.handle(now, input);
                }
            }
        }
    }

    fn carry_out(&mut self, stream: StreamId, output: Output<PeerId>) {
        tracing::trace!(%stream, ?output, "machine asks");
        match output {
            Output::Send { to, message } => self.send_frame(stream, to, Frame::Control { stream, message }, None),
            Output::Push { to, segment, block } => self.upload(stream, to, segment, block, UploadKind::Push),
            Output::Serve { to, segment, block } => self.upload(stream, to, segment, block, UploadKind::Serve),
            Output::FetchOrigin { segment, block } => self.fetch_origin(stream, segment, block),
            Output::CancelOrigin { segment, block } => {
                if let Some(task) = self.origin_tasks.remove(&(stream, segment.seq, block)) {
                    task.abort();
                }
            }
            Output::FindPeers => self.find_providers(stream, Instant::now()),
            Output::Misbehaved { peer, offence } => self.penalize(peer, offence, &"seen by the tree-mesh"),
            Output::SegmentComplete(segment) => {
                if let Some((entry, data)) = self.streams.get_mut(&stream).and_then(|m| m.finish(segment.seq)) {
                    self.complete(stream, entry, data, Instant::now());
                }
            }
        }
    }

    /// Sends a block to a child or a puller; a block no longer held ends the upload at once.
    fn upload(&mut self, stream: StreamId, to: PeerId, segment: SegmentInfo, index: u16, kind: UploadKind) {
        let Some(data) = self.block_bytes(stream, segment.seq, index) else {
            self.followups.push(Input::Uploaded { to, kind });
            return;
        };
        let len = data.len() as u64;
        let frame = Frame::Block {
            stream,
            segment,
            index,
            push: kind == UploadKind::Push,
            data,
        };
        self.send_frame(stream, to, frame, Some((kind, len)));
    }

    /// A block held here, whole segment or not.
    fn block_bytes(&self, stream: StreamId, seq: u64, index: u16) -> Option<Bytes> {
        let mesh = self.streams.get(&stream)?;
        let cid = mesh.block_cid(seq, index)?;
        if let Some(data) = mesh.partial_block(seq, &cid) {
            return Some(data);
        }
        let store = self.shared.store.read().expect("store lock");
        store.block(&cid).map(|(data, _)| data.clone())
    }

    fn send_frame(&mut self, stream: StreamId, to: PeerId, frame: Frame, upload: Option<(UploadKind, u64)>) {
        if self.peers.is_banned(&to) || to == *self.swarm.local_peer_id() {
            if let Some((kind, _)) = upload {
                self.followups.push(Input::Uploaded { to, kind });
            }
            return;
        }
        let control = upload.is_none().then(|| frame.clone());
        let id = self.swarm.behaviour_mut().mesh.send_request(&to, frame.into());
        self.mesh_out.insert(
            id,
            MeshOut {
                stream,
                upload,
                control,
            },
        );
    }

    pub(super) fn on_mesh_event(&mut self, event: request_response::Event<Received<Frame>, Ack>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let _ = self.swarm.behaviour_mut().mesh.send_response(channel, Ack);
                    let request = match request {
                        Received::Valid(frame) => frame,
                        Received::Invalid(error) => return self.penalize_invalid(peer, &error),
                    };
                    let kind = match &request {
                        Frame::Control { message, .. } => Request::Control(message.quota_class()),
                        Frame::Block { .. } => Request::Block,
                    };
                    if self.admit(peer, kind) {
                        self.on_frame(peer, request);
                    } else if let Frame::Control {
                        stream,
                        message: Message::Want { segment, block },
                    } = request
                    {
                        // Over its quota: a pull is answered "busy" (the puller asks elsewhere); the rest is dropped.
                        let refused = Message::Refused {
                            seq: segment.seq,
                            block,
                            reason: Refusal::Busy,
                        };
                        self.send_frame(
                            stream,
                            peer,
                            Frame::Control {
                                stream,
                                message: refused,
                            },
                            None,
                        );
                    }
                }
                request_response::Message::Response { request_id, .. } => {
                    if let Some(out) = self.mesh_out.remove(&request_id) {
                        self.frame_done(peer, out, true);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let OutboundFailure::Io(io) = &error {
                    self.penalize_wire(peer, io);
                }
                tracing::debug!(%peer, %error, "tree-mesh frame not delivered");
                let Some(out) = self.mesh_out.remove(&request_id) else {
                    return;
                };
                if matches!(error, OutboundFailure::DialFailure)
                    && let Some(frame) = out.control.clone()
                    && self.route(peer, out.stream, frame)
                {
                    return;
                }
                self.frame_done(peer, out, false);
                if matches!(error, OutboundFailure::DialFailure) {
                    self.peer_gone(peer);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let request_response::InboundFailure::Io(io) = &error {
                    self.penalize_wire(peer, io);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A frame was acknowledged (`delivered`) or failed: an upload's end goes to the machine.
    fn frame_done(&mut self, to: PeerId, out: MeshOut, delivered: bool) {
        let Some((kind, bytes)) = out.upload else {
            return;
        };
        if delivered {
            self.shared.metrics.add_bytes(Flow::Uploaded, bytes);
            if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&out.stream) {
                s.counters.uploaded += bytes;
            }
        }
        self.feed(out.stream, Input::Uploaded { to, kind });
    }

    /// Keeps a control frame for a peer with no known address and looks the peer up in the DHT; false when the
    /// lookups are full (the frame is then dropped, as a lost message would be).
    fn route(&mut self, peer: PeerId, stream: StreamId, frame: Frame) -> bool {
        if !self.routing.contains_key(&peer) {
            if self.routing.len() >= MAX_ROUTING_PEERS {
                return false;
            }
            let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            self.route_queries.insert(query, peer);
        }
        let queued = self.routing.entry(peer).or_default();
        if queued.len() >= MAX_ROUTING_FRAMES {
            return false;
        }
        queued.push((stream, frame));
        true
    }

    /// The DHT lookup of a peer ended: send what waited for it, or tell the machines the peer is gone.
    pub(super) fn routed(&mut self, peer: PeerId, addrs: Vec<libp2p::Multiaddr>) {
        let queued = self.routing.remove(&peer).unwrap_or_default();
        if addrs.is_empty() {
            self.peer_gone(peer);
            return;
        }
        for addr in addrs {
            self.swarm.add_peer_address(peer, addr);
        }
        for (stream, frame) in queued {
            let id = self.swarm.behaviour_mut().mesh.send_request(&peer, frame.into());
            // Sent once more only: a second dial failure ends it.
            self.mesh_out.insert(
                id,
                MeshOut {
                    stream,
                    upload: None,
                    control: None,
                },
            );
        }
    }

    fn on_frame(&mut self, from: PeerId, frame: Frame) {
        match frame {
            Frame::Control { stream, message } => {
                let Some(mesh) = self.streams.get_mut(&stream) else {
                    return;
                };
                if mesh.machine.is_none() {
                    // Not joined yet: the sender is a peer of the stream, worth asking later.
                    mesh.add_candidate(from);
                    return;
                }
                self.feed(stream, Input::Message { from, message });
            }
            Frame::Block {
                stream,
                segment,
                index,
                data,
                ..
            } => self.on_block(BlockSource::Peer(from), stream, segment, index, data),
        }
    }

    /// A block from a peer or the origin: verified against its signed entry, kept, and handed to the machine.
    pub(super) fn on_block(
        &mut self,
        source: BlockSource<PeerId>,
        stream: StreamId,
        segment: SegmentInfo,
        index: u16,
        data: Bytes,
    ) {
        let held_whole = self
            .shared
            .store
            .read()
            .expect("store lock")
            .has_segment(&stream, segment.seq);
        let Some(mesh) = self.streams.get_mut(&stream) else {
            return;
        };
        let len = data.len() as u64;
        let taken = mesh.take_block(source, segment, index, data, held_whole);
        if tracing::enabled!(tracing::Level::TRACE) {
            // Each block's arrival, for following a segment's way through the tree-mesh: how long after the
            // broadcaster signed it, from whom, and what it was to this node.
            let age_ms = mesh
                .entry(segment.seq)
                .map(|e| unix_ms().saturating_sub(e.entry().timestamp_ms));
            tracing::trace!(%stream, seq = segment.seq, index, ?source, ?age_ms, taken = ?taken.as_ref().ok(), "block");
        }
        match taken {
            Ok(taken @ (Taken::New | Taken::Duplicate)) => {
                if taken == Taken::Duplicate {
                    mesh.duplicate_bytes += len;
                } else {
                    let flow = match source {
                        BlockSource::Peer(_) => Flow::FromPeers,
                        BlockSource::Origin => Flow::FromOrigin,
                    };
                    self.shared.metrics.add_bytes(flow, len);
                    if let Some(s) = self.shared.store.write().expect("store lock").stream_mut(&stream) {
                        match source {
                            BlockSource::Peer(_) => s.counters.from_peers += len,
                            BlockSource::Origin => s.counters.from_origin += len,
                        }
                    }
                }
                // Duplicates too: the machine counts them and settles the pull or fetch they answer.
                self.feed(
                    stream,
                    Input::Block {
                        from: source,
                        segment,
                        block: index,
                    },
                );
            }
            Ok(Taken::Stale) => {}
            Ok(Taken::Early) => {
                // The entry has not come yet (a push overtook the announcement, or the machine heard of the
                // segment from a neighbour first): a peer that sent the block holds it, and the broadcaster has it.
                let ask = match source {
                    BlockSource::Peer(peer) => Some(peer),
                    BlockSource::Origin => mesh.info.as_ref().map(|i| i.info().broadcaster.to_peer_id()),
                };
                if let Some(peer) = ask {
                    self.poll_manifest_of(stream, peer);
                }
            }
            Err(bad) => match source {
                BlockSource::Peer(peer) => {
                    if bad.offence() == Offence::BadBlock {
                        self.shared.metrics.failed(Failure::Block);
                    }
                    self.penalize(peer, bad.offence(), &bad);
                }
                BlockSource::Origin => {
                    tracing::warn!(%stream, seq = segment.seq, index, error = %bad, "origin sent a bad block");
                    self.shared.metrics.failed(Failure::Origin);
                    self.feed(stream, Input::OriginFailed { segment, block: index });
                }
            },
        }
    }

    /// Blocks that came before the entry of `seq` are taken now that it is here.
    pub(super) fn replay_early(&mut self, stream: StreamId, seq: u64) {
        let Some(mesh) = self.streams.get_mut(&stream) else {
            return;
        };
        for early in mesh.take_early(seq) {
            self.on_block(early.from, stream, early.segment, early.index, early.data);
        }
    }

    /// A viewer joins the stream's tree-mesh once it has the signed info and the two newest entries.
    pub(super) fn try_join(&mut self, stream: StreamId) {
        let local = *self.swarm.local_peer_id();
        let now = Instant::now();
        let now_s = self.clock(now);
        let Some(mesh) = self.streams.get(&stream) else {
            return;
        };
        if mesh.machine.is_some() || self.broadcasts.contains_key(&stream) {
            return;
        }
        let (Some(info), Some((bitrate, segment_s))) = (mesh.info.clone(), mesh.rates()) else {
            return;
        };
        // Playback starts one segment behind the live edge, so a viewer of a stream that has made one segment so far
        // waits for the second: started on the first alone, its player would be due each next segment the moment it
        // is made, and every segment would come from the origin.
        let tail = mesh.tail(2);
        if tail.len() < 2 {
            return;
        }
        let Some(newest) = tail.last().and_then(|s| mesh.entry(s.seq)) else {
            return;
        };
        let live_age_s = unix_ms().saturating_sub(newest.entry().timestamp_ms) as f64 / 1000.0;
        let broadcaster = info.info().broadcaster.to_peer_id();
        let candidates: Vec<(PeerId, bool)> = mesh
            .candidates()
            .filter(|p| **p != local && **p != broadcaster && !self.peers.is_banned(p))
            .map(|p| (*p, true))
            .collect();
        let cfg = self.mesh_config(Role::Viewer, bitrate, segment_s, &info);
        let mut machine = TreeMesh::new(local, cfg, rand::random(), now_s);
        machine.handle(
            now_s,
            Input::Join {
                tail,
                candidates,
                broadcaster: Some(broadcaster),
                live_age_s: Some(live_age_s),
            },
        );
        let first = machine.first_segment();
        let Some(mesh) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(first) = first {
            mesh.player.start(first, machine.play_from());
            let mut store = self.shared.store.write().expect("store lock");
            if let Some(s) = store.stream_mut(&stream)
                && !s.playable.is_started()
            {
                s.playable = crate::playlist::PlayableRange::starting_at(first, self.config.skip_gap_after);
            }
        }
        mesh.machine = Some(machine);
        tracing::info!(%stream, bitrate, segment_s, "joined the stream's tree-mesh");
        self.drain(stream);
    }

    /// The connection to `peer` is gone: every machine forgets it.
    pub(super) fn peer_gone(&mut self, peer: PeerId) {
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            if let Some(mesh) = self.streams.get_mut(&stream) {
                mesh.remove_candidate(&peer);
            }
            self.feed(stream, Input::PeerGone(peer));
        }
    }

    /// The owner changed the resource policy: every machine re-plans.
    pub(super) fn on_policy(&mut self) {
        let policy = self.policy.borrow_and_update().to_treemesh();
        tracing::info!(?policy, "resource policy changed");
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            self.feed(stream, Input::Policy(policy));
        }
    }

    /// When the earliest machine wants to be woken.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|m| m.machine.as_ref()?.poll_timeout())
            .min_by(f64::total_cmp)
            .map(|t| self.epoch + Duration::from_secs_f64(t.max(0.0)))
    }

    /// Runs what is due at the machines whose time has come.
    pub(super) fn on_wake(&mut self) {
        let now = self.clock(Instant::now());
        let due: Vec<(StreamId, f64)> = self
            .streams
            .iter()
            .filter_map(|(id, m)| Some((*id, m.machine.as_ref()?.poll_timeout()?)))
            // A microsecond of slack: the wake-up instant, rounded, may read a hair before the time asked for.
            .filter(|(_, t)| *t <= now + 1e-6)
            .collect();
        for (stream, t) in due {
            if let Some(machine) = self.machine_mut(stream) {
                machine.handle_timeout(now.max(t));
            }
            self.drain(stream);
        }
    }

    /// Publishes each stream's tree-mesh figures where the status page and metrics read them.
    pub(super) fn refresh_views(&mut self) {
        let now_s = self.clock(Instant::now());
        let mut store = self.shared.store.write().expect("store lock");
        for (id, mesh) in &mut self.streams {
            let Some(machine) = &mesh.machine else {
                continue;
            };
            if let Some(first) = machine.first_segment() {
                mesh.player.start(first, machine.play_from());
            }
            let segment_s = machine.config().segment_s;
            let report = mesh.player.report(now_s, segment_s);
            let counters = machine.counters();
            let view = MeshView {
                tree_role: if machine.is_backbone() { "backbone" } else { "mesh" },
                parents: machine.parent().iter().map(ToString::to_string).collect(),
                children: machine.children().map(|c| c.to_string()).collect(),
                ttfb_s: report.ttfb_s,
                lag_p50_s: mesh.player.lag_quantile(0.5),
                lag_p95_s: mesh.player.lag_quantile(0.95),
                stalled_s: report.stalled_s,
                watched_s: report.watched_s,
                segments_on_time: report.on_time,
                segments_late: report.late,
                bytes_duplicate: mesh.duplicate_bytes,
                bytes_control_sent: counters.control_sent as u64,
                lags_s: mesh.player.lags(),
            };
            self.shared.metrics.streams.set(&id.to_string(), &view);
            if let Some(s) = store.stream_mut(id) {
                s.mesh = Some(view);
            }
        }
    }
}
