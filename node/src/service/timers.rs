//! The loop's own timers: bans ending, playlists moving past gaps, manifest polls while announcements are not
//! arriving, provider searches, and the status figures.

use super::{MANIFEST_POLL_AFTER, MANIFEST_POLL_PEERS, PROVIDER_REFRESH, Service};

/// A block that came before its entry asks its sender for the manifest at most this often: the announcement is
/// usually just behind it, and a peer's manifest quota is one a second.
const EARLY_BLOCK_POLL_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);
/// Offenders the status shows.
const PENALTIES_SHOWN: usize = 10;
use std::time::Instant;

use libp2p::PeerId;
use streamrp2p_protocols::stream::StreamId;

impl Service {
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
        let streams: Vec<StreamId> = self
            .streams
            .keys()
            .filter(|s| !self.broadcasts.contains_key(s))
            .copied()
            .collect();
        for stream in streams {
            self.poll_manifests(stream, now);
            if self
                .last_provider_query
                .get(&stream)
                .is_none_or(|t| now.duration_since(*t) >= PROVIDER_REFRESH)
            {
                self.find_providers(stream, now);
            }
        }
        self.refresh_views();
        *self.shared.penalties.write().expect("penalties lock") = self.peers.worst(PENALTIES_SHOWN, now);
    }

    /// Asks peers for the manifest when announcements have not been arriving (joining, or gossip not yet meshed).
    pub(super) fn poll_manifests(&mut self, stream: StreamId, now: Instant) {
        let Some(mesh) = self.streams.get(&stream) else {
            return;
        };
        let quiet = mesh
            .last_entry_at
            .is_none_or(|t| now.duration_since(t) >= MANIFEST_POLL_AFTER);
        let polled = self
            .last_manifest_poll
            .get(&stream)
            .is_some_and(|t| now.duration_since(*t) < MANIFEST_POLL_AFTER);
        if !quiet || polled {
            return;
        }
        let mut peers: Vec<PeerId> = mesh.candidates().copied().collect();
        if let Some(machine) = &mesh.machine {
            peers.extend(machine.neighbours());
            peers.extend(machine.parent());
        }
        if let Some(info) = &mesh.info {
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
}

impl Service {
    /// Asks `peer` for the stream's manifest, unless a poll went out lately: a block came whose entry is not known.
    pub(super) fn poll_manifest_of(&mut self, stream: StreamId, peer: PeerId) {
        let now = Instant::now();
        if self
            .last_manifest_poll
            .get(&stream)
            .is_some_and(|t| now.duration_since(*t) < EARLY_BLOCK_POLL_AFTER)
        {
            return;
        }
        self.last_manifest_poll.insert(stream, now);
        self.request_manifest(stream, peer);
    }
}
