//! Adversaries in the simulator, and what honest nodes do about them — the same rules the node keeps.
//!
//! An adversary is a viewer of the scenario (it joins, leaves and is found like any other) that runs a tree-mesh
//! machine, so that it holds a place in the stream, and after [`Adversaries::after_s`] it lies, as its
//! [`Behaviour`] says: forged HAVEs, WANTs and `Place`s sent to honest peers, a withholder's silence towards its
//! children, blocks that fail their CIDs, floods of valid requests, and connections from many identities behind its
//! one address.
//!
//! Honest nodes answer as the node does: every [`Output::Misbehaved`](streamrp2p_protocols::treemesh::Output) of an
//! honest machine, and every bad block or quota overrun its driver sees, goes to that node's
//! [`PeerScores`]; a ban drops every message and transfer between the two from then on, and both machines hear
//! that the other is gone. Per-peer quotas ([`streamrp2p_protocols::quota::limits`]) and the per-address
//! connection limit apply to every peer, honest or not, in scenarios with adversaries: honest peers going over them
//! would show as honest peers penalised in the report.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use streamrp2p_protocols::quota::{Gcra, limits};
use streamrp2p_protocols::score::{Offence, PeerScores, ScoreConfig, Verdict};
use streamrp2p_protocols::treemesh::QuotaClass;

use crate::report::AdversaryFigures;
use crate::scenario::{Adversaries, Behaviour};
use crate::stats::quantile;

/// Ids from here on are an adversary's extra identities (a connection flood): `SYBIL_BASE + adversary × 2^16 + k`.
pub(crate) const SYBIL_BASE: u32 = 1 << 30;
/// A flooding adversary moves on to another victim this often.
const VICTIM_FOR_S: f64 = 10.0;

/// One adversary.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Adversary {
    pub(crate) behaviour: Behaviour,
    /// It lies from then on.
    pub(crate) from: f64,
    /// The honest peer it floods now, and until when.
    pub(crate) victim: Option<(u32, f64)>,
    /// Identities it has made (connection flood).
    pub(crate) sybils: u32,
}

impl Adversary {
    /// Whether it has started lying at `now`.
    pub(crate) fn active(&self, now: f64) -> bool {
        now >= self.from
    }
}

/// The adversaries of a run and the honest nodes' defences.
pub(crate) struct Adversarial {
    /// The scenario's adversaries (none: honest peers only, under the same defences).
    pub(crate) config: Option<Adversaries>,
    /// By viewer: its role, if it is an adversary.
    pub(crate) roles: Vec<Option<Adversary>>,
    /// Adversaries so far.
    count: usize,
    scores: FxHashMap<u32, PeerScores<u32>>,
    /// (node, peer) pairs where the node banned the peer.
    banned: FxHashSet<(u32, u32)>,
    /// When each adversary first lied to each honest node: (node, adversary).
    first_lie: FxHashMap<(u32, u32), f64>,
    /// When each withholder began keeping blocks from each child, and kept the last one: the child counts as lied to
    /// once it has gone a segment's time without the stream from it (one that left sooner lost nothing worth a ban).
    withholding: FxHashMap<(u32, u32), (f64, f64)>,
    /// When each node banned each peer.
    ban_at: FxHashMap<(u32, u32), f64>,
    quotas: FxHashMap<(u32, u32, QuotaClass), Gcra>,
    /// When each bad-blocks adversary's uplink is free for its next junk block.
    junk_until: FxHashMap<u32, f64>,
    /// Identities admitted per (node, address).
    connections: FxHashMap<(u32, u32), u32>,
    admitted: FxHashSet<(u32, u32)>,
    refused: u64,
    /// Penalties given, by (whether the offender is honest, offence).
    penalties: BTreeMap<(bool, Offence), u64>,
    honest_banned: u64,
    /// Payload bytes honest receivers reported as unasked-for, by (sender, receiver).
    unsolicited: FxHashMap<(u32, u32), u64>,
}

impl Adversarial {
    pub(crate) fn new(config: Option<Adversaries>) -> Self {
        Self {
            config,
            roles: Vec::new(),
            count: 0,
            scores: FxHashMap::default(),
            banned: FxHashSet::default(),
            first_lie: FxHashMap::default(),
            withholding: FxHashMap::default(),
            ban_at: FxHashMap::default(),
            quotas: FxHashMap::default(),
            junk_until: FxHashMap::default(),
            connections: FxHashMap::default(),
            admitted: FxHashSet::default(),
            refused: 0,
            penalties: BTreeMap::new(),
            honest_banned: 0,
            unsolicited: FxHashMap::default(),
        }
    }

