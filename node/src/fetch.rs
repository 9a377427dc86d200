//! What a viewer still needs of a stream, and from whom to ask it: a small scheduler without IO.
//!
//! Entries arrive (announced on gossipsub or in manifest responses) and become pending segments from the join point
//! on; peers say which segments they hold whole (HAVE). For every missing block the scheduler picks a peer that holds
//! the segment, is below its request cap and has not already failed that block, preferring other viewers over the
//! broadcaster so the broadcaster's uplink feeds the first copies and viewers spread the rest. A segment that waits
//! too long for peers is due for the HTTP origin. This is the simple first-generation scheduler; the hybrid
//! tree-mesh replaces it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::PeerId;
use rand::seq::IndexedRandom;
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::manifest::{SequenceWindow, SignedManifestEntry};
use streamrp2p_protocols::segment::{BlockError, SegmentAssembly};
use streamrp2p_protocols::stream::SignedStreamInfo;

/// How far behind and ahead of the newest entry entries are accepted: a live window of 2-second segments
/// (60 s = 30) with room to spare behind, and a few segments of clock and path skew ahead.
const WINDOW_BEHIND: u64 = 64;
const WINDOW_AHEAD: u64 = 8;
/// Retry delay after a failed origin fetch.
const ORIGIN_RETRY: Duration = Duration::from_secs(2);

/// A block to ask a peer for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockAsk {
    pub(crate) peer: PeerId,
    pub(crate) seq: u64,
    pub(crate) index: usize,
    pub(crate) cid: Cid,
}

/// A segment still being put together.
#[derive(Debug)]
struct Pending {
    entry: SignedManifestEntry,
    assembly: SegmentAssembly,
    since: Instant,
    in_flight: HashSet<usize>,
    /// Peers that failed a block (bad, timed out, don't have), not asked for it again.
    failed: HashMap<usize, HashSet<PeerId>>,
    origin_in_flight: bool,
    origin_not_before: Instant,
    /// Before this, the broadcaster is asked only when no other viewer is known (see [`StreamFetch::next_asks`]).
    broadcaster_not_before: Instant,
}

/// A viewer's download state for one stream.
#[derive(Debug)]
pub(crate) struct StreamFetch {
    pub(crate) info: Option<SignedStreamInfo>,
    window: SequenceWindow,
    /// First sequence number to fetch; set by the first entries seen.
    start: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    have: HashMap<PeerId, BTreeSet<u64>>,
    /// When the newest entry arrived.
    pub(crate) last_entry_at: Option<Instant>,
    /// Whether this node announced itself as a provider of the stream yet.
    pub(crate) providing: bool,
}

/// A segment put together whole and verified.
pub(crate) struct Completed {
    pub(crate) entry: SignedManifestEntry,
    pub(crate) data: Bytes,
}

impl StreamFetch {
    pub(crate) fn new() -> Self {
        Self {
            info: None,
            window: SequenceWindow::new(WINDOW_BEHIND, WINDOW_AHEAD),
            start: None,
            pending: BTreeMap::new(),
            have: HashMap::new(),
            last_entry_at: None,
            providing: false,
        }
    }

    /// The join point, once known.
    pub(crate) fn start(&self) -> Option<u64> {
        self.start
    }

    /// Takes verified entries; those at or after the join point and not yet held become pending. The first batch
    /// sets the join point `backlog` segments behind its newest entry. Entries outside the sequence window are
    /// skipped (an honest peer may still hold old ones). Returns the newly pending sequence numbers.
    pub(crate) fn on_entries(
        &mut self,
        entries: Vec<SignedManifestEntry>,
        backlog: u64,
        holdoff: Duration,
        held: impl Fn(u64) -> bool,
        now: Instant,
    ) -> Vec<u64> {
        let Some(newest) = entries.iter().map(|e| e.entry().seq).max() else {
            return Vec::new();
        };
        let start = *self
            .start
            .get_or_insert(newest.saturating_sub(backlog.saturating_sub(1)));
        let mut added = Vec::new();
        for entry in entries {
            let seq = entry.entry().seq;
            if let Err(error) = self.window.admit(seq) {
                tracing::debug!(%error, "entry skipped");
                continue;
            }
            if seq < start || held(seq) || self.pending.contains_key(&seq) {
                continue;
            }
            self.last_entry_at = Some(now);
            self.pending.insert(
                seq,
                Pending {
                    assembly: SegmentAssembly::new(entry.entry().clone()),
                    entry,
                    since: now,
                    in_flight: HashSet::new(),
                    failed: HashMap::new(),
                    origin_in_flight: false,
                    origin_not_before: now,
                    broadcaster_not_before: now + holdoff.mul_f64(rand::random::<f64>()),
                },
            );
            added.push(seq);
        }
        // Segments that fell out of the window will never be played.
        let low = newest.saturating_sub(WINDOW_BEHIND);
        self.pending.retain(|&seq, _| seq >= low);
        added
    }

