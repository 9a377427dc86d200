//! Manifest entries: the broadcaster's signed word on what segment `seq` of a stream is.
//!
//! A viewer accepts an entry only when it is signed by the key in the stream's [`crate::stream::StreamInfo`],
//! names that stream, is internally consistent (the block count fits the size) and falls inside a bounded window of
//! sequence numbers around the newest entry it has seen ([`SequenceWindow`]). Blocks are then checked against the
//! entry's CIDs and the whole against its root CID ([`crate::segment::SegmentAssembly`]), so a segment a viewer
//! plays is exactly the one the broadcaster signed.

use std::time::Duration;

use cid::Cid;
use libp2p_identity::{Keypair, SigningError};
use prost::Message;

use crate::WireError;
use crate::error::check_count;
use crate::proto;
use crate::segment::{BLOCK_SIZE, MAX_BLOCKS, MAX_SEGMENT_SIZE, SegmentBlocks};
use crate::stream::{StreamId, StreamInfo, domain_message};

const MANIFEST_DOMAIN: &[u8] = b"streamrp2p/manifest-entry/v1";
/// Longest segment duration accepted.
pub const MAX_SEGMENT_DURATION: Duration = Duration::from_secs(60);

/// One segment of a stream, as the broadcaster describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The stream the segment belongs to.
    pub stream: StreamId,
    /// Position in the stream, counting from 0.
    pub seq: u64,
    /// Playback duration.
    pub duration: Duration,
    /// Root CID of the segment's bytes.
    pub root: Cid,
    /// CIDs of the segment's raw blocks, in order.
    pub blocks: Vec<Cid>,
    /// Size in bytes.
    pub size: u64,
    /// Broadcaster's wall clock when the segment was ready, in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The segment starts a new timeline (HLS `EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Discontinuities before this segment since the stream began (HLS `EXT-X-DISCONTINUITY-SEQUENCE`).
    pub discontinuity_sequence: u64,
}

impl ManifestEntry {
    /// Describes segment `seq` of `stream` from its blocks.
    pub fn new(stream: StreamId, seq: u64, duration: Duration, segment: &SegmentBlocks, timestamp_ms: u64) -> Self {
        Self {
            stream,
            seq,
            duration,
            root: segment.root,
            blocks: segment.blocks.iter().map(|(cid, _)| *cid).collect(),
            size: segment.size,
            timestamp_ms,
            discontinuity: false,
            discontinuity_sequence: 0,
        }
    }

    fn to_proto(&self) -> proto::ManifestEntry {
        proto::ManifestEntry {
            stream_id: self.stream.as_bytes().to_vec().into(),
            seq: self.seq,
            duration_ms: u32::try_from(self.duration.as_millis()).unwrap_or(u32::MAX),
            root_cid: self.root.to_bytes().into(),
            block_cids: self.blocks.iter().map(|c| c.to_bytes().into()).collect(),
            size: self.size,
            timestamp_ms: self.timestamp_ms,
            discontinuity: self.discontinuity,
            discontinuity_sequence: self.discontinuity_sequence,
        }
    }

    fn from_proto(raw: proto::ManifestEntry) -> Result<Self, WireError> {
        check_count("block_cids", raw.block_cids.len(), MAX_BLOCKS)?;
        let entry = Self {
            stream: StreamId::from_slice(&raw.stream_id)?,
            seq: raw.seq,
            duration: Duration::from_millis(raw.duration_ms.into()),
            root: Cid::try_from(&raw.root_cid[..])?,
            blocks: raw
                .block_cids
                .iter()
                .map(|c| Cid::try_from(&c[..]))
                .collect::<Result<_, _>>()?,
            size: raw.size,
            timestamp_ms: raw.timestamp_ms,
            discontinuity: raw.discontinuity,
            discontinuity_sequence: raw.discontinuity_sequence,
        };
        entry.check_consistent()?;
        Ok(entry)
    }

    /// Fixed-size chunking fixes the block count from the size; a mismatch can never verify.
    fn check_consistent(&self) -> Result<(), ManifestError> {
        let expected_blocks = (self.size as usize).div_ceil(BLOCK_SIZE);
        if self.size == 0 || self.size > MAX_SEGMENT_SIZE as u64 || self.blocks.len() != expected_blocks {
            return Err(ManifestError::Inconsistent {
                size: self.size,
                blocks: self.blocks.len(),
            });
        }
        if self.duration.is_zero() || self.duration > MAX_SEGMENT_DURATION {
            return Err(ManifestError::Duration(self.duration));
        }
        Ok(())
    }
}

/// Why a manifest entry was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The entry names a stream other than the one it arrived for.
    #[error("entry belongs to stream {got}, expected {expected}")]
    WrongStream {
        /// The stream expected.
        expected: StreamId,
        /// The stream named.
        got: StreamId,
    },
    /// The signature is not the broadcaster's.
    #[error("entry signature does not verify against the broadcaster's key")]
    Signature,
    /// Size and block count contradict each other.
    #[error("entry of {size} bytes cannot have {blocks} blocks of {BLOCK_SIZE} bytes")]
    Inconsistent {
        /// Size claimed.
        size: u64,
        /// Blocks listed.
        blocks: usize,
    },
    /// Zero or implausibly long duration.
    #[error("segment duration {0:?} is outside (0, 60 s]")]
    Duration(Duration),
    /// The sequence number is outside the accepted window.
    #[error("sequence {seq} is outside the window [{low}, {high}]")]
    OutsideWindow {
        /// The entry's sequence number.
        seq: u64,
        /// Lowest accepted.
        low: u64,
        /// Highest accepted.
        high: u64,
    },
    /// The local key could not sign.
    #[error("could not sign entry: {0}")]
    Signing(#[from] SigningError),
}

