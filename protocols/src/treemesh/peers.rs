//! What a peer knows about the others of its stream: a small, bounded table.

use super::message::Advert;

/// Peers remembered at most; the least recently heard of that is neither parent, child nor neighbour goes first.
pub const MAX_KNOWN: usize = 32;

/// A time that may be unknown, in the eight bytes of an `f64` (NaN when unknown): the table is scanned whole on
/// many inputs, and an `Option<f64>` takes sixteen.
#[derive(Clone, Copy, Debug)]
pub(super) struct OptTime(f64);

impl OptTime {
    /// Unknown.
    pub(super) const NONE: Self = Self(f64::NAN);

    /// A known time (never NaN: times are sums and differences of finite clock readings).
    pub(super) fn some(t: f64) -> Self {
        debug_assert!(!t.is_nan());
        Self(t)
    }

    pub(super) fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }

    pub(super) fn is_some(self) -> bool {
        !self.0.is_nan()
    }

    pub(super) fn is_none(self) -> bool {
        self.0.is_nan()
    }

    pub(super) fn take(&mut self) -> Option<f64> {
        std::mem::replace(self, Self::NONE).get()
    }
}

/// A segment number that may be unknown, in eight bytes (`u64::MAX` when unknown, a number no stream reaches), for
/// the same reason.
#[derive(Clone, Copy, Debug)]
pub(super) struct OptSeq(u64);

impl OptSeq {
    /// Unknown.
    pub(super) const NONE: Self = Self(u64::MAX);

    pub(super) fn some(seq: u64) -> Self {
        Self(seq.min(u64::MAX - 1))
    }

    pub(super) fn get(self) -> Option<u64> {
        (self.0 != u64::MAX).then_some(self.0)
    }
}

impl From<Option<u64>> for OptSeq {
    fn from(seq: Option<u64>) -> Self {
        seq.map_or(Self::NONE, Self::some)
    }
}

/// One known peer.
#[derive(Clone, Debug)]
pub(super) struct Known<P> {
    pub(super) id: P,
    pub(super) reachable: bool,
    /// One-way latency, half the measured round trip.
    pub(super) latency: OptTime,
    /// Hops from the root of its tree (`None` until it advertised).
    pub(super) depth: Option<u8>,
    /// Whether its tree's root is the broadcaster.
    pub(super) rooted: bool,
    pub(super) backbone: bool,
    pub(super) spare: u32,
    /// Children not in the backbone (a backbone peer may take their slot).
    pub(super) leaves: u32,
    /// It refused a pull: do not ask again before this time.
    pub(super) busy_until: f64,
    /// Newest and oldest segment it holds whole.
    pub(super) newest: OptSeq,
    pub(super) oldest: OptSeq,
    /// A mesh neighbour.
    pub(super) mesh: bool,
    /// A probe or mesh request sent at this time is unanswered.
    pub(super) asked_at: OptTime,
    /// Pulls from it in flight.
    pub(super) pulls: u8,
    /// Refusals and timeouts lately: prefer others.
    pub(super) strikes: u8,
    /// An attach to it failed: do not try it again before this time.
    pub(super) not_before: f64,
    /// It has sent us a block we pulled from it: it uploads (evidence, where its adverts are only words).
    pub(super) served: bool,
    pub(super) seen: f64,
}

impl<P: Copy> Known<P> {
    pub(super) fn new(id: P, reachable: bool, now: f64) -> Self {
        Self {
            id,
            reachable,
            latency: OptTime::NONE,
            depth: None,
            rooted: false,
            backbone: false,
            spare: 0,
            leaves: 0,
            busy_until: 0.0,
            newest: OptSeq::NONE,
            oldest: OptSeq::NONE,
            mesh: false,
            asked_at: OptTime::NONE,
            pulls: 0,
            strikes: 0,
            not_before: 0.0,
            served: false,
            seen: now,
        }
    }

    pub(super) fn apply(&mut self, advert: &Advert<P>, now: f64) {
        self.depth = Some(advert.depth().min(255) as u8);
        self.rooted = advert.rooted;
        self.backbone = advert.backbone;
        self.spare = advert.spare_slots;
        self.leaves = advert.leaf_children;
        self.reachable = advert.reachable;
        self.newest = OptSeq::from(advert.newest);
        self.oldest = OptSeq::from(advert.oldest);
        self.seen = now;
    }

    /// Whether it is the broadcaster (the root of the tree): never forgotten, it is where every descent starts.
    pub(super) fn is_root(&self) -> bool {
        self.rooted && self.depth == Some(0)
    }

    /// Whether it holds segment `seq` whole, as far as we know.
    pub(super) fn holds(&self, seq: u64) -> bool {
        // Both ends must be known. An unknown end is `u64::MAX`, above every segment number: an unknown oldest fails
        // the first test by itself, an unknown newest would pass the second, hence the third.
        let (o, n) = (self.oldest.0, self.newest.0);
        o <= seq && seq <= n && n != OptSeq::NONE.0
    }
}

/// The table.
#[derive(Clone, Debug)]
pub(super) struct Peers<P> {
    pub(super) list: Vec<Known<P>>,
    /// The entries' ids, in the same order: looking a peer up (on every message) reads these few bytes instead of
    /// walking the entries, a hundred bytes each.
    ids: Vec<P>,
}

impl<P> Default for Peers<P> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            ids: Vec::new(),
        }
    }
}

impl<P: Copy + Eq> Peers<P> {
    /// The entries' ids, in table order.
    pub(super) fn ids(&self) -> &[P] {
        &self.ids
    }

    pub(super) fn get_mut(&mut self, id: P) -> Option<&mut Known<P>> {
        let i = self.ids.iter().position(|k| *k == id)?;
        Some(&mut self.list[i])
    }

    /// The entry for `id`, made when new (evicting a stale one when full; `None` if every entry is in use).
    pub(super) fn entry(
        &mut self,
        id: P,
        reachable: bool,
        now: f64,
        pinned: impl Fn(P) -> bool,
    ) -> Option<&mut Known<P>> {
        if let Some(i) = self.ids.iter().position(|k| *k == id) {
            return Some(&mut self.list[i]);
        }
        if self.list.len() >= MAX_KNOWN {
            let victim = self
                .list
                .iter()
                .enumerate()
                .filter(|(_, k)| !k.mesh && k.pulls == 0 && !k.is_root() && !pinned(k.id))
                .min_by(|a, b| a.1.seen.total_cmp(&b.1.seen))
                .map(|(i, _)| i)?;
            self.list.swap_remove(victim);
            self.ids.swap_remove(victim);
        }
        self.list.push(Known::new(id, reachable, now));
        self.ids.push(id);
        self.list.last_mut()
    }

    pub(super) fn remove(&mut self, id: P) {
        if let Some(i) = self.ids.iter().position(|k| *k == id) {
            // In order, as a retain would: the order of the table decides ties elsewhere.
            self.list.remove(i);
            self.ids.remove(i);
        }
    }

    pub(super) fn mesh(&self) -> impl Iterator<Item = &Known<P>> {
        self.list.iter().filter(|k| k.mesh)
    }
}
