//! The one place that decides what a peer may do and what it costs when it lies: per-peer inbound quotas on every
//! protocol, a score per peer for every kind of misbehaviour (with decay), and bans.
//!
//! The rules are `streamrp2p_protocols`' — [`PeerScores`] and [`Quotas`] with the limits of
//! [`streamrp2p_protocols::quota::limits`] — so that the simulator, which keeps the same, measures what nodes do.
//! This type holds them for one node on its clock; the service carries out a ban (libp2p's block list, a
//! disconnection, the machines told the peer is gone) and feeds gossipsub the score.

use std::collections::BTreeMap;
use std::time::Instant;

use libp2p::PeerId;
use serde::Serialize;
use streamrp2p_protocols::quota::{Quotas, Rate, Refused, limits};
use streamrp2p_protocols::score::{Offence, PeerScores, ScoreConfig, Verdict};
use streamrp2p_protocols::treemesh::QuotaClass;

/// Peers whose quota state is kept at once: a peer's state is forgotten when it disconnects or comes back to rest,
/// and a node keeps at most a few hundred connections.
const MAX_QUOTA_PEERS: usize = 1024;
/// Frames of any kind one peer may send on the tree-mesh protocol: every block of a stream at several times its
/// bitrate plus its control messages (a 64 KiB block a frame; 200 a second is 100 Mbit/s).
const FRAMES: Rate = Rate::new(200.0, 400.0);

/// What a peer asked of this node, for its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// A tree-mesh control message of this class.
    Control(QuotaClass),
    /// A tree-mesh block frame.
    Block,
    /// A block asked by CID on the chunk protocol.
    ChunkBlock,
    /// A stream's manifest.
    Manifest,
}

/// One offender as the status page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PenaltyView {
    /// Its peer id.
    pub peer: String,
    /// Penalty points now (a ban at 100; they halve every ten minutes).
    pub points: f64,
    /// Whether it is banned now.
    pub banned: bool,
    /// Offences by kind.
    pub offences: BTreeMap<&'static str, u32>,
    /// The first offence seen, in ms since the Unix epoch.
    pub first_offence_unix_ms: u64,
    /// When the latest ban began, in ms since the Unix epoch.
    pub banned_unix_ms: Option<u64>,
}

/// Scores, quotas and bans of one node.
pub(crate) struct PeerManager {
    scores: PeerScores<PeerId>,
    pulls: Quotas<PeerId>,
    probes: Quotas<PeerId>,
    placements: Quotas<PeerId>,
    control: Quotas<PeerId>,
    frames: Quotas<PeerId>,
    chunk_blocks: Quotas<PeerId>,
    manifests: Quotas<PeerId>,
    /// The node's clock: seconds since this instant.
    epoch: Instant,
    /// The Unix time of `epoch`, in ms, for what the status reports.
    epoch_unix_ms: u64,
}

impl PeerManager {
    /// A peer manager whose bans last `ban_s` seconds.
    pub(crate) fn new(ban_s: f64, epoch: Instant, epoch_unix_ms: u64) -> Self {
        let quotas = |rate| Quotas::new(rate, MAX_QUOTA_PEERS);
        Self {
            scores: PeerScores::new(ScoreConfig {
                ban_s,
                ..ScoreConfig::default()
            }),
            pulls: quotas(limits::PULLS),
            probes: quotas(limits::PROBES),
            placements: quotas(limits::PLACEMENTS),
            control: quotas(limits::CONTROL),
            frames: quotas(FRAMES),
            chunk_blocks: quotas(limits::BLOCK_REQUESTS),
            manifests: quotas(limits::MANIFEST_REQUESTS),
            epoch,
            epoch_unix_ms,
        }
    }

    fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn unix_ms(&self, secs: f64) -> u64 {
        self.epoch_unix_ms + (secs * 1000.0) as u64
    }

