//! Segments as IPFS content: cutting a segment into CID-addressed blocks, and putting it back together from
//! blocks that arrive from untrusted peers in any order.
//!
//! A segment is cut into raw blocks of [`BLOCK_SIZE`] bytes (the last may be shorter); each block is addressed by a
//! CIDv1 with the `raw` codec and a sha2-256 multihash. The segment's root CID is the CID IPFS computes for the
//! same bytes with CID version 1, raw leaves and 64 KiB fixed-size chunks (`ipfs add --cid-version=1 --raw-leaves
//! --chunker=size-65536`), so any IPFS node can verify or serve our segments. Only leaves travel on the wire; a receiver recomputes the root from them.

use bytes::Bytes;
use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

use crate::manifest::ManifestEntry;
use crate::unixfs;

/// Largest block: 64 KiB. A peer forwards a block only once it has verified it, so every hop of the tree costs one
/// block's time on the link: at 1.5× a 2.5 Mbit/s stream, 0.14 s for 64 KiB against 0.56 s for IPFS's default
/// 256 KiB, which over the six or seven hops of a 10,000-viewer tree is the difference between a lag of about 2.9 s
/// and 5 s (the simulator measures it; see the README).
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Largest segment accepted: 8 MiB (2 s of video at 32 Mbit/s), so at most 128 blocks — what the tree-mesh's block
/// bitmaps hold.
pub const MAX_SEGMENT_SIZE: usize = 8 * 1024 * 1024;
/// Most blocks in one segment.
pub const MAX_BLOCKS: usize = MAX_SEGMENT_SIZE / BLOCK_SIZE;
/// Multicodec of raw blocks.
pub const RAW_CODEC: u64 = 0x55;

/// A segment cut into blocks.
#[derive(Clone, Debug)]
pub struct SegmentBlocks {
    /// The segment's root CID.
    pub root: Cid,
    /// The blocks, in order, each with its CID.
    pub blocks: Vec<(Cid, Bytes)>,
    /// Total bytes.
    pub size: u64,
}

/// Why a segment could not be cut or put back together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// Empty segments carry no video.
    #[error("segment is empty")]
    Empty,
    /// The segment is larger than [`MAX_SEGMENT_SIZE`].
    #[error("segment of {0} bytes exceeds the limit of {MAX_SEGMENT_SIZE} bytes")]
    TooLarge(usize),
    /// Not every block has arrived.
    #[error("segment is incomplete: {missing} blocks missing")]
    Incomplete {
        /// Blocks still missing.
        missing: usize,
    },
    /// The blocks are right but do not add up to the manifest's root CID or size: the manifest is wrong.
    #[error("blocks do not add up to the manifest's root CID and size")]
    RootMismatch,
}

/// Why a received block was refused. Either means the sender misbehaved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The bytes do not hash to the CID they were requested by.
    #[error("block bytes do not match CID {0}")]
    Mismatch(Cid),
    /// The block is larger than [`BLOCK_SIZE`].
    #[error("block of {0} bytes exceeds the limit of {BLOCK_SIZE} bytes")]
    TooLarge(usize),
    /// The block is not part of the segment being assembled.
    #[error("block {0} is not part of this segment")]
    NotInSegment(Cid),
}

/// The CIDv1 (raw codec, sha2-256) of a block.
pub fn block_cid(data: &[u8]) -> Cid {
    Cid::new_v1(RAW_CODEC, Code::Sha2_256.digest(data))
}

/// Checks that `data` is the block `cid` names.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    if data.len() > BLOCK_SIZE {
        return Err(BlockError::TooLarge(data.len()));
    }
    // Hash with the algorithm the CID names, so that a CID we do not support can never match.
    let matches = cid.codec() == RAW_CODEC
        && Code::try_from(cid.hash().code()).is_ok_and(|code| code == Code::Sha2_256)
        && Code::Sha2_256.digest(data) == *cid.hash();
    if !matches {
        return Err(BlockError::Mismatch(*cid));
    }
    Ok(())
}

/// The root CID of a segment whose leaves have these CIDs and sizes.
///
/// Returns `None` when `leaves` is empty.
pub fn root_cid(leaves: &[(Cid, u64)]) -> Option<Cid> {
    (!leaves.is_empty()).then(|| unixfs::balanced_root(leaves))
}

