//! One gossipsub message: one block of a segment, with what a receiver needs to put the segment back together and
//! to measure its lag.
//!
//! Layout (big-endian): `seq: u64`, `index: u16`, `block_count: u16`, `segment_size: u32`, `published_ms: u64`,
//! then the block's bytes. [`HEADER_LEN`] bytes of header; at most [`MAX_MESSAGE_SIZE`] in all.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use streamrp2p_protocols::segment::{BLOCK_SIZE, MAX_BLOCKS, MAX_SEGMENT_SIZE};

/// Bytes of header before a block's data.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 4 + 8;
/// Largest message: a full 64 KiB block and its header.
pub const MAX_MESSAGE_SIZE: usize = HEADER_LEN + BLOCK_SIZE;

/// A block of a segment as published on the stream's topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMessage {
    /// The segment's sequence number (the playlist's media sequence).
    pub seq: u64,
    /// The block's index in the segment.
    pub index: u16,
    /// Blocks in the segment.
    pub block_count: u16,
    /// The segment's size in bytes.
    pub segment_size: u32,
    /// When the broadcaster published the segment's first block, unix milliseconds.
    pub published_ms: u64,
    /// The block's bytes.
    pub data: Bytes,
}

/// Why a message is not a [`BlockMessage`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the header.
    #[error("message of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    /// The header does not describe a block of a valid segment.
    #[error("block {index} of {block_count} in a segment of {segment_size} bytes with {data_len} bytes of data")]
    Inconsistent {
        /// Block index.
        index: u16,
        /// Blocks in the segment.
        block_count: u16,
        /// Segment size.
        segment_size: u32,
        /// Bytes of data carried.
        data_len: usize,
    },
}

impl BlockMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.data.len());
        out.put_u64(self.seq);
        out.put_u16(self.index);
        out.put_u16(self.block_count);
        out.put_u32(self.segment_size);
        out.put_u64(self.published_ms);
        out.put_slice(&self.data);
        out.to_vec()
    }

    /// Reads a message, checking that the block fits its segment: block `index` of a segment of `segment_size`
    /// bytes cut into [`BLOCK_SIZE`] blocks.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Short(bytes.len()));
        }
        let mut header = &bytes[..HEADER_LEN];
        let message = Self {
            seq: header.get_u64(),
            index: header.get_u16(),
            block_count: header.get_u16(),
            segment_size: header.get_u32(),
            published_ms: header.get_u64(),
            data: Bytes::copy_from_slice(&bytes[HEADER_LEN..]),
        };
        let size = message.segment_size as usize;
        let consistent = size > 0
            && size <= MAX_SEGMENT_SIZE
            && usize::from(message.block_count) == size.div_ceil(BLOCK_SIZE)
            && usize::from(message.block_count) <= MAX_BLOCKS
            && message.index < message.block_count
            && message.data.len() == (size - usize::from(message.index) * BLOCK_SIZE).min(BLOCK_SIZE);
        if !consistent {
            return Err(WireError::Inconsistent {
                index: message.index,
                block_count: message.block_count,
                segment_size: message.segment_size,
                data_len: message.data.len(),
            });
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let message = BlockMessage {
            seq: 7,
            index: 1,
            block_count: 2,
            segment_size: (BLOCK_SIZE + 10) as u32,
            published_ms: 1_700_000_000_000,
            data: Bytes::from(vec![3u8; 10]),
        };
        let bytes = message.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 10);
        assert_eq!(BlockMessage::decode(&bytes), Ok(message.clone()));
        assert_eq!(BlockMessage::decode(&bytes[..5]), Err(WireError::Short(5)));
        // One byte of data missing: the block does not fit its segment.
        assert!(BlockMessage::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