    /// Viewer `viewer` joined at `now`: makes it an adversary if the simulator drew it one, and returns its role.
    pub(crate) fn joined(&mut self, viewer: usize, adversary: Option<Behaviour>, now: f64) -> Option<Adversary> {
        if self.roles.len() <= viewer {
            self.roles.resize(viewer + 1, None);
        }
        let behaviour = adversary?;
        let from = now + self.config.as_ref()?.after_s;
        self.count += 1;
        let role = Adversary {
            behaviour,
            from,
            victim: None,
            sybils: 0,
        };
        self.roles[viewer] = Some(role);
        Some(role)
    }

    /// The adversary `peer` is, if it is one (sybil identities are their maker's).
    pub(crate) fn role(&self, peer: u32) -> Option<&Adversary> {
        if self.count == 0 {
            // No adversaries: spare honest runs the lookup (a cache miss per upload).
            return None;
        }
        let peer = if peer >= SYBIL_BASE {
            (peer - SYBIL_BASE) >> 16
        } else {
            peer
        };
        self.roles.get(peer as usize)?.as_ref()
    }

    /// Whether `peer` is honest (the broadcaster is).
    pub(crate) fn honest(&self, peer: u32) -> bool {
        self.role(peer).is_none()
    }

    /// Whether either of `a` and `b` banned the other: nothing passes between them.
    pub(crate) fn cut(&self, a: u32, b: u32) -> bool {
        !self.banned.is_empty() && (self.banned.contains(&(a, b)) || self.banned.contains(&(b, a)))
    }

    /// Whether bad-blocks adversary `adversary`'s uplink is free at `now` for a junk block that takes `send_s` on
    /// it (then it is busy that long).
    pub(crate) fn may_send_junk(&mut self, adversary: u32, now: f64, send_s: f64) -> bool {
        let until = self.junk_until.entry(adversary).or_insert(0.0);
        if *until > now {
            return false;
        }
        *until = now + send_s;
        true
    }

    /// An adversary lied to `victim` at `now` (the first lie to each victim is what ban delays count from).
    pub(crate) fn lied(&mut self, victim: u32, adversary: u32, at: f64) {
        if self.honest(victim) {
            self.first_lie.entry((victim, adversary)).or_insert(at);
        }
    }

    /// Withholder `adversary` kept a block from child `child` at `now` (see `withholding`; a pause longer than a
    /// segment ends a spell: the child had left).
    pub(crate) fn withheld(&mut self, child: u32, adversary: u32, now: f64, segment_s: f64) {
        let spell = self.withholding.entry((child, adversary)).or_insert((now, now));
        if now - spell.1 > segment_s {
            *spell = (now, now);
        }
        spell.1 = now;
        let start = spell.0;
        if now - start >= segment_s {
            self.lied(child, adversary, start);
        }
    }

    /// Honest node `node` penalises `offender`; returns whether that banned it (the caller then cuts them apart).
    pub(crate) fn penalise(&mut self, node: u32, offender: u32, offence: Offence, now: f64, block_bytes: u64) -> bool {
        if !self.honest(node) {
            return false;
        }
        let honest = self.honest(offender);
        *self.penalties.entry((honest, offence)).or_default() += 1;
        if honest && offence == Offence::Withholding && std::env::var_os("SIM_DEBUG").is_some() {
            eprintln!("{now:.3}: {node} blames honest {offender} for withholding");
        }
        if honest && offence == Offence::Unsolicited {
            *self.unsolicited.entry((offender, node)).or_default() += block_bytes;
        }
        let verdict = self
            .scores
            .entry(node)
            .or_insert_with(|| PeerScores::new(ScoreConfig::default()))
            .penalise(offender, offence, now);
        if verdict != Verdict::Banned {
            return false;
        }
        self.banned.insert((node, offender));
        self.ban_at.entry((node, offender)).or_insert(now);
        if honest {
            self.honest_banned += 1;
        }
        true
    }