/// A manifest entry with a verified broadcaster signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifestEntry {
    entry: ManifestEntry,
    wire: proto::SignedManifestEntry,
}

impl SignedManifestEntry {
    /// Signs `entry` with the broadcaster's key.
    pub fn sign(keypair: &Keypair, entry: ManifestEntry) -> Result<Self, ManifestError> {
        entry.check_consistent()?;
        let bytes = entry.to_proto().encode_to_vec();
        let signature = keypair.sign(&domain_message(MANIFEST_DOMAIN, &bytes))?;
        Ok(Self {
            entry,
            wire: proto::SignedManifestEntry {
                entry: bytes.into(),
                signature: signature.into(),
            },
        })
    }

    /// Decodes an entry received from a peer and verifies it belongs to `info`'s stream and is signed by its
    /// broadcaster.
    pub fn verify(wire: proto::SignedManifestEntry, info: &StreamInfo) -> Result<Self, WireError> {
        let entry = ManifestEntry::from_proto(proto::ManifestEntry::decode(wire.entry.clone())?)?;
        let expected = info.id();
        if entry.stream != expected {
            return Err(ManifestError::WrongStream {
                expected,
                got: entry.stream,
            }
            .into());
        }
        if !info
            .broadcaster
            .verify(&domain_message(MANIFEST_DOMAIN, &wire.entry), &wire.signature)
        {
            return Err(ManifestError::Signature.into());
        }
        Ok(Self { entry, wire })
    }

    /// The verified entry.
    pub fn entry(&self) -> &ManifestEntry {
        &self.entry
    }

    /// The wire form, to send on.
    pub fn to_proto(&self) -> proto::SignedManifestEntry {
        self.wire.clone()
    }

    /// Encoded size on the wire.
    pub fn encoded_len(&self) -> usize {
        self.wire.encoded_len()
    }
}

/// The bounded window of sequence numbers a viewer accepts: at most `behind` below and `ahead` above the newest
/// entry accepted so far. It bounds what a viewer keeps, and stops a broadcaster's old entries from being replayed
/// into a viewer's live edge.
#[derive(Clone, Debug)]
pub struct SequenceWindow {
    newest: Option<u64>,
    behind: u64,
    ahead: u64,
}

impl SequenceWindow {
    /// A window reaching `behind` entries below and `ahead` above the newest one.
    pub fn new(behind: u64, ahead: u64) -> Self {
        Self {
            newest: None,
            behind,
            ahead,
        }
    }

    /// Admits `seq` when it is inside the window, moving the window forward when it is the newest.
    pub fn admit(&mut self, seq: u64) -> Result<(), ManifestError> {
        if let Some(newest) = self.newest {
            let low = newest.saturating_sub(self.behind);
            let high = newest.saturating_add(self.ahead);
            if seq < low || seq > high {
                return Err(ManifestError::OutsideWindow { seq, low, high });
            }
        }
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        Ok(())
    }

    /// The newest sequence number admitted.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::split;
    use crate::stream::SignedStreamInfo;

    fn entry_for(key: &Keypair, seq: u64) -> (StreamInfo, ManifestEntry) {
        let info = SignedStreamInfo::sign(key, "live", "").unwrap().info().clone();
        let blocks = split(vec![1u8; 300_000].into()).unwrap();
        (
            info.clone(),
            ManifestEntry::new(info.id(), seq, Duration::from_secs(2), &blocks, 1),
        )
    }

    #[test]
    fn signed_entry_verifies_only_with_the_broadcaster_key() {
        let key = Keypair::generate_ed25519();
        let (info, entry) = entry_for(&key, 3);
        let signed = SignedManifestEntry::sign(&key, entry.clone()).unwrap();
        assert_eq!(
            SignedManifestEntry::verify(signed.to_proto(), &info).unwrap().entry(),
            &entry
        );

        let impostor = Keypair::generate_ed25519();
        let forged = SignedManifestEntry::sign(&impostor, entry).unwrap();
        assert!(matches!(
            SignedManifestEntry::verify(forged.to_proto(), &info),
            Err(WireError::Manifest(ManifestError::Signature))
        ));
    }

    #[test]
    fn inconsistent_entries_are_refused_before_signing() {
        let key = Keypair::generate_ed25519();
        let (_, mut entry) = entry_for(&key, 0);
        entry.blocks.pop();
        assert!(matches!(
            SignedManifestEntry::sign(&key, entry),
            Err(ManifestError::Inconsistent { .. })
        ));
    }

    #[test]
    fn window_bounds_sequence_numbers() {
        let mut w = SequenceWindow::new(10, 5);
        w.admit(100).unwrap();
        w.admit(105).unwrap();
        assert!(w.admit(111).is_err());
        assert!(w.admit(94).is_err());
        w.admit(95).unwrap();
        assert_eq!(w.newest(), Some(105));
    }
}
