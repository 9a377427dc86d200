//! One stream's part in the hybrid tree-mesh on this node.
//!
//! The decisions — who is whose parent, who pushes which block to whom, what is pulled from which neighbour, when the
//! HTTP origin is asked — are made by [`TreeMesh`], the sans-io state machine the simulator runs too. What it does
//! not hold lives here: the signed manifest entries that say what every block of a segment must be, the bytes of
//! the segments being put together, blocks that arrived before their entry, and the virtual player's record. Nothing
//! here does IO: the service's event loop feeds it and carries out the machine's outputs.

mod player;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use libp2p::PeerId;
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::manifest::{SequenceWindow, SignedManifestEntry};
use streamrp2p_protocols::score::Offence;
use streamrp2p_protocols::segment::{BLOCK_SIZE, BlockError, SegmentAssembly};
use streamrp2p_protocols::stream::SignedStreamInfo;
use streamrp2p_protocols::treemesh::{BlockSource, SegmentInfo, TreeMesh};

pub(crate) use self::player::PlayerLog;

/// How far behind and ahead of the newest entry entries are accepted: a live window of 2-second segments
/// (60 s = 30) with room to spare behind, and a few segments of clock and path skew ahead.
const WINDOW_BEHIND: u64 = 64;
const WINDOW_AHEAD: u64 = 8;
/// Blocks kept that came before their segment's entry (a push can overtake the announcement): two segments of
/// 2.5 Mbit/s video.
const MAX_EARLY_BLOCKS: usize = 24;
/// Of those, at most this many from one sender (a parent pushes a segment's blocks ahead of its entry; nobody has
/// reason to send more), so that no peer can push out the others' with blocks of its own.
const MAX_EARLY_PER_SENDER: usize = 12;

/// Peers of a stream remembered before joining: the DHT's providers and the peers that spoke about it, enough to
/// probe and pull the first segment from.
const MAX_CANDIDATES: usize = 64;

/// A block that came before the entry it belongs to, kept until the entry arrives.
#[derive(Debug)]
pub(crate) struct EarlyBlock {
    pub(crate) from: BlockSource<PeerId>,
    pub(crate) segment: SegmentInfo,
    pub(crate) index: u16,
    pub(crate) data: Bytes,
}

/// What became of a block handed to [`StreamMesh::take_block`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// It was new, and is kept.
    New,
    /// It was held already (its bytes are duplicates).
    Duplicate,
    /// Its entry is not known yet: kept aside (see [`StreamMesh::take_early`]).
    Early,
    /// Its segment is behind the window: dropped.
    Stale,
}

/// Why a block was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadBlock {
    /// The bytes do not match the block's CID.
    #[error(transparent)]
    Cid(#[from] BlockError),
    /// The frame says a size the signed entry does not.
    #[error("segment {seq} has {signed} bytes, the frame says {said}")]
    Size { seq: u64, signed: u64, said: u32 },
    /// The index is beyond the segment's blocks.
    #[error("segment {seq} has no block {index}")]
    Index { seq: u64, index: u16 },
    /// The segment is further ahead of the newest signed entry than an announcement can be late: no such segment
    /// can have been made yet.
    #[error("segment {seq} is ahead of any signed entry (the newest is {newest})")]
    Unannounced { seq: u64, newest: u64 },
}

impl BadBlock {
    /// What sending it says of the sender.
    pub(crate) fn offence(&self) -> Offence {
        match self {
            BadBlock::Unannounced { .. } => Offence::Lie,
            _ => Offence::BadBlock,
        }
    }
}