    /// Takes `request` from `peer`'s quota, or says it is over (the caller answers "busy" and penalises).
    pub(crate) fn admit(&mut self, peer: PeerId, request: Request, now: Instant) -> Result<(), Refused> {
        let now = self.secs(now);
        let quotas = match request {
            Request::Control(QuotaClass::Pulls) => &mut self.pulls,
            Request::Control(QuotaClass::Probes) => &mut self.probes,
            Request::Control(QuotaClass::Placements) => &mut self.placements,
            Request::Control(QuotaClass::Control) => &mut self.control,
            Request::Block => &mut self.frames,
            Request::ChunkBlock => &mut self.chunk_blocks,
            Request::Manifest => &mut self.manifests,
        };
        quotas.check(peer, now, 1.0)
    }

    /// Records `offence` by `peer`.
    pub(crate) fn penalise(&mut self, peer: PeerId, offence: Offence, now: Instant) -> Verdict {
        let now = self.secs(now);
        self.scores.penalise(peer, offence, now)
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.scores.is_banned(peer, self.secs(Instant::now()))
    }

    /// `peer`'s score as gossipsub takes it (its application-specific score): minus a tenth of its penalty points,
    /// so that with gossipsub's default weight of 10 a lie (34 points) puts it below the gossip threshold and
    /// going over a quota now and then (5 points each) does not.
    pub(crate) fn gossipsub_score(&self, peer: &PeerId, now: Instant) -> f64 {
        -self.scores.points(peer, self.secs(now)) / 10.0
    }

    /// Lifts the bans that ran out, returning those peers.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let now = self.secs(now);
        self.scores.expire(now)
    }

    /// Forgets what is kept of a peer that disconnected, but its score.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        for quotas in [
            &mut self.pulls,
            &mut self.probes,
            &mut self.placements,
            &mut self.control,
            &mut self.frames,
            &mut self.chunk_blocks,
            &mut self.manifests,
        ] {
            quotas.remove(peer);
        }
    }

    /// The `n` worst offenders now, worst first.
    pub(crate) fn worst(&self, n: usize, now: Instant) -> Vec<PenaltyView> {
        let now = self.secs(now);
        self.scores
            .worst(n, now)
            .into_iter()
            .map(|(peer, points, record)| PenaltyView {
                peer: peer.to_string(),
                points: (points * 10.0).round() / 10.0,
                banned: record.banned_until.is_some_and(|until| until > now),
                offences: Offence::ALL
                    .iter()
                    .filter(|o| record.offences[o.index()] > 0)
                    .map(|o| (o.name(), record.offences[o.index()]))
                    .collect(),
                first_offence_unix_ms: self.unix_ms(record.first_offence_at),
                banned_unix_ms: record.banned_at.map(|at| self.unix_ms(at)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bans_expire_and_quotas_answer_busy() {
        let t0 = Instant::now();
        let mut pm = PeerManager::new(10.0, t0, 1_000);
        let peer = PeerId::random();
        assert_eq!(pm.penalise(peer, Offence::BadBlock, t0), Verdict::Banned);
        assert!(pm.is_banned(&peer));
        assert!(pm.expire(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(pm.expire(t0 + Duration::from_secs(10)), vec![peer]);
        let worst = pm.worst(5, t0 + Duration::from_secs(10));
        assert_eq!(worst[0].peer, peer.to_string());
        assert_eq!(worst[0].offences.get("bad_block"), Some(&1));
        assert_eq!(worst[0].first_offence_unix_ms, 1_000);

        // Manifests: a burst of four, then one a second.
        let other = PeerId::random();
        for _ in 0..4 {
            assert!(pm.admit(other, Request::Manifest, t0).is_ok());
        }
        assert!(pm.admit(other, Request::Manifest, t0).is_err());
        assert!(pm.admit(other, Request::Manifest, t0 + Duration::from_secs(1)).is_ok());
        assert!(pm.gossipsub_score(&other, t0) == 0.0);
    }
}