/// Cuts a segment into blocks and computes its CIDs.
pub fn split(data: Bytes) -> Result<SegmentBlocks, SegmentError> {
    if data.is_empty() {
        return Err(SegmentError::Empty);
    }
    if data.len() > MAX_SEGMENT_SIZE {
        return Err(SegmentError::TooLarge(data.len()));
    }
    let blocks: Vec<(Cid, Bytes)> = (0..data.len())
        .step_by(BLOCK_SIZE)
        .map(|start| {
            let block = data.slice(start..data.len().min(start + BLOCK_SIZE));
            (block_cid(&block), block)
        })
        .collect();
    let leaves: Vec<(Cid, u64)> = blocks.iter().map(|(cid, b)| (*cid, b.len() as u64)).collect();
    Ok(SegmentBlocks {
        root: unixfs::balanced_root(&leaves),
        blocks,
        size: data.len() as u64,
    })
}

/// Puts a segment together from verified blocks, in any order, against its (already verified) manifest entry.
#[derive(Debug)]
pub struct SegmentAssembly {
    entry: ManifestEntry,
    blocks: Vec<Option<Bytes>>,
    received: usize,
}

impl SegmentAssembly {
    /// Starts assembling the segment `entry` describes.
    pub fn new(entry: ManifestEntry) -> Self {
        let blocks = vec![None; entry.blocks.len()];
        Self {
            entry,
            blocks,
            received: 0,
        }
    }

    /// The entry being assembled.
    pub fn entry(&self) -> &ManifestEntry {
        &self.entry
    }

    /// The blocks not yet received, as (index, CID).
    pub fn missing(&self) -> impl Iterator<Item = (usize, Cid)> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| (i, self.entry.blocks[i]))
    }

    /// The block with this CID, if it has arrived.
    pub fn block(&self, cid: &Cid) -> Option<&Bytes> {
        let index = self.entry.blocks.iter().position(|c| c == cid)?;
        self.blocks[index].as_ref()
    }

    /// Verifies a block against its CID and keeps it. Returns whether it was new.
    pub fn insert(&mut self, cid: &Cid, data: Bytes) -> Result<bool, BlockError> {
        verify_block(cid, &data)?;
        let mut new = false;
        // The same block may occur more than once in a segment (e.g. padding): fill every slot it belongs to.
        for (slot, _) in self
            .blocks
            .iter_mut()
            .zip(&self.entry.blocks)
            .filter(|(_, c)| *c == cid)
        {
            if slot.is_none() {
                *slot = Some(data.clone());
                self.received += 1;
                new = true;
            }
        }
        if !new && !self.entry.blocks.contains(cid) {
            return Err(BlockError::NotInSegment(*cid));
        }
        Ok(new)
    }

    /// Whether every block has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.blocks.len()
    }

    /// The whole segment, once every block has arrived and they add up to the entry's root CID and size.
    pub fn finish(&self) -> Result<Bytes, SegmentError> {
        let missing = self.blocks.len() - self.received;
        if missing > 0 {
            return Err(SegmentError::Incomplete { missing });
        }
        let blocks: Vec<&Bytes> = self.blocks.iter().flatten().collect();
        let leaves: Vec<(Cid, u64)> = self
            .entry
            .blocks
            .iter()
            .zip(&blocks)
            .map(|(cid, b)| (*cid, b.len() as u64))
            .collect();
        let size: u64 = leaves.iter().map(|(_, s)| s).sum();
        if size != self.entry.size || root_cid(&leaves) != Some(self.entry.root) {
            return Err(SegmentError::RootMismatch);
        }
        let mut whole = Vec::with_capacity(size as usize);
        for block in blocks {
            whole.extend_from_slice(block);
        }
        Ok(whole.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_segment_is_its_own_root() {
        let data = Bytes::from(vec![7u8; 1000]);
        let s = split(data.clone()).unwrap();
        assert_eq!(s.blocks.len(), 1);
        assert_eq!(s.root, block_cid(&data));
        assert_eq!(s.root.codec(), RAW_CODEC);
    }

    #[test]
    fn large_segment_has_dag_pb_root_over_256k_leaves() {
        let data: Bytes = (0..(BLOCK_SIZE * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let s = split(data).unwrap();
        assert_eq!(
            s.blocks.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
            [BLOCK_SIZE, BLOCK_SIZE, 10]
        );
        assert_eq!(s.root.codec(), 0x70);
    }

    #[test]
    fn empty_and_oversized_segments_are_refused() {
        assert!(matches!(split(Bytes::new()), Err(SegmentError::Empty)));
        assert!(matches!(
            split(vec![0; MAX_SEGMENT_SIZE + 1].into()),
            Err(SegmentError::TooLarge(_))
        ));
    }

    #[test]
    fn verify_block_rejects_wrong_bytes() {
        let cid = block_cid(b"right");
        assert!(verify_block(&cid, b"right").is_ok());
        assert!(matches!(verify_block(&cid, b"wrong"), Err(BlockError::Mismatch(_))));
    }
}