/// One stream on this node: the machine and the data it decides about.
pub(crate) struct StreamMesh {
    /// The stream's signed description, once known.
    pub(crate) info: Option<SignedStreamInfo>,
    /// The tree-mesh machine: a viewer's from when it joins (it has the info and the newest entries), the
    /// broadcaster's from its first segment (which gives the bitrate).
    pub(crate) machine: Option<TreeMesh<PeerId>>,
    entries: BTreeMap<u64, SignedManifestEntry>,
    window: SequenceWindow,
    assemblies: BTreeMap<u64, SegmentAssembly>,
    early: VecDeque<EarlyBlock>,
    /// Peers of the stream found before joining (DHT providers, manifest responders), at most
    /// [`MAX_CANDIDATES`]: see [`StreamMesh::add_candidate`].
    candidates: BTreeSet<PeerId>,
    /// When the newest entry arrived.
    pub(crate) last_entry_at: Option<Instant>,
    /// Whether this node announced itself as a provider of the stream yet.
    pub(crate) providing: bool,
    /// The virtual player's record.
    pub(crate) player: PlayerLog,
    /// Payload bytes received for blocks already held.
    pub(crate) duplicate_bytes: u64,
}

impl StreamMesh {
    /// A stream this node starts watching or broadcasting at `now_s` (the node's clock).
    pub(crate) fn new(info: Option<SignedStreamInfo>, now_s: f64) -> Self {
        Self {
            info,
            machine: None,
            entries: BTreeMap::new(),
            window: SequenceWindow::new(WINDOW_BEHIND, WINDOW_AHEAD),
            assemblies: BTreeMap::new(),
            early: VecDeque::new(),
            candidates: BTreeSet::new(),
            last_entry_at: None,
            providing: false,
            player: PlayerLog::new(now_s),
            duplicate_bytes: 0,
        }
    }

    /// Remembers a peer of the stream, unless [`MAX_CANDIDATES`] are known already; returns whether it is new.
    pub(crate) fn add_candidate(&mut self, peer: PeerId) -> bool {
        self.candidates.len() < MAX_CANDIDATES && self.candidates.insert(peer)
    }

    /// Forgets a peer of the stream.
    pub(crate) fn remove_candidate(&mut self, peer: &PeerId) {
        self.candidates.remove(peer);
    }