    /// Whether `node` takes a message of `class` from `from` at `now`: its connection is admitted and the message is
    /// within `from`'s quota. Returns the offence to penalise when it is not.
    pub(crate) fn admit(&mut self, node: u32, from: u32, class: QuotaClass, now: f64) -> Result<(), Option<Offence>> {
        // Quotas cost a table lookup per message: kept in scenarios with adversaries, whose honest peers show whether
        // honest traffic stays within them.
        if self.config.is_none() {
            return Ok(());
        }
        if from >= SYBIL_BASE && !self.admitted.contains(&(node, from)) {
            let address = (from - SYBIL_BASE) >> 16;
            let open = self.connections.entry((node, address)).or_default();
            if *open >= limits::CONNECTIONS_PER_ADDRESS {
                self.refused += 1;
                return Err(None);
            }
            *open += 1;
            self.admitted.insert((node, from));
        }
        let flow = self.quotas.entry((node, from, class)).or_default();
        flow.check(now, 1.0, class.rate())
            .map_err(|_| Some(Offence::QuotaOverrun))
    }

    /// Forgets quota state at rest (it is the same as none), so that the table does not grow with the run.
    pub(crate) fn tidy(&mut self, now: f64) {
        self.quotas.retain(|_, flow| !flow.idle(now));
    }

    /// The honest peer adversary `adversary` floods at `now`: the same one for [`VICTIM_FOR_S`], then another of
    /// `present` (drawn with `pick`).
    pub(crate) fn victim(&mut self, adversary: u32, now: f64, pick: impl FnOnce() -> Option<u32>) -> Option<u32> {
        let role = self.roles.get_mut(adversary as usize)?.as_mut()?;
        if let Some((victim, until)) = role.victim
            && until > now
        {
            return Some(victim);
        }
        let victim = pick()?;
        role.victim = Some((victim, now + VICTIM_FOR_S));
        Some(victim)
    }

    /// A new identity of `adversary`'s.
    pub(crate) fn sybil(&mut self, adversary: u32) -> Option<u32> {
        let role = self.roles.get_mut(adversary as usize)?.as_mut()?;
        role.sybils = (role.sybils + 1) % (1 << 16);
        Some(SYBIL_BASE + (adversary << 16) + role.sybils)
    }

    /// The report's figures.
    pub(crate) fn figures(&self) -> AdversaryFigures {
        if std::env::var_os("SIM_DEBUG").is_some() {
            let mut unbanned: Vec<_> = self
                .first_lie
                .iter()
                .filter(|(p, _)| !self.ban_at.contains_key(p))
                .collect();
            unbanned.sort_by(|a, b| a.1.total_cmp(b.1));
            eprintln!(
                "unbanned (victim, adversary, first lie): {:?}",
                &unbanned[..unbanned.len().min(20)]
            );
        }
        let mut delays: Vec<f64> = self
            .first_lie
            .iter()
            .filter_map(|(pair, lie)| Some(self.ban_at.get(pair)? - lie))
            .map(|d| d.max(0.0))
            .collect();
        let banned = delays.len() as u64;
        let adversaries_banned: FxHashSet<u32> = self
            .ban_at
            .keys()
            .filter(|(_, offender)| !self.honest(*offender))
            .map(|(_, offender)| *offender)
            .collect();
        let by_offence = |honest: bool| -> BTreeMap<String, u64> {
            self.penalties
                .iter()
                .filter(|((h, _), _)| *h == honest)
                .map(|((_, offence), n)| (offence.name().to_owned(), *n))
                .collect()
        };
        AdversaryFigures {
            adversaries: self.count as u32,
            lied_to: self.first_lie.len() as u64,
            banned,
            adversaries_banned: adversaries_banned.len() as u32,
            ban_delay_p50_s: quantile(&mut delays, 0.5),
            ban_delay_p95_s: quantile(&mut delays, 0.95),
            ban_delay_max_s: delays.iter().copied().reduce(f64::max),
            unsolicited_max_bytes: self.unsolicited.values().copied().max().unwrap_or(0),
            unsolicited_total_bytes: self.unsolicited.values().sum(),
            connections_refused: self.refused,
            penalties: by_offence(false),
            honest_penalised: by_offence(true),
            honest_banned: self.honest_banned,
            honest_processes_died: None,
        }
    }
}
