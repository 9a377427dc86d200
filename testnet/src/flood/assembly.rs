//! Putting segments back together from their blocks, in any order, and timing them.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use super::wire::BlockMessage;

/// Segments being assembled at once; beyond it, the oldest is given up (a viewer that far behind has lost it).
pub const MAX_PARTIAL: usize = 32;
/// Completed segment numbers remembered, so that a block arriving after its segment completed is not counted again.
const MAX_DONE: usize = 1024;

/// A segment whose every block arrived.
#[derive(Clone, Debug)]
pub struct Completed {
    /// Its sequence number.
    pub seq: u64,
    /// Its bytes.
    pub data: Bytes,
    /// When the broadcaster published it, unix milliseconds.
    pub published_ms: u64,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Option<Bytes>>,
    missing: usize,
    size: u32,
    published_ms: u64,
}

/// Segments in progress, keyed by sequence number.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: BTreeMap<u64, Partial>,
    done: BTreeSet<u64>,
}

/// What a block did.
#[derive(Debug)]
pub enum Inserted {
    /// A new block; its segment is not complete yet.
    Block,
    /// The last missing block: the segment.
    Segment(Completed),
    /// Already held (or its segment is done): no new bytes.
    Duplicate,
    /// Disagrees with the other blocks of its segment about its size or block count: dropped.
    Conflict,
}

impl Assembler {
    /// Takes one block.
    pub fn insert(&mut self, message: BlockMessage) -> Inserted {
        if self.done.contains(&message.seq) {
            return Inserted::Duplicate;
        }
        let partial = self.partial.entry(message.seq).or_insert_with(|| Partial {
            blocks: vec![None; usize::from(message.block_count)],
            missing: usize::from(message.block_count),
            size: message.segment_size,
            published_ms: message.published_ms,
        });
        if partial.size != message.segment_size || partial.blocks.len() != usize::from(message.block_count) {
            return Inserted::Conflict;
        }
        let slot = &mut partial.blocks[usize::from(message.index)];
        if slot.is_some() {
            return Inserted::Duplicate;
        }
        *slot = Some(message.data);
        partial.missing -= 1;
        let outcome = if partial.missing == 0 {
            let partial = self.partial.remove(&message.seq).expect("present");
            let mut data = BytesMut::with_capacity(partial.size as usize);
            for block in partial.blocks.into_iter().flatten() {
                data.extend_from_slice(&block);
            }
            self.done.insert(message.seq);
            while self.done.len() > MAX_DONE {
                self.done.pop_first();
            }
            Inserted::Segment(Completed {
                seq: message.seq,
                data: data.freeze(),
                published_ms: partial.published_ms,
            })
        } else {
            Inserted::Block
        };
        while self.partial.len() > MAX_PARTIAL {
            self.partial.pop_first();
        }
        outcome
    }

    /// Segments started but not complete.
    pub fn incomplete(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use streamrp2p_protocols::segment::BLOCK_SIZE;

    use super::*;

    fn block(index: u16, data: &[u8], size: usize) -> BlockMessage {
        BlockMessage {
            seq: 1,
            index,
            block_count: size.div_ceil(BLOCK_SIZE) as u16,
            segment_size: size as u32,
            published_ms: 5,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn any_order_then_duplicates() {
        let segment: Vec<u8> = (0..BLOCK_SIZE * 2 + 3).map(|i| i as u8).collect();
        let mut assembler = Assembler::default();
        let size = segment.len();
        assert!(matches!(
            assembler.insert(block(2, &segment[2 * BLOCK_SIZE..], size)),
            Inserted::Block
        ));
        assert!(matches!(
            assembler.insert(block(0, &segment[..BLOCK_SIZE], size)),
            Inserted::Block
        ));
        assert!(matches!(
            assembler.insert(block(0, &segment[..BLOCK_SIZE], size)),
            Inserted::Duplicate
        ));
        let Inserted::Segment(done) = assembler.insert(block(1, &segment[BLOCK_SIZE..2 * BLOCK_SIZE], size)) else {
            panic!("the last block completes the segment");
        };
        assert_eq!(done.data, segment);
        assert_eq!(assembler.incomplete(), 0);
        assert!(matches!(
            assembler.insert(block(1, &segment[..1], size)),
            Inserted::Duplicate
        ));
    }
}
