//! The bounded in-memory store of each stream's live window, and the content-addressed blocks it serves to peers.
//!
//! A stream keeps its newest whole segments up to the configured window (duration) and byte limit; older ones are
//! evicted as new ones arrive, so memory stays flat however long a stream runs. Blocks are indexed by CID with a
//! reference count, because the same bytes may occur in more than one segment (a looped clip, a static slate) and
//! are stored once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::manifest::SignedManifestEntry;
use streamrp2p_protocols::stream::{SignedStreamInfo, StreamId};

use crate::playlist::PlayableRange;

/// What this node does for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It publishes the stream.
    Broadcaster,
    /// It watches the stream and relays it to others.
    Viewer,
}

/// A whole, verified segment.
#[derive(Clone, Debug)]
pub(crate) struct StoredSegment {
    pub(crate) entry: SignedManifestEntry,
    pub(crate) data: Bytes,
}

/// Counts of one stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) segments: u64,
    pub(crate) from_peers: u64,
    pub(crate) from_origin: u64,
    pub(crate) uploaded: u64,
    pub(crate) entries_from_topic: u64,
    pub(crate) entries_from_manifests: u64,
}

/// One stream's window.
#[derive(Debug)]
pub(crate) struct StreamStore {
    pub(crate) info: Option<SignedStreamInfo>,
    pub(crate) role: Role,
    pub(crate) segments: BTreeMap<u64, StoredSegment>,
    pub(crate) counters: Counters,
    pub(crate) playable: PlayableRange,
    /// The stream's tree-mesh figures, once it has joined.
    pub(crate) mesh: Option<crate::status::MeshView>,
    held_bytes: u64,
}

impl StreamStore {
    /// Duration of the segments held.
    fn held_duration(&self) -> Duration {
        self.segments.values().map(|s| s.entry.entry().duration).sum()
    }
}

/// Every stream's window, and the blocks they hold.
#[derive(Debug)]
pub(crate) struct Store {
    streams: HashMap<StreamId, StreamStore>,
    blocks: HashMap<Cid, (Bytes, usize, StreamId)>,
    window: Duration,
    max_stream_bytes: u64,
}

impl Store {
    pub(crate) fn new(window: Duration, max_stream_bytes: u64) -> Self {
        Self {
            streams: HashMap::new(),
            blocks: HashMap::new(),
            window,
            max_stream_bytes,
        }
    }

    /// Starts keeping a stream.
    pub(crate) fn add_stream(&mut self, id: StreamId, role: Role, info: Option<SignedStreamInfo>) {
        self.streams.entry(id).or_insert_with(|| StreamStore {
            info,
            role,
            segments: BTreeMap::new(),
            counters: Counters::default(),
            playable: PlayableRange::default(),
            mesh: None,
            held_bytes: 0,
        });
    }

    pub(crate) fn stream(&self, id: &StreamId) -> Option<&StreamStore> {
        self.streams.get(id)
    }

    pub(crate) fn stream_mut(&mut self, id: &StreamId) -> Option<&mut StreamStore> {
        self.streams.get_mut(id)
    }

    pub(crate) fn streams(&self) -> impl Iterator<Item = (&StreamId, &StreamStore)> {
        self.streams.iter()
    }

    /// Whether the segment is held whole.
    pub(crate) fn has_segment(&self, id: &StreamId, seq: u64) -> bool {
        self.streams.get(id).is_some_and(|s| s.segments.contains_key(&seq))
    }

    /// A block by CID, with the stream it was stored for.
    pub(crate) fn block(&self, cid: &Cid) -> Option<(&Bytes, StreamId)> {
        self.blocks.get(cid).map(|(b, _, s)| (b, *s))
    }

    /// Keeps a whole, verified segment, then evicts what falls out of the window. `now` moves the playable range.
    pub(crate) fn insert(&mut self, entry: SignedManifestEntry, data: Bytes, now: Instant) {
        let e = entry.entry();
        let (stream_id, seq) = (e.stream, e.seq);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if stream.segments.contains_key(&seq) {
            return;
        }
        let mut offset = 0;
        for cid in &e.blocks {
            let len = (data.len() - offset).min(streamrp2p_protocols::segment::BLOCK_SIZE);
            let block = data.slice(offset..offset + len);
            offset += len;
            self.blocks.entry(*cid).or_insert_with(|| (block, 0, stream_id)).1 += 1;
        }
        stream.held_bytes += data.len() as u64;
        stream.segments.insert(seq, StoredSegment { entry, data });
        self.evict(&stream_id);
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.playable.advance(&stream.segments, now);
        }
    }

    fn evict(&mut self, stream_id: &StreamId) {
        let Some(stream) = self.streams.get_mut(stream_id) else {
            return;
        };
        while stream.segments.len() > 1
            && (stream.held_duration() > self.window || stream.held_bytes > self.max_stream_bytes)
        {
            let Some((_, old)) = stream.segments.pop_first() else {
                break;
            };
            stream.held_bytes -= old.data.len() as u64;
            for cid in &old.entry.entry().blocks {
                if let Some(slot) = self.blocks.get_mut(cid) {
                    slot.1 -= 1;
                    if slot.1 == 0 {
                        self.blocks.remove(cid);
                    }
                }
            }
        }
    }

    /// Bytes held across all streams, blocks counted once.
    #[cfg(test)]
    pub(crate) fn block_bytes(&self) -> usize {
        self.blocks.values().map(|(b, _, _)| b.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use streamrp2p_protocols::Keypair;
    use streamrp2p_protocols::manifest::ManifestEntry;
    use streamrp2p_protocols::segment::split;

    use super::*;

    #[test]
    fn memory_stays_flat_over_a_long_stream() {
        let key = Keypair::generate_ed25519();
        let info = SignedStreamInfo::sign(&key, "s", "").unwrap();
        let mut store = Store::new(Duration::from_secs(60), u64::MAX);
        store.add_stream(info.id(), Role::Broadcaster, Some(info.clone()));
        let now = Instant::now();
        for seq in 0..1000u64 {
            let data: Bytes = (0..300_000u32)
                .map(|i| (i as u64 * 31 + seq) as u8)
                .collect::<Vec<_>>()
                .into();
            let blocks = split(data.clone()).unwrap();
            let entry = ManifestEntry::new(info.id(), seq, Duration::from_secs(2), &blocks, 0);
            store.insert(SignedManifestEntry::sign(&key, entry).unwrap(), data, now);
        }
        let stream = store.stream(&info.id()).unwrap();
        assert_eq!(stream.segments.len(), 30);
        assert_eq!(stream.segments.keys().next(), Some(&970));
        assert!(store.block_bytes() <= 30 * 300_000);
    }
}