    /// `peer` holds these segments whole.
    pub(crate) fn on_have(&mut self, peer: PeerId, seqs: impl IntoIterator<Item = u64>) {
        let low = self.window.newest().map_or(0, |n| n.saturating_sub(WINDOW_BEHIND));
        let set = self.have.entry(peer).or_default();
        set.extend(seqs.into_iter().filter(|&s| s >= low));
        // Keep each peer's set within the window.
        *set = set.split_off(&low);
    }

    /// Forgets everything `peer` said (it left or was banned).
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        self.have.remove(peer);
    }

    /// Peers known to hold part of this stream.
    pub(crate) fn known_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.have.keys()
    }

    /// A peer was asked about the stream: until it answers, it counts as a viewer that may soon hold segments.
    pub(crate) fn on_asked(&mut self, peer: PeerId) {
        self.have.entry(peer).or_default();
    }

    /// Picks peers for missing blocks, oldest segment first. `load` counts requests in flight per peer and is updated
    /// with the picks; `usable` says whether a peer may be asked now (connected, not banned).
    ///
    /// When other viewers are known, a segment that only the broadcaster holds waits a random part of the holdoff
    /// before the broadcaster is asked: the viewer whose wait ends first takes the broadcaster's copy, and the others
    /// hear its HAVE meanwhile and take theirs from it. That keeps the broadcaster's uplink for first copies.
    pub(crate) fn next_asks(
        &mut self,
        now: Instant,
        broadcaster: Option<PeerId>,
        load: &mut HashMap<PeerId, usize>,
        max_per_peer: usize,
        usable: impl Fn(&PeerId) -> bool,
    ) -> Vec<BlockAsk> {
        let mut asks = Vec::new();
        let mut rng = rand::rng();
        let other_viewers = self.have.keys().any(|p| Some(*p) != broadcaster && usable(p));
        for (&seq, pending) in &mut self.pending {
            let holders: Vec<PeerId> = self
                .have
                .iter()
                .filter(|(peer, seqs)| seqs.contains(&seq) && usable(peer))
                .map(|(peer, _)| *peer)
                .collect();
            let missing: Vec<(usize, Cid)> = pending
                .assembly
                .missing()
                .filter(|(i, _)| !pending.in_flight.contains(i))
                .collect();
            for (index, cid) in missing {
                let failed = pending.failed.get(&index);
                let eligible: Vec<PeerId> = holders
                    .iter()
                    .filter(|p| failed.is_none_or(|f| !f.contains(p)))
                    .filter(|p| load.get(p).copied().unwrap_or(0) < max_per_peer)
                    .copied()
                    .collect();
                // Viewers first; the broadcaster only when no viewer can serve the block.
                let viewers: Vec<PeerId> = eligible.iter().filter(|p| Some(**p) != broadcaster).copied().collect();
                if viewers.is_empty() && other_viewers && now < pending.broadcaster_not_before {
                    continue;
                }
                let pool = if viewers.is_empty() { &eligible } else { &viewers };
                let least = pool.iter().map(|p| load.get(p).copied().unwrap_or(0)).min();
                let lightest: Vec<PeerId> = pool
                    .iter()
                    .filter(|p| Some(load.get(p).copied().unwrap_or(0)) == least)
                    .copied()
                    .collect();
                let Some(&peer) = lightest.choose(&mut rng) else {
                    continue;
                };
                *load.entry(peer).or_default() += 1;
                pending.in_flight.insert(index);
                asks.push(BlockAsk { peer, seq, index, cid });
            }
        }
        asks
    }

    /// A block arrived from `peer`. Returns the whole segment when this was its last block.
    pub(crate) fn on_block(&mut self, seq: u64, index: usize, data: Bytes) -> Result<Option<Completed>, BlockError> {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return Ok(None);
        };
        pending.in_flight.remove(&index);
        let cid = pending.entry.entry().blocks[index];
        pending.assembly.insert(&cid, data)?;
        Ok(self.take_if_complete(seq))
    }

    /// Fills blocks this node already holds (the same bytes in another segment) from `lookup`.
    pub(crate) fn fill_local(&mut self, seq: u64, lookup: impl Fn(&Cid) -> Option<Bytes>) -> Option<Completed> {
        let pending = self.pending.get_mut(&seq)?;
        let local: Vec<(Cid, Bytes)> = pending
            .assembly
            .missing()
            .filter_map(|(_, cid)| lookup(&cid).map(|b| (cid, b)))
            .collect();
        for (cid, data) in local {
            // Bytes from our own store were verified when they arrived.
            let _ = pending.assembly.insert(&cid, data);
        }
        self.take_if_complete(seq)
    }

    /// A block request failed: ask someone else. `dont_have` also drops the segment from the peer's HAVE set.
    pub(crate) fn on_ask_failed(&mut self, ask: &BlockAsk, dont_have: bool) {
        if let Some(pending) = self.pending.get_mut(&ask.seq) {
            pending.in_flight.remove(&ask.index);
            pending.failed.entry(ask.index).or_default().insert(ask.peer);
        }
        if dont_have && let Some(seqs) = self.have.get_mut(&ask.peer) {
            seqs.remove(&ask.seq);
        }
    }

    /// Segments due for the origin: waiting longer than `after`, or with no peer left to ask, and not being fetched
    /// from it already. Marks them as being fetched.
    pub(crate) fn origin_due(&mut self, now: Instant, after: Duration, usable: impl Fn(&PeerId) -> bool) -> Vec<u64> {
        let mut due = Vec::new();
        for (&seq, pending) in &mut self.pending {
            if pending.origin_in_flight || now < pending.origin_not_before {
                continue;
            }
            let stranded = pending.in_flight.is_empty()
                && !self.have.iter().any(|(peer, seqs)| {
                    seqs.contains(&seq)
                        && usable(peer)
                        && pending
                            .assembly
                            .missing()
                            .any(|(i, _)| pending.failed.get(&i).is_none_or(|f| !f.contains(peer)))
                });
            let stranded_long = stranded && now.duration_since(pending.since) >= Duration::from_secs(1);
            if stranded_long || now.duration_since(pending.since) >= after {
                pending.origin_in_flight = true;
                due.push(seq);
            }
        }
        due
    }

    /// The origin's answer for segment `seq`: its blocks, already checked against the entry by the caller.
    /// Returns the whole segment and the bytes that were still missing (what the origin contributed).
    pub(crate) fn on_origin(
        &mut self,
        seq: u64,
        blocks: Option<Vec<(Cid, Bytes)>>,
        now: Instant,
    ) -> Option<(Completed, u64)> {
        let pending = self.pending.get_mut(&seq)?;
        pending.origin_in_flight = false;
        let Some(blocks) = blocks else {
            pending.origin_not_before = now + ORIGIN_RETRY;
            return None;
        };
        let mut contributed = 0;
        for (cid, data) in blocks {
            let len = data.len() as u64;
            if pending.assembly.insert(&cid, data).unwrap_or(false) {
                contributed += len;
            }
        }
        self.take_if_complete(seq).map(|c| (c, contributed))
    }

    /// The entry of a pending segment.
    pub(crate) fn pending_entry(&self, seq: u64) -> Option<&SignedManifestEntry> {
        self.pending.get(&seq).map(|p| &p.entry)
    }

    fn take_if_complete(&mut self, seq: u64) -> Option<Completed> {
        if !self.pending.get(&seq)?.assembly.is_complete() {
            return None;
        }
        let pending = self.pending.remove(&seq)?;
        match pending.assembly.finish() {
            Ok(data) => Some(Completed {
                entry: pending.entry,
                data,
            }),
            Err(error) => {
                // Every block matched its CID, so the signed entry itself is inconsistent: nothing to retry.
                tracing::warn!(seq, %error, "segment does not match its signed manifest entry; dropped");
                None
            }
        }
    }
}
