//! The chunk protocol: answering requests, taking responses, penalising protocol violations.

use super::{Outbound, Service};
use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::{self, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel};
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse, MANIFEST_RESPONSE_BUDGET, ManifestResponse};

use crate::metrics::{EntryVia, Failure, Flow};
use crate::network::Received;
use crate::peer_manager::Request;
use streamrp2p_protocols::score::Offence;

impl Service {
    pub(super) fn on_chunk_event(&mut self, event: request_response::Event<Received<ChunkRequest>, ChunkResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    let request = match request {
                        Received::Valid(request) => request,
                        Received::Invalid(error) => return self.penalize_invalid(peer, &error),
                    };
                    let kind = match request {
                        ChunkRequest::Block(_) => Request::ChunkBlock,
                        ChunkRequest::Manifest { .. } => Request::Manifest,
                    };
                    if self.admit(peer, kind) {
                        self.on_request(request_id, request, channel);
                    } else {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .chunk
                            .send_response(channel, ChunkResponse::Busy);
                    }
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
                if let OutboundFailure::Io(io) = &error {
                    self.penalize_wire(peer, io);
                }
                tracing::debug!(%peer, %error, "chunk request failed");
                self.outbound.remove(&request_id);
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.uploads.remove(&request_id);
                if let request_response::InboundFailure::Io(io) = &error {
                    self.penalize_wire(peer, io);
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

    pub(super) fn on_request(
        &mut self,
        id: InboundRequestId,
        request: ChunkRequest,
        channel: ResponseChannel<ChunkResponse>,
    ) {
        // A metered node uploads no payload at all, by CID or otherwise, manifests included.
        let metered = self.policy.borrow().metered;
        let store = self.shared.store.read().expect("store lock");
        let response = match request {
            ChunkRequest::Block(_) | ChunkRequest::Manifest { .. } if metered => ChunkResponse::DontHave,
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

    pub(super) fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: ChunkResponse) {
        let Some((_, outbound)) = self.outbound.remove(&id) else {
            return;
        };
        let now = Instant::now();
        match (outbound, response) {
            (Outbound::Manifest { stream }, ChunkResponse::Manifest(manifest)) => {
                if manifest.info.id() != stream {
                    self.shared.metrics.failed(Failure::Message);
                    self.penalize(peer, Offence::Lie, &"answered with the manifest of another stream");
                    return;
                }
                if self.streams.get(&stream).is_some_and(|m| m.info.is_none()) {
                    self.set_info(stream, manifest.info.clone());
                }
                if let Some(mesh) = self.streams.get_mut(&stream)
                    && !manifest.have.is_empty()
                {
                    mesh.add_candidate(peer);
                }
                self.add_entries(stream, manifest.entries, now, EntryVia::Manifest);
            }
            (Outbound::Manifest { .. }, ChunkResponse::DontHave | ChunkResponse::Busy) => {}
            (Outbound::Manifest { .. }, ChunkResponse::Block(_)) => {
                self.shared.metrics.failed(Failure::Message);
                self.penalize(peer, Offence::Malformed, &"answered with the wrong kind of response");
            }
        }
    }
}
