//! Scheduling block requests, timers, manifest polls and the HTTP origin fallback.

use super::{MANIFEST_POLL_AFTER, MANIFEST_POLL_PEERS, OriginResult, Outbound, PROVIDER_REFRESH, Service};
use std::time::Instant;

use bytes::Bytes;
use libp2p::PeerId;
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::chunk::ChunkRequest;
use streamrp2p_protocols::manifest::ManifestEntry;
use streamrp2p_protocols::segment;
use streamrp2p_protocols::stream::StreamId;

use crate::metrics::{Failure, Flow};

impl Service {
    /// Sends block requests for whatever is missing and has a peer to ask.
    pub(super) fn schedule(&mut self) {
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

    pub(super) fn on_tick(&mut self, now: Instant) {
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
    pub(super) fn poll_manifests(&mut self, stream: StreamId, now: Instant) {
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

    pub(super) fn origin_fallback(&mut self, stream: StreamId, now: Instant) {
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

    pub(super) fn on_origin_result(&mut self, result: OriginResult) {
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