    /// The peers of the stream known.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = &PeerId> {
        self.candidates.iter()
    }

    /// Keeps a verified entry; returns the segment when it is new and inside the window.
    pub(crate) fn add_entry(&mut self, entry: SignedManifestEntry, now: Instant) -> Option<SegmentInfo> {
        let seq = entry.entry().seq;
        if self.entries.contains_key(&seq) {
            return None;
        }
        if let Err(error) = self.window.admit(seq) {
            tracing::debug!(%error, "entry skipped");
            return None;
        }
        let info = segment_info(&entry);
        self.entries.insert(seq, entry);
        self.last_entry_at = Some(now);
        // Entries and partial segments that fell out of the window will never be played or served.
        let low = self.window.newest().unwrap_or(0).saturating_sub(WINDOW_BEHIND);
        self.entries = self.entries.split_off(&low);
        self.assemblies = self.assemblies.split_off(&low);
        Some(info)
    }

    /// The entry of segment `seq`, if known.
    pub(crate) fn entry(&self, seq: u64) -> Option<&SignedManifestEntry> {
        self.entries.get(&seq)
    }

    /// The newest `n` entries known, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<SegmentInfo> {
        let mut tail: Vec<SegmentInfo> = self.entries.values().rev().take(n).map(segment_info).collect();
        tail.reverse();
        tail
    }

    /// The stream's bitrate in bytes per second and its segment duration in seconds, from the entries known: the
    /// median segment's. The first segment of an encode runs large (parameter sets, a fuller first keyframe), so it
    /// counts only while it is the only one; a median, not a mean, so that one odd segment does not resize every
    /// peer's child slots.
    pub(crate) fn rates(&self) -> Option<(f64, f64)> {
        let mut rates: Vec<(f64, f64)> = self
            .entries
            .values()
            .map(SignedManifestEntry::entry)
            .filter(|e| e.seq > 0 || self.entries.len() == 1)
            .map(|e| {
                let secs = e.duration.as_secs_f64();
                (if secs > 0.0 { e.size as f64 / secs } else { 0.0 }, secs)
            })
            .filter(|(rate, _)| *rate > 0.0)
            .collect();
        if rates.is_empty() {
            return None;
        }
        rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(rates[rates.len() / 2])
    }

    /// The CID block `index` of segment `seq` must match.
    pub(crate) fn block_cid(&self, seq: u64, index: u16) -> Option<Cid> {
        self.entries.get(&seq)?.entry().blocks.get(usize::from(index)).copied()
    }

    /// A block of a segment still being put together.
    pub(crate) fn partial_block(&self, seq: u64, cid: &Cid) -> Option<Bytes> {
        self.assemblies.get(&seq)?.block(cid).cloned()
    }

    /// Verifies a block against its entry and keeps it. A block whose entry is not known yet is kept aside (up to
    /// [`MAX_EARLY_BLOCKS`], the oldest dropped first).
    pub(crate) fn take_block(
        &mut self,
        from: BlockSource<PeerId>,
        segment: SegmentInfo,
        index: u16,
        data: Bytes,
        held_whole: bool,
    ) -> Result<Taken, BadBlock> {
        let seq = segment.seq;
        let Some(entry) = self.entries.get(&seq) else {
            if let Some(newest) = self.window.newest() {
                if seq > newest.saturating_add(WINDOW_AHEAD) {
                    return Err(BadBlock::Unannounced { seq, newest });
                }
                if seq < newest.saturating_sub(WINDOW_BEHIND) {
                    return Ok(Taken::Stale);
                }
            }
            let from_sender = self.early.iter().filter(|b| b.from == from).count();
            if from_sender >= MAX_EARLY_PER_SENDER {
                let oldest = self.early.iter().position(|b| b.from == from).expect("counted above");
                self.early.remove(oldest);
            } else if self.early.len() >= MAX_EARLY_BLOCKS {
                self.early.pop_front();
            }
            self.early.push_back(EarlyBlock {
                from,
                segment,
                index,
                data,
            });
            return Ok(Taken::Early);
        };
        let entry = entry.entry();
        if entry.size != u64::from(segment.bytes) {
            return Err(BadBlock::Size {
                seq,
                signed: entry.size,
                said: segment.bytes,
            });
        }
        let cid = *entry
            .blocks
            .get(usize::from(index))
            .ok_or(BadBlock::Index { seq, index })?;
        if held_whole {
            streamrp2p_protocols::segment::verify_block(&cid, &data)?;
            return Ok(Taken::Duplicate);
        }
        let assembly = self
            .assemblies
            .entry(seq)
            .or_insert_with(|| SegmentAssembly::new(entry.clone()));
        Ok(if assembly.insert(&cid, data)? {
            Taken::New
        } else {
            Taken::Duplicate
        })
    }

    /// The blocks kept aside for segment `seq`, now that its entry is known.
    pub(crate) fn take_early(&mut self, seq: u64) -> Vec<EarlyBlock> {
        let (now, later): (Vec<EarlyBlock>, Vec<EarlyBlock>) = std::mem::take(&mut self.early)
            .into_iter()
            .partition(|b| b.segment.seq == seq);
        self.early = later.into();
        now
    }

    /// Segment `seq` put together whole, with its entry; `None` when some block is missing or the blocks do not add
    /// up to the signed root (then the entry itself is inconsistent, and the segment is dropped).
    pub(crate) fn finish(&mut self, seq: u64) -> Option<(SignedManifestEntry, Bytes)> {
        let assembly = self.assemblies.remove(&seq)?;
        let entry = self.entries.get(&seq)?.clone();
        match assembly.finish() {
            Ok(data) => Some((entry, data)),
            Err(error) => {
                tracing::warn!(seq, %error, "segment does not match its signed manifest entry; dropped");
                None
            }
        }
    }
}

/// What the tree-mesh needs to know of a segment.
pub(crate) fn segment_info(entry: &SignedManifestEntry) -> SegmentInfo {
    SegmentInfo {
        seq: entry.entry().seq,
        bytes: u32::try_from(entry.entry().size).unwrap_or(u32::MAX),
    }
}

/// The bytes of block `index` of a segment of `size` bytes.
pub(crate) fn block_range(size: u64, index: u16) -> (u64, u64) {
    let start = u64::from(index) * BLOCK_SIZE as u64;
    (start, (start + BLOCK_SIZE as u64).min(size))
}
