//! Peer scoring: every kind of misbehaviour a node can see, turned into one score per peer that decays with time,
//! and the score into a ban.
//!
//! A peer earns penalty points for each [`Offence`]; points halve every [`ScoreConfig::half_life_s`]; a peer whose
//! points reach [`ScoreConfig::ban_at`] is banned for [`ScoreConfig::ban_s`]. Offences that prove bad intent or a
//! broken implementation by themselves — bytes that do not match their CID, an entry not signed by the broadcaster,
//! an undecodable frame, a parent caught withholding — cost the whole threshold at once. Lies about the control
//! plane cost a part of it, so that a race an honest peer can lose now and then (a message about a segment a moment
//! before its announcement) never bans it, while a peer that keeps lying is banned after a few. Going over a quota
//! costs little: the request is answered "busy" anyway, and only a peer that keeps pushing is banned.
//!
//! The table is bounded ([`ScoreConfig::max_peers`]): when full, the entry with the fewest points that is not
//! banned makes room, so a flood of new identities cannot push a banned peer (or one close to a ban) out of it.
//!
//! This is the node's peer manager's core, and the simulator's: the same rules in both (the shape of lighthouse's
//! peer manager, whose score also decays and whose bans go through libp2p's block list; gossipsub takes the score
//! as its application-specific score).

use std::collections::HashMap;
use std::hash::Hash;

/// What a peer did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offence {
    /// A block whose bytes do not match its CID, or a block frame whose size or index contradicts the segment's
    /// signed entry.
    BadBlock,
    /// A manifest entry or stream info not signed by the stream's broadcaster.
    ForgedEntry,
    /// A frame or message that does not decode, or breaks a size limit.
    Malformed,
    /// A control message that contradicts the protocol: a HAVE, WANT or skip for a segment far outside the signed
    /// window, a topology message from a peer whose role does not allow it, an answer to a request never made.
    Lie,
    /// Requests beyond a per-peer quota.
    QuotaOverrun,
    /// A parent that claimed a healthy place in the tree, took a child, and then did not deliver what the rest of
    /// the tree did.
    Withholding,
    /// Payload nobody asked for.
    Unsolicited,
}

impl Offence {
    /// Every offence, in the order of [`Offence::index`].
    pub const ALL: [Offence; 7] = [
        Offence::BadBlock,
        Offence::ForgedEntry,
        Offence::Malformed,
        Offence::Lie,
        Offence::QuotaOverrun,
        Offence::Withholding,
        Offence::Unsolicited,
    ];

    /// A name for status pages and metric labels, in snake case.
    pub fn name(self) -> &'static str {
        match self {
            Offence::BadBlock => "bad_block",
            Offence::ForgedEntry => "forged_entry",
            Offence::Malformed => "malformed",
            Offence::Lie => "lie",
            Offence::QuotaOverrun => "quota_overrun",
            Offence::Withholding => "withholding",
            Offence::Unsolicited => "unsolicited",
        }
    }

    /// Its place in [`Offence::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Penalty points, out of a ban threshold of [`BAN_POINTS`]: the offences that prove bad intent by themselves
    /// cost the whole threshold; a lie a third of it (three lies within a half-life ban); going over a quota or
    /// sending payload nobody asked for a twentieth (a peer that keeps at it is banned within seconds, an honest
    /// burst is forgotten).
    pub fn penalty(self) -> f64 {
        match self {
            Offence::BadBlock | Offence::ForgedEntry | Offence::Malformed | Offence::Withholding => BAN_POINTS,
            Offence::Lie => BAN_POINTS / 3.0 + 1.0,
            Offence::QuotaOverrun | Offence::Unsolicited => BAN_POINTS / 20.0,
        }
    }
}

/// The default ban threshold, in penalty points.
pub const BAN_POINTS: f64 = 100.0;

/// How scores decay and when they ban.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreConfig {
    /// Points at which a peer is banned.
    pub ban_at: f64,
    /// Points halve every this many seconds: ten minutes, lighthouse's score half-life, so that a peer that lied
    /// twice within minutes is one lie from a ban, and an honest peer's rare slip is forgotten within the hour.
    pub half_life_s: f64,
    /// How long a ban lasts: ten minutes.
    pub ban_s: f64,
    /// Peers remembered at most: 4,096, sixteen times the connections a node keeps.
    pub max_peers: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            ban_at: BAN_POINTS,
            half_life_s: 600.0,
            ban_s: 600.0,
            max_peers: 4096,
        }
    }
}

/// What the table knows of one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRecord {
    /// Penalty points as of `updated` (see [`PeerScores::points`] for now).
    points: f64,
    updated: f64,
    /// Offences by kind, in the order of [`Offence::ALL`].
    pub offences: [u32; Offence::ALL.len()],
    /// When the first offence was seen.
    pub first_offence_at: f64,
    /// The latest offence.
    pub last_offence: Offence,
    /// When the current (or last) ban began, if the peer was ever banned.
    pub banned_at: Option<f64>,
    /// Until when it is banned, if it is.
    pub banned_until: Option<f64>,
}

/// What a penalty led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Points added; no ban.
    Penalised,
    /// The peer is banned from now (it was not before).
    Banned,
    /// The peer was banned already.
    AlreadyBanned,
}

/// Every peer's score, with time passed in (seconds on the caller's monotonic clock).
#[derive(Clone, Debug)]
pub struct PeerScores<P> {
    config: ScoreConfig,
    peers: HashMap<P, PeerRecord>,
}

impl<P: Copy + Eq + Hash> PeerScores<P> {
    /// An empty table.
    pub fn new(config: ScoreConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
        }
    }

    /// The rules in force.
    pub fn config(&self) -> &ScoreConfig {
        &self.config
    }

    fn decayed(&self, record: &PeerRecord, now: f64) -> f64 {
        let elapsed = (now - record.updated).max(0.0);
        record.points * 0.5f64.powf(elapsed / self.config.half_life_s)
    }

    /// Records `offence` by `peer` at `now`, and bans it when its points reach the threshold.
    pub fn penalise(&mut self, peer: P, offence: Offence, now: f64) -> Verdict {
        if !self.peers.contains_key(&peer) {
            self.make_room(now);
            self.peers.insert(
                peer,
                PeerRecord {
                    points: 0.0,
                    updated: now,
                    offences: [0; Offence::ALL.len()],
                    first_offence_at: now,
                    last_offence: offence,
                    banned_at: None,
                    banned_until: None,
                },
            );
        }
        let ban_at = self.config.ban_at;
        let ban_s = self.config.ban_s;
        let points = {
            let record = &self.peers[&peer];
            self.decayed(record, now)
        };
        let record = self.peers.get_mut(&peer).expect("inserted above");
        record.points = points + offence.penalty();
        record.updated = now;
        record.offences[offence.index()] = record.offences[offence.index()].saturating_add(1);
        record.last_offence = offence;
        if record.banned_until.is_some_and(|until| until > now) {
            return Verdict::AlreadyBanned;
        }
        if record.points >= ban_at {
            record.banned_at = Some(now);
            record.banned_until = Some(now + ban_s);
            return Verdict::Banned;
        }
        Verdict::Penalised
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &P, now: f64) -> bool {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| until > now)
    }

    /// `peer`'s penalty points at `now` (0 for a peer never penalised).
    pub fn points(&self, peer: &P, now: f64) -> f64 {
        self.peers.get(peer).map_or(0.0, |r| self.decayed(r, now))
    }

    /// What is known of `peer`.
    pub fn record(&self, peer: &P) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    /// Lifts the bans that ran out by `now`, returning those peers (their points stay, and decay).
    pub fn expire(&mut self, now: f64) -> Vec<P> {
        let mut lifted = Vec::new();
        for (peer, record) in &mut self.peers {
            if record.banned_until.is_some_and(|until| until <= now) {
                record.banned_until = None;
                lifted.push(*peer);
            }
        }
        lifted
    }

    /// The `n` peers with the most points at `now`, most first, with their records.
    pub fn worst(&self, n: usize, now: f64) -> Vec<(P, f64, &PeerRecord)> {
        let mut all: Vec<(P, f64, &PeerRecord)> = self
            .peers
            .iter()
            .map(|(peer, record)| (*peer, self.decayed(record, now), record))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }

    /// Peers in the table.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Frees an entry when the table is full: the one with the fewest points now that is not banned.
    fn make_room(&mut self, now: f64) {
        if self.peers.len() < self.config.max_peers {
            return;
        }
        let victim = self
            .peers
            .iter()
            .filter(|(_, r)| r.banned_until.is_none_or(|until| until <= now))
            .map(|(peer, r)| (*peer, self.decayed(r, now)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(peer, _)| peer);
        match victim {
            Some(peer) => {
                self.peers.remove(&peer);
            }
            // Every entry is a ban in force: the oldest ban goes first.
            None => {
                if let Some(peer) = self
                    .peers
                    .iter()
                    .min_by(|a, b| a.1.banned_at.unwrap_or(0.0).total_cmp(&b.1.banned_at.unwrap_or(0.0)))
                    .map(|(peer, _)| *peer)
                {
                    self.peers.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_of_bad_intent_bans_at_once_and_the_ban_runs_out() {
        let mut scores = PeerScores::new(ScoreConfig::default());
        assert_eq!(scores.penalise(1u32, Offence::BadBlock, 10.0), Verdict::Banned);
        assert!(scores.is_banned(&1, 10.0));
        assert_eq!(scores.penalise(1, Offence::Lie, 11.0), Verdict::AlreadyBanned);
        assert!(scores.expire(609.0).is_empty());
        assert_eq!(scores.expire(610.0), vec![1]);
        assert!(!scores.is_banned(&1, 610.0));
        let record = scores.record(&1).unwrap();
        assert_eq!(record.offences[Offence::BadBlock.index()], 1);
        assert_eq!(record.offences[Offence::Lie.index()], 1);
        assert_eq!(record.banned_at, Some(10.0));
    }

    #[test]
    fn three_lies_ban_and_two_do_not() {
        let mut scores = PeerScores::new(ScoreConfig::default());
        assert_eq!(scores.penalise(7u32, Offence::Lie, 0.0), Verdict::Penalised);
        assert_eq!(scores.penalise(7, Offence::Lie, 1.0), Verdict::Penalised);
        assert_eq!(scores.penalise(7, Offence::Lie, 2.0), Verdict::Banned);
        assert_eq!(scores.record(&7).unwrap().first_offence_at, 0.0);
    }

    #[test]
    fn points_halve_every_half_life() {
        let mut scores = PeerScores::new(ScoreConfig::default());
        scores.penalise(3u32, Offence::Lie, 0.0);
        let at_once = scores.points(&3, 0.0);
        assert!((scores.points(&3, 600.0) - at_once / 2.0).abs() < 1e-9);
        // Two lies an hour apart never add up to a ban.
        assert_eq!(scores.penalise(3, Offence::Lie, 3600.0), Verdict::Penalised);
        assert_eq!(scores.penalise(3, Offence::Lie, 7200.0), Verdict::Penalised);
        assert!(!scores.is_banned(&3, 7200.0));
    }

    #[test]
    fn quota_overruns_ban_only_when_they_keep_coming() {
        let mut scores = PeerScores::new(ScoreConfig::default());
        let banned_after = (1..=25)
            .find(|i| scores.penalise(1u32, Offence::QuotaOverrun, f64::from(*i) * 0.01) == Verdict::Banned)
            .expect("a flood of overruns is banned");
        assert!(
            (20..=21).contains(&banned_after),
            "banned after {banned_after} overruns"
        );
        // Spread over hours, as many overruns never ban.
        let mut scores = PeerScores::new(ScoreConfig::default());
        for i in 0..100 {
            assert_eq!(
                scores.penalise(2u32, Offence::QuotaOverrun, f64::from(i) * 60.0),
                Verdict::Penalised
            );
        }
    }

    #[test]
    fn a_full_table_keeps_its_bans_and_worst_offenders() {
        let config = ScoreConfig {
            max_peers: 3,
            ..ScoreConfig::default()
        };
        let mut scores = PeerScores::new(config);
        scores.penalise(1u32, Offence::BadBlock, 0.0);
        scores.penalise(2, Offence::Lie, 0.0);
        scores.penalise(3, Offence::Unsolicited, 0.0);
        // A flood of new identities pushes out the mildest entries, never the ban.
        for peer in 10..100 {
            scores.penalise(peer, Offence::Unsolicited, 1.0);
        }
        assert_eq!(scores.len(), 3);
        assert!(scores.is_banned(&1, 1.0));
        assert!(scores.record(&2).is_some(), "the liar is remembered");
        let worst = scores.worst(2, 1.0);
        assert_eq!(worst[0].0, 1);
        assert_eq!(worst[1].0, 2);
    }
}
